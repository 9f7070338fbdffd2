"""Shared fixtures: real PostgreSQL databases created per test from a migrated template."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from commerce_sync.db import database_name, drop_database, ensure_server, with_database
from commerce_sync.hub.migrate import migrate

# The ledger refuses to write unkeyed rows: tests bring their own key (scripts/common.sh sets one for
# dev and CI; a test that needs another, or none, monkeypatches it). Set at import so subprocesses
# (Airflow, the CLI) inherit the same key.
TEST_LEDGER_KEY = "cs-test-ledger-key"
os.environ.setdefault("COMMERCE_SYNC_LEDGER_KEY", TEST_LEDGER_KEY)

BASE_URL = os.environ.get("TEST_DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/postgres"
TEMPLATE = f"cs_test_template_{os.getpid()}"


def _admin() -> psycopg.Connection:
    return psycopg.connect(with_database(BASE_URL, "postgres"), autocommit=True)


@pytest.fixture(scope="session")
def hub_template() -> Iterator[str]:
    """A migrated hub database used as the template for each test's database."""
    ensure_server(BASE_URL)
    url = with_database(BASE_URL, TEMPLATE)
    drop_database(url)
    with _admin() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEMPLATE)))
    migrate(url)
    yield url
    drop_database(url)


def new_database(template: str | None = None, prefix: str = "cs_test") -> str:
    """Create an empty (or templated) database with a unique name and return its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with _admin() as conn:
        if template:
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                    sql.Identifier(name), sql.Identifier(database_name(template))
                )
            )
        else:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return with_database(BASE_URL, name)


@pytest.fixture
def hub_dsn(hub_template: str) -> Iterator[str]:
    """A fresh, migrated hub database for one test; dropped afterwards."""
    url = new_database(hub_template)
    yield url
    drop_database(url)
