"""Read-back reconciliation: does the marketplace show what the hub last published?

The channel's current offers (read through its client) are compared with the hub's last
published state: per (SKU, field) the payload of the newest outbox row the channel received, whether
it applied it (``sent``) or refused it item by item (``failed`` with the channel's answer), so a
per-item refusal is retried by the read-back. SKUs with a
pending outbox row are skipped (a change is in flight). Each difference — an offer edited
directly on the marketplace, or a change the channel silently did not apply — is logged, written
to a formula-injection-safe CSV report, recorded in ``hub.channel_reconciliation`` and counted in
the ledger, then handled by the channel's ``reconcile`` policy:

* ``hub_wins``: a new outbox row with a fresh idempotency key re-sends the hub's value;
* ``channel_wins``: the hub records the channel's value as published (a ``sent`` outbox row
  marked ``adopted_from_channel``), so it becomes the baseline and is not re-sent;
* ``report_only``: nothing is changed.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from psycopg.types.json import Jsonb

from commerce_sync.audit import ledger
from commerce_sync.config import Channel
from commerce_sync.csv_export import write_csv
from commerce_sync.db import connect

log = logging.getLogger(__name__)

CSV_HEADER = ("channel", "sku", "field", "hub_value", "channel_value", "action")


@dataclass(frozen=True)
class ChannelOffer:
    """What the channel shows for one SKU."""

    sku: str
    price: Decimal | None
    currency: str | None
    quantity: int | None


@dataclass(frozen=True)
class Difference:
    """One (SKU, field) where the channel differs from the hub's last published value."""

    sku: str
    field: str
    hub_value: dict[str, Any] | None
    channel_value: dict[str, Any] | None


@dataclass
class ReconcileResult:
    """What one reconciliation found and did."""

    channel: str
    offers_read: int = 0
    compared: int = 0
    in_flight: int = 0
    differences: int = 0
    requeued: int = 0
    adopted: int = 0
    report: str | None = None
    sample: list[str] = field(default_factory=list)


# The newest value the hub sent per (SKU, field): applied ('sent'), or refused by the channel item by item
# ('failed' with the channel's answer). A refused value is what the hub still wants, so the read-back finds
# the difference and hub_wins sends it again. Rows the hub itself refused (pre-publish check, no offer id)
# carry no answer and are not compared: they were never sent.
_PUBLISHED = """
SELECT DISTINCT ON (sku, field) sku, field, payload, offer_version
FROM hub.outbox WHERE channel = %s AND (status = 'sent' OR (status = 'failed' AND response IS NOT NULL))
ORDER BY sku, field, offer_version DESC, id DESC
"""
_IN_FLIGHT = "SELECT DISTINCT sku FROM hub.outbox WHERE channel = %s AND status = 'pending'"


def compare(
    published: dict[tuple[str, str], dict[str, Any]], offers: dict[str, ChannelOffer], in_flight: set[str]
) -> list[Difference]:
    """Differences between the hub's published payloads and the channel's offers (sorted by SKU, field)."""
    found: list[Difference] = []
    for (sku, field_name), payload in sorted(published.items()):
        if sku in in_flight:
            continue
        offer = offers.get(sku)
        if offer is None:
            found.append(Difference(sku, "missing", payload, None))
            continue
        if field_name == "price":
            shown = {"amount": f"{offer.price:.2f}" if offer.price is not None else None, "currency": offer.currency}
            expected = Decimal(str(payload.get("amount"))).quantize(Decimal("0.01"))
            if (
                offer.price is None
                or offer.price.quantize(Decimal("0.01")) != expected
                or (offer.currency != payload.get("currency"))
            ):
                found.append(Difference(sku, "price", payload, shown))
        elif field_name == "quantity" and offer.quantity != payload.get("value"):
            found.append(Difference(sku, "quantity", payload, {"value": offer.quantity}))
    # A SKU missing from the channel is one difference, not one per field.
    seen: set[tuple[str, str]] = set()
    unique = []
    for diff in found:
        if (diff.sku, diff.field) not in seen:
            seen.add((diff.sku, diff.field))
            unique.append(diff)
    return unique


