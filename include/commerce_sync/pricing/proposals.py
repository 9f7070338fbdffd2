"""Held price moves: the summary a person approves or rejects, and applying the decision.

:mod:`commerce_sync.pricing.compute` holds large price moves in ``hub.price_proposal_item`` when a
channel's change cap is exceeded. The pricing DAG then shows :func:`pending_summary` (how many SKUs,
the largest moves, the path of a CSV with every proposed change) on an Airflow approval task, and
:func:`decide_proposal` applies the answer:

- **approve**: every pending item whose live price is still the one it was proposed against is
  applied (offer, outbox row, ``audit.change``, ledger row, one transaction); items whose live price
  moved meanwhile are marked ``stale`` (the next computation proposes them again if still needed);
- **reject**: nothing of the held set is applied; the items stay ``rejected`` so the same move (same
  price hash) is not proposed again until its inputs change.

Both write the decision, who made it and when to the ledger. Deciding an already decided proposal
does nothing (the approval task may be retried).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from psycopg import sql

from commerce_sync.audit import changes, ledger
from commerce_sync.csv_export import write_csv
from commerce_sync.db import connect
from commerce_sync.pricing.compute import (
    DATASET,
    lock_channel,
    row_hash,
    write_field_changes,
)
from commerce_sync.pricing.sqlfiles import sql_file

CSV_HEADER = (
    "proposal_id",
    "channel",
    "sku",
    "name",
    "old_price",
    "new_price",
    "currency",
    "move_pct",
    "cost",
    "floor_price",
    "floor_applied",
    "rule_id",
    "rule_version",
    "rule_level",
    "cost_source",
)


@cache
def held_change_statement() -> sql.Composed:
    """``sql/create_held_change.sql``: the proposed price part (alias i) with the live stock (alias o)."""
    return sql_file("create_held_change").format(row_hash=row_hash(sql.Identifier("i", "price_hash"), "o"))


@dataclass(frozen=True)
class ProposalSummary:
    """What is waiting for a decision, across channels."""

    proposal_ids: list[str]
    items: int
    by_channel: dict[str, int]
    largest: list[dict[str, Any]]
    csv_path: str

    def markdown(self) -> str:
        """The body of the approval page."""
        lines = [
            f"**{self.items} price moves** are held because they exceed the change cap "
            f"({', '.join(f'{c}: {n}' for c, n in sorted(self.by_channel.items()))}).",
            "",
            "Largest moves:",
            "",
            "| channel | SKU | old | new | move |",
            "|---|---|---|---|---|",
            *(
                f"| {m['channel']} | {m['sku']} | {m['old_price']} | {m['new_price']} {m['currency']} | "
                f"{m['move_pct']}% |"
                for m in self.largest
            ),
            "",
            f"Every proposed change: `{self.csv_path}` (CSV).",
            "",
            "**Approve** publishes these prices (the stock of these offers is already live); **Reject** keeps "
            "the live prices, and the same moves are not proposed again until their inputs change.",
            f"Proposals: {', '.join(self.proposal_ids)}",
        ]
        return "\n".join(lines)


def pending_summary(dsn: str, csv_dir: Path, *, top: int = 10) -> ProposalSummary | None:
    """Write the CSV of every pending held move and summarise them; None if nothing is pending."""
    with connect(dsn) as conn:
        rows = conn.execute(sql_file("pending_proposal_items")).fetchall()
    if not rows:
        return None
    ids = sorted({r[0] for r in rows})
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = csv_dir / f"price-proposals-{stamp}-{ids[0][:8]}.csv"
    write_csv(path, CSV_HEADER, rows)
    by_channel: dict[str, int] = {}
    for r in rows:
        by_channel[r[1]] = by_channel.get(r[1], 0) + 1
    largest = [
        {
            "channel": r[1],
            "sku": r[2],
            "old_price": str(r[4]),
            "new_price": str(r[5]),
            "currency": r[6],
            "move_pct": str(r[7]),
        }
        for r in rows[:top]
    ]
    return ProposalSummary(ids, len(rows), by_channel, largest, str(path))


@dataclass(frozen=True)
class ProposalDecision:
    """The outcome of one decision."""

    proposal_id: str
    channel: str
    decision: str
    applied: int = 0
    stale: int = 0
    rejected: int = 0
    transfer_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


def decide_proposal(
    dsn: str,
    proposal_id: str,
    *,
    approved: bool,
    by: str,
    at: datetime,
    run: ledger.RunContext,
    outbox_channels: frozenset[str] | None = None,
) -> ProposalDecision:
    """Apply (approve) or drop (reject) one pending proposal; a decided one is left as it is.

    Args:
        outbox_channels: ids of channels published through the outbox (default: every channel).
    """
    with connect(dsn) as conn:
        row = conn.execute(sql_file("proposal_status"), {"proposal_id": proposal_id}).fetchone()
        if row is None:
            raise LookupError(f"price proposal {proposal_id} does not exist (hub.price_proposal)")
        channel, status = row
        if status != "pending":
            return ProposalDecision(proposal_id, channel, f"already {status}")
    decision = "approved" if approved else "rejected"
    transfer = ledger.Transfer(source=f"approval:{by}", target=f"channel:{channel}", dataset=DATASET, run=run)
    tid = str(transfer.transfer_id)
    params = {
        "proposal_id": proposal_id,
        "transfer_id": tid,
        "outbox": outbox_channels is None or channel in outbox_channels,
    }
    applied = stale = rejected = 0
    with ledger.recording(dsn, transfer), connect(dsn) as conn:
        lock_channel(conn, channel)
        status_row = conn.execute(sql_file("lock_proposal"), params).fetchone()
        if not status_row or status_row[0] != "pending":  # decided concurrently
            conn.rollback()
            return ProposalDecision(proposal_id, channel, f"already {status_row[0] if status_row else 'gone'}")
        if approved:
            conn.execute(held_change_statement(), params)
            applied = conn.execute(sql_file("apply_held_prices"), params).rowcount
            write_field_changes(conn, transfer, outbox=bool(params["outbox"]))
            conn.execute(sql_file("mark_items_applied"), params)
            stale = conn.execute(sql_file("close_pending_items"), {**params, "status": "stale"}).rowcount
        else:
            rejected = conn.execute(sql_file("close_pending_items"), {**params, "status": "rejected"}).rowcount
        conn.execute(sql_file("record_decision"), {**params, "decision": decision, "by": by, "at": at})
        transfer.rows_read = applied + stale + rejected
        transfer.rows_written = transfer.rows_changed = applied
        transfer.details = {
            "approval": {
                "proposal_id": proposal_id,
                "decision": decision,
                "decided_by": by,
                "decided_at": at.isoformat(),
                "applied": applied,
                "stale": stale,
                "rejected": rejected,
            }
        }
        if not approved:  # no change rows: the count (0) and digest of none
            changes.summarise(conn, transfer)
        ledger.append(conn, transfer, "success")
    return ProposalDecision(proposal_id, channel, decision, applied, stale, rejected, tid, transfer.details)


@dataclass(frozen=True)
class ApprovalAnswer:
    """A person's answer to the approval task, about the proposals it showed."""

    approved: bool
    by: str
    at: datetime
    proposal_ids: list[str]

    @classmethod
    def from_hitl(cls, response: Mapping[str, Any], proposal_ids: list[str]) -> ApprovalAnswer:
        """From the ApprovalOperator's XCom (``chosen_options``, ``responded_by_user``, ``responded_at``)."""
        user = response.get("responded_by_user")
        if isinstance(user, Mapping):
            by = str(user.get("name") or user.get("id") or "unknown")
        else:
            by = str(user or "unknown")
        at = response.get("responded_at")
        if isinstance(at, str):
            at = datetime.fromisoformat(at)
        if not isinstance(at, datetime):
            at = datetime.now(UTC)
        return cls("Approve" in (response.get("chosen_options") or []), by, at, list(proposal_ids))


def apply_approval(
    dsn: str, answer: ApprovalAnswer, run: ledger.RunContext, outbox_channels: frozenset[str] | None = None
) -> list[ProposalDecision]:
    """Decide every proposal the answer was about (see :func:`decide_proposal`)."""
    return [
        decide_proposal(
            dsn, pid, approved=answer.approved, by=answer.by, at=answer.at, run=run, outbox_channels=outbox_channels
        )
        for pid in answer.proposal_ids
    ]
