"""Orders in the hub against a real hub, the sandbox ERP and the pricing engine (issue 18)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from commerce_sync import registry
from commerce_sync.channels.orders import MarketplaceOrder, OrderBatch, OrderLine
from commerce_sync.config import load_config
from commerce_sync.db import connect
from commerce_sync.orders.importer import import_orders
from tests.faults.world import fault_world, step_erp, step_price
from tests.integration.orders_world import (
    RUN,
    T0,
    ScriptedOrders,
    erp_hand_off,
    erp_product,
    import_all,
    offer_quantities,
    pending_fields,
    push,
    set_erp_stock,
    skus_in_stock,
)

# Every enabled channel published through the outbox (the shipped config: allegro, ebay, amazon, shop).
OUTBOX_CHANNELS = {c.id for c in load_config().channels if c.enabled and registry.get(c.kind).uses_outbox}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, hub_template: str) -> Iterator[object]:
    """One sandbox for the module (setting it up costs ~15 s); each test works on SKUs of its own."""
    with fault_world(tmp_path_factory.mktemp("orders"), hub_template) as w:
        step_erp(w.hub)
        step_price(w.hub)
        with connect(w.hub) as conn:  # start from an empty outbox: only what orders cause is pending
            conn.execute("UPDATE hub.outbox SET status = 'sent' WHERE status = 'pending'")
        yield w


@pytest.fixture(autouse=True)
def fresh_cursors(world: object) -> None:
    """Each test's scripted feeds start at 0: forget the cursors earlier tests stored."""
    with connect(world.hub) as conn:  # type: ignore[attr-defined]
        conn.execute("DELETE FROM hub.order_cursor")


def _sku(hub: str, index: int) -> str:
    return skus_in_stock(hub, 10)[index]


def _sellable(hub: str, sku: str, channel: str = "ebay") -> int:
    return offer_quantities(hub, sku)[channel]


def test_sale_reserves_and_pushes_only_the_quantity_to_every_channel(world: object) -> None:
    hub = world.hub  # type: ignore[attr-defined]
    sku = _sku(hub, 0)
    before = offer_quantities(hub, sku)
    allegro = ScriptedOrders()
    allegro.sell("A-1", sku, 2)
    result = import_all(hub, "allegro", allegro)
    assert (result.totals.new_orders, result.totals.lines_reserved, result.totals.oversold) == (1, 1, [])
    push(hub)
    after = offer_quantities(hub, sku)
    for channel in OUTBOX_CHANNELS:
        assert after[channel] == before[channel] - 2 or after[channel] == before[channel] == 500
    pending = pending_fields(hub, sku)
    assert {field for _, field, _ in pending} == {"quantity"}, "a quantity-only change must send no price"
    assert {channel for channel, _, _ in pending} == {c for c in OUTBOX_CHANNELS if after[c] != before[c]}
    # The ledger has the import, with one change row per line field, and the chain verifies.
    with connect(hub) as conn:
        row = conn.execute(
            "SELECT rows_changed, changes_count FROM audit.transfer WHERE transfer_id = %s", (result.transfer_ids[0],)
        ).fetchone()
        assert row == (1, 2)  # order_status + reservation
        fields = conn.execute(
            "SELECT field, old_value, new_value FROM audit.change WHERE transfer_id = %s ORDER BY field",
            (result.transfer_ids[0],),
        ).fetchall()
    assert fields == [("order_status", None, "ready"), ("reservation", None, "held 2")]


