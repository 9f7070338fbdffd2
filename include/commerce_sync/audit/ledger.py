"""The transfer ledger: one append-only, hash-chained row per transfer, successful or not.

A transfer that changes the hub appends its ``success`` row in the same database transaction as
the change, so the hub never holds data without the ledger row that explains it. A transfer that
fails appends a ``failed`` row on a fresh connection (the work's own transaction was rolled back).

Each row's ``hash`` is ``sha256(prev_hash + "\\n" + canonical_json(row))``; the chain starts at
``GENESIS``. :func:`verify` walks the chain and reports the first broken link.

A transfer that records row-level changes (``audit.change``) carries their count and digest
(``changes_count``, ``changes_sha256``, see :mod:`commerce_sync.audit.changes`). These fields join
the canonical JSON only when set, so rows written before they existed hash (and verify) as before.
:func:`verify` recomputes every transfer's count and digest from ``audit.change`` with the writers'
own SQL, and the database refuses change rows for a transfer whose ledger row is written
(migration 0012), so neither an edited change value nor a late, forged change row goes unnoticed.

Each row is keyed: ``mac = HMAC-SHA256(ledger key, "commerce-sync ledger row\n" + hash)``, with the
key kept outside the database (:func:`ledger_key`, the key the exported heads are signed with).
Whoever can write to the database but lacks the key (the application role, a superuser) can
append or rewrite rows with a correct hash, but not with a correct ``mac``. Rows written before
keying (``mac`` NULL) stay valid as long as they all precede the first keyed row; :func:`verify`
says how many there are and refuses an unkeyed row after a keyed one.

Without a key, :func:`append` refuses to write (:class:`LedgerKeyMissing` names the variable). A
throwaway development database may opt out with ``COMMERCE_SYNC_LEDGER_ALLOW_UNKEYED=1``: its rows
are then written unkeyed, and once a keyed row follows them any later unkeyed row breaks
verification, so never set it where the ledger matters.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from commerce_sync.audit import changes
from commerce_sync.db import connect
from commerce_sync.errors import ConfigError

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

KEY_ENV = "COMMERCE_SYNC_LEDGER_KEY"
KEY_VARIABLE = "commerce_sync_ledger_key"
ALLOW_UNKEYED_ENV = "COMMERCE_SYNC_LEDGER_ALLOW_UNKEYED"
_MAC_PREFIX = b"commerce-sync ledger row\n"


class LedgerKeyMissing(ConfigError):
    """No ledger key is configured: rows are not written unkeyed, heads are never exported unsigned."""


def ledger_key() -> bytes:
    """The HMAC key: ``COMMERCE_SYNC_LEDGER_KEY``, else the Airflow Variable ``commerce_sync_ledger_key``.

    Raises:
        LedgerKeyMissing: neither is set (or Airflow is not importable and the variable is unset).
    """
    value = os.environ.get(KEY_ENV)
    if not value:
        try:
            from airflow.sdk import Variable

            value = Variable.get(KEY_VARIABLE, default=None)
        except Exception:  # outside a task context the SDK may not reach the API server
            value = None
    if not value:
        raise LedgerKeyMissing(
            f"no ledger key: set the environment variable {KEY_ENV} or the Airflow Variable "
            f"{KEY_VARIABLE} (keep it out of the hub database)"
        )
    return value.encode("utf-8")


def row_mac(key: bytes, digest: str) -> str:
    """The keyed MAC of a ledger row, given its ``hash`` (which covers its content and predecessor)."""
    return hmac.new(key, _MAC_PREFIX + digest.encode("ascii"), hashlib.sha256).hexdigest()


def _append_key() -> bytes | None:
    """The key rows are written with; None only where unkeyed rows were explicitly allowed (dev)."""
    try:
        return ledger_key()
    except LedgerKeyMissing as exc:
        if os.environ.get(ALLOW_UNKEYED_ENV) == "1":
            return None
        raise LedgerKeyMissing(
            f"{exc}; refusing to append an unkeyed ledger row (a throwaway development database may set "
            f"{ALLOW_UNKEYED_ENV}=1)"
        ) from exc


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
    key = _append_key()
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_CHAIN_LOCK,))
    last = conn.execute("SELECT hash FROM audit.transfer ORDER BY seq DESC LIMIT 1").fetchone()
    prev = last[0] if last else GENESIS
    digest = row_hash(prev, row)
    mac = row_mac(key, digest) if key is not None else None
    params = dict(row, details=Jsonb(row["details"]), prev_hash=prev, hash=digest, mac=mac)
    columns = [*HASHED_FIELDS, *OPTIONAL_HASHED_FIELDS, "prev_hash", "hash", "mac"]
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
class ChangeMismatch:
    """A transfer whose ledger row and ``audit.change`` rows disagree."""

    seq: int | None  # None: change rows of a transfer that has no ledger row
    transfer_id: str
    expected_count: int | None  # what the ledger row says (None: it claims no change rows)
    expected_sha256: str | None
    found_count: int  # what audit.change holds now
    found_sha256: str

    def describe(self) -> str:
        """One sentence an operator reads."""
        where = (
            f"seq {self.seq}, transfer {self.transfer_id}"
            if self.seq is not None
            else (f"transfer {self.transfer_id} (no ledger row)")
        )
        expected = (
            "no change rows"
            if self.expected_count is None
            else f"{self.expected_count} change rows, sha256 {self.expected_sha256}"
        )
        found = f"{self.found_count} change rows, sha256 {self.found_sha256}"
        return f"change rows do not match the ledger at {where}: expected {expected}, found {found}"


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of walking the chain and recomputing every transfer's change digest.

    ``first_broken_seq``/``problem`` name the first problem (a broken link, hash or MAC first, else
    the first change mismatch). ``legacy_rows`` were written before keying (no MAC) and all precede
    ``keyed_rows``; ``not_anchored_rows`` follow the exported head given as ``expected_head`` (all
    rows when none was given).
    """

    ok: bool
    rows_checked: int
    head_seq: int | None
    head_hash: str | None
    first_broken_seq: int | None = None
    problem: str | None = None
    legacy_rows: int = 0
    keyed_rows: int = 0
    transfers_with_changes: int = 0
    change_mismatches: int = 0
    first_change_mismatch: ChangeMismatch | None = None
    not_anchored_rows: int = 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (for the CLI and task return values)."""
        data = dict(self.__dict__)
        data["first_change_mismatch"] = self.first_change_mismatch.__dict__ if self.first_change_mismatch else None
        return data


_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()

# Every transfer whose recorded change count/digest differs from what audit.change holds, with the
# writers' own fragments (ROW_TEXT, DIGEST), plus change rows of transfers without a ledger row.
# Uncommitted work is invisible here, so a transfer being written is never reported.
_CHANGE_MISMATCHES = """
SELECT t.seq, coalesce(t.transfer_id, d.transfer_id)::text, t.changes_count, t.changes_sha256,
       coalesce(d.n, 0), d.sha
  FROM audit.transfer AS t
  FULL JOIN (SELECT r.transfer_id, {digest}
               FROM (SELECT c.transfer_id, {row_text} AS row_text FROM audit.change AS c) AS r
              GROUP BY r.transfer_id) AS d (transfer_id, n, sha)
    ON d.transfer_id = t.transfer_id
 WHERE t.seq IS NULL
    OR (t.changes_count IS NULL AND d.n IS NOT NULL)
    OR (t.changes_count IS NOT NULL
        AND (t.changes_count <> coalesce(d.n, 0) OR t.changes_sha256 IS DISTINCT FROM coalesce(d.sha, %s)))
 ORDER BY t.seq NULLS LAST, 2
