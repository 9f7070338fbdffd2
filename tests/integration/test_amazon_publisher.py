"""Amazon SP-API client, JSON_LISTINGS_FEED publisher and Listings Items read-back (reconciliation) against the
sandbox simulator and a real hub."""

from __future__ import annotations

import csv
import json
import logging
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests

from commerce_sync.audit import ledger
from commerce_sync.channels import amazon
from commerce_sync.channels.marketplace import Item, PublishResult, publish_outbox
from commerce_sync.channels.publish import publish_channel, reconcile_channel
from commerce_sync.config import Channel
from commerce_sync.connections import ConnectionInfo
from commerce_sync.errors import ChannelError, ConfigError
from commerce_sync.transport.http import ChannelRequestError, TokenBucket
from commerce_sync_sandbox.amazon_sim import AmazonSimulator, SpApiError
from commerce_sync_sandbox.server import SandboxServer
from tests.unit.test_channel_base import FakeClock

pytestmark = pytest.mark.integration

CHANNEL = "amazon"
N = 12
SKUS = [f"SKU-{i:06d}" for i in range(1, N + 1)]
SETUP = uuid.uuid4()
SELLER = "A2SANDBOXSELLER"
MARKETPLACE = "A1C3SOZRARQ6R3"  # Amazon.pl


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[SandboxServer]:
    with SandboxServer(tmp_path / "feeds", tmp_path / "allegro.json", catalog_n=N) as server:
        yield server


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


CONNECTION = {
    "conn_type": "http",
    "login": "amzn1.application-oa2-client.sandbox",
    "password": "demo-amazon-secret",
    "extra": {"refresh_token": "Atzr|demo-amazon-refresh-token", "seller_id": SELLER, "marketplace_id": MARKETPLACE},
}
RUN = ledger.RunContext(run_id="test", dag_id="marketplaces_to_hub_reconciliation", task_id="reconcile_offers")


def _client(url: str, clock: FakeClock, **extra: Any) -> amazon.AmazonClient:
    """A client on a fake clock: rate-limit and Retry-After waits are recorded, not slept."""
    info = ConnectionInfo(
        conn_id="amazon_sandbox",
        host=url,
        login=str(CONNECTION["login"]),
        password=str(CONNECTION["password"]),
        extra={"refresh_token": "Atzr|demo-amazon-refresh-token", **extra},
    )
    api = amazon.AmazonClient.from_connection(info)
    api.sleep = clock.sleep
    api.feed_bucket = TokenBucket(*amazon.FEED_SUBMISSIONS, clock=clock, sleep=clock.sleep)
    api.search_bucket = TokenBucket(*amazon.LISTINGS_SEARCHES, clock=clock, sleep=clock.sleep)
    api.get_bucket = TokenBucket(*amazon.LISTINGS_GETS, clock=clock, sleep=clock.sleep)
    return api


@pytest.fixture
def client(sandbox: SandboxServer, clock: FakeClock) -> Iterator[amazon.AmazonClient]:
    api = _client(sandbox.amazon_url, clock)
    yield api
    api.close()


@pytest.fixture
def reader(sandbox: SandboxServer, clock: FakeClock) -> Iterator[amazon.AmazonClient]:
    """A client that also knows the seller and the marketplace (needed by the Listings Items API)."""
    api = _client(sandbox.amazon_url, clock, seller_id=SELLER, marketplace_id=MARKETPLACE)
    yield api
    api.close()


@pytest.fixture
def connection(sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_AMAZON_SANDBOX", json.dumps({**CONNECTION, "host": sandbox.amazon_url}))


@pytest.fixture
def hub(hub_dsn: str) -> str:
    with psycopg.connect(hub_dsn) as conn:
        for sku in SKUS:
            conn.execute(
                "INSERT INTO hub.product (sku, name, purchase_price, currency, vat_rate, row_hash, transfer_id) "
                "VALUES (%s, %s, 10, 'PLN', 0.23, 'h', %s)",
                (sku, f"product {sku}", SETUP),
            )
            conn.execute(
                "INSERT INTO hub.channel_offer (channel, sku, price, currency, quantity, availability, cost, "
                "floor_price, floor_applied, rule_id, rule_version, row_hash, version, transfer_id) "
                "VALUES (%s, %s, 20, 'PLN', 1, 'in_stock', 10, 12, false, 'r', '1', 'h', 1, %s)",
                (CHANNEL, sku, SETUP),
            )
    return hub_dsn


def _queue(dsn: str, sku: str, field: str, payload: dict[str, Any], version: int = 1) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "INSERT INTO hub.outbox (channel, sku, field, payload, offer_version, idempotency_key, "
            "created_transfer_id) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (CHANNEL, sku, field, json.dumps(payload), version, f"{CHANNEL}:{sku}:{field}:v{version}", SETUP),
        )


