"""End to end through the real hub, sandbox ERP, pricing and every simulator: an order on the own shop.

The shop's last units are bought on WooCommerce: the order import reserves them, every channel is
pushed and published 0, the paid order is handed to the ERP, all recorded in the ledger; the order is
cancelled: the reservation is released, the ERP hears it, and every channel gets its quantity back.
(The DAGs that wire these steps are the lead's order import and hub_to_marketplaces; this test calls
the functions their tasks call, on the same world the fault matrix uses.)
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from commerce_sync import registry
from commerce_sync.audit import ledger
from commerce_sync.config import load_config
from commerce_sync.db import connect
from commerce_sync.orders.importer import ImportResult, import_orders
from tests.faults.world import fault_world, step_erp, step_price, step_publish
from tests.integration.orders_world import RUN, erp_hand_off, erp_product, offer_quantities, push, set_erp_stock

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, hub_template: str) -> Iterator[object]:
    with fault_world(tmp_path_factory.mktemp("shop-orders"), hub_template) as w:
        yield w


def _import(hub: str) -> ImportResult:
    channel = load_config().channel("shop")
    with registry.get("woocommerce").open(channel) as market:
        return import_orders(hub, channel, market, RUN)


def _shop_stock(world: object, sku: str) -> int:
    product = world.server.woocommerce.by_sku(sku)  # type: ignore[attr-defined]
    assert product is not None
    return int(product["stock_quantity"])


def _sent_quantities(hub: str, sku: str) -> dict[str, int]:
    """The newest quantity each outbox channel has confirmed for ``sku``."""
    with connect(hub) as conn:
        rows = conn.execute(
            "SELECT DISTINCT ON (channel) channel, (payload->>'value')::int FROM hub.outbox "
            "WHERE sku = %s AND field = 'quantity' AND status = 'sent' ORDER BY channel, offer_version DESC, id DESC",
            (sku,),
        ).fetchall()
    return dict(rows)


def test_the_shops_last_units_sold_reach_zero_everywhere_and_come_back_when_cancelled(world: object) -> None:
    hub, erp = world.hub, world.erp  # type: ignore[attr-defined]
    # A SKU without dropship supply, so the ERP's stock is all there is; three sellable units.
    step_erp(hub)
    with connect(hub) as conn:
        sku = conn.execute(
            "SELECT p.sku FROM hub.product p WHERE p.active AND NOT EXISTS "
            "(SELECT 1 FROM hub.sku_supply s WHERE s.sku = p.sku AND s.chosen_quantity > 0) ORDER BY p.sku LIMIT 1"
        ).fetchone()[0]
    _, reserved = erp_product(erp, sku)
    set_erp_stock(erp, sku, reserved + 3)
    step_erp(hub)
    step_price(hub)
    step_publish(hub)  # the shop gets its products (created where missing), prices and stock
    assert _import(hub).totals.new_orders == 0  # the shop's order cursor starts now
    before = offer_quantities(hub, sku)
    assert before["shop"] == 3 and _shop_stock(world, sku) == 3
    shop_url = world.server.woocommerce_url  # type: ignore[attr-defined]

    # The last three units are bought (and paid) on the shop.
    order = requests.post(
        f"{shop_url}/_sandbox/orders", json={"lines": [{"sku": sku, "quantity": 3}], "status": "processing"}, timeout=30
    ).json()
    result = _import(hub)
    assert (result.totals.new_orders, result.totals.lines_reserved) == (1, 1)
    imported = result.transfer_ids
    push(hub)
    after = offer_quantities(hub, sku)
    assert set(after.values()) == {0}, after
    step_publish(hub)
    outbox_channels = {c for c in after if registry.get(load_config().channel(c).kind).uses_outbox}
    assert {c: q for c, q in _sent_quantities(hub, sku).items() if c in outbox_channels} == dict.fromkeys(
        outbox_channels, 0
    )
    handed = erp_hand_off(hub)
    assert handed.handed == 1 and handed.refused == []
    assert erp_product(erp, sku) == (reserved + 3, reserved + 3)
    with connect(hub) as conn:
        reservation = conn.execute(
            "SELECT state, quantity FROM hub.stock_reservation WHERE channel = 'shop' AND order_id = %s",
            (str(order["id"]),),
        ).fetchone()
        assert reservation == ("held", 3)
        recorded = conn.execute(
            "SELECT source, target, dataset, status FROM audit.transfer WHERE transfer_id = ANY(%s::uuid[]) ORDER BY seq",
            ([*imported, handed.transfer_id],),
        ).fetchall()
        assert [(r[0], r[2], r[3]) for r in recorded] == [
            ("channel:shop", "order", "success"),
            ("hub", recorded[1][2], "success"),
        ]
        assert recorded[1][1].startswith("erp:")
        assert ledger.verify(conn).ok

    # Cancelled on the shop: released, cancelled in the ERP, and every channel gets its units back.
    requests.post(f"{shop_url}/_sandbox/orders/{order['id']}", json={"status": "cancelled"}, timeout=30)
    _import(hub)
    assert erp_hand_off(hub).cancelled == 1
    assert erp_product(erp, sku) == (reserved + 3, reserved)
    push(hub)
    assert offer_quantities(hub, sku) == before
    step_publish(hub)
    assert _sent_quantities(hub, sku)["shop"] == 3 and _shop_stock(world, sku) == 3
    with connect(hub) as conn:
        state = conn.execute(
            "SELECT state FROM hub.stock_reservation WHERE channel = 'shop' AND order_id = %s", (str(order["id"]),)
        ).fetchone()
    assert state == ("released",)
