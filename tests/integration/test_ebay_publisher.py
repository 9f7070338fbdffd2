"""eBay client and publisher against the sandbox simulator and a real hub database."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from commerce_sync.audit import ledger
from commerce_sync.channels import ebay
from commerce_sync.channels.marketplace import PublishResult, publish_outbox, sync_listings
from commerce_sync.config import Channel
from commerce_sync.connections import ConnectionInfo
from commerce_sync_sandbox.ebay_sim import OFFER_ID_BASE
from commerce_sync_sandbox.server import SandboxServer

pytestmark = pytest.mark.integration

CHANNEL = "ebay"
N = 40
SKUS = [f"SKU-{i:06d}" for i in range(1, N + 1)]
SETUP = uuid.uuid4()


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[SandboxServer]:
    with SandboxServer(tmp_path / "feeds", tmp_path / "allegro.json", catalog_n=N) as server:
        yield server


@pytest.fixture
def client(sandbox: SandboxServer) -> Iterator[ebay.EbayClient]:
    info = ConnectionInfo(
        conn_id="ebay_sandbox",
        host=sandbox.ebay_url,
        login="demo-ebay-client",
        password="demo-ebay-secret",
        extra={"refresh_token": "demo-ebay-refresh-token"},
    )
    api = ebay.EbayClient.from_connection(info)
    api.sleep = lambda seconds: None
    yield api
    api.close()


@pytest.fixture
def hub(hub_dsn: str) -> str:
    with psycopg.connect(hub_dsn) as conn:
        for sku in SKUS:
            conn.execute(
                "INSERT INTO hub.product (sku, name, purchase_price, currency, vat_rate, row_hash, transfer_id) "
                "VALUES (%s, %s, 10, 'PLN', 0.23, 'h', %s)",
                (sku, f"product {sku}", SETUP),
            )
            conn.execute(
                "INSERT INTO hub.channel_offer (channel, sku, price, currency, quantity, availability, cost, "
                "floor_price, floor_applied, rule_id, rule_version, row_hash, version, transfer_id) "
                "VALUES (%s, %s, 20, 'PLN', 1, 'in_stock', 10, 12, false, 'r', '1', 'h', 1, %s)",
                (CHANNEL, sku, SETUP),
            )
    return hub_dsn


def _queue(dsn: str, sku: str, field: str, payload: dict[str, Any], version: int = 1) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "INSERT INTO hub.outbox (channel, sku, field, payload, offer_version, idempotency_key, "
            "created_transfer_id) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (CHANNEL, sku, field, json.dumps(payload), version, f"{CHANNEL}:{sku}:{field}:v{version}", SETUP),
        )


def _sync(dsn: str, api: ebay.EbayClient) -> int:
    transfer = ledger.Transfer(source=f"channel:{CHANNEL}", target="hub", dataset="channel_listing")
    with ledger.recording(dsn, transfer):
        return sync_listings(dsn, CHANNEL, ebay.EbayMarketplace(api), transfer)


def _publish(dsn: str, api: ebay.EbayClient) -> tuple[PublishResult, ledger.Transfer]:
    transfer = ledger.Transfer(source="hub", target=f"channel:{CHANNEL}", dataset="offer_update")
    channel = Channel(id=CHANNEL, kind="ebay", conn_id="ebay_sandbox", pricing_rule="r")
    with ledger.recording(dsn, transfer):
        return publish_outbox(dsn, channel, ebay.EbayMarketplace(api), transfer), transfer


def _listings(dsn: str) -> dict[str, str]:
    with psycopg.connect(dsn) as conn:
        return dict(conn.execute("SELECT sku, offer_id FROM hub.channel_listing WHERE channel = %s", (CHANNEL,)))


def _offer(server: SandboxServer, sku: str) -> dict[str, Any]:
    offer = server.ebay.offer(str(OFFER_ID_BASE + int(sku.removeprefix("SKU-"))))
    assert offer is not None
    return offer


def _statuses(dsn: str) -> dict[str, tuple[str, str | None]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT idempotency_key, status, error FROM hub.outbox ORDER BY id").fetchall()
    return {key: (status, error) for key, status, error in rows}


def test_publish_in_calls_of_at_most_25_items(hub: str, client: ebay.EbayClient, sandbox: SandboxServer) -> None:
    assert _sync(hub, client) == N
    for number, sku in enumerate(SKUS[:30]):
        _queue(hub, sku, "price", {"amount": f"{30 + number}.50", "currency": "PLN"})
        _queue(hub, sku, "quantity", {"value": number})
    result, transfer = _publish(hub, client)
    assert (result.requests, result.sent, result.failed) == (2, 60, 0), _statuses(hub)
    assert sandbox.ebay.stats["bulk_calls"] == 2 and sandbox.ebay.stats["items"] == 30
    offer = _offer(sandbox, SKUS[7])
    assert offer["pricingSummary"]["price"] == {"value": "37.50", "currency": "PLN"}
    assert offer["availableQuantity"] == 7
    assert transfer.rows_written == 60
    with psycopg.connect(hub) as conn:
        published = conn.execute(
            "SELECT count(*) FROM hub.channel_offer WHERE channel = %s AND published_version = 1", (CHANNEL,)
        ).fetchone()
    assert published == (30,)
    again, _ = _publish(hub, client)
    assert (again.requests, again.claimed) == (0, 0)


def test_per_item_rejections_and_dropped_answers(hub: str, client: ebay.EbayClient, sandbox: SandboxServer) -> None:
    a, b, c = SKUS[:3]
    _sync(hub, client)
    for sku in (a, b, c):
        _queue(hub, sku, "price", {"amount": "44.00", "currency": "PLN"})
    _queue(hub, c, "price", {"amount": "5.00", "currency": "PLN"}, version=2)  # below the floor of 12
    sandbox.ebay.faults.arm(reject={b: "The listing is under review"}, drop_after_apply=1)
    result, transfer = _publish(hub, client)
    assert sandbox.ebay.faults.fired["drop"] == 1
    assert (result.sent, result.failed, result.superseded, result.quarantined) == (1, 2, 1, 1)
    statuses = _statuses(hub)
    assert statuses[f"{CHANNEL}:{a}:price:v1"][0] == "sent"
    status, error = statuses[f"{CHANNEL}:{b}:price:v1"]
    assert status == "failed" and error is not None and f"SKU {b}" in error and "under review" in error
    assert "below the floor 12" in (statuses[f"{CHANNEL}:{c}:price:v2"][1] or "")
    # The answer of the first call was dropped after eBay applied it; the retry changed nothing more.
    assert sandbox.ebay.stats["revisions"] == 1
    assert _offer(sandbox, c)["pricingSummary"]["price"]["value"] != "5.00"
    assert transfer.rows_rejected == 2 and sorted(transfer.details["rejected_skus"]) == [b, c]


def test_token_refresh_and_no_secret_shown(client: ebay.EbayClient, sandbox: SandboxServer) -> None:
    first = list(ebay.EbayMarketplace(client).read_offers(None))
    sandbox.ebay.expire_tokens()
    assert len(list(ebay.EbayMarketplace(client).read_offers(None))) == len(first) == N
    shown = repr(client) + repr(vars(client))
    assert "demo-ebay-secret" not in repr(client) and "refresh-token" not in repr(client)
    assert "v^1.1" not in repr(client)
    assert shown  # vars() holds the name-mangled private fields, which repr never prints


def test_offer_id_moving_between_two_remaining_skus(hub: str, client: ebay.EbayClient) -> None:
    """The stored pairs no longer hold (eBay's offer ids moved between two SKUs that both remain): the
    sync must drop every stale pair before writing, or UNIQUE (channel, offer_id) refuses the update."""
    a, b = SKUS[:2]
    _sync(hub, client)
    truth = _listings(hub)
    with psycopg.connect(hub) as conn:  # the hub's view: a and b hold each other's offer id
        conn.execute("DELETE FROM hub.channel_listing WHERE channel = %s AND sku IN (%s, %s)", (CHANNEL, a, b))
        conn.execute(
            "INSERT INTO hub.channel_listing (channel, sku, offer_id, transfer_id) VALUES (%s, %s, %s, %s), "
            "(%s, %s, %s, %s)",
            (CHANNEL, a, truth[b], SETUP, CHANNEL, b, truth[a], SETUP),
        )
    assert _sync(hub, client) == N
    assert _listings(hub) == truth
    with psycopg.connect(hub) as conn:
        changed = conn.execute(
            "SELECT rows_changed, status FROM audit.transfer WHERE dataset = 'channel_listing' ORDER BY seq DESC LIMIT 1"
        ).fetchone()
    assert changed == (2, "success")
