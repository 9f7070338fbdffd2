"""Versioned SQL migrations for the hub, applied in order and recorded with their checksum.

Applying is idempotent: applied versions are skipped, and a migration file that changed after it
was applied is refused (a new migration must be written instead).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from commerce_sync.db import connect
from commerce_sync.errors import CommerceSyncError

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_LOCK_KEY = 0x636F6D6D  # advisory lock: one migrator at a time


@dataclass(frozen=True)
class Migration:
    """One SQL file: ``NNNN_name.sql``."""

    version: str
    name: str
    path: Path

    @property
    def sql(self) -> str:
        return self.path.read_text(encoding="utf-8")

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Migrations found in ``directory``, ordered by version."""
    found = []
    for path in sorted(directory.glob("*.sql")):
        version, _, name = path.stem.partition("_")
        if not version.isdigit():
            raise CommerceSyncError(f"migration file {path.name} must be named NNNN_name.sql")
        found.append(Migration(version=version, name=name, path=path))
    return found


def migrate(dsn: str, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply pending migrations; return the versions applied now."""
    applied_now: list[str] = []
    with connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            conn.execute("CREATE SCHEMA IF NOT EXISTS hub")
            conn.execute(
                """CREATE TABLE IF NOT EXISTS hub.schema_migration (
                       version text PRIMARY KEY, name text NOT NULL, sha256 text NOT NULL,
                       applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            done: dict[str, str] = dict(conn.execute("SELECT version, sha256 FROM hub.schema_migration").fetchall())
            for migration in discover(directory):
                if migration.version in done:
                    if done[migration.version] != migration.sha256:
                        raise CommerceSyncError(
                            f"migration {migration.path.name} was changed after it was applied "
                            "(checksum differs); add a new migration instead of editing an applied one"
                        )
                    continue
                with conn.transaction():
                    conn.execute(migration.sql.encode())
                    conn.execute(
                        "INSERT INTO hub.schema_migration (version, name, sha256) VALUES (%s, %s, %s)",
                        (migration.version, migration.name, migration.sha256),
                    )
                applied_now.append(migration.version)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied_now
