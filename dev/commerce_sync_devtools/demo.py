"""The demo: run every DAG once, in dependency order, against the sandbox; print what happened.

Used by ``make demo`` (``commerce-sync-dev demo``). The DAGs run through ``DAG.test()`` as ``airflow
dags test`` does (the real task code, the real hub, the real simulators on 127.0.0.1), one after
another in the order the Assets would trigger them. The summary is read back from the audit ledger,
so it shows what was recorded, not what the runner believes happened. Exit code 0 only if every DAG
run succeeded, every expected transfer is in the ledger with status success, and the ledger's hash
chain verifies.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from psycopg.rows import dict_row

from commerce_sync.audit.ledger import verify
from commerce_sync.db import connect
from commerce_sync.settings import data_dir
from commerce_sync_sandbox.prepare import prepare_sandbox, sandbox_dir
from commerce_sync_sandbox.simulators import simulators

DAG_ORDER = (
    "hub_maintenance",
    "erp_to_hub_products",
    "suppliers_to_hub_offers",
    "hub_to_channel_offers",
    "hub_to_marketplaces",
    "hub_to_catalog_feeds",
    "marketplaces_to_hub_reconciliation",
)


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def sandbox_servers() -> Iterator[None]:
    """Run the sandbox simulators for the duration of the demo (unless already running)."""
    feeds_port = int(os.environ.get("SANDBOX_FEEDS_PORT", "8701"))
    ports = {"feeds": feeds_port, **{spec.name: spec.port() for spec in simulators()}}
    if all(_port_open(port) for port in ports.values()):
        print("sandbox already running on ports " + "/".join(str(port) for port in ports.values()))
        yield
        return
    log = sandbox_dir() / "server.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "commerce_sync_sandbox",
                "serve",
                "--data-dir",
                str(sandbox_dir()),
                *(option for name, port in ports.items() for option in (f"--{name}-port", str(port))),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while not all(_port_open(port) for port in ports.values()):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the sandbox simulators did not start; see {log}")
            time.sleep(0.2)
        yield
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def print_simulator_summaries() -> None:
    """What each simulator that offers a summary saw (asked over HTTP: they run in the sandbox process)."""
    lines = []
    for spec in simulators():
        if spec.summary is None:
            continue
        try:
            line = spec.summary(f"http://127.0.0.1:{spec.port()}")
        except OSError as error:  # requests' errors are OSErrors: a summary never fails the demo
            line = f"{spec.title}: no summary ({type(error).__name__})"
        if line:
            lines.append(line)
    if lines:
        print("\nSimulators")
        for line in lines:
            print(f"  {line}")


def run_dags(dag_ids: tuple[str, ...] | list[str], log_dir: Path) -> list[tuple[str, bool, float, Path]]:
    """Run DAGs once, in order, in one child process; return (dag_id, ok, seconds, log) per DAG.

    The results file and the runner's log are this call's own (named by process and a random
    tag): concurrent demo runs sharing ``log_dir`` never read or delete each other's results.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    run_tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    results_file = log_dir / f"results-{run_tag}.jsonl"
    runner_log = log_dir / f"runner-{run_tag}.log"
    with runner_log.open("wb") as out:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "commerce_sync_devtools.run_dags",
                "--log-dir",
                str(log_dir),
                "--results",
                str(results_file),
                *dag_ids,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        )
    done = {}
    if results_file.exists():
        for line in results_file.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            done[record["dag_id"]] = record
        results_file.unlink()
    outcome = []
    for dag_id in dag_ids:
        record = done.get(dag_id)
        if record is None:
            outcome.append((dag_id, False, 0.0, runner_log))
        else:
            outcome.append((dag_id, record["state"] == "success", float(record["seconds"]), Path(record["log"])))
    return outcome


def run_dag(dag_id: str, log_dir: Path) -> tuple[bool, float, Path]:
    """Run one DAG once; return (succeeded, seconds, log file)."""
    _, ok, seconds, log_file = run_dags([dag_id], log_dir)[0]
    return ok, seconds, log_file


def ledger_summary(hub_url: str, since: datetime) -> list[dict[str, Any]]:
    """Ledger rows written since ``since``, oldest first."""
    with connect(hub_url) as conn, conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            """SELECT seq, dag_id, task_id, source, target, dataset, status, rows_read, rows_written,
                      rows_rejected, rows_changed, message, details
               FROM audit.transfer WHERE finished_at >= %s ORDER BY seq""",
            (since,),
        )
        return list(cur)


