"""The order doorbell (OrderDoorbellTrigger) against a real hub database and the sandbox simulators.

Each test drives ``run()`` as the triggerer would: a task reads the async generator into a queue. The
hub's order cursors are written by the real importer (``import_channel``) from the simulators; sales
are made through the simulators' sandbox buy API. "No event" is checked after the trigger completed a
number of poll rounds (``trigger.polls``), not after a time; the waits only bound the test's run time.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from commerce_sync.audit import ledger
from commerce_sync.config import load_config
from commerce_sync.db import connect, drop_database
from commerce_sync.hub.migrate import migrate
from commerce_sync.orders.importer import import_channel
from commerce_sync.triggers import ORDER_STATE_KEY, OrderDoorbellTrigger
from commerce_sync_sandbox import orders as sandbox_orders
from commerce_sync_sandbox.server import SandboxServer
from tests.conftest import new_database
from tests.integration.test_erp_doorbell import MemoryStateStore

pytestmark = pytest.mark.integration

WAIT_S = 30.0  # generous: a loaded 2-core machine; a poll round takes milliseconds
POLL_S = 0.3
RUN = ledger.RunContext(run_id="doorbell-test", dag_id="doorbell_test", task_id="t")
SKU = "SKU-000003"


@dataclass(frozen=True)
class World:
    hub: str
    hub_conn_id: str
    server: SandboxServer

    def url(self, channel: str) -> str:
        return {"allegro": self.server.allegro_url, "ebay": self.server.ebay_url, "amazon": self.server.amazon_url}[
            channel
        ]

    def buy(self, channel: str, sku: str = SKU) -> str:
        return sandbox_orders.buy(self.url(channel), sku, 1)

    def faults(self, channel: str) -> Any:
        return {"allegro": self.server.simulator, "ebay": self.server.ebay, "amazon": self.server.amazon}[
            channel
        ].faults

    def import_orders(self, channel: str) -> None:
        """What the DAG's import task does: read the channel's orders into the hub, store the cursor."""
        import_channel(self.hub, load_config().channel(channel), RUN)


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    hub = new_database()
    migrate(hub)
    hub_conn_id = f"hub_bell_{uuid.uuid4().hex[:8]}"
    with SandboxServer(tmp_path / "feeds", tmp_path / "allegro.json", catalog_n=20) as server:
        monkeypatch.setenv(f"AIRFLOW_CONN_{hub_conn_id.upper()}", hub)
        monkeypatch.setenv(
            "AIRFLOW_CONN_ALLEGRO_SANDBOX",
            json.dumps(
                {"conn_type": "http", "host": server.allegro_url, "login": "demo-client", "password": "demo-secret"}
            ),
        )
        monkeypatch.setenv(
            "AIRFLOW_CONN_EBAY_SANDBOX",
            json.dumps(
                {
                    "conn_type": "http",
                    "host": server.ebay_url,
                    "login": "demo-ebay-client",
                    "password": "demo-ebay-secret",
                    "extra": {"refresh_token": "demo-ebay-refresh-token"},
                }
            ),
        )
        monkeypatch.setenv(
            "AIRFLOW_CONN_AMAZON_SANDBOX",
            json.dumps(
                {
                    "conn_type": "http",
                    "host": server.amazon_url,
                    "login": "amzn1.application-oa2-client.sandbox",
                    "password": "demo-amazon-secret",
                    "extra": {
                        "refresh_token": "Atzr|demo-amazon-refresh-token",
                        "seller_id": server.amazon.seller_id,
                        "marketplace_id": server.amazon.marketplace_id,
                    },
                }
            ),
        )
        yield World(hub, hub_conn_id, server)
    drop_database(hub)


def _trigger(world: World, channels: list[str], **kwargs: Any) -> OrderDoorbellTrigger:
    settings: dict[str, Any] = {"poll_seconds": POLL_S, "reconnect_seconds": 0.2, "channels": channels}
    settings.update(kwargs)
    return OrderDoorbellTrigger(hub_conn_id=world.hub_conn_id, **settings)


class Running:
    """A trigger's ``run()`` read by a task into a queue, as the triggerer reads it."""

    def __init__(self, trigger: OrderDoorbellTrigger) -> None:
        self.trigger = trigger
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.task = asyncio.ensure_future(self._pump())

    async def _pump(self) -> None:
        async for event in self.trigger.run():
            await self.events.put(dict(event.payload))

    async def next(self) -> dict[str, Any]:
        return await asyncio.wait_for(self.events.get(), WAIT_S)

    async def rounds(self, n: int) -> None:
        """Wait until the trigger completed ``n`` more poll rounds."""
        target = self.trigger.polls + n
        await _until(lambda: self.trigger.polls >= target, f"{n} more poll rounds")

    async def quiet(self, n: int = 4) -> None:
        """Assert no event came during ``n`` poll rounds."""
        await self.rounds(n)
        assert self.events.empty(), self.events.get_nowait()

    async def stop(self) -> None:
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task
        assert self.events.empty()