def test_replayed_batch_and_stale_snapshot_change_nothing(world: object) -> None:
    hub = world.hub  # type: ignore[attr-defined]
    sku = _sku(hub, 1)
    feed = ScriptedOrders()
    bought = feed.sell("E-1", sku, 1, status="unpaid")
    paid = feed.change(bought, "ready")
    import_all(hub, "ebay", feed)
    feed.report(bought)  # an old snapshot arrives again (out of order) ...
    result = import_all(hub, "ebay", feed)
    assert result.totals.changed == 0 and result.totals.stale == 1
    feed.report(paid)  # ... and the current one is repeated
    assert import_all(hub, "ebay", feed).totals.changed == 0
    with connect(hub) as conn:
        assert conn.execute("SELECT status FROM hub.sales_order WHERE order_id = 'E-1'").fetchone() == ("ready",)
        assert conn.execute("SELECT count(*) FROM hub.stock_reservation WHERE order_id = 'E-1'").fetchone() == (1,)
    # A cancelled order never comes back to life, whatever arrives later.
    feed.change(paid, "cancelled")
    feed.report(paid)
    import_all(hub, "ebay", feed)
    with connect(hub) as conn:
        assert conn.execute("SELECT status FROM hub.sales_order WHERE order_id = 'E-1'").fetchone() == ("cancelled",)
        assert conn.execute("SELECT state FROM hub.stock_reservation WHERE order_id = 'E-1'").fetchone() == (
            "released",
        )


def test_cancellation_releases_and_restores_the_quantity(world: object) -> None:
    hub = world.hub  # type: ignore[attr-defined]
    sku = _sku(hub, 2)
    before = offer_quantities(hub, sku)
    feed = ScriptedOrders()
    order = feed.sell("A-9", sku, 1)
    import_all(hub, "allegro", feed)
    push(hub)
    feed.change(order, "cancelled")
    result = import_all(hub, "allegro", feed)
    assert result.totals.lines_released == 1 and result.totals.cancelled_orders == 1
    push(hub)
    assert offer_quantities(hub, sku) == before


def test_hand_off_books_once_even_after_a_crash_and_the_erp_takes_over(world: object) -> None:
    hub, erp = world.hub, world.erp  # type: ignore[attr-defined]
    sku = _sku(hub, 3)
    stock, reserved = erp_product(erp, sku)
    feed = ScriptedOrders()
    feed.sell("A-2", sku, 3)
    import_all(hub, "allegro", feed)
    push(hub)
    listed = _sellable(hub, sku)
    # The task dies after the ERP committed and before the hub recorded it: the ERP has the order ...
    config = load_config()
    from commerce_sync.orders.erp import HandOff, HandOffLine, open_writer

    with open_writer(config.erp) as writer:
        writer.book(HandOff("allegro:A-2", "allegro", "A-2", (HandOffLine("A-2-1", sku, 3),)))
    assert erp_product(erp, sku) == (stock, reserved + 3)
    # ... and the retry books nothing more.
    result = erp_hand_off(hub)
    assert result.handed >= 1 and result.refused == []
    with connect(hub) as conn:
        assert conn.execute("SELECT erp_state FROM hub.sales_order WHERE order_id = 'A-2'").fetchone() == ("handed",)
    assert erp_product(erp, sku) == (stock, reserved + 3)
    with connect(erp) as conn:
        assert conn.execute("SELECT deliveries FROM erp.orders WHERE order_key = 'allegro:A-2'").fetchone() == (2,)
    assert erp_hand_off(hub).handed == 0  # nothing due any more
    # Until the hub reads the ERP's new figures the reservation still counts; afterwards the ERP's does.
    with connect(hub) as conn:
        assert conn.execute("SELECT state FROM hub.stock_reservation WHERE order_id = 'A-2'").fetchone() == ("held",)
    step_erp(hub)
    push(hub)
    assert _sellable(hub, sku) == listed, "the units must be counted exactly once across the take-over"
    assert erp_hand_off(hub).taken_over >= 1
    with connect(hub) as conn:
        state = conn.execute("SELECT state FROM hub.stock_reservation WHERE order_id = 'A-2'").fetchone()
        assert state == ("taken_over",)
    # Cancelled after the hand-off: the ERP hears it once and gives the units back.
    feed.change(feed.snapshots[0], "cancelled")
    import_all(hub, "allegro", feed)
    assert erp_hand_off(hub).cancelled >= 1
    assert erp_product(erp, sku) == (stock, reserved)
    step_erp(hub)
    push(hub)
    assert _sellable(hub, sku) == offer_quantities(hub, sku)["ebay"]


