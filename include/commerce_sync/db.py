"""PostgreSQL access: connection strings, database creation and small query helpers.

All hub access goes through psycopg 3. Functions take a DSN or an open connection so they can be
used from Airflow tasks (DSN from the ``hub_db`` connection), the CLI and tests alike.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from commerce_sync.errors import CommerceSyncError, DatabaseDataError, TransientError

# SQLSTATEs of a server going away under a session: class 08 (connection exception), 57P01
# admin_shutdown (pg_terminate_backend, a fast shutdown), 57P02 crash_shutdown, 57P03 cannot_connect_now.
_LOST_STATES = ("57P01", "57P02", "57P03")


def connect(dsn: str, *, autocommit: bool = False) -> psycopg.Connection:
    """Open a psycopg connection with a recognisable application name."""
    return psycopg.connect(dsn, autocommit=autocommit, application_name="commerce_sync")


@contextmanager
def transaction(dsn: str) -> Iterator[psycopg.Connection]:
    """Yield a connection inside one transaction: commit on success, roll back on error."""
    with connect(dsn) as conn:
        yield conn


def connection_lost(exc: BaseException) -> bool:
    """Whether ``exc`` says the database session went away (terminated, server restart, network),
    as opposed to a statement the database refused."""
    if not isinstance(exc, psycopg.OperationalError):
        return False
    state = getattr(exc, "sqlstate", None)
    if state is None:
        # No SQLSTATE: the client lost the socket ("server closed the connection unexpectedly",
        # "consuming input failed", a connect timeout): nothing the server said about the data.
        return True
    return state in _LOST_STATES or state.startswith("08")


@contextmanager
def lost_connection_is_transient(what: str = "the database") -> Iterator[None]:
    """Re-raise a lost database session inside the block as :class:`TransientError` (retryable).

    Other database errors pass through unchanged.
    """
    try:
        yield
    except psycopg.OperationalError as exc:
        if not connection_lost(exc):
            raise
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TransientError(
            f"lost the connection to {what} ({type(exc).__name__}: {detail}); the transaction was rolled back"
        ) from exc


def as_data_error(exc: BaseException) -> DatabaseDataError | None:
    """The non-retryable :class:`DatabaseDataError` for a data exception from PostgreSQL, else None.

    SQLSTATE class 22 (data exception: numeric overflow, invalid text representation, division by
    zero ...) and 23 (integrity constraint violation) depend on the data, not on the moment.
    """
    sqlstate = getattr(exc, "sqlstate", None) if isinstance(exc, psycopg.Error) else None
    if not sqlstate or sqlstate[:2] not in ("22", "23"):
        return None
    diag = exc.diag if isinstance(exc, psycopg.Error) else None
    message = (diag.message_primary if diag is not None else None) or str(exc)
    detail = diag.message_detail if diag is not None else None
    return DatabaseDataError(sqlstate, f"{message} ({detail})" if detail else message)


def with_database(url: str, dbname: str) -> str:
    """Return ``url`` pointing at another database on the same server."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + dbname, parts.query, parts.fragment))


def database_name(url: str) -> str:
    """Name of the database a URL points at."""
    name = urlsplit(url).path.lstrip("/")
    if not name:
        raise CommerceSyncError(f"database URL {redact(url)} names no database")
    return name


def redact(url: str) -> str:
    """The URL with any password replaced, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(":" + parts.password + "@", ":***@")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _server_answers(url: str) -> bool:
    try:
        with psycopg.connect(with_database(url, "postgres"), connect_timeout=3):
            return True
    except psycopg.OperationalError:
        return False


def _start_debian_cluster() -> bool:
    """Start Debian's PostgreSQL cluster if its tools are installed; True if a start was tried."""
    if shutil.which("pg_ctlcluster") is None or shutil.which("pg_lsclusters") is None:
        return False
    listing = subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True, check=False)
    started = False
    for line in listing.stdout.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[3] != "online":
            subprocess.run(
                ["pg_ctlcluster", "--skip-systemctl-redirect", fields[0], fields[1], "start"],
                check=False,
            )
            started = True
    return started


def ensure_server(url: str, *, wait_seconds: float = 20.0) -> None:
    """Make sure a PostgreSQL server answers at ``url``, starting the local cluster if needed."""
    if _server_answers(url):
        return
    if _start_debian_cluster():
        deadline = time.monotonic() + wait_seconds
        while time.monotonic() < deadline:
            if _server_answers(url):
                return
            time.sleep(0.5)
    raise CommerceSyncError(
        f"no PostgreSQL server answers at {redact(url)}. Set HUB_DATABASE_URL to a server you can "
        "reach (postgresql://user:password@host:5432/commerce_hub), or start one with "
        "`docker compose up -d postgres`."
    )


def ensure_database(url: str) -> bool:
    """Create the database named in ``url`` if it does not exist; True if it was created."""
    ensure_server(url)
    name = database_name(url)
    with psycopg.connect(with_database(url, "postgres"), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists:
            return False
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return True


def drop_database(url: str) -> None:
    """Drop the database named in ``url`` (used by tests and the sandbox reset)."""
    name = database_name(url)
    with psycopg.connect(with_database(url, "postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
