"""Order readers of Allegro, eBay and Amazon against the sandbox simulators on loopback.

Each test buys, pays and cancels on the real simulators over HTTP and reads the orders back with the
product's readers (``Marketplace.read_orders``), draining batches as the hub does: call again while
``more``, keep the cursor of the last batch.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jsonschema
import pytest
import requests

from commerce_sync import registry
from commerce_sync.channels.allegro import AllegroClient, AllegroMarketplace
from commerce_sync.channels.amazon import AmazonClient, AmazonMarketplace
from commerce_sync.channels.ebay import EbayClient, EbayMarketplace
from commerce_sync.channels.marketplace import Marketplace
from commerce_sync.channels.order_reading import iso_ms
from commerce_sync.channels.orders import MarketplaceOrder
from commerce_sync.errors import TransientError
from commerce_sync_devtools import cli
from commerce_sync_sandbox import orders as sandbox_orders
from commerce_sync_sandbox.faults import Faults
from commerce_sync_sandbox.server import SandboxServer

pytestmark = pytest.mark.integration

KINDS = ("allegro", "ebay", "amazon")
CONTRACT = Path(__file__).resolve().parents[3] / "shared" / "contracts" / "amazon" / "orders_2026-01-01.json"
SKU = "SKU-000003"
OTHER_SKU = "SKU-000004"
FAST = (100_000.0, 1.0, 100_000.0)  # API limits lifted for tests: rate, per, burst


@dataclass
class Sim:
    """One simulator as a test sees it: its URL, faults, listing quantity and the product's reader."""

    kind: str
    url: str
    faults: Faults
    market: Marketplace
    waits: list[float]
    server: SandboxServer

    def listed(self, sku: str) -> int:
        if self.kind == "allegro":
            sim = self.server.simulator
            return int(sim.available(sku) or 0)
        if self.kind == "ebay":
            return int(self.server.ebay.available(sku) or 0)
        return int(self.server.amazon.available(sku) or 0)

    def buy(self, sku: str = SKU, quantity: int = 1, *, paid: bool = True, force: bool = False) -> str:
        return sandbox_orders.buy(self.url, sku, quantity, paid=paid, force=force)


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[SandboxServer]:
    with SandboxServer(tmp_path / "feeds", tmp_path / "allegro.json", catalog_n=20) as server:
        yield server


def _market(kind: str, server: SandboxServer, waits: list[float], **options: Any) -> Marketplace:
    def sleep(seconds: float) -> None:
        waits.append(seconds)  # recorded, not slept: Retry-After is checked by value, the test stays fast

    market: Marketplace
    if kind == "allegro":
        market = AllegroMarketplace(AllegroClient(server.allegro_url, "demo-client", "demo-secret", **options))
    elif kind == "ebay":
        market = EbayMarketplace(
            EbayClient(server.ebay_url, "demo-ebay-client", "demo-ebay-secret", "demo-ebay-refresh-token", **options)
        )
    else:
        market = AmazonMarketplace(
            AmazonClient(
                server.amazon_url,
                "amzn1.application-oa2-client.sandbox",
                "demo-amazon-secret",
                "Atzr|demo-amazon-refresh-token",
                seller_id=server.amazon.seller_id,
                marketplace_id=server.amazon.marketplace_id,
                orders_rate=FAST,
                order_gets_rate=FAST,
                **options,
            )
        )
    market.client.sleep = sleep
    return market


@pytest.fixture(params=KINDS)
def sim(request: pytest.FixtureRequest, sandbox: SandboxServer) -> Iterator[Sim]:
    kind: str = request.param
    waits: list[float] = []
    market = _market(kind, sandbox, waits)
    url = {"allegro": sandbox.allegro_url, "ebay": sandbox.ebay_url, "amazon": sandbox.amazon_url}[kind]
    faults = {"allegro": sandbox.simulator, "ebay": sandbox.ebay, "amazon": sandbox.amazon}[kind].faults
    yield Sim(kind, url, faults, market, waits, sandbox)
    market.close()


