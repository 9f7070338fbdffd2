"""Event triggers the triggerer runs for event-driven DAGs (``AssetWatcher``).

:class:`PostgresChangeTrigger` is the ERP doorbell: it ``LISTEN``s on a PostgreSQL channel of the
source database and fires an asset event when the table's ``(cursor, key)`` watermark has moved
past the one it last fired for. A NOTIFY is only a wake-up (it is lost while nobody listens, e.g.
while the triggerer restarts), so the trigger also polls the watermark every ``poll_seconds`` and
fires only when it advanced: never on every interval, never for a NOTIFY that changed nothing.

Guarantees:

- **Debounced**: after a wake-up it waits until the channel is quiet for ``debounce_seconds``
  (at most ``max_debounce_seconds``), so a burst of changes is one event, not hundreds.
- **Durable**: the watermark it fired for is kept in Airflow 3.3's ``asset_state_store`` of the
  watched asset (key ``fired_watermark``), so after a triggerer restart a change made while nobody
  listened is found by the first poll. Without a state store (outside the triggerer) it starts
  from the table's current watermark.
- **Never gives up, never yields an error**: a lost connection, a refused login or a missing
  Airflow connection is logged and retried with backoff (``reconnect_seconds`` doubling to 60 s);
  ``run()`` does not return. Airflow turns every yielded event into a DAG run, error or not, so
  the only event it yields is "the watermark moved".
- **No credentials in the trigger's kwargs**: it gets an Airflow connection id and resolves it with
  the async connection API each time it connects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import psycopg
from airflow.sdk import Asset, AssetWatcher
from airflow.triggers.base import BaseEventTrigger, TriggerEvent
from psycopg import sql

from commerce_sync.connections import aget_connection
from commerce_sync.errors import CommerceSyncError

log = logging.getLogger(__name__)

STATE_KEY = "fired_watermark"
APPLICATION_NAME = "commerce_sync doorbell"
_MAX_BACKOFF_S = 60.0

Watermark = tuple[str, str]  # (cursor as ISO text, key): compared as (timestamp, key)


def _advanced(current: Watermark | None, fired: Watermark | None) -> bool:
    """Whether ``current`` lies after ``fired`` in (cursor, key) order."""
    if current is None:
        return False
    if fired is None:
        return True
    return (datetime.fromisoformat(current[0]), current[1]) > (datetime.fromisoformat(fired[0]), fired[1])


class PostgresChangeTrigger(BaseEventTrigger):
    """Fire when rows of a PostgreSQL table changed: LISTEN as the doorbell, the watermark as the truth.

    Args:
        conn_id: Airflow connection of the source database (resolved in the triggerer).
        channel: the NOTIFY channel the source's trigger signals on.
        table: schema-qualified table, e.g. ``erp.products``.
        cursor_column: the change timestamp column (indexed together with ``key_column``).
        key_column: the tie-breaker of the watermark.
        poll_seconds: how often the watermark is read without a NOTIFY (15–30 s in production).
        debounce_seconds: quiet time after a NOTIFY before the watermark is read.
        max_debounce_seconds: a continuous stream of NOTIFYs still fires after this long.
        reconnect_seconds: first wait after a lost connection (doubles up to 60 s).
    """

    def __init__(
        self,
        conn_id: str,
        channel: str,
        table: str,
        cursor_column: str = "updated_at",
        key_column: str = "sku",
        poll_seconds: float = 20.0,
        debounce_seconds: float = 1.0,
        max_debounce_seconds: float = 5.0,
        reconnect_seconds: float = 2.0,
    ) -> None:
        super().__init__()
        self.conn_id = conn_id
        self.channel = channel
        self.table = table
        self.cursor_column = cursor_column
        self.key_column = key_column
        self.poll_seconds = poll_seconds
        self.debounce_seconds = debounce_seconds
        self.max_debounce_seconds = max_debounce_seconds
        self.reconnect_seconds = reconnect_seconds

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "conn_id": self.conn_id,
                "channel": self.channel,
                "table": self.table,
                "cursor_column": self.cursor_column,
                "key_column": self.key_column,
                "poll_seconds": self.poll_seconds,
                "debounce_seconds": self.debounce_seconds,
                "max_debounce_seconds": self.max_debounce_seconds,
                "reconnect_seconds": self.reconnect_seconds,
            },
        )

    # ------------------------------------------------------------------ watermark and its store
    def _watermark_query(self) -> sql.Composed:
        schema, _, name = self.table.rpartition(".")
        table = sql.Identifier(schema, name) if schema else sql.Identifier(name)
        cursor, key = sql.Identifier(self.cursor_column), sql.Identifier(self.key_column)
        return sql.SQL("SELECT {c}, {k}::text FROM {t} ORDER BY {c} DESC, {k} DESC LIMIT 1").format(
            c=cursor, k=key, t=table
        )

    async def _read_watermark(self, conn: psycopg.AsyncConnection[Any]) -> Watermark | None:
        cur = await conn.execute(self._watermark_query())
        row = await cur.fetchone()
        if row is None or row[0] is None:
            return None
        cursor = row[0]
        return (cursor.isoformat() if isinstance(cursor, datetime) else str(cursor), str(row[1]))

    def _store(self) -> Any:
        return getattr(self, "asset_state_store", None)

    async def _load_fired(self) -> Watermark | None:
        store = self._store()
        if store is None:
            return None
        try:
            value = await store.aget(STATE_KEY)
        except Exception:  # the store is an optimisation of restarts: without it, start from now
            log.warning("doorbell %s: could not read the stored watermark; starting from now", self.channel)
            return None
        if isinstance(value, list) and len(value) == 2:
            return (str(value[0]), str(value[1]))
        return None

    async def _save_fired(self, fired: Watermark) -> None:
        store = self._store()
        if store is None:
            return
        try:
            await store.aset(STATE_KEY, list(fired))
        except Exception:
            log.warning(
                "doorbell %s: could not store the watermark %s; a restart may fire once more", self.channel, fired
            )

    # ------------------------------------------------------------------ the loop
    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        info = await aget_connection(self.conn_id)
        conn = await psycopg.AsyncConnection.connect(
            info.postgres_dsn(), autocommit=True, application_name=APPLICATION_NAME, connect_timeout=10
        )
        await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
        return conn

    async def _wait_for_bell(self, conn: psycopg.AsyncConnection[Any]) -> int:
        """Wait up to ``poll_seconds`` for a NOTIFY, then for quiet; return how many arrived (0: poll)."""
        received = 0
        async for _ in conn.notifies(timeout=self.poll_seconds, stop_after=1):
            received += 1
        if not received:
            return 0
        deadline = time.monotonic() + self.max_debounce_seconds
        while (remaining := deadline - time.monotonic()) > 0:
            more = 0
            async for _ in conn.notifies(timeout=min(self.debounce_seconds, remaining), stop_after=1):
                more += 1
            if not more:
                break
            received += more
        return received

    async def run(self) -> AsyncIterator[TriggerEvent]:
        fired = await self._load_fired()
        backoff = self.reconnect_seconds
        while True:
            conn: psycopg.AsyncConnection[Any] | None = None
            try:
                conn = await self._connect()
                current = await self._read_watermark(conn)
                if fired is None:
                    fired = current  # first start without a stored watermark: changes from now on
                    if fired is not None:
                        await self._save_fired(fired)
                backoff = self.reconnect_seconds
                woken_by = "poll"
                log.info("doorbell %s: listening; last fired for %s", self.channel, fired)
                while True:
                    if _advanced(current, fired):
                        assert current is not None
                        fired = current
                        await self._save_fired(fired)
                        log.info("doorbell %s: watermark moved to %s (%s)", self.channel, fired, woken_by)
                        yield TriggerEvent({"watermark": list(fired), "woken_by": woken_by, "channel": self.channel})
                    notifies = await self._wait_for_bell(conn)
                    woken_by = f"notify x{notifies}" if notifies else "poll"
                    current = await self._read_watermark(conn)
            except (psycopg.Error, OSError, CommerceSyncError) as exc:
                log.warning(
                    "doorbell %s: %s: %s; reconnecting in %.0f s (changes meanwhile are found by the watermark)",
                    self.channel,
                    type(exc).__name__,
                    exc,
                    backoff,
                )
            finally:
                if conn is not None and not conn.closed:
                    with contextlib.suppress(psycopg.Error, OSError):
                        await conn.close()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _MAX_BACKOFF_S)


# The ERP doorbell as the DAGs use it. The values match include/config/erp.yaml and the sandbox ERP
# (whose trigger NOTIFYs ``erp_products_changed``); DAG parsing must not read files, so they are here.
ERP_CONN_ID = "erp_db"
ERP_NOTIFY_CHANNEL = "erp_products_changed"
ERP_TABLE = "erp.products"
POLL_SECONDS_ENV = "COMMERCE_SYNC_ERP_POLL_SECONDS"


def erp_changes_asset() -> Asset:
    """The asset the ERP doorbell writes events to, with its ``AssetWatcher`` (schedule of the ERP DAG).

    The poll interval is ``COMMERCE_SYNC_ERP_POLL_SECONDS`` (default 20; read when the DAG is parsed).
    """
    raw = os.environ.get(POLL_SECONDS_ENV) or "20"
    try:
        poll = float(raw)
    except ValueError:
        raise ValueError(f"{POLL_SECONDS_ENV}={raw!r} is not a number of seconds") from None
    if not 1 <= poll <= 3600:
        raise ValueError(f"{POLL_SECONDS_ENV}={raw!r} must be between 1 and 3600 seconds")
    trigger = PostgresChangeTrigger(conn_id=ERP_CONN_ID, channel=ERP_NOTIFY_CHANNEL, table=ERP_TABLE, poll_seconds=poll)
    return Asset(
        name="commerce_erp.erp.products.changes",
        uri="pgnotify://erp_db/commerce_erp/erp_products_changed",
        watchers=[AssetWatcher(name="erp_doorbell", trigger=trigger)],
    )


# ---------------------------------------------------------------------------------------------- orders
ORDER_STATE_KEY = "fired_orders"
HUB_CONN_ID = "hub_db"
ORDER_POLL_SECONDS_ENV = "COMMERCE_SYNC_ORDER_POLL_SECONDS"
ORDER_PROBE_SECONDS_ENV = "COMMERCE_SYNC_ORDER_PROBE_SECONDS"
_CURSORS = "SELECT channel, cursor FROM hub.order_cursor WHERE channel = ANY(%s)"
PROBE_TIMEOUT = (3.0, 10.0)  # (connect, read) seconds of one probe call


class _Probe:
    """One probed channel in the order doorbell: its adapter, when to ask next, its failures."""

    def __init__(self, channel: Any, info: Any, market: Any, every: float) -> None:
        self.channel = channel
        self.info = info
        self.market = market
        self.every = every
        self.next_at = 0.0
        self.failures = 0

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.market.close()


class OrderDoorbellTrigger(BaseEventTrigger):
    """Fire when a marketplace has orders the hub has not imported: a cheap probe per channel, a DAG run
    only when one has news.

    Every ``poll_seconds`` it reads the channels' stored order cursors (``hub.order_cursor``) and asks
    each enabled channel whose kind imports orders and has a probe
    (:meth:`~commerce_sync.channels.marketplace.Marketplace.orders_changed_since`, one small API call;
    a kind's ``order_probe_seconds`` or ``probe_seconds`` spaces a channel's probes further). It fires
    ONE event naming the channels with news, and only for news it has not fired for: per channel it
    keeps the probe's marker, in the asset's ``asset_state_store`` (key ``fired_orders``), so it does
    not ring again while the DAG run is still importing, and after a triggerer restart it fires for
    news that came while it was stopped.

    Like :class:`PostgresChangeTrigger` it never yields an error and never returns: a probe failing
    (the marketplace down, 5xx, 429 beyond the client's retries) is logged and that channel is asked
    again after a backoff (doubling to 60 s, at least the last ``Retry-After``); a lost hub connection
    is reconnected with backoff. Credentials are never in its kwargs: the hub connection and each
    channel's connection are resolved with the async connection API, then handed to the channel's
    client; blocking client calls run in threads.

    Args:
        hub_conn_id: Airflow connection of the hub database.
        poll_seconds: how often cursors are read and channels probed.
        probe_seconds: per channel kind, the least seconds between two probes of one channel
            (overrides the kind's ``order_probe_seconds``).
        channels: probe only these channel ids (default: every enabled channel that can be probed).
        config_seconds: how often channels.yaml and the channels' connections are read again.
        reconnect_seconds: first wait after a failure (doubles up to 60 s).
    """

    def __init__(
        self,
        hub_conn_id: str = HUB_CONN_ID,
        poll_seconds: float = 5.0,
        probe_seconds: dict[str, float] | None = None,
        channels: list[str] | None = None,
        config_seconds: float = 60.0,
        reconnect_seconds: float = 2.0,
    ) -> None:
        super().__init__()
        self.hub_conn_id = hub_conn_id
        self.poll_seconds = poll_seconds
        self.probe_seconds = dict(probe_seconds or {})
        self.channels = list(channels) if channels is not None else None
        self.config_seconds = config_seconds
        self.reconnect_seconds = reconnect_seconds
        self.polls = 0
        """Poll rounds completed (cursors read, due channels probed) since this instance started."""
        self._unprobed: dict[str, Any] = {}

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "hub_conn_id": self.hub_conn_id,
                "poll_seconds": self.poll_seconds,
                "probe_seconds": self.probe_seconds,
                "channels": self.channels,
                "config_seconds": self.config_seconds,
                "reconnect_seconds": self.reconnect_seconds,
            },
        )

    # ------------------------------------------------------------------ what it fired for
    def _store(self) -> Any:
        return getattr(self, "asset_state_store", None)

    async def _load_fired(self) -> dict[str, str]:
        store = self._store()
        if store is None:
            return {}
        try:
            value = await store.aget(ORDER_STATE_KEY)
        except Exception:  # the store is an optimisation of restarts: without it, pending news fires once more
            log.warning("order doorbell: could not read what it fired for; pending news fires once more")
            return {}
        return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}

    async def _save_fired(self, fired: dict[str, str]) -> None:
        store = self._store()
        if store is None:
            return
        try:
            await store.aset(ORDER_STATE_KEY, dict(fired))
        except Exception:
            log.warning("order doorbell: could not store what it fired for; a restart may fire once more")

    # ------------------------------------------------------------------ channels and their probes
    def _configured(self) -> list[Any]:
        """The enabled channels whose kind imports orders (channels.yaml), restricted to ``channels``."""
        from commerce_sync import registry
        from commerce_sync.config import load_config

        channels = load_config().channels
        wanted = set(registry.channels_that(channels, "import_orders"))
        if self.channels is not None:
            wanted &= set(self.channels)
        return [channel for channel in channels if channel.id in wanted]

    async def _refresh(self, probes: dict[str, _Probe]) -> None:
        """Read channels.yaml and the channels' connections again; (re)build the probes that changed."""
        from commerce_sync import registry

        channels = await asyncio.to_thread(self._configured)
        seen: set[str] = set()
        for channel in channels:
            seen.add(channel.id)
            spec = registry.get(channel.kind)
            probe = probes.get(channel.id)
            if self._unprobed.get(channel.id) == channel:
                continue  # its kind has no probe (said once)
            try:
                if not channel.conn_id:
                    raise CommerceSyncError(f"channel {channel.id!r}: a {channel.kind} channel needs conn_id")
                info = await aget_connection(channel.conn_id)
                if probe is not None and probe.channel == channel and probe.info == info:
                    continue
                market = spec.build(channel, info)
            except CommerceSyncError as exc:
                log.warning("order doorbell: channel %s (%s) not probed: %s", channel.id, channel.kind, exc)
                if probe is not None:
                    probes.pop(channel.id).close()
                continue
            if probe is not None:
                probes.pop(channel.id).close()
            if not market.probes_orders:
                market.close()
                self._unprobed[channel.id] = channel
                log.info("order doorbell: channel %s (%s) has no order probe; not probed", channel.id, channel.kind)
                continue
            client = market.client
            client.max_attempts = min(client.max_attempts, 2)
            client.backoff_cap = min(client.backoff_cap, self.poll_seconds)
            client.timeout = PROBE_TIMEOUT
            every = float(self.probe_seconds.get(channel.kind, type(market).order_probe_seconds))
            probes[channel.id] = _Probe(channel, info, market, every)
            log.info(
                "order doorbell: probing channel %s (%s) at most every %g s",
                channel.id,
                channel.kind,
                max(every, self.poll_seconds),
            )
        for gone in set(probes) - seen:
            probes.pop(gone).close()

    async def _probe(self, probe: _Probe, cursor: str | None) -> Any:
        """The channel's :class:`~commerce_sync.channels.orders.OrderNews`, or None (not asked, or failed)."""
        client = probe.market.client
        client.retry_after = None
        try:
            news = await asyncio.to_thread(probe.market.orders_changed_since, cursor)
        except Exception as exc:  # never out of the trigger: the next probe of this channel comes later
            probe.failures += 1
            wait = min(self.poll_seconds * 2**probe.failures, _MAX_BACKOFF_S)
            if client.retry_after:
                wait = max(wait, min(float(client.retry_after), 5 * _MAX_BACKOFF_S))
            wait = max(wait, probe.every)  # failing is no reason to spend more of a small budget
            probe.next_at = time.monotonic() + wait
            log.warning(
                "order doorbell: channel %s (%s): probe failed (%s: %s); asking again in %.0f s "
                "(the cron run still imports it)",
                probe.channel.id,
                probe.channel.kind,
                type(exc).__name__,
                exc,
                wait,
            )
            return None
        if probe.failures:
            log.info("order doorbell: channel %s probes again after %d failure(s)", probe.channel.id, probe.failures)
        probe.failures = 0
        probe.next_at = time.monotonic() + (max(probe.every, self.poll_seconds) if news is not None else 0.0)
        return news

    # ------------------------------------------------------------------ the loop
    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        info = await aget_connection(self.hub_conn_id)
        return await psycopg.AsyncConnection.connect(
            info.postgres_dsn(), autocommit=True, application_name=ORDER_APPLICATION_NAME, connect_timeout=10
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        fired = await self._load_fired()
        probes: dict[str, _Probe] = {}
        conn: psycopg.AsyncConnection[Any] | None = None
        refreshed_at = -float("inf")
        backoff = self.reconnect_seconds
        try:
            while True:
                try:
                    if conn is None or conn.closed:
                        conn = await self._connect()
                        log.info("order doorbell: polling every %g s; fired for %s", self.poll_seconds, fired)
                    if time.monotonic() - refreshed_at >= self.config_seconds:
                        await self._refresh(probes)
                        refreshed_at = time.monotonic()
                    cur = await conn.execute(_CURSORS, (sorted(probes),))
                    cursors = {str(channel): cursor for channel, cursor in await cur.fetchall()}
                    now = time.monotonic()
                    due = [probe for probe in probes.values() if probe.next_at <= now]
                    answers = await asyncio.gather(*(self._probe(p, cursors.get(p.channel.id)) for p in due))
                    news = {
                        probe.channel.id: answer
                        for probe, answer in zip(due, answers, strict=True)
                        if answer is not None and answer.new and fired.get(probe.channel.id) != answer.marker
                    }
                    # News that is gone (imported) is forgotten: the next news rings even with a marker
                    # seen before (e.g. "no-cursor" after an operator deleted a cursor).
                    settled = [
                        probe.channel.id
                        for probe, answer in zip(due, answers, strict=True)
                        if answer is not None and not answer.new and probe.channel.id in fired
                    ]
                    for channel in settled:
                        del fired[channel]
                    backoff = self.reconnect_seconds
                    self.polls += 1
                    if settled and not news:
                        await self._save_fired(fired)
                    if news:
                        fired.update({channel: answer.marker for channel, answer in news.items()})
                        await self._save_fired(fired)
                        log.info(
                            "order doorbell: news on %s: %s",
                            ", ".join(sorted(news)),
                            {c: a.details for c, a in news.items()},
                        )
                        yield TriggerEvent(
                            {
                                "channels": sorted(news),
                                "news": {c: {**a.details, "marker": a.marker} for c, a in sorted(news.items())},
                            }
                        )
                    await asyncio.sleep(self.poll_seconds)
                except (psycopg.Error, OSError, CommerceSyncError, ValueError) as exc:
                    # ValueError: channels.yaml does not validate (pydantic) — fixed by the operator.
                    log.warning(
                        "order doorbell: %s: %s; trying again in %.0f s (the cron run still imports orders)",
                        type(exc).__name__,
                        exc,
                        backoff,
                    )
                    if conn is not None and not conn.closed:
                        with contextlib.suppress(psycopg.Error, OSError):
                            await conn.close()
                    conn = None
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, _MAX_BACKOFF_S)
        finally:
            for probe in probes.values():
                probe.close()
            if conn is not None and not conn.closed:
                with contextlib.suppress(psycopg.Error, OSError):
                    await conn.close()


ORDER_APPLICATION_NAME = "commerce_sync order doorbell"


def _seconds(env: str, raw: str, low: float, high: float) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{env}={raw!r} is not a number of seconds") from None
    if not low <= value <= high:
        raise ValueError(f"{env}={raw!r} must be between {low:g} and {high:g} seconds")
    return value


def order_probe_seconds() -> dict[str, float]:
    """``COMMERCE_SYNC_ORDER_PROBE_SECONDS`` (``kind=seconds,...``): per kind, the least seconds between
    two probes of one channel (default: the kind's own, e.g. Amazon ~357 s)."""
    raw = os.environ.get(ORDER_PROBE_SECONDS_ENV) or ""
    found: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in raw.split(","))):
        kind, sep, value = part.partition("=")
        if not sep or not kind.strip():
            raise ValueError(f"{ORDER_PROBE_SECONDS_ENV}={raw!r}: expected kind=seconds[,kind=seconds...]")
        found[kind.strip()] = _seconds(ORDER_PROBE_SECONDS_ENV, value.strip(), 0, 86400)
    return found


def order_doorbell_asset() -> Asset:
    """The asset the order doorbell writes events to, with its ``AssetWatcher`` (schedule of the orders DAG).

    The poll interval is ``COMMERCE_SYNC_ORDER_POLL_SECONDS`` (default 5; read when the DAG is parsed);
    ``COMMERCE_SYNC_ORDER_PROBE_SECONDS`` spaces the probes of a kind further (see :func:`order_probe_seconds`).
    """
    poll = _seconds(ORDER_POLL_SECONDS_ENV, os.environ.get(ORDER_POLL_SECONDS_ENV) or "5", 1, 3600)
    trigger = OrderDoorbellTrigger(hub_conn_id=HUB_CONN_ID, poll_seconds=poll, probe_seconds=order_probe_seconds())
    return Asset(
        name="commerce_hub.marketplace_orders.news",
        uri="orderprobe://hub_db/commerce_hub/marketplace_orders",
        watchers=[AssetWatcher(name="order_doorbell", trigger=trigger)],
    )
