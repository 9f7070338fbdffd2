"""Allegro: the REST client and the publisher that drains ``hub.outbox`` into change commands.

The client speaks ``api.allegro.pl`` (and the sandbox simulator): OAuth 2.0 client credentials,
``GET /sale/offers`` paging and the batch ``offer-price-change-commands`` /
``offer-quantity-change-commands`` with client-chosen command ids.

Publishing is exactly-once on the marketplace side by construction: each command's id is a UUID5
of the outbox rows it carries (their idempotency keys and offer ids), and outbox rows are
updated in the same transaction that holds their row locks, one commit per command. A crash after
the PUT but before the commit leaves the rows pending; the next run rebuilds the same command,
sends the same id, and Allegro answers with the original command instead of applying it again.

Orders (:meth:`AllegroMarketplace.read_orders`) are read from the order event journal:
``GET /order/events?from=<eventId>`` (every event type), then the current state of each distinct order
of the page from ``GET /order/checkout-forms/{id}``. Events repeat and arrive out of order, so the
events only say *which* orders changed; the checkout form says what they are now. The cursor is the
highest event id of the page (event ids increase); the first run starts after
``GET /order/event-stats`` → ``latestEvent``.

The order doorbell's probe (:meth:`AllegroMarketplace.orders_changed_since`) is that one call:
``latestEvent`` after the cursor's event id means news (12 calls a minute per channel at a 5 s poll).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any, Literal

import requests

from commerce_sync import registry
from commerce_sync.channels.marketplace import Item, Marketplace, Outcome, Request
from commerce_sync.channels.order_reading import (
    MalformedOrder,
    Reading,
    decode_cursor,
    money,
    order_line,
    parse_time,
    reading_orders,
)
from commerce_sync.channels.orders import MarketplaceOrder, OrderBatch, OrderNews, OrderStatus
from commerce_sync.channels.reconcile import ChannelOffer
from commerce_sync.connections import ConnectionInfo
from commerce_sync.errors import ConfigError, TransientError
from commerce_sync.transport.http import ChannelRequestError, OAuthClient

log = logging.getLogger(__name__)

MEDIA_TYPE = "application/vnd.allegro.public.v1+json"
CommandKind = Literal["price", "quantity"]
COMMAND_PATHS: dict[CommandKind, str] = {
    "price": "/sale/offer-price-change-commands",
    "quantity": "/sale/offer-quantity-change-commands",
}
MAX_OFFERS_PER_COMMAND = 1000
PAGE_SIZE = 1000
PIPELINE_WINDOW = 50  # commands sent before their results are awaited
COMMAND_NAMESPACE = uuid.UUID("5b0c3f4e-7a51-4c55-9f1e-2f6f2d0a9e11")
"""UUID5 namespace of commerce_sync's Allegro command ids (never change it: retries rely on it)."""
_CENT = Decimal("0.01")
MAX_EVENTS_PER_PAGE = 1000
FORM_FETCH_WORKERS = 4
ORDER_STATUSES: dict[str, OrderStatus] = {
    "BOUGHT": "unpaid",
    "FILLED_IN": "unpaid",
    "READY_FOR_PROCESSING": "ready",
    "CANCELLED": "cancelled",
}
"""Checkout-form ``status`` → the hub's order status."""


def price_command_body(offer_ids: Sequence[str], amount: Decimal | str, currency: str) -> dict[str, Any]:
    """Body of an offer-price-change-command setting a fixed price."""
    return {
        "modification": {
            "type": "FIXED_PRICE",
            "price": {"amount": f"{Decimal(amount).quantize(_CENT)}", "currency": currency},
        },
        "offerCriteria": [{"offers": [{"id": offer_id} for offer_id in offer_ids], "type": "CONTAINS_OFFERS"}],
    }


def quantity_command_body(offer_ids: Sequence[str], value: int) -> dict[str, Any]:
    """Body of an offer-quantity-change-command setting a fixed quantity."""
    return {
        "modification": {"changeType": "FIXED", "value": int(value)},
        "offerCriteria": [{"offers": [{"id": offer_id} for offer_id in offer_ids], "type": "CONTAINS_OFFERS"}],
    }


