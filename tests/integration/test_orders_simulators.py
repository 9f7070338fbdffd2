"""Orders through the real simulators: the last unit sold on two marketplaces at once (issue 18).

Everything is real and on loopback: the Allegro, eBay and Amazon simulators (their order APIs and
offers), the hub, the sandbox ERP, pricing, publishing, and the notifiers' SMTP and webhook receivers.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from commerce_sync.channels.marketplace import read_back
from commerce_sync.channels.publish import open_marketplace
from commerce_sync.config import load_config
from commerce_sync.db import connect
from commerce_sync.orders.importer import import_channel, push_quantities
from commerce_sync.orders.oversold import alert_oversold
from commerce_sync_sandbox.orders import buy, cancel
from tests.faults.world import fault_world, run, step_erp, step_price, step_publish
from tests.receivers import notification_connections, smtp_server, webhook_server

MARKETPLACES = ("allegro", "ebay", "amazon")


@pytest.fixture
def world(tmp_path: Path, hub_template: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    with (
        smtp_server() as (mails, smtp_port),
        webhook_server() as (hooks, hook_port),
        fault_world(tmp_path, hub_template) as w,
    ):
        for name, value in notification_connections(smtp_port, hook_port).items():
            monkeypatch.setenv(name, value)
        step_erp(w.hub)
        step_price(w.hub)
        step_publish(w.hub)
        for channel in MARKETPLACES:  # the first import starts each channel's cursor at "now"
            import_channel(w.hub, load_config().channel(channel), run("orders"))
        yield w, mails, hooks


def _shown(hub: str, channel_id: str, sku: str) -> int:
    with open_marketplace(load_config().channel(channel_id), "read_back") as market:
        return next(o.quantity for o in read_back(hub, channel_id, market) if o.sku == sku)


def _sync(hub: str) -> None:
    touched = []
    for channel in MARKETPLACES:
        result = import_channel(hub, load_config().channel(channel), run("orders"))
        touched += [(channel, sku) for sku in result.totals.touched_skus]
    push_quantities(hub, load_config(), run("push"), resend=touched)
    step_publish(hub)


def test_last_unit_sold_on_two_marketplaces_publishes_zero_everywhere_and_alerts(world: Any) -> None:
    w, mails, hooks = world
    with connect(w.hub) as conn:
        sku = conn.execute(
            "SELECT sku FROM hub.channel_offer WHERE channel = 'ebay' AND quantity > 3 ORDER BY sku LIMIT 1"
        ).fetchone()[0]
    listed = {channel: _shown(w.hub, channel, sku) for channel in MARKETPLACES}
    assert all(q > 0 for q in listed.values())
    # The ERP has one unit left; before the hub hears of it, Allegro and eBay both sell "the last unit".
    with connect(w.erp) as conn:
        conn.execute("UPDATE erp.products SET stock = reserved + 1 WHERE sku = %s", (sku,))
    allegro_order = buy(w.server.allegro_url, sku, 1)
    ebay_order = buy(w.server.ebay_url, sku, 1)
    step_erp(w.hub)
    _sync(w.hub)
    with connect(w.hub) as conn:
        orders = conn.execute(
            "SELECT o.channel, o.order_id, r.oversold FROM hub.sales_order AS o "
            "JOIN hub.stock_reservation AS r USING (channel, order_id) WHERE r.sku = %s ORDER BY r.created_at",
            (sku,),
        ).fetchall()
        ledger_lines = conn.execute(
            "SELECT details->'oversold_lines' FROM audit.transfer WHERE dataset = 'order' AND message LIKE '%%oversold%%'"
        ).fetchall()
    assert {(c, o) for c, o, _ in orders} == {("allegro", allegro_order), ("ebay", ebay_order)}
    assert sorted(oversold for _, _, oversold in orders) == [0, 1]
    assert any(sku in line for (lines,) in ledger_lines for line in lines)
    # 0 reaches every marketplace, the two that sold and the one that did not.
    assert {channel: _shown(w.hub, channel, sku) for channel in MARKETPLACES} == dict.fromkeys(MARKETPLACES, 0)
    # The operators hear of it once, by mail and webhook, with the order and what to do.
    alerted = alert_oversold(w.hub)
    assert [line.sku for line in alerted] == [sku]
    hook = hooks.wait_for(lambda h: "oversold" in h["subject"])
    assert sku in hook["body"] and "cancel it on the marketplace" in hook["runbook"]
    assert mails.wait_for(lambda m: "oversold" in m["subject"])
    assert alert_oversold(w.hub) == []
    # The eBay buyer's order is cancelled: the oversold line is released and nothing is listed twice.
    cancel(w.server.ebay_url, ebay_order)
    _sync(w.hub)
    with connect(w.hub) as conn:
        states = dict(
            conn.execute("SELECT channel, state FROM hub.stock_reservation WHERE sku = %s", (sku,)).fetchall()
        )
    assert states == {"allegro": "held", "ebay": "released"}
    assert {channel: _shown(w.hub, channel, sku) for channel in MARKETPLACES} == dict.fromkeys(MARKETPLACES, 0)
