"""Publishing a validated feed file to its configured target (SFTP or any ``ObjectStoragePath`` URL).

The copy is written under a temporary name and then renamed, so a reader of the target never sees
a half-written feed.
"""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import urlsplit

from commerce_sync.config import GoogleFeedSettings
from commerce_sync.errors import ConfigError

log = logging.getLogger(__name__)


def publish_copy(local: Path, feed: GoogleFeedSettings) -> str:
    """Copy the validated feed to ``feed.target`` atomically (temporary name, then rename).

    ``sftp://host[:port]/path`` uses paramiko with the credentials of ``feed.target_conn_id``;
    any other scheme goes through Airflow's ``ObjectStoragePath`` (``file://``, ``s3://``, ...).
    """
    assert feed.target is not None
    url = urlsplit(feed.target)
    if url.scheme == "sftp":
        _publish_sftp(local, feed.target, feed.target_conn_id)
    else:
        from airflow.sdk import ObjectStoragePath

        destination = ObjectStoragePath(feed.target, conn_id=feed.target_conn_id)
        staging = ObjectStoragePath(feed.target + ".tmp", conn_id=feed.target_conn_id)
        destination.parent.mkdir(parents=True, exist_ok=True)
        with local.open("rb") as source, staging.open("wb") as sink:
            for block in iter(lambda: source.read(1 << 20), b""):
                sink.write(block)
        staging.rename(destination)
    log.info("feed %s published to %s", local.name, feed.target)
    return feed.target


def _publish_sftp(local: Path, target: str, conn_id: str | None) -> None:
    """Upload over SFTP after checking the server's host key against the connection's ``extra.host_key``."""
    import socket

    import paramiko

    from commerce_sync.connections import get_connection

    url = urlsplit(target)
    if not conn_id:
        raise ConfigError(f"feed target {target} needs target_conn_id (the Airflow connection with SFTP credentials)")
    info = get_connection(conn_id)
    expected = str(info.extra.get("host_key") or "").split()
    host, port = url.hostname or info.host or "localhost", url.port or info.port or 22
    sock = socket.create_connection((host, port), timeout=30)
    with paramiko.Transport(sock) as transport:
        transport.start_client(timeout=30)
        key = transport.get_remote_server_key()
        seen = [key.get_name(), key.get_base64()]
        if expected[-2:] != seen:
            raise ConfigError(
                f"feed target {host}:{port}: the server's host key {' '.join(seen)!r} does not match "
                f"extra.host_key of connection {conn_id!r} ({'missing' if not expected else 'different'}); "
                "refusing to upload. Verify the key with the server's owner and set extra.host_key"
            )
        transport.auth_password(info.login or "", info.password or "")
        sftp = paramiko.SFTPClient.from_transport(transport)
        assert sftp is not None
        staging = url.path + ".tmp"
        sftp.put(str(local), staging)
        sftp.posix_rename(staging, url.path)
        sftp.close()