def drain(
    market: Marketplace, cursor: str | None, limit: int = 100
) -> tuple[dict[str, MarketplaceOrder], str, list[Any]]:
    """Read until ``more`` is False, as the hub does; the latest state of each order wins."""
    seen: dict[str, MarketplaceOrder] = {}
    batches = []
    for _ in range(1000):
        batch = market.read_orders(cursor, limit=limit)
        batches.append(batch)
        ids = [order.order_id for order in batch.orders]
        assert len(ids) == len(set(ids)), "an order appears at most once per batch"
        assert len(ids) <= limit
        seen.update({order.order_id: order for order in batch.orders})
        assert batch.cursor is not None
        cursor = batch.cursor
        if not batch.more:
            return seen, cursor, batches
    raise AssertionError("the reader never stopped saying more")


def start(sim: Sim) -> str:
    """The first run's cursor ("start now"): nothing bought before it is read."""
    batch = sim.market.read_orders(None)
    assert batch.orders == ()
    assert batch.cursor is not None
    return batch.cursor


def test_the_kinds_declare_order_import() -> None:
    assert {spec.name for spec in registry.kinds("marketplace", "import_orders")} >= set(KINDS)


def test_buy_pay_cancel_are_read_with_their_status(sim: Sim) -> None:
    before_run = sim.buy(OTHER_SKU)
    time.sleep(0.01)  # the first run's "now" lies after that purchase
    cursor = start(sim)
    listed = sim.listed(SKU)

    unpaid = sim.buy(SKU, 2, paid=False)
    paid = sim.buy(SKU, 1)
    assert sim.listed(SKU) == listed - 3, "buying lowers the listing on the simulator"
    seen, cursor, _ = drain(sim.market, cursor)
    assert before_run not in seen
    assert seen[unpaid].status == "unpaid"
    assert seen[paid].status == "ready"
    line = seen[unpaid].lines[0]
    assert (line.sku, line.quantity, line.currency) == (SKU, 2, "PLN")
    assert line.offer_id and line.line_id and line.unit_price and line.unit_price > 0
    assert seen[unpaid].revision and seen[unpaid].updated_at

    sandbox_orders.pay(sim.url, unpaid)
    seen_paid, cursor, _ = drain(sim.market, cursor)
    assert seen_paid[unpaid].status == "ready"
    assert seen_paid[unpaid].revision != seen[unpaid].revision

    cancelled_unpaid = sim.buy(SKU, 1, paid=False)
    sandbox_orders.cancel(sim.url, cancelled_unpaid)  # cancelled before ready for processing
    sandbox_orders.cancel(sim.url, paid)  # cancelled after ready for processing
    assert sim.listed(SKU) == listed - 2, "cancelling puts the units back"
    seen_cancelled, _, _ = drain(sim.market, cursor)
    assert seen_cancelled[cancelled_unpaid].status == "cancelled"
    assert seen_cancelled[paid].status == "cancelled"
    assert seen_cancelled[paid].lines[0].quantity == 1


def test_pages_until_every_order_is_read(sim: Sim) -> None:
    cursor = start(sim)
    ids = sandbox_orders.buy_bulk(sim.url, [{"sku": SKU, "quantity": 1, "paid": n % 3 != 0} for n in range(25)])
    seen, _, batches = drain(sim.market, cursor, limit=10)
    assert set(ids) <= set(seen)
    assert len(batches) >= 3 and all(batch.more for batch in batches[:-1])
    assert sum(batch.details["pages"] for batch in batches) >= 3
    assert {seen[order_id].status for order_id in ids} == {"unpaid", "ready"}


def test_orders_changed_while_paging_are_neither_skipped_nor_lost(sim: Sim) -> None:
    cursor = start(sim)
    ids = sandbox_orders.buy_bulk(sim.url, [{"sku": SKU, "quantity": 1, "paid": False}] * 30)
    first = sim.market.read_orders(cursor, limit=10)
    assert first.more
    read_first = [order.order_id for order in first.orders]
    time.sleep(0.005)  # the changes below come after the window's end (millisecond timestamps)
    for order_id in read_first[:5]:
        sandbox_orders.pay(sim.url, order_id)  # these leave the window being paged; later pages shift up
    assert first.cursor is not None
    seen, cursor, batches = drain(sim.market, first.cursor, limit=10)
    assert set(ids) <= set(read_first) | set(seen), "no order was skipped"
    if sim.kind == "ebay":
        assert sum(batch.details.get("stepped_back", 0) for batch in batches) == 5
        # eBay knows orders left the window while it was paged: its last page asks for the next window.
        assert all(seen[order_id].status == "ready" for order_id in read_first[:5])
    later, _, _ = drain(sim.market, cursor, limit=10)  # the next run: what changed after the window
    seen.update(later)
    assert all(seen[order_id].status == "ready" for order_id in read_first[:5])


