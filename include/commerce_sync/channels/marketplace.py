"""The marketplace base: one implementation of listing sync, publishing and read-back for every API.

A marketplace kind subclasses :class:`Marketplace` and declares its limits (items per request, how
many requests may be in flight, whether it addresses offers by its own offer id) and implements only
what differs between APIs: building a request from outbox rows (:meth:`Marketplace.build`), sending it
(:meth:`Marketplace.send`), reading its per-item outcomes (:meth:`Marketplace.collect`), listing its
offers (:meth:`Marketplace.listings`) and reading them back (:meth:`Marketplace.read_offers`). Everything
else happens here, once:

1. **supersede**: older pending versions of a (SKU, field) never overwrite newer ones;
2. **plan** with the **pre-publish check**: an unusable payload, a price below the offer's floor or in a
   currency the channel does not take, or a SKU without an offer on the marketplace is refused;
3. **quarantine** the refused prices (``hub.quarantine``) and mark their outbox rows failed;
4. **chunk** to the kind's batch limit (per SKU, or the kind's own grouping);
5. **send**: each window of requests has its outbox rows locked (``FOR UPDATE SKIP LOCKED``), is sent,
   awaited and its outcomes recorded in one transaction, so a crash before the commit leaves the rows
   pending and the next run sends the same absolute values (with the same request id where the API
   takes one) again;
6. **record per-item outcomes**, advance ``published_version`` (``mark published``), and fill the
   ledger transfer's counts, digest and details after every window.

:func:`sync_listings` keeps ``hub.channel_listing`` (SKU ↔ marketplace offer id) for every kind that
needs it: every pair that no longer holds is removed before the new ones are written, so an offer id
moving from one SKU to another that both remain never collides with ``UNIQUE (channel, offer_id)``.
"""

from __future__ import annotations

import hashlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar, Literal

import psycopg

from commerce_sync.audit import ledger
from commerce_sync.channels import outbox, prepublish
from commerce_sync.channels.orders import OrderBatch, OrderNews
from commerce_sync.channels.reconcile import ChannelOffer
from commerce_sync.config import Channel
from commerce_sync.db import connect
from commerce_sync.transport.http import HttpClient, encode_json

log = logging.getLogger(__name__)

_CENT = Decimal("0.01")
Status = Literal["sent", "failed"]


@dataclass
class Item:
    """One pending outbox row, planned for sending."""

    id: int
    sku: str
    field: str
    key: str
    offer_version: int
    payload: dict[str, Any]
    offer_id: str | None
    problem: str | None = None
    in_doubt: bool = False
    """An earlier send of this row may have reached the channel without its outcome being recorded."""

    @property
    def amount(self) -> Decimal:
        """The price payload's amount, to the cent."""
        return Decimal(str(self.payload["amount"])).quantize(_CENT)

    @property
    def currency(self) -> str:
        return str(self.payload["currency"])

    @property
    def quantity(self) -> int:
        return int(self.payload["value"])


@dataclass
class Request:
    """One call to the marketplace: the items it carries, the document sent and its id, if the API takes one."""

    items: list[Item]
    body: Any
    request_id: str | None = None
    context: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Outcome:
    """What the marketplace did with one outbox row."""

    row_id: int
    status: Status
    response: Any
    error: str | None = None


@dataclass
class PublishResult:
    """What one publish run did."""

    claimed: int = 0
    sent: int = 0
    failed: int = 0
    superseded: int = 0
    quarantined: int = 0
    requests: int = 0
    request_ids: list[str] = field(default_factory=list)
    rejected_skus: list[str] = field(default_factory=list)
    claimed_without_offer_id: int = 0
    """Rows sent for SKUs the channel has no offer id for (a kind that creates offers creates them)."""


