"""The one SFTP client (paramiko) of the package: connect, check the host key, log in, download, upload.

Supplier feeds (:mod:`commerce_sync.sources.transports`) download through it and feed targets
(:mod:`commerce_sync.channels.feed_publish`) upload through it, so both directions check servers the same way.

The Airflow connection gives host, port (default 22), login and either a password or a private key
(``extra.private_key``, PEM text, with ``extra.private_key_passphrase`` if encrypted). The server's
host key is checked against ``extra.host_key`` (``<type> <base64>``, a ``known_hosts`` line without the
host name) unless the caller turns strict checking off (throwaway test servers only).

:func:`download_settled` accepts a file only if it held still (size and mtime equal over the settle
time) and exactly the announced number of bytes arrived. :func:`upload_atomic` writes to a staging
name of its own beside the target (:mod:`commerce_sync.transport.staging`), checks its size with
``stat`` and renames it over the target with OpenSSH's ``posix-rename``, so a reader sees the old
file or the new one, never half of one; missing directories are created and staging files that
interrupted uploads left behind are removed once stale.

Errors carry no subject (supplier, feed target): callers wrap them in their own error types.
:class:`SftpRefused` is final (host key, credentials, a refused rename, a file where a directory
must be), so is :class:`SftpMissing` (no file to download); :class:`SftpIncomplete` is worth another
attempt (a growing file, a short read or upload), as are ``OSError``, ``EOFError`` and
``paramiko.SSHException`` (network faults).
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import socket
import stat as stat_module
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

import paramiko

from commerce_sync.connections import ConnectionInfo
from commerce_sync.errors import ConfigError
from commerce_sync.transport.staging import STALE_STAGING_SECONDS, is_staging_of, staging_name

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 16
_KEY_TYPES: tuple[type[paramiko.PKey], ...] = (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey)


class SftpIncomplete(Exception):
    """A transfer that did not complete whole (a growing file, a short read or upload); worth a retry."""


class SftpMissing(Exception):
    """The file to download is not on the server (or is not a regular file); final."""


@dataclass(frozen=True)
class Download:
    """A downloaded file: a temporary file the caller owns, its sha256 and its size in bytes."""

    path: Path
    sha256: str
    size: int


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
    """The server cannot be trusted or refused what we asked; final (never retried).

    ``reason``: ``host_key`` (not the configured one), ``credentials`` (login refused), ``rename``
    (the server refused to replace the target with the uploaded copy), ``not_a_directory`` (a file
    stands where the target's directory must be). The message names the connection or the path;
    callers add their subject (a supplier, a feed target) and what to do in their own error type.
    """

    def __init__(self, reason: Literal["host_key", "credentials", "rename", "not_a_directory"], message: str) -> None:
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
        raise SftpIncomplete(f"file still growing (size {first.st_size} -> {second.st_size} bytes)")
    return int(second.st_size or 0)


def download_settled(
    sftp: paramiko.SFTPClient,
    path: str,
    dest_dir: Path,
    *,
    prefix: str,
    settle_seconds: float,
    sleep: Callable[[float], None],
) -> Download:
    """Read ``path`` into a temporary file ``dest_dir/<prefix>*.feed`` once it held still.

    Raises:
        SftpMissing: no such regular file (final; one that vanishes during the read is an ``OSError``).
        SftpIncomplete: the file grew while we looked at it or read it, or fewer bytes arrived.
    """
    try:
        expected = _settled_size(sftp, path, settle_seconds, sleep)
    except FileNotFoundError as exc:
        raise SftpMissing(f"no such file on the SFTP server ({exc})") from None
    fd, name = tempfile.mkstemp(prefix=prefix, suffix=".feed", dir=dest_dir)
    local = Path(name)
    digest = hashlib.sha256()
    size = 0
    try:
        with os.fdopen(fd, "wb") as out, sftp.open(path, "rb") as remote:
            while chunk := remote.read(CHUNK_BYTES):
                out.write(chunk)
                digest.update(chunk)
                size += len(chunk)
        if size != expected:
            raise SftpIncomplete(f"incomplete transfer: received {size} bytes, the server announced {expected}")
        after = sftp.stat(path)
        if after.st_size != expected:
            raise SftpIncomplete(f"file still growing (size {expected} -> {after.st_size} bytes during the read)")
    except BaseException:
        local.unlink(missing_ok=True)
        raise
    return Download(path=local, sha256=digest.hexdigest(), size=size)


def upload_atomic(sftp: paramiko.SFTPClient, local: Path, remote: PurePosixPath, mode: int | None = None) -> None:
    """Upload ``local`` to ``remote`` through a staging file of its own, renamed over ``remote`` when whole.

    With ``mode``, the staging file gets those permission bits before the rename (a published feed
    must be readable by the web server that serves it, whatever the login's umask).

    On failure the staging file is removed if the connection still allows it; one left by a lost
    connection is removed by a later upload to the same target once it is stale.

    Raises:
        SftpRefused: ``not_a_directory`` or ``rename`` (the previous file at ``remote`` is unchanged).
        SftpIncomplete: the server holds fewer bytes than were sent (the previous file is unchanged).
        PermissionError: the login may not create, write, rename or remove files there.
        OSError, EOFError, paramiko.SSHException: network faults.
    """
    _make_dirs(sftp, remote.parent)
    _remove_stale_staging(sftp, remote)
    staging = str(remote.parent / staging_name(remote.name))
    size = local.stat().st_size
    try:
        with local.open("rb") as source:
            sftp.putfo(source, staging, file_size=size, confirm=False)
        uploaded = sftp.stat(staging).st_size
        if uploaded != size:
            raise SftpIncomplete(f"the server holds {uploaded} bytes of the {size} sent")
        if mode is not None:
            _set_mode(sftp, staging, mode)
        try:
            sftp.posix_rename(staging, str(remote))
        except OSError as exc:
            if not _connected(sftp):
                raise
            raise SftpRefused("rename", f"posix-rename onto {remote}: {type(exc).__name__}: {exc}") from None
    except BaseException:
        _remove_quietly(sftp, staging)
        raise


def _set_mode(sftp: paramiko.SFTPClient, path: str, mode: int) -> None:
    """chmod ``path``; a server that does not support it (some gateways) keeps its own mode, with a warning."""
    try:
        sftp.chmod(path, mode)
    except OSError as exc:
        if not _connected(sftp):
            raise
        log.warning(
            "SFTP server refused chmod %o on %s (%s); the file keeps the server's default mode", mode, path, exc
        )


def _make_dirs(sftp: paramiko.SFTPClient, directory: PurePosixPath) -> None:
    """Create ``directory`` and its missing parents (another upload creating them too is fine)."""
    missing: list[PurePosixPath] = []
    for candidate in (directory, *directory.parents):
        try:
            attributes = sftp.stat(str(candidate))
        except FileNotFoundError:
            missing.append(candidate)
            continue
        if attributes.st_mode is not None and not stat_module.S_ISDIR(attributes.st_mode):
            raise SftpRefused("not_a_directory", f"{candidate} exists on the server but is not a directory")
        break
    for candidate in reversed(missing):
        try:
            sftp.mkdir(str(candidate))
        except OSError:
            if not _is_dir(sftp, candidate):  # else another upload created it meanwhile
                raise
        log.info("created directory %s on the SFTP server", candidate)


def _is_dir(sftp: paramiko.SFTPClient, path: PurePosixPath) -> bool:
    try:
        mode = sftp.stat(str(path)).st_mode
    except FileNotFoundError:
        return False
    return mode is not None and stat_module.S_ISDIR(mode)


def _connected(sftp: paramiko.SFTPClient) -> bool:
    transport = sftp.get_channel().get_transport()
    return bool(transport.is_active())


def _remove_stale_staging(sftp: paramiko.SFTPClient, remote: PurePosixPath) -> None:
    """Remove staging files of this target left by uploads whose connection was lost."""
    cutoff = time.time() - STALE_STAGING_SECONDS
    try:
        entries = sftp.listdir_attr(str(remote.parent))
    except PermissionError as exc:  # a server may allow writing but not listing: never block the upload
        log.warning("cannot list %s to remove stale staging files (%s)", remote.parent, exc)
        return
    for entry in entries:
        if is_staging_of(entry.filename, remote.name) and (entry.st_mtime or 0) < cutoff:
            log.warning("removing staging file %s left by an interrupted upload", remote.parent / entry.filename)
            _remove_quietly(sftp, str(remote.parent / entry.filename))


def _remove_quietly(sftp: paramiko.SFTPClient, path: str) -> None:
    """Best-effort removal that never masks the error being handled."""
    try:
        sftp.remove(path)
    except FileNotFoundError:
        pass
    except Exception as exc:
        log.warning(
            "could not remove staging file %s (%s: %s); the next upload removes it once it is %d s old",
            path,
            type(exc).__name__,
            exc,
            STALE_STAGING_SECONDS,
        )
