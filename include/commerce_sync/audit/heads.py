"""Signed ledger heads exported outside the database.

The hash chain proves that no row was changed *unless* whoever changed it recomputed every later
hash, which a database superuser can do. A head (seq, hash) copied out of the database at a known
time closes that gap: a rewritten chain no longer contains it. Each head file is signed with
HMAC-SHA256 so a forged or edited head file is detected too.

The key is taken, in this order, from the environment variable ``COMMERCE_SYNC_LEDGER_KEY`` or the
Airflow Variable ``commerce_sync_ledger_key`` (in Airflow: ``AIRFLOW_VAR_COMMERCE_SYNC_LEDGER_KEY``
or a secrets backend). Without a key, nothing is exported. Store the head files where the hub's
database administrators cannot write (another host, object storage with retention lock).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from commerce_sync.audit import ledger
from commerce_sync.audit.ledger import KEY_ENV, KEY_VARIABLE, LedgerKeyMissing, ledger_key
from commerce_sync.errors import CommerceSyncError

__all__ = [
    "HEADS_DIR_ENV",
    "KEY_ENV",
    "KEY_VARIABLE",
    "HeadProblem",
    "HeadsVerification",
    "LedgerKeyMissing",
    "export_head",
    "ledger_key",
    "verify_against_heads",
]

HEADS_DIR_ENV = "COMMERCE_SYNC_LEDGER_HEADS_DIR"
SIGNED_FIELDS = ("seq", "hash", "rows", "exported_at")
_FILE_GLOB = "ledger-head-*.json"


def _signature(fields: dict[str, Any], key: bytes) -> str:
    message = json.dumps({name: fields[name] for name in SIGNED_FIELDS}, sort_keys=True, separators=(",", ":"))
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).hexdigest()


def export_head(conn: psycopg.Connection, target_dir: Path, key: bytes) -> Path:
    """Write the current chain head to ``target_dir/ledger-head-<seq>-<timestamp>.json``, signed.

    The head is taken after the whole chain verified: exporting the head of a broken chain would
    vouch for it.

    Args:
        conn: the hub database.
        target_dir: where head files are kept (created if missing).
        key: the HMAC-SHA256 key (see :func:`ledger_key`).

    Returns:
        The path of the file written.

    Raises:
        LedgerKeyMissing: ``key`` is empty.
        CommerceSyncError: the ledger is empty or its chain does not verify.
    """
    if not key:
        raise LedgerKeyMissing("refusing to export a ledger head without a signing key")
    result = ledger.verify(conn, key=key)
    if not result.ok:
        raise CommerceSyncError(f"ledger broken at seq {result.first_broken_seq} ({result.problem}); no head exported")
    if result.head_seq is None or result.head_hash is None:
        raise CommerceSyncError("the ledger is empty; nothing to export")
    now = datetime.now(UTC)
    fields: dict[str, Any] = {
        "seq": result.head_seq,
        "hash": result.head_hash,
        "rows": result.rows_checked,
        "exported_at": now.isoformat(timespec="microseconds"),
    }
    document = {**fields, "algorithm": "HMAC-SHA256", "signature": _signature(fields, key)}
    target_dir.mkdir(parents=True, exist_ok=True)
    path = target_dir / f"ledger-head-{result.head_seq:012d}-{now.strftime('%Y%m%dT%H%M%S%fZ')}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


@dataclass(frozen=True)
class HeadProblem:
    """One exported head file that does not hold."""

    file: str
    problem: str
    seq: int | None = None


@dataclass
class HeadsVerification:
    """Outcome of checking the chain against every exported head."""

    ok: bool
    heads_checked: int
    chain: ledger.VerifyResult | None
    problems: list[HeadProblem] = field(default_factory=list)
    anchored_seq: int | None = None
    """The newest exported head that still holds: rows up to it are anchored outside the database."""
    not_anchored_rows: int = 0
    """Rows after ``anchored_seq`` (all rows without a valid head): not yet anchored."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (for the CLI and task return values)."""
        return {
            "ok": self.ok,
            "heads_checked": self.heads_checked,
            "anchored_seq": self.anchored_seq,
            "not_anchored_rows": self.not_anchored_rows,
            "chain": self.chain.as_dict() if self.chain else None,
            "problems": [p.__dict__ for p in self.problems],
        }


def _chain_hashes(conn: psycopg.Connection, seqs: list[int]) -> dict[int, str]:
    rows = conn.execute("SELECT seq, hash FROM audit.transfer WHERE seq = ANY(%s)", (seqs,)).fetchall()
    return {int(seq): str(digest) for seq, digest in rows}


def verify_against_heads(conn: psycopg.Connection, target_dir: Path, key: bytes) -> HeadsVerification:
    """Verify the chain internally and against every head file in ``target_dir``.

    A head file fails when it is unreadable, its signature does not match (forged or edited), or
    its (seq, hash) is no longer in the chain (rows rewritten or removed, even with every later
    hash recomputed).
    """
    if not key:
        raise LedgerKeyMissing("cannot check head signatures without the signing key")
    chain = ledger.verify(conn, key=key)
    problems: list[HeadProblem] = []
    heads: dict[str, tuple[int, str]] = {}
    files = sorted(target_dir.glob(_FILE_GLOB)) if target_dir.is_dir() else []
    for path in files:
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
            fields = {name: document[name] for name in SIGNED_FIELDS}
            signature = str(document["signature"])
            seq, digest = int(fields["seq"]), str(fields["hash"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            problems.append(HeadProblem(path.name, f"unreadable head file: {exc}"))
            continue
        if not hmac.compare_digest(signature, _signature(fields, key)):
            problems.append(HeadProblem(path.name, "signature does not match (forged or edited head file)", seq))
            continue
        heads[path.name] = (seq, digest)
    stored = _chain_hashes(conn, sorted({seq for seq, _ in heads.values()}))
    anchored_seq: int | None = None
    for name, (seq, digest) in heads.items():
        if stored.get(seq) == digest:
            anchored_seq = max(seq, anchored_seq or seq)
        if seq not in stored:
            problems.append(HeadProblem(name, f"exported head seq {seq} is no longer in the chain", seq))
        elif stored[seq] != digest:
            problems.append(
                HeadProblem(
                    name,
                    f"chain was rewritten: seq {seq} now hashes {stored[seq][:12]}…, head says {digest[:12]}…",
                    seq,
                )
            )
    if not chain.ok:
        problems.insert(
            0, HeadProblem("(chain)", f"{chain.problem} at seq {chain.first_broken_seq}", chain.first_broken_seq)
        )
    after = conn.execute("SELECT count(*) FROM audit.transfer WHERE seq > %s", (anchored_seq or 0,)).fetchone()
    return HeadsVerification(
        ok=not problems,
        heads_checked=len(files),
        chain=chain,
        problems=problems,
        anchored_seq=anchored_seq,
        not_anchored_rows=int(after[0]) if after else 0,
    )
