"""Credentials and endpoints from Airflow connections, as plain values the library can use.

Library code takes a :class:`ConnectionInfo`; only :func:`get_connection` touches Airflow, and it
imports Airflow lazily so the rest of the package works (and is tested) without it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from commerce_sync.errors import ConfigError


@dataclass(frozen=True)
class ConnectionInfo:
    """The parts of an Airflow connection we use. ``password`` never appears in repr or logs."""

    conn_id: str
    conn_type: str | None = None
    host: str | None = None
    port: int | None = None
    login: str | None = None
    password: str | None = field(default=None, repr=False)
    schema: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def base_url(self) -> str:
        """HTTP base URL: ``host`` may carry the scheme (``http://127.0.0.1:8701``)."""
        if not self.host:
            raise ConfigError(f"connection {self.conn_id!r} has no host (the base URL)")
        host = self.host.rstrip("/")
        if "://" in host:
            return host if self.port is None or host.count(":") >= 2 else f"{host}:{self.port}"
        scheme = self.schema or "https"
        return f"{scheme}://{host}" + (f":{self.port}" if self.port else "")

    def postgres_dsn(self) -> str:
        """A libpq URL for a postgres connection (database from ``schema``)."""
        if not self.host or not self.schema:
            raise ConfigError(f"connection {self.conn_id!r} needs host and schema (the database name)")
        auth = ""
        if self.login:
            auth = quote(self.login, safe="")
            if self.password:
                auth += ":" + quote(self.password, safe="")
            auth += "@"
        port = self.port or 5432
        return f"postgresql://{auth}{self.host}:{port}/{quote(self.schema, safe='')}"


def get_connection(conn_id: str) -> ConnectionInfo:
    """Look up an Airflow connection (env ``AIRFLOW_CONN_*``, secrets backend or metadata DB)."""
    from airflow.sdk import BaseHook

    try:
        conn = BaseHook.get_connection(conn_id)
    except Exception as exc:  # Airflow raises its own not-found type, which moved between versions
        raise _not_defined(conn_id) from exc
    return _info(conn_id, conn)


async def aget_connection(conn_id: str) -> ConnectionInfo:
    """:func:`get_connection` for async code (triggers): Airflow's async connection API."""
    from airflow.sdk import BaseHook

    try:
        conn = await BaseHook.aget_connection(conn_id)
    except Exception as exc:  # as above
        raise _not_defined(conn_id) from exc
    return _info(conn_id, conn)


def _not_defined(conn_id: str) -> ConfigError:
    return ConfigError(
        f"Airflow connection {conn_id!r} is not defined: set AIRFLOW_CONN_{conn_id.upper()} "
        "or create it under Admin > Connections"
    )


def _info(conn_id: str, conn: Any) -> ConnectionInfo:
    extra = conn.extra_dejson if conn.extra else {}
    if isinstance(extra, str):
        extra = json.loads(extra)
    return ConnectionInfo(
        conn_id=conn_id,
        conn_type=conn.conn_type,
        host=conn.host,
        port=conn.port,
        login=conn.login,
        password=conn.password,
        schema=conn.schema,
        extra=dict(extra or {}),
    )