class Marketplace(ABC):
    """One marketplace API as the publisher and the reconciliation use it.

    Class attributes a kind declares:
        kind: the registered kind name.
        title: how messages name the marketplace.
        max_items_per_request: the API's limit of items (SKUs, or rows for row-grouped kinds) per request.
        pipeline_window: requests sent before their outcomes are awaited (for APIs that process
            asynchronously; 1 = send and read each before the next).
        needs_offer_id: offers are addressed by the marketplace's own id, learnt by :func:`sync_listings`
            (False: addressed by our SKU).
        reads_back_by_sku: read-back asks for the SKUs the hub published instead of listing everything.
        request_noun: what the API calls one request ("command", "call", "feed"), for logs and the demo.
        idempotent_requests: a request sent again is applied once (Allegro's command ids). Otherwise rows
            whose earlier send may have reached the channel unrecorded are read back before being sent
            again (see :func:`_settle_in_doubt`).
        creates_offers: (instance) rows of a SKU without an offer id are sent, to create the offer.
    """

    kind: ClassVar[str]
    title: ClassVar[str]
    max_items_per_request: ClassVar[int]
    pipeline_window: ClassVar[int] = 1
    needs_offer_id: ClassVar[bool] = True
    reads_back_by_sku: ClassVar[bool] = False
    request_noun: ClassVar[str] = "call"
    idempotent_requests: ClassVar[bool] = False
    creates_offers: bool = False
    """A SKU without an offer id is sent anyway: the request creates the offer (set by :meth:`configure`
    for kinds whose channel settings allow it)."""

    def __init__(self, client: HttpClient) -> None:
        self.client = client

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Marketplace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ what a kind implements
    @abstractmethod
    def build(self, items: list[Item]) -> Request:
        """The request carrying ``items`` (all of one batch from :meth:`batches`)."""

    @abstractmethod
    def send(self, request: Request) -> Any:
        """Send ``request``; return whatever :meth:`collect` needs to read its outcomes."""

    @abstractmethod
    def collect(self, request: Request, sent: Any) -> list[Outcome]:
        """Await the request if the API is asynchronous and return one outcome per item."""

    @abstractmethod
    def read_offers(self, skus: list[str] | None) -> Iterator[ChannelOffer]:
        """What the marketplace shows now: every offer, or only ``skus`` for kinds that read back by SKU."""

    def listings(self) -> Iterator[tuple[str | None, str | None]]:
        """Every (SKU, offer id) pair the marketplace has; ``None`` where an offer carries no SKU or id."""
        raise NotImplementedError(f"{self.title} addresses offers by SKU: it has no offer ids to list")

    def read_orders(self, cursor: str | None, *, limit: int = 100) -> OrderBatch:
        """The orders that changed since ``cursor`` (``None``: start now), at most about ``limit`` of them.

        Kinds with the ``import_orders`` capability implement it; see :mod:`commerce_sync.channels.orders`.
        """
        raise NotImplementedError(f"{self.title} ({self.kind}) does not import orders")

    probes_orders: ClassVar[bool] = False
    """The kind implements :meth:`orders_changed_since` (the order doorbell probes its channels)."""
    order_probe_seconds: ClassVar[float] = 0.0
    """Least seconds between two probes of one channel (0: every doorbell poll), for APIs whose order
    search budget is too small to spend on a probe every few seconds."""

    def orders_changed_since(self, cursor: str | None) -> OrderNews | None:
        """Whether orders changed after what the hub stored with ``cursor``: one small API call.

        The order doorbell calls it every few seconds, so it reads at most one order and never pages.
        It says ``new`` only for changes the import would store as new (not for the orders a reader's
        overlapping window reads again), and returns None when it did not ask this time (the kind's own
        rate budget is spent: the import must not starve). Errors of the client (after its retries)
        propagate; the trigger logs them and backs off.
        """
        raise NotImplementedError(f"{self.title} ({self.kind}) has no order probe")

    def configure(self, channel: Channel) -> None:  # noqa: B027 (an optional hook: most kinds need nothing)
        """Take the channel's kind-specific ``settings`` (validated by the kind's settings model).

        :meth:`commerce_sync.registry.ChannelKind.open` calls it once, right after building the adapter.
        """

    def prepare(self) -> None:  # noqa: B027 (an optional hook: most kinds need nothing)
        """Fail early, before anything is claimed, when the connection lacks what publishing needs."""

    # ------------------------------------------------------------------ defaults a kind may override
    def check(self, item: Item) -> str | None:
        """Why ``item``'s payload cannot be sent, or None (the price floor and currency are checked apart)."""
        payload = item.payload
        if item.field == "price":
            try:
                amount = Decimal(str(payload["amount"])).quantize(_CENT)
            except (KeyError, InvalidOperation):
                return f"price payload {payload} has no valid amount"
            currency = payload.get("currency")
            if amount <= 0 or not isinstance(currency, str) or len(currency) != 3:
                return f"price payload {payload} needs a positive amount and a 3-letter currency"
            return None
        if item.field == "quantity":
            value = payload.get("value")
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                return f"quantity payload {payload} needs a non-negative integer value"
            return None
        return f"field {item.field!r} is not published to {self.title}"

    def batches(self, items: list[Item], batch_size: int) -> Iterator[list[Item]]:
        """Items cut into requests: by default all rows of a SKU travel together, ``batch_size`` SKUs a request."""
        by_sku: dict[str, list[Item]] = {}
        for item in items:
            by_sku.setdefault(item.sku, []).append(item)
        skus = sorted(by_sku)
        for start in range(0, len(skus), batch_size):
            yield [item for sku in skus[start : start + batch_size] for item in by_sku[sku]]