def _print_summary(rows: list[dict[str, Any]], hub_url: str) -> list[str]:
    problems: list[str] = []
    print("\nSources -> hub")
    print(f"  {'source':<18}{'read':>8}{'loaded':>8}{'quarantined':>13}{'changed':>9}  status")
    for r in rows:
        if r["target"] == "hub" and r["dataset"] in ("product", "supplier_offer"):
            print(
                f"  {r['source']:<18}{r['rows_read']:>8}{r['rows_written']:>8}{r['rows_rejected']:>13}"
                f"{r['rows_changed']:>9}  {r['status']}"
            )
    print("\nChannels")
    for r in rows:
        if r["dataset"] == "channel_offer" and r["task_id"] in ("compute_offers", "compute_feed_offers"):
            content = r["details"].get("content_rows")
            print(
                f"  {r['target']:<18} offers changed: {r['rows_changed']} of {r['rows_read']} "
                f"(outbox rows: {r['details'].get('outbox_rows', 0)}"
                + (f", content rows: {content})" if content is not None else ")")
            )
    for r in rows:
        if r["task_id"] == "write_feed":
            d = r["details"]
            print(
                f"  {r['target']:<18} feed {d.get('path')}: {d.get('item_count')} items, "
                f"{r['rows_changed']} changed, {'rewritten' if d.get('rewritten') else 'unchanged, not rewritten'}"
            )
    for r in rows:
        if r["dataset"] == "offer_update":
            print(
                f"  {r['target']:<18} marketplace updates applied: {r['rows_written']}, "
                f"rejected: {r['rows_rejected']}, {r['details'].get('request_noun', 'request')}s: "
                f"{r['details'].get('requests', 0)}"
            )
    for r in rows:
        if r["dataset"] == "channel_reconciliation":
            d = r["details"]
            print(
                f"  {r['source']:<18} read back {r['rows_read']} offers: {d.get('differences', 0)} difference(s) "
                f"from the hub's published state (policy {d.get('policy')}, re-queued {d.get('requeued', 0)})"
            )
    for r in rows:
        if r["dataset"] == "order" and r["source"] == "hub":
            d = r["details"]
            print(
                f"  {r['target']:<18} orders handed over: {d.get('handed', 0)}, cancelled there: "
                f"{d.get('cancelled_in_erp', 0)}, refused: {len(d.get('refused', []))}, reservations taken over "
                f"by the ERP: {d.get('reservations_taken_over', 0)}"
            )
    failed = [r for r in rows if r["status"] != "success"]
    for r in failed:
        problems.append(f"transfer {r['seq']} ({r['dag_id']}.{r['task_id']}) {r['status']}: {r['message']}")
    expected = {"product", "supplier_offer", "channel_offer", "offer_update", "channel_reconciliation", "order"}
    missing = expected - {r["dataset"] for r in rows}
    if missing:
        problems.append(f"no ledger rows for: {', '.join(sorted(missing))}")
    with connect(hub_url) as conn:
        result = verify(conn)
    state = "verified" if result.ok else f"BROKEN at seq {result.first_broken_seq}: {result.problem}"
    print(f"\nAudit ledger: {result.rows_checked} transfers, chain {state}; head {result.head_hash}")
    if not result.ok:
        problems.append("audit ledger does not verify")
    return problems


ORDER_DAGS = ("marketplaces_to_hub_orders", "hub_to_marketplaces")
# What the demo buys on the simulators: (channel, units, paid). The SKUs are picked at run time among
# those every marketplace lists with stock to spare, below the listing caps (so the change shows).
PURCHASES = (("allegro", 2, True), ("ebay", 1, True), ("amazon", 1, False))


def _marketplace_urls() -> dict[str, str]:
    return {
        "allegro": f"http://127.0.0.1:{os.environ.get('SANDBOX_ALLEGRO_PORT', '8702')}",
        "ebay": f"http://127.0.0.1:{os.environ.get('SANDBOX_EBAY_PORT', '8703')}",
        "amazon": f"http://127.0.0.1:{os.environ.get('SANDBOX_AMAZON_PORT', '8704')}",
    }


