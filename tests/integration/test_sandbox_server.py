"""The sandbox's feeds listener and Allegro simulator, over real HTTP on loopback."""

from __future__ import annotations

import http.client
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from commerce_sync_sandbox.allegro_sim import MEDIA_TYPE, initial_offers
from commerce_sync_sandbox.feeds import write_feeds
from commerce_sync_sandbox.server import SandboxServer

pytestmark = pytest.mark.integration

N = 40


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[SandboxServer]:
    write_feeds(tmp_path / "feeds", N)
    with SandboxServer(tmp_path / "feeds", tmp_path / "allegro.json", catalog_n=N) as server:
        yield server


def _token(server: SandboxServer, secret: str = "demo-secret") -> requests.Response:
    return requests.post(
        server.allegro_url + "/auth/oauth/token",
        params={"grant_type": "client_credentials"},
        auth=("demo-client", secret),
        timeout=5,
    )


def _headers(server: SandboxServer) -> dict[str, str]:
    token = _token(server).json()["access_token"]
    return {"Authorization": f"Bearer {token}", "Accept": MEDIA_TYPE, "Content-Type": MEDIA_TYPE}


def _price_body(offer_ids: list[str], amount: str) -> dict:
    return {
        "modification": {"type": "FIXED_PRICE", "price": {"amount": amount, "currency": "PLN"}},
        "offerCriteria": [{"offers": [{"id": i} for i in offer_ids], "type": "CONTAINS_OFFERS"}],
    }


def _stats(server: SandboxServer) -> dict[str, int]:
    return requests.get(server.allegro_url + "/_sandbox/stats", timeout=5).json()


def _raw_get(base: str, path: str) -> int:
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=5)
    conn.request("GET", path)  # sent as is: no client-side normalisation of ".."
    status = conn.getresponse().status
    conn.close()
    return status


# ---------------------------------------------------------------- feeds
def test_feed_etag_and_conditional_get(sandbox: SandboxServer, tmp_path: Path) -> None:
    url = sandbox.feeds_url + "/feeds/acme.xml"
    first = requests.get(url, timeout=5)
    assert first.status_code == 200
    assert first.content == (tmp_path / "feeds" / "acme.xml").read_bytes()
    etag = first.headers["ETag"]
    assert etag.startswith('"') and len(etag) == 66
    assert int(first.headers["Content-Length"]) == len(first.content)
    assert requests.get(url, headers={"If-None-Match": etag}, timeout=5).status_code == 304
    last_modified = first.headers["Last-Modified"]
    assert requests.get(url, headers={"If-Modified-Since": last_modified}, timeout=5).status_code == 304
    assert requests.get(url, headers={"If-None-Match": '"other"'}, timeout=5).status_code == 200
    write_feeds(tmp_path / "feeds", N)  # same inputs: same bytes, same ETag
    assert requests.get(url, timeout=5).headers["ETag"] == etag
    write_feeds(tmp_path / "feeds", N + 1)
    changed = requests.get(url, headers={"If-None-Match": etag}, timeout=5)
    assert changed.status_code == 200 and changed.headers["ETag"] != etag