_PLAN = (
    "SELECT o.id, o.sku, o.field, o.idempotency_key, o.offer_version, o.payload, l.offer_id, "
    "co.floor_price, co.currency, EXISTS (SELECT 1 FROM hub.outbox_attempt a WHERE a.outbox_id = o.id) "
    "FROM hub.outbox o LEFT JOIN hub.channel_listing l ON l.channel = o.channel AND l.sku = o.sku "
    "LEFT JOIN hub.channel_offer co ON co.channel = o.channel AND co.sku = o.sku "
    "WHERE o.channel = %s AND o.status = 'pending' ORDER BY o.id"
)


def plan(
    conn: psycopg.Connection, channel: Channel, market: Marketplace
) -> tuple[list[Item], dict[int, list[prepublish.Rejection]]]:
    """The channel's pending outbox rows, each with the problem that keeps it from being sent (if any)."""
    planned: list[Item] = []
    rejected: dict[int, list[prepublish.Rejection]] = {}
    for row_id, sku, field_name, key, version, payload, offer_id, floor_price, offer_currency, in_doubt in conn.execute(
        _PLAN, (channel.id,)
    ):
        item = Item(row_id, sku, field_name, key, version, payload if isinstance(payload, dict) else {}, offer_id)
        item.in_doubt = bool(in_doubt)
        item.problem = market.check(item) if isinstance(payload, dict) else "payload is not a JSON object"
        if item.problem is None and item.field == "price":
            problems = prepublish.check_price_change(
                channel.id,
                sku,
                amount=item.amount,
                currency=item.currency,
                floor_price=floor_price,
                offer_currency=offer_currency,
                currencies=channel.currencies,
            )
            if problems:
                rejected[row_id] = problems
                item.problem = prepublish.refusal(problems)
        if item.problem is None and market.needs_offer_id and offer_id is None and not market.creates_offers:
            item.problem = (
                f"no {market.title} offer for SKU {sku}; run sync_listings / create the offer on {market.title}"
            )
        planned.append(item)
    return planned, rejected


class _Run:
    """Counters, digest and ledger accounting of one publish run."""

    def __init__(self, market: Marketplace, transfer: ledger.Transfer) -> None:
        self.market = market
        self.transfer = transfer
        self.result = PublishResult()
        self.digest = hashlib.sha256()

    def account(self) -> None:
        result, transfer = self.result, self.transfer
        transfer.rows_read = result.claimed
        transfer.rows_written = transfer.rows_changed = result.sent
        transfer.rows_rejected = result.failed
        transfer.payload_sha256 = self.digest.hexdigest() if result.requests else None
        details = {k: v for k, v in asdict(result).items() if k not in ("claimed", "sent", "failed", "rejected_skus")}
        transfer.details = {
            **transfer.details,
            **details,
            "request_noun": self.market.request_noun,
            "rejected_skus": sorted(set(result.rejected_skus))[:100],
        }

    def record(self, conn: psycopg.Connection, channel_id: str, request: Request, outcomes: list[Outcome]) -> None:
        """Write one request's per-row outcomes and advance the SKUs' published version."""
        outbox.record_outcomes(
            conn,
            [(o.row_id, o.status, o.response, o.error) for o in outcomes],
            request.request_id,
            self.transfer.transfer_id,
        )
        outbox.mark_published(conn, channel_id, sorted({item.sku for item in request.items}))
        by_id = {item.id: item for item in request.items}
        sent = sum(o.status == "sent" for o in outcomes)
        self.result.sent += sent
        self.result.failed += len(outcomes) - sent
        self.result.rejected_skus += sorted({by_id[o.row_id].sku for o in outcomes if o.status != "sent"})
        log.info(
            "%s %s: %s %s: %d rows sent, %d failed",
            self.market.kind,
            channel_id,
            self.market.request_noun,
            request.request_id or self.result.requests,
            sent,
            len(outcomes) - sent,
        )


