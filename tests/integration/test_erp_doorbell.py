"""The ERP doorbell (PostgresChangeTrigger) against a real PostgreSQL and the sandbox ERP's NOTIFY trigger.

Each test drives ``run()`` as the triggerer would (an async generator read event by event). Poll
intervals are set long where the test must prove that a NOTIFY, not a poll, woke the trigger.
Awaits have generous timeouts: they bound the test's run time, they assert nothing about speed.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg import sql

from commerce_sync.db import connect, database_name, drop_database, with_database
from commerce_sync.triggers import APPLICATION_NAME, PostgresChangeTrigger, _advanced
from commerce_sync_sandbox.erp import NOTIFY_CHANNEL, load_erp, set_purchase_price
from tests.conftest import new_database

WAIT_S = 15.0  # generous: a loaded 2-core machine; NOTIFY itself arrives in milliseconds


@pytest.fixture
def erp(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str]]:
    """A sandbox ERP of 5 products and an Airflow connection id pointing at it."""
    url = new_database()
    load_erp(url, n=5)
    conn_id = f"erp_bell_{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", url)
    yield url, conn_id
    drop_database(url)


def _trigger(conn_id: str, **kwargs: Any) -> PostgresChangeTrigger:
    settings: dict[str, Any] = {
        "poll_seconds": 60.0,
        "debounce_seconds": 0.3,
        "max_debounce_seconds": 2.0,
        "reconnect_seconds": 0.2,
    }
    settings.update(kwargs)
    return PostgresChangeTrigger(conn_id=conn_id, channel=NOTIFY_CHANNEL, table="erp.products", **settings)


def _listening(url: str) -> int | None:
    """The doorbell's backend pid once it has LISTENed and read its starting watermark."""
    with connect(url) as conn:
        row = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s AND state = 'idle' "
            "AND query LIKE 'SELECT %%ORDER BY%%'",
            (APPLICATION_NAME,),
        ).fetchone()
    return int(row[0]) if row else None


async def _until_listening(url: str, old_pid: int | None = None) -> int:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        pid = await asyncio.to_thread(_listening, url)
        if pid is not None and pid != old_pid:
            return pid
        await asyncio.sleep(0.05)
    pytest.fail("the doorbell never started listening")


async def _next(events: AsyncIterator[Any], timeout: float = WAIT_S) -> Any:
    return await asyncio.wait_for(anext(events), timeout)


def test_notify_wakes_it_and_the_event_names_the_new_watermark(erp: tuple[str, str]) -> None:
    url, conn_id = erp

    async def scenario() -> dict[str, Any]:
        events = _trigger(conn_id).run()
        first = asyncio.ensure_future(_next(events))
        await _until_listening(url)
        await asyncio.to_thread(set_purchase_price, url, "SKU-000003", Decimal("123.45"))
        event = await first  # poll is 60 s away: only the NOTIFY can deliver it in time
        await events.aclose()
        return dict(event.payload)

    payload = asyncio.run(scenario())
    assert payload["woken_by"].startswith("notify")
    assert payload["watermark"][1] == "SKU-000003"
    with connect(url) as conn:
        row = conn.execute("SELECT updated_at FROM erp.products WHERE sku = 'SKU-000003'").fetchone()
    assert row is not None and payload["watermark"][0] == row[0].isoformat()


def test_no_event_when_the_watermark_did_not_move(erp: tuple[str, str]) -> None:
    url, conn_id = erp

    async def scenario() -> None:
        events = _trigger(conn_id, poll_seconds=1.0).run()
        pending = asyncio.ensure_future(_next(events, timeout=6.0))
        await _until_listening(url)
        with connect(url) as conn:
            # A NOTIFY without a change, and an UPDATE that changes nothing (the statement trigger rings).
            conn.execute("SELECT pg_notify(%s, '')", (NOTIFY_CHANNEL,))
            conn.execute("UPDATE erp.products SET name = name WHERE sku = 'SKU-000001'")
        with pytest.raises(TimeoutError):
            await pending  # several polls and two bells later: still nothing

    asyncio.run(scenario())


def test_a_burst_of_changes_is_one_event(erp: tuple[str, str]) -> None:
    url, conn_id = erp

    async def scenario() -> tuple[dict[str, Any], bool]:
        events = _trigger(conn_id, max_debounce_seconds=10.0).run()
        first = asyncio.ensure_future(_next(events))
        await _until_listening(url)

        def burst() -> None:
            with connect(url) as conn:
                for i in range(50):
                    conn.execute("UPDATE erp.products SET stock = stock + 1 WHERE sku = %s", (f"SKU-00000{1 + i % 5}",))
                    conn.commit()
                    time.sleep(0.01)

        await asyncio.to_thread(burst)
        event = await first
        second = asyncio.ensure_future(_next(events, timeout=3.0))
        try:
            await second
            more = True
        except TimeoutError:
            more = False
        return dict(event.payload), more

    payload, more = asyncio.run(scenario())
    with connect(url) as conn:
        last = conn.execute("SELECT sku FROM erp.products ORDER BY updated_at DESC, sku DESC LIMIT 1").fetchone()
    assert last is not None and payload["watermark"][1] == last[0]
    assert int(payload["woken_by"].removeprefix("notify x")) > 1, "the burst rang more than once"
    assert not more, "a second event for the same burst"


