"""The order doorbell's probes (``Marketplace.orders_changed_since``) against the sandbox simulators.

Real HTTP on loopback, the product's clients and readers. The cursor a probe gets is always one the
reader wrote, as the hub stores it after an import (drained with :func:`drain`, as the importer does).
"""

from __future__ import annotations

import json

import pytest

from commerce_sync.channels.amazon import ORDER_PROBE_SECONDS, AmazonMarketplace
from commerce_sync.channels.marketplace import Marketplace
from commerce_sync.channels.orders import OrderNews
from commerce_sync.errors import TransientError
from commerce_sync_sandbox import orders as sandbox_orders
from commerce_sync_sandbox.server import SandboxServer
from tests.integration.test_order_readers import (  # noqa: F401 - fixtures sandbox, sim
    KINDS,
    SKU,
    Sim,
    _market,
    drain,
    sandbox,
    sim,
    start,
)

pytestmark = pytest.mark.integration


def probe(market: Marketplace, cursor: str | None) -> OrderNews:
    news = market.orders_changed_since(cursor)
    assert news is not None, "the probe did not ask"
    return news


def test_every_order_importing_marketplace_kind_has_a_probe() -> None:
    from commerce_sync import registry

    for spec in registry.kinds("marketplace", "import_orders"):
        if spec.name in KINDS:
            assert spec.marketplace is not None
            market_type = spec.marketplace.__self__  # type: ignore[attr-defined]  # the classmethod's class
            assert market_type.probes_orders, spec.name


def test_no_news_then_a_sale_then_no_news_once_the_hub_imported_it(sim: Sim) -> None:  # noqa: F811
    cursor = start(sim)
    quiet = probe(sim.market, cursor)
    assert quiet.new is False, quiet

    bought = sim.buy(SKU)
    news = probe(sim.market, cursor)
    assert news.new is True, news
    assert probe(sim.market, cursor).marker == news.marker, "the same unimported news has the same marker"

    seen, imported, _ = drain(sim.market, cursor)
    assert bought in seen
    after = probe(sim.market, imported)
    assert after.new is False, after


def test_a_second_sale_before_the_import_is_new_news(sim: Sim) -> None:  # noqa: F811
    cursor = start(sim)
    sim.buy(SKU)
    first = probe(sim.market, cursor)
    sim.buy(SKU)
    second = probe(sim.market, cursor)
    assert first.new and second.new
    assert second.marker != first.marker


def test_a_paid_order_is_news_after_its_purchase_was_imported(sim: Sim) -> None:  # noqa: F811
    cursor = start(sim)
    order_id = sim.buy(SKU, paid=False)
    _, cursor, _ = drain(sim.market, cursor)
    assert probe(sim.market, cursor).new is False
    sandbox_orders.pay(sim.url, order_id)
    assert probe(sim.market, cursor).new is True


@pytest.mark.parametrize("kind", ["ebay", "amazon"])
def test_the_readers_overlapping_window_does_not_ring_forever(sandbox: SandboxServer, kind: str) -> None:  # noqa: F811
    """eBay and Amazon read from ``overlap`` before the newest change: the probe must not count those."""
    market = _market(kind, sandbox, [])
    url = sandbox.ebay_url if kind == "ebay" else sandbox.amazon_url
    cursor = market.read_orders(None).cursor
    bought = sandbox_orders.buy(url, SKU, 1)
    _, cursor, _ = drain(market, cursor)
    again, cursor, _ = drain(market, cursor)  # the next import's window still holds the order ...
    assert bought in again
    for _ in range(3):  # ... the probe does not, poll after poll
        assert probe(market, cursor).new is False
    state = json.loads(cursor)
    assert "seen" in state, state


def test_without_a_cursor_it_is_news_without_a_call(sim: Sim) -> None:  # noqa: F811
    news = probe(sim.market, None)
    assert (news.new, news.marker) == (True, "no-cursor")


def test_a_429_with_retry_after_is_waited_out(sim: Sim) -> None:  # noqa: F811
    cursor = start(sim)
    sim.buy(SKU)
    sim.faults.arm(throttle=1, retry_after=2)
    assert probe(sim.market, cursor).new is True
    assert sim.faults.fired["throttle"] == 1
    assert 2.0 in sim.waits, "the client waited what Retry-After said"


def test_throttling_beyond_the_retries_is_a_transient_error_with_the_retry_after(sandbox: SandboxServer) -> None:  # noqa: F811
    market = _market("allegro", sandbox, [], max_attempts=2)
    cursor = market.read_orders(None).cursor
    sandbox.simulator.faults.arm(throttle=5, retry_after=30)
    with pytest.raises(TransientError, match="429"):
        market.orders_changed_since(cursor)
    assert market.client.retry_after == 30.0  # what the order doorbell backs off by
    sandbox.simulator.faults.clear()


def test_amazon_asks_only_when_its_search_bucket_has_a_token(sandbox: SandboxServer) -> None:  # noqa: F811
    market = _market("amazon", sandbox, [])
    assert isinstance(market, AmazonMarketplace)
    cursor = market.read_orders(None).cursor
    market.client.orders_bucket = type(market.client.orders_bucket)(0.0056, 1.0, 1.0)  # the real rate, burst 1
    searches = sandbox.amazon.stats["searches"]
    assert probe(market, cursor).new is False  # takes the one token
    assert market.orders_changed_since(cursor) is None, "no token: the probe does not ask (nor wait)"
    assert sandbox.amazon.stats["searches"] == searches + 1
    assert AmazonMarketplace.order_probe_seconds == ORDER_PROBE_SECONDS > 300
