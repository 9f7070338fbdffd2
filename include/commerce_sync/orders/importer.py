"""Import a channel's orders batch by batch, then push the new quantities to every channel.

:func:`import_orders` holds a session lock per channel (a second import of the same channel waits), and
for each batch: reads the stored cursor, asks the marketplace for the orders changed since
(:meth:`~commerce_sync.channels.marketplace.Marketplace.read_orders`, one API page; the DAG's import
reads pages until it holds ``ORDERS_PER_TRANSACTION`` orders), and stores orders, reservations and the
new cursor with a ledger row (source ``channel:<id>``, target ``hub``, dataset ``order``) in one
transaction, while the next page is already being read. A read that fails after some pages stores
those first. A crash anywhere re-reads the last batch, which then changes nothing. A poll that
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
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from commerce_sync import registry
from commerce_sync.audit import changes, ledger
from commerce_sync.channels.orders import OrderBatch
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
ORDERS_PER_TRANSACTION = 1000
"""Orders the DAG's import stores per hub transaction (reads of the API's page size add up to it)."""
MAX_LISTED = 50  # entries of a reader's detail list (e.g. skipped orders) kept in one ledger row


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
        totals["touched_skus"] = sorted(self.totals.touched_skus)
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
    read_ahead: bool = True,
    orders_per_transaction: int | None = None,
) -> ImportResult:
    """Import ``channel``'s changed orders (see the module docs); at most ``max_batches`` reads a run.

    ``limit``: orders asked of one read (the reader also keeps to its API's page size).
    ``orders_per_transaction``: keep reading (while the marketplace has more) until this many orders
    are in hand, and store them with the last read's cursor in ONE hub transaction and ledger row; a
    hub transaction costs about the same for 30 orders as for 1,000, so this is what makes large
    imports fast (see bench/README.md). None: one read per transaction.
    ``read_ahead``: while a batch is stored, the next read is already under way (one thread) from the
    cursor the batch ends at, so the marketplace's latency overlaps the hub's transaction. It is used
    only if the stored cursor is still the one it started from (nothing else moved it); a store that
    fails discards it. Reading changes nothing anywhere, so a discarded read costs only its calls.
    """
    result = ImportResult(channel.id)
    lock_key = f"commerce_sync:orders:{channel.id}"
    reader = ThreadPoolExecutor(1, thread_name_prefix=f"orders-{channel.id}") if read_ahead else None
    ahead: tuple[str | None, Future[OrderBatch]] | None = None
    with connect(dsn, autocommit=True) as conn:
        conn.execute(_LOCK, (lock_key,))
        try:
            reads = 0
            while reads < max_batches:
                row = conn.execute(_CURSOR, (channel.id,)).fetchone()
                cursor = row[0] if row else None
                transfer = ledger.Transfer(source=f"channel:{channel.id}", target="hub", dataset=DATASET, run=run)
                pages: list[OrderBatch] = []
                failure: Exception | None = None
                try:
                    while True:
                        after = pages[-1].cursor if pages else cursor
                        pages.append(_next_batch(market, after, limit, ahead))
                        ahead = None
                        reads += 1
                        held = sum(len(page.orders) for page in pages)
                        if not pages[-1].more or reads >= max_batches or held >= (orders_per_transaction or 0):
                            break
                except Exception as exc:
                    failed = ledger.Transfer(source=f"channel:{channel.id}", target="hub", dataset=DATASET, run=run)
                    failed.message = f"reading orders failed: {type(exc).__name__}: {exc}"[:4000]
                    failed.details["cursor_before"] = pages[-1].cursor if pages else cursor
                    ledger.append_separately(dsn, failed, "failed")
                    if not pages:
                        raise
                    failure = exc  # the reads before it are stored first, then the task fails
                finally:
                    ahead = None
                batch = join_reads(pages)
                if not batch.orders and batch.cursor == cursor:
                    result.cursor = cursor  # nothing new: no ledger row
                    if failure is not None:
                        raise failure
                    break
                if reader is not None and batch.more and reads < max_batches and failure is None:
                    ahead = (batch.cursor, reader.submit(market.read_orders, batch.cursor, limit=limit))
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
                if failure is not None:
                    raise failure
                if not batch.more:
                    break
        finally:
            if reader is not None:  # a read still under way after a failure is waited for, its result dropped
                reader.shutdown(wait=True, cancel_futures=True)
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


def join_reads(pages: list[OrderBatch]) -> OrderBatch:
    """Reads in a row as one batch: every order (a later snapshot of an order after an earlier one),
    the last read's cursor and ``more``, the readers' counts added up."""
    if len(pages) == 1:
        return pages[0]
    details: dict[str, Any] = {"reads": len(pages)}
    for page in pages:
        for key, value in page.details.items():
            if isinstance(value, int) and not isinstance(value, bool):
                details[key] = details.get(key, 0) + value
            elif isinstance(value, list):
                details[key] = [*details.get(key, []), *value][:MAX_LISTED]
            else:
                details[key] = value
    orders = tuple(order for page in pages for order in page.orders)
    return OrderBatch(orders, pages[-1].cursor, pages[-1].more, details)


def _next_batch(
    market: OrderReader, cursor: str | None, limit: int, ahead: tuple[str | None, Future[OrderBatch]] | None
) -> OrderBatch:
    """The batch after ``cursor``: the read-ahead's if it started from ``cursor``, else read now.

    A read-ahead from another cursor is waited for (the client is not asked twice at once) and dropped.
    """
    if ahead is not None:
        started_from, future = ahead
        if started_from == cursor:
            return future.result()
        wait([future])
    return market.read_orders(cursor, limit=limit)


def push_quantities(
    dsn: str,
    config: Config,
    run: ledger.RunContext,
    *,
    resend: Iterable[tuple[str, str]] = (),
    family: registry.Family | None = None,
) -> list[OfferComputation]:
    """Recompute (incrementally) every enabled channel's offers; return what each run changed.

    ``resend``: (channel, SKU) pairs whose marketplace changed its own quantity (it sold, or put a
    cancelled order's units back). Where the hub's quantity for such a pair did not change, nothing
    would be enqueued and the marketplace would keep its own figure: the hub's quantity is queued again
    (:func:`resend_quantities`). ``family``: only the channels of that family (``marketplace``: the
    outbox channels, which must hear of a sale at once; ``feed``: the files written every 15 minutes).
    """
    from commerce_sync.pricing.compute import PricingSetup, compute_channel_offers

    setup = PricingSetup(config.rules, tuple(config.rule_overrides))
    results = []
    failed: list[tuple[str, Exception]] = []
    for channel in config.channels:
        if not channel.enabled or (family is not None and registry.get(channel.kind).family != family):
            continue
        try:  # one channel's breaker or missing rate must not keep the others at the old quantity
            results.append(compute_channel_offers(dsn, channel, config.rule_for(channel), run, setup=setup))
        except Exception as exc:
            log.error("channel %s: quantities not pushed: %s", channel.id, exc)
            failed.append((channel.id, exc))
    pairs = sorted((channel_id, sku) for channel_id, sku in set(resend) if channel_id not in dict(failed))
    if pairs:
        resend_quantities(dsn, config, pairs, run)
    if failed:  # the first failure decides how the task fails (retry or not); the others are named
        first = failed[0][1]
        first.add_note(f"quantities not pushed to {', '.join(c for c, _ in failed)}; the other channels got theirs")
        raise first
    return results


_RESEND = """
WITH due AS (
    SELECT o.channel, o.sku, o.quantity, o.version
    FROM hub.channel_offer AS o
    WHERE o.channel = %(channel)s AND o.sku = ANY(%(skus)s)
      AND NOT EXISTS (SELECT 1 FROM hub.outbox AS x WHERE x.channel = o.channel AND x.sku = o.sku
                      AND x.field = 'quantity' AND x.status = 'pending')
), queued AS (
    INSERT INTO hub.outbox (channel, sku, field, payload, offer_version, idempotency_key, created_transfer_id)
    SELECT channel, sku, 'quantity', jsonb_build_object('value', quantity), version,
           channel || ':' || sku || ':quantity:v' || version || ':order:' || %(transfer_id)s,
           %(transfer_id)s::uuid
    FROM due
    RETURNING channel, sku, payload, offer_version, idempotency_key
)
INSERT INTO audit.change (transfer_id, dataset, sku, channel, field, old_value, new_value, source_ref)
SELECT %(transfer_id)s::uuid, 'channel_offer', sku, channel, 'quantity', NULL, payload->>'value',
       jsonb_build_object('offer_version', offer_version, 'idempotency_key', idempotency_key,
                          'reason', 'the marketplace changed its own quantity for an order; the hub resends its own')
FROM queued
"""


def resend_quantities(dsn: str, config: Config, pairs: list[tuple[str, str]], run: ledger.RunContext) -> int:
    """Queue the hub's current quantity again for (channel, SKU) pairs without a pending quantity change."""
    from commerce_sync.pricing.compute import lock_channel

    by_channel: dict[str, list[str]] = {}
    for channel_id, sku in pairs:
        by_channel.setdefault(channel_id, []).append(sku)
    queued = 0
    for channel_id, skus in sorted(by_channel.items()):
        channel = config.channel(channel_id)
        if not channel.enabled or not registry.get(channel.kind).uses_outbox:
            continue
        transfer = ledger.Transfer(source="hub", target=f"channel:{channel_id}", dataset="channel_offer", run=run)
        with connect(dsn) as conn:
            try:
                lock_channel(conn, channel_id)
                conn.execute(_RESEND, {"channel": channel_id, "skus": skus, "transfer_id": str(transfer.transfer_id)})
                count = changes.summarise(conn, transfer)
                if not count:  # every pair already has a change on its way: no transfer
                    conn.rollback()
                    continue
                transfer.rows_read = len(skus)
                transfer.rows_written = transfer.rows_changed = count
                transfer.details["reason"] = "quantity resent after the marketplace changed it for an order"
                ledger.append(conn, transfer, "success")
            except Exception as exc:
                conn.rollback()
                transfer.message = f"{type(exc).__name__}: {exc}"[:4000]
                transfer.changes_count = transfer.changes_sha256 = None
                ledger.append_separately(dsn, transfer, "failed")
                raise
            queued += count
    return queued


def import_channel(dsn: str, channel: Channel, run: ledger.RunContext) -> ImportResult:
    """Import ``channel``'s orders through its kind's marketplace adapter (from its Airflow connection)."""
    spec = registry.get(channel.kind)
    if not spec.can("import_orders"):
        from commerce_sync.errors import ConfigError

        raise ConfigError(f"channel {channel.id!r}: {spec.title} ({spec.name}) does not import orders")
    with spec.open(channel) as market:
        return import_orders(dsn, channel, market, run, orders_per_transaction=ORDERS_PER_TRANSACTION)


def catch_up(dsn: str, config: Config, channel: Channel, run: ledger.RunContext) -> list[str]:
    """Import ``channel``'s orders and push the quantities they change; return the ledger transfers.

    Read-back reconciliation calls this first: a marketplace lowers an offer's quantity itself when it
    sells, and comparing before the sale is imported would put the sold unit back on sale (hub wins).
    After this, the affected SKUs carry pending quantity changes and read-back leaves them alone.
    """
    if not registry.get(channel.kind).can("import_orders"):
        return []
    imported = import_channel(dsn, channel, run)
    transfer_ids = list(imported.transfer_ids)
    if imported.totals.touched_skus:
        resend = [(channel.id, sku) for sku in imported.totals.touched_skus]
        transfer_ids += [result.transfer_id for result in push_quantities(dsn, config, run, resend=resend)]
    return transfer_ids
