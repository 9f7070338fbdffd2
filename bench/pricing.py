"""Benchmark: full vs incremental pricing of one channel at N offers after a 1 % input change.

Standalone: creates its own database ``cs_bench_pricing_<pid>`` (dropped at the end), loads N
products with stock and (for 30 % of them) a chosen supplier offer with COPY, prices the channel once
(initial: every offer is new), marks the outbox sent (steady state), then ``--rounds`` times (default 3):
change 1 % of the inputs (purchase prices, stock and supply, a third each) and recompute with
``full=True`` (every SKU recomputed), change another 1 % and recompute incrementally (only SKUs whose
inputs changed). The medians are compared (single runs on a shared machine vary by 1.5x). Prints the numbers and
writes ``bench/results/pricing-latest.json``. It reports; it never asserts timings.

    .venv/bin/python bench/pricing.py --n 1000000 [--channel allegro|google] [--change-rate 0.01]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "include"))

from commerce_sync.audit import ledger  # noqa: E402
from commerce_sync.config import RuleOverride, load_config  # noqa: E402
from commerce_sync.db import connect, drop_database, ensure_database, with_database  # noqa: E402
from commerce_sync.hub.migrate import migrate  # noqa: E402
from commerce_sync.pricing.compute import PricingSetup, compute_channel_offers  # noqa: E402

BASE_URL = os.environ.get("BENCH_DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/postgres"
RUN = ledger.RunContext(run_id="bench", dag_id="bench_pricing", task_id="compute")


def seed(dsn: str, n: int, rng: random.Random) -> None:
    tid = str(uuid.uuid4())
    with connect(dsn) as conn, conn.cursor() as cur:
        with cur.copy(
            "COPY hub.product (sku, name, brand, category, purchase_price, currency, vat_rate, active, row_hash, "
            "transfer_id) FROM STDIN"
        ) as copy:
            for i in range(n):
                copy.write_row(
                    (
                        f"SKU-{i:07d}",
                        f"Product {i}",
                        f"brand-{i % 50}",
                        f"cat-{i % 200}",
                        Decimal(rng.randint(100, 500_000)) / 100,
                        "PLN",
                        Decimal("0.23"),
                        True,
                        "h",
                        tid,
                    )
                )
        with cur.copy("COPY hub.stock (sku, location, quantity, reserved, row_hash, transfer_id) FROM STDIN") as copy:
            for i in range(n):
                copy.write_row((f"SKU-{i:07d}", "main", rng.randint(0, 40), rng.randint(0, 3), "h", tid))
        with cur.copy(
            "COPY hub.sku_supply (sku, supplier, supplier_sku, purchase_price, currency, chosen_quantity, "
            "total_quantity, offers_considered, policy, supplier_offer_version, row_hash, transfer_id) FROM STDIN"
        ) as copy:
            for i in range(0, n, 3):
                q = rng.randint(0, 30)
                copy.write_row(
                    (
                        f"SKU-{i:07d}",
                        "acme",
                        f"A-{i}",
                        Decimal(rng.randint(100, 500_000)) / 100,
                        "PLN",
                        q,
                        q,
                        1,
                        "cheapest_in_stock",
                        1,
                        "h",
                        tid,
                    )
                )
        # Inputs were loaded "before" pricing ever ran (as after the nightly ERP load).
        for table in ("product", "stock", "sku_supply"):
            cur.execute(f"UPDATE hub.{table} SET updated_at = now() - interval '1 day'")
    with connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE hub.product, hub.stock, hub.sku_supply")


def change_inputs(dsn: str, n: int, rate: float, rng: random.Random) -> int:
    """Change ``rate`` of the SKUs' inputs: a third prices, a third stock, a third supply."""
    skus = rng.sample(range(n), int(n * rate))
    third = len(skus) // 3
    with connect(dsn) as conn:
        conn.execute(
            "UPDATE hub.product SET purchase_price = purchase_price * 1.07, version = version + 1 WHERE sku = ANY(%s)",
            ([f"SKU-{i:07d}" for i in skus[:third]],),
        )
        conn.execute(
            "UPDATE hub.stock SET quantity = quantity + 5 WHERE sku = ANY(%s)",
            ([f"SKU-{i:07d}" for i in skus[third : 2 * third]],),
        )
        conn.execute(
            "UPDATE hub.sku_supply SET chosen_quantity = chosen_quantity + 4, total_quantity = total_quantity + 4 "
            "WHERE sku = ANY(%s)",
            ([f"SKU-{i:07d}" for i in skus[2 * third :]],),
        )
    return len(skus)


def drain(dsn: str) -> None:
    """Mark the pending outbox rows sent, as the channel's publisher would between two pricing runs."""
    with connect(dsn) as conn:
        conn.execute("UPDATE hub.outbox SET status = 'sent', sent_at = now() WHERE status = 'pending'")


