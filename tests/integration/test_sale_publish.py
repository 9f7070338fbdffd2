"""The sale path's shortcut: the orders DAG's quantity push sends what it queued (publish_pending).

Against the hub, the sandbox ERP and the marketplace and shop simulators: a unit sold on Allegro is
imported, its quantity pushed, and sent to every other channel from the same process; a channel that
would first need its offer ids re-read, or whose publish fails, is left to hub_to_marketplaces with the
reason, and the others still get theirs.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from commerce_sync import registry
from commerce_sync.channels.publish import INLINE_PUBLISH_ENV, inline_publish_enabled, publish_pending
from commerce_sync.config import Channel, load_config
from commerce_sync.db import connect
from commerce_sync.errors import ConfigError
from commerce_sync_sandbox import orders as sandbox_orders
from tests.faults.world import fault_world, step_erp, step_orders, step_price, step_publish
from tests.integration.orders_world import RUN

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, hub_template: str) -> Iterator[Any]:
    with fault_world(tmp_path_factory.mktemp("sale_publish"), hub_template) as w:
        step_erp(w.hub)
        step_price(w.hub)
        step_publish(w.hub)  # every channel listed and its offer ids read
        step_orders(w.hub)  # the order cursors start now
        yield w


def _channels() -> list[Channel]:
    return [
        c
        for c in load_config().channels
        if c.enabled and registry.get(c.kind).family == "marketplace" and registry.get(c.kind).can("publish")
    ]


def _pending(hub: str, sku: str) -> set[str]:
    with connect(hub) as conn:
        rows = conn.execute("SELECT channel FROM hub.outbox WHERE sku = %s AND status = 'pending'", (sku,))
        return {row[0] for row in rows}


def _hub_quantity(hub: str, channel: str, sku: str) -> int:
    with connect(hub) as conn:
        row = conn.execute(
            "SELECT quantity FROM hub.channel_offer WHERE channel = %s AND sku = %s", (channel, sku)
        ).fetchone()
    assert row is not None
    return int(row[0])


def _sell(world: Any, index: int) -> str:
    """Sell one unit of a SKU every channel lists below the cap on Allegro; import and push it."""
    with connect(world.hub) as conn:
        skus = [
            row[0]
            for row in conn.execute(
                "SELECT sku FROM hub.channel_offer WHERE channel IN ('allegro', 'ebay', 'amazon') GROUP BY sku "
                "HAVING count(*) = 3 AND min(quantity) BETWEEN 2 AND 400 ORDER BY sku"
            )
        ]
    sku = skus[index]
    sandbox_orders.buy(world.server.allegro_url, sku, 1)
    step_orders(world.hub)
    assert {"ebay", "amazon"} <= _pending(world.hub, sku), "the push queued the new quantity"
    return sku


def test_the_sale_is_sent_to_every_channel_from_the_push(world: Any) -> None:
    sku = _sell(world, 0)
    done = publish_pending(world.hub, _channels(), RUN)
    assert {"ebay", "amazon"} <= {r["channel"] for r in done.published}, done
    assert done.left == {}, done.left
    assert _pending(world.hub, sku) == set()
    assert world.server.ebay.available(sku) == _hub_quantity(world.hub, "ebay", sku)
    assert world.server.amazon.available(sku) == _hub_quantity(world.hub, "amazon", sku)
    with connect(world.hub) as conn:  # each send is a publish transfer in the ledger, as from the DAG
        sent = conn.execute(
            "SELECT count(*) FROM audit.transfer WHERE dataset = 'offer_update' AND target = 'channel:ebay' "
            "AND transfer_id = ANY(%s::uuid[])",
            ([t for r in done.published for t in r["transfer_ids"]],),
        ).fetchone()
    assert sent == (1,)


def test_what_cannot_be_sent_cheaply_or_at_all_is_left_to_the_dag(world: Any) -> None:
    sku = _sell(world, 1)
    channels = [
        c.model_copy(update={"listing_refresh_minutes": 0})  # eBay: offer ids to read before every publish
        if c.id == "ebay"
        else c.model_copy(update={"conn_id": "no_such_connection"})  # Amazon: its publish fails
        if c.id == "amazon"
        else c
        for c in _channels()
    ]
    before = world.server.ebay.available(sku)
    done = publish_pending(world.hub, channels, RUN)
    assert done.left["ebay"].startswith("offer ids to re-read first (read before every publish"), done.left
    assert done.left["amazon"].startswith("publish failed, left to hub_to_marketplaces"), done.left
    assert "allegro" in {r["channel"] for r in done.published}, "the others still get theirs"
    assert world.server.ebay.available(sku) == before, "nothing was sent to a channel left to the DAG"
    assert {"ebay", "amazon"} <= _pending(world.hub, sku)
    step_publish(world.hub)  # what hub_to_marketplaces then does
    assert _pending(world.hub, sku) == set()
    assert world.server.ebay.available(sku) == _hub_quantity(world.hub, "ebay", sku)


def test_a_large_backlog_is_left_to_the_dag(world: Any) -> None:
    sku = _sell(world, 2)
    done = publish_pending(world.hub, _channels(), RUN, max_rows=0)
    assert done.published == []
    assert "ebay" in done.left and done.left["ebay"].endswith("more than 0 sent inline: left to hub_to_marketplaces")
    assert {"ebay", "amazon"} <= _pending(world.hub, sku)
    step_publish(world.hub)
    assert _pending(world.hub, sku) == set()


@pytest.mark.parametrize(("raw", "expected"), [(None, True), ("1", True), ("on", True), ("0", False), ("off", False)])
def test_the_switch(monkeypatch: pytest.MonkeyPatch, raw: str | None, expected: bool) -> None:
    if raw is None:
        monkeypatch.delenv(INLINE_PUBLISH_ENV, raising=False)
    else:
        monkeypatch.setenv(INLINE_PUBLISH_ENV, raw)
    assert inline_publish_enabled() is expected


def test_a_bad_switch_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(INLINE_PUBLISH_ENV, "sometimes")
    with pytest.raises(ConfigError, match="COMMERCE_SYNC_INLINE_PUBLISH='sometimes': expected 1 or 0"):
        inline_publish_enabled()
