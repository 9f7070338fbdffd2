"""Benchmark every stage of the real pipeline at N SKUs against the I/O floor and the naive idiom.

Each stage calls the pipeline's own entry point (``sync_erp``, ``sync_supplier``,
``compute_channel_offers``, ``write_feed``, ``sync_listings``/``publish_outbox``,
``ledger.append``/``verify``) in a child process of its own (``spawn``), so its peak RSS
(``VmHWM``) is its own and nothing is inherited between stages. Per stage we record wall time,
rows/s, the child's CPU time (user+sys), the database's active time on the bench databases
(``pg_stat_database.active_time``; ``pg_stat_statements`` is not preloaded on this server) and the
WAL the server wrote meanwhile (server-wide).

Phases (one run): ``full`` (first sync of everything), ``rerun`` (the same again: idempotency,
every stage must report 0 changes), ``floor`` (COPY the same rows into keyed tables, COPY them
out, write them with ``lxml.etree.xmlfile``), ``naive`` (PostgresHook ``insert_rows``,
``DataFrame.to_sql``, a whole in-memory XML tree; on a sample, extrapolated linearly), ``delta``
(``--change-rate`` of ERP prices changed, then every stage again, and the publish to the Allegro
simulator), ``ledger`` (append + verify). ``--scaling`` adds full syncs at other sizes.

Results: a table on stdout, ``bench/results/bench-<time>.json`` (+ ``latest.json``) and
``latest.png``. Targets are reported, never asserted.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

import generate  # noqa: E402 - bench/ is not a package

SERVER = os.environ.get("BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
TARGETS = {
    "full_over_floor_max": 3.0,
    "delta_over_full_max": 0.05,
    "naive_over_ours_min": 20.0,
    "peak_rss_mb_max": 1024,
    "feed_items_per_s_min": 100_000,
}


# ============================================================== child side (one process per stage)
def _hwm_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _run_ctx(task: str) -> Any:
    from commerce_sync.audit.ledger import RunContext

    return RunContext(run_id="bench", dag_id="bench", task_id=task)


class _Parts:
    """Times named sub-steps by wrapping module functions (the pipeline code itself is untouched)."""

    def __init__(self) -> None:
        self.parts: dict[str, dict[str, float]] = {}

    def wrap(self, module: Any, attribute: str, label: str) -> None:
        original = getattr(module, attribute)

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                part = self.parts.setdefault(label, {"seconds": 0.0})
                part["seconds"] += time.perf_counter() - started
                part["hwm_mb_after"] = round(_hwm_mb(), 1)

        setattr(module, attribute, timed)


def _stage_erp(p: dict[str, Any], parts: _Parts) -> dict[str, Any]:
    from commerce_sync.config import ErpSource
    from commerce_sync.sources import erp as erp_mod

    parts.wrap(erp_mod, "_stage", "extract+validate+COPY")
    source = ErpSource(
        id="erp",
        conn_id="erp_db",
        query=(
            "SELECT p.sku, p.ean AS gtin, p.name, p.brand, p.category, p.description, p.purchase_price, "
            "p.vat_rate, p.stock, p.reserved, p.active, p.updated_at FROM erp.products AS p"
        ),
    )
    r = erp_mod.sync_erp(p["hub"], source, p["erp"], _run_ctx("erp"))
    return {"rows": r.rows_read, "changed": r.rows_changed, "quarantined": r.rows_quarantined}


def _stage_supplier(p: dict[str, Any], parts: _Parts) -> dict[str, Any]:
    from commerce_sync.config import Supplier
    from commerce_sync.sources import supplier_load

    parts.wrap(supplier_load, "fetch", "fetch (sha256 of file)")
    parts.wrap(supplier_load, "stage", "parse+COPY stage")
    parts.wrap(supplier_load, "_validate", "quality gate (SQL checks + quarantine + GX evidence)")
    supplier = Supplier.model_validate(p["supplier"])
    work = Path(p["work"])
    r = supplier_load.sync_supplier(p["hub"], supplier, None, _run_ctx(f"supplier_{supplier.id}"), work)
    return {"rows": r.rows_read, "changed": r.rows_changed, "quarantined": r.rows_quarantined}


def _stage_pricing(p: dict[str, Any], parts: _Parts) -> dict[str, Any]:
    from commerce_sync.config import Channel, PricingRule
    from commerce_sync.pricing.compute import compute_channel_offers

    channel = Channel.model_validate(p["channel"])
    r = compute_channel_offers(p["hub"], channel, PricingRule.model_validate(p["rule"]), _run_ctx("pricing"))
    return {"rows": r.offers_evaluated, "changed": r.offers_changed, "outbox_rows": r.outbox_rows}


def _stage_feed(p: dict[str, Any], parts: _Parts) -> dict[str, Any]:
    from commerce_sync.channels.feeds import write_feed
    from commerce_sync.config import Channel

    channel = Channel.model_validate(p["channel"])
    r = write_feed(p["hub"], channel, Path(p["work"]), _run_ctx("feed"))
    size = Path(r.path).stat().st_size
    return {"rows": r.item_count, "changed": r.items_changed, "rewritten": r.rewritten, "bytes": size}


def _stage_allegro(p: dict[str, Any], parts: _Parts) -> dict[str, Any]:
    from commerce_sync.audit import ledger
    from commerce_sync.channels.allegro import AllegroClient, AllegroMarketplace
    from commerce_sync.channels.marketplace import publish_outbox, sync_listings
    from commerce_sync.config import Channel

    market = AllegroMarketplace(AllegroClient(p["url"], "demo-client", "demo-secret"))
    channel = Channel(id=p["channel_id"], kind="allegro", conn_id="allegro_bench", pricing_rule="bench")
    transfer = ledger.Transfer(source="hub", target=f"channel:{p['channel_id']}", dataset="offer", run=_run_ctx("x"))
    if p["what"] == "listings":
        transfer.dataset = "channel_listing"
        with ledger.recording(p["hub"], transfer):
            count = sync_listings(p["hub"], p["channel_id"], market, transfer)
        return {"rows": count, "changed": transfer.rows_changed}
    with ledger.recording(p["hub"], transfer):
        r = publish_outbox(p["hub"], channel, market, transfer, batch_size=1000)
    return {"rows": r.claimed, "changed": r.sent, "failed": r.failed, "commands": r.requests}


def _stage_ledger(p: dict[str, Any], parts: _Parts) -> dict[str, Any]:
    from commerce_sync.audit import ledger
    from commerce_sync.db import connect

    if p["what"] == "append":
        with connect(p["hub"]) as conn:
            for i in range(p["count"]):
                transfer = ledger.Transfer(source="bench", target="hub", dataset="bench", run=_run_ctx("ledger"))
                transfer.rows_read = i
                ledger.append(conn, transfer, "success")
                conn.commit()  # one transaction per transfer, as in the pipeline
        return {"rows": p["count"], "changed": p["count"]}
    with connect(p["hub"]) as conn:
        result = ledger.verify(conn)
    if not result.ok:
        raise RuntimeError(f"ledger chain broken: {result}")
    return {"rows": result.rows_checked, "changed": 0}


def _stage_floor(p: dict[str, Any], parts: _Parts) -> dict[str, Any]:
    """The I/O floor: plain COPY in/out of keyed tables and a bare xmlfile write."""
    import psycopg
    from psycopg import sql

    hub = p["hub"]
    if p["what"] == "copy_in":
        rows = 0
        with psycopg.connect(hub) as conn:
            conn.execute("DROP TABLE IF EXISTS floor_erp, floor_supplier")
            conn.execute(
                "CREATE TABLE floor_erp (sku text PRIMARY KEY, ean text, name text, brand text, category text, "
                "description text, purchase_price numeric(12,2), vat_rate numeric(5,4), stock integer, "
                "reserved integer, active boolean, updated_at timestamptz)"
            )
            conn.execute(
                "CREATE TABLE floor_supplier (supplier text, supplier_sku text, gtin text, name text, "
                "purchase_price numeric(14,4), currency char(3), quantity integer, "
                "PRIMARY KEY (supplier, supplier_sku))"
            )
            conn.commit()
            # ERP rows: streamed from the ERP database's COPY TO into the hub's COPY FROM.
            with (
                psycopg.connect(p["erp"]) as src,
                src.cursor() as scur,
                conn.cursor() as dcur,
                scur.copy("COPY erp.products TO STDOUT") as out,
                dcur.copy("COPY floor_erp FROM STDIN") as inp,
            ):
                for block in out:
                    inp.write(block)
            conn.commit()
            for feed in p["feeds"]:
                with conn.cursor() as cur, open(feed["tsv"], "rb") as handle:
                    statement = (
                        "COPY floor_supplier (supplier_sku, gtin, name, purchase_price, currency, quantity) "
                        "FROM STDIN WITH (FORMAT text)"
                    )
                    conn.execute(
                        sql.SQL("ALTER TABLE floor_supplier ALTER supplier SET DEFAULT {}").format(
                            sql.Literal(feed["id"])
                        )
                    )
                    with cur.copy(statement) as copy:
                        while block := handle.read(1 << 20):
                            copy.write(block)
                conn.commit()
            rows = conn.execute(
                "SELECT (SELECT count(*) FROM floor_erp) + (SELECT count(*) FROM floor_supplier)"
            ).fetchone()[0]
        return {"rows": rows, "changed": rows}
    if p["what"] == "copy_out":
        rows = 0
        with psycopg.connect(hub) as conn, conn.cursor() as cur:
            for _ in range(p["channels"]):
                with cur.copy("COPY (SELECT * FROM floor_erp ORDER BY sku) TO STDOUT") as copy:
                    for block in copy:
                        rows += bytes(block).count(b"\n")
        return {"rows": rows, "changed": 0}
    # xml: the same rows out of the keyed table, each written as a feed item with xmlfile.
    from lxml import etree

    g = "{http://base.google.com/ns/1.0}"
    count = 0
    out_path = Path(p["work"]) / "floor.xml"
    with psycopg.connect(hub) as conn, conn.cursor(name="floor") as cur, open(out_path, "wb") as raw:
        cur.itersize = 5000
        cur.execute("SELECT sku, ean, name, description, brand, category, purchase_price::text FROM floor_erp")
        with (
            etree.xmlfile(raw, encoding="utf-8") as xf,
            xf.element("rss", version="2.0", nsmap={"g": g[1:-1]}),
            xf.element("channel"),
        ):
            for sku, ean, name, desc, brand, category, price in cur:
                with xf.element("item"):
                    for tag, value in (
                        ("id", sku),
                        ("title", name),
                        ("description", desc),
                        ("price", price + " PLN"),
                        ("brand", brand),
                        ("gtin", ean),
                        ("product_type", category),
                    ):
                        with xf.element(g + tag):
                            xf.write(value)
                count += 1
    return {"rows": count, "changed": 0, "bytes": out_path.stat().st_size}


def _sample_erp_rows(erp_dsn: str, sample: int) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(erp_dsn) as conn:
        return conn.execute("SELECT * FROM erp.products ORDER BY sku LIMIT %s", (sample,)).fetchall()


_NAIVE_DDL = (
    "DROP TABLE IF EXISTS naive_erp; CREATE TABLE naive_erp (sku text PRIMARY KEY, ean text, name text, "
    "brand text, category text, description text, purchase_price numeric(12,2), vat_rate numeric(5,4), "
    "stock integer, reserved integer, active boolean, updated_at timestamptz)"
)


def _stage_naive(p: dict[str, Any], parts: _Parts) -> dict[str, Any]:
    """The naive idioms, on a sample; only the idiom itself is timed (see ``timed_seconds``)."""
    import psycopg

    rows = _sample_erp_rows(p["erp"], p["sample"])
    columns = list(generate.ERP_COLUMNS)
    with psycopg.connect(p["hub"], autocommit=True) as conn:
        conn.execute(_NAIVE_DDL)
    baseline_rss = _hwm_mb()
    started = time.perf_counter()
    if p["what"] == "insert_rows":
        from airflow.providers.postgres.hooks.postgres import PostgresHook

        hook = PostgresHook(postgres_conn_id="cs_bench_hub")
        started = time.perf_counter()  # importing Airflow (~6 s) is not the idiom's cost per row
        hook.insert_rows("naive_erp", rows, target_fields=columns, commit_every=1000)
    elif p["what"] == "to_sql":
        import pandas as pd
        from sqlalchemy import create_engine

        frame = pd.DataFrame.from_records(rows, columns=columns)
        # What read_sql would hand over: numeric as float64 (to_sql maps Decimal objects to VARCHAR).
        frame = frame.astype({"purchase_price": "float64", "vat_rate": "float64"})
        engine = create_engine(p["hub"].replace("postgresql://", "postgresql+psycopg://", 1))
        started = time.perf_counter()  # the DataFrame is given; time only to_sql
        frame.to_sql("naive_erp", engine, if_exists="append", index=False)
        engine.dispose()
    else:  # whole XML tree in memory, then written
        from lxml import etree

        g = "http://base.google.com/ns/1.0"
        rss = etree.Element("rss", version="2.0", nsmap={"g": g})
        channel = etree.SubElement(rss, "channel")
        for sku, ean, name, _brand, category, desc, price, *_ in rows:
            item = etree.SubElement(channel, "item")
            for tag, value in (
                ("id", sku),
                ("title", name),
                ("description", desc),
                ("price", f"{price} PLN"),
                ("gtin", ean),
                ("product_type", category),
            ):
                etree.SubElement(item, f"{{{g}}}{tag}").text = value
        etree.ElementTree(rss).write(str(Path(p["work"]) / "naive.xml"), encoding="utf-8", xml_declaration=True)
    seconds = time.perf_counter() - started
    return {
        "rows": len(rows),
        "changed": 0,
        "timed_seconds": seconds,
        "rss_growth_mb": round(_hwm_mb() - baseline_rss, 1),
    }


STAGES = {
    "erp": _stage_erp,
    "supplier": _stage_supplier,
    "pricing": _stage_pricing,
    "feed": _stage_feed,
    "allegro": _stage_allegro,
    "ledger": _stage_ledger,
    "floor": _stage_floor,
    "naive": _stage_naive,
}


def child(kind: str, params: dict[str, Any], profile_path: str | None) -> dict[str, Any]:
    """Run one stage in this (fresh) process and measure it."""
    import logging

    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("AIRFLOW_CONN_CS_BENCH_HUB", params.get("hub", ""))
    parts = _Parts()
    profiler = None
    if profile_path:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.01)
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    if profiler:
        profiler.start()
    out = STAGES[kind](params, parts)
    if profiler:
        profiler.stop()
    wall = time.perf_counter() - started
    usage1 = resource.getrusage(resource.RUSAGE_SELF)
    if profiler and profile_path:
        Path(profile_path).write_text(
            profiler.output_text(unicode=False, color=False, show_all=False), encoding="utf-8"
        )
    cpu = (usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime)
    return {
        **out,
        "seconds": wall,
        "client_cpu_s": cpu,
        "peak_rss_mb": round(_hwm_mb(), 1),
        "parts": {k: {**v, "seconds": round(v["seconds"], 3)} for k, v in parts.parts.items()},
    }


# ============================================================== parent side
def _url(name: str) -> str:
    from commerce_sync.db import with_database

    return with_database(SERVER, name)


def _db_active_ms(names: list[str]) -> float:
    import psycopg

    with psycopg.connect(SERVER, autocommit=True) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(active_time), 0) FROM pg_stat_database WHERE datname = ANY(%s)", (names,)
        ).fetchone()
        return float(row[0]) if row else 0.0


def _wal_lsn() -> int:
    import psycopg

    with psycopg.connect(SERVER, autocommit=True) as conn:
        row = conn.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone()
        return int(row[0]) if row else 0


class Bench:
    """Runs stages in fresh children and collects their measurements."""

    def __init__(self, args: argparse.Namespace, n: int, out_dir: Path) -> None:
        self.args = args
        self.n = n
        self.work = out_dir / f"work-{n}"
        self.hub = _url("cs_bench_hub")
        self.erp = _url("cs_bench_erp")
        self.dbs = ["cs_bench_hub", "cs_bench_erp"]
        self.results: list[dict[str, Any]] = []
        self.profile_dir = out_dir / "profiles"

    def stage(
        self, phase: str, label: str, kind: str, params: dict[str, Any], items: int | None = None
    ) -> dict[str, Any]:
        params = {"hub": self.hub, "erp": self.erp, "work": str(self.work), **params}
        profile = None
        if any(p in (label, f"{phase}:{label}", kind) for p in self.args.profile):
            self.profile_dir.mkdir(parents=True, exist_ok=True)
            profile = str(self.profile_dir / f"{self.n}-{phase}-{label}.txt".replace(":", "_"))
        db0, wal0 = _db_active_ms(self.dbs), _wal_lsn()
        with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn"), max_tasks_per_child=1) as pool:
            out = pool.submit(child, kind, params, profile).result()
        time.sleep(0.3)  # backends flush their statistics when they exit
        db1, wal1 = _db_active_ms(self.dbs), _wal_lsn()
        rows = items if items is not None else out.get("rows", 0)
        record = {
            "n": self.n,
            "phase": phase,
            "stage": label,
            **out,
            "rows": rows,
            "rows_per_s": round(rows / out["seconds"]) if out["seconds"] > 0 and rows else None,
            "db_active_s": round((db1 - db0) / 1000, 3),
            "wal_mb": round((wal1 - wal0) / 2**20, 1),
            "seconds": round(out["seconds"], 3),
            "client_cpu_s": round(out["client_cpu_s"], 3),
        }
        if profile:
            record["profile"] = profile
        self.results.append(record)
        _print_row(record)
        return record

    # ---------------------------------------------------------------- set-up
    def setup(self) -> dict[str, Any]:
        from commerce_sync.db import drop_database, ensure_database
        from commerce_sync.hub.migrate import migrate

        for url in (self.hub, self.erp):
            drop_database(url)
            ensure_database(url)
        migrate(self.hub)
        started = time.perf_counter()
        manifest = generate.generate(self.erp, self.n, self.args.suppliers, self.work)
        manifest["wall_seconds"] = round(time.perf_counter() - started, 2)
        print(f"# generated N={self.n}: ERP {manifest['erp_seconds']} s, all data {manifest['wall_seconds']} s")
        self.manifest = manifest
        self.channels = _channels(self.args.channels, self.work)
        self.rules = _rules()
        return manifest

    def sync_all(self, phase: str) -> None:
        self.stage(phase, "erp extract+merge", "erp", {})
        for feed in self.manifest["suppliers"]:
            self.stage(phase, f"supplier {feed['id']} ({feed['format']})", "supplier", {"supplier": feed["config"]})
        for channel in self.channels:
            rule = self.rules[channel["pricing_rule"]]
            self.stage(phase, f"pricing {channel['id']}", "pricing", {"channel": channel, "rule": rule})
        for channel in self.channels:
            if channel["kind"] == "google_merchant_feed":
                self.stage(phase, f"feed {channel['id']}", "feed", {"channel": channel})


def _channels(count: int, work: Path) -> list[dict[str, Any]]:
    import yaml

    template = yaml.safe_load((ROOT / "include" / "config" / "channels.yaml").read_text(encoding="utf-8"))
    by_kind = {c["kind"]: c for c in template["channels"]}
    channels = []
    for i in range(count):
        kind = "allegro" if i % 2 == 0 else "google_merchant_feed"
        channel = json.loads(json.dumps(by_kind[kind]))
        channel["id"] = ("allegro" if kind == "allegro" else "google") + (str(i + 1) if i >= 2 else "")
        if kind == "google_merchant_feed":
            channel["feed"]["path"] = str(work / "feeds" / f"{channel['id']}.xml")
        channels.append(channel)
    return channels


def _rules() -> dict[str, dict[str, Any]]:
    import yaml

    data = yaml.safe_load((ROOT / "include" / "config" / "pricing.yaml").read_text(encoding="utf-8"))
    return {rule["id"]: rule for rule in data["rules"]}


def _print_row(r: dict[str, Any]) -> None:
    rate = f"{r['rows_per_s']:>10,}" if r.get("rows_per_s") else f"{'-':>10}"
    extra = ""
    if r.get("parts"):
        extra = "  [" + ", ".join(f"{k} {v['seconds']:.1f}s" for k, v in r["parts"].items()) + "]"
    print(
        f"{r['n']:>9,} {r['phase']:<7} {r['stage']:<28} {r['seconds']:>8.2f}s {r['rows']:>10,} {rate}/s "
        f"{r['peak_rss_mb']:>7.0f}MB cpu {r['client_cpu_s']:>7.2f}s db {r['db_active_s']:>7.2f}s "
        f"wal {r['wal_mb']:>7.1f}MB chg {r.get('changed', '-')}{extra}",
        flush=True,
    )


# ---------------------------------------------------------------- the phases
def mark_published(hub: str) -> int:
    """Bench set-up: treat the initial full publish as done (1M initial commands is not the point)."""
    import psycopg

    with psycopg.connect(hub) as conn:
        sent = conn.execute("UPDATE hub.outbox SET status = 'sent', sent_at = now() WHERE status = 'pending'").rowcount
        conn.execute("UPDATE hub.channel_offer SET published_version = version WHERE published_version <> version")
    with psycopg.connect(hub, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE hub.outbox")
        conn.execute("VACUUM ANALYZE hub.channel_offer")
    return sent


def simulator_state(hub: str, channel_id: str, path: Path) -> int:
    """Allegro simulator state with one offer per SKU that has a pending outbox row."""
    import psycopg

    from commerce_sync_sandbox.allegro_sim import OFFER_ID_BASE

    with psycopg.connect(hub) as conn:
        skus = conn.execute(
            "SELECT DISTINCT sku FROM hub.outbox WHERE channel = %s AND status = 'pending' ORDER BY sku", (channel_id,)
        ).fetchall()
    offers = [
        {
            "id": str(OFFER_ID_BASE + int(sku.removeprefix("SKU-"))),
            "name": sku,
            "external": {"id": sku},
            "sellingMode": {"format": "BUY_NOW", "price": {"amount": "1.00", "currency": "PLN"}},
            "stock": {"available": 0, "unit": "UNIT"},
            "publication": {"status": "ACTIVE"},
        }
        for (sku,) in skus
    ]
    path.write_text(json.dumps({"offers": offers, "commands": {}, "stats": {}}), encoding="utf-8")
    return len(offers)


def serve_simulator(state_path: str, feeds_dir: str, urls: Any, stop: Any) -> None:
    """Child process: the sandbox Allegro simulator, with its per-command JSON snapshot disabled.

    The simulator rewrites its whole state file after every command (O(state) per command); that is
    test-double persistence, not the pipeline, so the benchmark turns it off.
    """
    from commerce_sync_sandbox import allegro_sim
    from commerce_sync_sandbox.server import SandboxServer

    allegro_sim.AllegroSimulator._save = lambda self: None  # type: ignore[method-assign]
    server = SandboxServer(Path(feeds_dir), Path(state_path)).start()
    urls.put(server.allegro_url)
    stop.wait()
    stats = server.simulator.stats()
    server.stop()
    urls.put(stats)


def run_main(args: argparse.Namespace, out_dir: Path) -> Bench:
    bench = Bench(args, args.n, out_dir)
    bench.setup()
    bench.sync_all("full")
    bench.sync_all("rerun")
    # I/O floor
    feeds = bench.manifest["suppliers"]
    supplier_rows = sum(f["records"] - 2 for f in feeds)
    bench.stage("floor", "COPY in (keyed)", "floor", {"what": "copy_in", "feeds": feeds})
    bench.stage("floor", "COPY out", "floor", {"what": "copy_out", "channels": len(bench.channels)})
    bench.stage("floor", "xmlfile write", "floor", {"what": "xml"})
    # naive idioms on a sample
    sample = min(args.naive_sample, args.n)
    for what, label in (
        ("insert_rows", "PostgresHook.insert_rows"),
        ("to_sql", "DataFrame.to_sql"),
        ("tree", "XML tree"),
    ):
        bench.stage("naive", label, "naive", {"what": what, "sample": sample})
    # delta
    with_publish = any(c["kind"] == "allegro" for c in bench.channels)
    marked = mark_published(bench.hub)
    print(f"# set-up: {marked:,} initial outbox rows marked sent (the initial full publish is not benchmarked)")
    changed = generate.apply_erp_changes(bench.erp, args.change_rate)
    print(f"# delta: {changed:,} ERP prices changed ({args.change_rate:.1%})")
    bench.delta_erp_changed = changed
    bench.sync_all("delta")
    if with_publish:
        channel_id = next(c["id"] for c in bench.channels if c["kind"] == "allegro")
        state = bench.work / "allegro-state.json"
        offers = simulator_state(bench.hub, channel_id, state)
        ctx = mp.get_context("spawn")
        urls, stop = ctx.Queue(), ctx.Event()
        proc = ctx.Process(target=serve_simulator, args=(str(state), str(bench.work / "feeds"), urls, stop))
        proc.start()
        url = urls.get(timeout=60)
        print(f"# Allegro simulator at {url} with {offers:,} offers (SKUs of pending outbox rows)")
        params = {"url": url, "channel_id": channel_id}
        bench.stage("delta", "allegro listings", "allegro", {**params, "what": "listings"})
        bench.stage("delta", "allegro publish", "allegro", {**params, "what": "publish"})
        bench.stage("rerun", "allegro publish", "allegro", {**params, "what": "publish"})
        stop.set()
        bench.simulator_stats = urls.get(timeout=60)
        proc.join(timeout=30)
    bench.stage("ledger", f"append {args.ledger_count:,}", "ledger", {"what": "append", "count": args.ledger_count})
    bench.stage("ledger", "verify chain", "ledger", {"what": "verify"})
    bench.supplier_rows = supplier_rows
    return bench


def run_scaling(args: argparse.Namespace, out_dir: Path, n: int) -> Bench:
    bench = Bench(args, n, out_dir)
    bench.setup()
    bench.sync_all("full")
    feeds = bench.manifest["suppliers"]
    bench.stage("floor", "COPY in (keyed)", "floor", {"what": "copy_in", "feeds": feeds})
    bench.stage("floor", "COPY out", "floor", {"what": "copy_out", "channels": len(bench.channels)})
    bench.stage("floor", "xmlfile write", "floor", {"what": "xml"})
    return bench


# ---------------------------------------------------------------- summary
def _total(results: list[dict[str, Any]], n: int, phase: str, exclude: tuple[str, ...] = ()) -> float:
    return sum(
        r["seconds"]
        for r in results
        if r["n"] == n and r["phase"] == phase and not any(r["stage"].startswith(x) for x in exclude)
    )


def summarise(main: Bench, scaling: list[Bench], args: argparse.Namespace) -> dict[str, Any]:
    n = main.n
    res = main.results
    full = _total(res, n, "full")
    floor = _total(res, n, "floor")
    delta_sync = _total(res, n, "delta", exclude=("allegro",))
    delta_wo_feed = _total(res, n, "delta", exclude=("allegro", "feed"))
    naive = {r["stage"]: r for r in res if r["phase"] == "naive"}
    scale = n / naive["PostgresHook.insert_rows"]["rows"]
    load_rows = n + main.supplier_rows
    per_row = {k: v["timed_seconds"] / v["rows"] for k, v in naive.items()}
    feeds = [r for r in res if r["phase"] == "full" and r["stage"].startswith("feed")]
    ours_load = _total(res, n, "full", exclude=("pricing", "feed"))
    ours_erp = next(r["seconds"] for r in res if r["phase"] == "full" and r["stage"].startswith("erp"))
    ours_feed = sum(r["seconds"] for r in feeds) / max(1, len(feeds))
    naive_insert = per_row["PostgresHook.insert_rows"] * load_rows
    naive_to_sql = per_row["DataFrame.to_sql"] * load_rows
    naive_tree = per_row["XML tree"] * n
    naive_tree_mb = naive["XML tree"]["rss_growth_mb"] * scale
    peak = max(res, key=lambda r: r["peak_rss_mb"])
    feed_rate = min((r["rows_per_s"] or 0) for r in feeds) if feeds else None
    rerun_changes = {r["stage"]: r.get("changed") for r in res if r["phase"] == "rerun"}
    ratios = {
        "full_sync_s": round(full, 2),
        "io_floor_s": round(floor, 2),
        "full_over_floor": round(full / floor, 2),
        "delta_sync_s": round(delta_sync, 2),
        "delta_over_full": round(delta_sync / full, 4),
        "delta_without_feed_over_full_without_feed": round(
            delta_wo_feed / _total(res, n, "full", exclude=("feed",)), 4
        ),
        "naive_sample_rows": naive["PostgresHook.insert_rows"]["rows"],
        "naive_extrapolation": (
            f"linear x{scale:g} from the sample; load rows = ERP {n:,} + supplier {main.supplier_rows:,}"
        ),
        "naive_insert_rows_erp_s": round(per_row["PostgresHook.insert_rows"] * n, 1),
        "naive_to_sql_erp_s": round(per_row["DataFrame.to_sql"] * n, 1),
        "ours_erp_s (extract+validate+COPY+merge+ledger)": round(ours_erp, 2),
        "naive_insert_rows_over_ours_erp": round(per_row["PostgresHook.insert_rows"] * n / ours_erp, 2),
        "naive_to_sql_over_ours_erp": round(per_row["DataFrame.to_sql"] * n / ours_erp, 2),
        "naive_insert_rows_load_s": round(naive_insert, 1),
        "naive_to_sql_load_s": round(naive_to_sql, 1),
        "ours_load_s (erp+suppliers incl. checks and merge)": round(ours_load, 2),
        "naive_insert_rows_over_ours_load": round(naive_insert / ours_load, 2),
        "naive_to_sql_over_ours_load": round(naive_to_sql / ours_load, 2),
        "naive_xml_tree_s": round(naive_tree, 1),
        "naive_xml_tree_rss_mb": round(naive_tree_mb),
        "naive_xml_tree_over_ours_feed": round(naive_tree / ours_feed, 2) if ours_feed else None,
        "naive_full_over_ours_full (insert_rows load + tree feed vs erp+suppliers+feeds)": round(
            (naive_insert + naive_tree * len(feeds)) / (ours_load + ours_feed * len(feeds)), 2
        ),
        "peak_rss_mb": peak["peak_rss_mb"],
        "peak_rss_stage": f"{peak['phase']}: {peak['stage']}",
        "feed_items_per_s": feed_rate,
        "rerun_changes": rerun_changes,
    }
    targets = {
        "full <= 3x floor": ratios["full_over_floor"] <= TARGETS["full_over_floor_max"],
        "delta <= 5% of full": ratios["delta_over_full"] <= TARGETS["delta_over_full_max"],
        "naive/ours >= 20x (insert_rows vs our ERP load)": ratios["naive_insert_rows_over_ours_erp"]
        >= TARGETS["naive_over_ours_min"],
        "naive/ours >= 20x (to_sql vs our ERP load)": ratios["naive_to_sql_over_ours_erp"]
        >= TARGETS["naive_over_ours_min"],
        "peak RSS <= 1 GB": ratios["peak_rss_mb"] <= TARGETS["peak_rss_mb_max"],
        "feed >= 100k items/s": (feed_rate or 0) >= TARGETS["feed_items_per_s_min"],
        "rerun changes nothing": all(not v for v in rerun_changes.values()),
    }
    return {"ratios": ratios, "targets_met": targets}


def machine() -> dict[str, Any]:
    cpu = "?"
    with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with open("/proc/meminfo", encoding="ascii") as info:
        mem_kb = int(info.readline().split()[1])
    pg = subprocess.run(
        ["psql", SERVER, "-Atc", "select version()"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gb": round(mem_kb / 2**20, 1),
        "python": platform.python_version(),
        "postgres": pg.split(" on ")[0] if pg else "?",
        "kernel": platform.release(),
    }


def chart(data: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = data["n"]
    res = [r for r in data["results"] if r["n"] == n]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 6), gridspec_kw={"width_ratios": [3, 2]})
    labels = [f"{r['phase']}: {r['stage']}" for r in res]
    colors = {
        "full": "#1f77b4",
        "rerun": "#9ecae1",
        "delta": "#ff7f0e",
        "floor": "#2ca02c",
        "naive": "#d62728",
        "ledger": "#7f7f7f",
    }
    ax.barh(range(len(res)), [r["seconds"] for r in res], color=[colors.get(r["phase"], "k") for r in res])
    ax.set_yticks(range(len(res)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("seconds (naive: sample only, see JSON)")
    ax.set_title(f"time per stage, N={n:,}")
    sizes = sorted({r["n"] for r in data["results"]})
    stages = [r["stage"] for r in data["results"] if r["n"] == n and r["phase"] == "full"]
    for stage in stages:
        pts = [
            (r["n"], r["seconds"], r["peak_rss_mb"])
            for r in data["results"]
            if r["phase"] == "full" and r["stage"] == stage
        ]
        if len(pts) > 1:
            pts.sort()
            line = ax2.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=stage)[0]
            ax2.plot([p[0] for p in pts], [p[2] / 100 for p in pts], ls=":", color=line.get_color())
    ax2.set_xscale("log")
    ax2.set_yscale("log")
    ax2.set_xlabel("N SKUs")
    ax2.set_title(f"scaling {sizes}:\ns (solid), peak RSS/100 MB (dotted)", fontsize=9)
    if len(sizes) > 1:
        ax2.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000, help="SKUs of the main run")
    parser.add_argument("--suppliers", type=int, default=2)
    parser.add_argument("--channels", type=int, default=2, help="alternating allegro / google feed")
    parser.add_argument("--change-rate", type=float, default=0.01, help="share of ERP prices changed for the delta")
    parser.add_argument(
        "--scaling",
        default="",
        help="comma-separated extra sizes for a scaling run of the full sync, e.g. 10000,100000",
    )
    parser.add_argument("--naive-sample", type=int, default=20_000, help="rows for the naive idioms (extrapolated)")
    parser.add_argument("--ledger-count", type=int, default=10_000)
    parser.add_argument("--profile", default="", help="comma-separated stage labels or kinds to profile (pyinstrument)")
    parser.add_argument("--out", type=Path, default=BENCH / "results")
    parser.add_argument("--keep", action="store_true", help="keep the cs_bench_* databases and work files")
    args = parser.parse_args()
    args.profile = [p.strip() for p in args.profile.split(",") if p.strip()]
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("AIRFLOW_HOME", str(args.out / "airflow-home"))  # PostgresHook imports Airflow
    print(
        f"{'N':>9} {'phase':<7} {'stage':<28} {'wall':>9} {'rows':>10} {'rows/s':>12} {'peakRSS':>9} "
        f"{'client CPU':>12} {'DB active':>11} {'WAL':>11}"
    )
    started = time.perf_counter()
    scaling = []
    for size in sorted(int(s) for s in args.scaling.split(",") if s.strip()):
        if size != args.n:
            scaling.append(run_scaling(args, args.out, size))
    main_bench = run_main(args, args.out)
    results = [r for b in scaling for r in b.results] + main_bench.results
    summary = summarise(main_bench, scaling, args)
    data = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "n": args.n,
        "suppliers": args.suppliers,
        "channels": args.channels,
        "change_rate": args.change_rate,
        "delta_erp_rows_changed": main_bench.delta_erp_changed,
        "machine": machine(),
        "db_time_method": "pg_stat_database.active_time delta of cs_bench_hub + cs_bench_erp "
        "(pg_stat_statements not preloaded); client_cpu_s = child's user+sys",
        "generate": {
            str(b.n): {k: v for k, v in b.manifest.items() if k != "suppliers"} for b in [*scaling, main_bench]
        },
        "simulator_stats": getattr(main_bench, "simulator_stats", None),
        **summary,
        "targets": TARGETS,
        "results": results,
        "bench_seconds": round(time.perf_counter() - started, 1),
    }
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    text = json.dumps(data, indent=2, default=str)
    (args.out / f"bench-{stamp}.json").write_text(text, encoding="utf-8")
    (args.out / "latest.json").write_text(text, encoding="utf-8")
    chart(data, args.out / "latest.png")
    print("\n# ratios")
    for key, value in summary["ratios"].items():
        print(f"  {key}: {value}")
    print("# targets (reported, never asserted)")
    for key, met in summary["targets_met"].items():
        print(f"  {'MET ' if met else 'MISS'} {key}")
    print(f"# wrote {args.out / 'latest.json'} and latest.png ({data['bench_seconds']} s)")
    if not args.keep:
        from commerce_sync.db import drop_database

        for name in ("cs_bench_hub", "cs_bench_erp"):
            drop_database(_url(name))


if __name__ == "__main__":
    main()
