"""Set-based offer computation against the real PostgreSQL: equals the exact reference, outbox rules."""

from __future__ import annotations

import random
import uuid
from decimal import Decimal

import psycopg
import pytest

from commerce_sync.audit import changes, ledger
from commerce_sync.config import Channel, FeedSettings, PricingRule, RuleOverride
from commerce_sync.db import connect
from commerce_sync.errors import DataError, TransientError
from commerce_sync.pricing.compute import PricingSetup, compute_channel_offers
from commerce_sync.pricing.rules import (
    channel_quantity,
    compute_price,
    convert,
    effective_cost,
    select_rule,
    sellable_quantity,
)

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
    feed=FeedSettings(path="g.xml", title="t", shop_url="https://shop.example.com"),
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


def assert_change_digests(dsn: str) -> None:
    """Every ledger row's change count and digest is what the change rows in the table give.

    Pricing and approvals take them from what their insert returned; this reads the rows back.
    """
    with connect(dsn) as conn:
        rows = conn.execute(
            "SELECT transfer_id::text, changes_count, changes_sha256 FROM audit.transfer "
            "WHERE changes_count IS NOT NULL ORDER BY seq"
        ).fetchall()
        assert rows
        for transfer_id, count, digest in rows:
            assert changes.change_digest(conn, transfer_id) == (count, digest), transfer_id


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
    assert_change_digests(hub_dsn)


