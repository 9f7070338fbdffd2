"""The fault matrix's world: a small sandbox, the sync's steps as library calls, and a digest of the outcome.

Each step is what a DAG task does, called directly (no scheduler), so a fault can be injected between two
statements and a step can also run in a child process that the test kills. The digest is what "nothing
lost" is checked against: the content of every hub table that holds business data (volatile bookkeeping
columns left out), every offer each marketplace shows (read back through its API), every feed file, and
whether every channel's newest offer version was published.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from commerce_sync import registry
from commerce_sync.audit import ledger
from commerce_sync.channels.feeds import write_feed
from commerce_sync.channels.marketplace import read_back
from commerce_sync.channels.publish import open_marketplace, publish_channel
from commerce_sync.config import Config, load_config, load_quality
from commerce_sync.connections import get_connection
from commerce_sync.db import connect
from commerce_sync.pricing.compute import PricingSetup, compute_channel_offers
from commerce_sync.pricing.rates import configured_rates, load_rates
from commerce_sync.settings import data_dir
from commerce_sync.sources.erp import sync_erp
from commerce_sync.sources.supplier_load import sync_supplier
from commerce_sync.sources.supply_merge import merge_supply
from tests.e2e.sandbox_world import World, sandbox_world

N = 60  # catalog size: big enough for every path (bad rows, several requests per channel), small enough to be quick
TABLES = ("product", "stock", "supplier_offer", "sku_supply", "channel_offer", "exchange_rate", "channel_listing")
VOLATILE = {
    "transfer_id",
    "created_transfer_id",
    "sent_transfer_id",
    "updated_at",
    "created_at",
    "published_at",
    "first_seen_at",
    "last_seen_at",
    "computed_at",
    "loaded_at",
    "version",
    "published_version",
    "row_hash",
    # Provenance: which delivery set a value. After a refused or faulty delivery the same values may have
    # been set by an earlier file than in the clean run; the values themselves are compared.
    "source_file_sha256",
    "source_record_no",
    "source_line",
    "price_transfer_id",  # the transfer that last set a supplier offer's price / quantity (split feeds)
    "quantity_transfer_id",
}
STEPS = ("erp", "suppliers", "merge", "price", "publish", "feeds")


def run(step: str) -> ledger.RunContext:
    """The run a step records in the ledger."""
    return ledger.RunContext(run_id=f"faults-{step}", dag_id="fault_matrix", task_id=step)


def _config() -> Config:
    return load_config()


def step_erp(hub: str) -> None:
    config = _config()
    sync_erp(hub, config.erp, get_connection(config.erp.conn_id), run("erp"), quality=load_quality())


def step_suppliers(hub: str, only: str | None = None) -> None:
    config = _config()
    for supplier in config.suppliers:
        if not supplier.enabled or (only and supplier.id != only):
            continue
        conn_id = getattr(supplier.transport, "conn_id", None)
        work_dir = data_dir() / "downloads" / supplier.id
        work_dir.mkdir(parents=True, exist_ok=True)
        sync_supplier(
            hub,
            supplier,
            get_connection(conn_id) if conn_id else None,
            run("suppliers"),
            work_dir,
            config.price_change,
            quality=load_quality(),
        )


def step_merge(hub: str) -> None:
    config = _config()
    merge_supply(hub, config.suppliers, config.supply_merge, run("merge"))


def step_price(hub: str) -> None:
    config = _config()
    load_rates(hub, configured_rates(config.exchange_rates, data_dir()), run("rates"))
    setup = PricingSetup(config.rules, tuple(config.rule_overrides))
    for channel in config.channels:
        if channel.enabled:
            compute_channel_offers(hub, channel, config.rule_for(channel), run("price"), setup=setup)


def marketplace_channels(config: Config) -> list[Any]:
    ids = set(registry.channels_that(config.channels, "publish", family="marketplace"))
    return [channel for channel in config.channels if channel.id in ids]


def step_publish(hub: str, only: str | None = None) -> None:
    for channel in marketplace_channels(_config()):
        if only is None or channel.id == only:
            publish_channel(hub, channel, run("publish"))


def step_feeds(hub: str) -> None:
    config = _config()
    for channel_id in registry.channels_that(config.channels, "publish", family="feed"):
        write_feed(hub, config.channel(channel_id), data_dir(), run("feeds"))


def step_orders(hub: str) -> None:
    """Import every marketplace's orders, then push the quantities they changed (the orders DAG's tasks)."""
    from commerce_sync.orders.importer import import_channel, push_quantities

    config = _config()
    touched = []
    for channel_id in registry.channels_that(config.channels, "import_orders"):
        result = import_channel(hub, config.channel(channel_id), run("orders"))
        touched += [(channel_id, sku) for sku in result.totals.touched_skus]
    push_quantities(hub, config, run("push"), resend=touched)


def step_handoff(hub: str) -> None:
    """Hand ready orders to the ERP (and cancel cancelled ones there)."""
    from commerce_sync.orders.erp import hand_off, open_writer

    erp = _config().erp
    with open_writer(erp) as writer:
        hand_off(hub, erp, writer, run("handoff"))


STEP_FUNCTIONS = {
    "erp": step_erp,
    "suppliers": step_suppliers,
    "merge": step_merge,
    "price": step_price,
    "publish": step_publish,
    "feeds": step_feeds,
    "orders": step_orders,
    "handoff": step_handoff,
}


def run_steps(hub: str, steps: tuple[str, ...] = STEPS) -> None:
    for name in steps:
        STEP_FUNCTIONS[name](hub)


def _table_digest(conn: Any, table: str) -> tuple[int, str]:
    columns = [
        name
        for (name,) in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'hub' AND table_name = %s "
            "ORDER BY ordinal_position",
            (table,),
        )
        if name not in VOLATILE
    ]
    rows = conn.execute(
        f"SELECT {', '.join(columns)} FROM hub.{table} ORDER BY {', '.join(columns)}"  # names from the catalog
    ).fetchall()
    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps([str(value) for value in row]).encode())
    return len(rows), digest.hexdigest()


def digest(hub: str) -> dict[str, Any]:
    """What must be equal after a fault and its recovery to a clean run: tables, marketplaces, feeds, publication."""
    found: dict[str, Any] = {}
    with connect(hub) as conn:
        for table in TABLES:
            found[f"hub.{table}"] = _table_digest(conn, table)
        unpublished = conn.execute(
            "SELECT channel, count(*) FROM hub.channel_offer WHERE published_version < version "
            "AND channel IN (SELECT DISTINCT channel FROM hub.outbox) GROUP BY channel ORDER BY channel"
        ).fetchall()
        found["unpublished offers"] = [list(row) for row in unpublished]
        found["pending outbox rows"] = conn.execute(
            "SELECT count(*) FROM hub.outbox WHERE status = 'pending'"
        ).fetchone()[0]
    config = _config()
    for channel in marketplace_channels(config):
        with open_marketplace(channel, "read_back") as market:
            shown = sorted(
                (offer.sku, str(offer.price), offer.currency, offer.quantity)
                for offer in read_back(hub, channel.id, market)
            )
        found[f"marketplace {channel.id}"] = (len(shown), hashlib.sha256(json.dumps(shown).encode()).hexdigest())
    for channel_id in registry.channels_that(config.channels, "publish", family="feed"):
        channel = config.channel(channel_id)
        assert channel.feed is not None
        path = data_dir() / channel.feed.path
        found[f"feed {channel_id}"] = hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None
    return found


@contextmanager
def fault_world(tmp: Path, hub_template: str, extra_env: dict[str, str] | None = None) -> Iterator[World]:
    """A fresh sandbox of N products with its own hub (copied from the migrated template) and data directory."""
    env = {"COMMERCE_SYNC_DATA_DIR": str(tmp / "data"), **(extra_env or {})}
    (tmp / "data").mkdir(parents=True, exist_ok=True)
    with sandbox_world(tmp, env, n=N, hub_template=hub_template, needs_airflow=False) as world:
        yield world
