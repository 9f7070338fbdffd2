"""Channel-neutral outbox mechanics shared by every marketplace publisher.

Rows are claimed with ``FOR UPDATE SKIP LOCKED`` inside the transaction that sends them and
records the channel's answer, so two publishers never send the same row and a crash between the
channel's answer and the commit leaves the rows pending (the next run re-sends them with the same
idempotency key). Before planning, older pending versions of a (SKU, field) — and any pending row
older than a version already sent — become ``superseded``: an older update never overwrites a newer one.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.types.json import Jsonb


def supersede(conn: psycopg.Connection, channel_id: str) -> int:
    """Mark pending rows superseded when a newer version (or a later row of the same version) exists."""
    # Older pending versions of the same (sku, field) would only overwrite the newer value.
    return conn.execute(
        "UPDATE hub.outbox o SET status = 'superseded', error = 'superseded by offer_version ' || "
        "  (SELECT max(n.offer_version) FROM hub.outbox n "
        "   WHERE n.channel = o.channel AND n.sku = o.sku AND n.field = o.field) "
        "WHERE o.channel = %s AND o.status = 'pending' AND EXISTS (SELECT 1 FROM hub.outbox n "
        "  WHERE n.channel = o.channel AND n.sku = o.sku AND n.field = o.field "
        "  AND (n.offer_version > o.offer_version OR (n.offer_version = o.offer_version AND n.id > o.id)))",
        (channel_id,),
    ).rowcount


def lock_pending(conn: psycopg.Connection, ids: list[int]) -> set[int]:
    """Lock those of ``ids`` that are still pending and not held by another publisher; return them."""
    locked = conn.execute(
        "SELECT id FROM hub.outbox WHERE id = ANY(%s) AND status = 'pending' ORDER BY id FOR UPDATE SKIP LOCKED",
        (ids,),
    ).fetchall()
    return {row[0] for row in locked}


def record_outcomes(
    conn: psycopg.Connection,
    outcomes: list[tuple[int, str, Any, str | None]],
    request_id: str | None,
    transfer_id: uuid.UUID,
) -> None:
    """Set status, response and error of outbox rows (id, status, response, error) in one statement."""
    conn.execute(
        "UPDATE hub.outbox o SET status = v.status, response = v.response, error = v.error, "
        "request_id = %s, attempts = o.attempts + 1, sent_transfer_id = %s, "
        "sent_at = CASE WHEN v.status = 'sent' THEN now() ELSE o.sent_at END "
        "FROM unnest(%s::bigint[], %s::text[], %s::jsonb[], %s::text[]) AS v(id, status, response, error) "
        "WHERE o.id = v.id",
        (
            request_id,
            transfer_id,
            [o[0] for o in outcomes],
            [o[1] for o in outcomes],
            [Jsonb(o[2]) if o[2] is not None else None for o in outcomes],
            [o[3] for o in outcomes],
        ),
    )


def mark_published(conn: psycopg.Connection, channel_id: str, skus: list[str]) -> None:
    """Advance ``published_version`` to the newest version whose outbox rows are all settled.

    A version counts as published when it was sent and no row up to it is still pending, and
    every failed row up to it was overtaken by a later sent row of the same field (a newer version,
    or the same version sent again later, as the read-back re-queues a value the channel refused).
    """
    conn.execute(
        "UPDATE hub.channel_offer co SET published_version = v.version, published_at = now() "
        "FROM (SELECT sku, max(offer_version) AS version FROM hub.outbox "
        "      WHERE channel = %(channel)s AND sku = ANY(%(skus)s) AND status = 'sent' GROUP BY sku) v "
        "WHERE co.channel = %(channel)s AND co.sku = v.sku AND v.version > co.published_version "
        "AND NOT EXISTS (SELECT 1 FROM hub.outbox p WHERE p.channel = co.channel AND p.sku = co.sku "
        "  AND p.offer_version <= v.version AND (p.status = 'pending' OR (p.status = 'failed' "
        "  AND NOT EXISTS (SELECT 1 FROM hub.outbox s WHERE s.channel = p.channel AND s.sku = p.sku "
        "    AND s.field = p.field AND s.status = 'sent' "
        "    AND (s.offer_version > p.offer_version OR (s.offer_version = p.offer_version AND s.id > p.id)) "
        "    AND s.offer_version <= v.version))))",
        {"channel": channel_id, "skus": skus},
    )


@dataclass(frozen=True)
class Backlog:
    """A channel's unsent work."""

    channel: str
    pending: int
    oldest_age_seconds: float | None
    failed_last_day: int


def backlog(conn: psycopg.Connection, channel_id: str) -> Backlog:
    """Pending outbox rows, the age of the oldest, and rows that failed in the last 24 h."""
    # Two partial indexes (pending, failed): the cost follows the backlog, not the channel's history.
    row = conn.execute(
        "SELECT p.n, p.age, f.n FROM "
        "(SELECT count(*) AS n, extract(epoch FROM now() - min(created_at)) AS age "
        " FROM hub.outbox WHERE channel = %(channel)s AND status = 'pending') AS p, "
        "(SELECT count(*) AS n FROM hub.outbox "
        " WHERE channel = %(channel)s AND status = 'failed' AND created_at > now() - interval '1 day') AS f",
        {"channel": channel_id},
    ).fetchone()
    assert row is not None
    age = None if row[1] is None else round(float(row[1]), 1)
    return Backlog(channel_id, int(row[0]), age, int(row[2]))