def test_last_unit_sold_twice_is_recorded_as_oversold_and_zero_published(world: object) -> None:
    hub, erp = world.hub, world.erp  # type: ignore[attr-defined]
    sku = _sku(hub, 4)
    _, reserved = erp_product(erp, sku)
    set_erp_stock(erp, sku, reserved + 1)  # one unit left
    step_erp(hub)
    push(hub)
    allegro, ebay = ScriptedOrders(), ScriptedOrders()
    allegro.sell("A-LAST", sku, 1)
    ebay.sell("E-LAST", sku, 1)
    first = import_all(hub, "allegro", allegro)
    second = import_all(hub, "ebay", ebay)
    assert first.totals.oversold == []
    assert [(line.sku, line.oversold) for line in second.totals.oversold] == [(sku, 1)]
    push(hub)
    assert set(offer_quantities(hub, sku).values()) == {0}, "every channel, feeds included, must list 0"
    with connect(hub) as conn:
        details = conn.execute(
            "SELECT message, details->'oversold_lines' FROM audit.transfer WHERE transfer_id = %s",
            (second.transfer_ids[0],),
        ).fetchone()
    assert details is not None and details[0] == "1 oversold order line(s)" and "E-LAST" in details[1][0]


def test_bad_orders_are_quarantined_and_good_ones_kept(world: object) -> None:
    hub = world.hub  # type: ignore[attr-defined]
    sku = _sku(hub, 5)
    feed = ScriptedOrders()
    feed.sell("OK-1", sku, 1)
    feed.report(MarketplaceOrder("BAD-1", "ready", "READY", "1", T0, (OrderLine("l1", sku, None, 0),)))
    feed.report(MarketplaceOrder("UNKNOWN-1", "ready", "READY", "1", T0, (OrderLine("l1", "NO-SUCH-SKU", "999", 1),)))
    result = import_all(hub, "amazon", feed)
    assert (result.totals.new_orders, result.totals.rejected, result.totals.unresolved_lines) == (2, 1, 1)
    with connect(hub) as conn:
        reasons = dict(
            conn.execute("SELECT dataset, reason FROM hub.quarantine WHERE source = 'channel:amazon'").fetchall()
        )
        assert "BAD-1" in reasons["order"] and "quantity 0" in reasons["order"]
        assert "UNKNOWN-1" in reasons["order_line"] and "999" in reasons["order_line"]
        held = conn.execute("SELECT order_id FROM hub.stock_reservation WHERE channel = 'amazon'").fetchall()
        assert held == [("OK-1",)]
    handed = erp_hand_off(hub)
    assert any("UNKNOWN-1" in r and "no known SKU" in r for r in handed.refused)
    with connect(hub) as conn:
        states = dict(
            conn.execute("SELECT order_id, erp_state FROM hub.sales_order WHERE channel = 'amazon'").fetchall()
        )
    assert states == {"OK-1": "handed", "UNKNOWN-1": "pending"}


class _RecordedOrders(ScriptedOrders):
    """A scripted feed that records each read (cursor, thread) and can fail the read from one cursor."""

    def __init__(self, fail_from: str = "never") -> None:
        super().__init__()
        self.reads: list[tuple[str | None, str]] = []
        self.fail_from = fail_from

    def read_orders(self, cursor: str | None, *, limit: int = 100) -> OrderBatch:
        self.reads.append((cursor, threading.current_thread().name))
        if cursor == self.fail_from:
            raise ConnectionError(f"the marketplace dropped the connection reading from {cursor}")
        return super().read_orders(cursor, limit=limit)


