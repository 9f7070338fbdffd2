"""The per-channel task entry points: publish with the backlog in the ledger, reconcile eBay read-back."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import psycopg
import pytest

from commerce_sync.audit import ledger
from commerce_sync.channels.publish import publish_channel, reconcile_channel
from commerce_sync.config import Channel
from commerce_sync.errors import ConfigError
from commerce_sync_sandbox.server import SandboxServer
from tests.integration.test_ebay_publisher import (  # noqa: F401 - fixtures hub, sandbox
    CHANNEL,
    SKUS,
    _offer,
    _queue,
    hub,
    sandbox,
)

pytestmark = pytest.mark.integration
RUN = ledger.RunContext(run_id="test", dag_id="hub_to_marketplaces", task_id="publish_offers", map_index=0)
EBAY = Channel(id=CHANNEL, kind="ebay", conn_id="ebay_sandbox", pricing_rule="r", batch_size=25)


@pytest.fixture
def connection(sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    monkeypatch.setenv(
        "AIRFLOW_CONN_EBAY_SANDBOX",
        json.dumps(
            {
                "conn_type": "http",
                "host": sandbox.ebay_url,
                "login": "demo-ebay-client",
                "password": "demo-ebay-secret",
                "extra": {"refresh_token": "demo-ebay-refresh-token"},
            }
        ),
    )


@pytest.mark.usefixtures("connection")
def test_publish_reports_backlog_and_reconcile_finds_direct_edit(
    hub: str,  # noqa: F811
    sandbox: SandboxServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    a, b = SKUS[:2]
    _queue(hub, a, "price", {"amount": "51.00", "currency": "PLN"})
    _queue(hub, b, "quantity", {"value": 6})
    result = publish_channel(hub, EBAY, RUN)
    assert result["sent"] == 2
    assert result["backlog_before"]["pending"] == 2 and result["backlog_after"]["pending"] == 0
    with psycopg.connect(hub) as conn:
        details = conn.execute(
            "SELECT details FROM audit.transfer WHERE dataset = 'offer_update' ORDER BY seq DESC LIMIT 1"
        ).fetchone()
    assert details is not None
    assert details[0]["backlog"]["pending"] == 2 and details[0]["backlog_after"]["pending"] == 0
    token_free = json.dumps(details[0])
    assert "v^1.1" not in token_free and "demo-ebay-secret" not in token_free

    offer_id = _offer(sandbox, a)["offerId"]
    sandbox.ebay.edit_offer(offer_id, price="49.99")
    found = reconcile_channel(hub, EBAY, RUN, tmp_path)
    assert (found["differences"], found["requeued"]) == (1, 1)
    assert Path(found["report"]).exists()
    publish_channel(hub, EBAY, RUN)
    assert _offer(sandbox, a)["pricingSummary"]["price"]["value"] == "51.00"


def test_publish_channel_amazon_uses_connection_extras(
    hub: str,  # noqa: F811
    sandbox: SandboxServer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    extra = {"refresh_token": "Atzr|demo-amazon-refresh-token", "seller_id": "A2SANDBOXSELLER"}
    connection = {
        "conn_type": "http",
        "host": sandbox.amazon_url,
        "login": "amzn1.application-oa2-client.sandbox",
        "password": "demo-amazon-secret",
    }
    monkeypatch.setenv("AIRFLOW_CONN_AMAZON_SANDBOX", json.dumps({**connection, "extra": extra}))
    channel = Channel(id="amazon", kind="amazon", conn_id="amazon_sandbox", pricing_rule="r")
    with pytest.raises(ConfigError, match=r"needs extra\.seller_id and extra\.marketplace_id"):
        publish_channel(hub, channel, RUN)
    extra["marketplace_id"] = "A1C3SOZRARQ6R3"
    monkeypatch.setenv("AIRFLOW_CONN_AMAZON_SANDBOX", json.dumps({**connection, "extra": extra}))
    sku = SKUS[0]
    with psycopg.connect(hub) as conn:
        conn.execute(
            "INSERT INTO hub.channel_offer (channel, sku, price, currency, quantity, availability, cost, "
            "floor_price, floor_applied, rule_id, rule_version, row_hash, version, transfer_id) "
            "SELECT 'amazon', sku, price, currency, quantity, availability, cost, floor_price, floor_applied, "
            "rule_id, rule_version, row_hash, version, transfer_id FROM hub.channel_offer "
            "WHERE channel = 'ebay' AND sku = %s",
            (sku,),
        )
        conn.execute(
            "INSERT INTO hub.outbox (channel, sku, field, payload, offer_version, idempotency_key, "
            "created_transfer_id) VALUES ('amazon', %s, 'quantity', '{\"value\": 8}', 1, 'amazon:q:v1', %s)",
            (sku, uuid.uuid4()),
        )
    result = publish_channel(hub, channel, RUN)
    assert result["sent"] == 1 and len(result["request_ids"]) == 1  # one feed
    assert result["backlog_after"]["pending"] == 0
    listing = sandbox.amazon.listing(sku)
    assert listing is not None and listing["quantity"] == 8


def _listing_reads(dsn: str) -> list[dict]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT details FROM audit.transfer WHERE dataset = 'channel_listing' AND source = %s ORDER BY seq",
            (f"channel:{CHANNEL}",),
        ).fetchall()
    return [details for (details,) in rows]


def _offer_list_calls(sandbox: SandboxServer) -> int:  # noqa: F811
    """GET /sell/inventory/v1/offer (the whole account's offers, page by page) seen by the eBay simulator."""
    return sum(1 for path, _, _ in sandbox.request_stats("ebay").intervals if path.split("?")[0].endswith("/offer"))


@pytest.mark.usefixtures("connection")
def test_publish_rereads_offer_ids_only_when_stale_or_a_sku_is_unmapped(
    hub: str,  # noqa: F811
    sandbox: SandboxServer,  # noqa: F811
) -> None:
    """A one-SKU publish must not read the whole account's offers each time (minutes at 100k offers)."""
    a, b, c = SKUS[:3]
    _queue(hub, a, "price", {"amount": "51.00", "currency": "PLN"})
    publish_channel(hub, EBAY, RUN)
    assert [d["refresh"] for d in _listing_reads(hub)] == ["never read"]
    calls = _offer_list_calls(sandbox)
    assert calls >= 1

    _queue(hub, b, "quantity", {"value": 6})  # mapped by the first read: no read now
    assert publish_channel(hub, EBAY, RUN)["sent"] == 1
    assert len(_listing_reads(hub)) == 1 and _offer_list_calls(sandbox) == calls

    with psycopg.connect(hub) as conn:  # as if c was listed on eBay after the last read
        conn.execute("DELETE FROM hub.channel_listing WHERE channel = %s AND sku = %s", (CHANNEL, c))
    _queue(hub, c, "quantity", {"value": 2})
    assert publish_channel(hub, EBAY, RUN)["sent"] == 1  # read again, found, sent
    reads = _listing_reads(hub)
    assert reads[-1]["refresh"] == "1 pending outbox row(s) of SKUs without a known offer id"
    assert _offer_list_calls(sandbox) > calls

    every_time = EBAY.model_copy(update={"listing_refresh_minutes": 0})
    _queue(hub, a, "price", {"amount": "52.00", "currency": "PLN"}, version=2)
    publish_channel(hub, every_time, RUN)
    assert _listing_reads(hub)[-1]["refresh"].startswith("read before every publish")
    reads = len(_listing_reads(hub))
    _queue(hub, b, "quantity", {"value": 7}, version=2)
    publish_channel(hub, EBAY.model_copy(update={"listing_refresh_minutes": 1}), RUN)  # read < 1 min ago: fresh
    assert len(_listing_reads(hub)) == reads