def buy_on_marketplaces(hub_url: str) -> list[tuple[str, str, str, int, bool]]:
    """Buy a few units on the simulators, as shoppers would; return (channel, order id, SKU, units, paid)."""
    from commerce_sync_sandbox.orders import buy

    with connect(hub_url) as conn:
        skus = [
            row[0]
            for row in conn.execute(
                "SELECT sku FROM hub.channel_offer WHERE channel IN ('allegro', 'ebay', 'amazon') "
                "GROUP BY sku HAVING count(*) = 3 AND min(quantity) > 3 AND max(quantity) < 400 ORDER BY sku LIMIT %s",
                (len(PURCHASES),),
            )
        ]
    urls = _marketplace_urls()
    bought = []
    for (channel, units, paid), sku in zip(PURCHASES, skus, strict=False):
        bought.append((channel, buy(urls[channel], sku, units, paid=paid), sku, units, paid))
    return bought


def _print_orders(hub_url: str, bought: list[tuple[str, str, str, int, bool]]) -> list[str]:
    from commerce_sync.channels.publish import open_marketplace
    from commerce_sync.config import load_config

    problems: list[str] = []
    print("\nOrders (bought on the simulators, imported, reserved, handed to the ERP)")
    print(f"  {'channel':<9}{'order':<40}{'SKU':<12}{'units':>6}  {'status':<10}{'reservation':<13}ERP hand-off")
    skus = sorted({sku for _, _, sku, _, _ in bought})
    with connect(hub_url) as conn:
        for channel, order_id, sku, units, _paid in bought:
            row = conn.execute(
                "SELECT o.status, r.state, o.erp_state FROM hub.sales_order AS o "
                "LEFT JOIN hub.stock_reservation AS r USING (channel, order_id) "
                "WHERE o.channel = %s AND o.order_id = %s",
                (channel, order_id),
            ).fetchone()
            if row is None:
                problems.append(f"{channel} order {order_id} was not imported")
                continue
            print(f"  {channel:<9}{order_id:<40}{sku:<12}{units:>6}  {row[0]:<10}{row[1] or '-':<13}{row[2]}")
        hub_quantities = {
            (c, s): q
            for c, s, q in conn.execute(
                "SELECT channel, sku, quantity FROM hub.channel_offer WHERE sku = ANY(%s)", (skus,)
            ).fetchall()
        }
        sent_here = conn.execute(
            "SELECT target, sum(rows_changed) FROM audit.transfer WHERE dag_id = 'marketplaces_to_hub_orders' "
            "AND task_id = 'push_quantities' AND dataset = 'offer_update' AND status = 'success' "
            "GROUP BY target ORDER BY target"
        ).fetchall()
    if sent_here:
        print(
            "\n  Sent by the orders run itself (push_quantities, no hub_to_marketplaces run waited for): "
            + ", ".join(f"{target.removeprefix('channel:')} {int(rows)} row(s)" for target, rows in sent_here)
        )
    else:
        problems.append("push_quantities sent no quantity itself (COMMERCE_SYNC_INLINE_PUBLISH=0?)")
    print("\n  The new quantities: what the hub computed / what each marketplace shows now")
    config = load_config()
    shown: dict[tuple[str, str], int | None] = {}
    for channel_id in ("allegro", "ebay", "amazon"):
        with open_marketplace(config.channel(channel_id), "read_back") as market:
            for offer in market.read_offers(skus if market.reads_back_by_sku else None):
                if offer.sku in skus:
                    shown[(channel_id, offer.sku)] = offer.quantity
    for sku in skus:
        cells = "  ".join(
            f"{channel}: {hub_quantities.get((channel, sku), '-')}/{shown.get((channel, sku), '-')}"
            for channel in ("allegro", "ebay", "amazon", "google")
        )
        print(f"  {sku:<12} {cells}")
        for channel in ("allegro", "ebay", "amazon"):
            if (channel, sku) in shown and shown[(channel, sku)] != hub_quantities.get((channel, sku)):
                problems.append(
                    f"{channel} shows {shown[(channel, sku)]} for {sku}, the hub computed "
                    f"{hub_quantities.get((channel, sku))}"
                )
    return problems


async def _first_event(trigger: Any, timeout: float, after_start: Any = None) -> tuple[dict[str, Any] | None, float]:
    """Run ``trigger`` as the triggerer would until its first event (or ``timeout``); (payload, seconds)."""
    import asyncio

    events = trigger.run()
    waiting = asyncio.ensure_future(events.__anext__())
    started = time.monotonic()
    try:
        if after_start is not None:
            started = await after_start()
        event = await asyncio.wait_for(asyncio.shield(waiting), timeout)
        return dict(event.payload), time.monotonic() - started
    except TimeoutError:
        return None, time.monotonic() - started
    finally:
        waiting.cancel()
        with contextlib.suppress(BaseException):
            await waiting
        await events.aclose()