def _publish(dsn: str, api: amazon.AmazonClient, **options: Any) -> tuple[PublishResult, ledger.Transfer]:
    api.seller_id, api.marketplace_id = SELLER, MARKETPLACE  # what the connection's extra gives the client
    transfer = ledger.Transfer(source="hub", target=f"channel:{CHANNEL}", dataset="offer_update")
    channel = Channel(id=CHANNEL, kind="amazon", conn_id="amazon_sandbox", pricing_rule="r")
    with ledger.recording(dsn, transfer):
        result = publish_outbox(dsn, channel, amazon.AmazonMarketplace(api, **options), transfer)
    return result, transfer


def test_feed_document_satisfies_amazons_published_schema() -> None:
    if not amazon.SCHEMA.exists():
        pytest.skip(f"Amazon's listings feed schema is not present at {amazon.SCHEMA} (../shared/contracts)")
    items = [
        Item(1, "SKU-1", "price", "k1", 1, {"amount": "19.99", "currency": "PLN"}, None),
        Item(2, "SKU-1", "quantity", "k2", 1, {"value": 4}, None),
    ]
    api = amazon.AmazonClient(
        "http://127.0.0.1:9", "id", "secret", "refresh", seller_id=SELLER, marketplace_id=MARKETPLACE
    )
    document = amazon.AmazonMarketplace(api).build(items).body
    amazon.validate_feed(document)
    document["messages"][0]["operationType"] = "UPSERT"
    import jsonschema

    with pytest.raises(jsonschema.ValidationError):
        amazon.validate_feed(document)


def test_publish_records_per_sku_errors_from_the_processing_report(
    hub: str, client: amazon.AmazonClient, sandbox: SandboxServer
) -> None:
    a, b, c = SKUS[:3]
    _queue(hub, a, "price", {"amount": "25.00", "currency": "PLN"})
    _queue(hub, a, "quantity", {"value": 3})
    _queue(hub, b, "price", {"amount": "26.00", "currency": "PLN"})
    _queue(hub, c, "price", {"amount": "11.00", "currency": "PLN"})  # below the floor of 12
    sandbox.amazon.faults.arm(reject={b: "The price is outside the allowed range for this product"})
    result, transfer = _publish(hub, client)
    assert len(result.request_ids) == 1
    assert (result.sent, result.failed, result.quarantined) == (2, 2, 1)
    assert sandbox.amazon.listing(a) == {"sku": a, "price": "25.00", "currency": "PLN", "quantity": 3}
    with psycopg.connect(hub) as conn:
        rows = dict(conn.execute("SELECT idempotency_key, error FROM hub.outbox WHERE status = 'failed'").fetchall())
        request_ids = {r[0] for r in conn.execute("SELECT request_id FROM hub.outbox WHERE status = 'sent'")}
    assert f"SKU {b}: 90000: The price is outside" in rows[f"{CHANNEL}:{b}:price:v1"]
    assert "below the floor" in rows[f"{CHANNEL}:{c}:price:v1"]
    assert request_ids == {result.request_ids[0]}
    assert transfer.details["rejected_skus"] == [b, c]  # refused by Amazon, and by the pre-publish check