def publish_outbox(
    dsn: str,
    channel: Channel,
    market: Marketplace,
    transfer: ledger.Transfer,
    batch_size: int | None = None,
) -> PublishResult:
    """Send the channel's pending outbox rows to its marketplace; see the module docstring for the steps.

    Args:
        dsn: the hub database.
        channel: the marketplace channel (its accepted currencies bound the pre-publish check).
        market: the channel's marketplace adapter.
        transfer: the ledger transfer the caller records (``ledger.recording``); this fills its counters.
        batch_size: items per request, at most the kind's limit (default: the limit).

    Raises:
        TransientError: the marketplace is unreachable, throttling beyond the retries, slower than its
            timeout or its breaker is open (unsent rows stay pending and go out with the next run).
        ChannelError: the marketplace refused a request as a whole.
    """
    limit = market.max_items_per_request
    size = limit if batch_size is None else max(1, min(batch_size, limit))
    market.prepare()
    run = _Run(market, transfer)
    result = run.result
    with connect(dsn) as conn:
        with conn.transaction():
            result.superseded = outbox.supersede(conn, channel.id)
            planned, rejected = plan(conn, channel, market)
        unsendable = [item for item in planned if item.problem is not None]
        if unsendable:
            with conn.transaction():
                locked = outbox.lock_pending(conn, [item.id for item in unsendable])
                refused = [item for item in unsendable if item.id in locked]
                outbox.record_outcomes(
                    conn, [(i.id, "failed", None, i.problem) for i in refused], None, transfer.transfer_id
                )
                result.quarantined += prepublish.quarantine_rejections(
                    conn,
                    channel.id,
                    transfer.transfer_id,
                    [problem for row_id, problems in rejected.items() if row_id in locked for problem in problems],
                )
                result.claimed += len(refused)
                result.failed += len(refused)
                result.rejected_skus += sorted({item.sku for item in refused})
        run.account()
        sendable = [item for item in planned if item.problem is None]
        if not market.idempotent_requests and any(item.in_doubt for item in sendable):
            sendable = _settle_in_doubt(conn, channel, market, sendable, run)
            run.account()
        batches = list(market.batches(sendable, size))
        window_size = max(1, market.pipeline_window)
        with connect(dsn, autocommit=True) as attempts:
            for start in range(0, len(batches), window_size):
                with conn.transaction():
                    window = batches[start : start + window_size]
                    locked = outbox.lock_pending(conn, [item.id for batch in window for item in batch])
                    # Committed before anything is sent: a crash from here to the commit below leaves
                    # the rows pending and in doubt, and the next run reads the channel before re-sending.
                    _note_attempt(attempts, channel.id, sorted(locked), transfer)
                    in_flight: list[tuple[Request, Any]] = []
                    for batch in window:
                        items = [item for item in batch if item.id in locked]
                        if not items:  # another publisher holds or already sent them
                            continue
                        request = market.build(items)
                        run.digest.update(encode_json(request.body))
                        result.claimed += len(items)
                        result.claimed_without_offer_id += sum(1 for item in items if item.offer_id is None)
                        in_flight.append((request, market.send(request)))
                        result.requests += 1
                        if request.request_id:
                            result.request_ids.append(request.request_id)
                    for request, sent in in_flight:
                        run.record(conn, channel.id, request, market.collect(request, sent))
                    conn.execute("DELETE FROM hub.outbox_attempt WHERE outbox_id = ANY(%s)", (sorted(locked),))
                run.account()
    run.account()
    log.info(
        "%s %s: %d %ss, %d rows sent, %d failed, %d superseded, %d quarantined",
        market.kind,
        channel.id,
        result.requests,
        market.request_noun,
        result.sent,
        result.failed,
        result.superseded,
        result.quarantined,
    )
    return result


