"""Stateful property test of order accounting over random interleavings (issue 18).

Sales, payments and cancellations on three marketplaces, event replays and out-of-order snapshots,
cursors rewound, imports in small pages, imports retried, ERP stock updates read into the hub, ERP
hand-offs (one of them dying after the ERP committed) and quantity pushes, in any order. Real hub, real
sandbox ERP, real pricing; the marketplaces' order APIs are scripted (tests/integration/orders_world.py).

After every step:
- no order is booked by the ERP twice: the ERP's reserved figure = its initial one + the open orders'
  lines it booked;
- no negative quantity is stored or enqueued for any channel;
- after a quantity push, every channel's quantity <= the sellable stock computed independently from the
  hub's tables.
After a settle step (every channel imported to the end, then the ERP hand-off):
- per SKU, units held for orders not handed to the ERP + units of open ERP orders = units sold - units
  cancelled (the marketplaces' truth kept by the test).
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from commerce_sync.channels.orders import MarketplaceOrder
from commerce_sync.config import load_config, load_quality
from commerce_sync.connections import get_connection
from commerce_sync.db import connect, drop_database
from commerce_sync.orders.erp import HandOff, HandOffLine, open_writer
from commerce_sync.orders.importer import push_quantities
from commerce_sync.sources.erp import sync_erp
from tests.conftest import new_database
from tests.faults.world import fault_world, step_erp, step_price
from tests.integration.orders_world import RUN, ScriptedOrders, erp_hand_off, import_all

CHANNELS = ("allegro", "ebay", "amazon")
N_SKUS = 3


@pytest.fixture(scope="module")
def templates(tmp_path_factory: pytest.TempPathFactory, hub_template: str) -> Iterator[dict[str, Any]]:
    """A priced hub and its ERP, copied for every example."""
    with fault_world(tmp_path_factory.mktemp("order-props"), hub_template) as w:
        step_erp(w.hub)
        step_price(w.hub)
        with connect(w.hub) as conn:
            conn.execute("UPDATE hub.outbox SET status = 'sent' WHERE status = 'pending'")
            skus = [
                r[0]
                for r in conn.execute(
                    "SELECT p.sku FROM hub.product AS p JOIN hub.stock AS s USING (sku) WHERE p.active "
                    "ORDER BY s.quantity - s.reserved, p.sku LIMIT %s",
                    (N_SKUS,),
                )
            ]
        with connect(w.erp) as conn:  # a few units each, so sales run them out
            for i, sku in enumerate(skus):
                conn.execute("UPDATE erp.products SET stock = reserved + %s WHERE sku = %s", (2 + i, sku))
        step_erp(w.hub)
        step_price(w.hub)
        _close_sessions(w.hub, w.erp)  # idle pooled sessions (Great Expectations' engine) block copying
        yield {"hub": w.hub, "erp": w.erp, "skus": skus}


def _close_sessions(*urls: str) -> None:
    from commerce_sync.db import database_name

    with connect(urls[0], autocommit=True) as conn:
        for url in urls:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (database_name(url),),
            )


class OrderAccounting(RuleBasedStateMachine):
    world: dict[str, Any]

    def __init__(self) -> None:
        super().__init__()
        self.hub = new_database(self.world["hub"])
        self.erp = new_database(self.world["erp"])
        self._env = {"AIRFLOW_CONN_HUB_DB": self.hub, "AIRFLOW_CONN_ERP_DB": self.erp, "HUB_DATABASE_URL": self.hub}
        self._saved = {k: os.environ.get(k) for k in self._env}
        os.environ.update(self._env)
        self.skus: list[str] = self.world["skus"]
        self.feeds = {channel: ScriptedOrders() for channel in CHANNELS}
        self.orders: dict[str, tuple[str, MarketplaceOrder]] = {}  # order id -> (channel, current snapshot)
        self.count = 0
        with connect(self.erp) as conn:
            self.erp_reserved0 = dict(conn.execute("SELECT sku, reserved FROM erp.products").fetchall())
        self.pushed = False

    def teardown(self) -> None:
        for key, value in self._saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        drop_database(self.hub)
        drop_database(self.erp)

    # ------------------------------------------------------------------ marketplace events
    @rule(
        channel=st.sampled_from(CHANNELS),
        sku_index=st.integers(0, N_SKUS - 1),
        quantity=st.integers(1, 3),
        paid=st.booleans(),
    )
    def sell(self, channel: str, sku_index: int, quantity: int, paid: bool) -> None:
        self.count += 1
        order_id = f"{channel[:2]}-{self.count}"
        order = self.feeds[channel].sell(order_id, self.skus[sku_index], quantity, status="ready" if paid else "unpaid")
        self.orders[order_id] = (channel, order)

    @precondition(lambda self: any(o.status == "unpaid" for _, o in self.orders.values()))
    @rule(data=st.data())
    def pay(self, data: st.DataObject) -> None:
        unpaid = sorted(k for k, (_, o) in self.orders.items() if o.status == "unpaid")
        order_id = data.draw(st.sampled_from(unpaid))
        channel, order = self.orders[order_id]
        self.orders[order_id] = (channel, self.feeds[channel].change(order, "ready"))

    @precondition(lambda self: any(o.status != "cancelled" for _, o in self.orders.values()))
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        live = sorted(k for k, (_, o) in self.orders.items() if o.status != "cancelled")
        order_id = data.draw(st.sampled_from(live))
        channel, order = self.orders[order_id]
        self.orders[order_id] = (channel, self.feeds[channel].change(order, "cancelled"))

    @precondition(lambda self: any(f.snapshots for f in self.feeds.values()))
    @rule(data=st.data())
    def replay_old_snapshot(self, data: st.DataObject) -> None:
        """An event repeated or arriving out of order: an earlier snapshot is reported again."""
        channel = data.draw(st.sampled_from([c for c in CHANNELS if self.feeds[c].snapshots]))
        snapshot = data.draw(st.sampled_from(self.feeds[channel].snapshots))
        self.feeds[channel].report(replace(snapshot))

    @rule(channel=st.sampled_from(CHANNELS))
    def rewind_cursor(self, channel: str) -> None:
        """The cursor goes back (e.g. rewound by a day): everything is read again."""
        with connect(self.hub) as conn:
            conn.execute("UPDATE hub.order_cursor SET cursor = '0' WHERE channel = %s", (channel,))

    # ------------------------------------------------------------------ the hub's tasks
    @rule(channel=st.sampled_from(CHANNELS), page=st.integers(1, 4), retried=st.booleans())
    def import_orders(self, channel: str, page: int, retried: bool) -> None:
        import_all(self.hub, channel, self.feeds[channel], limit=page)
        if retried:  # the task is cleared and runs again
            import_all(self.hub, channel, self.feeds[channel], limit=page)

    @rule(sku_index=st.integers(0, N_SKUS - 1), delta=st.integers(-2, 3))
    def erp_stock_changes(self, sku_index: int, delta: int) -> None:
        with connect(self.erp) as conn:
            conn.execute(
                "UPDATE erp.products SET stock = greatest(reserved, stock + %s) WHERE sku = %s",
                (delta, self.skus[sku_index]),
            )

    @rule()
    def erp_sync(self) -> None:
        config = load_config()
        sync_erp(self.hub, config.erp, get_connection(config.erp.conn_id), RUN, quality=load_quality())

    @rule(dies_after_erp_commit=st.booleans())
    def hand_off(self, dies_after_erp_commit: bool) -> None:
        if dies_after_erp_commit:  # book one due order in the ERP, as a task would just before dying
            with connect(self.hub) as conn:
                due = conn.execute(
                    "SELECT o.channel, o.order_id, l.line_id, l.sku, l.quantity FROM hub.sales_order AS o "
                    "JOIN hub.order_line AS l USING (channel, order_id) "
                    "WHERE o.erp_state = 'pending' AND o.status = 'ready' ORDER BY o.first_seen_at LIMIT 1"
                ).fetchone()
            if due is not None:
                erp = load_config().erp
                with open_writer(erp) as writer:
                    writer.book(HandOff(f"{due[0]}:{due[1]}", due[0], due[1], (HandOffLine(due[2], due[3], due[4]),)))
        erp_hand_off(self.hub)

    @rule()
    def push_quantities(self) -> None:
        config = load_config()
        marketplaces = config.model_copy(update={"channels": [c for c in config.channels if c.id in CHANNELS]})
        push_quantities(self.hub, marketplaces, RUN)
        self.pushed = True

    @rule()
    def settle(self) -> None:
        """Every channel imported to the end and the hand-off run: the books must balance."""
        for channel in CHANNELS:
            import_all(self.hub, channel, self.feeds[channel])
        erp_hand_off(self.hub)
        sold: dict[str, int] = defaultdict(int)
        for _channel, order in self.orders.values():
            if order.status != "cancelled":
                for line in order.lines:
                    assert line.sku is not None
                    sold[line.sku] += line.quantity
        with connect(self.hub) as conn:
            held = dict(
                conn.execute(
                    "SELECT r.sku, sum(r.quantity) FROM hub.stock_reservation AS r "
                    "JOIN hub.sales_order AS o USING (channel, order_id) "
                    "WHERE r.state <> 'released' AND o.erp_state = 'pending' GROUP BY r.sku"
                ).fetchall()
            )
        with connect(self.erp) as conn:
            handed = dict(
                conn.execute(
                    "SELECT l.sku, sum(l.quantity) FROM erp.order_lines AS l JOIN erp.orders AS o USING (order_key) "
                    "WHERE o.status = 'open' GROUP BY l.sku"
                ).fetchall()
            )
        for sku in self.skus:
            assert held.get(sku, 0) + handed.get(sku, 0) == sold.get(sku, 0), (
                f"{sku}: held {held.get(sku, 0)} + handed {handed.get(sku, 0)} != sold - cancelled {sold.get(sku, 0)}"
            )

    # ------------------------------------------------------------------ always
    @invariant()
    def erp_books_each_order_once(self) -> None:
        with connect(self.erp) as conn:
            rows = conn.execute(
                "SELECT p.sku, p.reserved, coalesce((SELECT sum(l.quantity) FROM erp.order_lines AS l "
                "JOIN erp.orders AS o USING (order_key) WHERE o.status = 'open' AND l.sku = p.sku), 0) "
                "FROM erp.products AS p WHERE p.sku = ANY(%s)",
                (self.skus,),
            ).fetchall()
        for sku, reserved, open_units in rows:
            assert reserved == self.erp_reserved0[sku] + open_units, f"{sku}: the ERP booked an order twice"

    @invariant()
    def no_negative_quantity(self) -> None:
        with connect(self.hub) as conn:
            negative = conn.execute(
                "SELECT (SELECT count(*) FROM hub.channel_offer WHERE quantity < 0) + "
                "(SELECT count(*) FROM hub.outbox WHERE field = 'quantity' AND (payload->>'value')::int < 0)"
            ).fetchone()
        assert negative == (0,)

    @invariant()
    def published_quantity_within_sellable(self) -> None:
        if not self.pushed:
            return
        self.pushed = False
        with connect(self.hub) as conn:
            over = conn.execute(
                "SELECT o.channel, o.sku, o.quantity, a.available FROM hub.channel_offer AS o "
                "JOIN LATERAL (SELECT coalesce((SELECT sum(quantity - reserved) FROM hub.stock WHERE sku = o.sku), 0)"
                " + coalesce((SELECT chosen_quantity FROM hub.sku_supply WHERE sku = o.sku), 0)"
                " - coalesce((SELECT sum(r.quantity) FROM hub.stock_reservation AS r WHERE r.sku = o.sku"
                "   AND r.state = 'held' AND NOT (r.erp_booked_at IS NOT NULL AND r.erp_booked_at <= "
                "   (SELECT max(source_updated_at) FROM hub.stock WHERE sku = o.sku))), 0) AS available) AS a ON true "
                "WHERE o.sku = ANY(%s) AND o.quantity > greatest(a.available, 0)",
                (self.skus,),
            ).fetchall()
        assert over == [], f"published more than sellable: {over}"


def test_order_accounting_holds_for_every_interleaving(templates: dict[str, Any]) -> None:
    OrderAccounting.world = templates
    runner = OrderAccounting.TestCase
    runner.settings = settings(
        max_examples=8,
        stateful_step_count=12,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    runner().runTest()
