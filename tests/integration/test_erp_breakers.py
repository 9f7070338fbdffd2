"""ERP batch breakers: a batch with too many bad rows, or a full resync that lost most products,
is refused before the merge (hub unchanged, decision in the ledger); the override lets it through."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from psycopg.rows import dict_row

from commerce_sync.config import DatasetQuality, QualityFile
from commerce_sync.db import connect, drop_database
from commerce_sync.errors import BreakerTripped
from commerce_sync.quality.breakers import Override
from commerce_sync.sources.erp import sync_erp
from commerce_sync_sandbox.erp import load_erp
from tests.conftest import new_database
from tests.integration.test_erp_load import ERP, RUN, _snapshot

pytestmark = pytest.mark.integration


@pytest.fixture
def erp_dsn() -> Iterator[str]:
    url = new_database()
    load_erp(url, n=100)
    yield url
    drop_database(url)


def _quality(tmp_path: Path, **limits: Any) -> QualityFile:
    return QualityFile(data_docs_dir=str(tmp_path / "docs"), datasets={"erp_product": DatasetQuality(**limits)})


def _ledger(hub: str) -> list[dict[str, Any]]:
    with connect(hub) as conn, conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT status, rows_read, rows_rejected, details FROM audit.transfer ORDER BY seq"
        ).fetchall()


def test_too_many_rejected_rows_trip_and_the_override_lets_them_through(
    hub_dsn: str, erp_dsn: str, tmp_path: Path
) -> None:
    quality = _quality(tmp_path, max_rejected_percent=10, rejected_min_rows=20)
    with connect(erp_dsn) as conn:
        conn.execute("UPDATE erp.products SET stock = -1 WHERE sku <= 'SKU-000015'")  # 15 % negative stock
    with pytest.raises(BreakerTripped, match=r"rejected_share: 15% > limit 10% \(15 of 100 rows failed"):
        sync_erp(hub_dsn, ERP, erp_dsn, RUN, quality=quality)
    assert _snapshot(hub_dsn) == []
    [blocked] = _ledger(hub_dsn)
    assert blocked["status"] == "failed" and blocked["rows_rejected"] == 15
    assert blocked["details"]["breakers"]["outcome"] == "blocked"
    assert blocked["details"]["validation"]["failed_expectations"] == {"expect_column_values_to_be_between(stock)": 15}
    assert (tmp_path / "docs" / blocked["details"]["data_docs"]).is_file()

    result = sync_erp(hub_dsn, ERP, erp_dsn, RUN, quality=quality, override=Override(by="ops.bob", reason="known"))
    assert (result.rows_loaded, result.rows_quarantined) == (85, 15)
    passed = _ledger(hub_dsn)[-1]
    assert passed["status"] == "success"
    assert passed["details"]["breakers"]["override"] == {"by": "ops.bob", "reason": "known"}
    with connect(hub_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM hub.product").fetchone() == (85,)


def test_full_resync_that_lost_most_products_trips_the_row_count_breaker(
    hub_dsn: str, erp_dsn: str, tmp_path: Path
) -> None:
    quality = _quality(tmp_path, max_row_drop_percent=30)
    sync_erp(hub_dsn, ERP, erp_dsn, RUN, full_resync=True, quality=quality)
    before = _snapshot(hub_dsn)
    with connect(erp_dsn) as conn:
        conn.execute("DELETE FROM erp.products WHERE sku > 'SKU-000040'")
    # An incremental run is never compared by row count (it reads only what changed).
    sync_erp(hub_dsn, ERP, erp_dsn, RUN, quality=quality)
    with pytest.raises(BreakerTripped, match=r"row_count_drop: 60% > limit 30% \(40 rows now vs 100"):
        sync_erp(hub_dsn, ERP, erp_dsn, RUN, full_resync=True, quality=quality)
    assert _snapshot(hub_dsn) == before, "no product was deactivated"
    assert _ledger(hub_dsn)[-1]["details"]["breakers"]["tripped"] == ["row_count_drop"]
