"""eBay: the Inventory API client and the publisher that drains ``hub.outbox`` into bulk updates.

``POST /sell/inventory/v1/bulk_update_price_quantity`` takes at most 25 SKUs per call and answers
per item (200, or 207 with per-item errors). Updates set absolute values, so a re-sent batch (after
a crash between eBay's answer and our commit, or a dropped answer) changes nothing on eBay: the
outbox row's idempotency key is reflected in what we send, and applying it twice has one effect.
The OAuth user token comes from the refresh-token grant (connection ``extra.refresh_token``), is
refreshed before it expires or after a 401, and never appears in repr, logs, XCom or the ledger.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import requests

from commerce_sync.audit import ledger
from commerce_sync.channels import outbox, prepublish
from commerce_sync.channels.base import OAuthClient, encode_json
from commerce_sync.channels.reconcile import ChannelOffer
from commerce_sync.connections import ConnectionInfo
from commerce_sync.db import connect
from commerce_sync.errors import ConfigError

log = logging.getLogger(__name__)

MAX_ITEMS_PER_CALL = 25
BULK_PATH = "/sell/inventory/v1/bulk_update_price_quantity"
SCOPE = "https://api.ebay.com/oauth/api_scope/sell.inventory"


class EbayClient(OAuthClient):
    """eBay Sell Inventory API client.

    Args:
        base_url: ``https://api.ebay.com`` (or the simulator).
        client_id: the app's client id.
        client_secret: the app's client secret (never shown).
        refresh_token: the seller's refresh token (never shown).
        **options: passed to :class:`~commerce_sync.channels.base.HttpClient`.
    """

    channel = "ebay"
    token_margin = 120.0
    requests_per_period = (50.0, 1.0)  # well under eBay's per-app call limits, smooths bursts

    def __init__(self, base_url: str, client_id: str, client_secret: str, refresh_token: str, **options: Any) -> None:
        super().__init__(base_url, **options)
        self.client_id = client_id
        self.__secret = client_secret
        self.__refresh_token = refresh_token
        self.session.headers["Accept"] = "application/json"

    @classmethod
    def from_connection(cls, info: ConnectionInfo, **options: Any) -> EbayClient:
        """A client from an Airflow connection: host = API base URL, login/password = client id/secret,
        ``extra.refresh_token`` = the seller's refresh token."""
        refresh = info.extra.get("refresh_token")
        if not info.login or not info.password or not refresh:
            raise ConfigError(
                f"connection {info.conn_id!r} needs login (eBay client id), password (client secret) and "
                "extra.refresh_token (the seller's OAuth refresh token)"
            )
        return cls(info.base_url(), info.login, info.password, str(refresh), **options)

    def __repr__(self) -> str:
        return f"EbayClient(base_url={self.base_url!r}, client_id={self.client_id!r})"

    def _request_token(self) -> requests.Response:
        return self.request(
            "POST",
            "/identity/v1/oauth2/token",
            body=urlencode(
                {"grant_type": "refresh_token", "refresh_token": self.__refresh_token, "scope": SCOPE}
            ).encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            auth=(self.client_id, self.__secret),
            authenticate=False,
        )

    def bulk_update(self, requests_: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``bulkUpdatePriceQuantity`` for at most 25 SKUs; returns the per-item responses."""
        if not 1 <= len(requests_) <= MAX_ITEMS_PER_CALL:
            raise ValueError(f"eBay takes 1..{MAX_ITEMS_PER_CALL} items per call, got {len(requests_)}")
        response = self.request("POST", BULK_PATH, json_body={"requests": requests_})
        responses: list[dict[str, Any]] = response.json().get("responses") or []
        return responses

    def list_offers(self, page_size: int = 200) -> Iterator[dict[str, Any]]:
        """Every offer (the simulator pages ``GET /offer``; production reads it per SKU)."""
        offset = 0
        while True:
            page = self.request("GET", "/sell/inventory/v1/offer", params={"offset": offset, "limit": page_size}).json()
            offers = page.get("offers") or []
            yield from offers
            offset += len(offers)
            if not offers or offset >= int(page.get("total") or 0):
                return


def read_offers(client: EbayClient) -> Iterator[ChannelOffer]:
    """The seller's offers as the reconciliation compares them."""
    for offer in client.list_offers():
        price = ((offer.get("pricingSummary") or {}).get("price")) or {}
        value = price.get("value")
        quantity = offer.get("availableQuantity")
        yield ChannelOffer(
            str(offer.get("sku")),
            Decimal(str(value)) if value is not None else None,
            price.get("currency"),
            int(quantity) if quantity is not None else None,
        )


def sync_listings(dsn: str, channel_id: str, client: EbayClient, transfer: ledger.Transfer) -> int:
    """Learn the eBay offer id of each SKU into ``hub.channel_listing`` (upsert; vanished offers removed)."""
    pairs = {str(o["sku"]): str(o["offerId"]) for o in client.list_offers() if o.get("sku") and o.get("offerId")}
    with connect(dsn) as conn:
        conn.execute(
            "DELETE FROM hub.channel_listing WHERE channel = %s AND NOT (sku = ANY(%s))", (channel_id, list(pairs))
        )
        changed = conn.execute(
            "INSERT INTO hub.channel_listing (channel, sku, offer_id, transfer_id) "
            "SELECT %s, s, o, %s FROM unnest(%s::text[], %s::text[]) AS v(s, o) "
            "ON CONFLICT (channel, sku) DO UPDATE SET offer_id = excluded.offer_id, updated_at = now(), "
            "transfer_id = excluded.transfer_id WHERE hub.channel_listing.offer_id IS DISTINCT FROM excluded.offer_id",
            (channel_id, transfer.transfer_id, list(pairs), list(pairs.values())),
        ).rowcount
        transfer.rows_read = transfer.rows_written = len(pairs)
        transfer.rows_changed = changed
        ledger.append(conn, transfer, "success")
    return len(pairs)


@dataclass
class PublishResult:
    """What one publish run did."""

    claimed: int = 0
    sent: int = 0
    failed: int = 0
    superseded: int = 0
    quarantined: int = 0
    calls: int = 0
    rejected_skus: list[str] = field(default_factory=list)


@dataclass
class _Row:
    id: int
    sku: str
    field: str
    payload: dict[str, Any]
    offer_id: str | None
    problem: str | None = None


def _plan(conn: Any, channel_id: str, currencies: Iterable[str] | None) -> tuple[list[_Row], list[Any]]:
    rows = conn.execute(
        "SELECT o.id, o.sku, o.field, o.payload, l.offer_id, co.floor_price, co.currency "
        "FROM hub.outbox o LEFT JOIN hub.channel_listing l ON l.channel = o.channel AND l.sku = o.sku "
        "LEFT JOIN hub.channel_offer co ON co.channel = o.channel AND co.sku = o.sku "
        "WHERE o.channel = %s AND o.status = 'pending' ORDER BY o.sku, o.id",
        (channel_id,),
    ).fetchall()
    planned: list[_Row] = []
    rejections: list[Any] = []
    for row_id, sku, field_name, payload, offer_id, floor_price, offer_currency in rows:
        row = _Row(row_id, sku, field_name, payload if isinstance(payload, dict) else {}, offer_id)
        if field_name == "price":
            problems = prepublish.check_price_change(
                channel_id,
                sku,
                amount=row.payload.get("amount"),
                currency=row.payload.get("currency"),
                floor_price=floor_price,
                offer_currency=offer_currency,
                currencies=currencies,
            )
            if problems:
                rejections.extend(problems)
                row.problem = prepublish.refusal(problems)
        elif not isinstance(row.payload.get("value"), int) or row.payload["value"] < 0:
            row.problem = f"quantity payload {row.payload} needs a non-negative integer value"
        if row.problem is None and offer_id is None:
            row.problem = f"no eBay offer for SKU {sku}; run sync_listings / create the offer on eBay"
        planned.append(row)
    return planned, rejections


def _item(sku: str, rows: list[_Row]) -> dict[str, Any]:
    offer: dict[str, Any] = {"offerId": rows[0].offer_id}
    item: dict[str, Any] = {"sku": sku, "offers": [offer]}
    for row in rows:
        if row.field == "price":
            amount = Decimal(str(row.payload["amount"])).quantize(Decimal("0.01"))
            offer["price"] = {"value": str(amount), "currency": row.payload["currency"]}
        else:
            offer["availableQuantity"] = row.payload["value"]
            item["shipToLocationAvailability"] = {"quantity": row.payload["value"]}
    return item


def publish_outbox(
    dsn: str,
    channel_id: str,
    client: EbayClient,
    transfer: ledger.Transfer,
    batch_size: int = MAX_ITEMS_PER_CALL,
    currencies: Iterable[str] | None = None,
) -> PublishResult:
    """Send the channel's pending outbox rows as ``bulkUpdatePriceQuantity`` calls of ≤ 25 SKUs.

    Per SKU, the newest pending price and quantity rows travel in one item. Each call's rows are
    locked (``FOR UPDATE SKIP LOCKED``), sent and updated with eBay's per-item answer in one
    transaction. Rows failing the pre-publish check are quarantined and marked failed.

    Raises:
        TransientError: eBay is unreachable, throttling beyond the retries, or the breaker is open
            (unsent rows stay pending and go out with the next run).
    """
    batch_size = max(1, min(batch_size, MAX_ITEMS_PER_CALL))
    result = PublishResult()
    digest = hashlib.sha256()

    def account() -> None:
        transfer.rows_read = result.claimed
        transfer.rows_written = transfer.rows_changed = result.sent
        transfer.rows_rejected = result.failed
        transfer.payload_sha256 = digest.hexdigest() if result.calls else None
        transfer.details = {**transfer.details, **{k: v for k, v in asdict(result).items() if k != "rejected_skus"}}
        transfer.details["rejected_skus"] = result.rejected_skus[:100]

    with connect(dsn) as conn:
        with conn.transaction():
            result.superseded = outbox.supersede(conn, channel_id)
            planned, rejections = _plan(conn, channel_id, currencies)
        bad = [row for row in planned if row.problem is not None]
        if bad:
            with conn.transaction():
                locked = outbox.lock_pending(conn, [row.id for row in bad])
                refused: list[tuple[int, str, Any, str | None]] = [
                    (r.id, "failed", None, r.problem) for r in bad if r.id in locked
                ]
                outbox.record_outcomes(conn, refused, None, transfer.transfer_id)
                result.quarantined += prepublish.quarantine_rejections(
                    conn, channel_id, transfer.transfer_id, rejections
                )
                result.claimed += len(refused)
                result.failed += len(refused)
                result.rejected_skus += sorted({r.sku for r in bad if r.id in locked})
        by_sku: dict[str, list[_Row]] = {}
        for row in planned:
            if row.problem is None:
                by_sku.setdefault(row.sku, []).append(row)
        skus = sorted(by_sku)
        for start in range(0, len(skus), batch_size):
            chunk = skus[start : start + batch_size]
            with conn.transaction():
                locked = outbox.lock_pending(conn, [row.id for sku in chunk for row in by_sku[sku]])
                items = {sku: [r for r in by_sku[sku] if r.id in locked] for sku in chunk}
                items = {sku: rows for sku, rows in items.items() if rows}
                if not items:
                    continue
                requests_ = [_item(sku, rows) for sku, rows in items.items()]
                body = encode_json({"requests": requests_})
                digest.update(body)
                result.claimed += sum(len(rows) for rows in items.values())
                answers = {str(a.get("sku")): a for a in client.bulk_update(requests_)}
                result.calls += 1
                outcomes: list[tuple[int, str, Any, str | None]] = []
                for sku, rows in items.items():
                    answer = answers.get(sku)
                    if answer is not None and answer.get("statusCode") == 200:
                        outcomes += [(r.id, "sent", answer, None) for r in rows]
                        result.sent += len(rows)
                        continue
                    errors = (answer or {}).get("errors") or [{"message": "eBay returned no answer for this SKU"}]
                    text = "; ".join(f"{e.get('errorId', '')} {e.get('message', '')}".strip() for e in errors)
                    outcomes += [(r.id, "failed", answer, f"SKU {sku} (offer {r.offer_id}): {text}") for r in rows]
                    result.failed += len(rows)
                    result.rejected_skus.append(sku)
                outbox.record_outcomes(conn, outcomes, None, transfer.transfer_id)
                outbox.mark_published(conn, channel_id, sorted(items))
            account()
    account()
    log.info(
        "ebay %s: %d calls, %d rows sent, %d failed, %d superseded, %d quarantined",
        channel_id,
        result.calls,
        result.sent,
        result.failed,
        result.superseded,
        result.quarantined,
    )
    return result
