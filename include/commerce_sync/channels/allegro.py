"""Allegro: the REST client and the publisher that drains ``hub.outbox`` into change commands.

The client speaks ``api.allegro.pl`` (and the sandbox simulator): OAuth 2.0 client credentials,
``GET /sale/offers`` paging and the batch ``offer-price-change-commands`` /
``offer-quantity-change-commands`` with client-chosen command ids.

Publishing is exactly-once on the marketplace side by construction: each command's id is a UUID5
of the outbox rows it carries (their idempotency keys and offer ids), and outbox rows are
updated in the same transaction that holds their row locks, one commit per command. A crash after
the PUT but before the commit leaves the rows pending; the next run rebuilds the same command,
sends the same id, and Allegro answers with the original command instead of applying it again.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator, Sequence
from decimal import Decimal
from typing import Any, Literal

import requests

from commerce_sync import registry
from commerce_sync.channels.marketplace import Item, Marketplace, Outcome, Request
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
    client: AllegroClient

    def __init__(self, client: AllegroClient, poll_timeout: float = 60.0) -> None:
        super().__init__(client)
        self.poll_timeout = poll_timeout

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


registry.register(
    registry.ChannelKind(
        name="allegro",
        family="marketplace",
        title="Allegro",
        capabilities=frozenset({"publish", "read_back"}),
        outbox_fields=("price", "quantity"),
        marketplace=AllegroMarketplace.from_connection,
        needs_connection=True,
        asset=registry.fixed_asset("ALLEGRO_OFFERS"),
        pool="allegro_api",
        pool_slots=1,
        rate_limit="9,000 requests/min per client id; each task's bucket allows 9,000/min: 1 x 9,000/min",
    )
)
