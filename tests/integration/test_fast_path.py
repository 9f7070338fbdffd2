"""The fast path of a small change: which whole-catalog work it skips, and where the threshold lies.

A small, clean ERP batch renders no Data Docs (Great Expectations is not imported; a batch with a
failing row still gets them); the pricing DAG's catalog gate sees how many SKUs changed since the
last pricing and takes the fast path only up to ``COMMERCE_SYNC_FAST_PATH_MAX_SKUS``; the ERP run
says when the supply merge has nothing to do.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest

from commerce_sync.audit import ledger
from commerce_sync.config import BatchBreakers
from commerce_sync.quality.catalog import small_change
from commerce_sync.quality.gate import check_batch
from commerce_sync.quality.suites import SUPPLIER_OFFERS, price_pattern
from commerce_sync.settings import fast_path_max_skus
from tests.integration.test_quality_catalog import _product
from tests.integration.test_quality_gate import NUMBER_SPACES, _offers, _stage_offers

pytestmark = pytest.mark.integration
PARAMS = {"decimal_separator": ",", "price_pattern": price_pattern(","), "spaces": NUMBER_SPACES}


def _checked(dsn: str, docs: Path, defects: dict[int, dict[str, str | None]]) -> ledger.Transfer:
    transfer = ledger.Transfer(source="supplier:acme", target="hub", dataset="supplier_offer")
    rows = _offers(5, defects)
    with psycopg.connect(dsn) as conn:
        _stage_offers(conn, rows, transfer.transfer_id)
    transfer.rows_read = len(rows)
    check_batch(
        dsn,
        SUPPLIER_OFFERS,
        transfer,
        limits=BatchBreakers(),
        override=None,
        docs_dir=docs,
        params=PARAMS,
        docs_when_clean=False,
    )
    return transfer


def test_a_small_clean_batch_skips_data_docs_and_a_failing_one_keeps_them(hub_dsn: str, tmp_path: Path) -> None:
    clean = _checked(hub_dsn, tmp_path / "docs", {})
    assert clean.details["data_docs"] is None
    assert "fast path" in clean.details["data_docs_skipped"]
    assert clean.details["validation"]["rows_evaluated"] == 5  # the row checks still ran
    assert not (tmp_path / "docs").exists()

    failing = _checked(hub_dsn, tmp_path / "docs", {2: {"purchase_price": "0"}})
    assert failing.rows_rejected == 1
    assert (tmp_path / "docs" / failing.details["data_docs"]).is_file()


def test_the_clean_fast_path_never_imports_great_expectations(hub_dsn: str, tmp_path: Path) -> None:
    probe = f"""
import sys
from tests.integration.test_fast_path import _checked
from pathlib import Path
_checked({hub_dsn!r}, Path({str(tmp_path / "docs")!r}), {{}})
print("great_expectations" in sys.modules)
"""
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", probe], cwd=root, capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "False", done.stderr


def _priced(conn: psycopg.Connection, channels: list[str]) -> None:
    for channel in channels:
        conn.execute(
            "INSERT INTO hub.pricing_state (channel, config_sha256, inputs_seen_until, offer_count, transfer_id) "
            "VALUES (%s, 'x', now(), 0, %s)",
            (channel, uuid.uuid4()),
        )


def test_small_change_counts_skus_changed_since_the_last_pricing(hub_dsn: str) -> None:
    with psycopg.connect(hub_dsn) as conn:
        for i in range(5):
            _product(conn, f"OLD-{i}")
        conn.commit()
        assert small_change(hub_dsn, ["allegro"], 10) is None, "never priced: a whole-catalog run"
        _priced(conn, ["allegro"])
        conn.commit()
    assert small_change(hub_dsn, ["allegro"], 10) == 0
    with psycopg.connect(hub_dsn) as conn:
        for i in range(3):
            _product(conn, f"NEW-{uuid.uuid4().hex[:6]}")
        conn.execute("UPDATE hub.stock SET quantity = quantity")  # no stock rows: touches nothing
    assert small_change(hub_dsn, ["allegro"], 10) == 3
    assert small_change(hub_dsn, ["allegro"], 3) == 3
    assert small_change(hub_dsn, ["allegro"], 2) is None, "above the threshold: the whole suite runs"
    assert small_change(hub_dsn, ["allegro"], 0) is None, "0 turns the fast path off"
    assert small_change(hub_dsn, ["allegro", "ebay"], 10) is None, "ebay was never priced"


@pytest.mark.parametrize(("raw", "expected"), [(None, 1000), ("0", 0), ("250", 250)])
def test_fast_path_threshold_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, raw: str | None, expected: int
) -> None:
    if raw is None:
        monkeypatch.delenv("COMMERCE_SYNC_FAST_PATH_MAX_SKUS", raising=False)
    else:
        monkeypatch.setenv("COMMERCE_SYNC_FAST_PATH_MAX_SKUS", raw)
    assert fast_path_max_skus() == expected


@pytest.mark.parametrize("raw", ["lots", "-1"])
def test_a_bad_threshold_names_the_variable(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("COMMERCE_SYNC_FAST_PATH_MAX_SKUS", raw)
    with pytest.raises(ValueError, match="COMMERCE_SYNC_FAST_PATH_MAX_SKUS"):
        fast_path_max_skus()
