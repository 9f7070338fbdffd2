"""A complete sandbox for whole-DAG tests: own hub and ERP databases, feeds, simulators, env."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from commerce_sync.db import drop_database
from commerce_sync.hub.migrate import migrate
from commerce_sync_sandbox.erp import load_erp
from commerce_sync_sandbox.feeds import write_feeds
from commerce_sync_sandbox.server import SandboxServer
from tests.conftest import new_database

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class World:
    hub: str
    erp: str
    tmp: Path
    server: SandboxServer


@contextmanager
def sandbox_world(
    tmp: Path,
    extra_env: dict[str, str] | None = None,
    *,
    n: int = 300,
    hub_template: str | None = None,
    needs_airflow: bool = True,
) -> Iterator[World]:
    """Set up the sandbox, point the Airflow connections at it (in os.environ), tear it all down.

    Args:
        tmp: where feeds, simulator state and the data directory go.
        extra_env: more environment for the run (restored afterwards).
        n: catalog size (ERP products, supplier feed items, simulator offers).
        hub_template: a migrated hub database to copy (faster than migrating).
        needs_airflow: skip unless the embedded Airflow home exists (whole-DAG runs need it).
    """
    if needs_airflow and not (REPO / ".airflow").exists() and "AIRFLOW_HOME" not in os.environ:
        pytest.skip("needs the embedded Airflow home: run through `make test`")
    hub_url = new_database(hub_template)
    erp_url = new_database()
    if hub_template is None:
        migrate(hub_url)
    load_erp(erp_url, n=n)
    write_feeds(tmp / "sandbox" / "feeds", n=n)
    server = SandboxServer(tmp / "sandbox" / "feeds", tmp / "sandbox" / "allegro_state.json", catalog_n=n).start()
    env = {
        "HUB_DATABASE_URL": hub_url,
        "ERP_DATABASE_URL": erp_url,
        "COMMERCE_SYNC_DATA_DIR": str(tmp),
        "AIRFLOW_CONN_HUB_DB": hub_url,
        "AIRFLOW_CONN_ERP_DB": erp_url,
        **server.airflow_connections(),
        **(extra_env or {}),
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield World(hub=hub_url, erp=erp_url, tmp=tmp, server=server)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        server.stop()
        drop_database(hub_url)
        drop_database(erp_url)
