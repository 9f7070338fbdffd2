"""Feed publish targets: an SFTP server whose host key is not the one configured is refused before login."""

from __future__ import annotations

import json
from pathlib import Path

import paramiko
import pytest

from commerce_sync.channels.feed_publish import publish_copy
from commerce_sync.config import GoogleFeedSettings
from commerce_sync.errors import ConfigError
from commerce_sync.sandbox.sftp_server import SandboxSftpServer

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("host_key", [None, "other"])
def test_sftp_target_refuses_unknown_host_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, host_key: str | None
) -> None:
    feed = tmp_path / "google.xml"
    feed.write_bytes(b"<rss/>")
    with SandboxSftpServer(tmp_path / "remote") as server:
        extra: dict[str, str] = {}
        if host_key == "other":
            extra = {"host_key": f"{server.host_key.get_name()} {paramiko.ECDSAKey.generate().get_base64()}"}
        monkeypatch.setenv(
            "AIRFLOW_CONN_FEED_SFTP",
            json.dumps(
                {
                    "conn_type": "sftp",
                    "host": "127.0.0.1",
                    "port": server.port,
                    "login": "supplier",
                    "password": "sandbox-secret",
                    "extra": extra,
                }
            ),
        )
        settings = GoogleFeedSettings(
            path="google.xml",
            title="t",
            shop_url="https://shop.example.com",
            target=f"sftp://127.0.0.1:{server.port}/published/google.xml",
            target_conn_id="feed_sftp",
        )
        with pytest.raises(ConfigError, match=r"does not match extra\.host_key of connection 'feed_sftp'"):
            publish_copy(feed, settings)
        assert server.connections == 1
