"""The ledger against the real PostgreSQL: chain, append-only, tamper detection."""

from __future__ import annotations

import itertools

import psycopg
import pytest

from commerce_sync.audit import ledger
from commerce_sync.db import connect
from commerce_sync.hub.migrate import discover, migrate

pytestmark = pytest.mark.integration


def _transfer(n: int) -> ledger.Transfer:
    return ledger.Transfer(
        source=f"src{n}",
        target="hub",
        dataset="product",
        run=ledger.RunContext(run_id="r1", dag_id="d", task_id="t", try_number=1, map_index=-1),
        rows_read=n,
        details={"price": 12.5, "nested": {"b": 1, "a": [1, 2]}, "text": "zażółć"},
    )


def test_chain_links_and_verifies(hub_dsn: str) -> None:
    with connect(hub_dsn) as conn:
        rows = [ledger.append(conn, _transfer(i), "success") for i in range(5)]
    assert rows[0].prev_hash == ledger.GENESIS
    for earlier, later in itertools.pairwise(rows):
        assert later.prev_hash == earlier.hash
    with connect(hub_dsn) as conn:
        result = ledger.verify(conn, expected_head=(rows[2].seq, rows[2].hash))
    assert result.ok, result
    assert result.rows_checked == 5
    assert result.head_hash == rows[-1].hash


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit.transfer SET rows_read = 99",
        "DELETE FROM audit.transfer",
        "TRUNCATE audit.transfer",
    ],
)
def test_ledger_refuses_changes(hub_dsn: str, statement: str) -> None:
    with connect(hub_dsn) as conn:
        ledger.append(conn, _transfer(1), "success")
    with connect(hub_dsn) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
        conn.execute(statement)


def test_replica_mode_does_not_bypass_triggers(hub_dsn: str) -> None:
    with connect(hub_dsn) as conn:
        ledger.append(conn, _transfer(1), "success")
    with connect(hub_dsn) as conn:
        conn.execute("SET session_replication_role = replica")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM audit.transfer")


def test_verify_finds_first_tampered_row(hub_dsn: str) -> None:
    with connect(hub_dsn) as conn:
        rows = [ledger.append(conn, _transfer(i), "success") for i in range(4)]
    # A superuser can disable the trigger; the chain still shows the rewrite.
    with connect(hub_dsn) as conn:
        conn.execute("ALTER TABLE audit.transfer DISABLE TRIGGER transfer_refuse_update_delete")
        conn.execute("UPDATE audit.transfer SET rows_read = 1000 WHERE seq = %s", (rows[2].seq,))
    with connect(hub_dsn) as conn:
        result = ledger.verify(conn)
    assert not result.ok
    assert result.first_broken_seq == rows[2].seq
    assert "does not match" in (result.problem or "")


def test_verify_detects_truncated_tail_against_exported_head(hub_dsn: str) -> None:
    with connect(hub_dsn) as conn:
        rows = [ledger.append(conn, _transfer(i), "success") for i in range(3)]
    with connect(hub_dsn) as conn:
        conn.execute("ALTER TABLE audit.transfer DISABLE TRIGGER transfer_refuse_update_delete")
        conn.execute("DELETE FROM audit.transfer WHERE seq = %s", (rows[-1].seq,))
    with connect(hub_dsn) as conn:
        assert ledger.verify(conn).ok  # the remaining chain is intact ...
        result = ledger.verify(conn, expected_head=(rows[-1].seq, rows[-1].hash))
    assert not result.ok  # ... but the exported head is gone
    assert result.problem == "exported head is no longer in the chain"


def test_recording_appends_failed_row_and_reraises(hub_dsn: str) -> None:
    transfer = _transfer(7)
    with pytest.raises(RuntimeError, match="boom"), ledger.recording(hub_dsn, transfer):
        raise RuntimeError("boom")
    with connect(hub_dsn) as conn:
        status, message = conn.execute(
            "SELECT status, message FROM audit.transfer WHERE transfer_id = %s", (transfer.transfer_id,)
        ).fetchone()
    assert status == "failed"
    assert message == "RuntimeError: boom"


def test_migrate_is_idempotent(hub_dsn: str) -> None:
    assert migrate(hub_dsn) == []
    with connect(hub_dsn) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM hub.schema_migration ORDER BY 1")]
    assert versions == [m.version for m in discover()]
    assert versions == [f"{n:04d}" for n in range(1, len(versions) + 1)], "migrations are numbered without gaps"
