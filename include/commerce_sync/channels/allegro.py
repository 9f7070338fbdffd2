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

import hashlib
import logging
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

import psycopg
import requests

from commerce_sync.audit import ledger
from commerce_sync.channels import prepublish
from commerce_sync.channels.base import ChannelRequestError, OAuthClient, encode_json
from commerce_sync.channels.outbox import lock_pending as _lock_pending
from commerce_sync.channels.outbox import mark_published as _mark_published
from commerce_sync.channels.outbox import record_outcomes as _record_outcomes
from commerce_sync.channels.outbox import supersede as _supersede
from commerce_sync.channels.reconcile import ChannelOffer
from commerce_sync.connections import ConnectionInfo
from commerce_sync.db import connect
from commerce_sync.errors import ConfigError, TransientError

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
        **options: passed to :class:`~commerce_sync.channels.base.HttpClient`.
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


# ====================================================================== publisher
@dataclass
class PublishResult:
    """What one publish run did."""

    claimed: int = 0
    sent: int = 0
    failed: int = 0
    commands: list[str] = field(default_factory=list)
    superseded: int = 0
    quarantined: int = 0


@dataclass(frozen=True)
class _Row:
    id: int
    sku: str
    field: CommandKind
    key: str
    offer_version: int
    offer_id: str | None
    group: tuple[str, ...] | None
    problem: str | None


def sync_listings(dsn: str, channel_id: str, client: AllegroClient, transfer: ledger.Transfer) -> int:
    """Learn which Allegro offer sells which SKU (``external.id``) into ``hub.channel_listing``.

    Offers without ``external.id`` cannot be matched and are counted as rejected; listings whose
    offer no longer exists are removed. The upsert and the ledger row share one transaction.

    Returns:
        The number of listings for the channel after the sync.
    """
    pairs: dict[str, str] = {}
    duplicates: list[str] = []
    unmatched = 0
    read = 0
    for offer in client.list_offers():
        read += 1
        sku = (offer.get("external") or {}).get("id")
        offer_id = offer.get("id")
        if not sku or not offer_id:
            unmatched += 1
            continue
        if sku in pairs and pairs[sku] != str(offer_id):
            # Two offers for one SKU: keep the lowest id so the choice is stable between runs.
            duplicates.append(sku)
            offer_id = min(pairs[sku], str(offer_id))
        pairs[str(sku)] = str(offer_id)
    digest = hashlib.sha256()
    for sku in sorted(pairs):
        digest.update(f"{sku}\t{pairs[sku]}\n".encode())
    with connect(dsn) as conn:
        conn.execute("CREATE TEMP TABLE listing_in (sku text PRIMARY KEY, offer_id text NOT NULL) ON COMMIT DROP")
        with conn.cursor() as cur, cur.copy("COPY listing_in (sku, offer_id) FROM STDIN") as copy:
            for sku, offer_id in pairs.items():
                copy.write_row((sku, offer_id))
        # Deleting every pair that no longer holds (not only vanished SKUs) frees offer ids that
        # moved to another SKU, which the UNIQUE (channel, offer_id) constraint would otherwise refuse.
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
            "without_external_id": unmatched,
            "duplicate_skus": sorted(set(duplicates))[:100],
        }
        ledger.append(conn, transfer, "success")
    return len(pairs)


def _group_of(field_name: str, payload: Any) -> tuple[tuple[str, ...] | None, str | None]:
    """The command group of an outbox payload, or a problem saying why it cannot be sent."""
    if not isinstance(payload, dict):
        return None, "payload is not a JSON object"
    if field_name == "price":
        try:
            amount = Decimal(str(payload["amount"])).quantize(_CENT)
        except (KeyError, InvalidOperation):
            return None, f"price payload {payload} has no valid amount"
        currency = payload.get("currency")
        if amount <= 0 or not isinstance(currency, str) or len(currency) != 3:
            return None, f"price payload {payload} needs a positive amount and a 3-letter currency"
        return ("price", f"{amount}", currency), None
    value = payload.get("value")
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        return None, f"quantity payload {payload} needs a non-negative integer value"
    return ("quantity", str(value)), None


def command_id_for(rows: Sequence[tuple[str, str]]) -> uuid.UUID:
    """Deterministic command id of (idempotency_key, offer_id) pairs: UUID5 of the sorted pairs."""
    name = "\n".join(f"{key}={offer_id}" for key, offer_id in sorted(rows))
    return uuid.uuid5(COMMAND_NAMESPACE, name)


