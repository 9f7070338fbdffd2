"""Google Merchant feed written from the hub: content, atomic unchanged-skip, ledger."""

from __future__ import annotations

import hashlib
from decimal import Decimal
from pathlib import Path

import pytest
from lxml import etree

from commerce_sync.audit import ledger
from commerce_sync.channels.feeds import G_NS, write_feed
from commerce_sync.config import Channel, FeedSettings, PricingRule
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
    feed=FeedSettings(path="feeds/google.xml", title="Demo & <Shop>", shop_url="https://shop.example.com"),
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
    first = write_feed(hub_dsn, CHANNEL, tmp_path, RUN)
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
    second = write_feed(hub_dsn, CHANNEL, tmp_path, RUN)
    assert not second.rewritten and second.items_changed == 0 and second.sha256 == first.sha256
    assert Path(first.path).stat().st_mtime_ns == mtime
    assert not [p for p in Path(first.path).parent.iterdir() if p.name.endswith(".tmp")]

    with connect(hub_dsn) as conn:
        conn.execute("UPDATE hub.product SET purchase_price = purchase_price * 3 WHERE sku = 'SKU-00007'")
    compute_channel_offers(hub_dsn, CHANNEL, RULE, COMPUTE_RUN)
    third = write_feed(hub_dsn, CHANNEL, tmp_path, RUN)
    assert third.rewritten and third.items_changed == 1
    with connect(hub_dsn) as conn:
        rows = conn.execute(
            "SELECT rows_changed, payload_sha256 FROM audit.transfer WHERE task_id = 'feed' ORDER BY seq"
        ).fetchall()
    assert [r[0] for r in rows] == [30, 0, 1]
    assert rows[2][1] == third.sha256


@pytest.mark.parametrize("file_mode", [None, "0640"], ids=["default-0644", "configured-0640"])
def test_published_feed_file_is_readable_by_a_web_server(hub_dsn: str, tmp_path: Path, file_mode: str | None) -> None:
    """mkstemp creates 0600; the published feed gets the configured mode (default 0644) before the rename."""
    settings = {"path": "feeds/google.xml", "title": "t", "shop_url": "https://shop.example.com"}
    feed = FeedSettings.model_validate(settings if file_mode is None else {**settings, "file_mode": file_mode})
    channel = CHANNEL.model_copy(update={"feed": feed})
    expected = 0o644 if file_mode is None else 0o640
    seed_products(hub_dsn, 5)
    compute_channel_offers(hub_dsn, channel, RULE, COMPUTE_RUN)
    first = write_feed(hub_dsn, channel, tmp_path, RUN)
    assert first.rewritten and Path(first.path).stat().st_mode & 0o777 == expected
    Path(first.path).chmod(0o600)  # e.g. written by a version without the setting: fixed even when unchanged
    second = write_feed(hub_dsn, channel, tmp_path, RUN)
    assert not second.rewritten and Path(first.path).stat().st_mode & 0o777 == expected