def test_lost_answer_and_submission_rate_limit(
    hub: str, client: amazon.AmazonClient, sandbox: SandboxServer, clock: FakeClock
) -> None:
    # The createFeed answer is lost after Amazon processed it: the retry submits again, no second effect.
    _queue(hub, SKUS[0], "price", {"amount": "31.00", "currency": "PLN"})
    sandbox.amazon.faults.arm(drop_after_apply=1)
    result, _ = _publish(hub, client)
    assert result.sent == 1 and sandbox.amazon.faults.fired["drop"] == 1
    assert sandbox.amazon.stats["revisions"] == 1
    # Five more submissions use the bucket up; the sixth waits a minute (5 per 5 minutes).
    for number in range(1, 6):
        _queue(hub, SKUS[number], "quantity", {"value": number})
        _publish(hub, client)
    # Fake clock: the only wait besides the retry's jittered backoff is the bucket's, one token's worth.
    backoff = clock.slept[0]
    assert client.feed_bucket.waited == pytest.approx(60.0 - backoff)
    assert sandbox.amazon.stats["feeds"] == 7  # six runs, one of them submitted twice


# ---------------------------------------------------------------------------------------------- read-back


def test_search_pages_through_every_listing_within_the_rate_limit(tmp_path: Path, clock: FakeClock) -> None:
    with SandboxServer(tmp_path / "feeds", tmp_path / "allegro.json", catalog_n=130) as server:
        api = _client(server.amazon_url, clock, seller_id=SELLER, marketplace_id=MARKETPLACE)
        try:
            items = list(api.list_listings())
        finally:
            api.close()
        assert server.amazon.stats["searches"] == 7  # 130 listings, 20 per page
    skus = [item["sku"] for item in items]
    assert skus == sorted(skus) and len(set(skus)) == 130
    # A burst of 5, then one request per 0.2 s: the 6th and 7th page each waited for a token.
    assert api.search_bucket.waited == pytest.approx(0.4)
    assert clock.slept == pytest.approx([0.2, 0.2])
    first = items[0]
    assert first["offers"][0]["offerType"] == "B2C"
    assert first["fulfillmentAvailability"][0]["fulfillmentChannelCode"] == "DEFAULT"
    listing = server.amazon.listing(first["sku"])
    assert listing is not None
    assert amazon.offer_of(first, MARKETPLACE) == amazon.ChannelOffer(
        first["sku"], Decimal(listing["price"]), "PLN", listing["quantity"]
    )


def test_search_by_sku_reads_more_than_twenty_and_skips_unknown_skus(tmp_path: Path, clock: FakeClock) -> None:
    with SandboxServer(tmp_path / "feeds", tmp_path / "allegro.json", catalog_n=45) as server:
        api = _client(server.amazon_url, clock, seller_id=SELLER, marketplace_id=MARKETPLACE)
        wanted = [f"SKU-{i:06d}" for i in range(1, 46)] + ["SKU-999999"]
        try:
            offers = list(amazon.AmazonMarketplace(api).read_offers(wanted))
        finally:
            api.close()
        assert server.amazon.stats["searches"] == 3  # 46 SKUs, 20 identifiers per request
    assert sorted(o.sku for o in offers) == wanted[:45]


def test_simulator_pages_through_at_most_1000_results_like_amazon(tmp_path: Path, clock: FakeClock) -> None:
    sim = AmazonSimulator(catalog_n=1005)
    query = {"marketplaceIds": [MARKETPLACE], "pageSize": ["20"], "sortBy": ["sku"], "sortOrder": ["ASC"]}
    seen: list[str] = []
    token: str | None = None
    while True:
        page = sim.search_listings(SELLER, {**query, **({"pageToken": [token]} if token else {})})
        assert page["numberOfResults"] == 1005
        seen += [item["sku"] for item in page["items"]]
        token = (page.get("pagination") or {}).get("nextToken")
        if not token:
            break
    assert len(seen) == 1000
    # So a whole-catalog read of a larger seller fails loudly instead of reporting 5 listings "missing".
    with SandboxServer(tmp_path / "feeds", tmp_path / "allegro.json", catalog_n=1005) as server:
        api = _client(server.amazon_url, clock, seller_id=SELLER, marketplace_id=MARKETPLACE)
        try:
            with pytest.raises(ChannelError, match=r"1005 listings .* at most 1000: read them by SKU"):
                list(api.list_listings())
            assert len(list(api.list_listings(f"SKU-{i:06d}" for i in range(981, 1006)))) == 25
        finally:
            api.close()


