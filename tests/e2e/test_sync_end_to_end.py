"""Whole DAG runs through Airflow (`airflow dags test`) against the sandbox, end to end.

Round 1 syncs everything from scratch; round 2 changes one purchase price in the sandbox ERP and
checks that exactly that SKU is republished on every channel; round 3 serves a supplier feed that
is not XML and checks that its task fails with a message naming the supplier and the URL, the
other supplier still loads, and nothing already in the hub changes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from lxml import etree

from commerce_sync.audit.ledger import verify
from commerce_sync.db import connect
from commerce_sync_devtools.demo import DAG_ORDER, run_dag
from commerce_sync_sandbox.erp import set_purchase_price
from tests.e2e.sandbox_world import sandbox_world

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
CHANGED_SKU = "SKU-000001"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    tmp = tmp_path_factory.mktemp("e2e")
    with sandbox_world(tmp) as world:
        yield {"hub": world.hub, "erp": world.erp, "tmp": world.tmp, "server": world.server}


def _run(dag_ids: tuple[str, ...], logs: Path) -> dict[str, Path]:
    logs.mkdir(parents=True, exist_ok=True)
    results = {}
    for dag_id in dag_ids:
        ok, _, log_file = run_dag(dag_id, logs)
        assert ok, f"{dag_id} failed:\n" + log_file.read_text(errors="replace")[-4000:]
        results[dag_id] = log_file
    return results


def _ledger(hub: str, since_seq: int = 0) -> list[dict]:
    with connect(hub) as conn:
        cur = conn.execute(
            "SELECT seq, dag_id, task_id, source, target, dataset, status, rows_read, rows_written, rows_rejected, "
            "rows_changed, message, details FROM audit.transfer WHERE seq > %s ORDER BY seq",
            (since_seq,),
        )
        names = [c.name for c in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur]


def _feed_items(path: Path) -> dict[str, bytes]:
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    root = etree.parse(str(path), parser).getroot()
    ns = {"g": "http://base.google.com/ns/1.0"}
    return {item.findtext("g:id", namespaces=ns): etree.tostring(item) for item in root.iter("item")}


def _allegro_offers(world: dict) -> dict[str, dict]:
    sim = world["server"].simulator
    page = sim.list_offers(0, 1000)
    return {o["external"]["id"]: o for o in page["offers"]}


def test_round_1_full_sync(world: dict) -> None:
    _run(DAG_ORDER, world["tmp"] / "logs-1")
    rows = _ledger(world["hub"])
    assert all(r["status"] == "success" for r in rows), rows
    by_dataset = {r["dataset"]: r for r in rows}
    assert by_dataset["product"]["rows_changed"] == 300
    suppliers = {r["source"]: r for r in rows if r["dataset"] == "supplier_offer"}
    assert set(suppliers) == {"supplier:acme", "supplier:bravo"}
    assert all(r["rows_rejected"] == 2 for r in suppliers.values())

    with connect(world["hub"]) as conn:
        quarantined = conn.execute(
            "SELECT source, record_key, source_line, reason FROM hub.quarantine ORDER BY source, record_key"
        ).fetchall()
        allegro = dict(
            (sku, (price, qty))
            for sku, price, qty in conn.execute(
                "SELECT sku, price, quantity FROM hub.channel_offer WHERE channel = 'allegro'"
            )
        )
        assert verify(conn).ok
    assert [q[1] for q in quarantined] == ["ACM-BAD-EAN", "ACM-BAD-PRICE", "BRV-BAD-STOCK", "BRV-NO-PRICE"]
    assert all(q[2] and q[3] for q in quarantined), "each quarantined row names its line and reason"

    offers = _allegro_offers(world)
    assert len(allegro) == 300
    for sku, (price, qty) in allegro.items():
        assert Decimal(offers[sku]["sellingMode"]["price"]["amount"]) == price, sku
        assert offers[sku]["stock"]["available"] == qty, sku

    feed = world["tmp"] / "feeds" / "google_merchant.xml"
    assert len(_feed_items(feed)) == 300


def test_round_2_one_price_change_republishes_exactly_that_sku(world: dict) -> None:
    last_seq = _ledger(world["hub"])[-1]["seq"]
    feed = world["tmp"] / "feeds" / "google_merchant.xml"
    before_items = _feed_items(feed)
    before_offers = _allegro_offers(world)
    stats_before = world["server"].simulator.stats()

    set_purchase_price(world["erp"], CHANGED_SKU, Decimal("999.00"))
    _run(DAG_ORDER[1:], world["tmp"] / "logs-2")

    rows = _ledger(world["hub"], last_seq)
    assert all(r["status"] == "success" for r in rows), rows
    product = next(r for r in rows if r["dataset"] == "product")
    assert product["rows_changed"] == 1
    assert all(r["rows_changed"] == 0 for r in rows if r["dataset"] == "supplier_offer")
    computed = [
        r for r in rows if r["task_id"] in ("compute_offers", "compute_feed_offers") and r["dataset"] == "channel_offer"
    ]
    assert sorted(r["target"] for r in computed) == [
        "channel:allegro",
        "channel:amazon",
        "channel:ceneo",
        "channel:ebay",
        "channel:google",
        "channel:meta",
        "channel:shop",
    ]
    assert all(r["rows_changed"] == 1 for r in computed)
    # A one-SKU change takes the fast path: the pricing task sent it itself, hub_to_marketplaces did not run.
    publish = next(r for r in rows if r["dataset"] == "offer_update" and r["target"] == "channel:allegro")
    assert (publish["dag_id"], publish["task_id"]) == ("hub_to_channel_offers", "compute_offers")
    assert (publish["rows_written"], publish["rows_rejected"]) == (1, 0)
    feed_row = next(r for r in rows if r["task_id"] == "write_feed" and r["target"] == "channel:google")
    assert feed_row["rows_changed"] == 1
    assert feed_row["details"]["rewritten"] is True

    stats_after = world["server"].simulator.stats()
    assert stats_after["price_commands"] == stats_before["price_commands"] + 1
    assert stats_after["quantity_commands"] == stats_before["quantity_commands"]
    after_offers = _allegro_offers(world)
    changed = {sku for sku in after_offers if after_offers[sku] != before_offers[sku]}
    assert changed == {CHANGED_SKU}

    after_items = _feed_items(feed)
    assert {sku for sku in after_items if after_items[sku] != before_items[sku]} == {CHANGED_SKU}


def test_round_3_feed_that_is_not_xml_fails_only_its_supplier(world: dict) -> None:
    acme = world["tmp"] / "sandbox" / "feeds" / "acme.xml"
    acme.write_text("<html><body>502 Bad Gateway</body>\n", encoding="utf-8")
    with connect(world["hub"]) as conn:
        before = conn.execute(
            "SELECT md5(string_agg(row_hash, ',' ORDER BY supplier, supplier_sku)) FROM hub.supplier_offer"
        ).fetchone()[0]
    last_seq = _ledger(world["hub"])[-1]["seq"]

    logs = world["tmp"] / "logs-3"
    logs.mkdir()
    ok, _, log_file = run_dag("suppliers_to_hub_offers", logs)
    assert not ok
    text = log_file.read_text(errors="replace")
    assert "supplier 'acme'" in text
    assert f"{world['server'].feeds_url}/feeds/acme.xml" in text

    rows = _ledger(world["hub"], last_seq)
    statuses = {r["source"]: r["status"] for r in rows if r["dataset"] == "supplier_offer"}
    assert statuses == {"supplier:acme": "failed", "supplier:bravo": "success"}
    # The merge still ran (trigger_rule all_done) and says which supplier is stale.
    merge = [r for r in rows if r["dataset"] == "sku_supply"]
    assert [r["status"] for r in merge] == ["success"]
    assert list(merge[0]["details"]["stale_suppliers"]) == ["acme"]
    with connect(world["hub"]) as conn:
        after = conn.execute(
            "SELECT md5(string_agg(row_hash, ',' ORDER BY supplier, supplier_sku)) FROM hub.supplier_offer"
        ).fetchone()[0]
        assert verify(conn).ok
    assert after == before
    assert hashlib.sha256(acme.read_bytes()).hexdigest()  # the broken file is still there to inspect


def test_published_offers_trace_back_to_their_sources(world: dict) -> None:
    import random

    from commerce_sync.audit.trace import trace_offer

    with connect(world["hub"]) as conn:
        published = [
            r[0]
            for r in conn.execute(
                "SELECT sku FROM hub.channel_offer WHERE channel = 'allegro' AND published_version > 0 ORDER BY sku"
            )
        ]
        sample = random.Random(20260507).sample(published, 25)
        traces = {sku: trace_offer(conn, "allegro", sku) for sku in sample}
        google = {sku: trace_offer(conn, "google", sku) for sku in sample[:5]}
    with_supplier = 0
    for sku, trace in traces.items():
        assert trace["gaps"] == [], (sku, trace["gaps"])
        transfers = {t["transfer_id"]: t for t in trace["transfers"]}
        assert set(trace["published"]["fields"]) == {"price", "quantity"}
        for field in trace["published"]["fields"].values():
            assert field["request_id"] and field["idempotency_key"] and field["rule_id"], (sku, field)
            sent_by = transfers[field["sent_transfer_id"]]
            # Round 1 went through hub_to_marketplaces; round 2's one-SKU change was sent by its pricing task.
            assert (sent_by["dag_id"], sent_by["task_id"]) in (
                ("hub_to_marketplaces", "publish_allegro"),
                ("hub_to_channel_offers", "compute_offers"),
            ), (sku, sent_by)
        product = trace["product"]
        assert product["version"] >= 1 and product["erp_updated_at"], (sku, product)
        assert transfers[product["transfer_id"]]["dag_id"] == "erp_to_hub_products"
        assert product["version_used_by_offer"] == product["version"], sku
        for offer in trace["supplier_offers"]:
            with_supplier += 1
            assert offer["file_sha256"] and offer["record_no"], (sku, offer)
            assert transfers[offer["transfer_id"]]["payload_sha256"] == offer["file_sha256"]
    assert with_supplier > 0, "the sample holds SKUs that suppliers offer"
    for sku, trace in google.items():
        assert trace["gaps"] == [], (sku, trace["gaps"])
        assert trace["published"]["feed"]["sha256"]