async def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"waited {WAIT_S:.0f} s for {what}")
        await asyncio.sleep(0.05)


async def _in_thread(function: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.to_thread(function, *args)


def _run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())


def test_a_sale_fires_one_event_naming_its_channel_and_nothing_new_fires_nothing(world: World) -> None:
    for channel in ("allegro", "ebay"):
        world.import_orders(channel)  # the first import: cursors "from now"

    async def scenario() -> None:
        bell = Running(_trigger(world, ["allegro", "ebay"]))
        await bell.quiet()
        order_id = await _in_thread(world.buy, "allegro")
        event = await bell.next()
        assert event["channels"] == ["allegro"]
        assert event["news"]["allegro"]["latest_event"]
        await bell.quiet()  # the same news, poll after poll: no second event
        await _in_thread(world.import_orders, "allegro")  # the DAG run imports it
        await bell.quiet()
        with connect(world.hub) as conn:
            assert conn.execute(
                "SELECT 1 FROM hub.sales_order WHERE channel = 'allegro' AND order_id = %s", (order_id,)
            ).fetchone()
        await _in_thread(world.buy, "ebay")
        assert (await bell.next())["channels"] == ["ebay"]
        await _in_thread(world.import_orders, "ebay")
        await bell.quiet()  # eBay's overlapping window holds the order: still no ring
        await bell.stop()

    _run(scenario)


def test_a_sale_while_the_run_still_imports_rings_again(world: World) -> None:
    world.import_orders("ebay")

    async def scenario() -> None:
        bell = Running(_trigger(world, ["ebay"]))
        await bell.rounds(1)
        await _in_thread(world.buy, "ebay")
        first = await bell.next()
        await _in_thread(world.buy, "ebay", "SKU-000004")  # before the hub imported the first
        second = await bell.next()
        assert first["news"]["ebay"]["marker"] != second["news"]["ebay"]["marker"]
        await bell.quiet()
        await bell.stop()

    _run(scenario)


def test_amazon_is_probed_as_often_as_its_budget_allows(world: World) -> None:
    world.import_orders("amazon")

    async def scenario() -> None:
        bell = Running(_trigger(world, ["amazon"], probe_seconds={"amazon": 0}))
        await bell.rounds(1)
        await _in_thread(world.buy, "amazon")
        event = await bell.next()
        assert event["channels"] == ["amazon"]
        await bell.stop()
        await _in_thread(world.import_orders, "amazon")
        searches = world.server.amazon.stats["searches"]
        spaced = Running(_trigger(world, ["amazon"]))  # the default: at most every ~6 minutes
        await spaced.rounds(5)
        assert world.server.amazon.stats["searches"] == searches + 1
        await spaced.stop()

    _run(scenario)


def test_a_failing_probe_is_logged_and_the_others_keep_ringing(world: World, caplog: pytest.LogCaptureFixture) -> None:
    for channel in ("allegro", "ebay"):
        world.import_orders(channel)
    caplog.set_level(logging.WARNING, logger="commerce_sync.triggers")
    world.faults("ebay").arm(outage=4)  # two probes of two attempts each (below the breaker's 5)

    async def scenario() -> None:
        bell = Running(_trigger(world, ["allegro", "ebay"]))
        await _until(lambda: "channel ebay (ebay): probe failed" in caplog.text, "the failure in the log")
        await _in_thread(world.buy, "allegro")
        assert (await bell.next())["channels"] == ["allegro"]
        await _until(lambda: world.faults("ebay").fired["outage"] == 4, "the outage to pass")
        await _in_thread(world.buy, "ebay")
        assert (await bell.next())["channels"] == ["ebay"]
        assert not bell.task.done()
        await bell.stop()

    _run(scenario)
    assert "TransientError" in caplog.text


