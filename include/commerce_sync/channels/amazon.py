"""Amazon SP-API: Login-with-Amazon tokens, the Feeds API, a ``JSON_LISTINGS_FEED`` outbox publisher and
the Listings Items API read-back for reconciliation.

A publish run claims the channel's pending outbox rows, builds one feed (≤ 25,000 messages, one
``PATCH`` message per SKU carrying ``/attributes/purchasable_offer`` and/or
``/attributes/fulfillment_availability``; ``messageId`` ↔ outbox rows), then
``createFeedDocument`` → upload → ``createFeed`` → poll ``getFeed`` → ``getFeedDocument`` → read the
processing report. Messages named in the report's ERROR issues fail with Amazon's text, per SKU; the
rest are sent. ``createFeed`` is limited to 5 submissions per 5 minutes (token bucket). Values are
absolute, so a feed re-submitted after a crash or a lost answer has no second effect.

Read-back (:func:`read_offers`): ``searchListingsItems`` (Listings Items API 2021-08-01) with
``includedData=summaries,offers,fulfillmentAvailability``, 20 per page, 5 requests/s with a burst of 5.
Amazon pages through at most 1,000 results of a search, so a seller's whole catalog cannot be read by
paging once it is larger: the reconciliation reads the SKUs the hub published, 20 per request
(``identifiersType=SKU``); SKUs containing a comma (which SP-API cannot tell from a separator) are read
one by one with ``getListingsItem``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import requests

from commerce_sync import registry
from commerce_sync.channels.marketplace import Item, Marketplace, Outcome, Request
from commerce_sync.channels.reconcile import ChannelOffer
from commerce_sync.connections import ConnectionInfo
from commerce_sync.errors import ChannelError, ConfigError, TransientError
from commerce_sync.transport.http import ChannelRequestError, OAuthClient, TokenBucket

log = logging.getLogger(__name__)

API = "/feeds/2021-06-30"
LISTINGS_API = "/listings/2021-08-01"
MAX_MESSAGES = 25_000
FEED_SUBMISSIONS = (5.0, 300.0)  # createFeed: 5 per 5 minutes
LISTINGS_SEARCHES = (5.0, 1.0, 5.0)  # searchListingsItems: 5 requests/s, burst 5
LISTINGS_GETS = (5.0, 1.0, 10.0)  # getListingsItem: 5 requests/s, burst 10
MAX_PAGE_SIZE = 20  # searchListingsItems pageSize and identifiers per request
MAX_SEARCH_RESULTS = 1000  # searchListingsItems pages through at most this many results
INCLUDED_DATA = "summaries,offers,fulfillmentAvailability"
SCHEMA = Path(__file__).resolve().parents[3] / ".." / "shared" / "contracts" / "amazon" / "listings-feed-schema-v2.json"


class AmazonClient(OAuthClient):
    """SP-API client (Feeds API) with an LWA access token from a refresh token.

    Args:
        base_url: the regional SP-API endpoint (``https://sellingpartnerapi-eu.amazon.com``) or the simulator.
        client_id: LWA client id.
        client_secret: LWA client secret (never shown).
        refresh_token: the seller's LWA refresh token (never shown).
        token_url: LWA endpoint (``https://api.amazon.com/auth/o2/token``; default: on ``base_url``).
        seller_id: the selling partner id (needed by the Listings Items API).
        marketplace_id: the marketplace the channel sells in (``A1C3SOZRARQ6R3`` = Amazon.pl).
        **options: passed to :class:`~commerce_sync.transport.http.HttpClient`.
    """

    channel = "amazon"
    auth_failure_statuses = frozenset({401, 403})  # SP-API answers an expired or revoked token with 403
    auth_header = "x-amz-access-token"
    auth_scheme = ""
    token_margin = 120.0

    def __init__(
        self,
        base_url: str,
        client_id: str,
        client_secret: str,
        refresh_token: str,
        token_url: str | None = None,
        seller_id: str | None = None,
        marketplace_id: str | None = None,
        product_type: str = "PRODUCT",
        conn_id: str | None = None,
        **options: Any,
    ) -> None:
        super().__init__(base_url, **options)
        self.client_id = client_id
        self.seller_id = seller_id
        self.marketplace_id = marketplace_id
        self.product_type = product_type
        self.conn_id = conn_id
        self.__secret = client_secret
        self.__refresh_token = refresh_token
        self.token_url = token_url or self.base_url + "/auth/o2/token"
        self.feed_bucket = TokenBucket(*FEED_SUBMISSIONS, sleep=self._sleep)
        self.search_bucket = TokenBucket(*LISTINGS_SEARCHES, sleep=self._sleep)
        self.get_bucket = TokenBucket(*LISTINGS_GETS, sleep=self._sleep)
        self.session.headers["Accept"] = "application/json"

    def _sleep(self, seconds: float) -> None:
        self.sleep(seconds)

    @classmethod
    def from_connection(cls, info: ConnectionInfo, **options: Any) -> AmazonClient:
        """From an Airflow connection: host = SP-API endpoint, login/password = LWA client id/secret,
        ``extra.refresh_token``, optional ``extra.token_url``, ``extra.seller_id``, ``extra.marketplace_id``
        and ``extra.product_type`` (default ``PRODUCT``)."""
        refresh = info.extra.get("refresh_token")
        if not info.login or not info.password or not refresh:
            raise ConfigError(
                f"connection {info.conn_id!r} needs login (LWA client id), password (LWA client secret) and "
                "extra.refresh_token"
            )
        seller_id = info.extra.get("seller_id")
        marketplace_id = info.extra.get("marketplace_id")
        return cls(
            info.base_url(),
            info.login,
            info.password,
            str(refresh),
            info.extra.get("token_url"),
            seller_id=str(seller_id) if seller_id else None,
            marketplace_id=str(marketplace_id) if marketplace_id else None,
            product_type=str(info.extra.get("product_type") or "PRODUCT"),
            conn_id=info.conn_id,
            **options,
        )

    def __repr__(self) -> str:
        return f"AmazonClient(base_url={self.base_url!r}, client_id={self.client_id!r})"

    def _request_token(self) -> requests.Response:
        form = {
            "grant_type": "refresh_token",
            "refresh_token": self.__refresh_token,
            "client_id": self.client_id,
            "client_secret": self.__secret,
        }
        return self.request(
            "POST",
            self.token_url,
            body=urlencode(form).encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            authenticate=False,
        )

    def submit_feed(self, document: Mapping[str, Any], marketplace_ids: list[str]) -> str:
        """createFeedDocument → upload → createFeed (rate-limited); returns the feed id."""
        created = self.request(
            "POST", f"{API}/documents", json_body={"contentType": "application/json; charset=UTF-8"}
        ).json()
        data = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        self.request(
            "PUT",
            created["url"],
            body=data,
            headers={"Content-Type": "application/json; charset=UTF-8"},
            authenticate=False,
        )
        self.feed_bucket.acquire()
        answer = self.request(
            "POST",
            f"{API}/feeds",
            json_body={
                "feedType": "JSON_LISTINGS_FEED",
                "marketplaceIds": marketplace_ids,
                "inputFeedDocumentId": created["feedDocumentId"],
            },
        ).json()
        return str(answer["feedId"])

    def wait_for_feed(self, feed_id: str, timeout: float = 600.0) -> dict[str, Any]:
        """Poll getFeed until DONE; raise on CANCELLED/FATAL or after ``timeout``."""
        deadline = time.monotonic() + timeout
        delay = 1.0
        while True:
            feed: dict[str, Any] = self.request("GET", f"{API}/feeds/{feed_id}").json()
            status = feed.get("processingStatus")
            if status == "DONE":
                return feed
            if status in ("CANCELLED", "FATAL"):
                raise ChannelError(f"amazon: feed {feed_id} ended {status}; its processing report may say why")
            if time.monotonic() + delay > deadline:
                raise TransientError(f"amazon: feed {feed_id} still {status} after {timeout:.0f}s; rows stay pending")
            self.sleep(delay)
            delay = min(delay * 2, 30.0)

    def report(self, feed: Mapping[str, Any]) -> dict[str, Any]:
        """The processing report of a DONE feed (getFeedDocument, then download)."""
        document = self.request("GET", f"{API}/documents/{feed['resultFeedDocumentId']}").json()
        report: dict[str, Any] = self.request("GET", document["url"], authenticate=False).json()
        return report

    def account(self) -> tuple[str, str]:
        """(seller id, marketplace id): the Listings Items API and the listings feed need both.

        Raises:
            ConfigError: the connection does not give them.
        """
        if not self.seller_id or not self.marketplace_id:
            raise ConfigError(
                f"amazon: connection {self.conn_id or '(unnamed)'!r} needs extra.seller_id and "
                "extra.marketplace_id (the selling partner id and the marketplace, e.g. A1C3SOZRARQ6R3 for Amazon.pl)"
            )
        return self.seller_id, self.marketplace_id

    def _search(self, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        seller_id, marketplace_id = self.account()
        query = {"marketplaceIds": marketplace_id, "includedData": INCLUDED_DATA, "pageSize": MAX_PAGE_SIZE, **params}
        token: str | None = None
        while True:
            self.search_bucket.acquire()
            page: dict[str, Any] = self.request(
                "GET",
                f"{LISTINGS_API}/items/{quote(seller_id, safe='')}",
                params={**query, "pageToken": token} if token else query,
            ).json()
            if token is None and "identifiers" not in params:
                found = int(page.get("numberOfResults") or 0)
                if found > MAX_SEARCH_RESULTS:
                    raise ChannelError(
                        f"amazon: the seller has {found} listings in {marketplace_id}; searchListingsItems pages "
                        f"through at most {MAX_SEARCH_RESULTS}: read them by SKU (list_listings(skus=...))"
                    )
            yield from page.get("items") or []
            token = (page.get("pagination") or {}).get("nextToken")
            if not token:
                return

    def list_listings(self, skus: Iterable[str] | None = None) -> Iterator[dict[str, Any]]:
        """The seller's listings in the connection's marketplace (searchListingsItems, 20 per request).

        Args:
            skus: read only these SKUs, 20 per request; a SKU that has no listing is simply absent. Without
                it every listing is paged through, sorted by SKU (a ``lastUpdatedDate`` order would move
                listings edited while we page); more than 1,000 listings then raise :class:`ChannelError`.
        """
        if skus is None:
            yield from self._search({"sortBy": "sku", "sortOrder": "ASC"})
            return
        batch: list[str] = []
        for sku in skus:
            if "," in sku:  # SP-API cannot tell a comma in a SKU from a separator
                found = self.get_listing(sku)
                if found is not None:
                    yield found
                continue
            batch.append(sku)
            if len(batch) == MAX_PAGE_SIZE:
                yield from self._search({"identifiers": ",".join(batch), "identifiersType": "SKU"})
                batch = []
        if batch:
            yield from self._search({"identifiers": ",".join(batch), "identifiersType": "SKU"})

    def get_listing(self, sku: str) -> dict[str, Any] | None:
        """One listing (getListingsItem), or None if the SKU has none in the marketplace."""
        seller_id, marketplace_id = self.account()
        self.get_bucket.acquire()
        try:
            item: dict[str, Any] = self.request(
                "GET",
                f"{LISTINGS_API}/items/{quote(seller_id, safe='')}/{quote(sku, safe='')}",
                params={"marketplaceIds": marketplace_id, "includedData": INCLUDED_DATA},
            ).json()
        except ChannelRequestError as error:
            if error.status == 404:
                return None
            raise
        return item


def offer_of(item: Mapping[str, Any], marketplace_id: str | None = None) -> ChannelOffer:
    """What a Listings Items API item shows: the B2C offer's price and the merchant-fulfilled quantity.

    Business (B2B) prices and Amazon-fulfilled (AFN) stock are not what the hub publishes and are ignored.
    """
    price: Decimal | None = None
    currency: str | None = None
    for offer in item.get("offers") or []:
        if offer.get("offerType") != "B2C":
            continue
        if marketplace_id and offer.get("marketplaceId") not in (None, marketplace_id):
            continue
        money = offer.get("price") or {}
        if money.get("amount") is not None:
            price = Decimal(str(money["amount"]))
            currency = money.get("currencyCode")
            break
    quantity: int | None = None
    for availability in item.get("fulfillmentAvailability") or []:
        if availability.get("fulfillmentChannelCode") == "DEFAULT" and availability.get("quantity") is not None:
            quantity = int(availability["quantity"])
            break
    return ChannelOffer(str(item.get("sku")), price, currency, quantity)


def listings_feed(seller_id: str, messages: list[dict[str, Any]]) -> dict[str, Any]:
    """A JSON_LISTINGS_FEED document (schema v2)."""
    return {"header": {"sellerId": seller_id, "version": "2.0", "issueLocale": "en_US"}, "messages": messages}


def validate_feed(document: Mapping[str, Any], schema_path: Path = SCHEMA) -> None:
    """Validate against Amazon's published listings feed schema (raises ``jsonschema.ValidationError``)."""
    import jsonschema

    schema = json.loads(schema_path.read_text(encoding="utf-8"))
    jsonschema.validate(document, schema)


def _message(message_id: int, sku: str, product_type: str, marketplace: str, rows: list[Item]) -> dict[str, Any]:
    patches: list[dict[str, Any]] = []
    for row in rows:
        value: dict[str, Any]
        if row.field == "price":
            value = {
                "marketplace_id": marketplace,
                "currency": row.currency,
                "our_price": [{"schedule": [{"value_with_tax": float(row.amount)}]}],
            }
            patches.append({"op": "replace", "path": "/attributes/purchasable_offer", "value": [value]})
        else:
            value = {"fulfillment_channel_code": "DEFAULT", "quantity": row.quantity}
            patches.append({"op": "replace", "path": "/attributes/fulfillment_availability", "value": [value]})
    return {
        "messageId": message_id,
        "sku": sku,
        "operationType": "PATCH",
        "productType": product_type,
        "patches": patches,
    }


class AmazonMarketplace(Marketplace):
    """Amazon as the publisher sees it: one ``JSON_LISTINGS_FEED`` of up to 25,000 PATCH messages per request.

    Listings are addressed by our SKU (no offer id to learn). A feed is processed asynchronously:
    ``createFeedDocument`` → upload → ``createFeed`` (5 per 5 minutes) → poll ``getFeed`` → processing
    report, whose ERROR issues name the failed messages; a message id maps back to a SKU's rows.
    Read-back asks the Listings Items API for the SKUs the hub published, 20 per request, because a
    search pages through at most 1,000 results.
    """

    kind = "amazon"
    title = "Amazon"
    max_items_per_request = MAX_MESSAGES
    needs_offer_id = False
    reads_back_by_sku = True
    request_noun = "feed"
    client: AmazonClient

    def __init__(self, client: AmazonClient, poll_timeout: float = 600.0) -> None:
        super().__init__(client)
        self.poll_timeout = poll_timeout

    @classmethod
    def from_connection(cls, info: ConnectionInfo) -> AmazonMarketplace:
        return cls(AmazonClient.from_connection(info))

    def prepare(self) -> None:
        self.client.account()  # fails early, naming the connection, when the ids are missing

    def build(self, items: list[Item]) -> Request:
        seller_id, marketplace_id = self.client.account()
        by_sku: dict[str, list[Item]] = {}
        for item in items:
            by_sku.setdefault(item.sku, []).append(item)
        skus = sorted(by_sku)
        messages = [
            _message(number, sku, self.client.product_type, marketplace_id, by_sku[sku])
            for number, sku in enumerate(skus, 1)
        ]
        return Request(items, listings_feed(seller_id, messages), context={"skus": skus})

    def send(self, request: Request) -> str:
        _, marketplace_id = self.client.account()
        feed_id = self.client.submit_feed(request.body, [marketplace_id])
        request.request_id = feed_id
        return feed_id

    def collect(self, request: Request, sent: str) -> list[Outcome]:
        feed_id = sent
        report = self.client.report(self.client.wait_for_feed(feed_id, timeout=self.poll_timeout))
        errors: dict[int, list[str]] = {}
        for issue in report.get("issues") or []:
            if issue.get("severity") == "ERROR":
                errors.setdefault(int(issue.get("messageId") or 0), []).append(
                    f"{issue.get('code')}: {issue.get('message')}"
                )
        number_of = {sku: number for number, sku in enumerate(request.context["skus"], 1)}
        outcomes: list[Outcome] = []
        for item in request.items:
            number = number_of[item.sku]
            problem = errors.get(number) or errors.get(0)
            if problem:
                error = f"SKU {item.sku}: {'; '.join(problem)}"
                outcomes.append(Outcome(item.id, "failed", {"feedId": feed_id}, error))
            else:
                outcomes.append(Outcome(item.id, "sent", {"feedId": feed_id, "messageId": number}))
        return outcomes

    def read_offers(self, skus: list[str] | None) -> Iterator[ChannelOffer]:
        """The seller's offers as the reconciliation compares them (all listings, or only ``skus``)."""
        for item in self.client.list_listings(skus):
            yield offer_of(item, self.client.marketplace_id)


registry.register(
    registry.ChannelKind(
        name="amazon",
        family="marketplace",
        title="Amazon",
        capabilities=frozenset({"publish", "read_back"}),
        outbox_fields=("price", "quantity"),
        marketplace=AmazonMarketplace.from_connection,
        needs_connection=True,
        asset=registry.fixed_asset("AMAZON_LISTINGS"),
        pool="amazon_api",
        pool_slots=1,
        rate_limit="createFeed 5 per 5 min per region; each task's bucket allows 5 per 5 min: 1 x 5",
    )
)
