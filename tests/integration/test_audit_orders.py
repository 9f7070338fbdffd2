"""Orders made visible to auditors and operators (issue 18, item 7), against a real hub and sandbox ERP.

One sandbox for the module (the orders world of ``test_orders_hub``): a few marketplace orders are
imported, reserved, handed to the ERP, cancelled and oversold, then

* the SKU trace lists the reservations that lowered a channel's quantity, with their import and
  hand-off transfers, and explains every quantity change (a forged one is a gap);
* the auditor's view lists the orders with their lines, reservation and hand-off state, filtered,
  paged and exported as CSV;
* ``commerce-sync orders`` lists them, the open oversold lines, and resolves one order.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from commerce_sync import cli
from commerce_sync.audit import changes, ledger
from commerce_sync.audit.trace import format_trace, trace_offer
from commerce_sync.db import connect
from tests.faults.world import fault_world, step_erp, step_feeds, step_price
from tests.integration.orders_world import (
    ScriptedOrders,
    erp_hand_off,
    erp_product,
    import_all,
    push,
    set_erp_stock,
    skus_in_stock,
)

pytestmark = pytest.mark.integration

FEED = "google"  # a feed channel: what it shows is the file written, no marketplace publish needed


@dataclass
class Orders:
    hub: str
    erp: str
    sku: str  # sold on allegro (2) and ebay (1), then handed to the ERP
    sold_at: datetime  # after the feed was first written, before the sales
    import_ids: dict[str, str]  # channel -> the import transfer of the sale
    cancelled_sku: str  # sold on allegro and cancelled
    oversold_sku: str  # last unit sold on allegro and ebay
    many: int  # amazon orders of one more SKU (the pager)


def _leave_stock(erp: str, hub: str, skus: list[str], units: int) -> None:
    for sku in skus:
        _, reserved = erp_product(erp, sku)
        set_erp_stock(erp, sku, reserved + units)


@pytest.fixture(scope="module")
def orders(tmp_path_factory: pytest.TempPathFactory, hub_template: str) -> Iterator[Orders]:
    with fault_world(tmp_path_factory.mktemp("audit-orders"), hub_template) as w:
        step_erp(w.hub)
        sku, cancelled_sku, oversold_sku, many_sku = skus_in_stock(w.hub, 4)
        _leave_stock(w.erp, w.hub, [sku, cancelled_sku], 20)  # below every channel's max_listed
        _leave_stock(w.erp, w.hub, [oversold_sku], 1)
        _leave_stock(w.erp, w.hub, [many_sku], 200)
        step_erp(w.hub)
        step_price(w.hub)
        step_feeds(w.hub)
        sold_at = datetime.now(UTC)
        allegro, ebay, amazon = ScriptedOrders(), ScriptedOrders(), ScriptedOrders()
        allegro.sell("A-1", sku, 2)
        ebay.sell("E-1", sku, 1)
        gone = allegro.sell("A-CANCEL", cancelled_sku, 1)
        allegro.sell("A-LAST", oversold_sku, 1)
        ebay.sell("E-LAST", oversold_sku, 1)
        for i in range(53):
            amazon.sell(f"AMZ-{i:03d}", many_sku, 1)
        import_ids = {
            "allegro": import_all(w.hub, "allegro", allegro).transfer_ids[0],
            "ebay": import_all(w.hub, "ebay", ebay).transfer_ids[0],
        }
        import_all(w.hub, "amazon", amazon)
        push(w.hub)
        allegro.change(gone, "cancelled")
        import_all(w.hub, "allegro", allegro)
        push(w.hub)
        step_feeds(w.hub)
        yield Orders(w.hub, w.erp, sku, sold_at, import_ids, cancelled_sku, oversold_sku, 53)


def _trace(hub: str, channel: str, sku: str, at: datetime | None = None) -> dict[str, Any]:
    with connect(hub) as conn:
        return trace_offer(conn, channel, sku, at)


def test_trace_lists_the_reservations_that_lowered_the_quantity(orders: Orders) -> None:
    trace = _trace(orders.hub, FEED, orders.sku)
    assert trace["gaps"] == [], trace["gaps"]
    held = trace["reservations"]
    assert held["quantity"] == trace["published"]["fields"]["quantity"]["value"]
    assert held["units_held"] == 3
    by_order = {(line["channel"], line["order_id"]): line for line in held["lines"]}
    assert set(by_order) == {("allegro", "A-1"), ("ebay", "E-1")}
    allegro = by_order["allegro", "A-1"]
    assert (allegro["units"], allegro["state"], allegro["line_id"], allegro["erp_state"]) == (
        2,
        "held",
        "A-1-1",
        "pending",
    )
    assert allegro["import_transfer_id"] == orders.import_ids["allegro"]
    assert by_order["ebay", "E-1"]["import_transfer_id"] == orders.import_ids["ebay"]
    referenced = {t["transfer_id"]: t["referenced_by"] for t in trace["transfers"]}
    assert "order allegro:A-1 line A-1-1: reserved (order import)" in referenced[orders.import_ids["allegro"]]
    # The change that lowered the quantity is explained by the two reservations.
    last = held["quantity_changes"][-1]
    assert int(last["old_value"]) - int(last["new_value"]) == 3
    assert {r.split(":")[0] + ":" + r.split(":")[1].split(" ")[0] for r in last["explained_by"]} == {
        "order allegro:A-1",
        "order ebay:E-1",
    }
    text = format_trace(trace)
    assert "3 unit(s) held by 2 order line(s)" in text and "allegro order A-1 line A-1-1: 2 unit(s) held" in text
    # Before the sales nothing was held.
    before = _trace(orders.hub, FEED, orders.sku, orders.sold_at)
    assert before["reservations"]["lines"] == [] and before["reservations"]["units_held"] == 0
    # A cancelled order holds nothing; its release explains the quantity coming back.
    cancelled = _trace(orders.hub, FEED, orders.cancelled_sku)
    assert cancelled["gaps"] == [] and cancelled["reservations"]["lines"] == []
    assert any("released 1" in reason for reason in cancelled["reservations"]["quantity_changes"][-1]["explained_by"])


def test_trace_follows_the_hand_off_to_the_erp(orders: Orders) -> None:
    result = erp_hand_off(orders.hub)
    assert result.refused == []
    trace = _trace(orders.hub, FEED, orders.sku)
    lines = {line["order_id"]: line for line in trace["reservations"]["lines"]}
    # The quantity shown was computed while the orders were held: they are still what lowered it.
    assert lines["A-1"]["erp_state"] == "handed" and lines["A-1"]["erp_transfer_id"] == result.transfer_id
    assert lines["A-1"]["erp_state_then"] == "pending"
    referenced = {t["transfer_id"]: t["referenced_by"] for t in trace["transfers"]}
    assert "order allegro:A-1 line A-1-1: ERP hand-off" in referenced[result.transfer_id]
    # Once the hub has read the ERP's figures (which now include the orders, and 4 units more in stock)
    # a new quantity counts no reservation of theirs: the ERP's own reserved does.
    stock, _ = erp_product(orders.erp, orders.sku)
    set_erp_stock(orders.erp, orders.sku, stock + 4)
    step_erp(orders.hub)
    push(orders.hub)
    step_feeds(orders.hub)
    after = _trace(orders.hub, FEED, orders.sku)
    assert after["gaps"] == [], after["gaps"]
    assert after["reservations"]["lines"] == []
    last = after["reservations"]["quantity_changes"][-1]
    assert int(last["new_value"]) - int(last["old_value"]) == 4
    assert any("own stock" in r and "reserved" in r for r in last["explained_by"]), last


def test_an_unexplained_quantity_change_is_a_gap(orders: Orders) -> None:
    channel = "amazon"  # never published here: the trace reads the latest quantity change
    assert not [g for g in _trace(orders.hub, channel, orders.oversold_sku)["gaps"] if "explained by no" in g]
    transfer = ledger.Transfer(
        source="hub",
        target=f"channel:{channel}",
        dataset="channel_offer",
        run=ledger.RunContext(run_id="forged", dag_id="forged", task_id="forged"),
    )
    with connect(orders.hub) as conn:  # two quantity changes in one transaction: nothing between them
        for step, (old, new) in enumerate((("0", "7"), ("7", "8")), start=1):
            conn.execute(
                """INSERT INTO audit.change (transfer_id, dataset, sku, channel, field, old_value, new_value,
                                             rule_id, rule_version, source_ref)
                   SELECT %s, 'channel_offer', sku, channel, 'quantity', %s, %s, rule_id, rule_version,
                          jsonb_build_object('offer_version', version + %s)
                   FROM hub.channel_offer WHERE channel = %s AND sku = %s""",
                (transfer.transfer_id, old, new, step, channel, orders.oversold_sku),
            )
        changes.summarise(conn, transfer)
        ledger.append(conn, transfer, "success")
    gaps = _trace(orders.hub, channel, orders.oversold_sku)["gaps"]
    assert [g for g in gaps if "quantity change 7 -> 8" in g and "explained by no recorded change" in g], gaps


# --------------------------------------------------------------------------------------------
# The auditor's view
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def view(orders: Orders) -> Iterator[Any]:
    if "AIRFLOW_HOME" not in os.environ or not os.environ.get("AIRFLOW__API_AUTH__JWT_SECRET"):
        pytest.skip("needs the embedded Airflow home and JWT secret: run through `make test` (scripts/test.sh)")
    from airflow.api_fastapi.app import init_auth_manager
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from commerce_sync.audit.view import create_app
    from tests.integration.test_audit_view_api import _token

    root = FastAPI()
    root.mount("/audit", create_app(dsn=lambda: orders.hub))
    with TestClient(root, follow_redirects=False) as client:
        client.headers["Authorization"] = f"Bearer {_token(init_auth_manager())}"
        yield client


def test_orders_page_lists_lines_reservations_and_hand_off(view: Any, orders: Orders) -> None:
    page = view.get("/audit/orders", params={"channel": "allegro"})
    assert page.status_code == 200
    assert 'href="/audit/orders"' in page.text  # the navigation link of the base layout
    assert "3 orders, page 1 of 1" in page.text
    for order_id in ("A-1", "A-CANCEL", "A-LAST"):
        assert f'<td class="mono">{order_id}</td>' in page.text
    assert f"{orders.sku} × 2" in page.text and f"{orders.cancelled_sku} × 1, released" in page.text
    assert f'href="/audit/transfers/{orders.import_ids["allegro"]}"' in page.text
    assert "AMZ-" not in page.text
    oversold = view.get("/audit/orders", params={"oversold": "1"})
    assert "1 orders, page 1 of 1" in oversold.text and "E-LAST" in oversold.text and "oversold 1" in oversold.text
    cancelled = view.get("/audit/orders", params={"status": "cancelled", "erp_state": "not_needed"})
    assert "1 orders" in cancelled.text and "A-CANCEL" in cancelled.text
    none = view.get("/audit/orders", params={"erp_state": "cancel_pending"})
    assert "0 orders, page 1 of 1" in none.text and "No orders." in none.text


def test_orders_are_paged_and_exported_with_the_filters(view: Any, orders: Orders) -> None:
    first = view.get("/audit/orders", params={"channel": "amazon"})
    assert f"{orders.many} orders, page 1 of 2" in first.text
    assert first.text.count('<td class="mono">AMZ-') == 50
    assert 'href="/audit/orders?channel=amazon&amp;page=2"' in first.text
    second = view.get("/audit/orders", params={"channel": "amazon", "page": 2})
    assert second.text.count('<td class="mono">AMZ-') == orders.many - 50
    assert 'href="/audit/orders.csv?channel=amazon"' in first.text
    export = view.get("/audit/orders.csv", params={"channel": "ebay"})
    assert export.status_code == 200 and export.headers["content-type"].startswith("text/csv")
    assert export.headers["content-disposition"] == 'attachment; filename="orders.csv"'
    rows = list(csv.DictReader(io.StringIO(export.text)))
    assert {row["order_id"] for row in rows} == {"E-1", "E-LAST"}
    last = next(row for row in rows if row["order_id"] == "E-LAST")
    assert (last["oversold_units"], last["held_units"], last["channel"]) == ("1", "1", "ebay")
    assert json.loads(last["lines"])[0]["sku"] == orders.oversold_sku
    assert orders.import_ids["ebay"] in {t["transfer_id"] for t in json.loads(last["transfers"])}


# --------------------------------------------------------------------------------------------
# commerce-sync orders
# --------------------------------------------------------------------------------------------


def _cli(orders: Orders, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str]:
    monkeypatch.setenv("HUB_DATABASE_URL", orders.hub)
    code = cli.main(["orders", *args])
    return code, capsys.readouterr().out


def test_cli_lists_recent_orders(
    orders: Orders, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    code, out = _cli(orders, monkeypatch, capsys, "--channel", "ebay", "--format", "json")
    listed = json.loads(out)
    assert code == 0 and listed["total"] == 2
    assert {o["order_id"] for o in listed["orders"]} == {"E-LAST", "E-1"}
    seen = [o["first_seen_at"] for o in listed["orders"]]
    assert seen == sorted(seen, reverse=True)  # newest first
    code, out = _cli(orders, monkeypatch, capsys, "--limit", "2")
    assert code == 0 and out.startswith("2 of ")
    code, out = _cli(orders, monkeypatch, capsys, "--channel", "allegro")
    assert code == 0 and "allegro:A-CANCEL  cancelled (CANCELLED)" in out and "ERP not_needed" in out
    assert f"A-CANCEL-1: {orders.cancelled_sku} x 1, released" in out
    assert cli.main(["orders", "--limit", "0"]) == 2


def test_cli_lists_and_resolves_oversold_lines(
    orders: Orders, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    code, out = _cli(orders, monkeypatch, capsys, "--oversold")
    assert code == 0 and out.startswith("1 open oversold line(s)")
    assert f"ebay order E-LAST line E-LAST-1: SKU {orders.oversold_sku} sold 1, 1 not in stock" in out
    code, out = _cli(orders, monkeypatch, capsys, "--oversold", "--format", "json", "--channel", "allegro")
    assert code == 0 and json.loads(out) == []
    why = ("--reason", "cancelled on eBay, refund sent", "--by", "ops-anna")
    assert _cli(orders, monkeypatch, capsys, "--resolve", "allegro:A-LAST", *why) == (
        1,
        "allegro:A-LAST: 0 oversold line(s) marked resolved\n",
    )
    assert cli.main(["orders", "--resolve", "ebay:E-LAST"]) == 2  # no reason: refused, nothing resolved
    code, out = _cli(orders, monkeypatch, capsys, "--oversold")
    assert out.startswith("1 open oversold line(s)")
    assert _cli(orders, monkeypatch, capsys, "--resolve", "ebay:E-LAST", *why) == (
        0,
        "ebay:E-LAST: 1 oversold line(s) marked resolved\n",
    )
    assert _cli(orders, monkeypatch, capsys, "--resolve", "ebay:E-LAST", *why)[0] == 1  # nothing open any more
    code, out = _cli(orders, monkeypatch, capsys, "--oversold")
    assert out.startswith("0 open oversold line(s)")
    assert cli.main(["orders", "--resolve", "no-colon", "--reason", "x"]) == 2
    with connect(orders.hub) as conn:
        decisions = conn.execute(
            "SELECT source, rows_changed, details FROM audit.transfer WHERE dataset = 'oversold_resolution'"
        ).fetchall()
    assert len(decisions) == 1  # the refused and the empty resolutions wrote nothing
    source, changed, details = decisions[0]
    assert (source, changed, details["order"], details["reason"]) == (
        "operator:ops-anna",
        1,
        "ebay:E-LAST",
        "cancelled on eBay, refund sent",
    )
    assert [line["sku"] for line in details["lines"]] == [orders.oversold_sku]
    with connect(orders.hub) as conn:
        resolved = conn.execute(
            "SELECT oversold_resolved_at FROM hub.stock_reservation WHERE order_id = 'E-LAST'"
        ).fetchone()
    assert resolved is not None and resolved[0] is not None
