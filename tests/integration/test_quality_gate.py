"""The quality gate in PostgreSQL: planted defects are quarantined exactly, clean batches pass,
breakers compare with the last good batch, and GX renders the evidence as Data Docs."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from psycopg.rows import dict_row

from commerce_sync.audit import ledger
from commerce_sync.config import BatchBreakers
from commerce_sync.quality.breakers import Override
from commerce_sync.quality.gate import check_batch, last_good_batch, run_row_checks, source_breakers
from commerce_sync.quality.suites import (
    ERP_PRODUCT_COLUMNS,
    ERP_PRODUCTS,
    NUMBER_SPACES,
    SUPPLIER_OFFER_COLUMNS,
    SUPPLIER_OFFERS,
    gtin_check_digit_sql,
    price_pattern,
)
from commerce_sync.sources.gtin import check_digit, gtin_problem
from tests.conftest import BASE_URL

pytestmark = pytest.mark.integration

GOOD_OFFER = {
    "supplier_sku": "S-1",
    "gtin": "5901234123457",
    "name": "Kubek",
    "purchase_price": "12,30",
    "currency": "PLN",
    "quantity": "4",
}
GOOD_PRODUCT = {
    "sku": "SKU-1",
    "gtin": "05901234123457",
    "name": "Kubek",
    "purchase_price": "12.3000",
    "currency": "PLN",
    "vat_rate": "0.23",
    "stock": "5",
    "reserved": "0",
    "active": "true",
}


def _stage_offers(conn: psycopg.Connection, rows: list[dict[str, Any]], tid: uuid.UUID | None = None) -> uuid.UUID:
    tid = tid or uuid.uuid4()
    columns = ("transfer_id", "supplier", "record_no", "source_line", *SUPPLIER_OFFER_COLUMNS)
    with conn.cursor() as cur, cur.copy(f"COPY staging.supplier_offer ({', '.join(columns)}) FROM STDIN") as copy:
        for i, row in enumerate(rows, start=1):
            copy.write_row((tid, "acme", i, i + 1, *(row[c] for c in SUPPLIER_OFFER_COLUMNS)))
    return tid


def _offers(n: int, defects: dict[int, dict[str, str | None]]) -> list[dict[str, Any]]:
    rows = []
    for i in range(1, n + 1):
        row: dict[str, Any] = dict(GOOD_OFFER, supplier_sku=f"S-{i}")
        row.update(defects.get(i, {}))
        rows.append(row)
    return rows


def _check_offers(conn: psycopg.Connection, rows: list[dict[str, Any]], separator: str = ",") -> Any:
    tid = _stage_offers(conn, rows)
    outcome = run_row_checks(
        conn,
        SUPPLIER_OFFERS,
        source="supplier:acme",
        transfer_id=tid,
        rows_evaluated=len(rows),
        params={"decimal_separator": separator, "price_pattern": price_pattern(separator), "spaces": NUMBER_SPACES},
    )
    quarantined = conn.cursor(row_factory=dict_row).execute(
        "SELECT * FROM hub.quarantine WHERE transfer_id = %s ORDER BY record_no, id", (tid,)
    )
    return outcome, quarantined.fetchall()


def test_clean_supplier_batch_passes_with_nothing_quarantined(hub_dsn: str) -> None:
    good = _offers(5, {2: {"gtin": None, "purchase_price": "1 234,5", "quantity": "0"}, 3: {"quantity": "+3"}})
    good[3]["gtin"] = "96385074"
    with psycopg.connect(hub_dsn) as conn:
        outcome, quarantined = _check_offers(conn, good)
    assert quarantined == []
    assert (outcome.rows_evaluated, outcome.rows_quarantined, outcome.failed) == (5, 0, 0)
    assert outcome.passed == outcome.expectations == len(SUPPLIER_OFFERS.expectations)


# Each defect, planted into exactly N rows of a 40-row batch, quarantines exactly those N rows
# with the expectation, column and reason that name it.
OFFER_DEFECTS = [
    ({"supplier_sku": None}, "expect_column_values_to_not_be_null", "supplier_sku", "supplier_sku is missing"),
    ({"purchase_price": "12,3x"}, "expect_column_values_to_match_regex", "purchase_price", "is not a number"),
    ({"purchase_price": "12.30"}, "expect_column_values_to_match_regex", "purchase_price", "is not a number"),
    ({"purchase_price": None}, "expect_column_values_to_match_regex", "purchase_price", "purchase_price is missing"),
    ({"purchase_price": "0"}, "expect_column_values_to_be_between", "purchase_price", "'0' is not above 0"),
    ({"purchase_price": "-5,00"}, "expect_column_values_to_be_between", "purchase_price", "is not above 0"),
    ({"purchase_price": "99999999999"}, "expect_column_values_to_be_between", "purchase_price", "is larger than"),
    ({"quantity": "-3"}, "expect_column_values_to_be_between", "quantity", "'-3' is negative"),
    ({"quantity": "2,5"}, "expect_column_values_to_match_regex", "quantity", "is not a whole number"),
    ({"quantity": None}, "expect_column_values_to_match_regex", "quantity", "quantity is missing"),
    ({"gtin": "5901234123458"}, "expect_column_values_to_be_valid_gtin", "gtin", "check digit is 8, expected 7"),
    ({"gtin": "12345"}, "expect_column_values_to_be_valid_gtin", "gtin", "has 5 digits"),
    ({"gtin": "59012341234AB"}, "expect_column_values_to_be_valid_gtin", "gtin", "other than digits"),
    ({"gtin": "00000000"}, "expect_column_values_to_be_valid_gtin", "gtin", "all zeros"),
    ({"currency": "zł"}, "expect_column_values_to_be_in_set", "currency", "not an ISO 4217 currency code"),
    ({"currency": "XYZ"}, "expect_column_values_to_be_in_set", "currency", "'XYZ' is not an ISO 4217"),
]


@pytest.mark.parametrize(("defect", "expectation", "column", "reason"), OFFER_DEFECTS)
@pytest.mark.parametrize("planted", [1, 3])
def test_each_offer_expectation_catches_exactly_the_planted_rows(
    hub_dsn: str, defect: dict[str, str | None], expectation: str, column: str, reason: str, planted: int
) -> None:
    bad_rows = {7 * k + 2 for k in range(planted)}
    with psycopg.connect(hub_dsn) as conn:
        outcome, quarantined = _check_offers(conn, _offers(40, dict.fromkeys(bad_rows, defect)))
    assert {q["record_no"] for q in quarantined} == bad_rows
    assert len(quarantined) == planted
    for q in quarantined:
        assert (q["expectation"], q["column_name"]) == (expectation, column)
        assert reason in q["reason"], q["reason"]
        assert q["observed_value"] == defect[column]
        assert q["source_line"] == q["record_no"] + 1
        assert q["raw"]["record_no"] == q["record_no"] and q["raw"][column] == defect[column]
        assert q["dataset"] == "supplier_offer" and q["source"] == "supplier:acme"
    assert outcome.rows_quarantined == planted
    assert outcome.failed == 1
    [result] = [r for r in outcome.results if not r.success]
    assert (result.expectation, result.column, result.unexpected_count) == (expectation, column, planted)


def test_duplicate_supplier_sku_quarantines_every_copy(hub_dsn: str) -> None:
    rows = _offers(6, {2: {"supplier_sku": "DUP"}, 5: {"supplier_sku": "DUP"}})
    with psycopg.connect(hub_dsn) as conn:
        outcome, quarantined = _check_offers(conn, rows)
    assert [(q["record_no"], q["record_key"], q["expectation"]) for q in quarantined] == [
        (2, "DUP", "expect_column_values_to_be_unique"),
        (5, "DUP", "expect_column_values_to_be_unique"),
    ]
    assert quarantined[0]["reason"] == "supplier_sku 'DUP' appears more than once in this delivery"
    assert outcome.rows_quarantined == 2


def test_a_row_breaking_two_expectations_is_one_record_two_reasons(hub_dsn: str) -> None:
    with psycopg.connect(hub_dsn) as conn:
        outcome, quarantined = _check_offers(conn, _offers(3, {2: {"quantity": "-1", "gtin": "1"}}))
    assert sorted(q["column_name"] for q in quarantined) == ["gtin", "quantity"]
    assert outcome.rows_quarantined == 1 and outcome.failed == 2


def test_dot_separator_rejects_comma_prices(hub_dsn: str) -> None:
    rows = _offers(2, {1: {"purchase_price": "12.30"}, 2: {"purchase_price": "12,30"}})
    with psycopg.connect(hub_dsn) as conn:
        _, quarantined = _check_offers(conn, rows, separator=".")
    assert [q["record_no"] for q in quarantined] == [2]


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet="0123456789", min_size=7, max_size=13))
def test_sql_check_digit_matches_python(data_digits: str) -> None:
    # The SQL takes the whole code (its last digit is the check digit being verified).
    with psycopg.connect(BASE_URL) as conn:
        row = conn.execute(
            f"SELECT {gtin_check_digit_sql('d.x')} FROM (SELECT %s::bigint AS x) AS d", (data_digits + "0",)
        )
        [value] = row.fetchone() or [None]
    assert value == check_digit(data_digits)


# ---------------------------------------------------------------- ERP products
def _stage_products(conn: psycopg.Connection, rows: list[dict[str, Any]]) -> uuid.UUID:
    tid = uuid.uuid4()
    columns = ("transfer_id", "record_no", *ERP_PRODUCT_COLUMNS)
    with conn.cursor() as cur, cur.copy(f"COPY staging.erp_product ({', '.join(columns)}) FROM STDIN") as copy:
        for i, row in enumerate(rows, start=1):
            copy.write_row((tid, i, *(row[c] for c in ERP_PRODUCT_COLUMNS)))
    return tid


PRODUCT_DEFECTS = [
    ({"purchase_price": "0"}, "expect_column_values_to_be_between", "purchase_price", "must be > 0"),
    ({"purchase_price": "-1.5"}, "expect_column_values_to_be_between", "purchase_price", "must be > 0"),
    ({"vat_rate": "1.23"}, "expect_column_values_to_be_between", "vat_rate", "must be a fraction in [0, 1)"),
    ({"vat_rate": "-0.1"}, "expect_column_values_to_be_between", "vat_rate", "must be a fraction"),
    ({"stock": "-2"}, "expect_column_values_to_be_between", "stock", "is negative"),
    ({"stock": "2.5"}, "expect_column_values_to_be_between", "stock", "is not an integer"),
    ({"name": "x" * 501}, "expect_column_value_lengths_to_be_between", "name", "501 characters, at most 500"),
    ({"name": None}, "expect_column_value_lengths_to_be_between", "name", "name is missing"),
    ({"currency": "ZLO"}, "expect_column_values_to_be_in_set", "currency", "not an ISO 4217"),
]


@pytest.mark.parametrize(("defect", "expectation", "column", "reason"), PRODUCT_DEFECTS)
def test_each_product_expectation_catches_exactly_the_planted_rows(
    hub_dsn: str, defect: dict[str, str | None], expectation: str, column: str, reason: str
) -> None:
    bad_rows = {3, 9, 10}
    rows = [dict(GOOD_PRODUCT, sku=f"SKU-{i}", **(defect if i in bad_rows else {})) for i in range(1, 21)]
    with psycopg.connect(hub_dsn) as conn:
        tid = _stage_products(conn, rows)
        outcome = run_row_checks(
            conn, ERP_PRODUCTS, source="erp", transfer_id=tid, rows_evaluated=len(rows), dataset="product"
        )
        quarantined = (
            conn.cursor(row_factory=dict_row)
            .execute("SELECT * FROM hub.quarantine WHERE transfer_id = %s ORDER BY record_no", (tid,))
            .fetchall()
        )
    assert [q["record_no"] for q in quarantined] == sorted(bad_rows)
    assert {(q["expectation"], q["column_name"], q["dataset"]) for q in quarantined} == {
        (expectation, column, "product")
    }
    assert all(reason in q["reason"] and q["record_key"] == f"SKU-{q['record_no']}" for q in quarantined)
    assert outcome.rows_quarantined == 3 and outcome.failed == 1


def test_duplicate_erp_sku_and_clean_batch(hub_dsn: str) -> None:
    rows = [dict(GOOD_PRODUCT, sku=f"SKU-{i}") for i in range(1, 11)]
    with psycopg.connect(hub_dsn) as conn:
        clean = run_row_checks(
            conn, ERP_PRODUCTS, source="erp", transfer_id=_stage_products(conn, rows), rows_evaluated=10
        )
        rows[4]["sku"] = "SKU-1"
        dup = run_row_checks(
            conn, ERP_PRODUCTS, source="erp", transfer_id=_stage_products(conn, rows), rows_evaluated=10
        )
    assert (clean.rows_quarantined, clean.failed) == (0, 0)
    assert (dup.rows_quarantined, dup.failed) == (2, 1)


# ---------------------------------------------------------------- breakers
def _ledger_batch(dsn: str, rows_read: int, source: str = "supplier:acme", status: str = "success") -> None:
    transfer = ledger.Transfer(source=source, target="hub", dataset="supplier_offer", rows_read=rows_read)
    ledger.append_separately(dsn, transfer, status)  # type: ignore[arg-type]


def test_row_count_breaker_compares_with_the_last_good_batch(hub_dsn: str) -> None:
    limits = BatchBreakers(max_row_drop_percent=50, max_rejected_percent=20)
    _ledger_batch(hub_dsn, 1000)
    _ledger_batch(hub_dsn, 10, status="failed")  # a failed batch is not a good one
    _ledger_batch(hub_dsn, 10, source="supplier:bravo")  # another source
    with psycopg.connect(hub_dsn) as conn:
        truncated = source_breakers(
            conn,
            limits,
            dataset="supplier_offer",
            source="supplier:acme",
            rows_read=400,
            rows_rejected=0,
            override=None,
        )
        ok = source_breakers(
            conn,
            limits,
            dataset="supplier_offer",
            source="supplier:acme",
            rows_read=600,
            rows_rejected=0,
            override=None,
        )
        delta = source_breakers(
            conn,
            limits,
            dataset="supplier_offer",
            source="supplier:acme",
            rows_read=400,
            rows_rejected=0,
            override=None,
            compare_row_count=False,
        )
    assert truncated.blocked and [m.name for m in truncated.tripped] == ["row_count_drop"]
    [drop] = truncated.tripped
    assert (drop.observed, drop.limit) == (60.0, 50.0)
    assert "400 rows now vs 1,000 in the last good batch" in drop.describe()
    assert not ok.blocked and not delta.blocked


def test_rejected_share_breaker_and_override(hub_dsn: str) -> None:
    limits = BatchBreakers(max_row_drop_percent=None, max_rejected_percent=20, rejected_min_rows=20)
    override = Override(by="alice", reason="checked by hand")
    with psycopg.connect(hub_dsn) as conn:

        def decide(read: int, rejected: int, over: Override | None = None) -> Any:
            return source_breakers(
                conn,
                limits,
                dataset="supplier_offer",
                source="s",
                rows_read=read,
                rows_rejected=rejected,
                override=over,
            )

        tripped, small, passed, overridden = decide(100, 21), decide(10, 9), decide(100, 20), decide(100, 50, override)
    assert tripped.blocked and "21 of 100 rows failed validation" in tripped.tripped[0].detail
    assert not small.blocked and small.measures == ()
    assert not passed.blocked and passed.ledger_details()["outcome"] == "passed"
    assert not overridden.blocked
    assert overridden.ledger_details()["override"] == {"by": "alice", "reason": "checked by hand"}


def test_check_batch_fills_the_ledger_details_and_renders_data_docs(hub_dsn: str, tmp_path: Path) -> None:
    transfer = ledger.Transfer(source="supplier:acme", target="hub", dataset="supplier_offer")
    rows = _offers(30, {4: {"purchase_price": "0"}, 9: {"gtin": "5901234123458"}})
    with psycopg.connect(hub_dsn) as conn:
        _stage_offers(conn, rows, transfer.transfer_id)
    transfer.rows_read = len(rows)
    outcome, decision = check_batch(
        hub_dsn,
        SUPPLIER_OFFERS,
        transfer,
        limits=BatchBreakers(),
        override=None,
        docs_dir=tmp_path / "docs",
        params={"decimal_separator": ",", "price_pattern": price_pattern(","), "spaces": NUMBER_SPACES},
    )
    assert not decision.blocked
    assert (transfer.rows_rejected, transfer.rows_written) == (2, 28)
    validation = transfer.details["validation"]
    assert validation["suite"] == "supplier_offer"
    assert (validation["rows_evaluated"], validation["rows_quarantined"]) == (30, 2)
    assert validation["expectations"] == len(SUPPLIER_OFFERS.expectations)
    assert (validation["passed"], validation["failed"]) == (validation["expectations"] - 2, 2)
    assert transfer.details["breakers"]["outcome"] == "passed"
    index = tmp_path / "docs" / transfer.details["data_docs"]
    assert transfer.details["data_docs"] == f"supplier_acme/{transfer.transfer_id}/index.html"
    assert index.is_file()
    pages = "".join(p.read_text(encoding="utf-8") for p in index.parent.rglob("*.html"))
    assert "supplier_offer.rows" in pages and "supplier_offer.batch" in pages
    assert "5901234123458" in pages, "the failing GTIN is shown as evidence"
    static = index.parent / "static"
    assert static.is_symlink() and static.resolve() == (tmp_path / "docs" / "_static").resolve()
    assert any(static.rglob("*.css")), "pages still find GX's stylesheets through the shared copy"
    assert outcome.rows_quarantined == 2


def test_python_and_sql_gtin_rules_agree_on_examples(hub_dsn: str) -> None:
    codes = [
        "5901234123457",
        "5901234123458",
        "96385074",
        "4006381333931",
        "12345",
        "0000000000000",
        "590-1234-12345-7",
    ]
    rows = _offers(len(codes), {i + 1: {"gtin": code} for i, code in enumerate(codes)})
    with psycopg.connect(hub_dsn) as conn:
        _, quarantined = _check_offers(conn, rows)
    failing = {q["observed_value"] for q in quarantined}
    assert failing == {code for code in codes if gtin_problem(code)}


def test_the_baseline_is_the_last_good_batch_of_the_same_kind(hub_dsn: str) -> None:
    for rows, partial in ((1000, False), (30, True)):  # a full feed, then a price-only update
        transfer = ledger.Transfer(
            source="supplier:acme",
            target="hub",
            dataset="supplier_offer",
            rows_read=rows,
            details={"partial_delivery": partial},
        )
        ledger.append_separately(hub_dsn, transfer, "success")
    with psycopg.connect(hub_dsn) as conn:
        any_kind = last_good_batch(conn, "supplier:acme", "supplier_offer")
        whole = last_good_batch(conn, "supplier:acme", "supplier_offer", {"partial_delivery": False})
        other = last_good_batch(conn, "supplier:bravo", "supplier_offer")
    assert any_kind is not None and any_kind[1] == 30
    assert whole is not None and whole[1] == 1000
    assert other is None
