"""A marketplace kind defined only in the tests is published and read back through the real DAG tasks.

``tests/e2e/tinymart.py`` holds a tiny client and its :class:`~commerce_sync.channels.marketplace.Marketplace`
subclass and registers the kind; the DAG runner's process imports it through ``COMMERCE_SYNC_CHANNEL_MODULES``.
A channel of that kind is added to a copy of the shipped configuration, and the whole sync runs: pricing
queues its offers in the outbox, ``hub_to_marketplaces`` publishes them in requests of at most 10 items
(per-item errors recorded), ``marketplaces_to_hub_reconciliation`` reads them back, finds a direct edit and
re-queues the hub's value, which the next publish sends. No product module knows the kind.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from commerce_sync.db import connect
from commerce_sync_devtools.demo import DAG_ORDER, run_dags
from tests.e2e.sandbox_world import sandbox_world

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
MAX_ITEMS = 10  # the limit the simulator enforces (a request over it is answered 400)
PAGE = 50
API_KEY = "tinymart-test-key"
UNLISTED = "SKU-000007"  # the seller never listed it on Tinymart: its updates are refused per item
CHANNEL_YAML = """
  - id: tinymart
    kind: tinymart
    conn_id: tinymart_test
    currency: PLN
    prices_include_vat: true
    pricing_rule: allegro-default
    stock_buffer: 1
    reconcile: hub_wins