@contextmanager
def _connections_refused(url: str) -> Iterator[None]:
    """No new connection to ``url``'s database inside the block (open ones stay open)."""
    name = sql.Identifier(database_name(url))
    with psycopg.connect(with_database(url, "postgres"), autocommit=True) as admin:
        admin.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(name))
        try:
            yield
        finally:
            admin.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(name))


def test_reconnects_after_its_backend_is_terminated_and_finds_the_change(erp: tuple[str, str]) -> None:
    url, conn_id = erp

    async def scenario() -> dict[str, Any]:
        events = _trigger(conn_id).run()
        first = asyncio.ensure_future(_next(events))
        pid = await _until_listening(url)
        # The database refuses new connections until the change is committed, so the trigger cannot be
        # listening again when its NOTIFY goes out (it reconnects within 0.2 s otherwise: a race).
        with connect(url) as conn, _connections_refused(url):
            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
            # Changed while nobody listens: the NOTIFY is lost, the watermark is not.
            conn.execute("UPDATE erp.products SET purchase_price = 77.70 WHERE sku = 'SKU-000002'")
            conn.commit()
        event = await first
        new_pid = await _until_listening(url, old_pid=pid)
        assert new_pid != pid
        await events.aclose()
        return dict(event.payload)

    payload = asyncio.run(scenario())
    assert payload["watermark"][1] == "SKU-000002"
    assert payload["woken_by"] == "poll"  # found by the watermark read after reconnecting


def test_a_missing_connection_is_retried_not_yielded_as_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        events = _trigger("erp_bell_not_defined").run()
        with pytest.raises(TimeoutError):
            await _next(events, timeout=1.5)

    asyncio.run(scenario())


class MemoryStateStore:
    """An asset's state store as the triggerer gives it (``aget``/``aset``), kept in memory."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    async def aget(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    async def aset(self, key: str, value: Any) -> None:
        self.values[key] = value


def test_the_stored_watermark_finds_changes_made_while_it_was_stopped(erp: tuple[str, str]) -> None:
    """What a triggerer restart looks like: a new instance with the watermark the old one fired for."""
    url, conn_id = erp

    store = MemoryStateStore()

    async def scenario() -> dict[str, Any]:
        trigger = _trigger(conn_id)
        trigger.asset_state_store = store  # type: ignore[assignment]
        events = trigger.run()
        first = asyncio.ensure_future(_next(events))
        await _until_listening(url)
        await asyncio.to_thread(set_purchase_price, url, "SKU-000001", Decimal("50.00"))
        await first
        await events.aclose()
        # Stopped; a change nobody hears; a new instance with the same store.
        await asyncio.to_thread(set_purchase_price, url, "SKU-000004", Decimal("60.00"))
        restarted = _trigger(conn_id)
        restarted.asset_state_store = store  # type: ignore[assignment]
        again = restarted.run()
        event = await _next(again)
        await again.aclose()
        return dict(event.payload)

    payload = asyncio.run(scenario())
    assert payload["watermark"][1] == "SKU-000004"
    assert store.values["fired_watermark"] == payload["watermark"]


@pytest.mark.parametrize(
    ("current", "fired", "expected"),
    [
        (None, None, False),
        (("2026-01-01T00:00:00+00:00", "A"), None, True),
        (("2026-01-01T00:00:00+00:00", "A"), ("2026-01-01T00:00:00+00:00", "A"), False),
        (("2026-01-01T00:00:00+00:00", "B"), ("2026-01-01T00:00:00+00:00", "A"), True),
        (("2026-01-01T00:00:00+00:00", "Z"), ("2026-01-01T00:00:01+00:00", "A"), False),
        (("2026-01-01T01:00:00+01:00", "A"), ("2026-01-01T00:00:00+00:00", "A"), False),  # same instant
    ],
)
def test_advanced_compares_time_then_key(
    current: tuple[str, str] | None, fired: tuple[str, str] | None, expected: bool
) -> None:
    assert _advanced(current, fired) is expected


def test_serialize_round_trips_without_credentials() -> None:
    trigger = _trigger("erp_db")
    path, kwargs = trigger.serialize()
    assert path == "commerce_sync.triggers.PostgresChangeTrigger"
    assert PostgresChangeTrigger(**kwargs).serialize() == (path, kwargs)
    assert not any("postgresql://" in str(v) for v in kwargs.values())
