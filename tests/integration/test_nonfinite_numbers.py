"""Non-finite and out-of-range numbers in a supplier feed: quarantined per row, never cast, never retried."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from commerce_sync.errors import DataError
from commerce_sync.sources.supplier_load import SupplierSyncResult
from tests.integration.test_supplier_load import (  # noqa: F401 - feed_server is a fixture
    FeedServer,
    Served,
    feed_server,
    ledger_rows,
    offers,
    product,
    quarantined,
    sync,
    xml_feed,
    xml_supplier,
)

pytestmark = pytest.mark.integration

# (sku, price, stock): each bad value is one the merge used to cast (and fail the whole batch on).
BAD = [
    ("B-INF", "Infinity", "1"),
    ("B-NINF", "-Infinity", "1"),
    ("B-NAN", "NaN", "1"),
    ("B-E308", "1e308", "1"),
    ("B-WIDE", "12345678901.5", "1"),  # 11 integer digits: beyond numeric(14, 4)
    ("B-HUGE", "9" * 400 + ".5", "1"),  # matches the price pattern, far beyond any numeric precision
    ("B-QTY", "10.00", "99999999999"),  # beyond integer
    ("B-GIANT", "9" * 140_000, "1"),  # beyond even unconstrained numeric (131,072 digits)
    ("B-GQTY", "10.00", "9" * 140_000),
]


def test_feed_with_non_finite_prices_loads_good_rows_and_quarantines_the_rest(
    hub_dsn: str,
    feed_server: FeedServer,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    # Every SKU is in the hub already: the price-change report joins the hub, which is where a cast of
    # a quarantined row used to run before the quarantine filter.
    feed_server.files["/feeds/acme.xml"] = Served(
        xml_feed(*(product(sku, "10.00", "1") for sku in ["G-1", *(sku for sku, _, _ in BAD), "G-2"]))
    )
    sync(hub_dsn, xml_supplier(), feed_server, tmp_path)
    feed_server.files["/feeds/acme.xml"] = Served(
        xml_feed(
            product("G-1", "12.30", "7"),
            *(product(sku, price, stock) for sku, price, stock in BAD),
            product("G-2", "9999999999.9999", "3"),  # the largest price numeric(14, 4) holds
        )
    )
    result: SupplierSyncResult = sync(hub_dsn, xml_supplier(), feed_server, tmp_path)  # raises nothing: no retry

    assert (result.rows_read, result.rows_loaded, result.rows_quarantined) == (len(BAD) + 2, 2, len(BAD))
    prices = {o["supplier_sku"]: o["purchase_price"] for o in offers(hub_dsn)}
    assert (prices.pop("G-1"), prices.pop("G-2")) == (Decimal("12.3000"), Decimal("9999999999.9999"))
    assert set(prices.values()) == {Decimal("10.0000")}, "quarantined offers keep their last good price"
    rows = {q["record_key"]: q for q in quarantined(hub_dsn)}
    assert set(rows) == {sku for sku, _, _ in BAD}
    for sku, price, stock in BAD:
        row = rows[sku]
        field, value = ("quantity", stock) if sku in {"B-QTY", "B-GQTY"} else ("purchase_price", price)
        assert row["column_name"] == field
        assert f"{field} '{value}'" in row["reason"], row["reason"]
        assert row["source_line"] is not None and row["source_line"] > 1
    assert [r["status"] for r in ledger_rows(hub_dsn)] == ["success", "success"]


@pytest.mark.parametrize(
    ("statement", "sqlstate"),
    [
        ("SELECT 'Infinity'::numeric(14, 4)", "22003"),
        ("SELECT '1e308'::numeric(14, 4)", "22003"),
        ("SELECT 'x'::integer", "22P02"),
        ("SELECT 1/0", "22012"),
        ("CREATE TEMP TABLE t (a int NOT NULL); INSERT INTO t VALUES (NULL)", "23502"),
    ],
)
def test_database_data_errors_are_not_transient(hub_dsn: str, statement: str, sqlstate: str) -> None:
    from commerce_sync.db import as_data_error

    with psycopg.connect(hub_dsn) as conn, pytest.raises(psycopg.Error) as raised:
        conn.execute(statement)
    error = as_data_error(raised.value)
    assert isinstance(error, DataError)
    assert error.sqlstate == sqlstate
    assert sqlstate in str(error)


def test_other_database_errors_are_left_alone(hub_dsn: str) -> None:
    from commerce_sync.db import as_data_error

    with psycopg.connect(hub_dsn) as conn, pytest.raises(psycopg.Error) as raised:
        conn.execute("SELECT * FROM no_such_table")
    assert as_data_error(raised.value) is None


def test_task_fails_without_retry_on_a_database_data_error(hub_dsn: str) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    from commerce_sync.airflow_glue import operator_errors

    with (
        pytest.raises(AirflowFailException, match=r"supplier 'acme': .*SQLSTATE 22003.*Not retried") as raised,
        operator_errors("supplier 'acme'"),
        psycopg.connect(hub_dsn) as conn,
    ):
        conn.execute("SELECT 'Infinity'::numeric(14, 4)")
    assert isinstance(raised.value.__cause__, psycopg.errors.NumericValueOutOfRange)


def test_task_still_retries_a_lost_connection() -> None:
    from airflow.sdk.exceptions import AirflowException, AirflowFailException

    from commerce_sync.airflow_glue import operator_errors

    # Not a data error: a temporary fault that Airflow retries, never AirflowFailException.
    with (
        pytest.raises(AirflowException, match="temporary fault, will retry") as raised,
        operator_errors("supplier 'acme'"),
    ):
        raise psycopg.OperationalError("connection lost")
    assert not isinstance(raised.value, AirflowFailException)
