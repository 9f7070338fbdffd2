"""One entry point per marketplace task: publish a channel's outbox, or reconcile it, whatever its kind.

DAG tasks call :func:`publish_channel` and :func:`reconcile_channel` with a channel; the channel
registry (:mod:`commerce_sync.registry`) gives its kind's marketplace adapter, and the marketplace base
(:mod:`commerce_sync.channels.marketplace`) does the work. Each publish records a listing transfer when
it re-read the channel's offer ids (see :func:`listing_due`) and one publish transfer in the ledger, the
latter with the channel's backlog (pending outbox rows and the age of the oldest) before and after, and
logs it, so an operator sees a channel falling behind in the task log and in the audit view.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from commerce_sync import registry
from commerce_sync.audit import ledger
from commerce_sync.channels import marketplace, outbox
from commerce_sync.channels.reconcile import reconcile
from commerce_sync.config import Channel
from commerce_sync.db import connect
from commerce_sync.errors import ConfigError

log = logging.getLogger(__name__)


def open_marketplace(channel: Channel, capability: registry.Capability) -> marketplace.Marketplace:
    """The marketplace adapter of ``channel``, if its kind can do ``capability``.

    Raises:
        ConfigError: the kind is unknown, not a marketplace or lacks the capability (disable the channel
            in channels.yaml), or its connection is incomplete.
    """
    spec = registry.get(channel.kind)
    if spec.family != "marketplace" or not spec.can(capability):
        able = [s.name for s in registry.kinds("marketplace", capability)]
        raise ConfigError(
            f"channel {channel.id!r}: kind {channel.kind!r} cannot {capability.replace('_', ' ')} "
            f"(marketplace kinds that can: {able}); disable it in channels.yaml"
        )
    return spec.open(channel)


def backlog_of(dsn: str, channel_id: str) -> dict[str, Any]:
    """The channel's backlog as a dict (for XCom and the ledger), also written to the task log."""
    with connect(dsn) as conn:
        found = asdict(outbox.backlog(conn, channel_id))
    log.info(
        "%s: backlog: %d pending outbox rows, oldest %s s, %d failed in the last 24 h",
        channel_id,
        found["pending"],
        found["oldest_age_seconds"],
        found["failed_last_day"],
    )
    return found


_LAST_LISTING = (
    "SELECT now() - finished_at FROM audit.transfer "
    "WHERE source = %s AND dataset = 'channel_listing' AND status = 'success' ORDER BY seq DESC LIMIT 1"
)
_UNMAPPED = (
    "SELECT count(*) FROM hub.outbox AS o WHERE o.channel = %s AND o.status = 'pending' "
    "AND NOT EXISTS (SELECT 1 FROM hub.channel_listing AS l WHERE l.channel = o.channel AND l.sku = o.sku)"
)


def listing_due(dsn: str, channel: Channel) -> str | None:
    """Why the channel's SKU -> offer id map must be re-read before this publish, or None when it is fresh.

    Reading every offer of a large account costs minutes and API quota (Allegro: 1,000 offers a call;
    eBay: 200), so a publish re-reads it only when the last successful read (a ``channel_listing``
    transfer) is older than ``listing_refresh_minutes``, or when a pending row's SKU has no known offer
    id (it may have been listed since; a kind that creates offers must not create a duplicate). An
    offer id that changed on the marketplace within the window fails that SKU's row with the
    marketplace's message; the next read (at most ``listing_refresh_minutes`` later) maps it again and
    the hourly read-back re-sends what differs.
    """
    if channel.listing_refresh_minutes == 0:
        return "read before every publish (listing_refresh_minutes: 0)"
    with connect(dsn) as conn:
        last = conn.execute(_LAST_LISTING, (f"channel:{channel.id}",)).fetchone()
        if last is None:
            return "never read"
        (unmapped,) = conn.execute(_UNMAPPED, (channel.id,)).fetchone() or (0,)
    if unmapped:
        return f"{unmapped} pending outbox row(s) of SKUs without a known offer id"
    age = last[0]
    if age >= timedelta(minutes=channel.listing_refresh_minutes):
        minutes = channel.listing_refresh_minutes
        return f"last read {int(age.total_seconds())} s ago (listing_refresh_minutes: {minutes})"
    return None