class AllegroClient(OAuthClient):
    """Allegro REST API client; the OAuth token is fetched lazily and refreshed when it expires.

    Args:
        base_url: ``https://api.allegro.pl`` (or the sandbox simulator's URL).
        client_id: OAuth client id.
        client_secret: OAuth client secret (never shown in repr, logs or errors).
        token_url: token endpoint; default ``base_url + "/auth/oauth/token"``.
        **options: passed to :class:`~commerce_sync.transport.http.HttpClient`.
    """

    channel = "allegro"
    requests_per_period = (9000.0, 60.0)  # per client id; over it Allegro blocks for a minute

    def __init__(
        self,
        base_url: str,
        client_id: str,
        client_secret: str,
        token_url: str | None = None,
        **options: Any,
    ) -> None:
        super().__init__(base_url, **options)
        self.client_id = client_id
        self.__secret = client_secret
        self.token_url = token_url or self.base_url + "/auth/oauth/token"
        self.session.headers["Accept"] = MEDIA_TYPE

    @classmethod
    def from_connection(cls, info: ConnectionInfo, **options: Any) -> AllegroClient:
        """A client from an Airflow connection: host = base URL, login/password = client id/secret.

        ``extra.token_url`` overrides the token endpoint (production: ``https://allegro.pl/auth/oauth/token``).
        """
        if not info.login or not info.password:
            raise ConfigError(
                f"connection {info.conn_id!r} needs login (Allegro client id) and password (client secret)"
            )
        token_url = info.extra.get("token_url")
        return cls(info.base_url(), info.login, info.password, token_url=token_url, **options)

    def __repr__(self) -> str:
        return f"AllegroClient(base_url={self.base_url!r}, client_id={self.client_id!r})"

    # ------------------------------------------------------------------ auth
    def _request_token(self) -> requests.Response:
        return self.request(
            "POST",
            self.token_url,
            params={"grant_type": "client_credentials"},
            auth=(self.client_id, self.__secret),
            headers={"Accept": "application/json"},
            authenticate=False,
        )

    # ------------------------------------------------------------------ API
    def list_offers(self, page_size: int = PAGE_SIZE) -> Iterator[dict[str, Any]]:
        """All of the seller's offers, page by page (``GET /sale/offers``)."""
        offset = 0
        while True:
            page = self.request("GET", "/sale/offers", params={"offset": offset, "limit": page_size}).json()
            offers = page.get("offers") or []
            yield from offers
            offset += len(offers)
            if not offers or offset >= int(page.get("totalCount") or 0):
                return

    def send_command(self, kind: CommandKind, command_id: uuid.UUID | str, body: dict[str, Any]) -> dict[str, Any]:
        """``PUT`` a change command; returns Allegro's general report."""
        response = self.request(
            "PUT",
            f"{COMMAND_PATHS[kind]}/{command_id}",
            json_body=body,
            headers={"Content-Type": MEDIA_TYPE},
        )
        result: dict[str, Any] = response.json()
        return result

    def change_prices(
        self, command_id: uuid.UUID | str, offer_ids: Sequence[str], amount: Decimal | str, currency: str
    ) -> dict[str, Any]:
        """Set a fixed price on up to 1000 offers with one command."""
        return self.send_command("price", command_id, price_command_body(offer_ids, amount, currency))

    def change_quantities(self, command_id: uuid.UUID | str, offer_ids: Sequence[str], value: int) -> dict[str, Any]:
        """Set a fixed quantity on up to 1000 offers with one command."""
        return self.send_command("quantity", command_id, quantity_command_body(offer_ids, value))

    def command_status(self, kind: CommandKind, command_id: uuid.UUID | str) -> dict[str, Any]:
        """The command's general report: ``{"id", "taskCount": {"total", "success", "failed"}}``."""
        result: dict[str, Any] = self.request("GET", f"{COMMAND_PATHS[kind]}/{command_id}").json()
        return result

    def command_tasks(self, kind: CommandKind, command_id: uuid.UUID | str) -> list[dict[str, Any]]:
        """Every task of the command (one per offer), all pages."""
        tasks: list[dict[str, Any]] = []
        while True:
            page = self.request(
                "GET",
                f"{COMMAND_PATHS[kind]}/{command_id}/tasks",
                params={"offset": len(tasks), "limit": PAGE_SIZE},
            ).json()
            batch = page.get("tasks") or []
            tasks.extend(batch)
            if len(batch) < PAGE_SIZE:
                return tasks

    def order_events(self, after: str | None, limit: int = 100) -> list[dict[str, Any]]:
        """``GET /order/events``: up to ``limit`` events after event id ``after`` (every retained one without it)."""
        params: dict[str, Any] = {"limit": max(1, min(limit, MAX_EVENTS_PER_PAGE))}
        if after is not None:
            params["from"] = after
        events: list[dict[str, Any]] = self.request("GET", "/order/events", params=params).json().get("events") or []
        return events

    def order_event_stats(self) -> dict[str, Any] | None:
        """``GET /order/event-stats`` → ``latestEvent`` (``{"id", "occurredAt"}``), None when there is none."""
        latest = self.request("GET", "/order/event-stats").json().get("latestEvent")
        return latest if isinstance(latest, dict) else None

    def checkout_form(self, form_id: str) -> dict[str, Any]:
        """``GET /order/checkout-forms/{id}``: the order's current state."""
        form: dict[str, Any] = self.request("GET", f"/order/checkout-forms/{form_id}").json()
        return form

    def wait_for_command(self, kind: CommandKind, command_id: uuid.UUID | str, timeout: float = 60.0) -> dict[str, Any]:
        """Poll the general report until every task finished.

        Raises:
            TransientError: the command is still processing after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        delay = 0.1
        while True:
            report = self.command_status(kind, command_id)
            counts = report.get("taskCount") or {}
            total = int(counts.get("total") or 0)
            if total == int(counts.get("success") or 0) + int(counts.get("failed") or 0):
                return report
            if time.monotonic() + delay > deadline:
                raise TransientError(
                    f"allegro: {kind} command {command_id} still processing after {timeout:.0f}s "
                    f"({counts}); the next run re-sends the same command id and reads its result"
                )
            self.sleep(delay)
            delay = min(delay * 2, 2.0)


# ====================================================================== marketplace
def command_id_for(rows: Sequence[tuple[str, str]]) -> uuid.UUID:
    """Deterministic command id of (idempotency_key, offer_id) pairs: UUID5 of the sorted pairs."""
    name = "\n".join(f"{key}={offer_id}" for key, offer_id in sorted(rows))
    return uuid.uuid5(COMMAND_NAMESPACE, name)


def _command_group(item: Item) -> tuple[str, ...]:
    """What one command sets: a price (amount, currency) or a quantity; offers sharing it share a command."""
    if item.field == "price":
        return ("price", f"{item.amount}", item.currency)
    return ("quantity", str(item.quantity))


class AllegroMarketplace(Marketplace):
    """Allegro as the publisher sees it: batch change commands with deterministic ids.

    A command sets one value (a price, or a quantity) on up to 1,000 offers, so rows are grouped by
    the value they set rather than by SKU. Allegro processes commands asynchronously: a window of
    commands is sent, then awaited together. Each command's id is a UUID5 of the outbox rows it
    carries, so a retry after a crash re-sends the same command and Allegro applies it once.
    """

    kind = "allegro"
    title = "Allegro"
    max_items_per_request = MAX_OFFERS_PER_COMMAND
    pipeline_window = PIPELINE_WINDOW
    request_noun = "command"
    idempotent_requests = True
    probes_orders = True
    client: AllegroClient

    def __init__(
        self, client: AllegroClient, poll_timeout: float = 60.0, form_fetch_workers: int = FORM_FETCH_WORKERS
    ) -> None:
        super().__init__(client)
        self.poll_timeout = poll_timeout
        self.form_fetch_workers = max(1, form_fetch_workers)

    @classmethod
    def from_connection(cls, info: ConnectionInfo) -> AllegroMarketplace:
        return cls(AllegroClient.from_connection(info))

    def batches(self, items: list[Item], batch_size: int) -> Iterator[list[Item]]:
        """Items grouped by command value, in outbox order, cut into commands of at most ``batch_size`` offers.

        Cutting in outbox order keeps command boundaries stable when earlier commands were already
        sent, so a retry rebuilds the same commands (and command ids).
        """
        groups: dict[tuple[str, ...], list[Item]] = {}
        for item in sorted(items, key=lambda item: item.id):
            groups.setdefault(_command_group(item), []).append(item)
        for group in sorted(groups):
            members = groups[group]
            for start in range(0, len(members), batch_size):
                yield members[start : start + batch_size]

    def build(self, items: list[Item]) -> Request:
        offer_ids = [item.offer_id for item in items if item.offer_id is not None]
        first = items[0]
        if first.field == "price":
            body = price_command_body(offer_ids, first.amount, first.currency)
        else:
            body = quantity_command_body(offer_ids, first.quantity)
        command_id = str(command_id_for([(item.key, item.offer_id or "") for item in items]))
        return Request(items, body, command_id, {"kind": first.field})

    def send(self, request: Request) -> None:
        assert request.request_id is not None
        try:
            self.client.send_command(request.context["kind"], request.request_id, request.body)
        except ChannelRequestError as exc:
            # A 409 for our own id means the command exists already (an earlier, interrupted run):
            # read its outcome instead of applying anything again.
            if exc.status != 409:
                raise
            log.info("allegro: command %s already known to Allegro; reading its result", request.request_id)

    def collect(self, request: Request, sent: Any) -> list[Outcome]:
        kind, command_id = request.context["kind"], request.request_id
        assert command_id is not None
        self.client.wait_for_command(kind, command_id, timeout=self.poll_timeout)
        tasks = {str((task.get("offer") or {}).get("id")): task for task in self.client.command_tasks(kind, command_id)}
        outcomes: list[Outcome] = []
        for item in request.items:
            task = tasks.get(item.offer_id or "")
            if task is None:
                outcomes.append(Outcome(item.id, "failed", None, f"Allegro reported no task for offer {item.offer_id}"))
            elif task.get("status") == "SUCCESS":
                outcomes.append(Outcome(item.id, "sent", task))
            else:
                message = task.get("message") or f"task status {task.get('status')}"
                outcomes.append(Outcome(item.id, "failed", task, f"offer {item.offer_id} (SKU {item.sku}): {message}"))
        return outcomes

    def read_orders(self, cursor: str | None, *, limit: int = 100) -> OrderBatch:
        """Orders whose events follow the cursor's event id (see the module docs); at most ``limit`` orders.

        The cursor is ``{"from": <event id>}``; ``from`` is null only when Allegro had no event at all
        when the first run asked, which then reads from the oldest event Allegro keeps.
        """
        state = decode_cursor(self.title, cursor)
        reading = Reading(self.title, self.client)
        with reading_orders(self.title):
            if state is None:
                latest = self.client.order_event_stats()
                state = {"from": str(latest["id"]) if latest and latest.get("id") is not None else None}
                reading.count("started_at_latest_event")
            after = state.get("from")
            page_limit = max(1, min(limit, MAX_EVENTS_PER_PAGE))
            events = self.client.order_events(after, page_limit)
            distinct: dict[str, dict[str, Any]] = {}
            form_ids: dict[str, None] = {}
            for event in events:
                event_id = str(event.get("id"))
                if event_id in distinct:
                    reading.count("duplicate_events")
                    continue
                distinct[event_id] = event
                form_id = ((event.get("order") or {}).get("checkoutForm") or {}).get("id")
                if not form_id:
                    reading.skip(MalformedOrder(None, f"event {event_id} ({event.get('type')}) names no checkout form"))
                    continue
                form_ids[str(form_id)] = None
            reading.count("events", len(events))
            reading.count("pages")
            if distinct:
                state = {"from": max(distinct, key=_event_order)}
            if _out_of_order(list(distinct)):
                reading.count("out_of_order_pages")
            for form_id, form in self._forms(list(form_ids)):
                reading.count("forms_read")
                try:
                    reading.add(checkout_form_order(form_id, form))
                except MalformedOrder as error:
                    reading.skip(error)
        return reading.batch(state, more=len(distinct) >= page_limit)

    def orders_changed_since(self, cursor: str | None) -> OrderNews | None:
        """``GET /order/event-stats``: news when Allegro's latest event follows the cursor's ``from``.

        Without a cursor (the channel was never imported) it is news without a call: the first import
        sets the starting point. The marker is the latest event id, so every further event is new news.
        """
        state = decode_cursor(self.title, cursor)
        if state is None:
            return OrderNews(True, "no-cursor", {"reason": "no order cursor stored yet"})
        latest = self.client.order_event_stats()
        latest_id = str(latest["id"]) if latest and latest.get("id") is not None else None
        after = state.get("from")
        if latest_id is None:
            return OrderNews(False, "no-events", {"from": after})
        new = after is None or _event_order(latest_id) > _event_order(str(after))
        return OrderNews(new, f"event:{latest_id}", {"from": after, "latest_event": latest_id})

    def _forms(self, form_ids: list[str]) -> Iterator[tuple[str, Mapping[str, Any]]]:
        """Each form's current state, read ``form_fetch_workers`` at a time (the client is thread-safe)."""
        if self.form_fetch_workers == 1 or len(form_ids) < 2:
            for form_id in form_ids:
                yield form_id, self.client.checkout_form(form_id)
            return
        with ThreadPoolExecutor(self.form_fetch_workers, thread_name_prefix="allegro-forms") as pool:
            yield from zip(form_ids, pool.map(self.client.checkout_form, form_ids), strict=True)

    def listings(self) -> Iterator[tuple[str | None, str | None]]:
        """(SKU, offer id) of every offer: the SKU is the offer's ``external.id``."""
        for offer in self.client.list_offers():
            offer_id = offer.get("id")
            yield (offer.get("external") or {}).get("id"), str(offer_id) if offer_id else None

    def read_offers(self, skus: list[str] | None) -> Iterator[ChannelOffer]:
        """The seller's offers as the reconciliation compares them (SKU from ``external.id``)."""
        for offer in self.client.list_offers():
            sku = (offer.get("external") or {}).get("id")
            if not sku:
                continue
            price = ((offer.get("sellingMode") or {}).get("price")) or {}
            amount = price.get("amount")
            available = (offer.get("stock") or {}).get("available")
            yield ChannelOffer(
                str(sku),
                Decimal(str(amount)) if amount is not None else None,
                price.get("currency"),
                int(available) if available is not None else None,
            )