def ring_doorbells(erp_url: str) -> list[str]:
    """Both event triggers once, in this process (in Airflow the triggerer runs them as AssetWatchers):
    the order doorbell hears the units just bought; the ERP doorbell hears a touched ERP row (its
    ``updated_at`` moves, its data does not, so the next ERP sync changes nothing)."""
    import asyncio

    from commerce_sync.triggers import (
        APPLICATION_NAME,
        ERP_CONN_ID,
        ERP_NOTIFY_CHANNEL,
        ERP_TABLE,
        OrderDoorbellTrigger,
        PostgresChangeTrigger,
    )

    problems: list[str] = []
    print("\nDoorbells (run once here; in Airflow the triggerer runs them and each event starts a DAG run)")
    payload, seconds = asyncio.run(_first_event(OrderDoorbellTrigger(poll_seconds=0.5), 30))
    if payload is None:
        problems.append("the order doorbell did not ring for the units just bought (30 s)")
    else:
        print(
            f"  order doorbell rang after {seconds:.1f} s: news on {', '.join(payload.get('channels', []))}"
            " -> starts marketplaces_to_hub_orders"
        )

    async def touch_when_listening() -> float:
        for _ in range(100):  # until the trigger's LISTEN connection is up
            with connect(erp_url) as conn:
                if conn.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE application_name = %s", (APPLICATION_NAME,)
                ).fetchone():
                    break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)  # past its first watermark read
        with connect(erp_url) as conn:
            conn.execute("UPDATE erp.products SET updated_at = now() WHERE sku = (SELECT min(sku) FROM erp.products)")
        return time.monotonic()

    bell = PostgresChangeTrigger(
        conn_id=ERP_CONN_ID, channel=ERP_NOTIFY_CHANNEL, table=ERP_TABLE, poll_seconds=20, reconnect_seconds=0.5
    )
    payload, seconds = asyncio.run(_first_event(bell, 30, touch_when_listening))
    if payload is None:
        problems.append("the ERP doorbell did not ring for a touched ERP row (30 s)")
    else:
        print(
            f"  ERP doorbell rang {seconds:.1f} s after the commit (woken by {payload.get('woken_by')}, "
            f"watermark {payload.get('watermark')}) -> starts erp_to_hub_products"
        )
    return problems


def run_demo(*, erp_url: str, hub_url: str) -> int:
    """Prepare the sandbox, run every DAG once and print the summary; 0 only if all went well."""
    print(prepare_sandbox(erp_url, sandbox_dir()))
    log_dir = data_dir() / "demo-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    since = datetime.now(UTC)
    failures: list[str] = []
    with sandbox_servers():
        # The first order import starts each marketplace's order cursor ("from now on").
        for dag_id, ok, seconds, log_file in run_dags((*DAG_ORDER, ORDER_DAGS[0]), log_dir):
            print(f"  {dag_id:<26} {'ok' if ok else 'FAILED':<7} {seconds:5.1f} s   log: {log_file}")
            if not ok:
                failures.append(f"DAG {dag_id} failed; see {log_file}")
        bought = buy_on_marketplaces(hub_url)
        print("\nBought on the simulators: " + ", ".join(f"{u} x {s} on {c}" for c, _, s, u, _ in bought))
        failures += ring_doorbells(erp_url)
        for dag_id, ok, seconds, log_file in run_dags(ORDER_DAGS, log_dir):
            print(f"  {dag_id:<26} {'ok' if ok else 'FAILED':<7} {seconds:5.1f} s   log: {log_file}")
            if not ok:
                failures.append(f"DAG {dag_id} failed; see {log_file}")
        order_problems = _print_orders(hub_url, bought)
        print_simulator_summaries()
    problems = failures + order_problems + _print_summary(ledger_summary(hub_url, since), hub_url)
    if problems:
        print("\nDemo FAILED:\n  " + "\n  ".join(problems))
        return 1
    print(
        "\nDemo OK. Run it again: the catalog sync changes nothing (the demo buys a few more units). "
        "Change a price and rerun:\n"
        "  .venv/bin/commerce-sync-dev sandbox set-price SKU-000001 999.00 && make demo"
    )
    return 0
