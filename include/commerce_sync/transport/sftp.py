"""SFTP feed transport (paramiko): host key checked, file settled, bytes counted.

The Airflow connection gives host, port (default 22), login and either a password or a private key
(``extra.private_key``, PEM text, with ``extra.private_key_passphrase`` if encrypted). The server's
host key is checked against ``extra.host_key`` (``<type> <base64>``, a ``known_hosts`` line without the
host name) unless the supplier's transport sets ``strict_host_key_checking: false``.

A download is accepted only if the file held still (size and mtime equal over ``settle_seconds``)
and exactly the announced number of bytes arrived; network faults and a still-growing file are
retried with backoff; a wrong host key or refused credentials are final.

:func:`open_sftp` (connect, host key check, login) is also what the feed publisher uploads through
(:mod:`commerce_sync.channels.feed_publish`), so both directions check servers the same way.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import socket
import stat as stat_module
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import paramiko

from commerce_sync.config import SftpTransport, Supplier
from commerce_sync.connections import ConnectionInfo
from commerce_sync.errors import ConfigError, FeedError, TransientError
from commerce_sync.sources.transports import FetchResult, backoff_seconds

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 16
_KEY_TYPES: tuple[type[paramiko.PKey], ...] = (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey)


class _Retryable(Exception):
    """A fault worth another attempt (network, growing file, short read)."""


def location_of(conn: ConnectionInfo, transport: SftpTransport) -> str:
    """``sftp://host:port/path``, never with credentials."""
    return f"sftp://{conn.host}:{conn.port or 22}{transport.path}"


def _private_key(conn: ConnectionInfo) -> paramiko.PKey | None:
    pem = conn.extra.get("private_key")
    if not pem:
        return None
    passphrase = conn.extra.get("private_key_passphrase")
    for key_type in _KEY_TYPES:
        try:
            return key_type.from_private_key(io.StringIO(str(pem)), password=passphrase)
        except (paramiko.SSHException, ValueError):
            continue
    raise ConfigError(
        f"connection {conn.conn_id!r}: extra.private_key is not a readable Ed25519, ECDSA or RSA private key "
        "(PEM/OpenSSH text; set extra.private_key_passphrase if it is encrypted)"
    )


class SftpRefused(Exception):
    """The server's host key is not the configured one, or the server refused our credentials.

    Final (never retried); the message names the connection and what to do. Callers add their subject
    (a supplier, a feed target) by wrapping it in their own error type.
    """

    def __init__(self, reason: Literal["host_key", "credentials"], message: str) -> None:
        super().__init__(message)
        self.reason = reason


def check_host_key(conn: ConnectionInfo, key: paramiko.PKey, *, strict: bool = True, subject: str) -> None:
    """Compare the server's host key with ``extra.host_key`` (``<type> <base64>``) of ``conn``.

    Raises:
        ConfigError: strict checking but the connection has no ``extra.host_key``.
        SftpRefused: the key differs.
    """
    seen = f"{key.get_name()} {key.get_base64()}"
    if not strict:
        log.warning("%s: host key of %s NOT checked (strict_host_key_checking: false): %s", subject, conn.host, seen)
        return
    expected = conn.extra.get("host_key")
    if not expected:
        raise ConfigError(
            f"{subject}: connection {conn.conn_id!r} has no extra.host_key to check the SFTP server against; "
            f"the server presented {seen!r}: verify it with the server's owner and put it in extra.host_key"
        )
    if str(expected).split()[-2:] != [key.get_name(), key.get_base64()]:
        raise SftpRefused(
            "host_key",
            f"the SFTP server's host key {seen!r} does not match extra.host_key of connection {conn.conn_id!r}; "
            "refusing to connect (possible man-in-the-middle, or the server's owner changed its key: confirm "
            "with them before updating the connection)",
        )


