"""Publishing a validated feed file to its configured target (SFTP or any ``ObjectStoragePath`` URL).

Every upload goes to a staging name of its own beside the target (``.<name>.<32 hex>.tmp``, so two
runs never share one; :mod:`commerce_sync.transport.staging`) and is renamed over the target only
when complete, so a reader of the target sees the previous feed or the new one, never half of one.

SFTP (``sftp://host[:port]/absolute/path``, credentials from ``target_conn_id``) goes through the
package's one SFTP client, :mod:`commerce_sync.transport.sftp` (also used by the supplier transport):
the server's host key must equal the connection's ``extra.host_key``; login by private key when
``extra.private_key`` is set, else by password. Missing remote directories are created, the staging
file's size is checked with ``stat`` before the atomic ``posix-rename`` (OpenSSH's extension), and on
failure the staging file is removed if the connection still allows it. If the connection itself was
lost, the staging file stays; the next upload to the same target removes staging files of that
target untouched for :data:`~commerce_sync.transport.staging.STALE_STAGING_SECONDS`.

Errors: a wrong or missing host key, unreadable key and missing ``target_conn_id`` are
:class:`ConfigError`; the server refusing credentials, a write or the rename is :class:`ChannelError`;
a lost connection or a short upload is :class:`TransientError` (the task retries).
"""

from __future__ import annotations

import logging
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from commerce_sync.config import FeedSettings
from commerce_sync.errors import ChannelError, ConfigError, TransientError
from commerce_sync.transport.staging import staging_name

log = logging.getLogger(__name__)

SFTP_TIMEOUT_SECONDS = 60.0
CHUNK_BYTES = 1 << 20


def publish_copy(local: Path, feed: FeedSettings) -> str:
    """Copy the validated feed to ``feed.target`` atomically (own staging name, then rename).

    ``sftp://host[:port]/path`` uses paramiko with the credentials of ``feed.target_conn_id``;
    any other scheme goes through Airflow's ``ObjectStoragePath`` (``file://``, ``s3://``, ...).

    Returns:
        The target URL.
    """
    assert feed.target is not None
    if urlsplit(feed.target).scheme == "sftp":
        _publish_sftp(local, feed.target, feed.target_conn_id, feed.file_mode)
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


def _publish_sftp(local: Path, target: str, conn_id: str | None, mode: int | None = None) -> None:
    """Upload ``local`` to ``target`` over SFTP (see the module docstring for the guarantees)."""
    import paramiko

    from commerce_sync.connections import get_connection
    from commerce_sync.transport.sftp import SftpIncomplete, SftpRefused, open_sftp, upload_atomic

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
            upload_atomic(sftp, local, remote, mode)
    except SftpRefused as exc:
        if exc.reason == "host_key":
            raise ConfigError(f"{subject}: {exc}") from None
        if exc.reason == "rename":
            raise ChannelError(
                f"{subject}: the server refused to replace the feed with the uploaded copy ({exc}); the previous "
                "feed there is unchanged. The server must allow OpenSSH's posix-rename in that directory for the "
                "login; fix that, then clear the task"
            ) from None
        if exc.reason == "not_a_directory":
            raise ChannelError(f"{subject}: {exc}; change feed.target or remove that file") from None
        raise ChannelError(f"{subject}: {exc}") from None
    except SftpIncomplete as exc:
        raise TransientError(
            f"{subject}: {exc}; the previous feed there is unchanged and the task retries (check the server's "
            "free disk space)"
        ) from None
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
