"""Real supplier catalogues (issue 17), against a real PostgreSQL hub.

Catalogues written from the BMEcat 1.2 and 2005 specifications (``tests/fixtures/feeds``): no stock
element, a DOCTYPE naming an external DTD that is never fetched or read, PRICE_FACTOR != 1, three
price tiers, NO_CU_PER_OU = 12 with the price per order unit, a gross price with TAX, T_UPDATE_PRICES
after a stock feed. A supplier with a BMEcat price catalogue and a CSV stock feed loads both in either
order; re-running either changes nothing; the hard floor is computed from the factored per-unit cost.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from commerce_sync.audit import ledger
from commerce_sync.config import Channel, FeedSettings, PricingRule, Supplier, SupplyMerge
from commerce_sync.pricing.compute import compute_channel_offers
from commerce_sync.pricing.rules import compute_price
from commerce_sync.sources.supplier_load import sync_supplier
from commerce_sync.sources.supply_merge import merge_supply

pytestmark = pytest.mark.integration

D = Decimal
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "feeds"
RUN = ledger.RunContext(run_id="manual__s17", dag_id="suppliers_to_hub_offers", task_id="sync_supplier_feed")
PRICE_TYPES = ["net_customer", "net_list", "gros_list"]


@pytest.fixture(autouse=True)
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("COMMERCE_SYNC_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


@pytest.fixture
def dtd_server() -> Iterator[tuple[str, list[str]]]:
    """A local HTTP server that serves a DTD and records every request: a safe parser makes none."""
    requests: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            requests.append(self.path)
            body = b'<!ENTITY cost "0.01">'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/bmecat_2005.dtd", requests
    finally:
        server.shutdown()
        server.server_close()


def offers(dsn: str) -> dict[str, dict[str, Any]]:
    with psycopg.connect(dsn, row_factory=dict_row) as db:
        rows = db.execute("SELECT * FROM hub.supplier_offer ORDER BY supplier_sku").fetchall()
    return {row["supplier_sku"]: row for row in rows}


def file_transport(path: Path) -> dict[str, Any]:
    return {"type": "file", "path": str(path), "settle_seconds": 0}


def echo(path: Path, **bmecat: Any) -> Supplier:
    """A single-feed BMEcat 1.2 supplier (the old config shape) reading ``path``."""
    return Supplier.model_validate(
        {
            "id": "echo",
            "name": "Echo",
            "format": "bmecat",
            "transport": file_transport(path),
            "bmecat": {"price_types": PRICE_TYPES, **bmecat.pop("mapping", {})},
            **bmecat,
        }
    )


def foxtrot(catalogue: Path, stock: Path, **mapping: Any) -> Supplier:
    """A supplier with a BMEcat price catalogue and a CSV stock feed."""
    return Supplier.model_validate(
        {
            "id": "foxtrot",
            "name": "Foxtrot",
            "match_by": "sku",
            "feeds": [
                {
                    "id": "catalogue",
                    "format": "bmecat",
                    "transport": file_transport(catalogue),
                    "bmecat": {"price_types": PRICE_TYPES, **mapping},
                },
                {
                    "id": "stock",
                    "format": "csv",
                    "transport": file_transport(stock),
                    "csv": {
                        "delimiter": ";",
                        "stock_only": True,
                        "columns": {"supplier_sku": "Indeks", "quantity": "Stan"},
                    },
                },
            ],
        }
    )


def copy_catalogue(tmp_path: Path, dtd_url: str, name: str = "bmecat_2005_price_catalogue.xml") -> Path:
    target = tmp_path / "in" / name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text((FIXTURES / name).read_text(encoding="utf-8").replace("{dtd_url}", dtd_url), encoding="utf-8")
    return target


@pytest.mark.parametrize(
    ("policy", "expected_quantity"),
    [({}, None), ({"missing_quantity": "zero"}, 0), ({"missing_quantity": "default", "default_quantity": 7}, 7)],
    ids=["keep-unknown", "zero", "default-7"],
)
def test_bmecat_12_catalogue_without_stock_loads_exact_per_unit_costs(
    hub_dsn: str, tmp_path: Path, policy: dict[str, Any], expected_quantity: int | None
) -> None:
    delivery = tmp_path / "echo.xml"
    shutil.copy(FIXTURES / "bmecat_12_no_stock_doctype.xml", delivery)
    # The DOCTYPE names this file: if the parser read it, the entity declaration and the garbage would fail.
    (tmp_path / "bmecat_new_catalog_1_2.dtd").write_text('<!ENTITY x SYSTEM "file:///etc/passwd"> garbage <', "utf-8")
    result = sync_supplier(hub_dsn, echo(delivery, **policy), None, RUN, tmp_path / "work")
    assert (result.rows_read, result.rows_loaded, result.rows_quarantined) == (5, 5, 0)
    loaded = offers(hub_dsn)
    assert {sku: row["purchase_price"] for sku, row in loaded.items()} == {
        "E-1": D("65.1112"),  # 61.60 x PRICE_FACTOR 1.057
        "E-2": D("12.0000"),  # lowest LOWER_BOUND of three tiers
        "E-3": D("10.8500"),  # 130.20 per carton / NO_CU_PER_OU 12
        "E-4": D("100.0000"),  # gros_list 123.00 / (1 + TAX 0.23)
        "E-5": D("0.4950"),  # 45.00 x 1.10 / PRICE_QUANTITY 100
    }
    assert {row["quantity"] for row in loaded.values()} == {expected_quantity}
    assert all(row["active"] and row["price_feed"] == "main" for row in loaded.values())
    if expected_quantity is None:
        assert {row["quantity_feed"] for row in loaded.values()} == {None}  # nobody set it yet

    again = sync_supplier(hub_dsn, echo(delivery, **policy), None, RUN, tmp_path / "work")
    assert again.rows_changed == 0 and offers(hub_dsn) == loaded


def test_bmecat_tier_and_sell_unit_are_configurable(hub_dsn: str, tmp_path: Path) -> None:
    delivery = tmp_path / "echo.xml"
    shutil.copy(FIXTURES / "bmecat_12_no_stock_doctype.xml", delivery)
    supplier = echo(delivery, mapping={"tier_quantity": 20, "sell_unit": "order_unit"})
    sync_supplier(hub_dsn, supplier, None, RUN, tmp_path / "work")
    loaded = offers(hub_dsn)
    assert loaded["E-2"]["purchase_price"] == D("11.4000")  # the tier for 20 units: LOWER_BOUND 10
    assert loaded["E-3"]["purchase_price"] == D("130.2000")  # per carton, as ordered


def test_gross_price_without_tax_quarantines_that_row_with_its_line(hub_dsn: str, tmp_path: Path) -> None:
    text = (FIXTURES / "bmecat_12_no_stock_doctype.xml").read_text(encoding="utf-8")
    delivery = tmp_path / "echo.xml"
    delivery.write_text(text.replace("<TAX>0.23</TAX>\n        </ARTICLE_PRICE>", "</ARTICLE_PRICE>", 1), "utf-8")
    # The first replacement is E-1's net price (TAX not needed there); remove E-4's TAX too.
    delivery.write_text(
        delivery.read_text("utf-8").replace(
            "<PRICE_CURRENCY>PLN</PRICE_CURRENCY><TAX>0.23</TAX>", "<PRICE_CURRENCY>PLN</PRICE_CURRENCY>"
        ),
        "utf-8",
    )
    result = sync_supplier(hub_dsn, echo(delivery), None, RUN, tmp_path / "work")
    assert (result.rows_loaded, result.rows_quarantined) == (4, 1)
    with psycopg.connect(hub_dsn) as db:
        key, line, reason = db.execute("SELECT record_key, source_line, reason FROM hub.quarantine").fetchone()
    assert key == "E-4" and line is not None and "gross price needs TAX" in reason
    assert offers(hub_dsn)["E-1"]["purchase_price"] == D("65.1112")


def seed_products(dsn: str, costs: dict[str, Decimal]) -> None:
    with psycopg.connect(dsn) as db:
        for sku, cost in costs.items():
            db.execute(
                "INSERT INTO hub.product (sku, name, purchase_price, currency, vat_rate, active, row_hash, transfer_id) "
                "VALUES (%s, %s, %s, 'PLN', 0.23, true, 'h', gen_random_uuid())",
                (sku, sku, cost),
            )


@pytest.mark.parametrize("order", [("catalogue", "stock"), ("stock", "catalogue")], ids=["price-first", "stock-first"])
def test_price_catalogue_and_stock_feed_merge_in_either_order(
    hub_dsn: str, tmp_path: Path, dtd_server: tuple[str, list[str]], order: tuple[str, str]
) -> None:
    dtd_url, dtd_requests = dtd_server
    catalogue = copy_catalogue(tmp_path, dtd_url)
    stock = tmp_path / "in" / "stock.csv"
    shutil.copy(FIXTURES / "foxtrot_stock.csv", stock)
    supplier = foxtrot(catalogue, stock)
    results = {feed: sync_supplier(hub_dsn, supplier.feed_view(feed), None, RUN, tmp_path / "work") for feed in order}
    assert dtd_requests == []  # the DOCTYPE's DTD was never fetched

    loaded = offers(hub_dsn)
    view = {
        sku: (row["purchase_price"], row["quantity"], row["price_feed"], row["quantity_feed"])
        for sku, row in loaded.items()
    }
    assert view == {
        "P-100": (D("2.1000"), 40, "catalogue", "stock"),  # 24.00 x 1.05 / 12 per bottle; 40 from the CSV
        "P-200": (D("65.1112"), 5, "catalogue", "stock"),
        "P-300": (D("100.0000"), 0, "catalogue", "stock"),
        "P-999": (None, 3, None, "stock"),  # in stock, not (yet) in the catalogue: no price, not offered
    }
    assert loaded["P-100"]["price_transfer_id"] == results["catalogue"].transfer_id
    assert loaded["P-100"]["quantity_transfer_id"] == results["stock"].transfer_id

    # The ledger says which feed set which field.
    with psycopg.connect(hub_dsn) as db:
        sources = dict(db.execute("SELECT transfer_id, source FROM audit.transfer WHERE status = 'success'").fetchall())
        fields = db.execute(
            "SELECT DISTINCT transfer_id, field, source_ref->>'feed' FROM audit.change WHERE dataset = 'supplier_offer'"
        ).fetchall()
    assert sources[results["catalogue"].transfer_id] == "supplier:foxtrot/catalogue"
    assert sources[results["stock"].transfer_id] == "supplier:foxtrot/stock"
    by_feed = {(feed, field) for transfer_id, field, feed in fields}
    assert ("catalogue", "purchase_price") in by_feed and ("stock", "quantity") in by_feed
    assert ("stock", "purchase_price") not in by_feed

    # Re-running either: the same bytes are a duplicate; the same content re-parsed changes nothing.
    versions = {sku: row["version"] for sku, row in loaded.items()}
    for feed in order:
        assert sync_supplier(hub_dsn, supplier.feed_view(feed), None, RUN, tmp_path / "work").rows_changed == 0
    catalogue.write_text(catalogue.read_text("utf-8") + "<!-- re-exported -->\n", "utf-8")
    stock.write_text(stock.read_text("utf-8") + "\r\n", "utf-8")
    for feed in order:
        again = sync_supplier(hub_dsn, supplier.feed_view(feed), None, RUN, tmp_path / "work")
        assert again.duplicate_of is None and again.rows_read > 0 and again.rows_changed == 0
    assert {sku: row["version"] for sku, row in offers(hub_dsn).items()} == versions

    # The supply merge takes the price from one feed and the stock from the other.
    seed_products(hub_dsn, {"P-100": D("1.50"), "P-200": D("50.00"), "P-999": D("9.00")})
    merge_supply(hub_dsn, [supplier], SupplyMerge(), RUN)
    with psycopg.connect(hub_dsn) as db:
        supply = {r[0]: r[1:] for r in db.execute("SELECT sku, purchase_price, chosen_quantity FROM hub.sku_supply")}
    assert supply == {"P-100": (D("2.1000"), 40), "P-200": (D("65.1112"), 5)}  # P-999 has no price yet


def test_update_prices_after_the_stock_feed_keeps_the_stock(
    hub_dsn: str, tmp_path: Path, dtd_server: tuple[str, list[str]]
) -> None:
    catalogue = copy_catalogue(tmp_path, dtd_server[0])
    stock = tmp_path / "in" / "stock.csv"
    shutil.copy(FIXTURES / "foxtrot_stock.csv", stock)
    supplier = foxtrot(catalogue, stock)
    sync_supplier(hub_dsn, supplier.feed_view("catalogue"), None, RUN, tmp_path / "work")
    stock_load = sync_supplier(hub_dsn, supplier.feed_view("stock"), None, RUN, tmp_path / "work")
    shutil.copy(FIXTURES / "bmecat_2005_update_prices_after_stock.xml", catalogue)
    update = sync_supplier(hub_dsn, supplier.feed_view("catalogue"), None, RUN, tmp_path / "work")
    assert (update.rows_read, update.rows_changed) == (1, 1)
    loaded = offers(hub_dsn)
    assert loaded["P-200"]["purchase_price"] == D("73.9900")  # 70.00 x 1.057
    assert loaded["P-200"]["quantity"] == 5 and loaded["P-200"]["quantity_transfer_id"] == stock_load.transfer_id
    assert loaded["P-100"]["purchase_price"] == D("2.1000") and loaded["P-100"]["quantity"] == 40  # not in the update


def test_stock_feed_in_full_mode_zeroes_absent_stock_but_keeps_the_range(
    hub_dsn: str, tmp_path: Path, dtd_server: tuple[str, list[str]]
) -> None:
    catalogue = copy_catalogue(tmp_path, dtd_server[0])
    stock = tmp_path / "in" / "stock.csv"
    shutil.copy(FIXTURES / "foxtrot_stock.csv", stock)
    supplier = foxtrot(catalogue, stock)
    sync_supplier(hub_dsn, supplier.feed_view("catalogue"), None, RUN, tmp_path / "work")
    sync_supplier(hub_dsn, supplier.feed_view("stock"), None, RUN, tmp_path / "work")
    stock.write_text("Indeks;Stan\r\nP-100;40\r\nP-300;0\r\nP-999;3\r\n", "utf-8")  # P-200 gone from the list
    sync_supplier(hub_dsn, supplier.feed_view("stock"), None, RUN, tmp_path / "work")
    loaded = offers(hub_dsn)
    assert (loaded["P-200"]["quantity"], loaded["P-200"]["active"]) == (0, True)
    assert loaded["P-200"]["purchase_price"] == D("65.1112")
    # The catalogue dropping P-300 takes it out of the range; its stock stays the stock feed's.
    catalogue.write_text(
        catalogue.read_text("utf-8").split('<PRODUCT mode="new">\n      <SUPPLIER_PID>P-300')[0]
        + "</T_NEW_CATALOG></BMECAT>\n",
        "utf-8",
    )
    sync_supplier(hub_dsn, supplier.feed_view("catalogue"), None, RUN, tmp_path / "work")
    assert offers(hub_dsn)["P-300"]["active"] is False


def test_hard_floor_uses_the_factored_per_unit_cost(
    hub_dsn: str, tmp_path: Path, dtd_server: tuple[str, list[str]]
) -> None:
    catalogue = copy_catalogue(tmp_path, dtd_server[0])
    stock = tmp_path / "in" / "stock.csv"
    shutil.copy(FIXTURES / "foxtrot_stock.csv", stock)
    supplier = foxtrot(catalogue, stock)
    for feed in ("stock", "catalogue"):
        sync_supplier(hub_dsn, supplier.feed_view(feed), None, RUN, tmp_path / "work")
    seed_products(hub_dsn, {"P-200": D("50.00")})  # the ERP's older, lower cost
    merge_supply(hub_dsn, [supplier], SupplyMerge(), RUN)
    rule = PricingRule(id="floor-test", version=1, margin_pct=D("6"), commission_pct=D("11"), min_margin_pct=D("6"))
    channel = Channel(
        id="google",
        kind="google_merchant_feed",
        pricing_rule="floor-test",
        prices_include_vat=False,
        feed=FeedSettings(path="g.xml", title="t", shop_url="https://shop.example.com"),
    )
    compute_channel_offers(hub_dsn, channel, rule, RUN)
    with psycopg.connect(hub_dsn) as db:
        price, floor, applied, cost, cost_source = db.execute(
            "SELECT price, floor_price, floor_applied, cost, cost_source FROM hub.channel_offer WHERE sku = 'P-200'"
        ).fetchone()
    assert (cost, cost_source) == (D("65.1112"), "supplier")
    # 65.1112 (61.60 x 1.057) x 1.06 min margin x 1.11 commission = 76.6098... -> 76.61 (ceiling to the cent);
    # the unfactored 61.60 would give 72.48: a floor 4.13 too low to protect the margin.
    assert floor == D("76.61") == compute_price(D("65.1112"), D("0.23"), rule, prices_include_vat=False).floor_price
    assert compute_price(D("61.60"), D("0.23"), rule, prices_include_vat=False).floor_price == D("72.48")
    assert price >= floor and applied == (price == floor)


def test_scheduled_runs_load_each_feed_on_its_own_interval(hub_dsn: str) -> None:
    from datetime import UTC, datetime, timedelta

    from commerce_sync.sources.feed_schedule import due_feeds

    transport = {"type": "file", "path": "x.csv"}
    csv = {"columns": {"supplier_sku": "a", "purchase_price": "b", "quantity": "c"}}
    suppliers = [
        Supplier.model_validate({"id": "lima", "name": "L", "format": "csv", "transport": transport, "csv": csv}),
        Supplier.model_validate(
            {
                "id": "mike",
                "name": "M",
                "feeds": [
                    {"id": "catalogue", "format": "bmecat", "transport": transport, "every_minutes": 1440},
                    {"id": "stock", "format": "csv", "transport": transport, "csv": csv, "every_minutes": 15},
                ],
            }
        ),
        Supplier.model_validate(
            {"id": "november", "name": "N", "format": "csv", "transport": transport, "csv": csv, "enabled": False}
        ),
    ]
    with psycopg.connect(hub_dsn) as db:
        for source in ("supplier:lima", "supplier:mike/catalogue", "supplier:mike/stock"):
            ledger.append(
                db, ledger.Transfer(source=source, target="hub", dataset="supplier_offer", run=RUN), "success"
            )
    now = datetime.now(UTC)

    def due(minutes_later: float) -> list[str]:
        return [view.source for view in due_feeds(hub_dsn, suppliers, now + timedelta(minutes=minutes_later))]

    assert due(1) == []  # everything just loaded
    assert due(15) == ["supplier:mike/stock"]  # the next run: the 15-minute stock feed only
    assert due(60) == ["supplier:lima", "supplier:mike/stock"]  # hourly (the default) on the 15-minute grid
    assert due(24 * 60) == ["supplier:lima", "supplier:mike/catalogue", "supplier:mike/stock"]


def test_a_feed_not_due_in_this_run_is_not_stale_but_a_failed_one_is(hub_dsn: str, tmp_path: Path) -> None:
    from commerce_sync.sources.supply_merge import stale_suppliers

    supplier = foxtrot(tmp_path / "c.xml", tmp_path / "s.csv")
    earlier = ledger.RunContext(run_id="scheduled__0", dag_id=RUN.dag_id)
    with psycopg.connect(hub_dsn) as db:
        for source, run, status in (
            ("supplier:foxtrot/catalogue", earlier, "success"),  # loaded an hour ago, not due now
            ("supplier:foxtrot/stock", earlier, "success"),
        ):
            ledger.append(db, ledger.Transfer(source=source, target="hub", dataset="supplier_offer", run=run), status)
        assert stale_suppliers(db, [supplier], SupplyMerge(), RUN, True) == {}
        ledger.append(
            db,
            ledger.Transfer(source="supplier:foxtrot/stock", target="hub", dataset="supplier_offer", run=RUN),
            "failed",
        )
        stale = stale_suppliers(db, [supplier], SupplyMerge(), RUN, True)
    assert list(stale) == ["foxtrot"] and stale["foxtrot"].startswith("feed stock: its load failed in run manual__s17")


def test_an_empty_mapped_stock_cell_is_quarantined_not_filled_from_the_hub(hub_dsn: str, tmp_path: Path) -> None:
    delivery = tmp_path / "oscar.csv"
    delivery.write_text("sku;price;qty\nO-1;10.00;4\nO-2;20.00;6\n", "utf-8")
    oscar = Supplier.model_validate(
        {
            "id": "oscar",
            "name": "Oscar",
            "format": "csv",
            "mode": "delta",
            "transport": file_transport(delivery),
            "csv": {"delimiter": ";", "columns": {"supplier_sku": "sku", "purchase_price": "price", "quantity": "qty"}},
        }
    )
    sync_supplier(hub_dsn, oscar, None, RUN, tmp_path / "work")
    delivery.write_text("sku;price;qty\nO-1;11.00;\nO-2;21.00;7\n", "utf-8")
    second = sync_supplier(hub_dsn, oscar, None, RUN, tmp_path / "work")
    assert (second.rows_loaded, second.rows_quarantined) == (1, 1)
    loaded = offers(hub_dsn)
    assert (loaded["O-1"]["purchase_price"], loaded["O-1"]["quantity"]) == (D("10.0000"), 4)  # last good state
    assert (loaded["O-2"]["purchase_price"], loaded["O-2"]["quantity"]) == (D("21.0000"), 7)
    with psycopg.connect(hub_dsn) as db:
        assert db.execute("SELECT record_key, reason FROM hub.quarantine").fetchall() == [
            ("O-1", "quantity is missing")
        ]


def test_the_merge_knows_whether_this_run_loaded_any_feed(hub_dsn: str) -> None:
    from commerce_sync.sources.supply_merge import loaded_in_run

    assert loaded_in_run(hub_dsn, RUN) is False  # a scheduled run with no feed due: the merge is skipped
    with psycopg.connect(hub_dsn) as db:
        other = ledger.RunContext(run_id="scheduled__1", dag_id=RUN.dag_id)
        ledger.append(
            db, ledger.Transfer(source="supplier:lima", target="hub", dataset="supplier_offer", run=other), "success"
        )
        assert loaded_in_run(hub_dsn, RUN) is False
        ledger.append(
            db, ledger.Transfer(source="supplier:lima", target="hub", dataset="supplier_offer", run=RUN), "failed"
        )
    assert loaded_in_run(hub_dsn, RUN) is True
