"""The transfer ledger: one append-only, hash-chained row per transfer, successful or not.

A transfer that changes the hub appends its ``success`` row in the same database transaction as
the change, so the hub never holds data without the ledger row that explains it. A transfer that
fails appends a ``failed`` row on a fresh connection (the work's own transaction was rolled back).

Each row's ``hash`` is ``sha256(prev_hash + "\\n" + canonical_json(row))``; the chain starts at
``GENESIS``. :func:`verify` walks the chain and reports the first broken link.

A transfer that records row-level changes (``audit.change``) carries their count and digest
(``changes_count``, ``changes_sha256``, see :mod:`commerce_sync.audit.changes`). These fields join
the canonical JSON only when set, so rows written before they existed hash (and verify) as before.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from commerce_sync.db import connect

GENESIS = "0" * 64
_CHAIN_LOCK = 0x6C656467  # serialises appends so the chain has one order
Status = Literal["success", "failed"]

HASHED_FIELDS = (
    "transfer_id",
    "run_id",
    "dag_id",
    "task_id",
    "try_number",
    "map_index",
    "source",
    "target",
    "dataset",
    "rows_read",
    "rows_written",
    "rows_rejected",
    "rows_changed",
    "payload_sha256",
    "status",
    "message",
    "details",
    "started_at",
    "finished_at",
)
OPTIONAL_HASHED_FIELDS = ("changes_count", "changes_sha256")
"""Hashed only when not NULL (added by migration 0003; older rows lack them)."""


@dataclass(frozen=True)
class RunContext:
    """Who moved the data: the Airflow run and task (or a CLI invocation)."""

    run_id: str | None = None
    dag_id: str | None = None
    task_id: str | None = None
    try_number: int | None = None
    map_index: int | None = None


def utcnow() -> datetime:
    """Current time in UTC, microsecond precision (what PostgreSQL stores)."""
    return datetime.now(UTC)


@dataclass
class Transfer:
    """A transfer being recorded. Fill the counters while working; the ledger row is final."""

    source: str
    target: str
    dataset: str
    run: RunContext = field(default_factory=RunContext)
    transfer_id: uuid.UUID = field(default_factory=uuid.uuid4)
    started_at: datetime = field(default_factory=utcnow)
    rows_read: int = 0
    rows_written: int = 0
    rows_rejected: int = 0
    rows_changed: int = 0
    payload_sha256: str | None = None
    message: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    changes_count: int | None = None
    changes_sha256: str | None = None
    recorded: LedgerRow | None = None


@dataclass(frozen=True)
class LedgerRow:
    """A row as stored in ``audit.transfer``."""

    seq: int
    transfer_id: str
    status: Status
    prev_hash: str
    hash: str


def _normalise(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("ledger timestamps must be timezone-aware")
        return value.astimezone(UTC).isoformat(timespec="microseconds")
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def canonical_json(row: Mapping[str, Any]) -> str:
    """Canonical serialisation of the hashed fields: sorted keys, no spaces, UTC timestamps."""
    payload = {name: _normalise(row.get(name)) for name in HASHED_FIELDS}
    payload.update({name: row[name] for name in OPTIONAL_HASHED_FIELDS if row.get(name) is not None})
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def row_hash(prev_hash: str, row: Mapping[str, Any]) -> str:
    """The hash of a ledger row given its predecessor's hash."""
    return hashlib.sha256((prev_hash + "\n" + canonical_json(row)).encode("utf-8")).hexdigest()


def _json_safe(details: Mapping[str, Any]) -> dict[str, Any]:
    # Round-trip through JSON so what we hash is exactly what jsonb gives back on verify.
    result: dict[str, Any] = json.loads(json.dumps(details, default=str, sort_keys=True))
    return result


