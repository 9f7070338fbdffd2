"""Feed transports: bring a supplier's feed to a local file, with its checksum and cache headers.

HTTP(S) downloads stream to a temporary file next to the work directory, verify the announced
length, and use conditional GET so an unchanged feed costs one ``304``. Network faults, ``429`` and
``5xx`` are retried with capped, jittered exponential backoff (``Retry-After`` honoured); any other
``4xx`` is final. SFTP downloads go through the package's SFTP client
(:mod:`commerce_sync.transport.sftp`, shared with the feed publisher): the server's host key is
checked, the file must hold still and every announced byte must arrive; network faults and a
still-growing file are retried with the same backoff, a wrong host key or refused credentials are
final. Local files are hashed in place.

A transfer is rejected whole when it is incomplete: a body shorter or longer than announced, a
gzip member with a bad CRC or cut short (``.gz`` feeds are recognised by their magic bytes and
decompressed to a temporary file), or a file or SFTP file still growing (size and mtime are read
twice, ``settle_seconds`` apart, and must agree, and must still agree after the read).

Locations reported back (for messages, the ledger and ``hub.source_fetch``) never carry
credentials: authentication comes from the Airflow connection and is sent as headers only.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import random
import shutil
import tempfile
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import requests

from commerce_sync.config import FileTransport, HttpTransport, SftpTransport, Supplier
from commerce_sync.connections import ConnectionInfo
from commerce_sync.errors import ConfigError, FeedError, TransientError
from commerce_sync.retry import retry_after_seconds
from commerce_sync.settings import data_dir
from commerce_sync.transport import sftp

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 16
BACKOFF_BASE_SECONDS = 1.0
BACKOFF_CAP_SECONDS = 60.0
RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class FetchState:
    """What we remember of the last successful fetch (a row of ``hub.source_fetch``)."""

    location: str
    sha256: str
    size_bytes: int
    etag: str | None = None
    last_modified: str | None = None


@dataclass(frozen=True)
class FetchResult:
    """A fetched feed. ``path`` is None when the server said the feed is unchanged."""

    path: Path | None
    location: str
    sha256: str | None
    size: int | None
    etag: str | None = None
    last_modified: str | None = None
    not_modified: bool = False
    temporary: bool = False  # True when ``path`` is our download and the caller should delete it


class _IncompleteTransfer(Exception):
    """The body ended before the announced Content-Length (retried, then a FeedError)."""


def fetch(
    supplier: Supplier,
    conn: ConnectionInfo | None,
    dest_dir: Path,
    previous: FetchState | None,
    *,
    backoff_base: float = BACKOFF_BASE_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
) -> FetchResult:
    """Fetch ``supplier``'s feed.

    Args:
        supplier: The supplier whose transport to use.
        conn: The Airflow connection named by an HTTP or SFTP transport (base URL or host,
            credentials, host key); unused for files.
        dest_dir: Where downloads are written (a temporary file, ``temporary=True`` in the result).
        previous: The last successful fetch, for ``If-None-Match`` / ``If-Modified-Since``.
        backoff_base: First retry delay in seconds (doubles per attempt, capped, jittered).
        sleep: How to wait between attempts (tests pass a recorder).

    Raises:
        FeedError: a final refusal (4xx, incomplete body after retries, missing file).
        TransientError: retries exhausted on network faults, 429 or 5xx.
    """
    transport = supplier.spec.transport
    dest_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(transport, FileTransport):
        result = _fetch_file(supplier, transport, sleep)
    elif conn is None:
        raise ConfigError(
            f"supplier {supplier.id!r}: {transport.type.upper()} transport needs the Airflow connection "
            f"{transport.conn_id!r}"
        )
    elif isinstance(transport, SftpTransport):
        result = _fetch_sftp(supplier, transport, conn, dest_dir, backoff_base, sleep)
    else:
        result = _fetch_http(supplier, transport, conn, dest_dir, previous, backoff_base, sleep)
    return gunzip_if_compressed(supplier, result, dest_dir)


def gunzip_if_compressed(supplier: Supplier, result: FetchResult, dest_dir: Path) -> FetchResult:
    """Decompress a gzip delivery to a temporary file, verifying every member's CRC and length.

    The checksum and size stay those of the delivered (compressed) bytes: they identify the delivery.

    Raises:
        FeedError: the gzip stream is corrupt or cut short (the whole transfer is refused).
    """
    if result.path is None:
        return result
    with result.path.open("rb") as handle:
        if handle.read(2) != GZIP_MAGIC:
            return result
    fd, name = tempfile.mkstemp(prefix=f"{supplier.id}-", suffix=".gunzip", dir=dest_dir)
    target = Path(name)
    try:
        with gzip.open(result.path, "rb") as source, os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(source, out, CHUNK_BYTES)
    except (OSError, EOFError, zlib.error) as exc:
        target.unlink(missing_ok=True)
        raise FeedError(
            supplier.id,
            result.location,
            f"incomplete transfer: the gzip data is corrupt or cut short ({exc}); nothing was loaded, "
            "ask the supplier to re-publish the file",
        ) from None
    finally:
        if result.temporary:
            result.path.unlink(missing_ok=True)
    return FetchResult(
        path=target,
        location=result.location,
        sha256=result.sha256,
        size=result.size,
        etag=result.etag,
        last_modified=result.last_modified,
        temporary=True,
    )


def still_growing_error(supplier: Supplier, location: str, before: tuple[int, int], after: tuple[int, int]) -> str:
    """The message for a file whose (size, mtime) moved while we looked at it."""
    return (
        f"supplier {supplier.id!r}: {location} is still being written (size {before[0]} -> {after[0]} bytes, "
        f"mtime changed: {before[1] != after[1]}); the transfer was refused whole and will be retried"
    )


def _stat(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def _fetch_file(supplier: Supplier, transport: FileTransport, sleep: Callable[[float], None]) -> FetchResult:
    path = Path(transport.path)
    if not path.is_absolute():
        path = data_dir() / path
    location = str(path)
    digest = hashlib.sha256()
    size = 0
    try:
        before = _stat(path)
        if transport.settle_seconds:
            sleep(transport.settle_seconds)
        settled = _stat(path)
        if settled != before:
            raise TransientError(still_growing_error(supplier, location, before, settled))
        with path.open("rb") as handle:
            while chunk := handle.read(CHUNK_BYTES):
                digest.update(chunk)
                size += len(chunk)
        after = _stat(path)
    except OSError as exc:
        raise FeedError(supplier.id, location, f"cannot read the file: {exc.strerror or exc}") from exc
    if after != settled or size != settled[0]:
        raise TransientError(still_growing_error(supplier, location, settled, after))
    return FetchResult(path=path, location=location, sha256=digest.hexdigest(), size=size)


def _strip_credentials(url: str) -> str:
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, parts.query, ""))


def _session(conn: ConnectionInfo) -> requests.Session:
    session = requests.Session()
    if conn.login and conn.password:
        session.auth = (conn.login, conn.password)
    headers = conn.extra.get("headers")
    if isinstance(headers, dict):
        session.headers.update({str(k): str(v) for k, v in headers.items()})
    session.headers["User-Agent"] = "commerce-sync/feed-fetch"
    return session


def backoff_seconds(attempt: int, base: float, retry_after: float | None = None) -> float:
    """Delay before retry ``attempt`` (1-based): full jitter under a capped exponential.

    A server's ``Retry-After`` wins (it knows its own rate limit), capped like everything else.
    """
    if retry_after is not None:
        return min(retry_after, BACKOFF_CAP_SECONDS)
    ceiling = min(BACKOFF_CAP_SECONDS, base * 2 ** (attempt - 1))
    return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not cryptography


def _fetch_http(
    supplier: Supplier,
    transport: HttpTransport,
    conn: ConnectionInfo,
    dest_dir: Path,
    previous: FetchState | None,
    backoff_base: float,
    sleep: Callable[[float], None],
) -> FetchResult:
    url = conn.base_url() + transport.path
    location = _strip_credentials(url)
    headers: dict[str, str] = {}
    if previous is not None and previous.location == location:
        if previous.etag:
            headers["If-None-Match"] = previous.etag
        if previous.last_modified:
            headers["If-Modified-Since"] = previous.last_modified
    attempts = transport.retries + 1
    last_problem = ""
    with _session(conn) as session:
        for attempt in range(1, attempts + 1):
            retry_after: float | None = None
            try:
                with session.get(url, headers=headers, timeout=transport.timeout_seconds, stream=True) as resp:
                    if resp.status_code == 304:
                        if previous is None:
                            raise FeedError(supplier.id, location, "server answered 304 to an unconditional GET")
                        return FetchResult(
                            path=None,
                            location=location,
                            sha256=previous.sha256,
                            size=previous.size_bytes,
                            etag=resp.headers.get("ETag") or previous.etag,
                            last_modified=resp.headers.get("Last-Modified") or previous.last_modified,
                            not_modified=True,
                        )
                    if resp.status_code in RETRYABLE_STATUS:
                        retry_after = retry_after_seconds(resp.headers.get("Retry-After"))
                        last_problem = f"HTTP {resp.status_code} {resp.reason}"
                    elif resp.status_code >= 400:
                        raise FeedError(
                            supplier.id,
                            location,
                            f"HTTP {resp.status_code} {resp.reason}: check the URL and the credentials in "
                            f"connection {conn.conn_id!r}",
                        )
                    else:
                        return _download(supplier, location, resp, dest_dir)
            except _IncompleteTransfer as exc:
                last_problem = str(exc)
            except (requests.ConnectionError, requests.Timeout) as exc:
                last_problem = f"{type(exc).__name__}: {exc}"
            if attempt < attempts:
                delay = backoff_seconds(attempt, backoff_base, retry_after)
                log.warning(
                    "supplier %s: %s from %s; retry %d/%d in %.1fs",
                    supplier.id,
                    last_problem,
                    location,
                    attempt,
                    attempts - 1,
                    delay,
                )
                sleep(delay)
    if last_problem.startswith("incomplete transfer"):
        raise FeedError(supplier.id, location, f"{last_problem} (after {attempts} attempts)")
    raise TransientError(
        f"supplier {supplier.id!r}: feed {location} unavailable after {attempts} attempts: {last_problem}"
    )


def _sftp_location(conn: ConnectionInfo, transport: SftpTransport) -> str:
    """``sftp://host:port/path``, never with credentials."""
    return f"sftp://{conn.host}:{conn.port or 22}{transport.path}"