def test_crash_mid_write_keeps_previous_feed_and_leaves_no_temp(hub_dsn: str, tmp_path: Path) -> None:
    from commerce_sync.channels.feeds import write_feed

    seed_products(hub_dsn, 30)
    compute_channel_offers(hub_dsn, CHANNEL, RULE, COMPUTE_RUN)
    first = write_feed(hub_dsn, CHANNEL, tmp_path, RUN)
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
    result = write_feed(hub_dsn, CHANNEL, tmp_path, RUN)
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
    write_feed(hub_dsn, CHANNEL, tmp_path, RUN)  # idempotent: nothing quarantined twice
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
        feed=FeedSettings(
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


# ---------------------------------------------------------------- the writer over rows (no database)

TRICKY = {
    "name": 'Kawa "Arabica" & mleko > koniec',
    "description": "linia 1\nlinia 2\t\x01\x1f\ufffe ok",
    "brand": "Ż]]>B",
    "category": "Dom > Ogród <kuchnia>",
}
"""Each field needs one kind of work: &; characters XML forbids; "]]>"; < (and all of them together)."""


def _row(sku: str = "A-1", **values) -> tuple:
    row = {
        "sku": sku,
        "gtin": "05901234123457",
        "name": "Nazwa",
        "description": "Opis",
        "brand": "Marka",
        "category": "Kat",
        "price": "12.30",
        "currency": "PLN",
        "availability": "in_stock",
        "quantity": 5,
        "at_floor": True,
        "floor_price": "1.00",
    } | values
    from commerce_sync.channels.feeds import COLUMNS

    return tuple(row[name] for name in COLUMNS)


def _render(kind: str, rows: list[tuple], tmp_path: Path):
    from commerce_sync.channels.feeds import FORMATS, render

    channel = Channel(
        id="shop",
        kind=kind,
        pricing_rule="g-rule",
        feed=FeedSettings(path="f.xml", title="T & <t>", shop_url="https://shop.example.com/a&b/"),
    )
    path = tmp_path / f"{kind}.xml"
    with path.open("wb") as handle:
        stats = render(rows, FORMATS[kind], channel, channel.feed, handle)
    return path, stats


def _expected(text: str) -> str:
    return "".join(ch for ch in text if ch not in "\x01\x1f\ufffe")


@pytest.mark.parametrize("kind", ["google_merchant_feed", "meta_catalog_feed", "ceneo_feed"])
@pytest.mark.parametrize("field", [*TRICKY, "all"])
def test_every_free_text_field_is_escaped_alone_or_together(tmp_path: Path, kind: str, field: str) -> None:
    from commerce_sync.channels.feeds import FORMATS, validate

    values = TRICKY if field == "all" else {field: TRICKY[field]}
    rows = [_row("A-1", **values), _row('B "2"&<3>/4', **values), _row("C-3")]
    path, stats = _render(kind, rows, tmp_path)
    assert stats.items == 3 and stats.rejected == [] and stats.written_skus == ["A-1", 'B "2"&<3>/4', "C-3"]
    assert validate(path, FORMATS[kind], 3) == 3
    assert hashlib.sha256(path.read_bytes()).hexdigest() == stats.sha256
    root = etree.parse(str(path), etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)).getroot()
    if kind == "ceneo_feed":
        offers = root.findall("group/o")
        assert [o.get("id") for o in offers] == ["A-1", 'B "2"&<3>/4', "C-3"]
        assert offers[1].get("url") == "https://shop.example.com/a&b/p/B%20%222%22%26%3C3%3E%2F4"
        got = {o.get("id"): {"name": o.findtext("name"), "description": o.findtext("desc"),
                             "category": o.findtext("cat"), "brand": o.findtext("attrs/a[@name='Producent']")}
               for o in offers}  # fmt: skip
    else:
        items = root.findall("channel/item")
        g = f"{{{G_NS}}}"
        assert [i.findtext(g + "id") for i in items] == ["A-1", 'B "2"&<3>/4', "C-3"]
        assert items[1].findtext(g + "link") == "https://shop.example.com/a&b/p/B%20%222%22%26%3C3%3E%2F4"
        got = {i.findtext(g + "id"): {"name": i.findtext(g + "title"), "description": i.findtext(g + "description"),
                                      "category": i.findtext(g + "product_type"), "brand": i.findtext(g + "brand")}
               for i in items}  # fmt: skip
    for sku in ("A-1", 'B "2"&<3>/4'):
        for name, text in values.items():
            if name == "category" and kind == "meta_catalog_feed":
                continue  # Meta's item has no product type
            assert got[sku][name] == _expected(text), (sku, name)
    assert got["C-3"]["name"] == "Nazwa"


def test_escaping_output_equals_field_by_field_escaping(tmp_path: Path) -> None:
    """The one scan over all fields only decides whether to escape; what is written is xml_text of each field."""
    from commerce_sync.channels.feeds import xml_text

    path, _ = _render(
        "google_merchant_feed", [_row("A-1", **TRICKY), _row("A-2", name="a]]", description=">b")], tmp_path
    )
    raw = path.read_text(encoding="utf-8")
    for name, tag in (
        ("name", "title"),
        ("description", "description"),
        ("brand", "brand"),
        ("category", "product_type"),
    ):
        assert f"<g:{tag}>{xml_text(TRICKY[name])}</g:{tag}>" in raw
    # "]]" ending one field and ">" starting the next are not "]]>": neither needs escaping.
    assert "<g:title>a]]</g:title><g:description>>b</g:description>" in raw


