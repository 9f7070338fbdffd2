"""Publishing a validated feed file to its configured target (SFTP or any ``ObjectStoragePath`` URL).

Every upload goes to a staging name of its own beside the target (``.<name>.<32 hex>.tmp``, so two
runs never share one) and is renamed over the target only when complete, so a reader of the target
sees the previous feed or the new one, never half of one.

SFTP (``sftp://host[:port]/absolute/path``, credentials from ``target_conn_id``): the server's host key
must equal the connection's ``extra.host_key``; login by private key when ``extra.private_key`` is set,
else by password (the connection code is shared with the supplier transport,
:func:`commerce_sync.sources.sftp.open_sftp`). Missing remote directories are created, the staging
file's size is checked with ``stat`` before the atomic ``posix-rename`` (OpenSSH's extension), and on
failure the staging file is removed if the connection still allows it. If the connection itself was
lost, the staging file stays; the next upload to the same target removes staging files of that
target untouched for :data:`STALE_STAGING_SECONDS` (an upload in progress keeps its file's mtime fresh).

Errors: a wrong or missing host key, unreadable key and missing ``target_conn_id`` are
:class:`ConfigError`; the server refusing credentials, a write or the rename is :class:`ChannelError`;
a lost connection or a short upload is :class:`TransientError` (the task retries).
"""

from __future__ import annotations

import logging
import re
import stat as stat_module
import time
import uuid
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from commerce_sync.config import FeedSettings
from commerce_sync.errors import ChannelError, ConfigError, TransientError

if TYPE_CHECKING:
    import paramiko

log = logging.getLogger(__name__)

SFTP_TIMEOUT_SECONDS = 60.0
STALE_STAGING_SECONDS = 3600
CHUNK_BYTES = 1 << 20


def staging_name(name: str) -> str:
    """A staging file name for ``name`` that no other upload uses."""
    return f".{name}.{uuid.uuid4().hex}.tmp"


def _is_staging_of(candidate: str, name: str) -> bool:
    return re.fullmatch(rf"\.{re.escape(name)}\.[0-9a-f]{{32}}\.tmp", candidate) is not None


def publish_copy(local: Path, feed: FeedSettings) -> str:
    """Copy the validated feed to ``feed.target`` atomically (own staging name, then rename).

    ``sftp://host[:port]/path`` uses paramiko with the credentials of ``feed.target_conn_id``;
    any other scheme goes through Airflow's ``ObjectStoragePath`` (``file://``, ``s3://``, ...).

    Returns:
        The target URL.
    """
    assert feed.target is not None
    if urlsplit(feed.target).scheme == "sftp":
        _publish_sftp(local, feed.target, feed.target_conn_id)
    else:
        _publish_object_storage(local, feed.target, feed.target_conn_id)
    log.info("feed %s published to %s", local.name, feed.target)
    return feed.target


def _publish_object_storage(local: Path, target: str, conn_id: str | None) -> None:
    from airflow.sdk import ObjectStoragePath

    destination = ObjectStoragePath(target, conn_id=conn_id)
    if destination.is_dir():  # a rename onto a directory would move the feed into it
        raise ConfigError(f"feed target {target} is a directory; feed.target must name the feed file itself")
    staging = destination.parent / staging_name(destination.name)
    destination.parent.mkdir(parents=True, exist_ok=True)
    try:
        with local.open("rb") as source, staging.open("wb") as sink:
            for block in iter(lambda: source.read(CHUNK_BYTES), b""):
                sink.write(block)
        staging.rename(destination)
    except BaseException:
        try:
            staging.unlink(missing_ok=True)
        except Exception as cleanup:  # never mask the upload's own error
            log.warning("feed target %s: could not remove staging file %s: %s", target, staging, cleanup)
        raise


def _publish_sftp(local: Path, target: str, conn_id: str | None) -> None:
    """Upload ``local`` to ``target`` over SFTP (see the module docstring for the guarantees)."""
    import paramiko

    from commerce_sync.connections import get_connection
    from commerce_sync.sources.sftp import SftpRefused, open_sftp

    url = urlsplit(target)
    remote = PurePosixPath(url.path)
    if not url.path.startswith("/") or url.path.endswith("/") or remote.name in ("", ".", ".."):
        raise ConfigError(f"feed target {target}: the path must be an absolute file path (sftp://host/dir/feed.xml)")
    if not conn_id:
        raise ConfigError(f"feed target {target} needs target_conn_id (the Airflow connection with SFTP credentials)")
    info = get_connection(conn_id)
    host, port = url.hostname or info.host, url.port or info.port or 22
    location = f"sftp://{host}:{port}{remote}"
    subject = f"feed target {location}"
    try:
        with open_sftp(info, subject=subject, timeout=SFTP_TIMEOUT_SECONDS, host=host, port=port) as sftp:
            _upload(sftp, local, remote, location)
    except SftpRefused as exc:
        raise (ChannelError if exc.reason == "credentials" else ConfigError)(f"{subject}: {exc}") from None
    except PermissionError as exc:
        raise ChannelError(
            f"{subject}: the server refused ({exc}); give the login of connection {conn_id!r} write access to "
            f"{remote.parent} (create, write, rename and remove files there), then clear the task"
        ) from None
    except (OSError, EOFError, paramiko.SSHException) as exc:
        raise TransientError(
            f"{subject}: upload failed ({type(exc).__name__}: {exc or 'connection lost'}); the previous feed "
            "there is unchanged. The task retries; if it keeps failing, check the server and the network"
        ) from exc


def _upload(sftp: paramiko.SFTPClient, local: Path, remote: PurePosixPath, location: str) -> None:
    _make_dirs(sftp, remote.parent, location)
    _remove_stale_staging(sftp, remote)
    staging = str(remote.parent / staging_name(remote.name))
    size = local.stat().st_size
    try:
        with local.open("rb") as source:
            sftp.putfo(source, staging, file_size=size, confirm=False)
        uploaded = sftp.stat(staging).st_size
        if uploaded != size:
            raise TransientError(
                f"feed target {location}: the server holds {uploaded} bytes of the {size} sent; the previous "
                "feed there is unchanged and the task retries (check the server's free disk space)"
            )
        try:
            sftp.posix_rename(staging, str(remote))
        except OSError as exc:
            if not _connected(sftp):
                raise
            raise ChannelError(
                f"feed target {location}: the server refused to replace the feed with the uploaded copy "
                f"({type(exc).__name__}: {exc}); the previous feed there is unchanged. The server must allow "
                "OpenSSH's posix-rename in that directory for the login; fix that, then clear the task"
            ) from None
    except BaseException:
        _remove_quietly(sftp, staging)
        raise


def _make_dirs(sftp: paramiko.SFTPClient, directory: PurePosixPath, location: str) -> None:
    """Create ``directory`` and its missing parents (another upload creating them too is fine)."""
    missing: list[PurePosixPath] = []
    for candidate in (directory, *directory.parents):
        try:
            attributes = sftp.stat(str(candidate))
        except FileNotFoundError:
            missing.append(candidate)
            continue
        if attributes.st_mode is not None and not stat_module.S_ISDIR(attributes.st_mode):
            raise ChannelError(
                f"feed target {location}: {candidate} exists on the server but is not a directory; "
                "change feed.target or remove that file"
            )
        break
    for candidate in reversed(missing):
        try:
            sftp.mkdir(str(candidate))
        except OSError:
            if not _is_dir(sftp, candidate):  # else another upload created it meanwhile
                raise
        log.info("feed target %s: created directory %s", location, candidate)


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
        if _is_staging_of(entry.filename, remote.name) and (entry.st_mtime or 0) < cutoff:
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
