"""One entry point per marketplace task: publish a channel's outbox, or reconcile it, whatever its kind.

DAG tasks call :func:`publish_channel` and :func:`reconcile_channel` with a channel id; the kind
(Allegro, eBay, Amazon) picks the client and publisher. Each call records one transfer in the ledger with
the channel's backlog (pending outbox rows and the age of the oldest) before and after, and logs
it, so an operator sees a channel falling behind in the task log and in the audit view.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from commerce_sync.audit import ledger
from commerce_sync.channels import allegro, amazon, ebay, outbox
from commerce_sync.channels.base import HttpClient
from commerce_sync.channels.reconcile import reconcile
from commerce_sync.config import Channel
from commerce_sync.connections import get_connection
from commerce_sync.db import connect
from commerce_sync.errors import ConfigError

log = logging.getLogger(__name__)

SUPPORTED_KINDS = frozenset({"allegro", "ebay", "amazon"})
"""Marketplace kinds with a publisher."""
RECONCILABLE_KINDS = frozenset({"allegro", "ebay", "amazon"})
"""Marketplace kinds whose current offers we can read back (Amazon: through the Listings Items API)."""


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
    if channel.kind == "amazon":
        return amazon.AmazonClient.from_connection(info)
    return ebay.EbayClient.from_connection(info)


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
    client = client_for(channel)
    try:
        listing = ledger.Transfer(source=f"channel:{channel.id}", target="hub", dataset="channel_listing", run=run)
        with ledger.recording(dsn, listing):
            if isinstance(client, allegro.AllegroClient):
                allegro.sync_listings(dsn, channel.id, client, listing)
            elif isinstance(client, amazon.AmazonClient):
                pass  # Amazon addresses listings by our SKU: there is no offer id to learn
            else:
                assert isinstance(client, ebay.EbayClient)
                ebay.sync_listings(dsn, channel.id, client, listing)
        before = backlog_of(dsn, channel.id)
        transfer = ledger.Transfer(
            source="hub", target=f"channel:{channel.id}", dataset="offer_update", run=run, details={"backlog": before}
        )
        with ledger.recording(dsn, transfer):
            try:
                if isinstance(client, allegro.AllegroClient):
                    result: Any = allegro.publish_outbox(
                        dsn, channel.id, client, transfer, batch_size=channel.batch_size, currencies=channel.currencies
                    )
                elif isinstance(client, amazon.AmazonClient):
                    seller_id, marketplace_id = client.account()
                    result = amazon.publish_outbox(
                        dsn,
                        channel.id,
                        client,
                        transfer,
                        seller_id=seller_id,
                        marketplace_id=marketplace_id,
                        product_type=client.product_type,
                        currencies=channel.currencies,
                    )
                else:
                    assert isinstance(client, ebay.EbayClient)
                    result = ebay.publish_outbox(dsn, channel.id, client, transfer, currencies=channel.currencies)
            finally:
                after = backlog_of(dsn, channel.id)
                transfer.details = {**transfer.details, "backlog_after": after}
        return {
            "channel": channel.id,
            **asdict(result),
            "backlog_before": before,
            "backlog_after": after,
            "transfer_ids": [str(listing.transfer_id), str(transfer.transfer_id)],
        }
    finally:
        client.close()


def reconcile_channel(dsn: str, channel: Channel, run: ledger.RunContext, report_dir: Path) -> dict[str, Any]:
    """Read the channel's current offers back and reconcile them with the hub (see :mod:`.reconcile`)."""
    if channel.kind not in RECONCILABLE_KINDS:
        raise ConfigError(f"channel {channel.id!r}: read-back reconciliation is not available for {channel.kind}")
    client = client_for(channel)
    try:
        offers: Any
        if isinstance(client, allegro.AllegroClient):
            offers = allegro.read_offers(client)
        elif isinstance(client, amazon.AmazonClient):
            client.account()  # fails early, naming the connection, when the ids are missing
            # Amazon pages through at most 1,000 search results: read the SKUs the hub published, by SKU.
            with connect(dsn) as conn:
                skus = [
                    sku
                    for (sku,) in conn.execute(
                        "SELECT DISTINCT sku FROM hub.outbox WHERE channel = %s AND status = 'sent' ORDER BY sku",
                        (channel.id,),
                    )
                ]
            offers = amazon.read_offers(client, skus)
        else:
            assert isinstance(client, ebay.EbayClient)
            offers = ebay.read_offers(client)
        transfer = ledger.Transfer(
            source=f"channel:{channel.id}", target="hub", dataset="channel_reconciliation", run=run
        )
        with ledger.recording(dsn, transfer):
            result = reconcile(dsn, channel, offers, transfer, report_dir)
        return {**asdict(result), "transfer_ids": [str(transfer.transfer_id)]}
    finally:
        client.close()
