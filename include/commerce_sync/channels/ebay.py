"""eBay: the Inventory API client and the publisher that drains ``hub.outbox`` into bulk updates.

``POST /sell/inventory/v1/bulk_update_price_quantity`` takes at most 25 SKUs per call and answers
per item (200, or 207 with per-item errors). Updates set absolute values, so a re-sent batch (after
a crash between eBay's answer and our commit, or a dropped answer) changes nothing on eBay: the
outbox row's idempotency key is reflected in what we send, and applying it twice has one effect.
The OAuth user token comes from the refresh-token grant (connection ``extra.refresh_token``), is
refreshed before it expires or after a 401, and never appears in repr, logs, XCom or the ledger.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import requests

from commerce_sync import registry
from commerce_sync.channels.marketplace import Item, Marketplace, Outcome, Request
from commerce_sync.channels.reconcile import ChannelOffer
from commerce_sync.connections import ConnectionInfo
from commerce_sync.errors import ConfigError
from commerce_sync.transport.http import OAuthClient

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
        **options: passed to :class:`~commerce_sync.transport.http.HttpClient`.
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


class EbayMarketplace(Marketplace):
    """eBay as the publisher sees it: ``bulkUpdatePriceQuantity`` calls of at most 25 SKUs.

    A SKU's newest pending price and quantity travel in one item, and eBay answers per item in the
    same response (synchronous), so outcomes are read from the call's own answer.
    """

    kind = "ebay"
    title = "eBay"
    max_items_per_request = MAX_ITEMS_PER_CALL
    client: EbayClient

    @classmethod
    def from_connection(cls, info: ConnectionInfo) -> EbayMarketplace:
        return cls(EbayClient.from_connection(info))

    def build(self, items: list[Item]) -> Request:
        by_sku: dict[str, list[Item]] = {}
        for item in items:
            by_sku.setdefault(item.sku, []).append(item)
        return Request(items, {"requests": [_item(sku, rows) for sku, rows in by_sku.items()]})

    def send(self, request: Request) -> list[dict[str, Any]]:
        return self.client.bulk_update(request.body["requests"])

    def collect(self, request: Request, sent: list[dict[str, Any]]) -> list[Outcome]:
        answers = {str(answer.get("sku")): answer for answer in sent}
        outcomes: list[Outcome] = []
        for item in request.items:
            answer = answers.get(item.sku)
            if answer is not None and answer.get("statusCode") == 200:
                outcomes.append(Outcome(item.id, "sent", answer))
                continue
            errors = (answer or {}).get("errors") or [{"message": "eBay returned no answer for this SKU"}]
            text = "; ".join(f"{e.get('errorId', '')} {e.get('message', '')}".strip() for e in errors)
            outcomes.append(Outcome(item.id, "failed", answer, f"SKU {item.sku} (offer {item.offer_id}): {text}"))
        return outcomes

    def listings(self) -> Iterator[tuple[str | None, str | None]]:
        for offer in self.client.list_offers():
            sku, offer_id = offer.get("sku"), offer.get("offerId")
            yield (str(sku) if sku else None), (str(offer_id) if offer_id else None)

    def read_offers(self, skus: list[str] | None) -> Iterator[ChannelOffer]:
        """The seller's offers as the reconciliation compares them."""
        for offer in self.client.list_offers():
            price = ((offer.get("pricingSummary") or {}).get("price")) or {}
            value = price.get("value")
            quantity = offer.get("availableQuantity")
            yield ChannelOffer(
                str(offer.get("sku")),
                Decimal(str(value)) if value is not None else None,
                price.get("currency"),
                int(quantity) if quantity is not None else None,
            )


def _item(sku: str, rows: list[Item]) -> dict[str, Any]:
    offer: dict[str, Any] = {"offerId": rows[0].offer_id}
    item: dict[str, Any] = {"sku": sku, "offers": [offer]}
    for row in rows:
        if row.field == "price":
            offer["price"] = {"value": str(row.amount), "currency": row.currency}
        else:
            offer["availableQuantity"] = row.quantity
            item["shipToLocationAvailability"] = {"quantity": row.quantity}
    return item


registry.register(
    registry.ChannelKind(
        name="ebay",
        family="marketplace",
        title="eBay",
        capabilities=frozenset({"publish", "read_back"}),
        outbox_fields=("price", "quantity"),
        marketplace=EbayMarketplace.from_connection,
        needs_connection=True,
        asset=registry.fixed_asset("EBAY_OFFERS"),
        pool="ebay_api",
        pool_slots=2,
        rate_limit="daily call quotas per app; each task's bucket allows 50 requests/s: 2 x 50/s = 100/s",
    )
)