def test_simulator_answers_the_listing_contract_and_moves_edited_listings_first(sandbox: SandboxServer) -> None:
    sim = sandbox.amazon
    base = {"marketplaceIds": [MARKETPLACE]}
    edited = requests.post(f"{sandbox.amazon_url}/_sandbox/listings/{SKUS[5]}", json={"price": "77.7"}, timeout=10)
    assert edited.json()["price"] == "77.70"  # a direct edit over HTTP, as the demo does it
    newest = sim.search_listings(SELLER, {**base, "pageSize": ["1"]})  # default order: lastUpdatedDate DESC
    assert [item["sku"] for item in newest["items"]] == [SKUS[5]]
    assert set(newest["items"][0]) == {"sku", "summaries"}  # includedData defaults to summaries
    assert newest["numberOfResults"] == N and "nextToken" in newest["pagination"]
    item = sim.get_listing_item(SELLER, SKUS[5], {**base, "includedData": ["offers,fulfillmentAvailability"]})
    assert item["offers"] == [
        {"marketplaceId": MARKETPLACE, "offerType": "B2C", "price": {"currencyCode": "PLN", "amount": "77.70"}}
    ]
    refusals = [
        ({"pageSize": ["21"]}, "pageSize must be between 1 and 20"),
        ({"marketplaceIds": ["ATVPDKIKX0DER"]}, "this seller sells in A1C3SOZRARQ6R3"),
        ({"identifiers": ["SKU-000001"]}, "identifiers and identifiersType must be given together"),
        ({"identifiers": [",".join(SKUS * 2)], "identifiersType": ["SKU"]}, "at most 20 identifiers"),
        ({"pageToken": ["bm90LWEtdG9rZW4"]}, "pageToken is not valid"),
    ]
    for bad, message in refusals:
        with pytest.raises(SpApiError, match=message) as refused:
            sim.search_listings(SELLER, {**base, **bad})
        assert refused.value.status == 400
    with pytest.raises(SpApiError, match=r"SKU-999999' not found") as missing:
        sim.get_listing_item(SELLER, "SKU-999999", base)
    assert missing.value.status == 404


def test_get_listing_and_wrong_marketplace(reader: amazon.AmazonClient, sandbox: SandboxServer) -> None:
    found = reader.get_listing(SKUS[0])
    assert found is not None and found["sku"] == SKUS[0]
    assert reader.get_listing("SKU,WITH,COMMAS") is None  # 404: no listing
    assert [o.sku for o in amazon.AmazonMarketplace(reader).read_offers(["SKU,WITH,COMMAS", SKUS[1]])] == [SKUS[1]]
    assert sandbox.amazon.stats["item_reads"] == 3  # the comma SKU was read alone, not split
    reader.marketplace_id = "ATVPDKIKX0DER"
    with pytest.raises(ChannelRequestError, match="answered 400: InvalidInput: marketplaceIds ATVPDKIKX0DER"):
        list(reader.list_listings())


@pytest.mark.parametrize("form", ["seconds", "date"])
def test_listings_route_respects_retry_after_and_rides_out_a_5xx_burst(
    reader: amazon.AmazonClient, sandbox: SandboxServer, clock: FakeClock, form: str
) -> None:
    sandbox.amazon.faults.arm(throttle=1, retry_after=7, retry_after_form=form, outage=2)
    items = list(reader.list_listings())
    assert len(items) == N
    assert sandbox.amazon.faults.fired["throttle"] == 1 and sandbox.amazon.faults.fired["outage"] == 2
    wait = clock.slept[0]
    if form == "seconds":
        assert wait == 7.0
    else:  # an HTTP-date has whole seconds; the simulator rounds up so the client never comes back early
        assert 6.0 < wait <= 8.0
    assert len(clock.slept) == 3  # the Retry-After wait, then two backoffs for the 503s


def test_expired_token_answered_with_403_is_refreshed_once(reader: amazon.AmazonClient, sandbox: SandboxServer) -> None:
    first = list(reader.list_listings())
    sandbox.amazon.expire_tokens()  # revoked on Amazon's side before our own expiry margin
    assert list(reader.list_listings()) == first and len(first) == N
    assert len(sandbox.amazon._tokens) == 1  # a fresh token was issued after the 403


