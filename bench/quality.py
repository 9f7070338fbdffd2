"""Benchmark: validating a staged batch of N rows where it is (PostgreSQL), three ways.

Standalone: creates ``cs_bench_quality_<pid>`` (dropped at the end), stages N supplier offers and N
ERP products server-side (``generate_series``), with a known number of planted defects of every
kind, then measures:

* ``ours``: the production gate (:func:`commerce_sync.quality.gate.run_row_checks`): every row
  expectation of the suite compiled into one ``INSERT INTO hub.quarantine ... SELECT`` that
  yields the failing rows with key, record number, expectation, observed value and reason;
* ``evidence``: GX Data Docs for the batch (:func:`commerce_sync.quality.evidence.render`: GX's
  PostgreSQL datasource checks the batch row count and renders the quarantined findings), with
  the ``great_expectations`` import reported apart (once per process);
* ``gx_sql``: the alternative, GX 1.24's own SQL engine with the equivalent built-in
  expectations on a typed query asset (``not_null``, ``unique``, ``match_regex``, ``between``,
  ``in_set``), result format COMPLETE with ``unexpected_index_column_names=["record_no"]`` so it
  must also say which records failed. (GTIN check digits have no built-in expectation.)

It checks that ``ours`` quarantined exactly the planted rows, prints the numbers and writes
``bench/results/quality-latest.json``. It reports; it never asserts timings.

    .venv/bin/python bench/quality.py --n 1000000 [--skip-gx-sql]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "include"))

from commerce_sync.db import connect, drop_database, ensure_database, with_database  # noqa: E402
from commerce_sync.hub.migrate import migrate  # noqa: E402
from commerce_sync.quality.gate import run_row_checks  # noqa: E402
from commerce_sync.quality.suites import (  # noqa: E402
    CURRENCY_PATTERN,
    ERP_PRODUCTS,
    NUMBER_SPACES,
    SUPPLIER_OFFERS,
    price_pattern,
)

BASE_URL = os.environ.get("BENCH_DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/postgres"
# Every DEFECT_EVERY-th row carries one defect, rotating through these (column, SQL value).
OFFER_DEFECTS = (
    ("purchase_price", "'12,3x'"),
    ("purchase_price", "'0'"),
    ("quantity", "'-3'"),
    ("gtin", "'5901234123458'"),
    ("currency", "'XYZ'"),
    ("supplier_sku", "NULL"),
)
PRODUCT_DEFECTS = (
    ("purchase_price", "'0'"),
    ("vat_rate", "'1.5'"),
    ("stock", "'-1'"),
    ("currency", "'ZLO'"),
)
DEFECT_EVERY = 1000


def _defect_case(defects: tuple[tuple[str, str], ...], column: str, default: str) -> str:
    """SQL: the column's value for row g (a planted defect on every DEFECT_EVERY-th row)."""
    whens = " ".join(
        f"WHEN mod(g, {DEFECT_EVERY}) = 0 AND mod(g / {DEFECT_EVERY}, {len(defects)}) = {i} THEN {value}"
        for i, (col, value) in enumerate(defects)
        if col == column
    )
    return f"CASE {whens} ELSE {default} END" if whens else default


def stage_offers(dsn: str, n: int, tid: uuid.UUID) -> int:
    """N supplier offers in staging (valid EAN-13 per row), defects planted; returns planted count."""
    # A valid EAN-13 for g: 590 + 9 digits of g, then its check digit.
    data = "('590' || lpad(mod(g, 1000000000)::text, 9, '0'))"
    check = " + ".join(f"substr({data}, {i}, 1)::int * {1 if i % 2 else 3}" for i in range(1, 13))
    ean = f"{data} || mod(10 - mod({check}, 10), 10)::text"
    columns = {
        "supplier_sku": "'S-' || g",
        "gtin": ean,
        "purchase_price": "(mod(g, 9000) + 1)::text || ',' || lpad(mod(g, 100)::text, 2, '0')",
        "currency": "'PLN'",
        "quantity": "mod(g, 500)::text",
    }
    select = ", ".join(_defect_case(OFFER_DEFECTS, c, v) for c, v in columns.items())
    with connect(dsn) as conn:
        conn.execute(
            "INSERT INTO staging.supplier_offer (transfer_id, supplier, record_no, source_line, supplier_sku, gtin, "
            f"purchase_price, currency, quantity, name) SELECT %s, 'bench', g, g + 1, {select}, 'Produkt ' || g "
            "FROM generate_series(1, %s) AS g",
            (tid, n),
        )
        conn.execute("ANALYZE staging.supplier_offer")
    return n // DEFECT_EVERY