def test_a_simulator_that_is_down_and_a_missing_connection_do_not_stop_it(
    world: World, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    for channel in ("allegro", "ebay"):
        world.import_orders(channel)
    caplog.set_level(logging.WARNING, logger="commerce_sync.triggers")
    down = json.dumps({"conn_type": "http", "host": "http://127.0.0.1:9", "login": "x", "password": "y"})
    monkeypatch.setenv("AIRFLOW_CONN_ALLEGRO_SANDBOX", down)  # nothing listens on port 9
    monkeypatch.delenv("AIRFLOW_CONN_AMAZON_SANDBOX")

    async def scenario() -> None:
        bell = Running(_trigger(world, ["allegro", "ebay", "amazon"]))
        await _until(lambda: "channel allegro (allegro): probe failed" in caplog.text, "allegro's failure")
        await _in_thread(world.buy, "ebay")
        assert (await bell.next())["channels"] == ["ebay"]
        await bell.stop()

    _run(scenario)
    assert "channel amazon (amazon) not probed" in caplog.text and "amazon_sandbox" in caplog.text


def test_by_default_every_enabled_channel_with_a_probe_is_probed(
    world: World, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """channels.yaml as shipped: Allegro, eBay and Amazon are probed; the WooCommerce shop (webhooks) is not."""
    monkeypatch.setenv(
        "AIRFLOW_CONN_SHOP_SANDBOX",
        json.dumps({"conn_type": "http", "host": world.server.woocommerce_url, "login": "ck", "password": "cs"}),
    )
    caplog.set_level(logging.INFO, logger="commerce_sync.triggers")

    async def scenario() -> None:
        bell = Running(OrderDoorbellTrigger(hub_conn_id=world.hub_conn_id, poll_seconds=POLL_S))
        event = await bell.next()  # no channel was imported yet: each rings once to get its first import
        assert event["channels"] == ["allegro", "amazon", "ebay"]
        assert {news["marker"] for news in event["news"].values()} == {"no-cursor"}
        await bell.quiet()
        await bell.stop()

    _run(scenario)
    assert "channel shop (woocommerce) has no order probe" in caplog.text


def test_news_once_imported_is_forgotten_so_the_same_marker_rings_again(world: World) -> None:
    """An operator deletes a channel's cursor ("start from now"): the channel rings again to get imported."""

    async def scenario() -> None:
        bell = Running(_trigger(world, ["ebay"]))
        assert (await bell.next())["news"]["ebay"]["marker"] == "no-cursor"
        await _in_thread(world.import_orders, "ebay")
        await bell.quiet()
        with connect(world.hub) as conn:
            conn.execute("DELETE FROM hub.order_cursor WHERE channel = 'ebay'")
        assert (await bell.next())["news"]["ebay"]["marker"] == "no-cursor"
        await bell.stop()

    _run(scenario)


def test_a_hub_it_cannot_reach_yields_no_error_event(world: World) -> None:
    async def scenario() -> None:
        bell = Running(
            OrderDoorbellTrigger(hub_conn_id="hub_bell_not_defined", poll_seconds=POLL_S, reconnect_seconds=0.1)
        )
        await asyncio.sleep(1.5)
        assert bell.events.empty() and not bell.task.done()
        assert bell.trigger.polls == 0
        await bell.stop()

    _run(scenario)


def test_after_a_restart_it_rings_for_news_made_while_stopped_and_not_again_for_old_news(world: World) -> None:
    for channel in ("allegro", "ebay"):
        world.import_orders(channel)

    store = MemoryStateStore()

    def started() -> Running:
        trigger = _trigger(world, ["allegro", "ebay"])
        trigger.asset_state_store = store  # type: ignore[assignment]
        return Running(trigger)

    async def scenario() -> None:
        bell = started()
        await bell.rounds(1)
        await _in_thread(world.buy, "allegro")
        assert (await bell.next())["channels"] == ["allegro"]
        await bell.stop()
        assert "allegro" in store.values[ORDER_STATE_KEY]
        await _in_thread(world.buy, "ebay")  # nobody probes now
        again = started()
        event = await again.next()
        assert event["channels"] == ["ebay"], "allegro's news was rung for before the restart"
        await again.quiet()
        await again.stop()

    _run(scenario)


def test_serialize_round_trips_without_credentials() -> None:
    trigger = OrderDoorbellTrigger(poll_seconds=5.0, probe_seconds={"amazon": 600.0})
    path, kwargs = trigger.serialize()
    assert path == "commerce_sync.triggers.OrderDoorbellTrigger"
    assert OrderDoorbellTrigger(**kwargs).serialize() == (path, kwargs)
    assert kwargs["hub_conn_id"] == "hub_db"
    assert not any("://" in str(v) for v in kwargs.values())