def test_same_rows_same_bytes_and_optional_fields_left_out(tmp_path: Path) -> None:
    rows = [_row("A-1"), _row("A-2", gtin="", brand="", category="", description="", quantity=0)]
    first, stats = _render("google_merchant_feed", rows, tmp_path)
    raw = first.read_text(encoding="utf-8")
    assert raw.count("<item>") == 2 and raw.count("<g:gtin>5901234123457</g:gtin>") == 1  # 14 digits -> EAN-13
    second_item = raw.split("<item>")[2]
    assert "<g:description>Nazwa</g:description>" in second_item  # the title stands in for a missing description
    assert "g:brand" not in second_item and "g:gtin" not in second_item and "g:product_type" not in second_item
    again, stats_again = _render("google_merchant_feed", rows, tmp_path / "..")
    assert again.read_bytes() == first.read_bytes() and stats_again.sha256 == stats.sha256
    ceneo, _ = _render("ceneo_feed", rows, tmp_path)
    offers = etree.parse(str(ceneo)).getroot().findall("group/o")
    assert [(o.get("avail"), o.get("stock"), o.get("price")) for o in offers] == [
        ("1", "5", "12.30"),
        ("99", "0", "12.30"),
    ]


@pytest.mark.parametrize(
    ("values", "rule"),
    [
        ({"at_floor": False, "price": "9.99", "floor_price": "10.00"}, "price_at_least_floor"),
        ({"at_floor": None, "floor_price": None}, "price_at_least_floor"),
        ({"currency": "EUR"}, "currency_accepted"),
        ({"name": "x" * 151}, "title_max_length"),
        ({"description": "d" * 5001}, "description_max_length"),
        ({"description": "", "name": "n" * 151}, "title_max_length"),
        ({"sku": "S" * 51}, "id_max_length"),
    ],
)
def test_prepublish_check_in_the_writer_rejects_exactly(tmp_path: Path, values: dict, rule: str) -> None:
    sku = values.pop("sku", "BAD")
    path, stats = _render("google_merchant_feed", [_row("OK-1"), _row(sku, **values), _row("OK-2")], tmp_path)
    assert stats.items == 2 and stats.written_skus == ["OK-1", "OK-2"]
    assert [r.sku for r in stats.rejected] == [sku] * len(stats.rejected) and rule in {r.rule for r in stats.rejected}
    assert sku not in path.read_text(encoding="utf-8")
    if rule == "price_at_least_floor" and values["floor_price"]:
        assert "price 9.99 is below the floor 10.00" in stats.rejected[0].reason


def test_price_equal_to_floor_and_at_the_length_limits_is_published(tmp_path: Path) -> None:
    row = _row("S" * 50, price="10.00", floor_price="10.00", name="t" * 150, description="d" * 5000)
    _, stats = _render("google_merchant_feed", [row], tmp_path)
    assert stats.items == 1 and stats.rejected == []


# ---------------------------------------------------------------- the parse-back check


def _google_doc(items: str, prolog: str = "") -> str:
    return f'<?xml version="1.0"?>{prolog}<rss version="2.0" xmlns:g="{G_NS}"><channel>{items}</channel></rss>'