def stage_products(dsn: str, n: int, tid: uuid.UUID) -> int:
    columns = {
        "sku": "'SKU-' || g",
        "purchase_price": "(mod(g, 9000) + 1)::text || '.50'",
        "vat_rate": "'0.23'",
        "stock": "mod(g, 300)::text",
        "currency": "'PLN'",
    }
    select = ", ".join(_defect_case(PRODUCT_DEFECTS, c, v) for c, v in columns.items())
    with connect(dsn) as conn:
        conn.execute(
            "INSERT INTO staging.erp_product (transfer_id, record_no, sku, purchase_price, vat_rate, stock, "
            f"currency, name, reserved, active) SELECT %s, g, {select}, 'Produkt ' || g, '0', 'true' "
            "FROM generate_series(1, %s) AS g",
            (tid, n),
        )
        conn.execute("ANALYZE staging.erp_product")
    return n // DEFECT_EVERY


def timed(label: str, results: dict[str, Any], fn: Any, *args: Any, **kwargs: Any) -> Any:
    started = time.perf_counter()
    value = fn(*args, **kwargs)
    results[label] = round(time.perf_counter() - started, 2)
    print(f"  {label:<38} {results[label]:>8.2f} s", flush=True)
    return value


def gx_sql_suite(dsn: str, tid: uuid.UUID, separator: str) -> dict[str, Any]:
    """The same supplier checks with GX's own SQL engine; what it returns about failing records."""
    import great_expectations as gx

    from commerce_sync.quality.evidence import _context, sqlalchemy_url

    context = _context(Path(tempfile.mkdtemp(prefix="cs_bench_quality_docs_")))
    typed = (
        "SELECT record_no, supplier_sku, currency, "
        "CASE WHEN regexp_replace(purchase_price, '[ \u00a0\u202f]', '', 'g') ~ '" + price_pattern(separator) + "' "
        "THEN replace(regexp_replace(purchase_price, '[ \u00a0\u202f]', '', 'g'), ',', '.')::numeric END "
        "AS price_value, CASE WHEN quantity ~ '^[+-]?[0-9]+$' THEN quantity::numeric END AS quantity_value "
        f"FROM staging.supplier_offer WHERE transfer_id = '{tid}'"
    )
    asset = context.data_sources.add_postgres("bench", connection_string=sqlalchemy_url(dsn)).add_query_asset(
        "offers", query=typed
    )
    suite = context.suites.add(gx.ExpectationSuite(name="supplier_offer_gx_sql"))
    e = gx.expectations
    for expectation in (
        e.ExpectColumnValuesToNotBeNull(column="supplier_sku"),
        e.ExpectColumnValuesToBeUnique(column="supplier_sku"),
        e.ExpectColumnValuesToNotBeNull(column="price_value"),
        e.ExpectColumnValuesToBeBetween(column="price_value", min_value=0, strict_min=True),
        e.ExpectColumnValuesToNotBeNull(column="quantity_value"),
        e.ExpectColumnValuesToBeBetween(column="quantity_value", min_value=0),
        e.ExpectColumnValuesToMatchRegex(column="currency", regex=CURRENCY_PATTERN),
    ):
        suite.add_expectation(expectation)
    batch = asset.add_batch_definition_whole_table("all").get_batch()
    result = batch.validate(
        suite, result_format={"result_format": "COMPLETE", "unexpected_index_column_names": ["record_no"]}
    )
    failing = {
        f"{r.expectation_config.type}({r.expectation_config.kwargs.get('column')})": {
            "unexpected_count": r.result.get("unexpected_count"),
            "record_nos_returned": len(r.result.get("unexpected_index_list") or []),
        }
        for r in result.results
        if not r.success
    }
    return {"success": result.success, "failing": failing}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--skip-gx-sql", action="store_true", help="skip the GX SQL engine comparison")
    args = parser.parse_args()

    dsn = with_database(BASE_URL, f"cs_bench_quality_{os.getpid()}")
    drop_database(dsn)
    ensure_database(dsn)
    results: dict[str, Any] = {"n": args.n, "defect_every": DEFECT_EVERY, "seconds": {}}
    seconds = results["seconds"]
    try:
        migrate(dsn)
        offers_tid, products_tid = uuid.uuid4(), uuid.uuid4()
        print(f"quality gate at {args.n:,} rows (one defect every {DEFECT_EVERY} rows)", flush=True)
        planted = timed("stage supplier offers (server-side)", seconds, stage_offers, dsn, args.n, offers_tid)
        planted_products = timed("stage ERP products (server-side)", seconds, stage_products, dsn, args.n, products_tid)
        params = {"decimal_separator": ",", "price_pattern": price_pattern(","), "spaces": NUMBER_SPACES}

        def ours(suite: Any, tid: uuid.UUID, source: str, extra: dict[str, Any]) -> Any:
            with connect(dsn) as conn:
                return run_row_checks(conn, suite, source=source, transfer_id=tid, rows_evaluated=args.n, params=extra)

        offers = timed("ours: supplier_offer suite (SQL pass)", seconds, ours, SUPPLIER_OFFERS, offers_tid, "b", params)
        products = timed("ours: erp_product suite (SQL pass)", seconds, ours, ERP_PRODUCTS, products_tid, "erp", {})
        results["supplier_offer"] = offers.summary() | {"planted": planted}
        results["erp_product"] = products.summary() | {"planted": planted_products}
        results["exact"] = offers.rows_quarantined == planted and products.rows_quarantined == planted_products
        print(
            f"  quarantined {offers.rows_quarantined:,} of {planted:,} planted offers, "
            f"{products.rows_quarantined:,} of {planted_products:,} planted products: "
            + ("exact" if results["exact"] else "MISMATCH"),
            flush=True,
        )

        timed("import great_expectations (once)", seconds, __import__, "great_expectations")
        from commerce_sync.quality.evidence import render

        with tempfile.TemporaryDirectory(prefix="cs_bench_quality_docs_") as docs:
            timed(
                "evidence: GX Data Docs (supplier)",
                seconds,
                render,
                dsn,
                SUPPLIER_OFFERS,
                offers,
                dataset="supplier_offer",
                source="supplier:bench",
                transfer_id=offers_tid,
                docs_dir=Path(docs),
            )
        seconds["ours_total_supplier"] = round(
            seconds["ours: supplier_offer suite (SQL pass)"] + seconds["evidence: GX Data Docs (supplier)"], 2
        )
        print(f"  {'= ours, rows + evidence (supplier)':<38} {seconds['ours_total_supplier']:>8.2f} s", flush=True)
        if not args.skip_gx_sql:
            results["gx_sql"] = timed(
                "alternative: GX SQL engine (7 expect.)", seconds, gx_sql_suite, dsn, offers_tid, ","
            )
            print(f"  GX SQL result: {json.dumps(results['gx_sql']['failing'])}", flush=True)
    finally:
        drop_database(dsn)
    results["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "quality-latest.json").write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
    print(f"written {out / 'quality-latest.json'}")


if __name__ == "__main__":
    main()
