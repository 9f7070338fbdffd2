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