def reconcile(
    dsn: str,
    channel: Channel,
    offers: Iterable[ChannelOffer],
    transfer: ledger.Transfer,
    report_dir: Path,
) -> ReconcileResult:
    """Compare ``offers`` (the channel's current state) with the hub and act per ``channel.reconcile``.

    The caller records the transfer (``ledger.recording``); this fills it and appends the success row
    in the transaction that writes the reconciliation rows and outbox rows.
    """
    result = ReconcileResult(channel.id)
    shown: dict[str, ChannelOffer] = {}
    for offer in offers:
        result.offers_read += 1
        shown[offer.sku] = offer
    with connect(dsn) as conn:
        published = {(sku, f): payload for sku, f, payload, _v in conn.execute(_PUBLISHED, (channel.id,))}
        in_flight = {sku for (sku,) in conn.execute(_IN_FLIGHT, (channel.id,))}
        differences = compare(published, shown, in_flight)
        result.compared = len({sku for sku, _f in published} - in_flight)
        result.in_flight = len(in_flight)
        result.differences = len(differences)
        versions: dict[str, int] = {
            sku: version
            for sku, version in conn.execute(
                "SELECT sku, version FROM hub.channel_offer WHERE channel = %s AND sku = ANY(%s)",
                (channel.id, sorted({d.sku for d in differences})),
            )
        }
        rows = []
        for diff in differences:
            action, outbox_id = _act(conn, channel, diff, versions.get(diff.sku), transfer)
            result.requeued += action == "requeued"
            result.adopted += action == "adopted"
            conn.execute(
                "INSERT INTO hub.channel_reconciliation (channel, sku, field, hub_value, channel_value, action, "
                "outbox_id, transfer_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    channel.id,
                    diff.sku,
                    diff.field,
                    Jsonb(diff.hub_value),
                    Jsonb(diff.channel_value),
                    action,
                    outbox_id,
                    transfer.transfer_id,
                ),
            )
            rows.append((channel.id, diff.sku, diff.field, _show(diff.hub_value), _show(diff.channel_value), action))
        digest = hashlib.sha256("\n".join("\t".join(map(str, row)) for row in rows).encode()).hexdigest()
        if rows:
            stamp = transfer.started_at.strftime("%Y%m%dT%H%M%SZ")
            report = report_dir / f"reconcile_{channel.id}_{stamp}.csv"
            write_csv(report, CSV_HEADER, rows)
            result.report = str(report)
            result.sample = [f"{r[1]} {r[2]}: hub {r[3]} / channel {r[4]}" for r in rows[:20]]
            log.warning(
                "%s: %d difference(s) between the hub's published offers and the channel (policy %s; "
                "%d re-queued, %d adopted); report %s. First: %s",
                channel.id,
                len(rows),
                channel.reconcile,
                result.requeued,
                result.adopted,
                report,
                "; ".join(result.sample[:5]),
            )
        else:
            log.info("%s: channel matches the hub's published state (%d SKUs compared)", channel.id, result.compared)
        transfer.rows_read = result.offers_read
        transfer.rows_written = result.requeued + result.adopted
        transfer.rows_rejected = result.differences
        transfer.rows_changed = result.requeued + result.adopted
        transfer.payload_sha256 = digest
        transfer.details = {
            **transfer.details,
            "policy": channel.reconcile,
            "compared": result.compared,
            "in_flight": result.in_flight,
            "differences": result.differences,
            "requeued": result.requeued,
            "adopted": result.adopted,
            "report": result.report,
            "sample": result.sample,
        }
        ledger.append(conn, transfer, "success")
    return result


def _show(value: dict[str, Any] | None) -> str:
    return "" if value is None else json.dumps(value, sort_keys=True)


def _act(
    conn: Any, channel: Channel, diff: Difference, version: int | None, transfer: ledger.Transfer
) -> tuple[str, int | None]:
    if channel.reconcile == "report_only" or diff.field == "missing" or version is None:
        return "reported", None
    key = f"{channel.id}:{diff.sku}:{diff.field}:v{version}:reconcile:{transfer.transfer_id}"
    if channel.reconcile == "hub_wins":
        row = conn.execute(
            "INSERT INTO hub.outbox (channel, sku, field, payload, offer_version, idempotency_key, "
            "created_transfer_id) VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
            (channel.id, diff.sku, diff.field, Jsonb(diff.hub_value), version, key, transfer.transfer_id),
        ).fetchone()
        return "requeued", row[0]
    row = conn.execute(
        "INSERT INTO hub.outbox (channel, sku, field, payload, offer_version, idempotency_key, status, "
        "response, sent_at, created_transfer_id, sent_transfer_id) "
        "VALUES (%s, %s, %s, %s, %s, %s, 'sent', %s, now(), %s, %s) RETURNING id",
        (
            channel.id,
            diff.sku,
            diff.field,
            Jsonb(diff.channel_value),
            version,
            key,
            Jsonb({"adopted_from_channel": True, "hub_value": diff.hub_value}),
            transfer.transfer_id,
            transfer.transfer_id,
        ),
    ).fetchone()
    return "adopted", row[0]
