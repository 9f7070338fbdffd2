"""Order import into the hub: N orders over Allegro, eBay and Amazon, API limits lifted (issue 18).

    python bench/orders.py --n 10000 [--catalog 2000] [--limit 100]

Sets up its own hub and sandbox ERP databases (dropped afterwards) with a catalog of ``--catalog`` SKUs
synced and priced for the three marketplaces, the simulators in this process, then:

1. creates N orders on the simulators (bulk, a quarter of them unpaid; not timed);
2. **import**: each channel's reader (the real HTTP clients) and the hub's store: orders, lines,
   reservations, oversold detection, change rows, ledger, cursor — what the import task does;
3. **push**: the pricing engine's incremental run over the SKUs the orders touched, for every channel,
   which enqueues the new quantities in the outbox (plus the resend to the channel that sold);
4. **floor**: the same orders stored again from memory (``store_batch`` without HTTP), into a fresh
   copy of the hub — what the database part costs by itself;
5. **naive**: the idiom the store replaces — one INSERT per order, line and reservation, each with its
   own availability query — on 1,000 orders, scaled.

Reports orders/s per step and peak RSS; asserts nothing. Target: >= 1,000 orders/s into the hub,
reservations and outbox included.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.order_readers import _markets, simulators  # noqa: E402

from commerce_sync.audit import ledger  # noqa: E402
from commerce_sync.channels.orders import OrderBatch  # noqa: E402
from commerce_sync.config import load_config, load_quality  # noqa: E402
from commerce_sync.connections import get_connection  # noqa: E402
from commerce_sync.db import connect, database_name, drop_database, ensure_database, with_database  # noqa: E402
from commerce_sync.hub.migrate import migrate  # noqa: E402
from commerce_sync.orders.importer import (  # noqa: E402
    ORDERS_PER_TRANSACTION,
    import_orders,
    join_reads,
    push_quantities,
)
from commerce_sync.orders.store import store_batch  # noqa: E402
from commerce_sync.pricing.compute import PricingSetup, compute_channel_offers  # noqa: E402
from commerce_sync.pricing.rates import configured_rates, load_rates  # noqa: E402
from commerce_sync.settings import data_dir  # noqa: E402
from commerce_sync.sources.erp import sync_erp  # noqa: E402
from commerce_sync_sandbox import orders as sandbox_orders  # noqa: E402
from commerce_sync_sandbox.erp import load_erp  # noqa: E402

MARKETPLACES = ("allegro", "ebay", "amazon")
RUN = ledger.RunContext(run_id="bench-orders", dag_id="bench", task_id="orders")


def _rss_mb() -> int:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def _prepare(base: str, tmp: Path, catalog: int) -> tuple[str, str]:
    hub = with_database(base, f"bench_orders_hub_{os.getpid()}")
    erp = with_database(base, f"bench_orders_erp_{os.getpid()}")
    for url in (hub, erp):
        drop_database(url)
        ensure_database(url)
    migrate(hub)
    load_erp(erp, n=catalog)
    os.environ.update(
        {
            "HUB_DATABASE_URL": hub,
            "AIRFLOW_CONN_HUB_DB": hub,
            "AIRFLOW_CONN_ERP_DB": erp,
            "COMMERCE_SYNC_DATA_DIR": str(tmp),
        }
    )
    os.environ.setdefault("COMMERCE_SYNC_LEDGER_KEY", "bench-throwaway-databases")  # dropped afterwards
    config = load_config()
    sync_erp(hub, config.erp, get_connection(config.erp.conn_id), RUN, quality=load_quality())
    load_rates(hub, configured_rates(config.exchange_rates, data_dir()), RUN)
    setup = PricingSetup(config.rules, tuple(config.rule_overrides))
    for channel in config.channels:
        if channel.id in MARKETPLACES:
            compute_channel_offers(hub, channel, config.rule_for(channel), RUN, setup=setup)
    return hub, erp


def _copy_of(hub: str, name: str) -> str:
    url = with_database(hub, name)
    drop_database(url)
    with psycopg.connect(with_database(hub, "postgres"), autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (database_name(hub),),
        )
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{database_name(hub)}"')
    return url


def _naive(hub: str, batches: list[tuple[str, OrderBatch]], limit: int) -> float:
    """One statement per order, line and reservation, each reservation with its own availability query."""
    began = time.perf_counter()
    done = 0
    seen: set[tuple[str, str]] = set()
    with connect(hub) as conn:
        for channel, batch in batches:
            for order in batch.orders:
                if (channel, order.order_id) in seen:
                    continue
                seen.add((channel, order.order_id))
                if done >= limit:
                    return (time.perf_counter() - began) / done
                conn.execute(
                    "INSERT INTO hub.sales_order (channel, order_id, status, marketplace_status, transfer_id) "
                    "VALUES (%s, %s, %s, %s, gen_random_uuid()) ON CONFLICT DO NOTHING",
                    (channel, "naive-" + order.order_id, order.status, order.marketplace_status),
                )
                for line in order.lines:
                    conn.execute(
                        "INSERT INTO hub.order_line (channel, order_id, line_id, sku, quantity) "
                        "VALUES (%s, %s, %s, %s, %s)",
                        (channel, "naive-" + order.order_id, line.line_id, line.sku, line.quantity),
                    )
                    conn.execute(
                        "SELECT (SELECT sum(quantity - reserved) FROM hub.stock WHERE sku = %s) - "
                        "coalesce((SELECT quantity FROM hub.reservation_outstanding WHERE sku = %s), 0)",
                        (line.sku, line.sku),
                    ).fetchone()
                    conn.execute(
                        "INSERT INTO hub.stock_reservation (channel, order_id, line_id, sku, quantity, state, "
                        "transfer_id) VALUES (%s, %s, %s, %s, %s, 'held', gen_random_uuid())",
                        (channel, "naive-" + order.order_id, line.line_id, line.sku, line.quantity),
                    )
                conn.commit()
                done += 1
    return (time.perf_counter() - began) / max(done, 1)


def _grouped(recorded: list[tuple[str, OrderBatch]], per_transaction: int | None) -> list[tuple[str, OrderBatch]]:
    """Each channel's reads in the order they came, joined until they hold ``per_transaction`` orders."""
    by_kind: dict[str, list[list[OrderBatch]]] = {}
    for kind, batch in recorded:
        groups = by_kind.setdefault(kind, [[]])
        if groups[-1] and sum(len(b.orders) for b in groups[-1]) >= (per_transaction or 0):
            groups.append([])
        groups[-1].append(batch)
    return [(kind, join_reads(pages)) for kind, groups in by_kind.items() for pages in groups if pages]