"""


def change_mismatches(conn: psycopg.Connection) -> tuple[int, list[ChangeMismatch]]:
    """(transfers carrying a change digest, every mismatch in ledger order) from ``audit.change``."""
    query = sql.SQL(_CHANGE_MISMATCHES).format(digest=changes.DIGEST, row_text=changes.ROW_TEXT)
    with changes.sort_memory(conn):
        rows = conn.execute(query, (_EMPTY_SHA256,)).fetchall()
    counted = conn.execute("SELECT count(*) FROM audit.transfer WHERE changes_count IS NOT NULL").fetchone()
    mismatches = [
        ChangeMismatch(
            seq=seq,
            transfer_id=transfer_id,
            expected_count=expected_count,
            expected_sha256=expected_sha,
            found_count=int(found_count),
            found_sha256=found_sha if found_sha is not None else _EMPTY_SHA256,  # no rows: digest of ''
        )
        for seq, transfer_id, expected_count, expected_sha, found_count, found_sha in rows
    ]
    return int(counted[0]) if counted else 0, mismatches


def _verify_key(key: bytes | None) -> tuple[bytes | None, str | None]:
    if key:
        return key, None
    try:
        return ledger_key(), None
    except LedgerKeyMissing as exc:
        return None, str(exc)


def verify(
    conn: psycopg.Connection, *, expected_head: tuple[int, str] | None = None, key: bytes | None = None
) -> VerifyResult:
    """Walk the whole chain in order and recompute every transfer's change digest.

    Reports the first row whose link, hash or MAC does not hold, else the first transfer whose
    ``audit.change`` rows no longer match its recorded count and digest.

    Args:
        conn: the hub database.
        expected_head: (seq, hash) of a previously exported head: the chain must still contain it;
            rows after it are counted as not yet anchored.
        key: the ledger key; looked up with :func:`ledger_key` when None. Without one, keyed rows
            cannot be checked and the result says so (naming the variable).
    """
    key, key_problem = _verify_key(key)
    prev = GENESIS
    checked = legacy = keyed = 0
    head_seq: int | None = None
    anchored_at: int | None = None
    seen_expected = expected_head is None
    broken: tuple[int, str] | None = None
    columns = ", ".join(["seq", *HASHED_FIELDS, *OPTIONAL_HASHED_FIELDS, "prev_hash", "hash", "mac"])
    with conn.cursor(name="ledger_verify", row_factory=dict_row) as cur:
        cur.itersize = 5000
        cur.execute(f"SELECT {columns} FROM audit.transfer ORDER BY seq")
        for row in cur:
            checked += 1
            if broken is not None:
                continue  # count the rows; the first problem is reported
            if row["prev_hash"] != prev:
                broken = (row["seq"], "prev_hash does not link")
            elif row_hash(prev, row) != row["hash"]:
                broken = (row["seq"], "row content does not match hash")
            elif row["mac"] is None:
                if keyed:
                    broken = (row["seq"], "unkeyed row after keyed rows: appended without the ledger key")
                else:
                    legacy += 1
            elif key is None:
                broken = (row["seq"], f"cannot check the row MACs: {key_problem}")
            elif not hmac.compare_digest(row["mac"], row_mac(key, row["hash"])):
                broken = (row["seq"], "MAC does not match: row written or rewritten without the ledger key")
            else:
                keyed += 1
            if broken is not None:
                continue
            prev = row["hash"]
            head_seq = row["seq"]
            if expected_head is not None and expected_head == (row["seq"], row["hash"]):
                seen_expected = True
                anchored_at = checked
    with_changes, mismatches = change_mismatches(conn)
    first_mismatch = mismatches[0] if mismatches else None
    facts: dict[str, Any] = {
        "legacy_rows": legacy,
        "keyed_rows": keyed,
        "transfers_with_changes": with_changes,
        "change_mismatches": len(mismatches),
        "first_change_mismatch": first_mismatch,
        "not_anchored_rows": checked - (anchored_at or 0),
    }
    if broken is not None:
        return VerifyResult(False, checked, head_seq, prev, broken[0], broken[1], **facts)
    if not seen_expected:
        assert expected_head is not None
        return VerifyResult(
            False, checked, head_seq, prev, expected_head[0], "exported head is no longer in the chain", **facts
        )
    if first_mismatch is not None:
        return VerifyResult(False, checked, head_seq, prev, first_mismatch.seq, first_mismatch.describe(), **facts)
    return VerifyResult(True, checked, head_seq, prev if checked else None, **facts)
