"""Benchmark: catalog feed writing at N items (default 1M): items/s, peak RSS, and a parse-back proof.

Standalone. Each stage runs in a fresh ``spawn`` child so its peak RSS is its own:

* ``render``: the production writer (:func:`commerce_sync.channels.feeds.render`, pre-escaped
  templated item strings through one buffered handle, pre-publish check included) over N generated
  offers shaped as the hub query delivers them, for the Google, Meta and Ceneo formats;
* ``lxml``: the alternative, one ``lxml.etree.xmlfile`` element per field, at ``--compare-n`` items;
* ``validate``: the production parse-back check (safe streaming parser, required fields, item count);
* ``hub``: end to end from PostgreSQL, ``write_feed`` on a database ``cs_bench_feeds_<pid>`` (created,
  migrated, loaded with COPY, dropped at the end; ``--skip-hub`` leaves it out), also reported
  without its parse-back check.

Prints the numbers and writes ``bench/results/feeds-latest.json``. It reports; it never asserts timings.

    .venv/bin/python bench/feeds.py --n 1000000 [--compare-n 200000] [--skip-hub]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "include"))
sys.path.insert(0, str(ROOT))

BASE_URL = os.environ.get("BENCH_DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/postgres"
DESCRIPTION = "Solidny produkt do domu i ogrodu, gwarancja 24 miesiące, wysyłka w 24 h. " * 3
DESCRIPTION_ESCAPED = "Solidny produkt do domu & ogrodu, <gwarancja> 24 miesiące. " * 3
"""Every 10th item carries characters that must be escaped (& and <); names all carry quotes."""


def _channel(kind: str, path: str) -> Any:
    from commerce_sync.config import Channel, FeedSettings

    feed = FeedSettings(path=path, title="Bench & <feed>", shop_url="https://shop.example.com")
    return Channel(id="bench", kind=kind, pricing_rule="bench", feed=feed)


def _offer(i: int) -> tuple[Any, ...]:
    return (
        f"SKU-{i:07d}",
        f"0590{i:010d}",
        f'Produkt {i} "Żubr" {i % 97}',
        DESCRIPTION_ESCAPED if i % 10 == 0 else DESCRIPTION,
        f"Marka {i % 50}",
        f"Dom > Ogród > {i % 200}",
        Decimal(1000 + (i * 7919) % 90000) / 100,
        "PLN",
        "in_stock" if i % 10 else "out_of_stock",
        i % 40,
        Decimal("1.00"),
    )


def _feed_row(i: int) -> tuple[Any, ...]:
    """Offer ``i`` as the hub query hands it to the writer (``channels.feeds.COLUMNS``): prices as the
    text of numeric(14,2), the floor already compared by the database."""
    sku, gtin, name, desc, brand, category, price, currency, availability, quantity, floor = _offer(i)
    return (
        sku,
        gtin,
        name,
        desc,
        brand,
        category,
        str(price),
        currency,
        availability,
        quantity,
        price >= floor,
        str(floor),
    )


def _offers(n: int) -> Iterator[tuple[Any, ...]]:
    """N distinct offers: a cycle of 10,000 pre-built rows with a unique SKU each, so the writer's
    cost is measured rather than the synthetic data's (the hub stage measures the database path)."""
    base = [_feed_row(i) for i in range(min(n, 10_000))]
    size = len(base)
    for i in range(n):
        yield (f"SKU-{i:07d}", *base[i % size][1:])


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def stage_render(kind: str, n: int, out: str) -> dict[str, Any]:
    from commerce_sync.channels.feeds import FORMATS, render

    channel = _channel(kind, out)
    started = time.perf_counter()
    with open(out, "wb", buffering=1 << 20) as handle:
        stats = render(_offers(n), FORMATS[kind], channel, channel.feed, handle, collect_skus=False)
    seconds = time.perf_counter() - started
    return {
        "items": stats.items,
        "seconds": round(seconds, 2),
        "items_per_s": round(stats.items / seconds),
        "bytes": os.path.getsize(out),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "sha256": stats.sha256,
    }