def _plan(
    conn: psycopg.Connection, channel_id: str, currencies: Iterable[str] | None
) -> tuple[list[_Row], dict[int, list[prepublish.Rejection]]]:
    rows = conn.execute(
        "SELECT o.id, o.sku, o.field, o.idempotency_key, o.offer_version, o.payload, l.offer_id, "
        "co.floor_price, co.currency "
        "FROM hub.outbox o LEFT JOIN hub.channel_listing l ON l.channel = o.channel AND l.sku = o.sku "
        "LEFT JOIN hub.channel_offer co ON co.channel = o.channel AND co.sku = o.sku "
        "WHERE o.channel = %s AND o.status = 'pending' ORDER BY o.id",
        (channel_id,),
    ).fetchall()
    planned = []
    rejected: dict[int, list[prepublish.Rejection]] = {}
    for row_id, sku, field_name, key, version, payload, offer_id, floor_price, offer_currency in rows:
        group, problem = _group_of(field_name, payload)
        if problem is None and field_name == "price" and group is not None:
            # The pre-publish check: a floor violation or a foreign currency never reaches Allegro.
            problems = prepublish.check_price_change(
                channel_id,
                sku,
                amount=group[1],
                currency=group[2],
                floor_price=floor_price,
                offer_currency=offer_currency,
                currencies=currencies,
            )
            if problems:
                rejected[row_id] = problems
                problem = prepublish.refusal(problems)
        if offer_id is None and problem is None:
            problem = f"no Allegro offer for SKU {sku}; run sync_listings / create the offer"
        planned.append(_Row(row_id, sku, field_name, key, version, offer_id, group, problem))
    return planned, rejected


def _chunks(rows: list[_Row], batch_size: int) -> Iterator[list[_Row]]:
    """Rows grouped by command value, in outbox order, cut into chunks of at most batch_size.

    Cutting in outbox order keeps chunk boundaries stable when earlier chunks were already sent,
    so a retry rebuilds the same commands (and command ids).
    """
    groups: dict[tuple[str, ...], list[_Row]] = {}
    for row in rows:
        assert row.group is not None
        groups.setdefault(row.group, []).append(row)
    for group in sorted(groups):
        members = groups[group]
        for start in range(0, len(members), batch_size):
            yield members[start : start + batch_size]


def publish_outbox(
    dsn: str,
    channel_id: str,
    client: AllegroClient,
    transfer: ledger.Transfer,
    batch_size: int = MAX_OFFERS_PER_COMMAND,
    poll_timeout: float = 60,
    currencies: Iterable[str] | None = None,
) -> PublishResult:
    """Send the channel's pending outbox rows to Allegro as batched, idempotent change commands.

    Only the newest pending version per (sku, field) is sent; older ones become ``superseded``.
    Rows whose SKU has no Allegro offer, or whose payload is unusable, become ``failed``; so do
    price rows that fail the pre-publish check (below ``floor_price``, or a currency outside
    ``currencies`` — default: the offer's computed currency), which are also quarantined. Price
    rows are grouped by (amount, currency), quantity rows by value, in commands of at most
    ``batch_size`` offers. Each command's outbox rows are locked (``FOR UPDATE SKIP LOCKED``),
    sent, awaited and updated in one transaction, committed before the next command.

    The caller records the transfer (``ledger.recording``); this fills its counters.

    Raises:
        TransientError: Allegro is unreachable or a command did not finish within ``poll_timeout``
            (rows of unfinished commands stay pending and are re-sent with the same command id).
        ChannelError: Allegro refused a command as a whole.
    """
    if not 1 <= batch_size <= MAX_OFFERS_PER_COMMAND:
        raise ValueError(f"batch_size must be 1..{MAX_OFFERS_PER_COMMAND}")
    result = PublishResult()
    digest = hashlib.sha256()

    def account() -> None:
        transfer.rows_read = result.claimed
        transfer.rows_written = result.sent
        transfer.rows_rejected = result.failed
        transfer.rows_changed = result.sent
        transfer.payload_sha256 = digest.hexdigest() if result.commands else None
        transfer.details = {
            **transfer.details,
            "commands": list(result.commands),
            "superseded": result.superseded,
            "quarantined": result.quarantined,
        }

    with connect(dsn) as conn:
        with conn.transaction():
            result.superseded = _supersede(conn, channel_id)
            planned, rejected = _plan(conn, channel_id, currencies)
        unsendable = [row for row in planned if row.problem is not None]
        if unsendable:
            with conn.transaction():
                locked = _lock_pending(conn, [row.id for row in unsendable])
                outcomes = [(r.id, "failed", None, r.problem) for r in unsendable if r.id in locked]
                if outcomes:
                    _record_outcomes(conn, outcomes, None, transfer.transfer_id)
                result.quarantined += prepublish.quarantine_rejections(
                    conn,
                    channel_id,
                    transfer.transfer_id,
                    [problem for row_id, problems in rejected.items() if row_id in locked for problem in problems],
                )
                result.claimed += len(outcomes)
                result.failed += len(outcomes)
        account()
        chunks = list(_chunks([row for row in planned if row.problem is None], batch_size))
        # Commands are sent a window at a time and then awaited together: Allegro processes them
        # asynchronously, so waiting for each before sending the next would serialise the latency.
        for start in range(0, len(chunks), PIPELINE_WINDOW):
            window = chunks[start : start + PIPELINE_WINDOW]
            with conn.transaction():
                locked = _lock_pending(conn, [row.id for chunk in window for row in chunk])
                in_flight = []
                for chunk in window:
                    rows = [row for row in chunk if row.id in locked]
                    if rows:  # else another publisher holds or already sent them
                        in_flight.append(_send_chunk(client, rows, result, digest))
                for kind, command_id, rows in in_flight:
                    _collect_chunk(conn, channel_id, client, transfer, kind, command_id, rows, poll_timeout, result)
            account()
    account()
    return result


