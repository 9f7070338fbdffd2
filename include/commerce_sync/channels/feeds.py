"""Catalog feeds (Google Merchant RSS 2.0, Meta catalog RSS, Ceneo XML), streamed, checked, then published.

Writer chosen by measurement (REFERENCE.md, bench/feeds.py): items are rendered as pre-escaped
templated strings and written in chunks through one buffered handle (≈ 3× faster than one lxml
element per item, and ``xmlns:g`` is declared once on ``<rss>``). The SHA-256 of the file is computed
from the same bytes while writing. Every offer passes the pre-publish check
(:mod:`commerce_sync.channels.prepublish`) first; failures are quarantined, not written.

The file is written to a temporary name beside the target, fsynced, and validated by parsing it
back with the safe streaming parser (well-formed, every item has its required fields, item count
equals the hub's offers for the channel minus the quarantined ones). Only then does it replace the
published file with ``os.replace`` — and only if its content changed — so a crash or a failed
check mid-write leaves the previous feed intact. A configured ``target`` (SFTP or any
``ObjectStoragePath`` URL) receives a copy under a temporary name that is then renamed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import IO, Any, NamedTuple
from urllib.parse import quote

import psycopg

from commerce_sync.audit import ledger
from commerce_sync.channels import prepublish
from commerce_sync.channels.feed_publish import publish_copy
from commerce_sync.config import Channel, GoogleFeedSettings
from commerce_sync.db import connect
from commerce_sync.errors import ConfigError, DataError
from commerce_sync.sources import safe_xml

log = logging.getLogger(__name__)

G_NS = "http://base.google.com/ns/1.0"
DATASET = "channel_offer"
CHUNK_ITEMS = 2000  # items joined per write: large enough to amortise, small enough to keep memory flat

_OFFERS = """
SELECT o.sku, p.gtin, p.name, p.description, p.brand, p.category, o.price, o.currency, o.availability,
       o.quantity, o.floor_price
