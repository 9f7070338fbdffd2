"""trace_offer against real transfers: ERP sync, supplier feed, pricing, Allegro publish, Google feed."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from commerce_sync import cli
from commerce_sync.audit.trace import format_trace, trace_offer
from commerce_sync.channels.allegro import AllegroClient
from commerce_sync.channels.feeds import write_feed
from commerce_sync.db import connect, drop_database
from commerce_sync.pricing.compute import compute_channel_offers
from commerce_sync.sources.erp import sync_erp
from commerce_sync_sandbox.erp import load_erp
from commerce_sync_sandbox.server import SandboxServer
from tests.conftest import new_database
from tests.integration.test_allegro_publisher import _publish, _sync, client  # noqa: F401 - client is a fixture
from tests.integration.test_erp_load import ERP
from tests.integration.test_erp_load import RUN as ERP_RUN
from tests.integration.test_pricing_compute import ALLEGRO, GOOGLE, RULE
from tests.integration.test_pricing_compute import RUN as PRICING_RUN
from tests.integration.test_supplier_load import (  # noqa: F401 - feed_server is a fixture
    FeedServer,
    Served,
    feed_server,
    product,
    sync,
    xml_feed,
    xml_supplier,
)

pytestmark = pytest.mark.integration
N = 30


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[SandboxServer]:
    with SandboxServer(tmp_path / "feeds", tmp_path / "allegro.json", catalog_n=N) as server:
        yield server


@pytest.fixture
def world(hub_dsn: str, feed_server: FeedServer, client: AllegroClient, tmp_path: Path) -> Iterator[dict]:  # noqa: F811
    erp = new_database()
    try:
        load_erp(erp, n=N)
        sync_erp(hub_dsn, ERP, erp, ERP_RUN)
        with connect(hub_dsn) as conn:
            skus = [r[0] for r in conn.execute("SELECT sku FROM hub.product WHERE gtin IS NOT NULL ORDER BY sku")]
            gtin = conn.execute("SELECT gtin FROM hub.product WHERE sku = %s", (skus[0],)).fetchone()[0]  # type: ignore[index]
        body = xml_feed(product("A-1", "3.10", "4", gtin.lstrip("0")), product("A-2", "1.00", "2"))
        feed_server.files["/feeds/acme.xml"] = Served(body)
        supplier = sync(hub_dsn, xml_supplier(), feed_server, tmp_path / "work")
        compute_channel_offers(hub_dsn, ALLEGRO, RULE, PRICING_RUN)
        before_publish = datetime.now().astimezone()
        _sync(hub_dsn, client)
        _publish(hub_dsn, client)
        compute_channel_offers(hub_dsn, GOOGLE, RULE, PRICING_RUN)
        write_feed(hub_dsn, GOOGLE, tmp_path / "data", PRICING_RUN)
        yield {
            "skus": skus,
            "supplied_sku": skus[0],
            "feed_sha256": hashlib.sha256(body).hexdigest(),
            "supplier_transfer": str(supplier.transfer_id),
            "before_publish": before_publish,
        }
    finally:
        drop_database(erp)


def test_allegro_offer_traces_to_erp_supplier_rule_and_command(hub_dsn: str, world: dict) -> None:
    sku = world["supplied_sku"]
    with connect(hub_dsn) as conn:
        trace = trace_offer(conn, "allegro", sku)
    assert trace["gaps"] == [], trace["gaps"]
    assert json.loads(json.dumps(trace)) == trace, "JSON-serialisable as is"
    assert trace["kind"] == "outbox" and trace["offer_version"] == 1
    price = trace["published"]["fields"]["price"]
    assert price["request_id"] and price["idempotency_key"] and price["sent_at"]
    assert (price["rule_id"], price["rule_version"], price["rule_source"]) == (
        RULE.id,
        str(RULE.version),
        "audit.change",
    )
    assert price["value"]["amount"] == trace["offer"]["price"]
    product_row = trace["product"]
    assert product_row["version"] == product_row["version_used_by_offer"] == 1
    assert product_row["erp_updated_at"] and product_row["changes"][0]["field"] == "purchase_price"
    (offer,) = trace["supplier_offers"]
    assert (offer["supplier"], offer["file_sha256"], offer["record_no"]) == ("acme", world["feed_sha256"], 1)
    tasks = {t["transfer_id"]: t for t in trace["transfers"]}
    assert world["supplier_transfer"] in tasks
    assert tasks[product_row["transfer_id"]]["dag_id"] == ERP_RUN.dag_id
    assert tasks[price["sent_transfer_id"]]["dataset"] == "offer"
    assert all(t["seq"] and t["referenced_by"] for t in trace["transfers"])
    assert sku in format_trace(trace)


def test_every_allegro_offer_traces_without_gaps(hub_dsn: str, world: dict) -> None:
    with connect(hub_dsn) as conn:
        for sku in world["skus"]:
            assert trace_offer(conn, "allegro", sku)["gaps"] == [], sku


def test_google_feed_offer_traces_to_the_feed_file(hub_dsn: str, world: dict) -> None:
    with connect(hub_dsn) as conn:
        trace = trace_offer(conn, "google", world["supplied_sku"])
        state = conn.execute("SELECT sha256, transfer_id FROM hub.feed_state WHERE channel = 'google'").fetchone()
    assert trace["gaps"] == [], trace["gaps"]
    assert trace["kind"] == "feed"
    assert state is not None
    assert (trace["published"]["feed"]["sha256"], trace["published"]["feed"]["transfer_id"]) == (
        state[0],
        str(state[1]),
    )
    assert trace["published"]["fields"]["price"]["rule_id"] == RULE.id


def test_missing_links_are_reported_as_gaps(hub_dsn: str, world: dict) -> None:
    with connect(hub_dsn) as conn:
        before = trace_offer(conn, "allegro", world["supplied_sku"], world["before_publish"])
        unknown = trace_offer(conn, "allegro", "NO-SUCH-SKU")
        conn.execute("UPDATE hub.supplier_offer SET source_record_no = NULL")
        conn.execute("UPDATE hub.product SET transfer_id = gen_random_uuid() WHERE sku = %s", (world["supplied_sku"],))
        broken = trace_offer(conn, "allegro", world["supplied_sku"])
        conn.rollback()
    assert any("price: no sent outbox row" in gap for gap in before["gaps"])
    assert any("no channel offer" in gap for gap in unknown["gaps"])
    assert any("not in hub.product" in gap for gap in unknown["gaps"])
    assert any("no feed record number" in gap for gap in broken["gaps"])
    assert any("not in the audit ledger" in gap and "product version" in gap for gap in broken["gaps"])


def test_cli_trace(hub_dsn: str, world: dict, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("HUB_DATABASE_URL", hub_dsn)
    assert cli.main(["trace", "allegro", world["supplied_sku"]]) == 0
    assert json.loads(capsys.readouterr().out)["sku"] == world["supplied_sku"]
    assert cli.main(["trace", "allegro", world["supplied_sku"], "--format", "text"]) == 0
    assert "gaps: none" in capsys.readouterr().out
    assert cli.main(["trace", "allegro", "NO-SUCH-SKU", "--at", "2020-01-01T00:00:00+00:00"]) == 1
    assert cli.main(["trace", "allegro", "X", "--at", "2020-01-01"]) == 2  # no UTC offset
