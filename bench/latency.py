"""Event-driven latency under the real Airflow: from an ERP commit to every marketplace showing the new price.

``make bench-latency`` (see bench/README.md): builds an ERP of N products with the bench generator
(``generate.load_erp_rows``; its trigger NOTIFYs like the sandbox's), syncs and prices it into a hub
in-process (the same entry points as the DAGs), marks that initial catalog as published except for
the K SKUs the bench will change, serves the Allegro, eBay and Amazon simulators with those K
offers, and starts api-server, scheduler, dag-processor and triggerer (LocalExecutor) with the
ERP, pricing and marketplace DAGs. A hand-triggered marketplace run publishes the K offers
(warm-up). Then it makes ``--changes`` single-SKU purchase-price changes in the ERP, each after a
random pause, and waits until every simulator shows the hub's new price. Nothing is triggered by
hand after the warm-up: the ERP doorbell does it.

Reported (never asserted): p50 / p95 / max from the ERP commit to each marketplace and to the last
one, and per hop (doorbell event, run created, each task's queue wait and run time), read back from
Airflow's REST API. Results: ``bench/results/latency-<utc>.json`` and a Markdown table on stdout.

With ``--sales S`` it also times the sale path: S single-unit orders placed on the Allegro simulator,
from the sale to eBay and Amazon showing the hub's new quantity (the order doorbell probes Allegro every
``--order-poll-seconds`` and its event runs ``marketplaces_to_hub_orders``, which imports the order and
pushes the quantities and sends them itself; only what it could not send goes through
``hub_to_marketplaces``). The sale's hops name the doorbell event; a sale the 5-minute cron picked up
instead says so.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from commerce_sync.db import connect, drop_database, ensure_database, with_database  # noqa: E402
from commerce_sync.hub.migrate import migrate  # noqa: E402
from commerce_sync_devtools.airflow_stack import AirflowStack  # noqa: E402
from commerce_sync_sandbox.erp import load_erp  # noqa: E402
from commerce_sync_sandbox.server import SandboxServer  # noqa: E402

SERVER = os.environ.get("BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
MARKETPLACES = ("allegro", "ebay", "amazon")
DAGS = ("erp_to_hub_products", "hub_to_channel_offers", "hub_to_marketplaces")
ORDERS_DAG = "marketplaces_to_hub_orders"
SALE_TARGETS = ("ebay", "amazon")  # a sale on Allegro must reach the others
DOORBELL = "commerce_erp.erp.products.changes"
ORDER_DOORBELL = "commerce_hub.marketplace_orders.news"


def log(message: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {message}", flush=True)


@dataclass
class Change:
    """One single-SKU ERP change and when each marketplace showed its result."""

    sku: str
    cost: str  # the new ERP cost; for a sale, the units sold
    committed_at: float  # epoch seconds, right after the ERP COMMIT returned (or the sale was taken)
    kind: str = "erp"  # erp | sale
    arrived_at: dict[str, float] = field(default_factory=dict)
    hops: dict[str, float] = field(default_factory=dict)

    @property
    def targets(self) -> tuple[str, ...]:
        return MARKETPLACES if self.kind == "erp" else SALE_TARGETS

    def latency(self, marketplace: str) -> float | None:
        at = self.arrived_at.get(marketplace)
        return None if at is None else at - self.committed_at

    def last(self) -> float | None:
        values = [self.latency(m) for m in self.targets]
        return None if any(v is None for v in values) else max(v for v in values if v is not None)


# ---------------------------------------------------------------------------------- set-up
def build_hub(hub: str, erp: str, n: int, k: int) -> None:
    """ERP of ``n`` generated products (the first ``k`` named like the simulators' offers), synced and priced."""
    from commerce_sync.audit.ledger import RunContext
    from commerce_sync.config import load_config
    from commerce_sync.pricing.compute import PricingSetup, compute_channel_offers
    from commerce_sync.pricing.rates import configured_rates, load_rates
    from commerce_sync.settings import data_dir
    from commerce_sync.sources.erp import sync_erp
    from generate import load_erp_rows

    started = time.monotonic()
    ensure_database(erp)
    load_erp_rows(erp, n)
    with connect(erp) as conn:
        # SKU-0000001 -> SKU-000001: the simulators carry offers for SKU-000001..SKU-<k>.
        conn.execute("UPDATE erp.products SET sku = 'SKU-' || substr(sku, 6) WHERE sku <= %s", (f"SKU-{k:07d}",))
    log(f"ERP: {n:,} products in {time.monotonic() - started:.0f} s")
    ensure_database(hub)
    migrate(hub)
    config = load_config()
    run = RunContext(run_id="bench_latency", dag_id="bench_latency", task_id="initial")
    t = time.monotonic()
    result = sync_erp(hub, config.erp, erp, run, full_resync=True)
    log(f"hub: ERP sync of {result.rows_read:,} rows in {time.monotonic() - t:.0f} s")
    # The rates the DAG's load_exchange_rates would load: without them its first run changes every
    # channel's fingerprint and recomputes 1M offers per channel during the warm-up.
    load_rates(hub, configured_rates(config.exchange_rates, data_dir()), run)
    setup = PricingSetup(config.rules, tuple(config.rule_overrides))
    for channel in config.channels:
        if not channel.enabled:
            continue
        t = time.monotonic()
        priced = compute_channel_offers(hub, channel, config.rule_for(channel), run, setup=setup, full=True)
        log(f"hub: {channel.id} priced, {priced.offers_changed:,} offers in {time.monotonic() - t:.0f} s")
    kept = [f"SKU-{i:06d}" for i in range(1, k + 1)]
    with connect(hub) as conn:
        # The initial catalog counts as published, except the k offers the simulators carry (warm-up).
        sent = conn.execute(
            "UPDATE hub.outbox SET status = 'sent', sent_at = now() WHERE status = 'pending' AND sku <> ALL(%s)",
            (kept,),
        ).rowcount
    with connect(hub, autocommit=True) as conn:
        for table in ("hub.outbox", "hub.channel_offer", "hub.product", "hub.stock"):
            conn.execute(f"VACUUM ANALYZE {table}")
    log(f"hub ready in {time.monotonic() - started:.0f} s ({sent:,} outbox rows marked as published)")


def connections(hub: str, erp: str, server: SandboxServer) -> dict[str, str]:
    """The Airflow connections of the DAGs (env ``AIRFLOW_CONN_*``), pointing at the bench's services."""
    return {
        "AIRFLOW_CONN_HUB_DB": hub,
        "AIRFLOW_CONN_ERP_DB": erp,
        **server.airflow_connections(),
    }


# ---------------------------------------------------------------------------------- measuring
def hub_prices(hub: str, sku: str) -> tuple[Decimal | None, dict[str, Decimal]]:
    with connect(hub) as conn:
        cost = conn.execute("SELECT purchase_price FROM hub.product WHERE sku = %s", (sku,)).fetchone()
        rows = conn.execute(
            "SELECT channel, price FROM hub.channel_offer WHERE sku = %s AND channel = ANY(%s)",
            (sku, list(MARKETPLACES)),
        ).fetchall()
    return (cost[0] if cost else None), {c: p for c, p in rows}


def wait_until_shown(
    hub: str,
    server: SandboxServer,
    change: Change,
    before: dict[str, Decimal],
    timeout: float,
    check: Callable[[], None],
) -> None:
    """Poll until every marketplace shows the hub's new price of the change's SKU (or time out)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(change.arrived_at) < len(MARKETPLACES):
        cost, prices = hub_prices(hub, change.sku)
        if cost == Decimal(change.cost):
            shown = server.prices(change.sku)
            now = time.time()
            for m in MARKETPLACES:
                if m not in change.arrived_at and m in prices and prices[m] != before.get(m) and shown[m] == prices[m]:
                    change.arrived_at[m] = now
        time.sleep(0.2)
        check()


def pending_outbox(hub: str) -> int:
    with connect(hub) as conn:
        row = conn.execute("SELECT count(*) FROM hub.outbox WHERE status = 'pending'").fetchone()
    return int(row[0]) if row else 0


def has_order_cursor(hub: str, channel: str) -> bool:
    with connect(hub) as conn:
        return conn.execute("SELECT 1 FROM hub.order_cursor WHERE channel = %s", (channel,)).fetchone() is not None


def hub_quantities(hub: str, sku: str) -> dict[str, int]:
    with connect(hub) as conn:
        rows = conn.execute(
            "SELECT channel, quantity FROM hub.channel_offer WHERE sku = %s AND channel = ANY(%s)",
            (sku, list(MARKETPLACES)),
        ).fetchall()
    return {c: int(q) for c, q in rows}


def shown_quantities(server: SandboxServer, sku: str) -> dict[str, int | None]:
    return {
        "allegro": server.simulator.available(sku),
        "ebay": server.ebay.available(sku),
        "amazon": server.amazon.available(sku),
    }


def below_cap(hub: str, skus: list[str]) -> list[str]:
    """The SKUs eBay and Amazon list with at least one unit and below their ``max_listed_quantity``."""
    from commerce_sync.config import load_config

    caps = {m: load_config().channel(m).max_listed_quantity for m in SALE_TARGETS}
    with connect(hub) as conn:
        rows = conn.execute(
            "SELECT sku, channel, quantity FROM hub.channel_offer WHERE channel = ANY(%s) AND sku = ANY(%s)",
            (list(SALE_TARGETS), skus),
        ).fetchall()
    listed: dict[str, dict[str, int]] = {}
    for sku, channel, quantity in rows:
        listed.setdefault(sku, {})[channel] = int(quantity)
    return [sku for sku in skus if all(0 < listed.get(sku, {}).get(m, 0) < (caps[m] or 10**9) for m in SALE_TARGETS)]


def wait_until_sale_shown(
    hub: str, server: SandboxServer, change: Change, before: dict[str, int], timeout: float, check: Callable[[], None]
) -> None:
    """Poll until eBay and Amazon show the hub's lowered quantity of the sold SKU (or time out)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(change.arrived_at) < len(SALE_TARGETS):
        quantities = hub_quantities(hub, change.sku)
        shown = shown_quantities(server, change.sku)
        now = time.time()
        for m in SALE_TARGETS:
            if (
                m not in change.arrived_at
                and quantities.get(m, before.get(m)) < before.get(m, 0)
                and shown[m] == quantities[m]
            ):
                change.arrived_at[m] = now
        time.sleep(0.2)
        check()


def _ts(value: str | None) -> float | None:
    return datetime.fromisoformat(value).timestamp() if value else None


def _first(items: list[dict[str, Any]], key: str, after: float) -> dict[str, Any] | None:
    found = [i for i in items if (_ts(i.get(key)) or 0) >= after]
    return min(found, key=lambda i: _ts(i[key]) or 0) if found else None


def breakdown(airflow: AirflowStack, changes: list[Change]) -> None:
    """Attribute each change's time to hops, from the doorbell's events and the runs' task instances."""
    events = airflow.asset_events(DOORBELL)
    runs = {dag: airflow.dag_runs(dag) for dag in DAGS}
    tis: dict[str, list[dict[str, Any]]] = {}

    def instances(dag: str, run: dict[str, Any]) -> list[dict[str, Any]]:
        key = f"{dag}/{run['dag_run_id']}"
        if key not in tis:
            tis[key] = airflow.task_instances(dag, run["dag_run_id"])
        return tis[key]

    def task_hops(prefix: str, dag: str, run: dict[str, Any], hops: dict[str, float]) -> float:
        """Queue and run time of each task of ``run`` (mapped: the slowest instance); returns the last end."""
        by_task: dict[str, list[dict[str, Any]]] = {}
        for ti in instances(dag, run):
            by_task.setdefault(ti["task_id"], []).append(ti)
        last_end = 0.0
        for task_id, group in by_task.items():
            done = [
                t
                for t in group
                if t.get("start_date") and t.get("end_date") and not (t["state"] == "skipped" and not t.get("duration"))
            ]
            if not done:
                continue
            slowest = max(done, key=lambda t: _ts(t["end_date"]) or 0)
            queued = _ts(slowest.get("queued_when")) or _ts(slowest["start_date"]) or 0
            hops[f"{prefix}{task_id}: queued"] = (_ts(slowest["start_date"]) or 0) - queued
            hops[f"{prefix}{task_id}: run"] = (_ts(slowest["end_date"]) or 0) - (_ts(slowest["start_date"]) or 0)
            last_end = max(last_end, _ts(slowest["end_date"]) or 0)
        return last_end

    sales = any(c.kind == "sale" for c in changes)
    orders_runs = airflow.dag_runs(ORDERS_DAG) if sales else []
    order_events = [
        e
        for e in (airflow.asset_events(ORDER_DOORBELL) if sales else [])
        if "allegro" in (((e.get("extra") or {}).get("payload") or {}).get("channels") or [])
    ]
    for change in changes:
        hops = change.hops
        if change.kind == "sale":
            rung = _first(order_events, "timestamp", change.committed_at - 1)
            if rung is not None:
                rung_at = _ts(rung["timestamp"]) or 0
                hops["sale -> order doorbell event"] = rung_at - change.committed_at
                orders = _first(orders_runs, "queued_at", rung_at - 1)
                if orders is None:
                    continue
                hops["order event -> orders run queued"] = (_ts(orders["queued_at"]) or 0) - rung_at
                hops["orders run queued -> started"] = (_ts(orders["start_date"]) or 0) - (
                    _ts(orders["queued_at"]) or 0
                )
            else:
                orders = _first(orders_runs, "start_date", change.committed_at)
                if orders is None:
                    continue
                hops["sale -> orders run started (no doorbell event: cron)"] = (
                    _ts(orders["start_date"]) or 0
                ) - change.committed_at
            task_hops("orders ", ORDERS_DAG, orders, hops)
            push = [t for t in instances(ORDERS_DAG, orders) if t["task_id"] == "push_quantities" and t.get("end_date")]
            push_end = _ts(push[0]["end_date"]) if push else None
            starter = [
                t
                for t in instances(ORDERS_DAG, orders)
                if t["task_id"] == "start_marketplace_publish" and t.get("state") == "success"
            ]
            if push_end and not starter:  # push_quantities sent every quantity itself: no marketplace run
                last = max(change.arrived_at.values()) if change.arrived_at else push_end
                hops["push_quantities end (sent from the orders run) -> last simulator seen"] = last - push_end
                continue
            market = _first(runs[DAGS[2]], "queued_at", (push_end or 0) - 1) if push_end else None
            if market is None:
                continue
            hops["quantity event -> marketplace run queued"] = (_ts(market["queued_at"]) or 0) - (push_end or 0)
            publish_end = task_hops("marketplaces ", DAGS[2], market, hops)
            last = max(change.arrived_at.values()) if change.arrived_at else publish_end
            hops["last publish -> last simulator seen (poll 0.2 s)"] = last - publish_end
            continue
        event = _first(events, "timestamp", change.committed_at - 1)
        if event is None:
            continue
        event_at = _ts(event["timestamp"]) or 0
        hops["commit -> doorbell event"] = event_at - change.committed_at
        erp = _first(runs[DAGS[0]], "queued_at", event_at - 1)
        if erp is None:
            continue
        hops["event -> ERP run queued"] = (_ts(erp["queued_at"]) or 0) - event_at
        erp_end = task_hops("ERP ", DAGS[0], erp, hops)
        sync = [t for t in instances(DAGS[0], erp) if t["task_id"] == "sync_erp_products"]
        sync_end = (_ts(sync[0]["end_date"]) if sync and sync[0].get("end_date") else None) or erp_end
        pricing = _first(runs[DAGS[1]], "queued_at", sync_end - 1)
        if pricing is None:
            continue
        hops["ERP product event -> pricing run queued"] = (_ts(pricing["queued_at"]) or 0) - sync_end
        compute = [t for t in instances(DAGS[1], pricing) if t["task_id"] == "compute_offers" and t.get("end_date")]
        first_compute_end = min((_ts(t["end_date"]) or 0) for t in compute) if compute else 0
        task_hops("pricing ", DAGS[1], pricing, hops)
        market = _first(runs[DAGS[2]], "queued_at", first_compute_end - 1)
        if market is None:
            continue
        hops["offer event -> marketplace run queued"] = (_ts(market["queued_at"]) or 0) - first_compute_end
        publish_end = task_hops("marketplaces ", DAGS[2], market, hops)
        last = max(change.arrived_at.values()) if change.arrived_at else publish_end
        hops["last publish -> last simulator seen (poll 0.2 s)"] = last - publish_end


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def report(changes: list[Change], meta: dict[str, Any]) -> str:
    lines: list[str] = []
    for kind, title, targets in (
        ("erp", "ERP commit → marketplace", MARKETPLACES),
        ("sale", "Allegro sale → other marketplaces' quantity", SALE_TARGETS),
    ):
        chosen = [c for c in changes if c.kind == kind]
        if not chosen:
            continue
        lines += [
            f"{title}, {len(chosen)} single-SKU events, hub of {meta['n']:,} SKUs ({meta['date']}, {meta['host']}):",
            "",
            "| to | p50 s | p95 s | max s | arrived |",
            "|---|---:|---:|---:|---:|",
        ]
        for name in (*targets, "last marketplace"):
            values = [
                v
                for v in ((c.last() if name == "last marketplace" else c.latency(name)) for c in chosen)
                if v is not None
            ]
            lines.append(
                f"| {name} | {percentile(values, 0.5):.1f} | {percentile(values, 0.95):.1f} | "
                f"{max(values, default=float('nan')):.1f} | {len(values)}/{len(chosen)} |"
            )
        hop_names: list[str] = []
        for c in chosen:
            hop_names += [h for h in c.hops if h not in hop_names]
        lines += ["", "| hop | p50 s | p95 s | max s |", "|---|---:|---:|---:|"]
        for hop in hop_names:
            values = [c.hops[hop] for c in chosen if hop in c.hops]
            lines.append(
                f"| {hop} | {percentile(values, 0.5):.1f} | {percentile(values, 0.95):.1f} | {max(values):.1f} |"
            )
        lines.append("")
    return "\n".join(lines)


@contextmanager
def databases(prefix: str, keep: bool) -> Iterator[tuple[str, str]]:
    hub, erp = with_database(SERVER, f"{prefix}_hub"), with_database(SERVER, f"{prefix}_erp")
    try:
        yield hub, erp
    finally:
        if not keep:
            drop_database(hub)
            drop_database(erp)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="products in the ERP and the hub")
    parser.add_argument("--changes", type=int, default=20, help="single-SKU ERP changes to time")
    parser.add_argument("--sales", type=int, default=0, help="single-unit Allegro sales to time (orders DAG)")
    parser.add_argument("--pause", default="2,20", help="random pause between changes, min,max seconds")
    parser.add_argument("--offers", type=int, default=200, help="offers on each simulator (the SKUs changed)")
    parser.add_argument("--poll-seconds", default="20", help="the doorbell's watermark poll")
    parser.add_argument("--order-poll-seconds", default="5", help="the order doorbell's poll (with --sales)")
    parser.add_argument("--timeout", type=float, default=300, help="give up on one change after this long")
    parser.add_argument("--prefix", default="cs_bench_latency", help="database name prefix (hub, erp)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--keep", action="store_true", help="keep the databases and the Airflow home")
    parser.add_argument("--reuse", action="store_true", help="reuse the databases of an earlier --keep run")
    parser.add_argument("--build-only", action="store_true", help="build the ERP and hub, keep them, stop")
    parser.add_argument(
        "--metadata",
        choices=("postgres", "sqlite"),
        default="postgres",
        help="Airflow's metadata database: a fresh PostgreSQL one (as in production) or SQLite (as `make ui`)",
    )
    args = parser.parse_args()
    pause_min, pause_max = (float(x) for x in args.pause.split(","))
    # The bench hub is thrown away: a key of its own signs its ledger (the Airflow components inherit it).
    os.environ.setdefault("COMMERCE_SYNC_LEDGER_KEY", secrets.token_hex(32))
    work = args.out / f"latency-work-{args.n}"
    work.mkdir(parents=True, exist_ok=True)
    os.environ["COMMERCE_SYNC_DATA_DIR"] = str(work / "data")
    rng = random.Random(20261205)
    with databases(args.prefix, args.keep or args.build_only) as (hub, erp):
        if not args.reuse:
            drop_database(hub)
            drop_database(erp)
            build_hub(hub, erp, args.n, args.offers)
        else:  # an earlier build: bring both to the current code's schema (idempotent, no rows added)
            migrate(hub)
            load_erp(erp, n=0)
            # The simulators start empty each run (their order event ids start again at 1), unlike a real
            # marketplace: an order cursor kept from the last run would be past every new event.
            with connect(hub) as conn:
                conn.execute("DELETE FROM hub.order_cursor")
        if args.build_only:
            log(f"built {hub} and {erp}; measure with --reuse")
            return
        state = work / "simulators"
        for stale in state.glob("*.json"):
            stale.unlink()
        state.mkdir(exist_ok=True)
        server = SandboxServer(state / "feeds", state / "allegro_state.json", catalog_n=args.offers).start()
        env = {
            **connections(hub, erp, server),
            "COMMERCE_SYNC_ERP_POLL_SECONDS": args.poll_seconds,
            "COMMERCE_SYNC_ORDER_POLL_SECONDS": args.order_poll_seconds,
            "COMMERCE_SYNC_DATA_DIR": str(work / "data"),
        }
        for leftover in ("airflow", "dags", "component-logs", "plugins"):  # a fresh Airflow every time
            shutil.rmtree(work / leftover, ignore_errors=True)
        dag_ids = (*DAGS, ORDERS_DAG) if args.sales else DAGS
        metadata = with_database(SERVER, f"{args.prefix}_airflow")
        drop_database(metadata)  # a fresh Airflow every time
        if args.metadata == "postgres":
            ensure_database(metadata)
        metadata_url = "postgresql+psycopg2://" + metadata.split("://", 1)[1] if args.metadata == "postgres" else None
        stack = AirflowStack(work, REPO, dag_ids, env, metadata_url=metadata_url)
        changes: list[Change] = []
        try:
            stack.migrate()
            stack.start()
            stack.wait_ready(dag_ids)
            log("Airflow is up; warm-up: publishing the simulators' offers")
            stack.call("POST", f"/api/v2/dags/{DAGS[2]}/dagRuns", {"logical_date": None})
            # The warm-up is done when the cron's catch-up runs and the warm-up publish have finished and
            # nothing is pending in the outbox; with sales, also when Allegro's first order import stored its
            # cursor (the doorbell rings for a channel without one at start; a sale before it is not read).
            stack.wait_until(
                "the warm-up runs to finish",
                lambda: (
                    all(r["state"] in ("success", "failed") for dag in DAGS for r in stack.dag_runs(dag))
                    and not pending_outbox(hub)
                    and (not args.sales or has_order_cursor(hub, "allegro"))
                ),
                1800,
                interval=3,
            )
            time.sleep(25)  # let the doorbell settle on the ERP's watermark
            offered = [f"SKU-{i:06d}" for i in range(1, args.offers + 1)]
            sellable = below_cap(hub, offered)  # a sale of a SKU listed at the cap changes no listed quantity
            if len(sellable) < args.sales:
                raise SystemExit(f"only {len(sellable)} of the {args.offers} offered SKUs are listed below the cap")
            sold = rng.sample(sellable, args.sales)
            changed = rng.sample([sku for sku in offered if sku not in sold], args.changes)
            plan = ["erp"] * args.changes + ["sale"] * args.sales
            rng.shuffle(plan)
            picks = {"erp": iter(changed), "sale": iter(sold)}
            pool = [next(picks[kind]) for kind in plan]
            for number, (kind, sku) in enumerate(zip(plan, pool, strict=True), start=1):
                time.sleep(rng.uniform(pause_min, pause_max))
                if kind == "sale":
                    before_q = hub_quantities(hub, sku)
                    server.simulator.orders.buy(sku, 1, force=True)
                    change = Change(sku=sku, cost="1", committed_at=time.time(), kind="sale")
                    changes.append(change)
                    wait_until_sale_shown(hub, server, change, before_q, args.timeout, stack.check_alive)
                else:
                    _, before = hub_prices(hub, sku)
                    with connect(erp) as conn:
                        row = conn.execute(
                            "UPDATE erp.products SET purchase_price = round(purchase_price * 1.05 + 0.01, 2) "
                            "WHERE sku = %s RETURNING purchase_price",
                            (sku,),
                        ).fetchone()
                        assert row is not None, sku
                        conn.commit()
                        committed = time.time()
                    change = Change(sku=sku, cost=str(row[0]), committed_at=committed)
                    changes.append(change)
                    wait_until_shown(hub, server, change, before, args.timeout, stack.check_alive)
                log(
                    f"{number}/{len(plan)} {kind} {sku}: "
                    + ", ".join(f"{m} {change.latency(m) or float('nan'):.1f} s" for m in change.targets)
                )
            try:
                breakdown(stack, changes)
            except Exception as exc:  # the end-to-end figures stand without the hop attribution
                log(f"per-hop breakdown failed: {type(exc).__name__}: {exc}")
        except BaseException:
            for name in ("scheduler", "triggerer", "api-server"):
                log(f"--- {name} log tail\n{stack.log_tail(name, 3000)}")
            raise
        finally:
            stack.stop()
            server.stop()
        if not args.keep:
            stack.remove()
            drop_database(metadata)
    meta = {
        "n": args.n,
        "changes": len([c for c in changes if c.kind == "erp"]),
        "sales": len([c for c in changes if c.kind == "sale"]),
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "host": f"{os.cpu_count()} cores",
        "pause_s": [pause_min, pause_max],
        "poll_seconds": args.poll_seconds,
        "metadata": args.metadata,
        "order_poll_seconds": args.order_poll_seconds,
    }
    table = report(changes, meta)
    print(table)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (args.out / f"latency-{stamp}.json").write_text(
        json.dumps({"meta": meta, "changes": [asdict(c) for c in changes], "table": table}, indent=1)
    )


if __name__ == "__main__":
    main()
