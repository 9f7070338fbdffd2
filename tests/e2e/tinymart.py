"""A fourth marketplace kind that exists only in the tests: a tiny API, its loopback simulator, its registration.

It proves that a marketplace is one module plus one registration: nothing in the product package
knows ``tinymart``. The DAG runner's child process imports this module through
``COMMERCE_SYNC_CHANNEL_MODULES=tests.e2e.tinymart``, which registers the kind.

The API (as the simulator in ``test_fourth_marketplace.py`` speaks it):

- ``POST /v1/offers/batch`` ``{"items": [{"sku", "price": {"amount", "currency"}?, "quantity"?}]}`` with at
  most 10 items; answers ``{"results": [{"sku", "status": "OK" | "ERROR", "message"?}]}`` per item; a SKU
  the seller has not listed is an ERROR;
- ``GET /v1/offers?cursor=N`` pages of 50 ``{"sku", "price", "currency", "quantity"}``, ``next`` cursor or null;
- every call needs ``Authorization: Bearer <api key>`` (the connection's password).
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from commerce_sync import registry
from commerce_sync.channels.marketplace import Item, Marketplace, Outcome, Request
from commerce_sync.channels.reconcile import ChannelOffer
from commerce_sync.connections import ConnectionInfo
from commerce_sync.errors import ConfigError
from commerce_sync.transport.http import HttpClient

MAX_ITEMS = 10


class TinymartClient(HttpClient):
    channel = "tinymart"

    def __init__(self, base_url: str, api_key: str, **options: Any) -> None:
        super().__init__(base_url, **options)
        self.__api_key = api_key

    def _auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.__api_key}"}

    def update(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = self.request("POST", "/v1/offers/batch", json_body={"items": items}).json()[
            "results"
        ]
        return results

    def offers(self) -> Iterator[dict[str, Any]]:
        cursor: int | None = 0
        while cursor is not None:
            page = self.request("GET", "/v1/offers", params={"cursor": cursor}).json()
            yield from page["offers"]
            cursor = page["next"]


class Tinymart(Marketplace):
    kind = "tinymart"
    title = "Tinymart"
    max_items_per_request = MAX_ITEMS
    needs_offer_id = False
    client: TinymartClient

    @classmethod
    def from_connection(cls, info: ConnectionInfo) -> Tinymart:
        if not info.password:
            raise ConfigError(f"connection {info.conn_id!r} needs password (the Tinymart API key)")
        return cls(TinymartClient(info.base_url(), info.password))

    def build(self, items: list[Item]) -> Request:
        by_sku: dict[str, dict[str, Any]] = {}
        for item in items:
            entry = by_sku.setdefault(item.sku, {"sku": item.sku})
            if item.field == "price":
                entry["price"] = {"amount": str(item.amount), "currency": item.currency}
            else:
                entry["quantity"] = item.quantity
        return Request(items, {"items": list(by_sku.values())})

    def send(self, request: Request) -> list[dict[str, Any]]:
        return self.client.update(request.body["items"])

    def collect(self, request: Request, sent: list[dict[str, Any]]) -> list[Outcome]:
        results = {result["sku"]: result for result in sent}
        return [
            Outcome(item.id, "sent", results[item.sku])
            if results.get(item.sku, {}).get("status") == "OK"
            else Outcome(item.id, "failed", results.get(item.sku), f"SKU {item.sku}: {results.get(item.sku)}")
            for item in request.items
        ]

    def read_offers(self, skus: list[str] | None) -> Iterator[ChannelOffer]:
        for offer in self.client.offers():
            yield ChannelOffer(offer["sku"], Decimal(offer["price"]), offer["currency"], offer["quantity"])


def register() -> None:
    registry.register(
        registry.ChannelKind(
            name="tinymart",
            family="marketplace",
            title="Tinymart",
            capabilities=frozenset({"publish", "read_back"}),
            outbox_fields=("price", "quantity"),
            marketplace=Tinymart.from_connection,
            needs_connection=True,
            asset=registry.fixed_asset("HUB_OUTBOX"),  # a test kind: no public endpoint to name
        )
    )


register()