def run(
    n: int,
    catalog: int,
    limit: int,
    base: str,
    *,
    sequential: bool = False,
    ports: list[int] | None = None,
    orders_per_transaction: int | None = ORDERS_PER_TRANSACTION,
) -> dict[str, Any]:
    results: dict[str, Any] = {
        "n": n,
        "catalog": catalog,
        "limit": limit,
        "sequential": sequential,
        "orders_per_transaction": orders_per_transaction,
        "simulators": "own process" if ports else "this process",
    }
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        hub, erp = _prepare(base, tmp, catalog)
        copies: list[str] = []
        try:
            with simulators(tmp, catalog, ports) as urls:
                markets = _markets(urls, workers=4)
                config = load_config()
                # Start each cursor at "now", as the first scheduled import does.
                for kind in MARKETPLACES:
                    import_orders(hub, config.channel(kind), markets[kind], RUN, limit=limit)
                for index, kind in enumerate(MARKETPLACES):
                    share = n // 3 + (1 if index < n % 3 else 0)
                    wanted = [
                        {"sku": f"SKU-{(number * 7 + index) % catalog + 1:06d}", "quantity": 1, "paid": number % 4 != 0}
                        for number in range(share)
                    ]
                    sandbox_orders.buy_bulk(urls[kind], wanted, force=True)
                # Keep what the readers returned, for the floor run.
                recorded: list[tuple[str, OrderBatch]] = []
                for market_kind, market in markets.items():
                    original = market.read_orders

                    def keep(cursor: str | None, *, limit: int = 100, _k: str = market_kind, _o: Any = original) -> Any:
                        batch = _o(cursor, limit=limit)
                        recorded.append((_k, batch))
                        return batch

                    market.read_orders = keep  # type: ignore[method-assign]
                floor_hub = _copy_of(hub, f"bench_orders_floor_{os.getpid()}")
                copies.append(floor_hub)
                naive_hub = _copy_of(hub, f"bench_orders_naive_{os.getpid()}")
                copies.append(naive_hub)
                touched: list[tuple[str, str]] = []
                per_channel = {}

                def one(kind: str) -> None:
                    t0 = time.perf_counter()
                    result = import_orders(
                        hub,
                        config.channel(kind),
                        markets[kind],
                        RUN,
                        limit=limit,
                        orders_per_transaction=orders_per_transaction,
                    )
                    per_channel[kind] = {
                        "orders": result.totals.new_orders,
                        "s": round(time.perf_counter() - t0, 2),
                        "batches": result.batches,
                        "oversold_lines": len(result.totals.oversold),
                    }
                    touched.extend((kind, sku) for sku in result.totals.touched_skus)

                began = time.perf_counter()
                if sequential:
                    for kind in MARKETPLACES:
                        one(kind)
                else:  # as marketplaces_to_hub_orders runs it: one mapped import task per channel
                    with ThreadPoolExecutor(len(MARKETPLACES)) as pool:
                        list(pool.map(one, MARKETPLACES))
                imported_s = time.perf_counter() - began
                began = time.perf_counter()
                if sequential:
                    computed = push_quantities(hub, config, RUN, resend=touched)
                else:  # push_quantities (outbox channels, with the resend) and push_feed_quantities side by side
                    with ThreadPoolExecutor(2) as pool:
                        marketplaces = pool.submit(
                            push_quantities, hub, config, RUN, resend=touched, family="marketplace"
                        )
                        feeds = pool.submit(push_quantities, hub, config, RUN, family="feed")
                        computed = marketplaces.result() + feeds.result()
                push_s = time.perf_counter() - began
                with connect(hub) as conn:
                    stored = conn.execute("SELECT count(*) FROM hub.sales_order").fetchone()
                    held = conn.execute("SELECT count(*) FROM hub.stock_reservation").fetchone()
                    queued = conn.execute(
                        "SELECT count(*) FROM hub.outbox WHERE status = 'pending' AND field = 'quantity'"
                    ).fetchone()
                for market in markets.values():
                    market.close()
            # The floor: the same reads, grouped per transaction as the import grouped them, stored from
            # memory into a copy of the hub as it was before.
            groups = _grouped(recorded, orders_per_transaction)
            began = time.perf_counter()
            with connect(floor_hub) as conn:
                for kind, batch in groups:
                    if batch.orders:
                        with conn.transaction():
                            transfer = ledger.Transfer(source=f"channel:{kind}", target="hub", dataset="order", run=RUN)
                            store_batch(conn, kind, batch, transfer)
            floor_s = time.perf_counter() - began
            naive_per_order = _naive(naive_hub, recorded, limit=1000)
        finally:
            for url in (*copies, hub, erp):
                drop_database(url)
    total = imported_s + push_s
    results.update(
        {
            "per_channel": per_channel,
            "orders_stored": stored[0] if stored else 0,
            "reservations": held[0] if held else 0,
            "quantity_rows_queued": queued[0] if queued else 0,
            "channels_pushed": len(computed),
            "import_s": round(imported_s, 2),
            "import_orders_per_s": round(n / imported_s),
            "push_s": round(push_s, 2),
            "import_and_push_orders_per_s": round(n / total),
            "floor_store_only_s": round(floor_s, 2),
            "floor_orders_per_s": round(n / floor_s),
            "naive_orders_per_s": round(1 / naive_per_order),
            "peak_rss_mb": _rss_mb(),
        }
    )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--catalog", type=int, default=2_000)
    parser.add_argument("--limit", type=int, default=100, help="orders per read_orders call (one hub transaction)")
    parser.add_argument(
        "--database", default=os.environ.get("BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    )
    parser.add_argument(
        "--sequential",
        action="store_true",
        help="import the channels one after the other and push in one call (default: as the DAG runs them, "
        "one import per channel at once, then the marketplace and feed pushes side by side)",
    )
    parser.add_argument(
        "--per-transaction",
        type=int,
        default=ORDERS_PER_TRANSACTION,
        help="orders stored per hub transaction, reads adding up to it (default: the DAG's); 0: one read each",
    )
    parser.add_argument(
        "--process-ports",
        help="feeds,allegro,ebay,amazon ports: run the simulators as a `sandbox serve` process (default: in this "
        "process, where their CPU counts against the importer's)",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    ports = [int(p) for p in args.process_ports.split(",")] if args.process_ports else None
    results = run(
        args.n,
        args.catalog,
        args.limit,
        args.database,
        sequential=args.sequential,
        ports=ports,
        orders_per_transaction=args.per_transaction or None,
    )
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
