"""Hand marketplace orders to the ERP exactly once, cancel them there, end reservations it has taken over.

The hand-off key is ``channel:order_id``. The ERP books an order once per key (a SQL ERP through the
``book`` statement, a REST ERP through ``POST /api/orders`` with ``Idempotency-Key``), so a hand-off
repeated after the task died between the ERP's commit and the hub's is counted once. The ERP answers
each line with ``booked_at``: the version of the SKU's product row (the ERP's own clock, the column the
hub reads incrementally) from which its stock figures include the line. The hub keeps subtracting the
line's units until it has read that version (``hub.product.source_updated_at >= booked_at``), then the
reservation is *taken over*: never counted twice (hub + ERP) and never not at all.

:func:`hand_off` runs in three steps: mark taken-over reservations; call the ERP for every ready order
not handed yet and every handed order the marketplace has cancelled since; record the outcomes, the
``audit.change`` rows (dataset ``order``, field ``erp_state``) and one ledger transfer (source ``hub``,
target ``erp:<id>``). An order the ERP refuses (unknown SKU, a line without a SKU) stays pending with
the reason in ``hub.sales_order.erp_error``; a connection failure stops the run after recording what
the ERP already confirmed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import quote

from commerce_sync.audit import changes, ledger
from commerce_sync.config import ErpRestSource, ErpSource
from commerce_sync.connections import ConnectionInfo, get_connection
from commerce_sync.db import connect
from commerce_sync.errors import ConfigError, DataError
from commerce_sync.orders.store import DATASET, RESERVATION_LOCK

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HandOffLine:
    line_id: str
    sku: str
    quantity: int


@dataclass(frozen=True)
class HandOff:
    """One order as the ERP receives it."""

    key: str
    channel: str
    order_id: str
    lines: tuple[HandOffLine, ...]

    def document(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "channel": self.channel,
            "order_id": self.order_id,
            "lines": [{"line_id": ln.line_id, "sku": ln.sku, "quantity": ln.quantity} for ln in self.lines],
        }


Booked = list[tuple[str, str, datetime]]
"""(line_id, sku, booked_at) per line, as the ERP acknowledged them."""


class OrderRefused(DataError):
    """The ERP refused one order (unknown SKU, malformed): retrying the same order cannot help."""


class ErpOrderWriter(Protocol):
    def book(self, order: HandOff) -> Booked: ...
    def cancel(self, key: str) -> None: ...
    def close(self) -> None: ...


def _aware(value: Any, key: str) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        raise OrderRefused(f"ERP answered order {key} with booked_at {value!r}, not a timestamp")
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class SqlOrderWriter:
    """Orders into an ERP database through the ``book``/``cancel`` statements of erp.yaml."""

    def __init__(self, url: str, erp: ErpSource) -> None:
        from sqlalchemy import create_engine

        assert erp.orders is not None
        self.orders = erp.orders
        if url.startswith(("postgresql://", "postgres://")):
            url = "postgresql+psycopg://" + url.split("://", 1)[1]
        self.engine = create_engine(url)

    def book(self, order: HandOff) -> Booked:
        from sqlalchemy import exc, text

        params = {"key": order.key, "channel": order.channel, "order_id": order.order_id}
        try:
            with self.engine.begin() as conn:
                rows = conn.execute(
                    text(self.orders.book), {**params, "lines": json.dumps(order.document()["lines"])}
                ).fetchall()
        except (exc.IntegrityError, exc.DataError, exc.ProgrammingError) as error:
            raise OrderRefused(f"ERP refused order {order.key}: {str(error.orig).splitlines()[0]}") from None
        return [(str(r[0]), str(r[1]), _aware(r[2], order.key)) for r in rows]

    def cancel(self, key: str) -> None:
        from sqlalchemy import text

        with self.engine.begin() as conn:
            conn.execute(text(self.orders.cancel), {"key": key})

    def close(self) -> None:
        self.engine.dispose()


class RestOrderWriter:
    """Orders into an ERP's JSON API (``POST path`` with ``Idempotency-Key``)."""

    def __init__(self, conn: ConnectionInfo, erp: ErpRestSource) -> None:
        from commerce_sync.sources.erp_readers import ErpRestClient

        assert erp.orders is not None
        self.orders = erp.orders
        self.client = ErpRestClient(conn, erp)

    def book(self, order: HandOff) -> Booked:
        from commerce_sync.transport.http import ChannelRequestError

        try:
            response = self.client.request(
                "POST",
                self.orders.path,
                json_body=order.document(),
                headers={"Idempotency-Key": order.key},
                auth=self.client._basic,
            )
        except ChannelRequestError as error:
            if error.status in (400, 404, 409, 422):
                raise OrderRefused(f"ERP refused order {order.key}: {error.problem}") from None
            raise
        try:
            lines = response.json()["lines"]
            return [(str(ln["line_id"]), str(ln["sku"]), _aware(ln["booked_at"], order.key)) for ln in lines]
        except (ValueError, KeyError, TypeError) as error:
            raise OrderRefused(f"ERP answered order {order.key} without lines/booked_at: {error}") from None

    def cancel(self, key: str) -> None:
        self.client.request(
            "POST", self.orders.cancel_path.replace("{key}", quote(key, safe="")), auth=self.client._basic
        )

    def close(self) -> None:
        self.client.close()


