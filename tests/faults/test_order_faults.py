"""The fault matrix's order faults (issue 18): each recovers to the same order totals as a clean run.

The scenario: the catalog is synced, priced and published; each marketplace's order cursor starts; then
the simulators sell (paid and unpaid orders, one SKU on two marketplaces, one order cancelled); the hub
imports, pushes the quantities, hands the orders to the ERP and publishes. A fault is injected on the way
and the operator's (or the next run's) recovery follows. The totals compared: per SKU, the units held by
the hub, booked by the ERP and its reserved figure, the orders per channel and status, the quantity each
channel's offer has, and what each marketplace shows; and the ledger must verify.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from commerce_sync.audit import ledger
from commerce_sync.channels.marketplace import read_back
from commerce_sync.channels.publish import open_marketplace
from commerce_sync.config import load_config
from commerce_sync.db import connect
from commerce_sync.errors import TransientError
from commerce_sync_sandbox.orders import buy, cancel
from tests.faults.test_fault_matrix import Observe, _child, _kill, _simulators, _wait_for
from tests.faults.world import fault_world, run_steps, step_handoff, step_orders, step_publish

pytestmark = pytest.mark.integration
MARKETPLACES = ("allegro", "ebay", "amazon")
BASE = ("erp", "price", "publish")


def _skus(hub: str) -> list[str]:
    with connect(hub) as conn:
        return [
            r[0]
            for r in conn.execute(
                "SELECT sku FROM hub.channel_offer WHERE channel = 'allegro' AND quantity > 5 ORDER BY sku LIMIT 3"
            )
        ]


def _sell(world: Any) -> list[str]:
    """Start the cursors, then sell on the simulators; return the SKUs sold."""
    step_orders(world.hub)  # the first import starts each cursor at "now"
    a, b, c = _skus(world.hub)
    server = world.server
    buy(server.allegro_url, a, 1)
    buy(server.allegro_url, b, 2, paid=False)
    buy(server.ebay_url, a, 1)
    buy(server.ebay_url, c, 1)
    buy(server.amazon_url, b, 1)
    cancel(server.amazon_url, buy(server.amazon_url, c, 1))
    return [a, b, c]


def _finish(hub: str) -> None:
    step_orders(hub)
    step_handoff(hub)
    step_publish(hub)


def totals(world: Any, skus: list[str]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    with connect(world.hub) as conn:
        found["held"] = conn.execute(
            "SELECT r.sku, r.state, o.erp_state, sum(r.quantity) FROM hub.stock_reservation AS r "
            "JOIN hub.sales_order AS o USING (channel, order_id) GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
        ).fetchall()
        found["orders"] = conn.execute(
            "SELECT channel, status, erp_state, count(*) FROM hub.sales_order GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
        ).fetchall()
        found["offers"] = conn.execute(
            "SELECT channel, sku, quantity FROM hub.channel_offer WHERE sku = ANY(%s) ORDER BY 1, 2", (skus,)
        ).fetchall()
        verified = ledger.verify(conn)
    assert verified.ok, verified.problem
    with connect(world.erp) as conn:
        found["erp"] = conn.execute(
            "SELECT sku, reserved, (SELECT coalesce(sum(l.quantity), 0) FROM erp.order_lines AS l "
            "JOIN erp.orders AS o USING (order_key) WHERE o.status = 'open' AND l.sku = p.sku) "
            "FROM erp.products AS p WHERE sku = ANY(%s) ORDER BY sku",
            (skus,),
        ).fetchall()
    for channel_id in MARKETPLACES:
        with open_marketplace(load_config().channel(channel_id), "read_back") as market:
            found[f"shown {channel_id}"] = sorted(
                (o.sku, o.quantity) for o in read_back(world.hub, channel_id, market) if o.sku in skus
            )
    return found


@pytest.fixture(scope="module")
def order_reference(hub_template: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    with fault_world(tmp_path_factory.mktemp("orders-reference"), hub_template) as world:
        run_steps(world.hub, BASE)
        skus = _sell(world)
        _finish(world.hub)
        return totals(world, skus)


def _same(world: Any, skus: list[str], reference: dict[str, Any]) -> str:
    found = totals(world, skus)
    differing = sorted(key for key in reference if found[key] != reference[key])
    assert not differing, {key: (found[key], reference[key]) for key in differing}
    units = sum(row[3] for row in found["held"])
    return f"order totals equal to the clean run ({sum(r[3] for r in found['orders'])} orders, {units} units); chain verified"


def test_kill_9_after_the_erp_booked_an_order(
    world: Any, order_reference: dict[str, Any], observe: Observe, tmp_path: Path
) -> None:
    run_steps(world.hub, BASE)
    skus = _sell(world)
    step_orders(world.hub)
    proc, marker = _child("handoff", "booked", tmp_path)
    _wait_for("the ERP to book the first order", marker.exists, proc)
    _kill(proc)
    with connect(world.hub) as conn:
        handed = conn.execute("SELECT count(*) FROM hub.sales_order WHERE erp_state = 'handed'").fetchone()
    with connect(world.erp) as conn:
        booked = conn.execute("SELECT count(*) FROM erp.orders").fetchone()
    assert handed == (0,) and booked == (1,)
    _finish(world.hub)
    with connect(world.erp) as conn:
        deliveries = conn.execute("SELECT max(deliveries) FROM erp.orders").fetchone()
    assert deliveries == (2,)
    observe(
        "kill -9 of the ERP hand-off after the ERP committed an order, before the hub recorded it",
        "the rerun hands the order again with the same key; the ERP books it once",
        f"after the kill: ERP has {booked[0]} order, hub 0 handed; rerun delivered it twice, booked once; "
        + _same(world, skus, order_reference),
    )


def test_duplicated_and_out_of_order_events(world: Any, order_reference: dict[str, Any], observe: Observe) -> None:
    run_steps(world.hub, BASE)
    for faults in _simulators(world):
        faults.arm(duplicate_events=True, shuffle_events=True, sparse_orders=True)
    skus = _sell(world)
    _finish(world.hub)
    observe(
        "order events delivered twice and out of order; order searches without cancellation/fulfilment details",
        "orders are keyed by the marketplace's ids and read in their current state: nothing is counted twice",
        _same(world, skus, order_reference),
    )


def _day_earlier(value: object) -> object:
    try:
        return (datetime.fromisoformat(str(value).replace("Z", "+00:00")) - timedelta(days=1)).isoformat()
    except ValueError:
        return value


def _rewound(cursor: str) -> str:
    """The cursor a day earlier: every timestamp in it moved back (Allegro's event id to its first event)."""
    try:
        state = json.loads(cursor)
    except json.JSONDecodeError:
        return str(_day_earlier(cursor))
    if not isinstance(state, dict):
        return json.dumps(_day_earlier(state))
    for key, value in state.items():
        if key == "from" and str(value).isdigit():
            state[key] = "0"  # Allegro: back to the first event it kept
        else:
            state[key] = _day_earlier(value)
    return json.dumps(state)


def test_cursor_rewound_by_a_day(world: Any, order_reference: dict[str, Any], observe: Observe) -> None:
    run_steps(world.hub, BASE)
    skus = _sell(world)
    _finish(world.hub)
    with connect(world.hub) as conn:
        cursors = conn.execute("SELECT channel, cursor FROM hub.order_cursor").fetchall()
        for channel, cursor in cursors:
            conn.execute("UPDATE hub.order_cursor SET cursor = %s WHERE channel = %s", (_rewound(cursor), channel))
        before = conn.execute("SELECT max(seq) FROM audit.transfer").fetchone()
    _finish(world.hub)
    with connect(world.hub) as conn:
        reread = conn.execute(
            "SELECT coalesce(sum(rows_read), 0), coalesce(sum(rows_changed), 0) FROM audit.transfer "
            "WHERE seq > %s AND dataset = 'order' AND source LIKE 'channel:%%'",
            before,
        ).fetchone()
    assert reread[0] > 0 and reread[1] == 0
    observe(
        "every order cursor rewound by a day (Allegro to its first event)",
        "the orders are read again and change nothing",
        f"{reread[0]} orders read again, {reread[1]} changed; " + _same(world, skus, order_reference),
    )


def test_429_and_a_5xx_outage_while_importing(world: Any, order_reference: dict[str, Any], observe: Observe) -> None:
    run_steps(world.hub, BASE)
    skus = _sell(world)
    for faults in _simulators(world):
        faults.arm(throttle=2, retry_after=0.2, outage=50)
    failures = 0
    for _attempt in range(3):  # Airflow's retries
        try:
            step_orders(world.hub)
            break
        except TransientError:
            failures += 1
            for faults in _simulators(world):
                faults.arm(outage=0)
    fired = [(f.fired["throttle"], f.fired["outage"]) for f in _simulators(world)]
    with connect(world.hub) as conn:
        failed = conn.execute(
            "SELECT count(*) FROM audit.transfer WHERE status = 'failed' AND dataset = 'order'"
        ).fetchone()
    assert failures >= 1 and failed[0] >= 1
    _finish(world.hub)
    observe(
        "429s with Retry-After, then a 5xx outage of every marketplace while importing orders",
        "throttling is waited out; the outage fails the import as temporary with the cursor unmoved; the retry imports",
        f"(429s, 503s) answered {fired}; {failures} failed attempt(s), {failed[0]} failed ledger row(s); "
        + _same(world, skus, order_reference),
    )