def append(conn: psycopg.Connection, transfer: Transfer, status: Status) -> LedgerRow:
    """Append ``transfer`` to the ledger inside the caller's transaction."""
    row: dict[str, Any] = {
        "transfer_id": transfer.transfer_id,
        "run_id": transfer.run.run_id,
        "dag_id": transfer.run.dag_id,
        "task_id": transfer.run.task_id,
        "try_number": transfer.run.try_number,
        "map_index": transfer.run.map_index,
        "source": transfer.source,
        "target": transfer.target,
        "dataset": transfer.dataset,
        "rows_read": int(transfer.rows_read),
        "rows_written": int(transfer.rows_written),
        "rows_rejected": int(transfer.rows_rejected),
        "rows_changed": int(transfer.rows_changed),
        "payload_sha256": transfer.payload_sha256,
        "status": status,
        "message": transfer.message,
        "details": _json_safe(transfer.details),
        "started_at": transfer.started_at,
        "finished_at": utcnow(),
        "changes_count": transfer.changes_count,
        "changes_sha256": transfer.changes_sha256,
    }
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_CHAIN_LOCK,))
    last = conn.execute("SELECT hash FROM audit.transfer ORDER BY seq DESC LIMIT 1").fetchone()
    prev = last[0] if last else GENESIS
    digest = row_hash(prev, row)
    params = dict(row, details=Jsonb(row["details"]), prev_hash=prev, hash=digest)
    columns = [*HASHED_FIELDS, *OPTIONAL_HASHED_FIELDS, "prev_hash", "hash"]
    placeholders = ", ".join(f"%({name})s" for name in columns)
    inserted = conn.execute(
        f"INSERT INTO audit.transfer ({', '.join(columns)}) VALUES ({placeholders}) RETURNING seq",
        params,
    ).fetchone()
    assert inserted is not None
    ledger_row = LedgerRow(
        seq=inserted[0], transfer_id=str(transfer.transfer_id), status=status, prev_hash=prev, hash=digest
    )
    transfer.recorded = ledger_row
    return ledger_row


def append_separately(dsn: str, transfer: Transfer, status: Status) -> LedgerRow:
    """Append on a connection of its own (for failures, after the work was rolled back)."""
    with connect(dsn) as conn:
        return append(conn, transfer, status)


@contextmanager
def recording(dsn: str, transfer: Transfer) -> Iterator[Transfer]:
    """Record ``transfer`` whatever happens inside the block.

    Inside the block, call :func:`append` with ``status="success"`` on the connection whose
    transaction holds the work. If the block ends without having done so, a success row is
    appended on its own connection. If the block raises, a failed row carrying the error is
    appended and the exception propagates.
    """
    try:
        yield transfer
    except BaseException as exc:
        if transfer.recorded is None:
            transfer.message = f"{type(exc).__name__}: {exc}"[:4000]
            # The change rows were rolled back with the work: the failed row must not claim them.
            transfer.changes_count = transfer.changes_sha256 = None
            append_separately(dsn, transfer, "failed")
        raise
    if transfer.recorded is None:
        append_separately(dsn, transfer, "success")


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of walking the chain."""

    ok: bool
    rows_checked: int
    head_seq: int | None
    head_hash: str | None
    first_broken_seq: int | None = None
    problem: str | None = None


def verify(conn: psycopg.Connection, *, expected_head: tuple[int, str] | None = None) -> VerifyResult:
    """Walk the whole chain in order; report the first row whose link or hash does not hold.

    ``expected_head`` (seq, hash) is a previously exported head: the chain must still contain it.
    """
    prev = GENESIS
    checked = 0
    head_seq: int | None = None
    seen_expected = expected_head is None
    columns = ", ".join(["seq", *HASHED_FIELDS, *OPTIONAL_HASHED_FIELDS, "prev_hash", "hash"])
    with conn.cursor(name="ledger_verify", row_factory=dict_row) as cur:
        cur.itersize = 5000
        cur.execute(f"SELECT {columns} FROM audit.transfer ORDER BY seq")
        for row in cur:
            checked += 1
            if row["prev_hash"] != prev:
                return VerifyResult(False, checked, head_seq, prev, row["seq"], "prev_hash does not link")
            if row_hash(prev, row) != row["hash"]:
                return VerifyResult(False, checked, head_seq, prev, row["seq"], "row content does not match hash")
            prev = row["hash"]
            head_seq = row["seq"]
            if expected_head is not None and expected_head == (row["seq"], row["hash"]):
                seen_expected = True
    if not seen_expected:
        assert expected_head is not None
        return VerifyResult(False, checked, head_seq, prev, expected_head[0], "exported head is no longer in the chain")
    return VerifyResult(True, checked, head_seq, prev if checked else None)