def test_no_token_or_secret_in_logs_errors_or_repr(
    reader: amazon.AmazonClient, sandbox: SandboxServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # urllib3 logs every request line at DEBUG
    sandbox.amazon.faults.arm(throttle=1, retry_after=1, outage=1)
    assert len(list(reader.list_listings())) == N
    reader.marketplace_id = "ATVPDKIKX0DER"
    with pytest.raises(ChannelRequestError) as refused:
        reader.get_listing(SKUS[0])
    tokens = list(sandbox.amazon._tokens)
    text = caplog.text + str(refused.value) + repr(reader)
    assert "amazon: GET /listings/2021-08-01/items" in caplog.text  # the retries were logged
    for secret in ["demo-amazon-secret", "Atzr|demo-amazon-refresh-token", "Atza|", *tokens]:
        assert secret not in text


@pytest.mark.usefixtures("connection")
def test_reconcile_finds_a_listing_edited_in_seller_central_and_hub_wins(
    hub: str, sandbox: SandboxServer, tmp_path: Path
) -> None:
    a, b, c = SKUS[:3]
    _queue(hub, a, "price", {"amount": "55.00", "currency": "PLN"})
    _queue(hub, a, "quantity", {"value": 4})
    _queue(hub, b, "quantity", {"value": 6})
    _queue(hub, c, "price", {"amount": "33.00", "currency": "PLN"})
    channel = Channel(id=CHANNEL, kind="amazon", conn_id="amazon_sandbox", pricing_rule="r", reconcile="hub_wins")
    assert publish_channel(hub, channel, RUN)["sent"] == 4
    clean = reconcile_channel(hub, channel, RUN, tmp_path)
    assert (clean["offers_read"], clean["compared"], clean["differences"]) == (3, 3, 0)

    sandbox.amazon.edit_listing(a, price="49.90")  # someone edits the listings in Seller Central
    sandbox.amazon.edit_listing(b, quantity=60)
    found = reconcile_channel(hub, channel, RUN, tmp_path)
    assert (found["differences"], found["requeued"]) == (2, 2)
    with open(found["report"], encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["sku"], r["field"], r["action"]) for r in rows] == [
        (a, "price", "requeued"),
        (b, "quantity", "requeued"),
    ]
    assert '"49.90"' in rows[0]["channel_value"] and '"55.00"' in rows[0]["hub_value"]
    with psycopg.connect(hub) as conn:
        recorded = conn.execute(
            "SELECT sku, field, action, channel_value FROM hub.channel_reconciliation ORDER BY id"
        ).fetchall()
        ledger_row = conn.execute(
            "SELECT transfer_id::text, rows_read, rows_rejected, rows_changed, details->>'policy' FROM audit.transfer "
            "WHERE dataset = 'channel_reconciliation' ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        pending = conn.execute(
            "SELECT sku, field, payload FROM hub.outbox WHERE channel = %s AND status = 'pending' ORDER BY sku",
            (CHANNEL,),
        ).fetchall()
    assert recorded == [
        (a, "price", "requeued", {"amount": "49.90", "currency": "PLN"}),
        (b, "quantity", "requeued", {"value": 60}),
    ]
    assert ledger_row == (found["transfer_ids"][0], 3, 2, 2, "hub_wins")
    assert pending == [(a, "price", {"amount": "55.00", "currency": "PLN"}), (b, "quantity", {"value": 6})]

    assert publish_channel(hub, channel, RUN)["sent"] == 2  # the re-queued hub values go out again
    listing_a, listing_b = sandbox.amazon.listing(a), sandbox.amazon.listing(b)
    assert listing_a is not None and listing_a["price"] == "55.00"
    assert listing_b is not None and listing_b["quantity"] == 6
    after = reconcile_channel(hub, channel, RUN, tmp_path)
    assert after["differences"] == 0


@pytest.mark.usefixtures("connection")
def test_reconcile_needs_seller_and_marketplace(
    hub: str, sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    extra = {"refresh_token": "Atzr|demo-amazon-refresh-token"}
    monkeypatch.setenv(
        "AIRFLOW_CONN_AMAZON_SANDBOX", json.dumps({**CONNECTION, "host": sandbox.amazon_url, "extra": extra})
    )
    channel = Channel(id=CHANNEL, kind="amazon", conn_id="amazon_sandbox", pricing_rule="r")
    with pytest.raises(ConfigError, match=r"needs extra\.seller_id and extra\.marketplace_id"):
        reconcile_channel(hub, channel, RUN, tmp_path)
