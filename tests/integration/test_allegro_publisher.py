"""Allegro client and publisher against the sandbox simulator and a real hub database."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests

from commerce_sync.audit import ledger
from commerce_sync.channels.allegro import AllegroClient, AllegroMarketplace
from commerce_sync.channels.marketplace import PublishResult, publish_outbox, sync_listings
from commerce_sync.config import Channel
from commerce_sync.connections import ConnectionInfo
from commerce_sync.errors import TransientError
from commerce_sync.transport.http import ChannelRequestError, HttpClient
from commerce_sync_sandbox.allegro_sim import initial_offers
from commerce_sync_sandbox.server import SandboxServer

pytestmark = pytest.mark.integration

N = 30
CHANNEL = "allegro"
OFFERS = initial_offers(N)
SKUS = [offer["external"]["id"] for offer in OFFERS[:3]]
OFFER_IDS = {offer["external"]["id"]: offer["id"] for offer in OFFERS}
NO_LISTING = "SKU-NOLISTING"
SETUP_TRANSFER = uuid.uuid4()


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[SandboxServer]:
    with SandboxServer(tmp_path / "feeds", tmp_path / "allegro.json", catalog_n=N) as server:
        yield server


@pytest.fixture
def client(sandbox: SandboxServer) -> Iterator[AllegroClient]:
    info = ConnectionInfo(
        conn_id="allegro_sandbox", host=sandbox.allegro_url, login="demo-client", password="demo-secret"
    )
    allegro = AllegroClient.from_connection(info)
    yield allegro
    allegro.close()


@pytest.fixture
def hub(hub_dsn: str) -> str:
    with psycopg.connect(hub_dsn) as conn:
        for sku in [*SKUS, NO_LISTING]:
            conn.execute(
                "INSERT INTO hub.product (sku, name, purchase_price, currency, vat_rate, row_hash, transfer_id) "
                "VALUES (%s, %s, 10, 'PLN', 0.23, 'h', %s)",
                (sku, f"product {sku}", SETUP_TRANSFER),
            )
            conn.execute(
                "INSERT INTO hub.channel_offer (channel, sku, price, currency, quantity, availability, cost, "
                "floor_price, floor_applied, rule_id, rule_version, row_hash, version, transfer_id) "
                "VALUES (%s, %s, 20, 'PLN', 1, 'in_stock', 10, 12, false, 'r', '1', 'h', 1, %s)",
                (CHANNEL, sku, SETUP_TRANSFER),
            )
    return hub_dsn


def _queue(dsn: str, sku: str, field: str, payload: dict[str, Any], version: int = 1) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "UPDATE hub.channel_offer SET version = greatest(version, %s) WHERE channel = %s AND sku = %s",
            (version, CHANNEL, sku),
        )
        conn.execute(
            "INSERT INTO hub.outbox (channel, sku, field, payload, offer_version, idempotency_key, "
            "created_transfer_id) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (CHANNEL, sku, field, json.dumps(payload), version, f"{CHANNEL}:{sku}:{field}:v{version}", SETUP_TRANSFER),
        )


def _sync(dsn: str, client: AllegroClient) -> int:
    transfer = ledger.Transfer(source="hub", target=CHANNEL, dataset="channel_listing")
    with ledger.recording(dsn, transfer):
        return sync_listings(dsn, CHANNEL, AllegroMarketplace(client), transfer)


def channel_config(currencies: list[str] | None = None) -> Channel:
    return Channel(
        id=CHANNEL, kind="allegro", conn_id="allegro_sandbox", pricing_rule="r", accepted_currencies=currencies or []
    )


def _publish(
    dsn: str,
    client: AllegroClient,
    currencies: list[str] | None = None,
    batch_size: int | None = None,
    **market: Any,
) -> tuple[PublishResult, ledger.Transfer]:
    transfer = ledger.Transfer(source="hub", target=CHANNEL, dataset="offer")
    with ledger.recording(dsn, transfer):
        result = publish_outbox(
            dsn, channel_config(currencies), AllegroMarketplace(client, **market), transfer, batch_size=batch_size
        )
    return result, transfer


def _outbox(dsn: str) -> dict[str, tuple]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT idempotency_key, status, request_id, error, attempts, sent_at IS NOT NULL, response "
            "FROM hub.outbox ORDER BY id"
        ).fetchall()
    return {row[0]: row[1:] for row in rows}


def _stats(server: SandboxServer) -> dict[str, int]:
    stats = server.simulator.stats()
    stats.pop("requests")
    return stats


def _price(server: SandboxServer, sku: str) -> str:
    offer = server.simulator.offer(OFFER_IDS[sku])
    assert offer is not None
    return offer["sellingMode"]["price"]["amount"]


def _quantity(server: SandboxServer, sku: str) -> int:
    offer = server.simulator.offer(OFFER_IDS[sku])
    assert offer is not None
    return offer["stock"]["available"]


def _queue_standard(dsn: str) -> None:
    a, b, c = SKUS
    _queue(dsn, a, "price", {"amount": "99.99", "currency": "PLN"})
    _queue(dsn, b, "price", {"amount": "99.990", "currency": "PLN"})  # same group as a
    _queue(dsn, c, "price", {"amount": "49.50", "currency": "PLN"})
    _queue(dsn, a, "quantity", {"value": 5})
    _queue(dsn, b, "quantity", {"value": 7})
    _queue(dsn, c, "quantity", {"value": 5})
    _queue(dsn, NO_LISTING, "price", {"amount": "15.00", "currency": "PLN"})


def test_sync_listings(hub: str, client: AllegroClient) -> None:
    assert _sync(hub, client) == len(OFFERS)
    assert _sync(hub, client) == len(OFFERS)  # twice: same state
    with psycopg.connect(hub) as conn:  # a listing whose offer is gone, and one pointing elsewhere
        conn.execute(
            "INSERT INTO hub.channel_listing (channel, sku, offer_id, transfer_id) VALUES (%s, 'SKU-GONE', '1', %s)",
            (CHANNEL, SETUP_TRANSFER),
        )
        conn.execute(
            "UPDATE hub.channel_listing SET offer_id = '2' WHERE channel = %s AND sku = %s", (CHANNEL, SKUS[0])
        )
    assert _sync(hub, client) == len(OFFERS)
    with psycopg.connect(hub) as conn:
        listings: dict[str, str] = dict(
            conn.execute("SELECT sku, offer_id FROM hub.channel_listing WHERE channel = %s", (CHANNEL,))
        )
        ledger_rows = conn.execute(
            "SELECT rows_read, rows_written, rows_changed, status FROM audit.transfer "
            "WHERE dataset = 'channel_listing' ORDER BY seq"
        ).fetchall()
    assert listings == OFFER_IDS
    assert ledger_rows == [
        (len(OFFERS), len(OFFERS), len(OFFERS), "success"),
        (len(OFFERS), len(OFFERS), 0, "success"),
        (len(OFFERS), len(OFFERS), 2, "success"),
    ]


def test_publish_end_to_end(hub: str, client: AllegroClient, sandbox: SandboxServer) -> None:
    a, b, c = SKUS
    _sync(hub, client)
    _queue_standard(hub)
    result, transfer = _publish(hub, client)
    assert (result.claimed, result.sent, result.failed) == (7, 6, 1)
    assert len(result.request_ids) == 4  # prices 49.50 and 99.99, quantities 5 and 7
    assert (_price(sandbox, a), _price(sandbox, b), _price(sandbox, c)) == ("99.99", "99.99", "49.50")
    assert (_quantity(sandbox, a), _quantity(sandbox, b), _quantity(sandbox, c)) == (5, 7, 5)
    assert _stats(sandbox) == {"price_commands": 2, "quantity_commands": 2, "offers_changed": 6}

    outbox = _outbox(hub)
    for key, (status, request_id, error, attempts, has_sent_at, response) in outbox.items():
        if NO_LISTING in key:
            assert (status, attempts, has_sent_at) == ("failed", 1, False)
            assert "no Allegro offer for SKU SKU-NOLISTING" in error
        else:
            assert (status, error, attempts, has_sent_at) == ("sent", None, 1, True)
            assert request_id in result.request_ids
            assert response["status"] == "SUCCESS"
    with psycopg.connect(hub) as conn:
        published: dict[str, int] = dict(
            conn.execute("SELECT sku, published_version FROM hub.channel_offer WHERE published_at IS NOT NULL")
        )
        row = conn.execute(
            "SELECT status, rows_read, rows_written, rows_rejected, rows_changed, payload_sha256, details "
            "FROM audit.transfer WHERE transfer_id = %s",
            (transfer.transfer_id,),
        ).fetchone()
        assert ledger.verify(conn).ok
    assert published == {a: 1, b: 1, c: 1}
    assert row is not None
    assert row[:5] == ("success", 7, 6, 1, 6)
    assert len(row[5]) == 64
    assert row[6]["request_ids"] == result.request_ids

    again, _ = _publish(hub, client)
    assert (again.claimed, again.sent, again.failed, again.request_ids) == (0, 0, 0, [])
    assert _stats(sandbox) == {"price_commands": 2, "quantity_commands": 2, "offers_changed": 6}


def test_only_newest_version_is_sent(hub: str, client: AllegroClient, sandbox: SandboxServer) -> None:
    a = SKUS[0]
    _sync(hub, client)
    _queue(hub, a, "price", {"amount": "20.00", "currency": "PLN"}, version=1)
    _queue(hub, a, "price", {"amount": "21.00", "currency": "PLN"}, version=2)
    _queue(hub, a, "quantity", {"value": 3}, version=1)
    result, transfer = _publish(hub, client)
    assert (result.claimed, result.sent, result.superseded) == (2, 2, 1)
    assert _price(sandbox, a) == "21.00"
    outbox = _outbox(hub)
    assert outbox[f"{CHANNEL}:{a}:price:v1"][0] == "superseded"
    assert outbox[f"{CHANNEL}:{a}:price:v2"][0] == "sent"
    assert _stats(sandbox)["price_commands"] == 1
    assert transfer.details["superseded"] == 1
    with psycopg.connect(hub) as conn:
        version = conn.execute(
            "SELECT published_version FROM hub.channel_offer WHERE channel = %s AND sku = %s", (CHANNEL, a)
        ).fetchone()
    assert version == (2,)


def test_crash_after_send_repeats_nothing(hub: str, client: AllegroClient, sandbox: SandboxServer) -> None:
    a = SKUS[0]
    _sync(hub, client)
    _queue_standard(hub)
    first, _ = _publish(hub, client)
    # The seller changes a price by hand on Allegro after our publish.
    client.change_prices(uuid.uuid4(), [OFFER_IDS[a]], "1.23", "PLN")
    stats = _stats(sandbox)
    # A crash between the PUT and the commit looks like this: the rows are still pending.
    with psycopg.connect(hub) as conn:
        conn.execute("UPDATE hub.outbox SET status = 'pending' WHERE status = 'sent'")
    second, _ = _publish(hub, client)
    assert second.request_ids == first.request_ids  # same command ids ...
    assert _stats(sandbox) == stats  # ... which Allegro does not apply again
    assert _price(sandbox, a) == "1.23"  # so the seller's later change is not overwritten
    assert (second.claimed, second.sent) == (6, 6)
    assert all(row[0] in ("sent", "failed") for row in _outbox(hub).values())


def test_small_batches_split_commands(hub: str, client: AllegroClient, sandbox: SandboxServer) -> None:
    _sync(hub, client)
    for sku in SKUS:
        _queue(hub, sku, "price", {"amount": "15.00", "currency": "PLN"})
    result, _ = _publish(hub, client, batch_size=2)
    assert len(result.request_ids) == 2 and result.sent == 3
    assert {_price(sandbox, sku) for sku in SKUS} == {"15.00"}


def test_expired_token_is_refreshed(client: AllegroClient, sandbox: SandboxServer) -> None:
    assert len(list(client.list_offers(page_size=7))) == len(OFFERS)  # several pages
    requests.post(sandbox.allegro_url + "/_sandbox/expire-tokens", timeout=5)
    assert len(list(client.list_offers())) == len(OFFERS)


def test_token_and_secret_never_shown(client: AllegroClient, sandbox: SandboxServer) -> None:
    list(client.list_offers())
    token = client._OAuthClient__token
    assert token
    assert token not in repr(client) and "demo-secret" not in repr(client)
    with pytest.raises(ChannelRequestError) as refused:
        client.change_prices("not-a-uuid", [OFFERS[0]["id"]], "1.00", "PLN")
    assert refused.value.status == 400 and "commandId" in str(refused.value)
    assert token not in str(refused.value)
    wrong = AllegroClient(sandbox.allegro_url, "demo-client", "wrong-secret")
    with pytest.raises(ChannelRequestError) as denied:
        list(wrong.list_offers())
    assert denied.value.status == 401 and "wrong-secret" not in str(denied.value)
    assert "invalid_client" in str(denied.value)


# ---------------------------------------------------------------- retries (real loopback server)
class _Flaky(BaseHTTPRequestHandler):
    """Answers from a script of (status, headers) per request, then 200."""

    script: list[tuple[int, dict[str, str]]] = []
    seen: list[float] = []

    def do_GET(self) -> None:
        type(self).seen.append(time.monotonic())
        status, headers = type(self).script.pop(0) if type(self).script else (200, {})
        body = json.dumps({"errors": [{"code": "E", "message": f"status {status}"}]} if status >= 400 else {"ok": 1})
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def flaky() -> Iterator[type[_Flaky]]:
    handler = type("Flaky", (_Flaky,), {"script": [], "seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    handler.url = f"http://127.0.0.1:{server.server_address[1]}"  # type: ignore[attr-defined]
    yield handler
    server.shutdown()
    server.server_close()


def test_429_retry_after_is_honoured(flaky: type[_Flaky]) -> None:
    flaky.script = [(429, {"Retry-After": "1"})]
    client = HttpClient(flaky.url)  # type: ignore[attr-defined]
    assert client.request("GET", "/x").json() == {"ok": 1}
    assert len(flaky.seen) == 2
    assert flaky.seen[1] - flaky.seen[0] >= 0.95


def test_5xx_retries_until_exhausted(flaky: type[_Flaky]) -> None:
    flaky.script = [(503, {"Retry-After": "0"})] * 3
    client = HttpClient(flaky.url, max_attempts=3)  # type: ignore[attr-defined]
    with pytest.raises(TransientError, match=r"http: GET /boom failed after 3 attempts.*503"):
        client.request("GET", "/boom", params={"secret": "s3cr3t"})
    assert len(flaky.seen) == 3


def test_4xx_is_not_retried(flaky: type[_Flaky]) -> None:
    flaky.script = [(422, {})]
    client = HttpClient(flaky.url)  # type: ignore[attr-defined]
    with pytest.raises(ChannelRequestError, match=r"GET /bad answered 422: E: status 422") as error:
        client.request("GET", "/bad?token=abc")
    assert "abc" not in str(error.value)
    assert len(flaky.seen) == 1


def test_connection_refused_is_transient() -> None:
    client = HttpClient("http://127.0.0.1:9", max_attempts=2, backoff_base=0.01)
    with pytest.raises(TransientError, match="ConnectionError"):
        client.request("GET", "/")


def test_decimal_amounts_are_accepted(client: AllegroClient, sandbox: SandboxServer) -> None:
    command = uuid.uuid4()
    client.change_prices(command, [OFFERS[0]["id"]], Decimal("12.5"), "PLN")
    assert client.wait_for_command("price", command)["taskCount"]["success"] == 1
    assert client.command_tasks("price", command)[0]["status"] == "SUCCESS"
    assert sandbox.simulator.offer(OFFERS[0]["id"])["sellingMode"]["price"]["amount"] == "12.50"


def test_floor_violation_is_quarantined_and_never_sent(hub: str, client: AllegroClient, sandbox: SandboxServer) -> None:
    a, b, c = SKUS
    before = _price(sandbox, a)
    _queue(hub, a, "price", {"amount": "11.00", "currency": "PLN"})  # below the floor of 12
    _queue(hub, b, "price", {"amount": "30.00", "currency": "EUR"})  # not the channel's currency
    _queue(hub, c, "price", {"amount": "31.00", "currency": "PLN"})  # fine
    _sync(hub, client)
    result, _ = _publish(hub, client, currencies=["PLN"])
    assert (result.sent, result.failed, result.quarantined) == (1, 2, 2)
    assert _price(sandbox, a) == before
    assert _price(sandbox, c) == "31.00"
    with psycopg.connect(hub) as conn:
        rows = conn.execute(
            "SELECT record_key, expectation, observed_value, source FROM hub.quarantine "
            "WHERE dataset = 'channel_offer' ORDER BY record_key"
        ).fetchall()
        errors = dict(conn.execute("SELECT sku, error FROM hub.outbox WHERE status = 'failed'").fetchall())
    assert rows == [
        (a, "price_at_least_floor", "11.00", "channel:allegro"),
        (b, "currency_accepted", "EUR", "channel:allegro"),
    ]
    assert "below the floor 12" in errors[a]
    # A second run has nothing pending and quarantines nothing twice.
    again, _ = _publish(hub, client, currencies=["PLN"])
    assert (again.sent, again.failed, again.quarantined) == (0, 0, 0)