def _event_order(event_id: str) -> tuple[int, int | str]:
    """Event ids are increasing numbers; compare them as such (a non-numeric id sorts by text)."""
    return (1, int(event_id)) if event_id.isdigit() else (0, event_id)


def _out_of_order(event_ids: list[str]) -> bool:
    keys = [_event_order(event_id) for event_id in event_ids]
    return keys != sorted(keys)


def checkout_form_order(form_id: str, form: Mapping[str, Any]) -> MarketplaceOrder:
    """A checkout form (``GET /order/checkout-forms/{id}``) as a :class:`MarketplaceOrder`.

    Raises:
        MalformedOrder: the form has an unknown status, no line items, or a line the hub cannot import.
    """
    order_id = str(form.get("id") or form_id)
    status_word = str(form.get("status"))
    status = ORDER_STATUSES.get(status_word)
    if status is None:
        raise MalformedOrder(order_id, f"checkout form status {status_word!r} is not one of {sorted(ORDER_STATUSES)}")
    items = form.get("lineItems")
    if not isinstance(items, list) or not items:
        raise MalformedOrder(order_id, "the checkout form has no line items")
    lines = []
    bought: list[Any] = []
    for item in items:
        offer = item.get("offer") or {}
        price = item.get("price") or {}
        lines.append(
            order_line(
                order_id,
                item.get("id"),
                (offer.get("external") or {}).get("id"),
                offer.get("id"),
                item.get("quantity"),
                money(price.get("amount")),
                price.get("currency"),
            )
        )
        if item.get("boughtAt"):
            bought.append(parse_time(item["boughtAt"]))
    fulfillment = (form.get("fulfillment") or {}).get("status")
    return MarketplaceOrder(
        order_id=order_id,
        status=status,
        marketplace_status=f"{status_word}/{fulfillment}" if fulfillment else status_word,
        revision=str(form["revision"]) if form.get("revision") is not None else None,
        updated_at=parse_time(form.get("updatedAt")),
        lines=tuple(lines),
        created_at=min(bought) if bought else None,
    )


registry.register(
    registry.ChannelKind(
        name="allegro",
        family="marketplace",
        title="Allegro",
        capabilities=frozenset({"publish", "read_back", "import_orders"}),
        outbox_fields=("price", "quantity"),
        marketplace=AllegroMarketplace.from_connection,
        needs_connection=True,
        asset=registry.fixed_asset("ALLEGRO_OFFERS"),
        pool="allegro_api",
        pool_slots=1,
        rate_limit="9,000 requests/min per client id; each task's bucket allows 9,000/min: 1 x 9,000/min",
    )
)