def test_cursor_rewound_by_a_day_reads_the_same_orders_again(sim: Sim) -> None:
    cursor = start(sim)
    ids = sandbox_orders.buy_bulk(sim.url, [{"sku": SKU, "quantity": 1, "paid": True}] * 7)
    sandbox_orders.cancel(sim.url, ids[0])
    seen, _, _ = drain(sim.market, cursor, limit=4)

    day_ago = iso_ms(datetime.now(UTC) - timedelta(days=1))
    rewound = {"allegro": {"from": "0"}, "ebay": {"from": day_ago}, "amazon": {"after": day_ago}}[sim.kind]
    again, _, _ = drain(sim.market, json.dumps(rewound), limit=4)
    assert set(ids) <= set(again), "nothing is lost when the window is read again"
    for order_id in ids:
        assert (again[order_id].status, again[order_id].revision) == (seen[order_id].status, seen[order_id].revision)
    assert again[ids[0]].status == "cancelled"


def test_429_with_retry_after_and_a_5xx_burst_are_recovered(sim: Sim) -> None:
    cursor = start(sim)
    bought = sim.buy(SKU)
    sim.faults.arm(throttle=1, retry_after=2, outage=2)
    seen, _, batches = drain(sim.market, cursor)
    assert seen[bought].status == "ready"
    assert sim.faults.fired["throttle"] == 1 and sim.faults.fired["outage"] == 2
    assert batches[0].details["throttled"] == 1
    assert batches[0].details["retries"] == 3
    assert 2.0 in sim.waits, "the client waited what Retry-After said"


def test_an_outage_beyond_the_retries_says_the_cursor_did_not_move(sandbox: SandboxServer) -> None:
    market = _market("ebay", sandbox, [], max_attempts=2)
    cursor = market.read_orders(None).cursor
    sandbox.ebay.faults.arm(outage=5)
    with pytest.raises(TransientError, match=r"eBay: reading orders failed .*cursor did not move"):
        market.read_orders(cursor)


@pytest.mark.parametrize("kind", ["ebay", "amazon"])
def test_orders_listed_without_their_status_are_read_one_by_one(sandbox: SandboxServer, kind: str) -> None:
    market = _market(kind, sandbox, [])
    url = sandbox.ebay_url if kind == "ebay" else sandbox.amazon_url
    faults = sandbox.ebay.faults if kind == "ebay" else sandbox.amazon.faults
    cursor = market.read_orders(None).cursor
    kept = sandbox_orders.buy(url, SKU, 1)
    cancelled = sandbox_orders.buy(url, SKU, 1, paid=False)
    sandbox_orders.cancel(url, cancelled)
    faults.arm(sparse_orders=True)
    seen, _, batches = drain(market, cursor)
    assert (seen[kept].status, seen[cancelled].status) == ("ready", "cancelled")
    assert sum(batch.details.get("get_order_calls", 0) for batch in batches) >= 2


def test_an_expired_amazon_pagination_token_reads_the_window_again(sandbox: SandboxServer) -> None:
    market = _market("amazon", sandbox, [])
    after = iso_ms(datetime.now(UTC) - timedelta(seconds=1))
    bought = sandbox_orders.buy(sandbox.amazon_url, SKU, 1)
    batch = market.read_orders(json.dumps({"after": after, "token": "expired-token"}))
    assert [order.order_id for order in batch.orders] == [bought]
    assert batch.details["restarted_windows"] == 1


def test_slow_answers_beyond_the_read_timeout_fail_as_transient(sandbox: SandboxServer) -> None:
    market = _market("amazon", sandbox, [], timeout=(2.0, 0.2), max_attempts=2)
    cursor = market.read_orders(None).cursor
    sandbox.amazon.faults.arm(slow=0.5)
    with pytest.raises(TransientError, match=r"Amazon: reading orders failed .*ReadTimeout"):
        market.read_orders(cursor)
    sandbox.amazon.faults.clear()


