"""One entry point per marketplace task: publish a channel's outbox, or reconcile it, whatever its kind.

DAG tasks call :func:`publish_channel` and :func:`reconcile_channel` with a channel id; the kind
(Allegro, eBay) picks the client and publisher. Each call records one transfer in the ledger with
the channel's backlog (pending outbox rows and the age of the oldest) before and after, and logs
it, so an operator sees a channel falling behind in the task log and in the audit view.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from commerce_sync.audit import ledger
from commerce_sync.channels import allegro, ebay, outbox
from commerce_sync.channels.base import HttpClient
from commerce_sync.channels.reconcile import reconcile
from commerce_sync.config import Channel
from commerce_sync.connections import get_connection
from commerce_sync.db import connect
from commerce_sync.errors import ConfigError

log = logging.getLogger(__name__)

SUPPORTED_KINDS = frozenset({"allegro", "ebay"})
"""Marketplace kinds with a publisher (Amazon's SP-API publisher is not built yet)."""


def client_for(channel: Channel) -> HttpClient:
    """The API client of a marketplace channel, from its Airflow connection."""
    if channel.kind not in SUPPORTED_KINDS or not channel.conn_id:
        raise ConfigError(
            f"channel {channel.id!r}: kind {channel.kind!r} has no marketplace publisher "
            f"(supported: {sorted(SUPPORTED_KINDS)}); disable it in channels.yaml"
        )
    info = get_connection(channel.conn_id)
    if channel.kind == "allegro":
        return allegro.AllegroClient.from_connection(info)
    return ebay.EbayClient.from_connection(info)


def _backlog(dsn: str, channel_id: str) -> dict[str, Any]:
    with connect(dsn) as conn:
        return asdict(outbox.backlog(conn, channel_id))


def publish_channel(dsn: str, channel: Channel, run: ledger.RunContext) -> dict[str, Any]:
    """Refresh the channel's SKU → offer map, then send its pending outbox rows; return the counts."""
    client = client_for(channel)
    try:
        listing = ledger.Transfer(source=f"channel:{channel.id}", target="hub", dataset="channel_listing", run=run)
        with ledger.recording(dsn, listing):
            if isinstance(client, allegro.AllegroClient):
                allegro.sync_listings(dsn, channel.id, client, listing)
            else:
                assert isinstance(client, ebay.EbayClient)
                ebay.sync_listings(dsn, channel.id, client, listing)
        before = _backlog(dsn, channel.id)
        log.info(
            "%s: backlog before publishing: %d pending outbox rows, oldest %s s",
            channel.id,
            before["pending"],
            before["oldest_age_seconds"],
        )
        transfer = ledger.Transfer(
            source="hub", target=f"channel:{channel.id}", dataset="offer_update", run=run, details={"backlog": before}
        )
        with ledger.recording(dsn, transfer):
            try:
                if isinstance(client, allegro.AllegroClient):
                    result: Any = allegro.publish_outbox(
                        dsn, channel.id, client, transfer, batch_size=channel.batch_size, currencies=channel.currencies
                    )
                else:
                    result = ebay.publish_outbox(dsn, channel.id, client, transfer, currencies=channel.currencies)
            finally:
                after = _backlog(dsn, channel.id)
                transfer.details = {**transfer.details, "backlog_after": after}
                log.info(
                    "%s: backlog after publishing: %d pending, oldest %s s, %d failed in the last 24 h",
                    channel.id,
                    after["pending"],
                    after["oldest_age_seconds"],
                    after["failed_last_day"],
                )
        return {"channel": channel.id, **asdict(result), "backlog_before": before, "backlog_after": after}
    finally:
        client.close()


def reconcile_channel(dsn: str, channel: Channel, run: ledger.RunContext, report_dir: Path) -> dict[str, Any]:
    """Read the channel's current offers back and reconcile them with the hub (see :mod:`.reconcile`)."""
    client = client_for(channel)
    try:
        offers: Any
        if isinstance(client, allegro.AllegroClient):
            offers = allegro.read_offers(client)
        else:
            assert isinstance(client, ebay.EbayClient)
            offers = ebay.read_offers(client)
        transfer = ledger.Transfer(
            source=f"channel:{channel.id}", target="hub", dataset="channel_reconciliation", run=run
        )
        with ledger.recording(dsn, transfer):
            result = reconcile(dsn, channel, offers, transfer, report_dir)
        return asdict(result)
    finally:
        client.close()
