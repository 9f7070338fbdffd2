"""Marketplace faults against the simulator: throttling, outages, lost answers, stale retries, per-item refusals."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from commerce_sync.channels.allegro import AllegroClient
from commerce_sync.connections import ConnectionInfo
from commerce_sync.errors import TransientError
from commerce_sync.transport.http import CircuitBreaker
from commerce_sync_sandbox.server import SandboxServer
from tests.integration.test_allegro_publisher import (  # noqa: F401 - fixtures hub, sandbox
    CHANNEL,
    SKUS,
    _outbox,
    _price,
    _publish,
    _queue,
    _stats,
    _sync,
    hub,
    sandbox,
)
from tests.unit.test_channel_base import FakeClock

pytestmark = pytest.mark.integration


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def allegro(sandbox: SandboxServer, clock: FakeClock) -> Iterator[AllegroClient]:  # noqa: F811
    info = ConnectionInfo(
        conn_id="allegro_sandbox", host=sandbox.allegro_url, login="demo-client", password="demo-secret"
    )
    breaker = CircuitBreaker("allegro", failure_threshold=3, reset_timeout=30, clock=clock)
    client = AllegroClient.from_connection(info, breaker=breaker, max_attempts=6)
    client.sleep = clock.sleep  # waits are recorded, not slept
    yield client
    client.close()


def _pending(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM hub.outbox WHERE status = 'pending'").fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.parametrize("form", ["seconds", "date"])
def test_429_retry_after_is_respected_in_both_forms(
    hub: str,  # noqa: F811
    sandbox: SandboxServer,  # noqa: F811
    allegro: AllegroClient,
    clock: FakeClock,
    form: str,
) -> None:
    _sync(hub, allegro)
    _queue(hub, SKUS[0], "price", {"amount": "33.00", "currency": "PLN"})
    sandbox.simulator.faults.arm(throttle=2, retry_after=3, retry_after_form=form)
    result, _ = _publish(hub, allegro)
    assert result.sent == 1 and _price(sandbox, SKUS[0]) == "33.00"
    assert sandbox.simulator.faults.fired["throttle"] == 2
    assert len(clock.slept) == 2
    if form == "seconds":
        assert clock.slept == [3.0, 3.0]
    else:  # an HTTP-date 4 s ahead, whole seconds: the wait lies in (3, 4]
        assert all(3.0 < wait <= 4.0 for wait in clock.slept)
    assert allegro.breaker.state == "closed"  # throttling is not an outage


def test_5xx_outage_opens_breaker_and_backlog_drains_after_recovery(
    hub: str,  # noqa: F811
    sandbox: SandboxServer,  # noqa: F811
    allegro: AllegroClient,
    clock: FakeClock,
) -> None:
    _sync(hub, allegro)
    for number, sku in enumerate(SKUS):
        _queue(hub, sku, "price", {"amount": f"{40 + number}.00", "currency": "PLN"})
        _queue(hub, sku, "quantity", {"value": 10 + number})
    sandbox.simulator.faults.arm(outage=1000)
    with pytest.raises(TransientError, match="circuit open after 3 consecutive failures"):
        _publish(hub, allegro)
    assert allegro.breaker.state == "open"
    fired = sandbox.simulator.faults.fired["outage"]
    assert fired == 3  # then it failed fast: no more requests hit the outage
    with pytest.raises(TransientError, match="circuit open"):
        _publish(hub, allegro)
    assert sandbox.simulator.faults.fired["outage"] == fired
    assert _pending(hub) == 6
    with psycopg.connect(hub) as conn:
        failed = conn.execute(
            "SELECT count(*) FROM audit.transfer WHERE target = %s AND status = 'failed'", (CHANNEL,)
        ).fetchone()
    assert failed == (2,)

    sandbox.simulator.faults.clear()
    clock.now += 30  # cool-down over: the next request is the half-open probe
    result, _ = _publish(hub, allegro)
    assert allegro.breaker.state == "closed"
    assert result.sent == 6 and _pending(hub) == 0
    assert [_price(sandbox, sku) for sku in SKUS] == ["40.00", "41.00", "42.00"]


def test_answer_dropped_after_apply_has_no_duplicate_effect(
    hub: str,  # noqa: F811
    sandbox: SandboxServer,  # noqa: F811
    allegro: AllegroClient,
) -> None:
    _sync(hub, allegro)
    _queue(hub, SKUS[0], "price", {"amount": "55.00", "currency": "PLN"})
    _queue(hub, SKUS[1], "quantity", {"value": 4})
    sandbox.simulator.faults.arm(drop_after_apply=2)
    result, _ = _publish(hub, allegro)
    assert sandbox.simulator.faults.fired["drop"] == 2
    assert result.sent == 2 and _pending(hub) == 0
    # Each command id (derived from the idempotency keys) was applied once, despite two PUTs each.
    assert _stats(sandbox) == {"price_commands": 1, "quantity_commands": 1, "offers_changed": 2}
    assert _price(sandbox, SKUS[0]) == "55.00"


def test_older_retry_after_newer_update_never_wins(
    hub: str,  # noqa: F811
    sandbox: SandboxServer,  # noqa: F811
    allegro: AllegroClient,
) -> None:
    a = SKUS[0]
    _sync(hub, allegro)
    _queue(hub, a, "price", {"amount": "61.00", "currency": "PLN"}, version=3)
    _publish(hub, allegro)
    assert _price(sandbox, a) == "61.00"
    # A retry of an older version arrives after the newer one was published.
    _queue(hub, a, "price", {"amount": "60.00", "currency": "PLN"}, version=2)
    result, _ = _publish(hub, allegro)
    assert (result.sent, result.superseded) == (0, 1)
    assert _price(sandbox, a) == "61.00"
    assert _outbox(hub)[f"{CHANNEL}:{a}:price:v2"][0] == "superseded"


def test_per_item_rejections_are_recorded_per_sku(
    hub: str,  # noqa: F811
    sandbox: SandboxServer,  # noqa: F811
    allegro: AllegroClient,
) -> None:
    a, b, c = SKUS
    _sync(hub, allegro)
    for sku in SKUS:
        _queue(hub, sku, "price", {"amount": "70.00", "currency": "PLN"})
    sandbox.simulator.faults.arm(reject={b: "price change blocked: offer under review"})
    result, transfer = _publish(hub, allegro)
    assert (result.sent, result.failed) == (2, 1)
    outbox = _outbox(hub)
    status, _request, error, *_ = outbox[f"{CHANNEL}:{b}:price:v1"]
    assert status == "failed" and f"(SKU {b})" in error and "offer under review" in error
    assert outbox[f"{CHANNEL}:{a}:price:v1"][0] == outbox[f"{CHANNEL}:{c}:price:v1"][0] == "sent"
    assert transfer.rows_rejected == 1
