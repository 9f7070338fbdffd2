"""Google Merchant feed written from the hub: content, atomic unchanged-skip, ledger."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from lxml import etree

from commerce_sync.audit import ledger
from commerce_sync.channels.google_feed import G_NS, write_google_feed
from commerce_sync.config import Channel, GoogleFeedSettings, PricingRule
from commerce_sync.db import connect
from commerce_sync.pricing.compute import compute_channel_offers
from tests.integration.test_pricing_compute import seed_products

pytestmark = pytest.mark.integration
RUN = ledger.RunContext(run_id="test", dag_id="test", task_id="feed")
COMPUTE_RUN = ledger.RunContext(run_id="test", dag_id="test", task_id="compute")
RULE = PricingRule(id="g-rule", version=1, margin_pct=Decimal(20), min_margin_pct=Decimal(5))
CHANNEL = Channel(
    id="google",
    kind="google_merchant_feed",
    pricing_rule="g-rule",
    feed=GoogleFeedSettings(path="feeds/google.xml", title="Demo & <Shop>", shop_url="https://shop.example.com"),
)


def _items(path: Path) -> dict[str, dict[str, str]]:
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    root = etree.parse(str(path), parser).getroot()
    assert root.tag == "rss" and root.get("version") == "2.0"
    items = {}
    for item in root.iter("item"):
        fields = {etree.QName(child).localname: child.text for child in item}
        assert all(etree.QName(child).namespace == G_NS for child in item)
        items[fields["id"]] = fields
    return items


def test_feed_holds_whole_catalog_and_skips_unchanged_rewrite(hub_dsn: str, tmp_path: Path) -> None:
    seed_products(hub_dsn, 30)
    with connect(hub_dsn) as conn:
        conn.execute(
            "UPDATE hub.product SET name = 'Kawa <Arabica> & \"mleko\"', brand = 'Żubr' WHERE sku = 'SKU-00001'"
        )
        conn.execute("UPDATE hub.stock SET quantity = 0, reserved = 0 WHERE sku = 'SKU-00002'")
    compute_channel_offers(hub_dsn, CHANNEL, RULE, COMPUTE_RUN)
    first = write_google_feed(hub_dsn, CHANNEL, tmp_path, RUN)
    assert first.rewritten and first.item_count == 30 and first.items_changed == 30
    items = _items(Path(first.path))
    assert len(items) == 30
    assert items["SKU-00001"]["title"] == 'Kawa <Arabica> & "mleko"'
    assert items["SKU-00001"]["brand"] == "Żubr"
    assert items["SKU-00002"]["availability"] == "out_of_stock"
    with connect(hub_dsn) as conn:
        price = conn.execute(
            "SELECT price FROM hub.channel_offer WHERE channel = 'google' AND sku = 'SKU-00005'"
        ).fetchone()[0]
    assert items["SKU-00005"]["price"] == f"{price:.2f} PLN"
    raw = Path(first.path).read_text(encoding="utf-8")
    assert raw.count("xmlns:g=") == 1

    mtime = Path(first.path).stat().st_mtime_ns
    second = write_google_feed(hub_dsn, CHANNEL, tmp_path, RUN)
    assert not second.rewritten and second.items_changed == 0 and second.sha256 == first.sha256
    assert Path(first.path).stat().st_mtime_ns == mtime
    assert not [p for p in Path(first.path).parent.iterdir() if p.name.endswith(".tmp")]

    with connect(hub_dsn) as conn:
        conn.execute("UPDATE hub.product SET purchase_price = purchase_price * 3 WHERE sku = 'SKU-00007'")
    compute_channel_offers(hub_dsn, CHANNEL, RULE, COMPUTE_RUN)
    third = write_google_feed(hub_dsn, CHANNEL, tmp_path, RUN)
    assert third.rewritten and third.items_changed == 1
    with connect(hub_dsn) as conn:
        rows = conn.execute(
            "SELECT rows_changed, payload_sha256 FROM audit.transfer WHERE task_id = 'feed' ORDER BY seq"
        ).fetchall()
    assert [r[0] for r in rows] == [30, 0, 1]
    assert rows[2][1] == third.sha256


def test_crash_mid_write_keeps_previous_feed_and_leaves_no_temp(hub_dsn: str, tmp_path: Path) -> None:
    from commerce_sync.channels.feeds import write_feed

    seed_products(hub_dsn, 30)
    compute_channel_offers(hub_dsn, CHANNEL, RULE, COMPUTE_RUN)
    first = write_google_feed(hub_dsn, CHANNEL, tmp_path, RUN)
    before = Path(first.path).read_bytes()
    with connect(hub_dsn) as conn:
        conn.execute("UPDATE hub.product SET purchase_price = purchase_price * 2")
    compute_channel_offers(hub_dsn, CHANNEL, RULE, COMPUTE_RUN)
    with pytest.raises(RuntimeError, match="simulated crash after 10 items"):
        write_feed(hub_dsn, CHANNEL, tmp_path, RUN, crash_after_items=10)
    assert Path(first.path).read_bytes() == before
    assert not [p for p in Path(first.path).parent.iterdir() if p.name.endswith(".tmp")]
    with connect(hub_dsn) as conn:
        status = conn.execute("SELECT status FROM audit.transfer ORDER BY seq DESC LIMIT 1").fetchone()
    assert status == ("failed",)


def test_item_count_and_required_fields_are_checked(tmp_path: Path) -> None:
    from commerce_sync.channels.feeds import FORMATS, FeedValidationError, validate

    path = tmp_path / "feed.xml"
    path.write_text(
        f'<?xml version="1.0"?><rss version="2.0" xmlns:g="{G_NS}"><channel>'
        "<item><g:id>A</g:id><g:title>t</g:title><g:description>d</g:description><g:link>l</g:link>"
        "<g:image_link>i</g:image_link><g:price>1.00 PLN</g:price><g:availability>in_stock</g:availability>"
        "<g:condition>new</g:condition></item></channel></rss>",
        encoding="utf-8",
    )
    google = FORMATS["google_merchant_feed"]
    assert validate(path, google, 1) == 1
    with pytest.raises(FeedValidationError, match="1 items written but the hub has 2 publishable offers"):
        validate(path, google, 2)
    path.write_text(path.read_text(encoding="utf-8").replace("<g:title>t</g:title>", ""), encoding="utf-8")
    with pytest.raises(FeedValidationError, match=r"lacks required field\(s\) \['title'\]"):
        validate(path, google, 1)
    path.write_text("<rss><channel><item>", encoding="utf-8")
    with pytest.raises(FeedValidationError, match="not well-formed"):
        validate(path, google, 1)


def test_prepublish_rejections_are_quarantined_not_written(hub_dsn: str, tmp_path: Path) -> None:
    seed_products(hub_dsn, 30)
    with connect(hub_dsn) as conn:
        conn.execute("UPDATE hub.product SET name = repeat('x', 151) WHERE sku = 'SKU-00003'")
        conn.execute("UPDATE hub.product SET description = repeat('\u0001d', 2600) WHERE sku = 'SKU-00004'")
    compute_channel_offers(hub_dsn, CHANNEL, RULE, COMPUTE_RUN)
    with connect(hub_dsn) as conn:  # a copy that drifted below its floor (the CHECK guards price >= floor)
        conn.execute(
            "ALTER TABLE hub.channel_offer DROP CONSTRAINT IF EXISTS channel_offer_check; "
            "UPDATE hub.channel_offer SET floor_price = price + 1 WHERE sku = 'SKU-00006'"
        )
    result = write_google_feed(hub_dsn, CHANNEL, tmp_path, RUN)
    assert (result.item_count, result.skipped) == (27, 3)
    items = _items(Path(result.path))
    assert {"SKU-00003", "SKU-00004", "SKU-00006"}.isdisjoint(items)
    with connect(hub_dsn) as conn:
        rows = conn.execute(
            "SELECT record_key, expectation FROM hub.quarantine WHERE dataset = 'channel_offer' ORDER BY 1"
        ).fetchall()
    assert rows == [
        ("SKU-00003", "title_max_length"),
        ("SKU-00004", "description_max_length"),
        ("SKU-00006", "price_at_least_floor"),
    ]
    write_google_feed(hub_dsn, CHANNEL, tmp_path, RUN)  # idempotent: nothing quarantined twice
    with connect(hub_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM hub.quarantine").fetchone() == (3,)


@pytest.mark.parametrize("kind", ["meta_catalog_feed", "ceneo_feed"])
def test_meta_and_ceneo_feeds_parse_back_and_publish_to_object_store(hub_dsn: str, tmp_path: Path, kind: str) -> None:
    seed_products(hub_dsn, 12)
    store = tmp_path / "store"
    channel = Channel(
        id="other",
        kind=kind,
        pricing_rule="g-rule",
        feed=GoogleFeedSettings(
            path="feeds/other.xml",
            title="Demo",
            shop_url="https://shop.example.com",
            target=f"file://{store}/published/other.xml",
        ),
    )
    compute_channel_offers(hub_dsn, channel, RULE, COMPUTE_RUN)
    result = write_feed_for(hub_dsn, channel, tmp_path)
    assert result.item_count == 12 and result.published_to == f"file://{store}/published/other.xml"
    published = store / "published" / "other.xml"
    assert published.read_bytes() == Path(result.path).read_bytes()
    assert not list((store / "published").glob("*.tmp"))
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    root = etree.parse(str(published), parser).getroot()
    if kind == "ceneo_feed":
        offers = root.findall("group/o")
        assert root.tag == "offers" and len(offers) == 12
        first = offers[0]
        assert first.get("id") == "SKU-00000" and first.get("avail") in {"1", "99"} and first.get("stock").isdigit()
        assert first.find("name").text and first.find("imgs/main").get("url").endswith(".jpg")
    else:
        items = root.findall("channel/item")
        assert len(items) == 12
        assert items[0].find(f"{{{G_NS}}}availability").text in {"in stock", "out of stock"}


def write_feed_for(dsn: str, channel: Channel, base: Path):
    from commerce_sync.channels.feeds import write_feed

    return write_feed(dsn, channel, base, RUN)
