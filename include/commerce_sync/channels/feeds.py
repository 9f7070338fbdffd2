"""Catalog feeds (Google Merchant RSS 2.0, Meta catalog RSS, Ceneo XML), streamed, checked, then published.

Writer chosen by measurement (REFERENCE.md, bench/feeds.py): items are rendered as pre-escaped
templated strings and written in chunks through one buffered handle (≈ 3× faster than one lxml
element per item, and ``xmlns:g`` is declared once on ``<rss>``). The SHA-256 of the file is computed
from the same bytes while writing. Every offer passes the pre-publish check
(:mod:`commerce_sync.channels.prepublish`) first; failures are quarantined, not written.

The rows are streamed from PostgreSQL (``cursor.stream`` in chunks of 10,000 rows: the server sends
while the writer renders, and psycopg builds the rows in C). Nothing is decoded into ``Decimal`` per
row: prices arrive as the text the database prints for numeric(14,2) and are written as they are,
and the floor comparison is made by the database on the numeric values. Per item the writer makes
one cheap comparison for the check and one regex scan over the item's free-text fields; only an
item that needs it takes the full check or the per-field escaping.

The file is written to a temporary name beside the target, fsynced, and validated by parsing it
back with a safe streaming parser (well-formed, every item has its required fields, item count
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
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import quote

import psycopg
from lxml import etree

from commerce_sync import registry, safe_xml
from commerce_sync.audit import ledger
from commerce_sync.channels import prepublish
from commerce_sync.channels.feed_publish import publish_copy
from commerce_sync.config import Channel, FeedSettings
from commerce_sync.db import connect
from commerce_sync.errors import ConfigError, DataError

if TYPE_CHECKING:
    from airflow.sdk import Asset

log = logging.getLogger(__name__)

G_NS = "http://base.google.com/ns/1.0"
DATASET = "channel_offer"
CHUNK_ITEMS = 2000  # items joined per write: large enough to amortise, small enough to keep memory flat

COLUMNS = (
    "sku", "gtin", "name", "description", "brand", "category",
    "price", "currency", "availability", "quantity", "at_floor", "floor_price",
)  # fmt: skip
"""A feed row (:func:`render`'s input), as the hub query delivers it: texts are ``str`` (absent ones
``''``); ``price`` and ``floor_price`` are the text of numeric(14,2) (``"12.30"``); ``quantity`` is an
``int``; ``at_floor`` is ``price >= floor_price`` compared as numbers by the database (``None`` when
there is no floor)."""

_OFFERS = """
SELECT o.sku, coalesce(p.gtin, ''), p.name, coalesce(p.description, ''), coalesce(p.brand, ''),
       coalesce(p.category, ''), o.price::text, o.currency, o.availability, o.quantity,
       o.price >= o.floor_price, o.floor_price::text