FROM hub.channel_offer AS o
JOIN hub.product AS p ON p.sku = o.sku
WHERE o.channel = %s
ORDER BY o.sku
"""
_COUNT = "SELECT count(*) FROM hub.channel_offer AS o JOIN hub.product AS p ON p.sku = o.sku WHERE o.channel = %s"


class FeedValidationError(DataError):
    """A written feed failed its parse-back check; the published file was left untouched."""


class Offer(NamedTuple):
    """One row of the feed query."""

    sku: str
    gtin: str | None
    name: str | None
    description: str | None
    brand: str | None
    category: str | None
    price: Decimal
    currency: str
    availability: str
    quantity: int
    floor_price: Decimal | None


# Characters XML 1.0 forbids (they would make the file unparseable) and the ones that need escaping.
# In text only & and < must be escaped (and > in "]]>"); attributes also need ".
_TEXT_WORK = re.compile(r"[&<\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]|]]>")
_ATTR_WORK = re.compile(r'[&<>"\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]')
_FORBIDDEN = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_URL_SAFE = re.compile(r"^[A-Za-z0-9_.~-]+$")


def xml_escape(text: str) -> str:
    """Text safe inside a double-quoted attribute (forbidden control characters dropped)."""
    if _ATTR_WORK.search(text) is None:
        return text
    text = _FORBIDDEN.sub("", text)
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def xml_text(text: str) -> str:
    """Text safe as element content (the common case, no special characters, costs one regex scan)."""
    if _TEXT_WORK.search(text) is None:
        return text
    text = _FORBIDDEN.sub("", text)
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def url_part(text: str) -> str:
    """``text`` percent-encoded for a URL path segment (SKUs are usually safe as they are)."""
    return text if _URL_SAFE.match(text) else quote(text, safe="")


def money(amount: Decimal) -> str:
    """``12.30`` from a Decimal (prices come from numeric(14,2), whose str() is already that)."""
    text = str(amount)
    return text if text[-3:-2] == "." and "E" not in text else f"{amount:.2f}"


def gtin_for_feed(gtin: str | None) -> str | None:
    """The hub pads GTINs to 14 digits; feeds get the shortest standard form (EAN-13 for 0-prefixed)."""
    if gtin is None:
        return None
    return gtin[1:] if len(gtin) == 14 and gtin.startswith("0") else gtin


@dataclass(frozen=True)
class FeedFormat:
    """One feed dialect: how the document starts and ends, how an item looks, what a valid item has."""

    kind: str
    item_tag: str
    required: tuple[str, ...]
    limits: dict[str, int]
    header: Callable[[Channel, GoogleFeedSettings], str]
    item: Callable[[Offer, GoogleFeedSettings, str], str]
    footer: str


def _rss_header(channel: Channel, feed: GoogleFeedSettings) -> str:
    shop = xml_escape(feed.shop_url.rstrip("/"))
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<rss version="2.0" xmlns:g="{G_NS}"><channel>'
        f"<title>{xml_escape(feed.title)}</title><link>{shop}</link>"
        f"<description>Offers for {xml_escape(channel.id)}</description>\n"
    )


def _google_item(o: Offer, feed: GoogleFeedSettings, shop: str) -> str:
    sku = url_part(o.sku)
    gtin = gtin_for_feed(o.gtin)
    return (
        f"<item><g:id>{xml_text(o.sku)}</g:id><g:title>{xml_text(o.name or '')}</g:title>"
        f"<g:description>{xml_text(o.description or o.name or '')}</g:description>"
        f"<g:link>{shop}/p/{sku}</g:link><g:image_link>{shop}/images/{sku}.jpg</g:image_link>"
        f"<g:price>{money(o.price)} {o.currency}</g:price><g:availability>{o.availability}</g:availability>"
        f"<g:condition>{feed.condition}</g:condition>"
        f"{f'<g:brand>{xml_text(o.brand)}</g:brand>' if o.brand else ''}"
        f"{f'<g:gtin>{gtin}</g:gtin>' if gtin else ''}"
        f"{f'<g:product_type>{xml_text(o.category)}</g:product_type>' if o.category else ''}</item>\n"
    )


def _meta_item(o: Offer, feed: GoogleFeedSettings, shop: str) -> str:
    # Meta reads the same RSS + g: dialect; its availability values are spelled with a space.
    sku = url_part(o.sku)
    availability = "in stock" if o.availability == "in_stock" else "out of stock"
    brand = f"<g:brand>{xml_text(o.brand)}</g:brand>" if o.brand else ""
    return (
        f"<item><g:id>{xml_text(o.sku)}</g:id><g:title>{xml_text(o.name or '')}</g:title>"
        f"<g:description>{xml_text(o.description or o.name or '')}</g:description>"
        f"<g:availability>{availability}</g:availability><g:condition>{feed.condition}</g:condition>"
        f"<g:price>{money(o.price)} {o.currency}</g:price>"
        f"<g:link>{shop}/p/{sku}</g:link><g:image_link>{shop}/images/{sku}.jpg</g:image_link>{brand}</item>\n"
    )


def _ceneo_header(channel: Channel, feed: GoogleFeedSettings) -> str:
    return '<?xml version="1.0" encoding="UTF-8"?>\n<offers version="1"><group name="other">\n'


def _ceneo_item(o: Offer, feed: GoogleFeedSettings, shop: str) -> str:
    sku = url_part(o.sku)
    avail = "1" if o.availability == "in_stock" and o.quantity > 0 else "99"
    gtin = gtin_for_feed(o.gtin)
    brand = f'<a name="Producent">{xml_text(o.brand)}</a>' if o.brand else ""
    ean = f'<a name="EAN">{gtin}</a>' if gtin else ""
    return (
        f'<o id="{xml_escape(o.sku)}" url="{shop}/p/{sku}" price="{money(o.price)}" avail="{avail}" '
        f'stock="{max(o.quantity, 0)}"><cat>{xml_text(o.category or "")}</cat>'
        f'<name>{xml_text(o.name or "")}</name><imgs><main url="{shop}/images/{sku}.jpg"/></imgs>'
        f"<desc>{xml_text(o.description or o.name or '')}</desc><attrs>{brand}{ean}</attrs></o>\n"
    )


FORMATS: dict[str, FeedFormat] = {
    "google_merchant_feed": FeedFormat(
        "google_merchant_feed",
        "item",
        ("id", "title", "description", "link", "image_link", "price", "availability", "condition"),
        dict(prepublish.GOOGLE_LIMITS),
        _rss_header,
        _google_item,
        "</channel></rss>\n",
    ),
    "meta_catalog_feed": FeedFormat(
        "meta_catalog_feed",
        "item",
        ("id", "title", "description", "availability", "condition", "price", "link", "image_link"),
        {"id": 100, "title": 200, "description": 9999},
        _rss_header,
        _meta_item,
        "</channel></rss>\n",
    ),
    "ceneo_feed": FeedFormat(
        "ceneo_feed",
        "o",
        ("@id", "@url", "@price", "@avail", "name"),
        {"id": 100, "name": 255},
        _ceneo_header,
        _ceneo_item,
        "</group></offers>\n",
    ),
}


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
    published_to: str | None = None


@dataclass
class RenderStats:
    """Counts and digest of one rendering."""

    items: int = 0
    rejected: list[prepublish.Rejection] | None = None
    sha256: str = ""
    written_skus: list[str] | None = None


def render(
    offers: Iterable[Sequence[Any]],
    fmt: FeedFormat,
    channel: Channel,
    feed: GoogleFeedSettings,
    handle: IO[bytes],
    *,
    collect_skus: bool = True,
) -> RenderStats:
    """Check and write ``offers`` as a complete document to ``handle``; hash what is written.

    Offers failing the pre-publish check are returned in ``rejected`` and not written.
    """
    digest = hashlib.sha256()
    stats = RenderStats(rejected=[], written_skus=[] if collect_skus else None)
    currencies = channel.currencies
    shop = xml_escape(feed.shop_url.rstrip("/"))
    limits = fmt.limits
    id_limit, title_limit, desc_limit = (
        limits.get("id", 10**9),
        limits.get("title", limits.get("name", 10**9)),
        limits.get("description", 10**9),
    )
    item = fmt.item

    def emit(text: str) -> None:
        data = text.encode("utf-8")
        digest.update(data)
        handle.write(data)

    emit(fmt.header(channel, feed))
    chunk: list[str] = []
    for row in offers:
        o = Offer._make(row)
        desc = o.description or o.name or ""
        # Fast path: the full check only runs when a cheap comparison says something is off.
        if (
            o.floor_price is None
            or o.price < o.floor_price
            or o.currency not in currencies
            or len(o.sku) > id_limit
            or len(o.name or "") > title_limit
            or len(desc) > desc_limit
        ):
            texts = {"id": o.sku, "title": o.name, "name": o.name, "description": desc}
            problems = prepublish.check_offer(
                channel.id,
                o.sku,
                price=o.price,
                floor_price=o.floor_price,
                currency=o.currency,
                currencies=currencies,
                texts=texts,
                limits=limits,
            )
            if problems:
                assert stats.rejected is not None
                stats.rejected.extend(problems)
                continue
        chunk.append(item(o, feed, shop))
        stats.items += 1
        if stats.written_skus is not None:
            stats.written_skus.append(o.sku)
        if len(chunk) >= CHUNK_ITEMS:
            emit("".join(chunk))
            chunk.clear()
    emit("".join(chunk))
    emit(fmt.footer)
    stats.sha256 = digest.hexdigest()
    return stats


def validate(path: Path, fmt: FeedFormat, expected_items: int) -> int:
    """Parse the file back with the safe streaming parser and check it; return the item count.

    Raises:
        FeedValidationError: not well-formed, an item lacks a required field, or the count differs.
    """
    count = 0
    try:
        for element in safe_xml.iterparse(path, fmt.item_tag):
            count += 1
            present = {f"@{name}" for name, value in element.attrib.items() if value}
            present.update(safe_xml.local_name(child) for child in element if (child.text or "").strip())
            missing = [name for name in fmt.required if name not in present]
            if missing:
                raise FeedValidationError(
                    f"{path}: item {count} (line {element.sourceline}) lacks required field(s) {missing}"
                )
    except safe_xml.XmlError as exc:
        raise FeedValidationError(f"{path}: the written feed is not well-formed XML: {exc}") from None
    if count != expected_items:
        raise FeedValidationError(
            f"{path}: {count} items written but the hub has {expected_items} publishable offers; "
            "the previous feed stays published. Re-run the task; if it repeats, offers changed during the write"
        )
    return count


def feed_path(channel: Channel, data_dir: Path) -> Path:
    """Absolute path of the channel's feed file."""
    if channel.feed is None:
        raise ConfigError(f"channel {channel.id!r} has no feed settings")
    path = Path(channel.feed.path)
    return path if path.is_absolute() else data_dir / path


