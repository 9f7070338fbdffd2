"""Read-back reconciliation against the Allegro simulator: direct edits are found, reported and handled per policy.

(Amazon's read-back through the Listings Items API is tested in ``test_amazon_publisher.py``, eBay's in
``test_publish_channels.py``.)"""

from __future__ import annotations

import csv
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from commerce_sync import registry
from commerce_sync.audit import ledger
from commerce_sync.channels import allegro
from commerce_sync.channels.publish import reconcile_channel
from commerce_sync.channels.reconcile import ReconcileResult, reconcile
from commerce_sync.config import Channel, FeedSettings
from commerce_sync.errors import ConfigError
from commerce_sync_sandbox.server import SandboxServer
from tests.integration.test_allegro_publisher import (  # noqa: F401 - fixtures client, hub, sandbox
    OFFER_IDS,
    SKUS,
    _price,
    _publish,
    _quantity,
    _queue,
    _sync,
    client,
    hub,
    sandbox,
)

pytestmark = pytest.mark.integration


def _channel(policy: str) -> Channel:
    return Channel(id="allegro", kind="allegro", conn_id="allegro_sandbox", pricing_rule="r", reconcile=policy)


def _reconcile(dsn: str, api: allegro.AllegroClient, policy: str, report_dir: Path) -> ReconcileResult:
    transfer = ledger.Transfer(source="channel:allegro", target="hub", dataset="channel_reconciliation")
    with ledger.recording(dsn, transfer):
        return reconcile(dsn, _channel(policy), allegro.AllegroMarketplace(api).read_offers(None), transfer, report_dir)


@pytest.mark.parametrize("policy", ["hub_wins", "channel_wins", "report_only"])
def test_offer_edited_directly_on_the_marketplace_is_detected(
    hub: str,  # noqa: F811
    client: allegro.AllegroClient,  # noqa: F811
    sandbox: SandboxServer,  # noqa: F811
    tmp_path: Path,
    policy: str,
) -> None:
    a, b, _ = SKUS
    _sync(hub, client)
    _queue(hub, a, "price", {"amount": "80.00", "currency": "PLN"})
    _queue(hub, b, "quantity", {"value": 9})
    _publish(hub, client)
    clean = _reconcile(hub, client, policy, tmp_path)
    assert (clean.compared, clean.differences, clean.report) == (2, 0, None)

    sandbox.simulator.edit_offer(OFFER_IDS[a], price="79.00")  # a seller edits on allegro.pl
    sandbox.simulator.edit_offer(OFFER_IDS[b], quantity=100)
    found = _reconcile(hub, client, policy, tmp_path)
    assert found.differences == 2
    assert found.report is not None
    with open(found.report, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["sku"], r["field"]) for r in rows] == [(a, "price"), (b, "quantity")]
    assert '"79.00"' in rows[0]["channel_value"] and '"80.00"' in rows[0]["hub_value"]
    with psycopg.connect(hub) as conn:
        actions = conn.execute("SELECT sku, action FROM hub.channel_reconciliation ORDER BY id").fetchall()
        ledger_row = conn.execute(
            "SELECT rows_rejected, details->>'policy' FROM audit.transfer WHERE dataset = 'channel_reconciliation' "
            "ORDER BY seq DESC LIMIT 1"
        ).fetchone()
    expected_action = {"hub_wins": "requeued", "channel_wins": "adopted", "report_only": "reported"}[policy]
    assert actions == [(a, expected_action), (b, expected_action)]
    assert ledger_row == (2, policy)

    _publish(hub, client)
    after = _reconcile(hub, client, policy, tmp_path)
    if policy == "hub_wins":  # re-sent with fresh keys: the channel shows the hub's values again
        assert (_price(sandbox, a), _quantity(sandbox, b)) == ("80.00", 9)
        assert after.differences == 0
    elif policy == "channel_wins":  # the hub adopted the channel's values: nothing sent, nothing left to report
        assert (_price(sandbox, a), _quantity(sandbox, b)) == ("79.00", 100)
        assert after.differences == 0
    else:
        assert after.differences == 2


def test_silently_unapplied_change_is_found(
    hub: str,  # noqa: F811
    client: allegro.AllegroClient,  # noqa: F811
    sandbox: SandboxServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    a = SKUS[0]
    _sync(hub, client)
    _queue(hub, a, "price", {"amount": "90.00", "currency": "PLN"})
    _publish(hub, client)
    # The marketplace reported success but the offer reverted (e.g. a moderation rollback).
    sandbox.simulator.edit_offer(OFFER_IDS[a], price=str(Decimal("12.34")))
    found = _reconcile(hub, client, "hub_wins", tmp_path)
    assert found.differences == 1 and found.requeued == 1
    assert found.sample == [
        f'{a} price: hub {{"amount": "90.00", "currency": "PLN"}} / channel {{"amount": "12.34", "currency": "PLN"}}'
    ]


def test_every_marketplace_kind_is_reconcilable_and_a_feed_is_a_clear_config_error(tmp_path: Path) -> None:
    readable = {spec.name for spec in registry.kinds("marketplace", "read_back")}
    publishing = {spec.name for spec in registry.kinds("marketplace", "publish")}
    assert readable == publishing == {"allegro", "ebay", "amazon", "woocommerce"}
    settings = FeedSettings(path="feeds/google.xml", title="t", shop_url="https://shop.example.com")
    feed = Channel(id="google", kind="google_merchant_feed", pricing_rule="r", feed=settings)
    run = ledger.RunContext(run_id="test", dag_id="marketplaces_to_hub_reconciliation", task_id="reconcile_offers")
    with pytest.raises(ConfigError, match="kind 'google_merchant_feed' cannot read back"):
        reconcile_channel("postgresql://unused", feed, run, tmp_path)