class ListingDue(Exception):
    """The channel's SKU -> offer id map must be re-read before it is published (see :func:`listing_due`)."""


def publish_channel(
    dsn: str, channel: Channel, run: ledger.RunContext, *, unless_listing_due: bool = False
) -> dict[str, Any]:
    """Send the channel's pending outbox rows (re-reading its SKU -> offer map first when :func:`listing_due`);
    return the counts.

    Raises:
        ListingDue: ``unless_listing_due`` and the map is due for a re-read (nothing was sent).
    """
    with open_marketplace(channel, "publish") as market:
        transfer_ids: list[str] = []
        why = listing_due(dsn, channel) if market.needs_offer_id else "no offer ids"
        if why is not None and market.needs_offer_id and unless_listing_due:
            raise ListingDue(why)
        if why is None:
            minutes = channel.listing_refresh_minutes
            log.info("%s: offer ids read less than %d min ago, every SKU mapped: not re-read", channel.id, minutes)
        else:
            listing = ledger.Transfer(source=f"channel:{channel.id}", target="hub", dataset="channel_listing", run=run)
            with ledger.recording(dsn, listing):
                if market.needs_offer_id:
                    listing.details = {"refresh": why}
                    marketplace.sync_listings(dsn, channel.id, market, listing)
                else:
                    listing.details = {"listings": f"{market.title} addresses offers by SKU: no offer ids to learn"}
            transfer_ids.append(str(listing.transfer_id))
        before = backlog_of(dsn, channel.id)
        transfer = ledger.Transfer(
            source="hub", target=f"channel:{channel.id}", dataset="offer_update", run=run, details={"backlog": before}
        )
        with ledger.recording(dsn, transfer):
            try:
                result = marketplace.publish_outbox(dsn, channel, market, transfer, batch_size=channel.batch_size)
            finally:
                after = backlog_of(dsn, channel.id)
                transfer.details = {**transfer.details, "backlog_after": after}
        transfer_ids.append(str(transfer.transfer_id))
        if market.needs_offer_id and market.creates_offers and result.sent and result.claimed_without_offer_id:
            # Offers created by this publish: learn their ids now, so the hub's listing is current at once
            # (not after a publish that only updated offers the hub already knew: that read costs minutes).
            relisting = ledger.Transfer(
                source=f"channel:{channel.id}", target="hub", dataset="channel_listing", run=run
            )
            with ledger.recording(dsn, relisting):
                marketplace.sync_listings(dsn, channel.id, market, relisting)
            transfer_ids.append(str(relisting.transfer_id))
        return {
            "channel": channel.id,
            "kind": channel.kind,
            **asdict(result),
            "backlog_before": before,
            "backlog_after": after,
            "transfer_ids": transfer_ids,
        }


INLINE_PUBLISH_ENV = "COMMERCE_SYNC_INLINE_PUBLISH"
INLINE_ROWS_PER_SKU = 3
"""Outbox rows a SKU's change may queue on a channel (price, quantity, content): the inline limit is the
fast path's size in SKUs times this."""


def inline_publish_enabled() -> bool:
    """``COMMERCE_SYNC_INLINE_PUBLISH`` (default on): pricing and the orders run send small changes themselves."""
    raw = os.environ.get(INLINE_PUBLISH_ENV, "1").strip().lower()
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{INLINE_PUBLISH_ENV}={raw!r}: expected 1 or 0")


def inline_publish_max_rows() -> int:
    """The most pending rows a channel may have to be sent inline: the fast path's size times three."""
    from commerce_sync.settings import fast_path_max_skus

    return fast_path_max_skus() * INLINE_ROWS_PER_SKU


@dataclass
class PendingPublish:
    """What :func:`publish_pending` did: per channel the publish's counts, or why it left the channel."""

    published: list[dict[str, Any]] = field(default_factory=list)
    left: dict[str, str] = field(default_factory=dict)
    idle: list[str] = field(default_factory=list)
    """Channels with nothing pending."""