def test_allegro_duplicated_and_out_of_order_events(sandbox: SandboxServer) -> None:
    market = _market("allegro", sandbox, [])
    cursor = market.read_orders(None).cursor
    url = sandbox.allegro_url
    ready_then_cancelled = sandbox_orders.buy(url, SKU, 1)
    cancelled_unpaid = sandbox_orders.buy(url, SKU, 1, paid=False)
    paid_later = sandbox_orders.buy(url, OTHER_SKU, 1, paid=False)
    sandbox_orders.cancel(url, cancelled_unpaid)
    sandbox_orders.pay(url, paid_later)
    sandbox_orders.cancel(url, ready_then_cancelled)
    sandbox.simulator.faults.arm(duplicate_events=True, shuffle_events=True)

    seen, _, batches = drain(market, cursor, limit=5)
    assert seen[ready_then_cancelled].status == "cancelled"
    assert seen[cancelled_unpaid].status == "cancelled"
    assert seen[paid_later].status == "ready"
    assert sum(batch.details.get("duplicate_events", 0) for batch in batches) >= 5
    assert sum(batch.details.get("out_of_order_pages", 0) for batch in batches) >= 1
    # Every event was read exactly once past the duplicates: 3 + 2 + 2 + 1 + 1 + 1 events were logged.
    assert sum(batch.details["events"] - batch.details.get("duplicate_events", 0) for batch in batches) == 10


def test_a_malformed_order_is_reported_not_imported(sandbox: SandboxServer) -> None:
    market = _market("ebay", sandbox, [])
    cursor = market.read_orders(None).cursor
    good = sandbox_orders.buy(sandbox.ebay_url, SKU, 1)
    bad = sandbox_orders.buy(sandbox.ebay_url, SKU, 2)
    with sandbox.ebay._lock:
        sandbox.ebay.orders.orders[bad]["lines"][0]["quantity"] = -2  # as a broken marketplace answer would
    batch = market.read_orders(cursor)
    assert [order.order_id for order in batch.orders] == [good]
    assert batch.details["skipped"] == 1
    assert batch.details["skipped_orders"] == [
        {"order_id": bad, "reason": f"line {_line_id(sandbox, bad)}: quantity -2 is not positive"}
    ]


def _line_id(sandbox: SandboxServer, order_id: str) -> str:
    return str(sandbox.ebay.orders.orders[order_id]["lines"][0]["line_id"])


@pytest.mark.parametrize("kind", KINDS)
def test_buying_more_than_listed_is_refused_unless_forced(sandbox: SandboxServer, kind: str) -> None:
    url = {"allegro": sandbox.allegro_url, "ebay": sandbox.ebay_url, "amazon": sandbox.amazon_url}[kind]
    sim = {"allegro": sandbox.simulator, "ebay": sandbox.ebay, "amazon": sandbox.amazon}[kind]
    listed = int(sim.available(SKU) or 0)
    with pytest.raises(sandbox_orders.OrderBookError, match="units listed") as refused:
        sandbox_orders.buy(url, SKU, listed + 1)
    assert refused.value.status == 409
    assert sim.available(SKU) == listed
    sandbox_orders.buy(url, SKU, listed + 1, force=True)  # the other marketplace sold the last unit too
    assert sim.available(SKU) == 0
    with pytest.raises(sandbox_orders.OrderBookError) as missing:
        sandbox_orders.buy(url, "SKU-NOSUCH", 1)
    assert missing.value.status == 404


def test_orders_survive_a_simulator_restart(tmp_path: Path) -> None:
    with SandboxServer(tmp_path / "feeds", tmp_path / "allegro.json", catalog_n=20) as first:
        ids = [sandbox_orders.buy(url, SKU, 1) for url in (first.allegro_url, first.ebay_url, first.amazon_url)]
    with SandboxServer(tmp_path / "feeds", tmp_path / "allegro.json", catalog_n=20) as second:
        for url, order_id in zip((second.allegro_url, second.ebay_url, second.amazon_url), ids, strict=True):
            assert requests.get(f"{url}/_sandbox/orders/{order_id}", timeout=5).json()["status"] == "ready"
        assert second.simulator.order_event_stats()["latestEvent"]["id"] == "3"


