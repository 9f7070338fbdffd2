"""The WooCommerce channel against the shop simulator and a real hub: products, prices, stock, content, orders."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests

from commerce_sync import registry
from commerce_sync.audit import ledger
from commerce_sync.channels import publish
from commerce_sync.channels.woocommerce import (
    MAX_BATCH_ITEMS,
    MAX_WEBHOOK_BYTES,
    WooCommerceMarketplace,
    webhook_app,
    webhook_signature,
)
from commerce_sync.config import Channel, PricingRule
from commerce_sync.errors import ChannelError
from commerce_sync.pricing.compute import compute_channel_offers
from commerce_sync_sandbox.catalog import products
from commerce_sync_sandbox.server import SandboxServer
from commerce_sync_sandbox.woocommerce_sim import CONSUMER_KEY, CONSUMER_SECRET, WooCommerceSimulator

pytestmark = pytest.mark.integration

N = 120  # the shop starts with the first 60 catalog products: 60 to create (122 SKUs: two batches), two variations
SEED = 42
RUN = ledger.RunContext(run_id="test", dag_id="test", task_id="woocommerce")
RULE = PricingRule(
    id="shop-rule", version=1, margin_pct=Decimal("30"), commission_pct=Decimal("0"), min_margin_pct=Decimal("5")
)
CATEGORY_IDS = {"Narzędzia": 15}
SETTINGS: dict[str, Any] = {
    "create_missing": True,
    "image_url": "https://shop.example.com/images/{sku}.jpg",
    "categories": CATEGORY_IDS,
    "hold_minutes": 60,
}


def channel(**settings: Any) -> Channel:
    return Channel(
        id="shop",
        kind="woocommerce",
        conn_id="shop_test",
        pricing_rule=RULE.id,
        currency="PLN",
        prices_include_vat=True,
        stock_buffer=0,
        settings={**SETTINGS, **settings},
    )


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SandboxServer]:
    with SandboxServer(tmp_path / "feeds", tmp_path / "allegro.json", catalog_n=N, seed=SEED) as server:
        connection = {"conn_type": "http", "host": server.woocommerce_url, "login": CONSUMER_KEY}
        monkeypatch.setenv("AIRFLOW_CONN_SHOP_TEST", json.dumps({**connection, "password": CONSUMER_SECRET}))
        yield server


@pytest.fixture
def shop(sandbox: SandboxServer) -> WooCommerceSimulator:
    sim: WooCommerceSimulator = sandbox.woocommerce
    return sim


@pytest.fixture
def hub(hub_dsn: str) -> str:
    """The sandbox catalog in the hub (plus the shop's two variations), as the ERP merge leaves it."""
    tid = uuid.uuid4()
    rows = [
        (p.sku, p.ean.zfill(14), p.name, p.brand, p.category, p.description, p.purchase_price, p.vat_rate, p.stock)
        for p in products(N, SEED)
    ]
    rows += [
        (f"VAR-1-{size}", None, f"Koszulka {size}", None, None, None, Decimal("20"), Decimal("0.23"), 4)
        for size in "SM"
    ]
    with psycopg.connect(hub_dsn) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO hub.product (sku, gtin, name, brand, category, description, purchase_price, currency, "
            "vat_rate, row_hash, transfer_id) VALUES (%s, %s, %s, %s, %s, %s, %s, 'PLN', %s, 'h', %s)",
            [(*row[:8], tid) for row in rows],
        )
        cur.executemany(
            "INSERT INTO hub.stock (sku, location, quantity, row_hash, transfer_id) VALUES (%s, 'main', %s, 'h', %s)",
            [(row[0], row[8], tid) for row in rows],
        )
    return hub_dsn


def _sync(dsn: str, shop_channel: Channel) -> dict[str, Any]:
    compute_channel_offers(dsn, shop_channel, RULE, RUN)
    return publish.publish_channel(dsn, shop_channel, RUN)


def _outbox(dsn: str, where: str = "TRUE") -> list[tuple[str, str, str, str | None]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            f"SELECT sku, field, status, error FROM hub.outbox WHERE channel = 'shop' AND {where} ORDER BY id"
        ).fetchall()


def test_the_kind_is_registered_like_every_other() -> None:
    spec = registry.get("woocommerce")
    assert spec.family == "marketplace"
    assert spec.can("publish") and spec.can("read_back") and spec.can("import_orders")
    assert spec.queues("content") and spec.queues("price")
    assert "commerce_sync.channels.woocommerce" in registry.builtin_modules()


def test_products_are_created_with_content_and_prices_and_stock_set_in_batches_of_100(
    hub: str, shop: WooCommerceSimulator, tmp_path: Path
) -> None:
    before = len(shop.products)
    result = _sync(hub, channel())
    assert result["failed"] == 0 and result["sent"] == 3 * (N + 2)
    assert len(shop.products) == before + N - N // 2  # the missing half was created
    assert shop.stats["creates"] == N - N // 2
    assert all(sum(len(doc.get(op) or []) for op in ("create", "update")) <= MAX_BATCH_ITEMS for _, doc in shop.batches)
    assert {path for path, _ in shop.batches} == {"/products", f"/products/{shop.by_sku('VAR-1')['id']}/variations"}
    catalog = {p.sku: p for p in products(N, SEED)}
    created = shop.by_sku("SKU-000100")
    assert created is not None
    source = catalog["SKU-000100"]
    assert created["name"] == source.name
    assert created["description"] == source.description
    assert created["global_unique_id"] == source.ean
    assert created["attributes"] == [{"name": "Brand", "options": [source.brand], "visible": True}]
    assert created["images"] == [{"src": "https://shop.example.com/images/SKU-000100.jpg"}]
    assert created["categories"] == ([{"id": 15}] if source.category == "Narzędzia" else [])
    assert created["manage_stock"] is True and created["stock_quantity"] == source.stock
    assert Decimal(created["regular_price"]) > source.purchase_price
    variation = shop.by_sku("VAR-1-S")
    assert variation is not None and variation["stock_quantity"] == 4 and variation["regular_price"] != "49.00"
    # Read back: the shop shows what the hub sent; nothing differs.
    with psycopg.connect(hub) as conn:
        offer = conn.execute("SELECT price, quantity FROM hub.channel_offer WHERE sku = 'SKU-000100'").fetchone()
    assert offer == (Decimal(created["regular_price"]), source.stock)
    reconciled = publish.reconcile_channel(hub, channel(), RUN, tmp_path)
    assert reconciled["differences"] == 0


def test_per_item_failures_are_recorded_and_retried(hub: str, shop: WooCommerceSimulator, tmp_path: Path) -> None:
    _sync(hub, channel())
    refused = ["SKU-000003", "SKU-000090"]
    shop.faults.arm(reject={sku: "Sandbox refuses this product today" for sku in refused})
    with psycopg.connect(hub) as conn:
        conn.execute("UPDATE hub.stock SET quantity = quantity + 7, updated_at = now() WHERE sku = ANY(%s)", (refused,))
        conn.execute("UPDATE hub.stock SET quantity = quantity + 1, updated_at = now() WHERE sku = 'SKU-000010'")
    result = _sync(hub, channel())
    assert (result["sent"], result["failed"]) == (1, 2)
    failed = _outbox(hub, "status = 'failed'")
    assert sorted((sku, field) for sku, field, _, _ in failed) == [(sku, "quantity") for sku in refused]
    assert all("Sandbox refuses this product today" in (error or "") for *_, error in failed)
    # The read-back sees the shop still shows the old stock and queues the hub's value again.
    shop.faults.clear()
    reconciled = publish.reconcile_channel(hub, channel(), RUN, tmp_path)
    assert reconciled["differences"] == 2
    retried = publish.publish_channel(hub, channel(), RUN)
    assert (retried["sent"], retried["failed"]) == (2, 0)
    for sku in refused:
        product = shop.by_sku(sku)
        assert product is not None
        with psycopg.connect(hub) as conn:
            wanted = conn.execute("SELECT quantity FROM hub.channel_offer WHERE sku = %s", (sku,)).fetchone()
        assert product["stock_quantity"] == wanted[0]


def test_a_content_only_change_sends_no_price_and_a_price_change_no_content(
    hub: str, shop: WooCommerceSimulator
) -> None:
    _sync(hub, channel())
    sent_before = len(shop.batches)
    with psycopg.connect(hub) as conn:
        conn.execute(
            "UPDATE hub.product SET description = 'Nowy opis', updated_at = now(), version = version + 1 "
            "WHERE sku = 'SKU-000005'"
        )
    result = _sync(hub, channel())
    assert result["sent"] == 1
    [(_, document)] = shop.batches[sent_before:]
    [item] = document["update"]
    assert item["description"] == "Nowy opis"
    assert not {"regular_price", "sale_price", "stock_quantity", "manage_stock"} & set(item)
    with psycopg.connect(hub) as conn:
        conn.execute(
            "UPDATE hub.product SET purchase_price = purchase_price * 2, updated_at = now() WHERE sku = 'SKU-000005'"
        )
    _sync(hub, channel())
    [(_, document)] = shop.batches[sent_before + 1 :]
    [item] = document["update"]
    assert set(item) == {"id", "regular_price"}


def test_throttling_and_outages_are_retried(hub: str, shop: WooCommerceSimulator) -> None:
    shop.faults.arm(throttle=1, retry_after=0, outage=2)
    result = _sync(hub, channel())
    assert result["failed"] == 0
    assert shop.faults.fired["throttle"] == 1 and shop.faults.fired["outage"] == 2


def test_a_create_whose_answer_was_lost_is_not_created_twice(hub: str, shop: WooCommerceSimulator) -> None:
    """The first batch's answer is lost after the shop applied it; the client sends it again, the shop
    refuses the creates as duplicate SKUs, and the channel updates those products instead."""
    gone = [f"SKU-{i:06d}" for i in range(1, 6)]  # so the first batch creates products too
    with shop._lock:
        for sku in gone:
            del shop.products[shop.by_sku(sku)["id"]]
    shop.faults.arm(drop_after_apply=1)
    result = _sync(hub, channel())
    assert shop.faults.fired["drop"] == 1
    assert result["failed"] == 0 and result["sent"] == 3 * (N + 2)
    assert shop.stats["creates"] == N - N // 2 + len(gone)  # every missing SKU once
    skus = [p["sku"] for p in shop.products.values()]
    assert len(skus) == len(set(skus))
    with psycopg.connect(hub) as conn:
        price = conn.execute("SELECT price FROM hub.channel_offer WHERE sku = 'SKU-000001'").fetchone()[0]
    assert Decimal(shop.by_sku("SKU-000001")["regular_price"]) == price


def test_without_create_missing_a_sku_the_shop_lacks_is_refused(hub: str, shop: WooCommerceSimulator) -> None:
    result = _sync(hub, channel(create_missing=False))
    assert shop.stats["creates"] == 0
    assert result["failed"] == 3 * (N - N // 2)
    [(_, _, _, error)] = _outbox(hub, "sku = 'SKU-000100' AND field = 'price'")
    assert "no WooCommerce offer for SKU SKU-000100" in (error or "")


# ---------------------------------------------------------------------- orders


def _market(sandbox: SandboxServer, **settings: Any) -> WooCommerceMarketplace:
    market = registry.get("woocommerce").open(channel(**settings))
    assert isinstance(market, WooCommerceMarketplace)
    return market


def _in_stock(sandbox: SandboxServer, count: int) -> list[str]:
    """SKUs of simple products the shop has at least two units of."""
    sim: WooCommerceSimulator = sandbox.woocommerce
    found = [p["sku"] for p in sim.products.values() if p["type"] == "simple" and (p["stock_quantity"] or 0) >= 2]
    return sorted(found)[:count]


def _place(sandbox: SandboxServer, lines: list[dict[str, Any]], status: str = "pending") -> dict[str, Any]:
    answer = requests.post(
        f"{sandbox.woocommerce_url}/_sandbox/orders", json={"lines": lines, "status": status}, timeout=30
    )
    assert answer.status_code == 201, answer.text
    document: dict[str, Any] = answer.json()
    return document


def test_orders_are_read_by_the_polled_cursor_with_statuses_mapped(sandbox: SandboxServer) -> None:
    market = _market(sandbox)
    start = market.read_orders(None)
    assert start.orders == () and start.cursor is not None
    [sku] = _in_stock(sandbox, 1)
    first = _place(sandbox, [{"sku": sku, "quantity": 2}, {"sku": "VAR-1-M", "quantity": 1}])
    batch = market.read_orders(start.cursor)
    [order] = batch.orders
    assert (order.order_id, order.status, order.marketplace_status) == (str(first["id"]), "unpaid", "pending")
    assert [(line.sku, line.quantity) for line in order.lines] == [(sku, 2), ("VAR-1-M", 1)]
    assert (
        order.lines[1].offer_id
        == f"{sandbox.woocommerce.by_sku('VAR-1')['id']}/{sandbox.woocommerce.by_sku('VAR-1-M')['id']}"
    )
    # Each core status maps explicitly.
    expected = {"on-hold": "unpaid", "processing": "ready", "completed": "ready", "refunded": "cancelled"}
    expected.update({"failed": "cancelled", "cancelled": "cancelled"})
    for status, mapped in expected.items():
        requests.post(f"{sandbox.woocommerce_url}/_sandbox/orders/{first['id']}", json={"status": status}, timeout=30)
        again = market.read_orders(batch.cursor)
        assert [(o.order_id, o.status) for o in again.orders] == [(str(first["id"]), mapped)], status


def test_order_reads_page_and_overlap(sandbox: SandboxServer) -> None:
    market = _market(sandbox, order_overlap_minutes=1)
    cursor = market.read_orders(None).cursor
    placed = []
    for minutes, sku in enumerate(_in_stock(sandbox, 7), 1):  # modified two minutes apart
        sandbox.woocommerce.clock_offset = timedelta(minutes=2 * minutes)
        placed.append(_place(sandbox, [{"sku": sku, "quantity": 1}], "processing"))
    batch = market.read_orders(cursor, limit=3)
    assert batch.more and len(batch.orders) == 3
    seen = {o.order_id for o in batch.orders}
    reads = 1
    while batch.more:
        batch = market.read_orders(batch.cursor, limit=3)
        seen |= {o.order_id for o in batch.orders}
        reads += 1
    assert seen == {str(o["id"]) for o in placed} and reads == 3
    # Orders saved in one second beyond the limit are read in one go (the cursor must move on).
    same = [_place(sandbox, [{"sku": sku, "quantity": 1}], "completed") for sku in _in_stock(sandbox, 4)]
    crowded = market.read_orders(batch.cursor, limit=2)
    assert {str(o["id"]) for o in same} <= {o.order_id for o in crowded.orders}
    # The overlapping window re-reads recent orders (the hub keys them by id and revision).
    wide = _market(sandbox, order_overlap_minutes=10)
    again = wide.read_orders(crowded.cursor)
    assert {str(o["id"]) for o in placed[-3:]} <= {o.order_id for o in again.orders}


def test_an_unpaid_orders_hold_is_released_after_the_hold_time(sandbox: SandboxServer) -> None:
    market = _market(sandbox, hold_minutes=60)
    cursor = market.read_orders(None).cursor
    first, second = _in_stock(sandbox, 2)
    order = _place(sandbox, [{"sku": first, "quantity": 1}])
    paid = _place(sandbox, [{"sku": second, "quantity": 1}], "processing")
    [held, kept] = sorted(market.read_orders(cursor).orders, key=lambda o: o.order_id)
    assert (held.order_id, held.status) == (str(order["id"]), "unpaid")
    assert kept.status == "ready"
    later = market.read_orders(cursor)
    market.clock = lambda: datetime.now(UTC) + timedelta(minutes=61)
    expired = market.read_orders(later.cursor)
    released = {o.order_id: o for o in expired.orders}[str(order["id"])]
    assert released.status == "cancelled"
    assert released.marketplace_status == "pending (hold expired after 60 min)"
    assert str(paid["id"]) not in {o.order_id for o in expired.orders if o.status == "cancelled"}


def test_an_unknown_order_status_names_the_order_and_the_setting(sandbox: SandboxServer) -> None:
    market = _market(sandbox)
    cursor = market.read_orders(None).cursor
    order = _place(sandbox, [{"sku": _in_stock(sandbox, 1)[0], "quantity": 1}])
    with sandbox.woocommerce._lock:
        sandbox.woocommerce.orders[order["id"]]["status"] = "awaiting-shipment"
    with pytest.raises(ChannelError, match=rf"order {order['id']}: status 'awaiting-shipment' .*order_statuses"):
        market.read_orders(cursor)
    mapped = _market(sandbox, order_statuses={"awaiting-shipment": "ready"})
    assert [o.status for o in mapped.read_orders(cursor).orders] == ["ready"]


def test_the_client_never_shows_the_secret(sandbox: SandboxServer) -> None:
    market = _market(sandbox)
    assert CONSUMER_SECRET not in repr(market.client) and CONSUMER_SECRET not in repr(vars(market.client))


# ---------------------------------------------------------------------- webhooks

WEBHOOK_SECRET = "test-webhook-secret"


@pytest.fixture
def receiver(
    sandbox: SandboxServer, hub_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """The webhook endpoint served by uvicorn on loopback, registered on the shop for both order topics."""
    import threading

    import uvicorn

    monkeypatch.setenv("AIRFLOW_CONN_SHOP_HOOK", json.dumps({"conn_type": "generic", "password": WEBHOOK_SECRET}))
    rung: list[dict[str, Any]] = []
    shop_channel = channel(webhook_conn_id="shop_hook")
    app = webhook_app(lambda: hub_dsn, lambda: [shop_channel], lambda c, extra: rung.append({"channel": c.id, **extra}))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        thread.join(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}/shop"
    for topic in ("order.created", "order.updated"):
        answer = requests.post(
            f"{sandbox.woocommerce_url}/wp-json/wc/v3/webhooks",
            json={"name": topic, "topic": topic, "delivery_url": url, "secret": WEBHOOK_SECRET},
            auth=(CONSUMER_KEY, CONSUMER_SECRET),
            timeout=30,
        )
        assert answer.status_code == 201, answer.text
    yield url, rung
    server.should_exit = True
    thread.join(10)


def _deliveries(hub_dsn: str) -> int:
    with psycopg.connect(hub_dsn) as conn:
        return int(conn.execute("SELECT count(*) FROM hub.webhook_delivery").fetchone()[0])


def test_a_signed_webhook_rings_the_order_import_once(
    sandbox: SandboxServer, hub_dsn: str, receiver: tuple[str, list[dict[str, Any]]]
) -> None:
    _, rung = receiver
    order = _place(sandbox, [{"sku": _in_stock(sandbox, 1)[0], "quantity": 1}])
    [delivery] = sandbox.woocommerce.wait_for_deliveries(1)
    assert delivery["statuses"] == [202]
    assert rung == [
        {
            "channel": "shop",
            "topic": "order.created",
            "delivery_id": delivery["delivery_id"],
            "order_id": str(order["id"]),
        }
    ]
    requests.post(f"{sandbox.woocommerce_url}/_sandbox/orders/{order['id']}", json={"status": "processing"}, timeout=30)
    sandbox.woocommerce.wait_for_deliveries(2)
    assert [r["topic"] for r in rung] == ["order.created", "order.updated"]
    assert _deliveries(hub_dsn) == 2


def test_a_duplicated_webhook_changes_nothing(
    sandbox: SandboxServer, hub_dsn: str, receiver: tuple[str, list[dict[str, Any]]]
) -> None:
    _, rung = receiver
    sandbox.woocommerce.faults.arm(webhook_twice=1)
    _place(sandbox, [{"sku": _in_stock(sandbox, 1)[0], "quantity": 1}])
    [delivery] = sandbox.woocommerce.wait_for_deliveries(1)
    assert delivery["sent"] == 2 and delivery["statuses"] == [202, 200]
    assert len(rung) == 1 and _deliveries(hub_dsn) == 1


def test_a_webhook_with_a_wrong_signature_is_refused_and_logged(
    sandbox: SandboxServer, hub_dsn: str, receiver: tuple[str, list[dict[str, Any]]], caplog: pytest.LogCaptureFixture
) -> None:
    url, rung = receiver
    body = json.dumps({"id": 77, "status": "processing"}).encode()
    headers = {
        "X-WC-Webhook-Topic": "order.updated",
        "X-WC-Webhook-Delivery-ID": "4242",
        "X-WC-Webhook-Signature": webhook_signature("not-the-secret", body),
    }
    with caplog.at_level("WARNING", logger="commerce_sync.channels.woocommerce"):
        answer = requests.post(url, data=body, headers=headers, timeout=30)
        unsigned = requests.post(
            url, data=body, headers={k: v for k, v in headers.items() if "Signature" not in k}, timeout=30
        )
    assert (answer.status_code, unsigned.status_code) == (401, 401)
    assert rung == [] and _deliveries(hub_dsn) == 0
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == 2 and "delivery '4242'" in refused[0] and "order.updated" in refused[0]
    assert WEBHOOK_SECRET not in caplog.text
    # A body changed in transit fails too; the shop's unsigned ping when a webhook is saved is accepted.
    tampered = requests.post(
        url,
        data=body + b" ",
        headers={**headers, "X-WC-Webhook-Signature": webhook_signature(WEBHOOK_SECRET, body)},
        timeout=30,
    )
    assert tampered.status_code == 401
    assert requests.post(url, data=b"webhook_id=12", timeout=30).json() == {"ping": True}
    assert requests.post(url, data=b"x" * (MAX_WEBHOOK_BYTES + 1), timeout=30).status_code == 413


def test_a_lost_webhook_is_caught_by_the_polled_cursor(
    sandbox: SandboxServer, hub_dsn: str, receiver: tuple[str, list[dict[str, Any]]]
) -> None:
    _, rung = receiver
    market = _market(sandbox)
    cursor = market.read_orders(None).cursor
    sandbox.woocommerce.faults.arm(webhook_lost=1)
    order = _place(sandbox, [{"sku": _in_stock(sandbox, 1)[0], "quantity": 1}])
    assert sandbox.woocommerce.wait_for_deliveries(1)[0]["sent"] == 0 and rung == []
    assert str(order["id"]) in {o.order_id for o in market.read_orders(cursor).orders}


def test_a_shop_order_reserves_in_the_hub_and_its_hold_is_released_after_the_hold_time(
    hub: str, sandbox: SandboxServer
) -> None:
    """Through the hub's order import: a pending order holds its units; past the hold time it releases them."""
    from commerce_sync.orders.importer import import_orders

    market = _market(sandbox, hold_minutes=30)
    assert import_orders(hub, channel(), market, RUN).cursor is not None  # starts now
    sku = _in_stock(sandbox, 1)[0]
    order = _place(sandbox, [{"sku": sku, "quantity": 2}])
    paid = _place(sandbox, [{"sku": sku, "quantity": 1}], "processing")

    def states() -> dict[str, tuple[str, int]]:
        with psycopg.connect(hub) as conn:
            rows = conn.execute(
                "SELECT order_id, state, quantity FROM hub.stock_reservation WHERE channel = 'shop' ORDER BY order_id"
            ).fetchall()
        return {order_id: (state, quantity) for order_id, state, quantity in rows}

    import_orders(hub, channel(), market, RUN)
    assert states() == {str(order["id"]): ("held", 2), str(paid["id"]): ("held", 1)}
    market.clock = lambda: datetime.now(UTC) + timedelta(minutes=31)
    import_orders(hub, channel(), market, RUN)
    assert states()[str(order["id"])] == ("released", 2)
    assert states()[str(paid["id"])] == ("held", 1)
    with psycopg.connect(hub) as conn:
        status = conn.execute(
            "SELECT status, marketplace_status FROM hub.sales_order WHERE channel = 'shop' AND order_id = %s",
            (str(order["id"]),),
        ).fetchone()
    assert status == ("cancelled", "pending (hold expired after 30 min)")
