"""Order import, marketplace side: N orders over the Allegro, eBay and Amazon simulators, read back by the
product's readers with the API limits lifted. Reports orders/s per marketplace and peak RSS; asserts nothing.

    python bench/order_readers.py --n 10000 [--limit 100] [--workers 4] [--process-ports 8711,8712,8713,8714]

By default the simulators run in this process (sharing its GIL with the readers); ``--process-ports`` runs
them as ``python -m commerce_sync_sandbox serve`` on those ports (feeds, allegro, ebay, amazon), as the demo
and the DAGs see them.

The hub side (storing orders, reservations, outbox) is not in this figure: it measures what the readers
and simulators cost, the part of the 10,000-order benchmark that happens before the database.
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from commerce_sync.channels.allegro import AllegroClient, AllegroMarketplace
from commerce_sync.channels.amazon import AmazonClient, AmazonMarketplace
from commerce_sync.channels.ebay import EbayClient, EbayMarketplace
from commerce_sync.channels.marketplace import Marketplace
from commerce_sync.transport.http import TokenBucket
from commerce_sync_sandbox import orders as sandbox_orders
from commerce_sync_sandbox.server import SandboxServer

LIFTED = (1_000_000.0, 1.0, 1_000_000.0)


SELLER_ID, MARKETPLACE_ID = "A2SANDBOXSELLER", "A1C3SOZRARQ6R3"  # the Amazon simulator's defaults


@contextlib.contextmanager
def simulators(tmp: Path, catalog: int, ports: list[int] | None) -> Iterator[dict[str, str]]:
    """Base URLs of running simulators: in this process, or a ``serve`` child process on ``ports``."""
    if ports is None:
        with SandboxServer(tmp / "feeds", tmp / "allegro.json", catalog_n=catalog) as server:
            yield {"allegro": server.allegro_url, "ebay": server.ebay_url, "amazon": server.amazon_url}
        return
    feeds, allegro, ebay, amazon = ports
    command = [
        sys.executable,
        "-m",
        "commerce_sync_sandbox",
        "serve",
        "--data-dir",
        str(tmp),
        "--products",
        str(catalog),
        "--feeds-port",
        str(feeds),
        "--allegro-port",
        str(allegro),
        "--ebay-port",
        str(ebay),
        "--amazon-port",
        str(amazon),
    ]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        child.stdout.readline()  # the line with the URLs: serving
        yield {
            kind: f"http://127.0.0.1:{port}"
            for kind, port in (("allegro", allegro), ("ebay", ebay), ("amazon", amazon))
        }
    finally:
        child.terminate()
        child.wait(timeout=30)


def _markets(urls: dict[str, str], workers: int) -> dict[str, Marketplace]:
    return {
        "allegro": AllegroMarketplace(
            AllegroClient(urls["allegro"], "demo-client", "demo-secret", rate_limiter=TokenBucket(*LIFTED)),
            form_fetch_workers=workers,
        ),
        "ebay": EbayMarketplace(
            EbayClient(
                urls["ebay"],
                "demo-ebay-client",
                "demo-ebay-secret",
                "demo-ebay-refresh-token",
                rate_limiter=TokenBucket(*LIFTED),
            )
        ),
        "amazon": AmazonMarketplace(
            AmazonClient(
                urls["amazon"],
                "amzn1.application-oa2-client.sandbox",
                "demo-amazon-secret",
                "Atzr|demo-amazon-refresh-token",
                seller_id=SELLER_ID,
                marketplace_id=MARKETPLACE_ID,
                orders_rate=LIFTED,
                order_gets_rate=LIFTED,
            )
        ),
    }


def run(n: int, limit: int, workers: int, catalog: int = 300, ports: list[int] | None = None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp, simulators(Path(tmp), catalog, ports) as urls:
        markets = _markets(urls, workers)
        cursors = {kind: market.read_orders(None).cursor for kind, market in markets.items()}
        results: dict[str, Any] = {}
        for index, (kind, url) in enumerate(urls.items()):
            share = n // 3 + (1 if index < n % 3 else 0)
            wanted = [
                {"sku": f"SKU-{number % catalog + 1:06d}", "quantity": 1, "paid": number % 4 != 0}
                for number in range(share)
            ]
            began = time.perf_counter()
            ids = sandbox_orders.buy_bulk(url, wanted, force=True)
            created = time.perf_counter() - began
            began = time.perf_counter()
            seen: set[str] = set()
            cursor, batches, more = cursors[kind], 0, True
            while more:
                batch = markets[kind].read_orders(cursor, limit=limit)
                seen.update(order.order_id for order in batch.orders)
                cursor, more, batches = batch.cursor, batch.more, batches + 1
            read = time.perf_counter() - began
            missing = len(set(ids) - seen)
            results[kind] = {
                "orders": len(ids),
                "create_s": round(created, 2),
                "read_s": round(read, 2),
                "orders_per_s": round(len(ids) / read) if read else None,
                "batches": batches,
                "missing": missing,
            }
        for market in markets.values():
            market.close()
    total_read = sum(result["read_s"] for result in results.values())
    results["all"] = {
        "orders": n,
        "read_s": round(total_read, 2),
        "orders_per_s": round(n / total_read) if total_read else None,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--limit", type=int, default=100, help="orders per read_orders call")
    parser.add_argument("--workers", type=int, default=4, help="Allegro checkout forms read in parallel")
    parser.add_argument("--process-ports", help="feeds,allegro,ebay,amazon ports for a separate sandbox process")
    args = parser.parse_args()
    ports = [int(port) for port in args.process_ports.split(",")] if args.process_ports else None
    for kind, result in run(args.n, args.limit, args.workers, ports=ports).items():
        print(f"{kind:8s} {result}")


if __name__ == "__main__":
    main()