"""


class TinymartSimulator:
    """The Tinymart API (see tests/e2e/tinymart.py) on 127.0.0.1: listed offers, per-item answers, batch sizes."""

    def __init__(self, skus: list[str]) -> None:
        self.offers: dict[str, dict[str, Any]] = {
            sku: {"sku": sku, "price": "1.00", "currency": "PLN", "quantity": 0} for sku in skus
        }
        self.batches: list[int] = []
        self.lock = threading.Lock()
        simulator = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, status: int, document: Any) -> None:
                body = json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _authorised(self) -> bool:
                if self.headers.get("Authorization") == f"Bearer {API_KEY}":
                    return True
                self._answer(401, {"error": "bad api key"})
                return False

            def do_GET(self) -> None:
                url = urlparse(self.path)
                if not self._authorised():
                    return
                if url.path != "/v1/offers":
                    self._answer(404, {"error": url.path})
                    return
                cursor = int(parse_qs(url.query).get("cursor", ["0"])[0])
                with simulator.lock:
                    offers = [dict(offer) for _, offer in sorted(simulator.offers.items())]
                following = cursor + PAGE if cursor + PAGE < len(offers) else None
                self._answer(200, {"offers": offers[cursor : cursor + PAGE], "next": following})

            def do_POST(self) -> None:
                if not self._authorised():
                    return
                items = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))["items"]
                if len(items) > MAX_ITEMS:
                    self._answer(400, {"error": f"at most {MAX_ITEMS} items"})
                    return
                results = []
                with simulator.lock:
                    simulator.batches.append(len(items))
                    for item in items:
                        offer = simulator.offers.get(item["sku"])
                        if offer is None:
                            results.append({"sku": item["sku"], "status": "ERROR", "message": "not listed"})
                            continue
                        if "price" in item:
                            offer["price"], offer["currency"] = item["price"]["amount"], item["price"]["currency"]
                        if "quantity" in item:
                            offer["quantity"] = item["quantity"]
                        results.append({"sku": item["sku"], "status": "OK"})
                self._answer(200, {"results": results})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> TinymartSimulator:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("tinymart")
    config = tmp / "config"
    shutil.copytree(REPO / "include" / "config", config)
    with (config / "channels.yaml").open("a", encoding="utf-8") as channels:
        channels.write(CHANNEL_YAML)
    env = {"COMMERCE_SYNC_CONFIG_DIR": str(config), "COMMERCE_SYNC_CHANNEL_MODULES": "tests.e2e.tinymart"}
    with sandbox_world(tmp, env) as sandbox:
        with connect(sandbox.erp) as conn:
            skus = [sku for (sku,) in conn.execute("SELECT sku FROM erp.products ORDER BY sku") if sku != UNLISTED]
        with TinymartSimulator(skus) as simulator:
            os.environ["AIRFLOW_CONN_TINYMART_TEST"] = json.dumps(
                {"conn_type": "http", "host": simulator.url, "password": API_KEY}
            )
            try:
                yield {"hub": sandbox.hub, "tmp": tmp, "simulator": simulator}
            finally:
                os.environ.pop("AIRFLOW_CONN_TINYMART_TEST", None)


def _run(dag_ids: tuple[str, ...], logs: Path) -> None:
    for dag_id, ok, _, log_file in run_dags(dag_ids, logs):
        assert ok, f"{dag_id} failed:\n" + log_file.read_text(errors="replace")[-4000:]


def _hub_offers(hub: str) -> dict[str, tuple[str, int]]:
    with connect(hub) as conn:
        rows = conn.execute("SELECT sku, price::text, quantity FROM hub.channel_offer WHERE channel = 'tinymart'")
        return {sku: (price, quantity) for sku, price, quantity in rows}


def _ledger(hub: str, dataset: str) -> list[tuple[Any, ...]]:
    with connect(hub) as conn:
        return conn.execute(
            "SELECT dag_id, task_id, status, rows_read, rows_written, rows_rejected, details FROM audit.transfer "
            "WHERE dataset = %s AND 'channel:tinymart' IN (source, target) ORDER BY seq",
            (dataset,),
        ).fetchall()


def test_a_kind_registered_outside_the_package_publishes_and_reads_back(world: dict[str, Any]) -> None:
    hub, simulator = world["hub"], world["simulator"]
    _run(DAG_ORDER, world["tmp"] / "logs-1")

    offers = _hub_offers(hub)
    assert len(offers) == len(simulator.offers) + 1  # every ERP SKU is priced for the channel
    shown = {sku: (o["price"], o["quantity"]) for sku, o in simulator.offers.items()}
    assert shown == {sku: value for sku, value in offers.items() if sku != UNLISTED}
    assert simulator.batches and max(simulator.batches) <= MAX_ITEMS
    assert sum(simulator.batches) == len(offers)  # one item per SKU: its price and quantity travel together

    (publish,) = _ledger(hub, "offer_update")
    assert publish[:6] == ("hub_to_marketplaces", "publish_tinymart", "success", 2 * len(offers), 2 * len(shown), 2)
    assert publish[6]["rejected_skus"] == [UNLISTED]
    assert publish[6]["requests"] == len(simulator.batches)
    with connect(hub) as conn:
        errors = conn.execute(
            "SELECT DISTINCT error FROM hub.outbox WHERE channel = 'tinymart' AND status = 'failed'"
        ).fetchall()
    assert len(errors) == 1 and UNLISTED in errors[0][0] and "not listed" in errors[0][0]

    (first_read,) = _ledger(hub, "channel_reconciliation")
    assert first_read[:4] == ("marketplaces_to_hub_reconciliation", "reconcile_tinymart", "success", len(shown))
    # The unlisted SKU, refused item by item, is the one difference: reported as missing, not re-sent.
    assert (first_read[6]["differences"], first_read[6]["requeued"]) == (1, 0)
    assert first_read[6]["sample"][0].startswith(f"{UNLISTED} missing")

    # The seller edits one price directly on Tinymart: the read-back finds it and the hub's value goes out again.
    edited = sorted(shown)[3]
    with simulator.lock:
        simulator.offers[edited]["price"] = "0.99"
    _run(("marketplaces_to_hub_reconciliation", "hub_to_marketplaces"), world["tmp"] / "logs-2")
    second_read = _ledger(hub, "channel_reconciliation")[-1]
    assert (second_read[6]["differences"], second_read[6]["requeued"]) == (2, 1)
    assert simulator.offers[edited]["price"] == offers[edited][0]
    assert Decimal(simulator.offers[edited]["price"]) != Decimal("0.99")