def test_feed_unknown_and_traversal_refused(sandbox: SandboxServer, tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text("do not serve")
    assert requests.get(sandbox.feeds_url + "/feeds/nope.xml", timeout=5).status_code == 404
    for path in (
        "/feeds/../secret.txt",
        "/feeds/..%2fsecret.txt",
        "/feeds/%2e%2e/secret.txt",
        "/feeds/.%2e/allegro.json",
        "/feeds//etc/passwd",
        "/feeds/.hidden",
    ):
        assert _raw_get(sandbox.feeds_url, path) in (400, 404), path
    assert _raw_get(sandbox.feeds_url, "/other/acme.xml") == 404


# ---------------------------------------------------------------- allegro
def test_auth_is_required(sandbox: SandboxServer) -> None:
    assert _token(sandbox, "wrong").status_code == 401
    token = _token(sandbox)
    assert token.status_code == 200
    document = token.json()
    assert document["token_type"] == "bearer" and document["expires_in"] == 43199
    offers_url = sandbox.allegro_url + "/sale/offers"
    assert requests.get(offers_url, headers={"Accept": MEDIA_TYPE}, timeout=5).status_code == 401
    bad = {"Authorization": "Bearer nope", "Accept": MEDIA_TYPE}
    assert requests.get(offers_url, headers=bad, timeout=5).status_code == 401
    no_accept = {"Authorization": f"Bearer {document['access_token']}"}
    assert requests.get(offers_url, headers=no_accept, timeout=5).status_code == 406


def test_offers_paging(sandbox: SandboxServer) -> None:
    headers = _headers(sandbox)
    expected = initial_offers(N)
    page = requests.get(
        sandbox.allegro_url + "/sale/offers", params={"offset": 5, "limit": 10}, headers=headers, timeout=5
    ).json()
    assert page["count"] == 10 and page["totalCount"] == len(expected)
    assert [o["id"] for o in page["offers"]] == [o["id"] for o in expected[5:15]]
    offer = page["offers"][0]
    assert offer["external"]["id"].startswith("SKU-")
    assert offer["sellingMode"]["price"]["currency"] == "PLN"
    too_many = requests.get(sandbox.allegro_url + "/sale/offers", params={"limit": 1001}, headers=headers, timeout=5)
    assert too_many.status_code == 422 and too_many.json()["errors"][0]["path"] == "limit"


def test_commands_apply_once(sandbox: SandboxServer) -> None:
    headers = _headers(sandbox)
    offers = initial_offers(N)
    ids = [offers[0]["id"], offers[1]["id"], "999"]
    command = str(uuid.uuid4())
    url = f"{sandbox.allegro_url}/sale/offer-price-change-commands/{command}"
    first = requests.put(url, json=_price_body(ids, "123.45"), headers=headers, timeout=5)
    assert first.status_code == 201, first.text
    assert first.json() == {"id": command, "taskCount": {"total": 3, "success": 0, "failed": 0}}
    report = requests.get(url, headers=headers, timeout=5).json()
    assert report["taskCount"] == {"total": 3, "success": 2, "failed": 1}
    tasks = requests.get(url + "/tasks", params={"limit": 10}, headers=headers, timeout=5).json()["tasks"]
    assert [(t["offer"]["id"], t["field"], t["status"]) for t in tasks] == [
        (ids[0], "price", "SUCCESS"),
        (ids[1], "price", "SUCCESS"),
        ("999", "price", "FAIL"),
    ]
    assert "not found" in tasks[2]["message"] and tasks[2]["finishedAt"]
    assert sandbox.simulator.offer(ids[0])["sellingMode"]["price"]["amount"] == "123.45"
    stats = _stats(sandbox)
    assert (stats["price_commands"], stats["offers_changed"]) == (1, 2)

    # The same command again is the same command: original answer, nothing applied.
    sandbox.simulator.submit("price", str(uuid.uuid4()), _price_body([ids[0]], "5.00"))  # someone else
    again = requests.put(url, json=_price_body(ids, "123.45"), headers=headers, timeout=5)
    assert again.status_code == 201 and again.json() == first.json()
    assert sandbox.simulator.offer(ids[0])["sellingMode"]["price"]["amount"] == "5.00"
    assert _stats(sandbox)["price_commands"] == 2

    conflict = requests.put(url, json=_price_body(ids, "99.00"), headers=headers, timeout=5)
    assert conflict.status_code == 409
    assert conflict.json()["errors"][0]["code"] == "CONFLICT"

    quantity_url = f"{sandbox.allegro_url}/sale/offer-quantity-change-commands/{uuid.uuid4()}"
    body = {
        "modification": {"changeType": "FIXED", "value": 7},
        "offerCriteria": [{"offers": [{"id": ids[1]}], "type": "CONTAINS_OFFERS"}],
    }
    assert requests.put(quantity_url, json=body, headers=headers, timeout=5).status_code == 201
    assert sandbox.simulator.offer(ids[1])["stock"]["available"] == 7
    tasks = requests.get(quantity_url + "/tasks", headers=headers, timeout=5).json()["tasks"]
    assert tasks[0]["field"] == "quantity" and tasks[0]["status"] == "SUCCESS"
    assert _stats(sandbox)["quantity_commands"] == 1


@pytest.mark.parametrize(
    ("command_id", "body", "path"),
    [
        ("not-a-uuid", _price_body(["1"], "1.00"), "commandId"),
        (None, {"modification": {"type": "INCREASE_PRICE"}, "offerCriteria": []}, "modification.type"),
        (None, _price_body(["1"], "12,30"), "modification.price.amount"),
        (None, _price_body(["1"], "-1.00"), "modification.price.amount"),
        (None, _price_body([], "1.00"), "offerCriteria[0].offers"),
        (
            None,
            {"modification": {"type": "FIXED_PRICE", "price": {"amount": "1.00", "currency": "PLN"}}},
            "offerCriteria",
        ),
    ],
)
def test_invalid_commands_are_400(sandbox: SandboxServer, command_id: str | None, body: dict, path: str) -> None:
    url = f"{sandbox.allegro_url}/sale/offer-price-change-commands/{command_id or uuid.uuid4()}"
    response = requests.put(url, json=body, headers=_headers(sandbox), timeout=5)
    assert response.status_code == 400
    error = response.json()["errors"][0]
    assert error["path"] == path and error["message"] and error["userMessage"]
    assert _stats(sandbox)["price_commands"] == 0


def test_unknown_command_is_404(sandbox: SandboxServer) -> None:
    url = f"{sandbox.allegro_url}/sale/offer-quantity-change-commands/{uuid.uuid4()}"
    assert requests.get(url, headers=_headers(sandbox), timeout=5).status_code == 404


def test_state_survives_restart_and_reset(tmp_path: Path) -> None:
    state = tmp_path / "allegro.json"
    offer_id = initial_offers(N)[0]["id"]
    original = initial_offers(N)[0]["sellingMode"]["price"]["amount"]
    with SandboxServer(tmp_path / "feeds", state, catalog_n=N) as server:
        headers = _headers(server)
        command = str(uuid.uuid4())
        url = f"{server.allegro_url}/sale/offer-price-change-commands/{command}"
        assert requests.put(url, json=_price_body([offer_id], "77.70"), headers=headers, timeout=5).ok
    assert state.exists()
    with SandboxServer(tmp_path / "feeds", state, catalog_n=N) as server:
        # Tokens do not survive a restart; state does.
        offers_url = server.allegro_url + "/sale/offers"
        assert requests.get(offers_url, headers=headers, timeout=5).status_code == 401
        headers = _headers(server)
        assert server.simulator.offer(offer_id)["sellingMode"]["price"]["amount"] == "77.70"
        again = requests.put(
            f"{server.allegro_url}/sale/offer-price-change-commands/{command}",
            json=_price_body([offer_id], "77.70"),
            headers=headers,
            timeout=5,
        )
        assert again.status_code == 201
        assert _stats(server)["price_commands"] == 1
        assert requests.post(server.allegro_url + "/_sandbox/reset", timeout=5).ok
        assert server.simulator.offer(offer_id)["sellingMode"]["price"]["amount"] == original
        assert _stats(server)["price_commands"] == 0


EDITED_LISTING = {"sku": "SKU-000005", "price": "56.78", "currency": "PLN", "quantity": 9}


def _last_updated(server: SandboxServer, sku: str) -> str:
    """The listing's lastUpdatedDate as the Listings Items search shows it."""
    found = server.amazon.search_listings(
        server.amazon.seller_id,
        {"marketplaceIds": [server.amazon.marketplace_id], "identifiers": [sku], "identifiersType": ["SKU"]},
    )
    return str(found["items"][0]["summaries"][0]["lastUpdatedDate"])


def test_ebay_and_amazon_state_survives_restart(tmp_path: Path) -> None:
    """A restarted sandbox (every `make demo`) still shows what was published, as a marketplace would."""
    state = tmp_path / "allegro.json"
    with SandboxServer(tmp_path / "feeds", state, catalog_n=N) as server:
        offer = server.ebay.offers("SKU-000003", 0, 1)["offers"][0]
        status, _ = server.ebay.bulk_update(
            {"requests": [{"sku": "SKU-000003", "offers": [{"offerId": offer["offerId"], "availableQuantity": 7}]}]}
        )
        assert status == 200
        server.ebay.edit_offer(offer["offerId"], price="12.34")
        server.amazon.edit_listing("SKU-000005", price=EDITED_LISTING["price"], quantity=EDITED_LISTING["quantity"])
        amazon_updated = _last_updated(server, "SKU-000005")
        stats = (dict(server.ebay.stats), dict(server.amazon.stats))
    assert (tmp_path / "ebay_state.json").exists() and (tmp_path / "amazon_state.json").exists()
    with SandboxServer(tmp_path / "feeds", state, catalog_n=N) as server:
        again = server.ebay.offer(offer["offerId"])
        assert again is not None
        assert (again["availableQuantity"], again["pricingSummary"]["price"]["value"]) == (7, "12.34")
        assert server.amazon.listing("SKU-000005") == EDITED_LISTING
        found = _last_updated(server, "SKU-000005")
        assert found == amazon_updated
        assert server.ebay.stats["revisions"] == stats[0]["revisions"] == 1  # the bulk update; a direct edit is not one
        assert server.amazon.stats["revisions"] == stats[1]["revisions"]
    with SandboxServer(tmp_path / "other" / "feeds", tmp_path / "other" / "allegro.json", catalog_n=N) as fresh:
        assert fresh.amazon.listing("SKU-000005") != EDITED_LISTING