def _note_attempt(attempts: psycopg.Connection, channel_id: str, ids: list[int], transfer: ledger.Transfer) -> None:
    if ids:
        attempts.execute(
            "INSERT INTO hub.outbox_attempt (outbox_id, channel, transfer_id) SELECT unnest(%s::bigint[]), %s, %s "
            "ON CONFLICT DO NOTHING",
            (ids, channel_id, transfer.transfer_id),
        )


def _shown(offer: ChannelOffer | None, field_name: str) -> dict[str, Any] | None:
    """What the channel shows for one field, in the outbox payload's shape."""
    if offer is None:
        return None
    if field_name == "price":
        if offer.price is None:
            return None
        return {"amount": str(offer.price.quantize(_CENT)), "currency": offer.currency}
    return {"value": offer.quantity}


def _same(payload: dict[str, Any] | None, shown: dict[str, Any] | None, field_name: str) -> bool:
    if payload is None or shown is None:
        return payload is None and shown is None
    if field_name == "price":
        try:
            amount = Decimal(str(payload.get("amount"))).quantize(_CENT)
        except InvalidOperation:
            return False
        return str(amount) == shown["amount"] and payload.get("currency") == shown["currency"]
    return payload.get("value") == shown["value"]


def _settle_in_doubt(
    conn: psycopg.Connection, channel: Channel, market: Marketplace, items: list[Item], run: _Run
) -> list[Item]:
    """Read the channel before re-sending rows whose earlier send may have reached it; return what to send.

    Per in-doubt row: the channel already shows the row's value -> the earlier send applied: recorded as
    sent without sending again (eBay and Amazon take no idempotency key). The channel still shows the last
    value the hub sent -> the send did not apply: sent again. The channel shows something else -> it was
    edited on the channel after our unconfirmed send: ``hub_wins`` sends the hub's value anyway (and says
    so in the log); ``channel_wins`` and ``report_only`` do not overwrite it: the row fails with the
    channel's value as its response, and the read-back reconciliation adopts or reports it.
    """
    doubtful = [item for item in items if item.in_doubt]
    skus = sorted({item.sku for item in doubtful})
    shown = {
        offer.sku: offer
        for offer in market.read_offers(skus if market.reads_back_by_sku else None)
        if offer.sku in skus
    }
    last_sent = {
        (sku, field_name): payload
        for sku, field_name, payload in conn.execute(
            "SELECT DISTINCT ON (sku, field) sku, field, payload FROM hub.outbox "
            "WHERE channel = %s AND status = 'sent' AND sku = ANY(%s) ORDER BY sku, field, offer_version DESC, id DESC",
            (channel.id, skus),
        )
    }
    confirmed: list[Outcome] = []
    held: list[Outcome] = []
    for item in doubtful:
        if item.field not in ("price", "quantity"):
            continue  # read-back shows offers, not content: send the content again (it sets absolute values)
        now = _shown(shown.get(item.sku), item.field)
        last = last_sent.get((item.sku, item.field))
        if _same(item.payload, now, item.field):
            confirmed.append(Outcome(item.id, "sent", {"confirmed_by_read_back": now}))
            continue
        if last is None or _same(last, now, item.field):
            continue  # the earlier send did not apply: send again
        # Changed on the channel after our unconfirmed send (a direct edit in the window).
        if channel.reconcile == "hub_wins":
            log.warning(
                "%s: SKU %s %s was changed on %s (%s) after an unconfirmed send; hub_wins: sending %s",
                channel.id,
                item.sku,
                item.field,
                market.title,
                now,
                item.payload,
            )
            continue
        held.append(
            Outcome(
                item.id,
                "failed",
                {"in_doubt": True, "channel_value": now},
                f"SKU {item.sku} {item.field}: {market.title} shows {now}, set on the channel after an "
                f"unconfirmed send; not overwritten (reconcile: {channel.reconcile})",
            )
        )
    settled = {outcome.row_id for outcome in [*confirmed, *held]}
    if settled:
        with conn.transaction():
            locked = outbox.lock_pending(conn, sorted(settled))
            outcomes = [outcome for outcome in [*confirmed, *held] if outcome.row_id in locked]
            request = Request([item for item in doubtful if item.id in locked], None, "read-back")
            run.record(conn, channel.id, request, outcomes)
            run.result.claimed += len(outcomes)
            conn.execute("DELETE FROM hub.outbox_attempt WHERE outbox_id = ANY(%s)", (sorted(locked),))
    log.info(
        "%s: %d in-doubt rows read back on %s: %d already applied, %d held, %d to send again",
        channel.id,
        len(doubtful),
        market.title,
        len(confirmed),
        len(held),
        len(doubtful) - len(settled),
    )
    return [item for item in items if item.id not in settled]