def _send_chunk(
    client: AllegroClient, rows: list[_Row], result: PublishResult, digest: Any
) -> tuple[CommandKind, str, list[_Row]]:
    """Send one command for ``rows``; its id is derived from their idempotency keys."""
    kind = rows[0].field
    group = rows[0].group
    assert group is not None
    offer_ids = [row.offer_id for row in rows if row.offer_id is not None]
    if kind == "price":
        body = price_command_body(offer_ids, group[1], group[2])
    else:
        body = quantity_command_body(offer_ids, int(group[1]))
    command_id = str(command_id_for([(row.key, row.offer_id or "") for row in rows]))
    result.claimed += len(rows)
    digest.update(encode_json(body))
    try:
        client.send_command(kind, command_id, body)
    except ChannelRequestError as exc:
        # A 409 for our own id means the command exists already (an earlier, interrupted run):
        # read its outcome instead of applying anything again.
        if exc.status != 409:
            raise
        log.info("allegro: command %s already known to Allegro; reading its result", command_id)
    return kind, command_id, rows


def _collect_chunk(
    conn: psycopg.Connection,
    channel_id: str,
    client: AllegroClient,
    transfer: ledger.Transfer,
    kind: CommandKind,
    command_id: str,
    rows: list[_Row],
    poll_timeout: float,
    result: PublishResult,
) -> None:
    """Await one sent command and record each offer's outcome in the outbox."""
    client.wait_for_command(kind, command_id, timeout=poll_timeout)
    tasks = {str((task.get("offer") or {}).get("id")): task for task in client.command_tasks(kind, command_id)}
    outcomes: list[tuple[int, str, Any, str | None]] = []
    for row in rows:
        task = tasks.get(row.offer_id or "")
        if task is None:
            outcomes.append((row.id, "failed", None, f"Allegro reported no task for offer {row.offer_id}"))
        elif task.get("status") == "SUCCESS":
            outcomes.append((row.id, "sent", task, None))
        else:
            message = task.get("message") or f"task status {task.get('status')}"
            outcomes.append((row.id, "failed", task, f"offer {row.offer_id} (SKU {row.sku}): {message}"))
    _record_outcomes(conn, outcomes, command_id, transfer.transfer_id)
    _mark_published(conn, channel_id, sorted({row.sku for row in rows}))
    sent = sum(outcome[1] == "sent" for outcome in outcomes)
    result.sent += sent
    result.failed += len(outcomes) - sent
    result.commands.append(command_id)
    log.info("allegro: %s command %s: %d sent, %d failed", kind, command_id, sent, len(outcomes) - sent)


def read_offers(client: AllegroClient) -> Iterator[ChannelOffer]:
    """The seller's offers as the reconciliation compares them (SKU from ``external.id``)."""
    for offer in client.list_offers():
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