def stage_lxml(n: int, out: str) -> dict[str, Any]:
    from lxml import etree

    from commerce_sync.channels.feeds import G_NS

    started = time.perf_counter()
    with open(out, "wb") as raw, etree.xmlfile(raw, encoding="utf-8") as xf:
        xf.write_declaration()
        with xf.element("rss", version="2.0", nsmap={"g": G_NS}), xf.element("channel"):
            for sku, gtin, name, desc, brand, category, price, currency, availability, *_ in _offers(n):
                with xf.element("item"):
                    for field, value in (
                        ("id", sku),
                        ("title", name),
                        ("description", desc),
                        ("link", f"https://shop.example.com/p/{sku}"),
                        ("image_link", f"https://shop.example.com/images/{sku}.jpg"),
                        ("price", f"{price} {currency}"),
                        ("availability", availability),
                        ("condition", "new"),
                        ("brand", brand),
                        ("gtin", gtin),
                        ("product_type", category),
                    ):
                        with xf.element(f"{{{G_NS}}}{field}"):
                            xf.write(value)
    seconds = time.perf_counter() - started
    return {"items": n, "seconds": round(seconds, 2), "items_per_s": round(n / seconds)}


def stage_validate(kind: str, path: str, expected: int) -> dict[str, Any]:
    from commerce_sync.channels.feeds import FORMATS, validate

    started = time.perf_counter()
    count = validate(Path(path), FORMATS[kind], expected)
    seconds = time.perf_counter() - started
    return {
        "items": count,
        "seconds": round(seconds, 2),
        "items_per_s": round(count / seconds),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
    }


def stage_hub_load(dsn: str, n: int) -> dict[str, Any]:
    from commerce_sync.db import connect

    tid = str(uuid.uuid4())
    started = time.perf_counter()
    with connect(dsn) as conn, conn.cursor() as cur:
        with cur.copy(
            "COPY hub.product (sku, gtin, name, brand, category, description, purchase_price, currency, "
            "vat_rate, row_hash, transfer_id) FROM STDIN"
        ) as copy:
            for sku, gtin, name, desc, brand, category, price, *_ in map(_offer, range(n)):
                copy.write_row((sku, gtin, name, brand, category, desc, price / 2, "PLN", "0.23", "h", tid))
        with cur.copy(
            "COPY hub.channel_offer (channel, sku, price, currency, quantity, availability, cost, floor_price, "
            "floor_applied, rule_id, rule_version, row_hash, transfer_id) FROM STDIN"
        ) as copy:
            for sku, _g, _n, _d, _b, _c, price, currency, availability, quantity, floor in map(_offer, range(n)):
                row = (sku, price, currency, quantity, availability, price / 2, floor)
                copy.write_row(("bench", *row, False, "bench", "1", "h", tid))
        conn.execute("ANALYZE hub.product")
        conn.execute("ANALYZE hub.channel_offer")
    return {"load_s": round(time.perf_counter() - started, 2)}