def _sftp_download_once(
    supplier: Supplier,
    transport: SftpTransport,
    conn: ConnectionInfo,
    dest_dir: Path,
    sleep: Callable[[float], None],
) -> sftp.Download:
    location = _sftp_location(conn, transport)
    try:
        with sftp.open_sftp(
            conn,
            subject=f"supplier {supplier.id!r}",
            timeout=transport.timeout_seconds,
            strict_host_key_checking=transport.strict_host_key_checking,
        ) as client:
            return sftp.download_settled(
                client,
                transport.path,
                dest_dir,
                prefix=f"{supplier.id}-",
                settle_seconds=transport.settle_seconds,
                sleep=sleep,
            )
    except (sftp.SftpRefused, sftp.SftpMissing) as exc:
        raise FeedError(supplier.id, location, str(exc)) from None


def _fetch_sftp(
    supplier: Supplier,
    transport: SftpTransport,
    conn: ConnectionInfo,
    dest_dir: Path,
    backoff_base: float,
    sleep: Callable[[float], None],
) -> FetchResult:
    """Download ``transport.path`` from the connection's SFTP server (see the module docstring).

    Raises:
        FeedError: wrong host key, refused credentials, missing file, or still short after retries.
        TransientError: network faults or a still-growing file through all retries.
        ConfigError: no host, no host key to check against, unreadable private key.
    """
    import paramiko

    if not conn.host:
        raise ConfigError(f"connection {conn.conn_id!r} has no host (the SFTP server)")
    location = _sftp_location(conn, transport)
    attempts = transport.retries + 1
    problem = ""
    for attempt in range(1, attempts + 1):
        try:
            download = _sftp_download_once(supplier, transport, conn, dest_dir, sleep)
            return FetchResult(
                path=download.path, location=location, sha256=download.sha256, size=download.size, temporary=True
            )
        except sftp.SftpIncomplete as exc:
            problem = str(exc)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            problem = f"{type(exc).__name__}: {exc}"
        if attempt < attempts:
            delay = backoff_seconds(attempt, backoff_base)
            log.warning(
                "supplier %s: %s from %s; retry %d/%d in %.1fs",
                supplier.id,
                problem,
                location,
                attempt,
                attempts - 1,
                delay,
            )
            sleep(delay)
    if problem.startswith("incomplete transfer"):
        raise FeedError(supplier.id, location, f"{problem} (after {attempts} attempts)")
    raise TransientError(
        f"supplier {supplier.id!r}: SFTP feed {location} not fetched after {attempts} attempts: {problem}"
    )


