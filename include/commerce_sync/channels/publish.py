"""One entry point per marketplace task: publish a channel's outbox, or reconcile it, whatever its kind.

DAG tasks call :func:`publish_channel` and :func:`reconcile_channel` with a channel; the channel
registry (:mod:`commerce_sync.registry`) gives its kind's marketplace adapter, and the marketplace base
(:mod:`commerce_sync.channels.marketplace`) does the work. Each publish records one listing transfer
and one publish transfer in the ledger, the latter with the channel's backlog (pending outbox rows
and the age of the oldest) before and after, and logs it, so an operator sees a channel falling
behind in the task log and in the audit view.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
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


def publish_channel(dsn: str, channel: Channel, run: ledger.RunContext) -> dict[str, Any]:
    """Refresh the channel's SKU → offer map, then send its pending outbox rows; return the counts."""
    with open_marketplace(channel, "publish") as market:
        listing = ledger.Transfer(source=f"channel:{channel.id}", target="hub", dataset="channel_listing", run=run)
        with ledger.recording(dsn, listing):
            if market.needs_offer_id:
                marketplace.sync_listings(dsn, channel.id, market, listing)
            else:
                listing.details = {"listings": f"{market.title} addresses offers by SKU: no offer ids to learn"}
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
        transfer_ids = [str(listing.transfer_id), str(transfer.transfer_id)]
        if market.needs_offer_id and market.creates_offers and result.sent:
            # Offers created by this publish: learn their ids now, so the hub's listing is current at once.
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