def publish_pending(
    dsn: str, channels: list[Channel], run: ledger.RunContext, *, max_rows: int | None = None
) -> PendingPublish:
    """Send, now and from this process, the pending outbox rows of ``channels`` that are cheap to send.

    The shortcut of a small change: the task that queued it (a channel's pricing, the orders run's
    quantity push) sends it at once, instead of waiting for ``hub_to_marketplaces`` to be scheduled and to
    start its tasks (a DAG run and two task start-ups, 10-15 s). It is an accelerator, never the
    guarantee: a channel is left to ``hub_to_marketplaces`` (which the caller's DAG then starts, with the
    API pools, retries and runbook) when it has more than ``max_rows`` pending rows, when its SKU -> offer
    id map is due for a re-read (minutes for a large account), or when its publish fails (logged as a
    warning and recorded in the ledger by the publish itself). Channels are sent side by side, one
    thread each; rows another publisher holds are skipped (``FOR UPDATE SKIP LOCKED``), so a concurrent
    ``hub_to_marketplaces`` run is safe.
    """
    done = PendingPublish()
    due: list[Channel] = []
    for channel in channels:
        with connect(dsn) as conn:
            pending = outbox.backlog(conn, channel.id).pending
        if not pending:
            done.idle.append(channel.id)
        elif max_rows is not None and pending > max_rows:
            done.left[channel.id] = (
                f"{pending} pending rows, more than {max_rows} sent inline: left to hub_to_marketplaces"
            )
        else:
            due.append(channel)

    def one(channel: Channel) -> dict[str, Any] | str:
        try:
            return publish_channel(dsn, channel, run, unless_listing_due=True)
        except ListingDue as due_now:
            log.info("%s: offer ids to re-read first (%s): left to hub_to_marketplaces", channel.id, due_now)
            return f"offer ids to re-read first ({due_now}): left to hub_to_marketplaces"
        except Exception as exc:  # the DAG's own publish retries it, in its pool
            message = f"publish failed, left to hub_to_marketplaces: {type(exc).__name__}: {exc}"[:500]
            log.warning("%s: inline %s", channel.id, message)
            return message

    if due:
        with ThreadPoolExecutor(len(due), thread_name_prefix="inline-publish") as pool:
            for channel, outcome in zip(due, pool.map(one, due), strict=True):
                if isinstance(outcome, str):
                    done.left[channel.id] = outcome
                else:
                    done.published.append(outcome)
    return done


def publish_inline(dsn: str, channels: list[Channel], run: ledger.RunContext) -> dict[str, Any]:
    """:func:`publish_pending` with the inline limit (:func:`inline_publish_max_rows`), reporting each
    channel it sent to as the task's lineage output; the :class:`PendingPublish` as a dict (for XCom)."""
    from commerce_sync.lineage import report_output, report_transfer

    try:
        done = publish_pending(dsn, channels, run, max_rows=inline_publish_max_rows())
    except Exception as exc:  # never fail the task that queued the change: the DAG sends what is left
        log.warning("inline publish failed, left to hub_to_marketplaces: %s: %s", type(exc).__name__, exc)
        why = f"inline publish failed, left to hub_to_marketplaces: {type(exc).__name__}: {exc}"[:500]
        done = PendingPublish(left={c.id: why for c in channels})
    by_id = {c.id: c for c in channels}
    for result in done.published:
        channel = by_id[result["channel"]]
        report_output(registry.get(channel.kind).asset(channel))
        for transfer_id in result["transfer_ids"]:
            report_transfer(transfer_id)
    return asdict(done)


def reconcile_channel(dsn: str, channel: Channel, run: ledger.RunContext, report_dir: Path) -> dict[str, Any]:
    """Read the channel's current offers back and reconcile them with the hub (see :mod:`.reconcile`)."""
    with open_marketplace(channel, "read_back") as market:
        offers = marketplace.read_back(dsn, channel.id, market)
        transfer = ledger.Transfer(
            source=f"channel:{channel.id}", target="hub", dataset="channel_reconciliation", run=run
        )
        with ledger.recording(dsn, transfer):
            result = reconcile(dsn, channel, offers, transfer, report_dir)
        return {**asdict(result), "transfer_ids": [str(transfer.transfer_id)]}