def _download(supplier: Supplier, location: str, resp: requests.Response, dest_dir: Path) -> FetchResult:
    """Stream the body to a temporary file in ``dest_dir``; hash and count while writing."""
    expected = resp.headers.get("Content-Length")
    digest = hashlib.sha256()
    size = 0
    fd, name = tempfile.mkstemp(prefix=f"{supplier.id}-", suffix=".feed", dir=dest_dir)
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                for chunk in resp.iter_content(CHUNK_BYTES):
                    out.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
            except (requests.exceptions.ChunkedEncodingError, requests.ConnectionError) as exc:
                raise _IncompleteTransfer(
                    f"incomplete transfer: connection broke after {size} bytes"
                    + (f" of {expected} announced" if expected else "")
                ) from exc
        # Content-Length counts the bytes on the wire (compressed, if Content-Encoding is set).
        wire_bytes = resp.raw.tell() if resp.headers.get("Content-Encoding") else size
        if expected is not None and expected.isdigit() and int(expected) != wire_bytes:
            raise _IncompleteTransfer(
                f"incomplete transfer: received {wire_bytes} bytes, Content-Length announced {expected}"
            )
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return FetchResult(
        path=path,
        location=location,
        sha256=digest.hexdigest(),
        size=size,
        etag=resp.headers.get("ETag"),
        last_modified=resp.headers.get("Last-Modified"),
        temporary=True,
    )
