"""Google Merchant Center feed (RSS 2.0 with the ``g:`` namespace), streamed and written atomically.

Offers are read with a server-side cursor and written item by item with ``lxml.etree.xmlfile``
into a temporary file beside the target, which replaces the target with ``os.replace`` only if
its content differs; an unchanged catalog leaves the published file untouched. The feed holds
the whole catalog (Google removes items missing from it), so out-of-stock offers are written with
``out_of_stock``, never dropped.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from urllib.parse import quote

from lxml import etree

from commerce_sync.audit import ledger
from commerce_sync.config import Channel
from commerce_sync.db import connect
from commerce_sync.errors import ConfigError

G_NS = "http://base.google.com/ns/1.0"
LIMITS = {"id": 50, "title": 150, "description": 5000}
DATASET = "channel_offer"

_OFFERS = """
SELECT o.sku, p.gtin, p.name, p.description, p.brand, p.category, o.price, o.currency, o.availability
FROM hub.channel_offer AS o
JOIN hub.product AS p ON p.sku = o.sku
WHERE o.channel = %s
ORDER BY o.sku
"""


@dataclass(frozen=True)
class FeedResult:
    """What one feed write did."""

    channel: str
    path: str
    item_count: int
    items_changed: int
    rewritten: bool
    sha256: str
    skipped: int
    transfer_id: str


def _g(name: str) -> str:
    return f"{{{G_NS}}}{name}"


def _clip(text: str | None, limit: int) -> str:
    text = (text or "").strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _gtin_for_feed(gtin: str | None) -> str | None:
    # The hub pads GTINs to 14 digits; publish the shortest standard form (EAN-13 for 0-prefixed).
    if gtin is None:
        return None
    return gtin[1:] if len(gtin) == 14 and gtin.startswith("0") else gtin


def _price(amount: Decimal, currency: str) -> str:
    return f"{amount:.2f} {currency}"


def feed_path(channel: Channel, data_dir: Path) -> Path:
    """Absolute path of the channel's feed file."""
    if channel.feed is None:
        raise ConfigError(f"channel {channel.id!r} has no feed settings")
    path = Path(channel.feed.path)
    return path if path.is_absolute() else data_dir / path


def write_google_feed(dsn: str, channel: Channel, data_dir: Path, run: ledger.RunContext) -> FeedResult:
    """Write the channel's full feed; replace the published file only when its content changed."""
    assert channel.feed is not None
    target = feed_path(channel, data_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    transfer = ledger.Transfer(source="hub", target=f"channel:{channel.id}", dataset=DATASET, run=run)
    shop = channel.feed.shop_url.rstrip("/")
    with ledger.recording(dsn, transfer):
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        tmp = Path(tmp_name)
        count = skipped = 0
        try:
            with os.fdopen(fd, "wb") as raw, connect(dsn) as conn:
                with etree.xmlfile(raw, encoding="utf-8") as xf:
                    xf.write_declaration()
                    with xf.element("rss", version="2.0", nsmap={"g": G_NS}), xf.element("channel"):
                        for tag, text in (
                            ("title", channel.feed.title),
                            ("link", shop),
                            ("description", f"Offers for {channel.id}"),
                        ):
                            el = etree.Element(tag)
                            el.text = text
                            xf.write(el)
                        with conn.cursor(name="google_feed") as cur:
                            cur.itersize = 5000
                            cur.execute(_OFFERS, (channel.id,))
                            for sku, gtin, name, desc, brand, category, price, currency, availability in cur:
                                if len(sku) > LIMITS["id"]:
                                    skipped += 1  # Google rejects longer ids; counted in the ledger
                                    continue
                                fields = [
                                    ("id", sku),
                                    ("title", _clip(name, LIMITS["title"])),
                                    ("description", _clip(desc or name, LIMITS["description"])),
                                    ("link", f"{shop}/p/{quote(sku)}"),
                                    ("image_link", f"{shop}/images/{quote(sku)}.jpg"),
                                    ("price", _price(price, currency)),
                                    ("availability", availability),
                                    ("condition", channel.feed.condition),
                                    ("brand", brand),
                                    ("gtin", _gtin_for_feed(gtin)),
                                    ("product_type", category),
                                ]
                                # Nested xf.element reuses the xmlns:g declared on <rss>, so items
                                # do not re-declare it (xf.write(element) would, on every item).
                                with xf.element("item"):
                                    for field_name, value in fields:
                                        if value:
                                            with xf.element(_g(field_name)):
                                                xf.write(value)
                                count += 1
                raw.flush()
                os.fsync(raw.fileno())
            digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
            previous = None
            if target.exists():
                previous = hashlib.sha256(target.read_bytes()).hexdigest()
            rewritten = previous != digest
            if rewritten:
                os.replace(tmp, target)
            else:
                tmp.unlink()
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        with connect(dsn) as conn:
            changed = conn.execute(
                """UPDATE hub.channel_offer SET published_version = version, published_at = now()
                   WHERE channel = %s AND published_version <> version""",
                (channel.id,),
            ).rowcount
            conn.execute(
                """INSERT INTO hub.feed_state (channel, path, sha256, item_count, transfer_id)
                   VALUES (%s, %s, %s, %s, %s)
                   ON CONFLICT (channel) DO UPDATE SET
                       path = EXCLUDED.path, sha256 = EXCLUDED.sha256, item_count = EXCLUDED.item_count,
                       written_at = now(), transfer_id = EXCLUDED.transfer_id""",
                (channel.id, str(target), digest, count, str(transfer.transfer_id)),
            )
            transfer.rows_read = count + skipped
            transfer.rows_written = count
            transfer.rows_rejected = skipped
            transfer.rows_changed = changed
            transfer.payload_sha256 = digest
            transfer.details = {"path": str(target), "rewritten": rewritten, "item_count": count}
            ledger.append(conn, transfer, "success")
    return FeedResult(channel.id, str(target), count, changed, rewritten, digest, skipped, str(transfer.transfer_id))
