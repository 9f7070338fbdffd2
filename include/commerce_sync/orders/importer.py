"""Import a channel's orders batch by batch, then push the new quantities to every channel.

:func:`import_orders` holds a session lock per channel (a second import of the same channel waits), and
for each batch: reads the stored cursor, asks the marketplace for the orders changed since
(:meth:`~commerce_sync.channels.marketplace.Marketplace.read_orders`), and stores orders, reservations
and the new cursor with a ledger row (source ``channel:<id>``, target ``hub``, dataset ``order``) in
one transaction. A crash anywhere re-reads the last batch, which then changes nothing. A poll that
finds nothing new and leaves the cursor where it was writes no ledger row; a failed read writes a
failed one.

:func:`push_quantities` runs the pricing engine's incremental computation for every enabled channel
(marketplaces get outbox rows; feed channels get the new quantity in their next file). A reservation
change is one of its inputs (``hub.stock_reservation`` is in the pricing scope and sellable stock
subtracts ``hub.reservation_outstanding``), so the affected SKUs' quantities are recomputed and only
the fields that changed are enqueued: a quantity-only change sends no price.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from commerce_sync import registry
from commerce_sync.audit import ledger
from commerce_sync.db import connect
from commerce_sync.orders.store import DATASET, BatchResult, store_batch

if TYPE_CHECKING:
    from commerce_sync.channels.orders import OrderReader
    from commerce_sync.config import Channel, Config
    from commerce_sync.pricing.compute import OfferComputation

log = logging.getLogger(__name__)

_LOCK = "SELECT pg_advisory_lock(hashtext(%s))"
_UNLOCK = "SELECT pg_advisory_unlock(hashtext(%s))"
_CURSOR = "SELECT cursor FROM hub.order_cursor WHERE channel = %s"


@dataclass
class ImportResult:
    """What one import of a channel's orders did."""

    channel: str
    batches: int = 0
    transfer_ids: list[str] = field(default_factory=list)
    totals: BatchResult = field(default_factory=BatchResult)
    cursor: str | None = None
    reader: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        totals = asdict(self.totals)
        totals["oversold"] = [line.describe() for line in self.totals.oversold]
        return {
            "channel": self.channel,
            "batches": self.batches,
            "transfer_ids": self.transfer_ids,
            "cursor": self.cursor,
            **totals,
        }


def import_orders(
    dsn: str,
    channel: Channel,
    market: OrderReader,
    run: ledger.RunContext,
    *,
    limit: int = 100,
    max_batches: int = 1000,
) -> ImportResult:
    """Import ``channel``'s changed orders (see the module docs); at most ``max_batches`` batches a run."""
    result = ImportResult(channel.id)
    lock_key = f"commerce_sync:orders:{channel.id}"
    with connect(dsn, autocommit=True) as conn:
        conn.execute(_LOCK, (lock_key,))
        try:
            for _ in range(max_batches):
                row = conn.execute(_CURSOR, (channel.id,)).fetchone()
                cursor = row[0] if row else None
                transfer = ledger.Transfer(source=f"channel:{channel.id}", target="hub", dataset=DATASET, run=run)
                try:
                    batch = market.read_orders(cursor, limit=limit)
                except Exception as exc:
                    transfer.message = f"reading orders failed: {type(exc).__name__}: {exc}"[:4000]
                    transfer.details["cursor_before"] = cursor
                    ledger.append_separately(dsn, transfer, "failed")
                    raise
                if not batch.orders and batch.cursor == cursor:
                    result.cursor = cursor  # nothing new: no ledger row
                    break
                with ledger.recording(dsn, transfer), conn.transaction():
                    stored = store_batch(conn, channel.id, batch, transfer)
                    transfer.details.update(
                        {
                            "cursor_before": cursor,
                            "cursor_after": batch.cursor,
                            "reader": batch.details,
                            "new_orders": stored.new_orders,
                            "changed_orders": stored.changed_orders,
                            "cancelled_orders": stored.cancelled_orders,
                            "stale_snapshots": stored.stale,
                            "lines_reserved": stored.lines_reserved,
                            "lines_released": stored.lines_released,
                            "rejected_orders": stored.rejected,
                            "unresolved_lines": stored.unresolved_lines,
                            "oversold_lines": [line.describe() for line in stored.oversold],
                        }
                    )
                    if stored.oversold:
                        transfer.message = f"{len(stored.oversold)} oversold order line(s)"
                    ledger.append(conn, transfer, "success")
                result.batches += 1
                result.transfer_ids.append(str(transfer.transfer_id))
                result.totals.add(stored)
                result.cursor = batch.cursor
                result.reader = batch.details
                if not batch.more:
                    break
        finally:
            conn.execute(_UNLOCK, (lock_key,))
    for line in result.totals.oversold:
        log.warning("OVERSOLD: %s", line.describe())
    log.info(
        "channel %s: %d batch(es), %d new and %d changed orders, %d lines reserved, %d released, %d oversold",
        channel.id,
        result.batches,
        result.totals.new_orders,
        result.totals.changed_orders,
        result.totals.lines_reserved,
        result.totals.lines_released,
        len(result.totals.oversold),
    )
    return result


def push_quantities(dsn: str, config: Config, run: ledger.RunContext) -> list[OfferComputation]:
    """Recompute (incrementally) every enabled channel's offers; return what each run changed."""
    from commerce_sync.pricing.compute import PricingSetup, compute_channel_offers

    setup = PricingSetup(config.rules, tuple(config.rule_overrides))
    results = []
    for channel in config.channels:
        if channel.enabled:
            results.append(compute_channel_offers(dsn, channel, config.rule_for(channel), run, setup=setup))
    return results


def import_channel(dsn: str, channel: Channel, run: ledger.RunContext) -> ImportResult:
    """Import ``channel``'s orders through its kind's marketplace adapter (from its Airflow connection)."""
    spec = registry.get(channel.kind)
    if not spec.can("import_orders"):
        from commerce_sync.errors import ConfigError

        raise ConfigError(f"channel {channel.id!r}: {spec.title} ({spec.name}) does not import orders")
    with spec.open(channel) as market:
        return import_orders(dsn, channel, market, run)