FROM hub.channel_offer AS o
JOIN hub.product AS p ON p.sku = o.sku
WHERE o.channel = %s
ORDER BY o.sku
"""
STREAM_ROWS = 10_000  # rows per chunk of the streamed query (libpq chunked rows mode)
_COUNT = "SELECT count(*) FROM hub.channel_offer AS o JOIN hub.product AS p ON p.sku = o.sku WHERE o.channel = %s"


class FeedValidationError(DataError):
    """A written feed failed its parse-back check; the published file was left untouched."""


# Characters XML 1.0 forbids (they would make the file unparseable) and the ones that need escaping.
# In text only & and < must be escaped (and > in "]]>"); attributes also need ".
_TEXT_WORK = re.compile(r"[&<\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]|]]>")
_TEXT_CHARS = re.compile(r"[&<\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
"""``_TEXT_WORK`` without "]]>": a bare character class, which ``re`` scans ≈ 3x faster than the alternation."""
_ATTR_WORK = re.compile(r'[&<>"\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]')
_FORBIDDEN = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_URL_SAFE = re.compile(r"^[A-Za-z0-9_.~-]+$")
"""A SKU matching this needs no escaping anywhere: in a URL, in text or in an attribute."""


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


def money(amount: Decimal | str) -> str:
    """``12.30`` from a price (numeric(14,2) prints as exactly that, so it is used as it is)."""
    text = str(amount)
    return text if text[-3:-2] == "." and "E" not in text else f"{Decimal(text):.2f}"


def gtin_for_feed(gtin: str | None) -> str | None:
    """The hub pads GTINs to 14 digits; feeds get the shortest standard form (EAN-13 for 0-prefixed)."""
    if gtin is None:
        return None
    return gtin[1:] if len(gtin) == 14 and gtin.startswith("0") else gtin


ItemTemplate = Callable[[str, str, str, str, str, str, str, str, str, str, str, int, str, str], str]
"""Renders one item from escaped values: ``(sku_text, sku_attr, sku_url, gtin, title, description,
brand, category, price, currency, availability, quantity, shop, condition)``; ``shop`` is the
attribute-escaped shop URL without its trailing slash. Optional values are ``''`` when absent."""


@dataclass(frozen=True)
class FeedFormat:
    """One feed dialect: how the document starts and ends, how an item looks, what a valid item has.

    ``required`` names the item's child elements (local names, in ``field_ns``) that must have text,
    and with ``@`` its attributes that must be non-empty.
    """

    kind: str
    item_tag: str
    required: tuple[str, ...]
    limits: dict[str, int]
    header: Callable[[Channel, FeedSettings], str]
    item: ItemTemplate
    footer: str
    field_ns: str | None = None


def _rss_header(channel: Channel, feed: FeedSettings) -> str:
    shop = xml_escape(feed.shop_url.rstrip("/"))
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<rss version="2.0" xmlns:g="{G_NS}"><channel>'
        f"<title>{xml_escape(feed.title)}</title><link>{shop}</link>"
        f"<description>Offers for {xml_escape(channel.id)}</description>\n"
    )


def _google_item(
    sku: str,
    sku_attr: str,
    url: str,
    gtin: str,
    title: str,
    desc: str,
    brand: str,
    category: str,
    price: str,
    currency: str,
    availability: str,
    quantity: int,
    shop: str,
    condition: str,
) -> str:
    return (
        f"<item><g:id>{sku}</g:id><g:title>{title}</g:title><g:description>{desc}</g:description>"
        f"<g:link>{shop}/p/{url}</g:link><g:image_link>{shop}/images/{url}.jpg</g:image_link>"
        f"<g:price>{price} {currency}</g:price><g:availability>{availability}</g:availability>"
        f"<g:condition>{condition}</g:condition>"
        f"{f'<g:brand>{brand}</g:brand>' if brand else ''}"
        f"{f'<g:gtin>{gtin}</g:gtin>' if gtin else ''}"
        f"{f'<g:product_type>{category}</g:product_type>' if category else ''}</item>\n"
    )


def _meta_item(
    sku: str,
    sku_attr: str,
    url: str,
    gtin: str,
    title: str,
    desc: str,
    brand: str,
    category: str,
    price: str,
    currency: str,
    availability: str,
    quantity: int,
    shop: str,
    condition: str,
) -> str:
    # Meta reads the same RSS + g: dialect; its availability values are spelled with a space.
    return (
        f"<item><g:id>{sku}</g:id><g:title>{title}</g:title><g:description>{desc}</g:description>"
        f"<g:availability>{'in stock' if availability == 'in_stock' else 'out of stock'}</g:availability>"
        f"<g:condition>{condition}</g:condition><g:price>{price} {currency}</g:price>"
        f"<g:link>{shop}/p/{url}</g:link><g:image_link>{shop}/images/{url}.jpg</g:image_link>"
        f"{f'<g:brand>{brand}</g:brand>' if brand else ''}</item>\n"
    )


def _ceneo_header(channel: Channel, feed: FeedSettings) -> str:
    return '<?xml version="1.0" encoding="UTF-8"?>\n<offers version="1"><group name="other">\n'


def _ceneo_item(
    sku: str,
    sku_attr: str,
    url: str,
    gtin: str,
    title: str,
    desc: str,
    brand: str,
    category: str,
    price: str,
    currency: str,
    availability: str,
    quantity: int,
    shop: str,
    condition: str,
) -> str:
    stock = max(quantity, 0)
    avail = "1" if availability == "in_stock" and stock > 0 else "99"
    brand = f'<a name="Producent">{brand}</a>' if brand else ""
    ean = f'<a name="EAN">{gtin}</a>' if gtin else ""
    return (
        f'<o id="{sku_attr}" url="{shop}/p/{url}" price="{price}" avail="{avail}" stock="{stock}">'
        f'<cat>{category}</cat><name>{title}</name><imgs><main url="{shop}/images/{url}.jpg"/></imgs>'
        f"<desc>{desc}</desc><attrs>{brand}{ean}</attrs></o>\n"
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
        G_NS,
    ),
    "meta_catalog_feed": FeedFormat(
        "meta_catalog_feed",
        "item",
        ("id", "title", "description", "availability", "condition", "price", "link", "image_link"),
        {"id": 100, "title": 200, "description": 9999},
        _rss_header,
        _meta_item,
        "</channel></rss>\n",
        G_NS,
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

_FEED_TITLES = {
    "google_merchant_feed": "Google Merchant Center",
    "meta_catalog_feed": "Meta catalog",
    "ceneo_feed": "Ceneo",
}


def _feed_asset(channel: Channel) -> Asset:
    from commerce_sync import assets  # imports Airflow: only when a task asks

    if channel.feed is None:
        raise ConfigError(f"channel {channel.id!r} has no feed settings")
    return assets.feed_file(channel.id, channel.feed.path)


for _kind, _format in FORMATS.items():
    registry.register(
        registry.ChannelKind(
            name=_kind,
            family="feed",
            title=_FEED_TITLES[_kind],
            capabilities=frozenset({"publish"}),
            asset=_feed_asset,
            details={"format": _format},
        )
    )


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
    feed: FeedSettings,
    handle: IO[bytes],
    *,
    collect_skus: bool = True,
) -> RenderStats:
    """Check and write ``offers`` (rows of :data:`COLUMNS`) as a complete document to ``handle``.

    Offers failing the pre-publish check are returned in ``rejected`` and not written. The SHA-256
    of what is written is in the result.
    """
    digest = hashlib.sha256()
    stats = RenderStats(rejected=[], written_skus=[] if collect_skus else None)
    rejected = stats.rejected
    written = stats.written_skus
    assert rejected is not None
    currencies = channel.currencies
    shop = xml_escape(feed.shop_url.rstrip("/"))
    condition = feed.condition
    limits = fmt.limits
    id_limit, title_limit, desc_limit = (
        limits.get("id", 10**9),
        limits.get("title", limits.get("name", 10**9)),
        limits.get("description", 10**9),
    )
    item = fmt.item
    needs_work = _TEXT_CHARS.search
    url_safe = _URL_SAFE.match

    def output(data: bytes) -> None:
        digest.update(data)
        handle.write(data)

    # Hashing and writing release the GIL, so a second thread does them while the next chunk renders;
    # waiting for the previous chunk before handing over the next keeps the order and bounds memory.
    pending: Future[None] | None = None

    def emit(text: str) -> None:
        nonlocal pending
        data = text.encode("utf-8")
        if pending is not None:
            pending.result()
        pending = writer.submit(output, data)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="feed-writer") as writer:
        emit(fmt.header(channel, feed))
        chunk: list[str] = []
        append = chunk.append
        count = 0
        for sku, gtin, name, desc, brand, category, price, currency, availability, quantity, at_floor, floor in offers:
            desc = desc or name or ""  # Google wants a description: the title stands in
            # Fast path: the full check only runs when a cheap comparison says something is off.
            if (
                at_floor is not True
                or currency not in currencies
                or len(sku) > id_limit
                or len(name) > title_limit
                or len(desc) > desc_limit
            ):
                problems = prepublish.check_offer(
                    channel.id,
                    sku,
                    price=price,
                    floor_price=floor,
                    currency=currency,
                    currencies=currencies,
                    texts={"id": sku, "title": name, "name": name, "description": desc},
                    limits=limits,
                )
                if problems:
                    rejected.extend(problems)
                    continue
            if url_safe(sku):
                sku_text = sku_attr = url = sku
            else:
                sku_text, sku_attr, url = xml_text(sku), xml_escape(sku), quote(sku, safe="")
            # One scan over all free-text fields; only an item with something to escape escapes field by field.
            texts = f"{name}\n{desc}\n{brand}\n{category}"
            if needs_work(texts) is not None or "]]>" in texts:
                name, desc, brand, category = xml_text(name), xml_text(desc), xml_text(brand), xml_text(category)
            if len(gtin) == 14 and gtin[0] == "0":
                gtin = gtin[1:]
            append(
                item(
                    sku_text,
                    sku_attr,
                    url,
                    gtin,
                    name,
                    desc,
                    brand,
                    category,
                    price if price[-3:-2] == "." else money(price),
                    currency,
                    availability,
                    quantity,
                    shop,
                    condition,
                )
            )
            count += 1
            if written is not None:
                written.append(sku)
            if len(chunk) >= CHUNK_ITEMS:
                emit("".join(chunk))
                chunk.clear()
        emit("".join(chunk))
        emit(fmt.footer)
        if pending is not None:
            pending.result()
    stats.items = count
    stats.sha256 = digest.hexdigest()
    return stats


def validate(path: Path, fmt: FeedFormat, expected_items: int) -> int:
    """Parse the file back with a safe streaming parser and check it; return the item count.

    The parser settings are :mod:`commerce_sync.safe_xml`'s (no entities, no DTD, no
    network) and a DOCTYPE is refused; lxml hands over only the finished items (tag filter), each
    cleared after its check, so Python sees one event per item rather than two per element.

    Raises:
        FeedValidationError: not well-formed, an item lacks a required field, or the count differs.
    """
    ns = f"{{{fmt.field_ns}}}" if fmt.field_ns else ""
    children = frozenset(ns + name for name in fmt.required if not name.startswith("@"))
    attributes = [name[1:] for name in fmt.required if name.startswith("@")]
    count = 0
    try:
        events = etree.iterparse(
            str(path), events=("end",), tag=f"{{*}}{fmt.item_tag}", remove_comments=True, **safe_xml.SAFE_OPTIONS
        )
        for _event, element in events:
            count += 1
            if count == 1 and element.getroottree().docinfo.internalDTD is not None:
                raise FeedValidationError(f"{path}: the written feed has a DOCTYPE; feeds are written without one")
            present = {child.tag for child in element if (child.text or "").strip()}
            if not children <= present or not all(element.get(name) for name in attributes):
                _raise_missing(path, fmt, element, count)
            element.clear(keep_tail=True)
            parent = element.getparent()
            if parent is not None:
                while element.getprevious() is not None:
                    del parent[0]
    except etree.XMLSyntaxError as exc:
        raise FeedValidationError(f"{path}: the written feed is not well-formed XML: {exc}") from None
    if count != expected_items:
        raise FeedValidationError(
            f"{path}: {count} items written but the hub has {expected_items} publishable offers; "
            "the previous feed stays published. Re-run the task; if it repeats, offers changed during the write"
        )
    return count


def _raise_missing(path: Path, fmt: FeedFormat, element: etree._Element, number: int) -> None:
    # Field names are compared without namespace here (as a reader of the feed would find them), so
    # an item only fails when a field is really absent or empty.
    present = {f"@{name}" for name, value in element.attrib.items() if value}
    present.update(safe_xml.local_name(child) for child in element if (child.text or "").strip())
    missing = [name for name in fmt.required if name not in present]
    if missing:
        raise FeedValidationError(
            f"{path}: item {number} (line {element.sourceline}) lacks required field(s) {missing}"
        )


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


def _db_offers(conn: Any, channel_id: str) -> Generator[tuple[Any, ...], None, None]:
    # Chunked streaming beat COPY TO STDOUT (psycopg reads COPY one row per call) and a named cursor
    # (whose FETCH round trips leave the server idle while the writer works), see bench/README.md.
    with conn.cursor() as cur:
        yield from cur.stream(_OFFERS, (channel_id,), size=STREAM_ROWS)


def _write_snapshot(
    dsn: str, channel: Channel, fmt: FeedFormat, fd: int, crash_after_items: int | None
) -> tuple[int, RenderStats]:
    """Count the channel's offers and write them to ``fd`` (fsynced), both from one snapshot."""
    assert channel.feed is not None
    with connect(dsn) as conn:
        # One snapshot for the count and the rows, so concurrent pricing cannot skew the check.
        # (psycopg opens the transaction itself: set its level before the first statement.)
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        (hub_count,) = conn.execute(_COUNT, (channel.id,)).fetchone() or (0,)
        # Closed before the connection: a failed write ends the streamed query before the rollback.
        with closing(_db_offers(conn, channel.id)) as offers:
            rows: Iterable[tuple[Any, ...]] = offers
            if crash_after_items is not None:
                rows = _crash_after(rows, crash_after_items)
            with os.fdopen(fd, "wb", buffering=1 << 20) as handle:
                stats = render(rows, fmt, channel, channel.feed, handle, collect_skus=False)
                handle.flush()
                os.fsync(handle.fileno())
        conn.rollback()
    return hub_count, stats


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
    spec = registry.get(channel.kind)
    fmt = spec.details.get("format")
    if not isinstance(fmt, FeedFormat) or channel.feed is None:
        raise ConfigError(f"channel {channel.id!r} (kind {channel.kind}) is not a feed channel with a 'feed' section")
    feed = channel.feed
    target = feed_path(channel, data_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    transfer = ledger.Transfer(source="hub", target=f"channel:{channel.id}", dataset=DATASET, run=run)
    with ledger.recording(dsn, transfer):
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        tmp = Path(tmp_name)
        try:
            hub_count, stats = _write_snapshot(dsn, channel, fmt, fd, crash_after_items)
            rejected = stats.rejected or []
            rejected_skus = {r.sku for r in rejected}
            validate(tmp, fmt, hub_count - len(rejected_skus))
            previous = _sha256_of(target)
            rewritten = previous != stats.sha256
            if rewritten:
                os.chmod(tmp, feed.file_mode)  # mkstemp's 0600 would hide the feed from a web server
                os.replace(tmp, target)
            elif (target.stat().st_mode & 0o777) != feed.file_mode:
                os.chmod(target, feed.file_mode)  # an unchanged feed written before the mode was set
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