GOOD_ITEM = (
    "<item><g:id>A</g:id><g:title>t</g:title><g:description>d</g:description><g:link>l</g:link>"
    "<g:image_link>i</g:image_link><g:price>1.00 PLN</g:price><g:availability>in_stock</g:availability>"
    "<g:condition>new</g:condition></item>"
)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (_google_doc(GOOD_ITEM + GOOD_ITEM.replace("<g:title>t</g:title>", "<g:title> \n </g:title>")),
         r"item 2 .* lacks required field\(s\) \['title'\]"),
        (_google_doc(GOOD_ITEM.replace("<g:price>1.00 PLN</g:price>", "")),
         r"item 1 .* lacks required field\(s\) \['price'\]"),
        (_google_doc(GOOD_ITEM, '<!DOCTYPE rss [<!ENTITY e "x">]>'), "DOCTYPE"),
        (_google_doc(GOOD_ITEM.replace(">t<", ">&e;<")), "not well-formed"),
        (_google_doc(GOOD_ITEM)[:-20], "not well-formed"),
        (_google_doc(GOOD_ITEM.replace(">t<", ">a\x01b<")), "not well-formed"),
    ],
)  # fmt: skip
def test_parse_back_refuses_broken_feeds(tmp_path: Path, document: str, message: str) -> None:
    from commerce_sync.channels.feeds import FORMATS, FeedValidationError, validate

    path = tmp_path / "feed.xml"
    path.write_text(document, encoding="utf-8")
    with pytest.raises(FeedValidationError, match=message):
        validate(path, FORMATS["google_merchant_feed"], document.count("<item>"))


def test_parse_back_of_ceneo_checks_attributes_and_accepts_another_prefix(tmp_path: Path) -> None:
    from commerce_sync.channels.feeds import FORMATS, FeedValidationError, validate

    path = tmp_path / "ceneo.xml"
    offer = '<o id="A" url="u" price="1.00" avail="1" stock="1"><name>n</name></o>'
    path.write_text(f'<offers version="1"><group name="other">{offer}{offer}</group></offers>', encoding="utf-8")
    assert validate(path, FORMATS["ceneo_feed"], 2) == 2
    broken = offer.replace(' avail="1"', ' avail=""')
    path.write_text(f"<offers><group>{offer}{broken}</group></offers>", encoding="utf-8")
    with pytest.raises(FeedValidationError, match=r"item 2 .* lacks required field\(s\) \['@avail'\]"):
        validate(path, FORMATS["ceneo_feed"], 2)
    # Fields are found by local name, whatever prefix binds the Google namespace.
    path.write_text(_google_doc(GOOD_ITEM).replace("g:", "gg:").replace("xmlns:g=", "xmlns:gg="), encoding="utf-8")
    assert validate(path, FORMATS["google_merchant_feed"], 1) == 1


# ---------------------------------------------------------------- the hub query


def test_hub_texts_with_backslashes_tabs_and_newlines_reach_the_feed(hub_dsn: str, tmp_path: Path) -> None:
    seed_products(hub_dsn, 3)
    description = "C:\\dir\\n is not a newline\tbut this\nis; NULL \\N & <x>"
    with connect(hub_dsn) as conn:
        conn.execute("UPDATE hub.product SET description = %s, brand = NULL, gtin = NULL WHERE sku = 'SKU-00001'",
                     (description,))  # fmt: skip
        conn.execute("UPDATE hub.product SET gtin = '05901234123457', category = 'A > B' WHERE sku = 'SKU-00002'")
    compute_channel_offers(hub_dsn, CHANNEL, RULE, COMPUTE_RUN)
    with connect(hub_dsn) as conn:  # price exactly at the floor is published
        conn.execute("UPDATE hub.channel_offer SET floor_price = price WHERE sku = 'SKU-00000'")
    result = write_feed(hub_dsn, CHANNEL, tmp_path, RUN)
    assert (result.item_count, result.skipped) == (3, 0)
    items = _items(Path(result.path))
    assert items["SKU-00001"]["description"] == description
    assert "brand" not in items["SKU-00001"] and "gtin" not in items["SKU-00001"]
    assert items["SKU-00002"]["gtin"] == "5901234123457" and items["SKU-00002"]["product_type"] == "A > B"
    with connect(hub_dsn) as conn:
        prices = dict(conn.execute("SELECT sku, price FROM hub.channel_offer WHERE channel = 'google'").fetchall())
    assert {sku: item["price"] for sku, item in items.items()} == {sku: f"{p:.2f} PLN" for sku, p in prices.items()}