def test_the_cli_buys_pays_and_cancels(sandbox: SandboxServer, capsys: pytest.CaptureFixture[str]) -> None:
    listed = int(sandbox.ebay.available(SKU) or 0)
    url = sandbox.ebay_url
    assert (
        cli.main(["sandbox", "buy", "--channel", "ebay", "--url", url, "--sku", SKU, "--quantity", "2", "--unpaid"])
        == 0
    )
    order_id = capsys.readouterr().out.strip()
    assert sandbox.ebay.available(SKU) == listed - 2
    assert cli.main(["sandbox", "pay", "--channel", "ebay", "--url", url, "--order", order_id]) == 0
    assert cli.main(["sandbox", "cancel", "--channel", "ebay", "--url", url, "--order", order_id]) == 0
    assert sandbox.ebay.available(SKU) == listed
    assert cli.main(["sandbox", "buy", "--channel", "ebay", "--url", url, "--sku", SKU, "--quantity", "100000"]) == 2
    assert "units listed" in capsys.readouterr().err


# ---------------------------------------------------------------------- Amazon contract
def _contract() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(CONTRACT.read_text(encoding="utf-8"))
    return document


def _validate(document: Any, definition: str) -> None:
    contract = _contract()
    jsonschema.validate(document, {"$ref": f"#/definitions/{definition}", "definitions": contract["definitions"]})


def test_amazon_answers_and_requests_follow_the_orders_contract(sandbox: SandboxServer) -> None:
    market = _market("amazon", sandbox, [])
    assert isinstance(market, AmazonMarketplace)
    sent: list[str] = []
    market.client.session.hooks["response"].append(lambda response, *args, **kwargs: sent.append(response.url))
    answers: list[Any] = []
    market.client.session.hooks["response"].append(
        lambda response, *args, **kwargs: (
            answers.append(response.json()) if "/orders/2026-01-01/" in response.url else None
        )
    )
    cursor = market.read_orders(None).cursor
    url = sandbox.amazon_url
    unpaid = sandbox_orders.buy(url, SKU, 1, paid=False)
    cancelled = sandbox_orders.buy(url, SKU, 1)
    sandbox_orders.cancel(url, cancelled)
    sandbox_orders.buy_bulk(url, [{"sku": OTHER_SKU, "quantity": 1}] * 3)
    seen, _, _ = drain(market, cursor, limit=2)
    assert seen[unpaid].status == "unpaid" and seen[cancelled].status == "cancelled"
    order = market.client.get_order(cancelled)
    assert order["orderId"] == cancelled

    assert answers, "the reader called the Orders API"
    for answer in answers:
        _validate(answer, "SearchOrdersResponse" if "orders" in answer else "GetOrderResponse")
    statuses = {o["fulfillment"]["fulfillmentStatus"] for a in answers if "orders" in a for o in a["orders"]}
    assert statuses == {"PENDING", "UNSHIPPED", "CANCELLED"}

    operation = _contract()["paths"]["/orders/2026-01-01/orders"]["get"]
    parameters = {parameter["name"]: parameter for parameter in operation["parameters"]}
    searches = [u for u in sent if urlsplit(u).path.endswith("/orders/2026-01-01/orders")]
    assert len(searches) >= 4
    for search in searches:
        query = parse_qs(urlsplit(search).query)
        assert set(query) <= set(parameters), f"unknown parameters in {search}"
        assert ("createdAfter" in query) != ("lastUpdatedAfter" in query)
        assert 1 <= int(query["maxResultsPerPage"][0]) <= 100
        allowed = set(parameters["includedData"]["items"]["enum"])
        assert set(query["includedData"][0].split(",")) <= allowed
        datetime.fromisoformat(query["lastUpdatedAfter"][0].replace("Z", "+00:00"))


def test_amazon_refuses_a_search_outside_the_contract(sandbox: SandboxServer) -> None:
    market = _market("amazon", sandbox, [])
    assert isinstance(market, AmazonMarketplace)
    token = market.client._auth_headers()
    both = requests.get(
        f"{sandbox.amazon_url}/orders/2026-01-01/orders",
        params={"createdAfter": "2026-01-01T00:00:00Z", "lastUpdatedAfter": "2026-01-01T00:00:00Z"},
        headers=token,
        timeout=5,
    )
    assert both.status_code == 400
    _validate(both.json(), "ErrorList")
    too_many = requests.get(
        f"{sandbox.amazon_url}/orders/2026-01-01/orders",
        params={"lastUpdatedAfter": "2026-01-01T00:00:00Z", "maxResultsPerPage": 101},
        headers=token,
        timeout=5,
    )
    assert too_many.status_code == 400