def _sha256_of(path: Path) -> str | None:
    if not path.exists():
        return None
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _db_offers(conn: Any, channel_id: str) -> Iterator[tuple[Any, ...]]:
    with conn.cursor(name=f"feed_{channel_id}") as cur:
        cur.itersize = 10_000
        cur.execute(_OFFERS, (channel_id,))
        yield from cur


def write_feed(
    dsn: str,
    channel: Channel,
    data_dir: Path,
    run: ledger.RunContext,
    *,
    crash_after_items: int | None = None,
) -> FeedResult:
    """Write, validate and publish the channel's full feed; replace the file only when it changed.

    Args:
        dsn: hub database.
        channel: a feed channel.
        data_dir: base of relative feed paths.
        run: the Airflow run (for the ledger).
        crash_after_items: testing aid: raise after this many items, as a crash mid-write would.
    """
    fmt = FORMATS.get(channel.kind)
    if fmt is None or channel.feed is None:
        raise ConfigError(f"channel {channel.id!r} (kind {channel.kind}) is not a feed channel with a 'feed' section")
    feed = channel.feed
    target = feed_path(channel, data_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    transfer = ledger.Transfer(source="hub", target=f"channel:{channel.id}", dataset=DATASET, run=run)
    with ledger.recording(dsn, transfer):
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        tmp = Path(tmp_name)
        try:
            with connect(dsn) as conn:
                # One snapshot for the count and the rows, so concurrent pricing cannot skew the check.
                # (psycopg opens the transaction itself: set its level before the first statement.)
                conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
                conn.read_only = True
                (hub_count,) = conn.execute(_COUNT, (channel.id,)).fetchone() or (0,)
                rows: Iterable[tuple[Any, ...]] = _db_offers(conn, channel.id)
                if crash_after_items is not None:
                    rows = _crash_after(rows, crash_after_items)
                with os.fdopen(fd, "wb", buffering=1 << 20) as handle:
                    stats = render(rows, fmt, channel, feed, handle, collect_skus=False)
                    handle.flush()
                    os.fsync(handle.fileno())
                conn.rollback()
            rejected = stats.rejected or []
            rejected_skus = {r.sku for r in rejected}
            validate(tmp, fmt, hub_count - len(rejected_skus))
            previous = _sha256_of(target)
            rewritten = previous != stats.sha256
            if rewritten:
                os.replace(tmp, target)
            else:
                tmp.unlink()
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        published_to = publish_copy(target, feed) if feed.target else None
        with connect(dsn) as conn:
            quarantined = prepublish.quarantine_rejections(conn, channel.id, transfer.transfer_id, rejected)
            prepublish.resolve_all_but(conn, channel.id, transfer.transfer_id, rejected_skus)
            changed = conn.execute(
                """UPDATE hub.channel_offer SET published_version = version, published_at = now()
                   WHERE channel = %s AND published_version <> version AND NOT (sku = ANY(%s))""",
                (channel.id, sorted(rejected_skus)),
            ).rowcount
            conn.execute(
                """INSERT INTO hub.feed_state (channel, path, sha256, item_count, transfer_id)
                   VALUES (%s, %s, %s, %s, %s)
                   ON CONFLICT (channel) DO UPDATE SET
                       path = EXCLUDED.path, sha256 = EXCLUDED.sha256, item_count = EXCLUDED.item_count,
                       written_at = now(), transfer_id = EXCLUDED.transfer_id""",
                (channel.id, str(target), stats.sha256, stats.items, str(transfer.transfer_id)),
            )
            transfer.rows_read = stats.items + len(rejected_skus)
            transfer.rows_written = stats.items
            transfer.rows_rejected = len(rejected_skus)
            transfer.rows_changed = changed
            transfer.payload_sha256 = stats.sha256
            transfer.details = {
                "path": str(target),
                "format": channel.kind,
                "rewritten": rewritten,
                "item_count": stats.items,
                "quarantined": quarantined,
                "rejected_skus": sorted(rejected_skus)[:100],
                "published_to": published_to,
            }
            ledger.append(conn, transfer, "success")
    if rejected_skus:
        log.warning(
            "%s: %d offer(s) failed the pre-publish check and were quarantined (hub.quarantine, dataset %s): %s",
            channel.id,
            len(rejected_skus),
            DATASET,
            ", ".join(sorted(rejected_skus)[:20]),
        )
    return FeedResult(
        channel.id,
        str(target),
        stats.items,
        changed,
        rewritten,
        stats.sha256,
        len(rejected_skus),
        str(transfer.transfer_id),
        published_to,
    )


def _crash_after(rows: Iterable[tuple[Any, ...]], limit: int) -> Iterator[tuple[Any, ...]]:
    for number, row in enumerate(rows, 1):
        if number > limit:
            raise RuntimeError(f"simulated crash after {limit} items")
        yield row


# ---------------------------------------------------------------- publish targets