def timed(label: str, fn: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - started
    print(
        f"{label:<34} {seconds:8.2f} s  {result.mode:<11} evaluated {result.offers_evaluated:>9,} "
        f"changed {result.offers_changed:>7,} outbox {result.outbox_rows:>7,}"
    )
    return seconds, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--channel", default="allegro", help="channel id from include/config/channels.yaml")
    parser.add_argument("--change-rate", type=float, default=0.01)
    parser.add_argument("--rounds", type=int, default=3, help="full + incremental pairs; medians are reported")
    parser.add_argument("--keep", action="store_true", help="keep the database")
    args = parser.parse_args()
    config = load_config()
    channel = config.channel(args.channel)
    rule = config.rule_for(channel)
    setup = PricingSetup(
        config.rules,
        (RuleOverride(channel=channel.id, level="category", match="cat-7", rule=rule.id),),
    )
    rng = random.Random(42)
    dsn = with_database(BASE_URL, f"cs_bench_pricing_{os.getpid()}")
    ensure_database(dsn)
    try:
        migrate(dsn)
        started = time.perf_counter()
        seed(dsn, args.n, rng)
        load_s = time.perf_counter() - started
        print(f"# N={args.n:,} channel={channel.id} ({channel.kind}); inputs loaded in {load_s:.1f} s")
        initial_s, initial = timed(
            "initial (all offers new)", lambda: compute_channel_offers(dsn, channel, rule, RUN, setup=setup)
        )
        # Steady state: the publisher has sent the initial offers (the outbox is drained, as between
        # two real runs) and autovacuum has analysed the tables the initial run filled (it would within
        # minutes; without it the planner still believes hub.outbox is empty).
        drain(dsn)
        with connect(dsn, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE hub.channel_offer, hub.outbox, audit.change")
        nochange_s, _ = timed(
            "incremental, nothing changed", lambda: compute_channel_offers(dsn, channel, rule, RUN, setup=setup)
        )
        fulls: list[tuple[float, Any]] = []
        incs: list[tuple[float, Any]] = []
        for round_no in range(1, args.rounds + 1):
            # Each round: a 1 % change recomputed in full, then another 1 % change recomputed
            # incrementally, each starting from a drained outbox as after a publisher run.
            drain(dsn)
            changed = change_inputs(dsn, args.n, args.change_rate, rng)
            fulls.append(
                timed(
                    f"[{round_no}] full after {changed:,} changes",
                    lambda: compute_channel_offers(dsn, channel, rule, RUN, setup=setup, full=True),
                )
            )
            drain(dsn)
            changed = change_inputs(dsn, args.n, args.change_rate, rng)
            incs.append(
                timed(
                    f"[{round_no}] incremental after {changed:,} changes",
                    lambda: compute_channel_offers(dsn, channel, rule, RUN, setup=setup),
                )
            )
        full_s = statistics.median(t for t, _ in fulls)
        inc_s = statistics.median(t for t, _ in incs)
        full, inc = fulls[-1][1], incs[-1][1]
        ratio = inc_s / full_s
        # Each round's own pair, to show how far single runs scatter around the medians.
        pair_ratios = [i / f for (f, _), (i, _) in zip(fulls, incs, strict=True)]
        print(
            f"# median of {args.rounds}: full {full_s:.2f} s, incremental {inc_s:.2f} s; "
            f"incremental / full = {ratio:.1%} (target < 5 %); single rounds "
            + ", ".join(f"{r:.1%}" for r in pair_ratios)
        )
        results = {
            "benchmark": "pricing",
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "n": args.n,
            "channel": channel.id,
            "kind": channel.kind,
            "change_rate": args.change_rate,
            "load_inputs_s": round(load_s, 2),
            "initial_s": round(initial_s, 2),
            "initial_changed": initial.offers_changed,
            "incremental_nothing_changed_s": round(nochange_s, 2),
            "rounds": args.rounds,
            "full_runs_s": [round(t, 2) for t, _ in fulls],
            "incremental_runs_s": [round(t, 2) for t, _ in incs],
            "full_s": round(full_s, 2),
            "full_evaluated": full.offers_evaluated,
            "full_changed": full.offers_changed,
            "incremental_s": round(inc_s, 2),
            "incremental_evaluated": inc.offers_evaluated,
            "incremental_changed": inc.offers_changed,
            "incremental_over_full": round(ratio, 4),
            "incremental_over_full_by_round": [round(r, 4) for r in pair_ratios],
        }
        out = ROOT / "bench" / "results" / "pricing-latest.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        print(f"# wrote {out.relative_to(ROOT)}")
    finally:
        if not args.keep:
            drop_database(dsn)
    return 0


if __name__ == "__main__":
    sys.exit(main())
