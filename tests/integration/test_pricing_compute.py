"""Set-based offer computation against the real PostgreSQL: equals the exact reference, outbox rules."""

from __future__ import annotations

import random
import uuid
from decimal import Decimal

import pytest

from commerce_sync.audit import ledger
from commerce_sync.config import Channel, GoogleFeedSettings, PricingRule
from commerce_sync.db import connect
from commerce_sync.pricing.compute import compute_channel_offers
from commerce_sync.pricing.rules import compute_price, sellable_quantity

pytestmark = pytest.mark.integration
D = Decimal
RUN = ledger.RunContext(run_id="test", dag_id="test", task_id="compute")
RULE = PricingRule(id="test-rule", version=3, margin_pct=D("18.5"), commission_pct=D("11"), min_margin_pct=D("6"))
ALLEGRO = Channel(id="allegro", kind="allegro", conn_id="x", pricing_rule="test-rule", stock_buffer=2)
GOOGLE = Channel(
    id="google",
    kind="google_merchant_feed",
    pricing_rule="test-rule",
    prices_include_vat=False,
    feed=GoogleFeedSettings(path="g.xml", title="t", shop_url="https://shop.example.com"),
)


def seed_products(dsn: str, n: int, seed: int = 7) -> list[dict]:
    rng = random.Random(seed)
    tid = str(uuid.uuid4())
    products = []
    for i in range(n):
        products.append(
            {
                "sku": f"SKU-{i:05d}",
                "cost": D(rng.randint(1, 500_000)) / 100,
                "vat": rng.choice([D("0.23"), D("0.08"), D("0")]),
                "stock": rng.randint(0, 50),
                "reserved": rng.randint(0, 5),
                "active": rng.random() > 0.05,
            }
        )
    with connect(dsn) as conn, conn.cursor() as cur:
        cur.executemany(
            """INSERT INTO hub.product (sku, name, purchase_price, currency, vat_rate, active, row_hash, transfer_id)
               VALUES (%(sku)s, %(sku)s, %(cost)s, 'PLN', %(vat)s, %(active)s, 'h', %(tid)s)""",
            [dict(p, tid=tid) for p in products],
        )
        cur.executemany(
            """INSERT INTO hub.stock (sku, location, quantity, reserved, row_hash, transfer_id)
               VALUES (%(sku)s, 'main', %(stock)s, %(reserved)s, 'h', %(tid)s)""",
            [dict(p, tid=tid) for p in products],
        )
    return products


@pytest.mark.parametrize("channel", [ALLEGRO, GOOGLE], ids=["gross", "net"])
def test_sql_prices_equal_exact_reference(hub_dsn: str, channel: Channel) -> None:
    products = seed_products(hub_dsn, 400)
    result = compute_channel_offers(hub_dsn, channel, RULE, RUN)
    assert result.offers_evaluated == 400
    with connect(hub_dsn) as conn:
        rows = {
            r[0]: r[1:]
            for r in conn.execute(
                "SELECT sku, price, floor_price, floor_applied, quantity, availability, rule_id, rule_version "
                "FROM hub.channel_offer WHERE channel = %s",
                (channel.id,),
            )
        }
    for p in products:
        expected = compute_price(p["cost"], p["vat"], RULE, prices_include_vat=channel.prices_include_vat)
        qty = sellable_quantity(p["stock"], p["reserved"], 0, channel.stock_buffer, active=p["active"])
        price, floor, applied, quantity, availability, rule_id, rule_version = rows[p["sku"]]
        assert (price, floor, applied) == (expected.price, expected.floor_price, expected.floor_applied), p
        assert quantity == qty
        assert availability == ("in_stock" if qty > 0 else "out_of_stock")
        assert (rule_id, rule_version) == ("test-rule", "3")


def test_recompute_without_input_change_changes_nothing(hub_dsn: str) -> None:
    seed_products(hub_dsn, 50)
    first = compute_channel_offers(hub_dsn, ALLEGRO, RULE, RUN)
    assert first.offers_changed == 50
    assert first.outbox_rows == 100  # price and quantity for every new offer
    second = compute_channel_offers(hub_dsn, ALLEGRO, RULE, RUN)
    assert second.offers_changed == 0
    assert second.outbox_rows == 0
    with connect(hub_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM hub.outbox").fetchone()[0] == 100
        statuses = conn.execute(
            "SELECT rows_changed FROM audit.transfer WHERE dataset = 'channel_offer' ORDER BY seq"
        ).fetchall()
    assert [s[0] for s in statuses] == [50, 0]


def test_price_change_enqueues_one_row_and_supersedes_unsent(hub_dsn: str) -> None:
    seed_products(hub_dsn, 10)
    compute_channel_offers(hub_dsn, ALLEGRO, RULE, RUN)
    with connect(hub_dsn) as conn:
        conn.execute("UPDATE hub.product SET purchase_price = purchase_price * 2 WHERE sku = 'SKU-00003'")
    result = compute_channel_offers(hub_dsn, ALLEGRO, RULE, RUN)
    assert (result.offers_changed, result.outbox_rows, result.superseded) == (1, 1, 1)
    with connect(hub_dsn) as conn:
        rows = conn.execute(
            "SELECT field, status, offer_version FROM hub.outbox WHERE sku = 'SKU-00003' ORDER BY id"
        ).fetchall()
    assert rows == [("price", "superseded", 1), ("quantity", "pending", 1), ("price", "pending", 2)]


def test_feed_channel_gets_no_outbox_rows(hub_dsn: str) -> None:
    seed_products(hub_dsn, 5)
    result = compute_channel_offers(hub_dsn, GOOGLE, RULE, RUN)
    assert result.offers_changed == 5
    assert result.outbox_rows == 0
