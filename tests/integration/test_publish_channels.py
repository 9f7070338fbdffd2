"""The per-channel task entry points: publish with the backlog in the ledger, reconcile eBay read-back."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from commerce_sync.audit import ledger
from commerce_sync.channels.publish import client_for, publish_channel, reconcile_channel
from commerce_sync.config import Channel
from commerce_sync.errors import ConfigError
from commerce_sync.sandbox.server import SandboxServer
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


def test_channel_without_publisher_is_a_clear_config_error() -> None:
    amazon = Channel(id="amazon", kind="amazon", conn_id="amazon_sp", pricing_rule="r")
    with pytest.raises(ConfigError, match="kind 'amazon' has no marketplace publisher"):
        client_for(amazon)