def test_offer_update_that_misses_a_row_fails_the_run_and_writes_nothing(hub_dsn: str) -> None:
    seed_products(hub_dsn, 10)
    compute_channel_offers(hub_dsn, ALLEGRO, RULE, RUN)
    with connect(hub_dsn) as conn:
        before = conn.execute("SELECT count(*) FROM hub.outbox").fetchone()
        conn.execute(
            "UPDATE hub.product SET purchase_price = purchase_price * 2 WHERE sku IN ('SKU-00004', 'SKU-00005')"
        )
    with connect(hub_dsn) as conn:
        # Stands in for a row removed by a writer that does not take the channel lock: its update is skipped.
        conn.execute(
            """CREATE FUNCTION public.skip_offer() RETURNS trigger LANGUAGE plpgsql AS
               $$ BEGIN IF OLD.sku = 'SKU-00004' THEN RETURN NULL; END IF; RETURN NEW; END $$;
               CREATE TRIGGER skip_offer BEFORE UPDATE ON hub.channel_offer
               FOR EACH ROW EXECUTE FUNCTION public.skip_offer()"""
        )
    with pytest.raises(TransientError, match=r"1 changed offers were deleted .* Run the task again"):
        compute_channel_offers(hub_dsn, ALLEGRO, RULE, RUN)
    with connect(hub_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM hub.outbox").fetchone() == before
        assert conn.execute("SELECT version FROM hub.channel_offer WHERE sku = 'SKU-00005'").fetchone() == (1,)
        assert conn.execute("SELECT status FROM audit.transfer ORDER BY seq DESC LIMIT 1").fetchone() == ("failed",)
        conn.execute("DROP TRIGGER skip_offer ON hub.channel_offer")
    retry = compute_channel_offers(hub_dsn, ALLEGRO, RULE, RUN)
    assert retry.offers_changed == 2


def test_feed_channel_gets_no_outbox_rows(hub_dsn: str) -> None:
    seed_products(hub_dsn, 5)
    result = compute_channel_offers(hub_dsn, GOOGLE, RULE, RUN)
    assert result.offers_changed == 5
    assert result.outbox_rows == 0


SETUP_RULES = {
    "test-rule": RULE,
    "tools": PricingRule(
        id="tools",
        version=2,
        margin_pct=D("30"),
        margin_amount=D("1.50"),
        commission_pct=D("8"),
        fixed_fee=D("0.70"),
        min_margin_pct=D("10"),
        rounding="0.05",
        min_price=D("9.95"),
    ),
    "acme": PricingRule(
        id="acme",
        version=5,
        margin_pct=D("40"),
        commission_pct=D("12.5"),
        min_margin_pct=D("8"),
        rounding="none",
        max_price=D("400"),
    ),
    "pinned": PricingRule(id="pinned", version=1, margin_pct=D("5"), min_margin_pct=D("5"), min_price=D("49.99")),
}
RATES = {"EUR": D("4.31234567"), "USD": D("3.98765432")}


def seed_world(dsn: str, n: int, channel: Channel, seed: int = 11) -> tuple[list[dict], list[RuleOverride]]:
    """Products in three currencies with brands, categories, stock and chosen supplier offers."""
    rng = random.Random(seed)
    tid = str(uuid.uuid4())
    products, supply = [], []
    for i in range(n):
        p = {
            "sku": f"SKU-{i:05d}",
            "cost": D(rng.choice([0, *range(1, 300_000)])) / 100 if rng.random() > 0.01 else D(0),
            "currency": rng.choice(["PLN", "PLN", "EUR", "USD"]),
            "vat": rng.choice([D("0.23"), D("0.08"), D("0")]),
            "brand": rng.choice(["Acme", "Bolt", None]),
            "category": rng.choice(["Tools", "Garden", None]),
            "stock": rng.randint(0, 80),
            "reserved": rng.randint(0, 6),
            "active": rng.random() > 0.05,
            "supply": None,
        }
        if rng.random() < 0.5:
            p["supply"] = {
                "cost": D(rng.randint(1, 400_000)) / 100,
                "currency": rng.choice(["PLN", "EUR"]),
                "qty": rng.choice([0, 0, rng.randint(1, 40)]),
            }
            supply.append({"sku": p["sku"], **p["supply"]})
        products.append(p)
    with connect(dsn) as conn, conn.cursor() as cur:
        cur.executemany(
            """INSERT INTO hub.product (sku, name, brand, category, purchase_price, currency, vat_rate, active,
                                        row_hash, transfer_id)
               VALUES (%(sku)s, %(sku)s, %(brand)s, %(category)s, %(cost)s, %(currency)s, %(vat)s, %(active)s,
                       'h', %(tid)s)""",
            [dict(p, tid=tid) for p in products],
        )
        cur.executemany(
            """INSERT INTO hub.stock (sku, location, quantity, reserved, row_hash, transfer_id)
               VALUES (%(sku)s, 'main', %(stock)s, %(reserved)s, 'h', %(tid)s)""",
            [dict(p, tid=tid) for p in products],
        )
        insert_supply(cur, supply, tid)
        for currency, rate in RATES.items():
            cur.execute(
                "INSERT INTO hub.exchange_rate (currency, quote, valid_on, rate, source, transfer_id) "
                "VALUES (%s, %s, current_date - 3, %s, 'test', %s), (%s, %s, current_date + 1, 99, 'future', %s)",
                (currency, channel.currency, rate, tid, currency, channel.currency, tid),
            )
    overrides = [
        RuleOverride(channel=channel.id, level="category", match="Tools", rule="tools"),
        RuleOverride(channel=channel.id, level="brand", match="Acme", rule="acme"),
        RuleOverride(channel=channel.id, level="sku", match="SKU-00007", rule="pinned"),
        RuleOverride(channel=channel.id, level="sku", match="SKU-00011", rule="pinned"),
    ]
    return products, overrides


def insert_supply(cur: psycopg.Cursor, supply: list[dict], tid: str) -> None:
    cur.executemany(
        """INSERT INTO hub.sku_supply (sku, supplier, supplier_sku, purchase_price, currency, chosen_quantity,
                                       total_quantity, offers_considered, policy, supplier_offer_version, row_hash,
                                       transfer_id)
           VALUES (%(sku)s, 'acme', %(sku)s, %(cost)s, %(currency)s, %(qty)s, %(qty)s, 1, 'cheapest_in_stock', 1,
                   'h', %(tid)s)""",
        [dict(s, tid=tid) for s in supply],
    )


def reference_offer(p: dict, channel: Channel, overrides: list[RuleOverride]) -> dict | None:
    rule, level = select_rule(channel, SETUP_RULES, overrides, sku=p["sku"], brand=p["brand"], category=p["category"])
    rates = {**RATES, channel.currency: D(1)}
    erp = convert(p["cost"], rates[p["currency"]])
    s = p["supply"]
    supply_cost = convert(s["cost"], rates[s["currency"]]) if s else None
    cost, source = effective_cost(erp, supply_cost, s["qty"] if s else 0, active=p["active"])
    if cost <= 0:
        return None
    price = compute_price(cost, p["vat"], rule, prices_include_vat=channel.prices_include_vat)
    qty = channel_quantity(p["stock"], p["reserved"], s["qty"] if s else 0, channel, active=p["active"])
    return {
        "price": price.price,
        "floor_price": price.floor_price,
        "floor_applied": price.floor_applied,
        "max_price_applied": price.max_price_applied,
        "quantity": qty,
        "availability": "in_stock" if qty > 0 else "out_of_stock",
        "cost": cost,
        "cost_source": source,
        "rule_id": rule.id,
        "rule_version": str(rule.version),
        "rule_level": level,
    }


BUFFERED = Channel(
    id="allegro",
    kind="allegro",
    conn_id="x",
    pricing_rule="test-rule",
    stock_buffer=1,
    stock_buffer_pct=D("12.5"),
    max_listed_quantity=60,
)


@pytest.mark.parametrize("channel", [BUFFERED, GOOGLE], ids=["gross-buffered", "net"])
def test_sql_equals_reference_for_every_rule_feature(hub_dsn: str, channel: Channel) -> None:
    products, overrides = seed_world(hub_dsn, 600, channel)
    setup = PricingSetup(SETUP_RULES, tuple(overrides))
    result = compute_channel_offers(hub_dsn, channel, RULE, RUN, setup=setup)
    columns = (
        "price",
        "floor_price",
        "floor_applied",
        "max_price_applied",
        "quantity",
        "availability",
        "cost",
        "cost_source",
        "rule_id",
        "rule_version",
        "rule_level",
    )
    with connect(hub_dsn) as conn:
        rows = {
            r[0]: dict(zip(columns, r[1:], strict=True))
            for r in conn.execute(
                f"SELECT sku, {', '.join(columns)} FROM hub.channel_offer WHERE channel = %s", (channel.id,)
            )
        }
    expected = {p["sku"]: reference_offer(p, channel, overrides) for p in products}
    priced = {sku: e for sku, e in expected.items() if e is not None}
    assert result.offers_evaluated == len(priced) == len(rows)
    for sku, e in priced.items():
        assert rows[sku] == e, sku
    seen = {(e["rule_level"], e["cost_source"], e["floor_applied"], e["max_price_applied"]) for e in priced.values()}
    assert {lvl for lvl, *_ in seen} == {"sku", "brand", "category", "default"}
    assert any(src == "supplier" for _, src, *_ in seen) and any(f for *_, f, _ in seen)
    assert any(m for *_, m in seen)


def test_missing_exchange_rate_fails_naming_currency_and_sku(hub_dsn: str) -> None:
    seed_products(hub_dsn, 3)
    with connect(hub_dsn) as conn:
        conn.execute("UPDATE hub.product SET currency = 'CHF' WHERE sku = 'SKU-00001'")
    with pytest.raises(DataError, match=r"no exchange rate into PLN for CHF \(1 SKUs, e.g. SKU-00001\)"):
        compute_channel_offers(hub_dsn, ALLEGRO, RULE, RUN)
    with connect(hub_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM hub.channel_offer").fetchone()[0] == 0
        status = conn.execute("SELECT status FROM audit.transfer WHERE dataset = 'channel_offer'").fetchall()
    assert status == [("failed",)]