def sync_listings(dsn: str, channel_id: str, market: Marketplace, transfer: ledger.Transfer) -> int:
    """Learn which marketplace offer sells which SKU into ``hub.channel_listing``.

    Offers without a SKU or an id cannot be matched and are counted as rejected; when two offers carry
    one SKU the lowest id is kept, so the choice is stable between runs. Every stored pair that no
    longer holds is removed first, which frees an offer id that moved to another SKU. The rows and the
    ledger row share one transaction.

    Returns:
        The number of listings for the channel after the sync.
    """
    pairs: dict[str, str] = {}
    duplicates: set[str] = set()
    unmatched = 0
    read = 0
    for sku, offer_id in market.listings():
        read += 1
        if not sku or not offer_id:
            unmatched += 1
            continue
        sku, offer_id = str(sku), str(offer_id)
        if sku in pairs and pairs[sku] != offer_id:
            duplicates.add(sku)
            offer_id = min(pairs[sku], offer_id)
        pairs[sku] = offer_id
    digest = hashlib.sha256()
    for sku in sorted(pairs):
        digest.update(f"{sku}\t{pairs[sku]}\n".encode())
    with connect(dsn) as conn:
        conn.execute("CREATE TEMP TABLE listing_in (sku text PRIMARY KEY, offer_id text NOT NULL) ON COMMIT DROP")
        with conn.cursor() as cur, cur.copy("COPY listing_in (sku, offer_id) FROM STDIN") as copy:
            for sku, offer_id in pairs.items():
                copy.write_row((sku, offer_id))
        deleted = conn.execute(
            "DELETE FROM hub.channel_listing l WHERE l.channel = %s "
            "AND NOT EXISTS (SELECT 1 FROM listing_in i WHERE i.sku = l.sku AND i.offer_id = l.offer_id) "
            "RETURNING l.sku",
            (channel_id,),
        ).fetchall()
        removed = sum(sku not in pairs for (sku,) in deleted)
        upserted = conn.execute(
            "INSERT INTO hub.channel_listing (channel, sku, offer_id, transfer_id) "
            "SELECT %s, sku, offer_id, %s FROM listing_in ORDER BY sku "
            "ON CONFLICT (channel, sku) DO UPDATE SET offer_id = excluded.offer_id, "
            "updated_at = now(), transfer_id = excluded.transfer_id "
            "WHERE hub.channel_listing.offer_id IS DISTINCT FROM excluded.offer_id",
            (channel_id, transfer.transfer_id),
        ).rowcount
        transfer.rows_read = read
        transfer.rows_written = len(pairs)
        transfer.rows_rejected = unmatched
        transfer.rows_changed = upserted + removed
        transfer.payload_sha256 = digest.hexdigest()
        transfer.details = {
            **transfer.details,
            "listings": len(pairs),
            "removed": removed,
            "without_sku_or_id": unmatched,
            "duplicate_skus": sorted(duplicates)[:100],
        }
        ledger.append(conn, transfer, "success")
    return len(pairs)


def published_skus(dsn: str, channel_id: str) -> list[str]:
    """The SKUs the hub has sent to the channel (what a by-SKU read-back asks for)."""
    with connect(dsn) as conn:
        return [
            sku
            for (sku,) in conn.execute(
                "SELECT DISTINCT sku FROM hub.outbox WHERE channel = %s AND status = 'sent' ORDER BY sku",
                (channel_id,),
            )
        ]


def read_back(dsn: str, channel_id: str, market: Marketplace) -> Iterable[ChannelOffer]:
    """The channel's offers as the marketplace shows them now, for the reconciliation."""
    market.prepare()
    return market.read_offers(published_skus(dsn, channel_id) if market.reads_back_by_sku else None)
