"""The ledger against forged or edited change rows and rows appended without the ledger key."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from commerce_sync.audit import changes, ledger
from commerce_sync.db import connect
from tests.integration.test_audit_integrity import app_login  # noqa: F401 - a fixture

pytestmark = pytest.mark.integration


def _record(conn: psycopg.Connection, n: int, values: list[str]) -> ledger.LedgerRow:
    """A transfer with one purchase-price change row per value, recorded the way the writers do."""
    transfer = ledger.Transfer(source=f"supplier:s{n}", target="hub", dataset="supplier_offer", rows_read=len(values))
    for i, value in enumerate(values):
        conn.execute(
            "INSERT INTO audit.change (transfer_id, dataset, sku, supplier, field, old_value, new_value, source_ref) "
            "VALUES (%s, 'supplier_offer', %s, %s, 'purchase_price', '900.0000', %s, '{}')",
            (transfer.transfer_id, f"SKU-{n}-{i}", f"s{n}", value),
        )
    changes.summarise(conn, transfer)
    return ledger.append(conn, transfer, "success")


def _edit_change_as_superuser(dsn: str, transfer_id: str, old: str, new: str) -> None:
    with connect(dsn) as conn:
        conn.execute("ALTER TABLE audit.change DISABLE TRIGGER change_refuse_update_delete")
        updated = conn.execute(
            "UPDATE audit.change SET new_value = %s WHERE transfer_id = %s AND new_value = %s", (new, transfer_id, old)
        ).rowcount
        conn.execute("ALTER TABLE audit.change ENABLE ALWAYS TRIGGER change_refuse_update_delete")
    assert updated == 1


def test_superuser_edit_of_one_change_value_is_named(hub_dsn: str) -> None:
    with connect(hub_dsn) as conn:
        rows = [_record(conn, 0, ["12.5000"]), _record(conn, 1, ["946.96", "13.0000"]), _record(conn, 2, ["1.0000"])]
    with connect(hub_dsn) as conn:
        before = ledger.verify(conn)
        assert before.ok, before
        assert (before.transfers_with_changes, before.change_mismatches) == (3, 0)
        expected = changes.change_digest(conn, rows[1].transfer_id)

    _edit_change_as_superuser(hub_dsn, rows[1].transfer_id, "946.96", "0.01")
    with connect(hub_dsn) as conn:
        result = ledger.verify(conn)
        found = changes.change_digest(conn, rows[1].transfer_id)
    assert not result.ok
    assert result.first_broken_seq == rows[1].seq
    assert result.change_mismatches == 1
    mismatch = result.first_change_mismatch
    assert mismatch is not None
    assert (mismatch.seq, mismatch.transfer_id) == (rows[1].seq, rows[1].transfer_id)
    assert (mismatch.expected_count, mismatch.expected_sha256) == expected
    assert (mismatch.found_count, mismatch.found_sha256) == found
    assert found[0] == expected[0] and found[1] != expected[1]
    assert result.problem == (
        f"change rows do not match the ledger at seq {rows[1].seq}, transfer {rows[1].transfer_id}: expected "
        f"2 change rows, sha256 {expected[1]}, found 2 change rows, sha256 {found[1]}"
    )
    # The hash chain itself still holds: only the recomputation finds the edit.
    assert result.rows_checked == 3 and result.keyed_rows == 3


def test_app_role_cannot_add_a_change_row_to_a_recorded_transfer(hub_dsn: str, app_login: str) -> None:  # noqa: F811
    with connect(app_login) as conn:
        old = _record(conn, 0, ["946.96"])
    with connect(app_login) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege, match="already recorded"):
        conn.execute(
            "INSERT INTO audit.change (transfer_id, dataset, sku, field, old_value, new_value) "
            "VALUES (%s, 'supplier_offer', 'SKU-0-9', 'purchase_price', NULL, '0.01')",
            (old.transfer_id,),
        )
    # A multi-row statement mixing a new transfer with an old one is refused as a whole.
    with connect(app_login) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege, match="already recorded"):
        conn.execute(
            "INSERT INTO audit.change (transfer_id, dataset, sku, field) "
            "VALUES (%s, 'supplier_offer', 'N-1', 'quantity'), (%s, 'supplier_offer', 'N-2', 'quantity')",
            (uuid.uuid4(), old.transfer_id),
        )
    with connect(hub_dsn) as conn:
        assert ledger.verify(conn).ok


def test_late_change_rows_slipped_past_the_trigger_are_reported(hub_dsn: str) -> None:
    """A superuser who disables the trigger: a transfer that claimed no change rows, and orphans."""
    with connect(hub_dsn) as conn:
        quiet = ledger.append(conn, ledger.Transfer(source="erp", target="hub", dataset="product"), "success")
        _record(conn, 1, ["2.0000"])
    orphan = uuid.uuid4()
    with connect(hub_dsn) as conn:
        conn.execute("ALTER TABLE audit.change DISABLE TRIGGER change_refuse_late_insert")
        for transfer_id in (quiet.transfer_id, orphan):
            conn.execute(
                "INSERT INTO audit.change (transfer_id, dataset, sku, field, new_value) "
                "VALUES (%s, 'product', 'SKU-X', 'purchase_price', '0.01')",
                (transfer_id,),
            )
        conn.execute("ALTER TABLE audit.change ENABLE ALWAYS TRIGGER change_refuse_late_insert")
    with connect(hub_dsn) as conn:
        result = ledger.verify(conn)
    assert not result.ok and result.change_mismatches == 2
    assert result.first_broken_seq == quiet.seq
    assert result.problem is not None and "expected no change rows, found 1 change rows" in result.problem


def _forged_row(conn: psycopg.Connection) -> dict[str, Any]:
    """A "success" ledger row with a correct hash, computed as the application role can."""
    prev = conn.execute("SELECT hash FROM audit.transfer ORDER BY seq DESC LIMIT 1").fetchone()
    assert prev is not None
    row: dict[str, Any] = {name: None for name in ledger.HASHED_FIELDS}
    row.update(
        transfer_id=uuid.uuid4(),
        source="erp",
        target="hub",
        dataset="product",
        rows_read=1,
        rows_written=1,
        rows_rejected=0,
        rows_changed=1,
        status="success",
        details={},
        started_at=ledger.utcnow(),
        finished_at=ledger.utcnow(),
    )
    return dict(row, prev_hash=prev[0], hash=ledger.row_hash(prev[0], row))


@pytest.mark.parametrize(
    ("mac", "problem"),
    [
        (None, "unkeyed row after keyed rows: appended without the ledger key"),
        ("0" * 64, "MAC does not match: row written or rewritten without the ledger key"),
    ],
)
def test_forged_success_row_with_a_correct_hash_is_detected(
    hub_dsn: str,
    app_login: str,  # noqa: F811
    mac: str | None,
    problem: str,
) -> None:
    with connect(app_login) as conn:
        _record(conn, 0, ["10.0000"])
    with connect(app_login) as conn:
        forged = _forged_row(conn)
        columns = [*ledger.HASHED_FIELDS, "prev_hash", "hash", "mac"]
        seq = conn.execute(
            f"INSERT INTO audit.transfer ({', '.join(columns)}) "
            f"VALUES ({', '.join(f'%({c})s' for c in columns)}) RETURNING seq",
            dict(forged, details=Jsonb({}), mac=mac),
        ).fetchone()
    assert seq is not None
    with connect(hub_dsn) as conn:
        result = ledger.verify(conn)
    assert not result.ok
    assert (result.first_broken_seq, result.problem) == (seq[0], problem)


def test_legacy_unkeyed_rows_before_the_first_keyed_row_stay_valid(
    hub_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ledger.KEY_ENV)
    with pytest.raises(ledger.LedgerKeyMissing, match=ledger.KEY_ENV), connect(hub_dsn) as conn:
        _record(conn, 0, ["1.0000"])  # refused: the work (its change row) is rolled back with it
    monkeypatch.setenv(ledger.ALLOW_UNKEYED_ENV, "1")  # rows as written before keying (or on a dev database)
    with connect(hub_dsn) as conn:
        legacy = [_record(conn, i, ["1.0000"]) for i in range(2)]
    monkeypatch.delenv(ledger.ALLOW_UNKEYED_ENV)
    monkeypatch.setenv(ledger.KEY_ENV, "the-key")
    with connect(hub_dsn) as conn:
        _record(conn, 5, ["2.0000"])
        result = ledger.verify(conn)
        macs = [r[0] for r in conn.execute("SELECT mac IS NOT NULL FROM audit.transfer ORDER BY seq")]
    assert result.ok, result
    assert (result.legacy_rows, result.keyed_rows) == (2, 1)
    assert macs == [False, False, True]

    monkeypatch.delenv(ledger.KEY_ENV)
    monkeypatch.setenv(ledger.ALLOW_UNKEYED_ENV, "1")
    with connect(hub_dsn) as conn:
        late = _record(conn, 6, ["3.0000"])
    with connect(hub_dsn) as conn:
        result = ledger.verify(conn, key=b"the-key")
    assert not result.ok
    assert (result.first_broken_seq, result.legacy_rows) == (late.seq, len(legacy))
    assert result.problem == "unkeyed row after keyed rows: appended without the ledger key"


def test_hub_maintenance_verify_task_fails_on_an_edited_change_row(
    hub_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dags.hub_maintenance as maintenance
    from airflow.sdk.exceptions import AirflowFailException

    from commerce_sync.audit import heads

    monkeypatch.setattr(maintenance, "hub_dsn", lambda: hub_dsn)
    monkeypatch.setenv(heads.HEADS_DIR_ENV, str(tmp_path))
    verify_ledger = maintenance.hub_maintenance().get_task("verify_ledger").python_callable
    with connect(hub_dsn) as conn:
        rows = [_record(conn, 0, ["946.96"]), _record(conn, 1, ["5.0000"])]
        heads.export_head(conn, tmp_path, ledger.ledger_key())
        _record(conn, 2, ["6.0000"])
    report = verify_ledger()
    assert report["ok"] and (report["anchored_seq"], report["not_anchored_rows"]) == (rows[1].seq, 1)

    _edit_change_as_superuser(hub_dsn, rows[0].transfer_id, "946.96", "0.01")
    with pytest.raises(AirflowFailException, match=f"change rows do not match the ledger at seq {rows[0].seq}"):
        verify_ledger()
