"""Amazon SP-API client and JSON_LISTINGS_FEED publisher against the sandbox simulator and a real hub."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from commerce_sync.audit import ledger
from commerce_sync.channels import amazon
from commerce_sync.channels.base import TokenBucket
from commerce_sync.connections import ConnectionInfo
from commerce_sync.sandbox.server import SandboxServer
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


@pytest.fixture
def client(sandbox: SandboxServer, clock: FakeClock) -> Iterator[amazon.AmazonClient]:
    info = ConnectionInfo(
        conn_id="amazon_sandbox",
        host=sandbox.amazon_url,
        login="amzn1.application-oa2-client.sandbox",
        password="demo-amazon-secret",
        extra={"refresh_token": "Atzr|demo-amazon-refresh-token"},
    )
    api = amazon.AmazonClient.from_connection(info)
    api.sleep = clock.sleep
    api.feed_bucket = TokenBucket(*amazon.FEED_SUBMISSIONS, clock=clock, sleep=clock.sleep)
    yield api
    api.close()


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


def _publish(dsn: str, api: amazon.AmazonClient, **options: Any) -> tuple[amazon.PublishResult, ledger.Transfer]:
    transfer = ledger.Transfer(source="hub", target=f"channel:{CHANNEL}", dataset="offer_update")
    with ledger.recording(dsn, transfer):
        result = amazon.publish_outbox(
            dsn, CHANNEL, api, transfer, seller_id=SELLER, marketplace_id=MARKETPLACE, **options
        )
    return result, transfer


def test_feed_document_satisfies_amazons_published_schema() -> None:
    if not amazon.SCHEMA.exists():
        pytest.skip(f"Amazon's listings feed schema is not present at {amazon.SCHEMA} (../shared/contracts)")
    rows = [
        amazon._Row(1, "SKU-1", "price", {"amount": "19.99", "currency": "PLN"}),
        amazon._Row(2, "SKU-1", "quantity", {"value": 4}),
    ]
    document = amazon.listings_feed(SELLER, [amazon._message(1, "SKU-1", "PRODUCT", MARKETPLACE, rows)])
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
    assert len(result.feeds) == 1
    assert (result.sent, result.failed, result.quarantined) == (2, 2, 1)
    assert sandbox.amazon.listing(a) == {"sku": a, "price": "25.00", "currency": "PLN", "quantity": 3}
    with psycopg.connect(hub) as conn:
        rows = dict(conn.execute("SELECT idempotency_key, error FROM hub.outbox WHERE status = 'failed'").fetchall())
        request_ids = {r[0] for r in conn.execute("SELECT request_id FROM hub.outbox WHERE status = 'sent'")}
    assert f"SKU {b}: 90000: The price is outside" in rows[f"{CHANNEL}:{b}:price:v1"]
    assert "below the floor" in rows[f"{CHANNEL}:{c}:price:v1"]
    assert request_ids == {result.feeds[0]}
    assert transfer.details["rejected_skus"] == [b]


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