def stage_hub_write(dsn: str, work: str) -> dict[str, Any]:
    from commerce_sync.audit import ledger
    from commerce_sync.channels import feeds

    # Two phases of write_feed are timed on their own (it calls them through the module): the write
    # proper (count + streamed query + check + write + fsync) and the parse-back check.
    spent: dict[str, float] = {}

    def timed(name: str) -> Any:
        original = getattr(feeds, name)

        def run(*args: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(*args)
            finally:
                spent[name] = spent.get(name, 0.0) + time.perf_counter() - started

        setattr(feeds, name, run)

    timed("_write_snapshot")
    timed("validate")
    channel = _channel("google_merchant_feed", str(Path(work) / "hub-google.xml"))
    started = time.perf_counter()
    result = feeds.write_feed(dsn, channel, Path(work), ledger.RunContext(run_id="bench", task_id="feed"))
    seconds = time.perf_counter() - started
    items = result.item_count
    return {
        "items": items,
        "seconds": round(seconds, 2),
        "items_per_s": round(items / seconds),
        "write_seconds": round(spent["_write_snapshot"], 2),
        "write_items_per_s": round(items / spent["_write_snapshot"]),
        "parse_back_seconds": round(spent["validate"], 2),
        "parse_back_items_per_s": round(items / spent["validate"]),
        "bookkeeping_seconds": round(seconds - spent["_write_snapshot"] - spent["validate"], 2),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "note": "seconds: write + parse-back + rename + bookkeeping (quarantine, published_version, feed_state, "
        "ledger); write: count + streamed query + pre-publish check + render + write + fsync",
    }


def stage_hub(n: int, work: str) -> dict[str, Any]:
    from commerce_sync.db import drop_database, ensure_database, with_database
    from commerce_sync.hub.migrate import migrate

    dsn = with_database(BASE_URL, f"cs_bench_feeds_{os.getpid()}")
    ensure_database(dsn)
    try:
        migrate(dsn)
        loaded = in_child(stage_hub_load, dsn, n)
        return {**loaded, **in_child(stage_hub_write, dsn, work)}
    finally:
        drop_database(dsn)


def in_child(fn: Any, *args: Any) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as pool:
        result: dict[str, Any] = pool.apply(fn, args)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--compare-n", type=int, default=200_000, help="items for the lxml comparison")
    parser.add_argument("--skip-hub", action="store_true", help="leave out the end-to-end run from PostgreSQL")
    args = parser.parse_args()
    results: dict[str, Any] = {"benchmark": "feeds", "at": datetime.now(UTC).isoformat(timespec="seconds"), "n": args.n}
    with tempfile.TemporaryDirectory(prefix="cs_bench_feeds_") as work:
        for kind in ("google_merchant_feed", "meta_catalog_feed", "ceneo_feed"):
            out = str(Path(work) / f"{kind}.xml")
            rendered = in_child(stage_render, kind, args.n, out)
            checked = in_child(stage_validate, kind, out, args.n)
            results[kind] = {"render": rendered, "validate": checked}
            print(
                f"{kind:<22} render {rendered['items']:>9,} items {rendered['seconds']:7.2f} s "
                f"{rendered['items_per_s']:>9,}/s  {rendered['bytes'] / 1e6:7.1f} MB  peak RSS "
                f"{rendered['peak_rss_mb']:.0f} MB | parse-back {checked['items']:,} items "
                f"{checked['seconds']:.2f} s, peak RSS {checked['peak_rss_mb']:.0f} MB"
            )
            os.unlink(out)
        lxml = in_child(stage_lxml, args.compare_n, str(Path(work) / "lxml.xml"))
        results["lxml_xmlfile"] = lxml
        print(
            f"{'lxml xmlfile (compare)':<22} render {lxml['items']:>9,} items {lxml['seconds']:7.2f} s "
            f"{lxml['items_per_s']:>9,}/s"
        )
        if not args.skip_hub:
            hub = stage_hub(args.n, work)
            results["hub_end_to_end"] = hub
            print(
                f"{'hub end to end (google)':<22} {hub['items']:>9,} items {hub['seconds']:7.2f} s "
                f"{hub['items_per_s']:>9,}/s  peak RSS {hub['peak_rss_mb']:.0f} MB (load {hub['load_s']} s)\n"
                f"{'  of which the write':<22} {hub['items']:>9,} items {hub['write_seconds']:7.2f} s "
                f"{hub['write_items_per_s']:>9,}/s  (count + query + check + write + fsync); parse-back "
                f"{hub['parse_back_seconds']} s, rename + bookkeeping {hub['bookkeeping_seconds']} s"
            )
    out = ROOT / "bench" / "results" / "feeds-latest.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"# wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