@contextmanager
def open_writer(erp: ErpSource | ErpRestSource) -> Iterator[ErpOrderWriter]:
    """The ERP's order writer, from erp.yaml's ``orders`` section and the ERP's Airflow connection."""
    if erp.orders is None:
        raise ConfigError("erp.yaml: the ERP has no 'orders' section: orders cannot be handed to it")
    conn = get_connection(erp.conn_id)
    writer: ErpOrderWriter
    if isinstance(erp, ErpRestSource):
        writer = RestOrderWriter(conn, erp)
    else:
        from commerce_sync.sources.erp_readers import sql_url

        writer = SqlOrderWriter(sql_url(conn), erp)
    try:
        yield writer
    finally:
        writer.close()


_TAKE_OVER = """
WITH taken AS (
    UPDATE hub.stock_reservation AS r SET state = 'taken_over', updated_at = now(), transfer_id = %(transfer_id)s
    WHERE r.state = 'held' AND hub.erp_has_taken_over(r.sku, r.erp_booked_at)
    RETURNING r.channel, r.order_id, r.line_id, r.sku, r.quantity, r.erp_booked_at
)
INSERT INTO audit.change (transfer_id, dataset, sku, channel, field, old_value, new_value, source_ref)
SELECT %(transfer_id)s, 'order', sku, channel, 'reservation', 'held ' || quantity, 'taken_over ' || quantity,
       jsonb_build_object('order_id', order_id, 'line_id', line_id, 'erp_booked_at', erp_booked_at,
                          'erp_stock_version', (SELECT max(st.source_updated_at) FROM hub.stock AS st
                                                WHERE st.sku = taken.sku))
FROM taken
"""

_DUE = """
SELECT o.channel, o.order_id, o.erp_key, o.erp_state,
       coalesce(jsonb_agg(jsonb_build_object('line_id', l.line_id, 'sku', l.sku, 'quantity', l.quantity)
                          ORDER BY l.line_id) FILTER (WHERE l.line_id IS NOT NULL), '[]'::jsonb)
FROM hub.sales_order AS o
LEFT JOIN hub.order_line AS l ON l.channel = o.channel AND l.order_id = o.order_id
WHERE (o.erp_state = 'pending' AND o.status = 'ready') OR o.erp_state = 'cancel_pending'
GROUP BY o.channel, o.order_id
ORDER BY min(o.first_seen_at), o.channel, o.order_id
LIMIT %(limit)s
"""