def test_the_next_batch_is_read_while_the_last_one_is_stored(world: object) -> None:
    hub = world.hub  # type: ignore[attr-defined]
    feed = _RecordedOrders()
    for i, sku in enumerate(skus_in_stock(hub, 7)):
        feed.sell(f"RA-{i}", sku, 1)
    result = import_orders(hub, load_config().channel("ebay"), feed, RUN, limit=2)
    assert (result.batches, result.totals.new_orders, result.cursor) == (4, 7, "7")
    # Each cursor read once; every read after the first ran on the read-ahead thread, during a store.
    assert [cursor for cursor, _ in feed.reads] == [None, "2", "4", "6"]
    assert all(thread.startswith("orders-ebay") for _, thread in feed.reads[1:]), feed.reads
    with connect(hub) as conn:
        stored = conn.execute("SELECT count(*) FROM hub.sales_order WHERE order_id LIKE 'RA-%'").fetchone()
    assert stored == (7,)


def test_a_failed_read_ahead_keeps_the_stored_batches_and_is_ledgered(world: object) -> None:
    hub = world.hub  # type: ignore[attr-defined]
    feed = _RecordedOrders(fail_from="4")
    for i, sku in enumerate(skus_in_stock(hub, 6)):
        feed.sell(f"RF-{i}", sku, 1)
    with pytest.raises(ConnectionError, match="reading from 4"):
        import_orders(hub, load_config().channel("amazon"), feed, RUN, limit=2)
    with connect(hub) as conn:
        cursor = conn.execute("SELECT cursor FROM hub.order_cursor WHERE channel = 'amazon'").fetchone()
        stored = conn.execute("SELECT count(*) FROM hub.sales_order WHERE order_id LIKE 'RF-%'").fetchone()
        failed = conn.execute(
            "SELECT details->>'cursor_before', message FROM audit.transfer WHERE source = 'channel:amazon' "
            "AND status = 'failed' ORDER BY seq DESC LIMIT 1"
        ).fetchone()
    assert cursor == ("4",) and stored == (4,)  # the two batches before the failed read are kept
    assert failed is not None and failed[0] == "4" and "reading from 4" in failed[1]
    feed.fail_from = "never"  # the retry goes on from the stored cursor
    result = import_orders(hub, load_config().channel("amazon"), feed, RUN, limit=2)
    assert (result.totals.new_orders, result.cursor) == (2, "6")


def test_reads_add_up_to_one_transaction_and_a_failed_read_keeps_the_earlier_ones(world: object) -> None:
    hub = world.hub  # type: ignore[attr-defined]
    channel = load_config().channel("allegro")
    feed = _RecordedOrders()
    for i, sku in enumerate(skus_in_stock(hub, 7)):
        feed.sell(f"RT-{i}", sku, 1)
    result = import_orders(hub, channel, feed, RUN, limit=2, orders_per_transaction=5)
    # Reads of 2, 2, 2 (6 >= 5) make the first transaction, the last read of 1 the second.
    assert (result.batches, result.totals.new_orders, result.cursor) == (2, 7, "7")
    with connect(hub) as conn:
        reads = conn.execute(
            "SELECT (details->'reader'->>'reads')::int, details->>'cursor_after' FROM audit.transfer "
            "WHERE transfer_id = ANY(%s::uuid[]) ORDER BY seq",
            (result.transfer_ids,),
        ).fetchall()
    assert reads == [(3, "6"), (None, "7")]
    # A read failing after two good ones in the same transaction: the two are stored, then it fails.
    feed.fail_from = "11"
    for i, sku in enumerate(skus_in_stock(hub, 6)):
        feed.sell(f"RU-{i}", sku, 1)
    with pytest.raises(ConnectionError, match="reading from 11"):
        import_orders(hub, channel, feed, RUN, limit=2, orders_per_transaction=100)
    with connect(hub) as conn:
        cursor = conn.execute("SELECT cursor FROM hub.order_cursor WHERE channel = 'allegro'").fetchone()
        stored = conn.execute("SELECT count(*) FROM hub.sales_order WHERE order_id LIKE 'RU-%'").fetchone()
    assert cursor == ("11",) and stored == (4,)