@contextmanager
def open_sftp(
    conn: ConnectionInfo,
    *,
    subject: str,
    timeout: float,
    host: str | None = None,
    port: int | None = None,
    strict_host_key_checking: bool = True,
) -> Iterator[paramiko.SFTPClient]:
    """Connect, check the host key, log in (private key if ``extra.private_key``, else password).

    Args:
        conn: the Airflow connection (credentials, ``extra.host_key``, default host and port).
        subject: who connects, for messages (``"supplier 'acme'"``).
        timeout: seconds for the TCP connect, the SSH handshake, login and each SFTP request.
        host: overrides ``conn.host``; port overrides ``conn.port`` (default 22).
        strict_host_key_checking: ``False`` only logs the key (throwaway test servers).

    Raises:
        ConfigError: no host, no ``extra.host_key`` to check against, unreadable private key.
        SftpRefused: wrong host key or refused credentials.
        OSError, EOFError, paramiko.SSHException: network faults (worth a retry).
    """
    host = host or conn.host
    if not host:
        raise ConfigError(f"{subject}: connection {conn.conn_id!r} has no host (the SFTP server)")
    sock = socket.create_connection((host, port or conn.port or 22), timeout=timeout)
    with paramiko.Transport(sock) as session:
        session.banner_timeout = session.auth_timeout = timeout
        session.start_client(timeout=timeout)
        check_host_key(conn, session.get_remote_server_key(), strict=strict_host_key_checking, subject=subject)
        key = _private_key(conn)
        try:
            if key is not None:
                session.auth_publickey(conn.login or "", key)
            else:
                session.auth_password(conn.login or "", conn.password or "")
        except paramiko.AuthenticationException as exc:
            raise SftpRefused(
                "credentials",
                f"the SFTP server refused the credentials of connection {conn.conn_id!r} ({exc}); check login "
                "and password or private key",
            ) from None
        sftp = paramiko.SFTPClient.from_transport(session)
        assert sftp is not None
        sftp.get_channel().settimeout(timeout)
        try:
            yield sftp
        finally:
            sftp.close()


def _settled_size(sftp: paramiko.SFTPClient, path: str, settle: float, sleep: Callable[[float], None]) -> int:
    first = sftp.stat(path)
    if first.st_mode is not None and not stat_module.S_ISREG(first.st_mode):
        raise FileNotFoundError(f"{path} is not a regular file")
    if settle:
        sleep(settle)
    second = sftp.stat(path)
    if (first.st_size, first.st_mtime) != (second.st_size, second.st_mtime):
        raise _Retryable(f"file still growing (size {first.st_size} -> {second.st_size} bytes)")
    return int(second.st_size or 0)


def _download_once(
    supplier: Supplier,
    transport: SftpTransport,
    conn: ConnectionInfo,
    dest_dir: Path,
    sleep: Callable[[float], None],
) -> tuple[Path, str, int]:
    location = location_of(conn, transport)
    try:
        with open_sftp(
            conn,
            subject=f"supplier {supplier.id!r}",
            timeout=transport.timeout_seconds,
            strict_host_key_checking=transport.strict_host_key_checking,
        ) as sftp:
            return _download(sftp, supplier, transport, location, dest_dir, sleep)
    except SftpRefused as exc:
        raise FeedError(supplier.id, location, str(exc)) from None


def _download(
    sftp: paramiko.SFTPClient,
    supplier: Supplier,
    transport: SftpTransport,
    location: str,
    dest_dir: Path,
    sleep: Callable[[float], None],
) -> tuple[Path, str, int]:
    """Read the settled file into a temporary file under ``dest_dir``; (path, sha256, size)."""
    try:
        expected = _settled_size(sftp, transport.path, transport.settle_seconds, sleep)
    except FileNotFoundError as exc:
        raise FeedError(supplier.id, location, f"no such file on the SFTP server ({exc})") from None
    fd, name = tempfile.mkstemp(prefix=f"{supplier.id}-", suffix=".feed", dir=dest_dir)
    path = Path(name)
    digest = hashlib.sha256()
    size = 0
    try:
        with os.fdopen(fd, "wb") as out, sftp.open(transport.path, "rb") as remote:
            while chunk := remote.read(CHUNK_BYTES):
                out.write(chunk)
                digest.update(chunk)
                size += len(chunk)
        if size != expected:
            raise _Retryable(f"incomplete transfer: received {size} bytes, the server announced {expected}")
        after = sftp.stat(transport.path)
        if after.st_size != expected:
            raise _Retryable(f"file still growing (size {expected} -> {after.st_size} bytes during the read)")
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path, digest.hexdigest(), size


def fetch_sftp(
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
    if not conn.host:
        raise ConfigError(f"connection {conn.conn_id!r} has no host (the SFTP server)")
    location = location_of(conn, transport)
    attempts = transport.retries + 1
    problem = ""
    for attempt in range(1, attempts + 1):
        try:
            path, sha256, size = _download_once(supplier, transport, conn, dest_dir, sleep)
            return FetchResult(path=path, location=location, sha256=sha256, size=size, temporary=True)
        except _Retryable as exc:
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
