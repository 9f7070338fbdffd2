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
