"""Google Merchant Center feed (RSS 2.0 with the ``g:`` namespace): the entry point the DAG calls.

The writing itself is shared by every feed format in :mod:`commerce_sync.channels.feeds`: offers are
checked (floor, currency, Google's field limits: id ≤ 50, title ≤ 150, description ≤ 5000),
streamed into a temporary file, validated by parsing it back, and atomically renamed over the
published file only when the content changed. The feed holds the whole catalog (Google removes
items missing from it), so out-of-stock offers are written with ``out_of_stock``, never dropped.
"""

from __future__ import annotations

from pathlib import Path

from commerce_sync.audit import ledger
from commerce_sync.channels.feeds import G_NS, FeedResult, feed_path, write_feed
from commerce_sync.channels.prepublish import GOOGLE_LIMITS as LIMITS
from commerce_sync.config import Channel

__all__ = ["G_NS", "LIMITS", "FeedResult", "feed_path", "write_google_feed"]


def write_google_feed(dsn: str, channel: Channel, data_dir: Path, run: ledger.RunContext) -> FeedResult:
    """Write the channel's full Google feed; replace the published file only when its content changed."""
    return write_feed(dsn, channel, data_dir, run)