_RECORD = """
WITH outcome AS (
    SELECT * FROM jsonb_to_recordset(%(outcomes)s::jsonb)
        AS x(channel text, order_id text, new_state text, error text, lines jsonb)
), updated AS (
    UPDATE hub.sales_order AS o
    SET erp_state = coalesce(x.new_state, o.erp_state), erp_error = x.error,
        erp_handed_at = CASE WHEN x.new_state = 'handed' THEN now() ELSE o.erp_handed_at END,
        erp_transfer_id = CASE WHEN x.new_state IS NOT NULL THEN %(transfer_id)s::uuid ELSE o.erp_transfer_id END,
        updated_at = now()
    FROM outcome AS x, hub.sales_order AS before
    WHERE o.channel = x.channel AND o.order_id = x.order_id
      AND before.channel = o.channel AND before.order_id = o.order_id
    RETURNING o.channel, o.order_id, o.erp_key, before.erp_state AS old_state, x.new_state, x.error
), booked AS (
    UPDATE hub.stock_reservation AS r SET erp_booked_at = b.booked_at, updated_at = now()
    FROM outcome AS x
    CROSS JOIN LATERAL jsonb_to_recordset(x.lines) AS b(line_id text, booked_at timestamptz)
    WHERE x.new_state = 'handed' AND r.channel = x.channel AND r.order_id = x.order_id AND r.line_id = b.line_id
    RETURNING 1
)
INSERT INTO audit.change (transfer_id, dataset, sku, channel, field, old_value, new_value, source_ref)
SELECT %(transfer_id)s, 'order', coalesce(l.sku, 'line:' || l.line_id), u.channel, 'erp_state', u.old_state,
       u.new_state, jsonb_build_object('order_id', u.order_id, 'line_id', l.line_id, 'erp_key', u.erp_key)
FROM updated AS u
JOIN hub.order_line AS l ON l.channel = u.channel AND l.order_id = u.order_id
WHERE u.new_state IS NOT NULL
"""


@dataclass
class HandOffResult:
    """What one hand-off run did."""

    handed: int = 0
    cancelled: int = 0
    refused: list[str] = field(default_factory=list)
    taken_over: int = 0
    transfer_id: str | None = None


def hand_off(
    dsn: str, erp: ErpSource | ErpRestSource, writer: ErpOrderWriter, run: ledger.RunContext, *, limit: int = 500
) -> HandOffResult:
    """Hand due orders to the ERP and cancel cancelled ones there (see the module docs)."""
    result = HandOffResult()
    transfer = ledger.Transfer(source="hub", target=f"erp:{erp.id}", dataset=DATASET, run=run)
    result.transfer_id = str(transfer.transfer_id)
    tid = str(transfer.transfer_id)
    with ledger.recording(dsn, transfer), connect(dsn) as conn:
        due = conn.execute(_DUE, {"limit": limit}).fetchall()
        conn.commit()  # no transaction stays open while the ERP is called
        outcomes: list[dict[str, Any]] = []
        failure: BaseException | None = None
        for channel, order_id, key, state, lines in due:
            outcome: dict[str, Any] = {"channel": channel, "order_id": order_id, "new_state": None, "error": None}
            try:
                if state == "cancel_pending":
                    writer.cancel(key)
                    outcome["new_state"] = "cancelled"
                    result.cancelled += 1
                else:
                    missing = [ln["line_id"] for ln in lines if not ln["sku"]]
                    if missing:
                        raise OrderRefused(
                            f"order {key}: line(s) {', '.join(missing)} have no known SKU (see hub.quarantine, "
                            "dataset order_line); sync the channel's listings or add the SKU to the ERP"
                        )
                    order = HandOff(
                        key,
                        channel,
                        order_id,
                        tuple(HandOffLine(ln["line_id"], ln["sku"], ln["quantity"]) for ln in lines),
                    )
                    booked = writer.book(order)
                    outcome["new_state"] = "handed"
                    outcome["lines"] = [{"line_id": lid, "booked_at": at.isoformat()} for lid, _sku, at in booked]
                    result.handed += 1
            except OrderRefused as refusal:
                outcome["error"] = str(refusal)[:2000]
                result.refused.append(str(refusal))
                log.error("ERP hand-off: %s", refusal)
            except Exception as error:  # connection lost, ERP down: record what is done, then fail
                failure = error
                break
            outcomes.append(outcome)
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (RESERVATION_LOCK,))
        if outcomes:
            conn.execute(_RECORD, {"outcomes": json.dumps(outcomes), "transfer_id": tid})
        result.taken_over = conn.execute(_TAKE_OVER, {"transfer_id": tid}).rowcount
        changes.summarise(conn, transfer)
        transfer.rows_read = len(due)
        transfer.rows_written = transfer.rows_changed = result.handed + result.cancelled
        transfer.rows_rejected = len(result.refused)
        transfer.details.update(
            {
                "handed": result.handed,
                "cancelled_in_erp": result.cancelled,
                "refused": result.refused[:50],
                "reservations_taken_over": result.taken_over,
            }
        )
        if failure is not None:
            transfer.message = (
                f"stopped after {len(outcomes)} of {len(due)} orders: {type(failure).__name__}: {failure}"
            )
            ledger.append(conn, transfer, "failed")
            conn.commit()
            raise failure
        ledger.append(conn, transfer, "success")
    return result
