"""The content outbox field: queued for kinds that declare it, apart from price and quantity."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from commerce_sync import registry
from commerce_sync.audit import ledger
from commerce_sync.channels.marketplace import Marketplace
from commerce_sync.config import Channel, PricingRule
from commerce_sync.connections import ConnectionInfo
from commerce_sync.db import connect
from commerce_sync.pricing.compute import compute_channel_offers
from tests.integration.test_pricing_compute import ALLEGRO, RULE, RUN, seed_products

pytestmark = pytest.mark.integration
KIND = "content_test"


def _no_marketplace(info: ConnectionInfo) -> Marketplace:
    raise AssertionError("pricing never opens the marketplace")


@pytest.fixture
def shop() -> Iterator[Channel]:
    """A test-only kind that publishes content, registered like every kind."""
    registry.register(
        registry.ChannelKind(
            name=KIND,
            family="marketplace",
            title="Content test",
            capabilities=frozenset({"publish"}),
            outbox_fields=("price", "quantity", "content"),
            marketplace=_no_marketplace,
            needs_connection=True,
            asset=registry.fixed_asset("HUB_OUTBOX"),
        )
    )
    yield Channel(id="shop", kind=KIND, conn_id="x", pricing_rule=RULE.id, stock_buffer=2)
    registry.unregister(KIND)


def _rows(dsn: str, channel: str) -> list[tuple[str, str, str]]:
    with connect(dsn) as conn:
        return conn.execute(
            "SELECT sku, field, status FROM hub.outbox WHERE channel = %s ORDER BY id", (channel,)
        ).fetchall()


def _compute(dsn: str, channel: Channel, rule: PricingRule = RULE) -> dict:
    result = compute_channel_offers(dsn, channel, rule, RUN)
    with connect(dsn) as conn:
        details = conn.execute(
            "SELECT details FROM audit.transfer WHERE transfer_id = %s", (result.transfer_id,)
        ).fetchone()[0]
    return {"outbox_rows": result.outbox_rows, **details}


def test_content_goes_out_once_and_apart_from_prices(hub_dsn: str, shop: Channel) -> None:
    seed_products(hub_dsn, 6)
    with connect(hub_dsn) as conn:
        conn.execute("UPDATE hub.product SET brand = 'Acme', description = 'Old words' WHERE sku = 'SKU-00001'")
    first = _compute(hub_dsn, shop)
    assert (first["outbox_rows"], first["content_rows"]) == (12, 6)  # price + quantity + content per new offer
    with connect(hub_dsn) as conn:
        payload = conn.execute(
            "SELECT payload FROM hub.outbox WHERE channel = 'shop' AND sku = 'SKU-00001' AND field = 'content'"
        ).fetchone()[0]
    assert payload == {
        "name": "SKU-00001",
        "description": "Old words",
        "gtin": None,
        "brand": "Acme",
        "category": None,
    }
    # Nothing changed: nothing queued.
    again = _compute(hub_dsn, shop)
    assert (again["outbox_rows"], again["content_rows"]) == (0, 0)
    # A content-only change (as the ERP merge writes it): one content row, no price, no quantity.
    with connect(hub_dsn) as conn:
        conn.execute(
            "UPDATE hub.product SET description = 'New words', updated_at = now(), version = version + 1 "
            "WHERE sku = 'SKU-00001'"
        )
    content = _compute(hub_dsn, shop)
    assert (content["outbox_rows"], content["content_rows"], content["content_superseded"]) == (0, 1, 1)
    assert _rows(hub_dsn, "shop")[-1] == ("SKU-00001", "content", "pending")
    # A price-only change: one price row, no content.
    with connect(hub_dsn) as conn:
        conn.execute(
            "UPDATE hub.product SET purchase_price = purchase_price * 2, updated_at = now() WHERE sku = 'SKU-00002'"
        )
    price = _compute(hub_dsn, shop)
    assert (price["outbox_rows"], price["content_rows"]) == (1, 0)
    assert _rows(hub_dsn, "shop")[-1] == ("SKU-00002", "price", "pending")
    # Content changed back to the earlier value is queued again (the key covers the run).
    with connect(hub_dsn) as conn:
        conn.execute("UPDATE hub.product SET description = 'Old words', updated_at = now() WHERE sku = 'SKU-00001'")
    back = _compute(hub_dsn, shop)
    assert back["content_rows"] == 1


def test_kinds_without_content_get_none(hub_dsn: str) -> None:
    seed_products(hub_dsn, 4)
    _compute(hub_dsn, ALLEGRO)
    with connect(hub_dsn) as conn:
        conn.execute("UPDATE hub.product SET name = 'Renamed', updated_at = now() WHERE sku = 'SKU-00001'")
    assert "content_rows" not in _compute(hub_dsn, ALLEGRO)
    assert {field for _, field, _ in _rows(hub_dsn, "allegro")} == {"price", "quantity"}


def test_a_full_run_queues_content_the_channel_has_not_had(hub_dsn: str, shop: Channel) -> None:
    """Offers computed before the kind took content (content_sha256 NULL) get it on a full run."""
    seed_products(hub_dsn, 3)
    _compute(hub_dsn, shop)
    with connect(hub_dsn) as conn:
        conn.execute("UPDATE hub.channel_offer SET content_sha256 = NULL WHERE channel = 'shop'")
    assert _compute(hub_dsn, shop)["content_rows"] == 0  # incremental: no product changed
    result = compute_channel_offers(hub_dsn, shop, RULE, RUN, full=True)
    assert result.offers_changed == 0
    assert len([r for r in _rows(hub_dsn, "shop") if r[1] == "content" and r[2] == "pending"]) == 3


def test_ledger_row_counts_content_and_the_chain_holds(hub_dsn: str, shop: Channel) -> None:
    seed_products(hub_dsn, 2)
    assert _compute(hub_dsn, shop)["content_rows"] == 2
    with connect(hub_dsn) as conn:
        assert ledger.verify(conn).ok
