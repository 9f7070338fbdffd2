"""Feed publish targets against real servers: the sandbox SFTP server (writable) on 127.0.0.1 and file://.

An upload either replaces the remote feed whole or leaves the previous one untouched; staging files
are unique per upload and never left behind except when the connection itself was lost (then the
next upload removes them once they are stale). Nothing here mocks a server.
"""

from __future__ import annotations

import io
import json
import os
import re
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import paramiko
import pytest

from commerce_sync.audit import ledger
from commerce_sync.channels.feed_publish import publish_copy
from commerce_sync.config import Channel, FeedSettings, PricingRule
from commerce_sync.db import connect
from commerce_sync.errors import ChannelError, ConfigError, TransientError
from commerce_sync.pricing.compute import compute_channel_offers
from commerce_sync.transport import staging
from commerce_sync_sandbox.sftp_server import SandboxSftpServer
from tests.integration.test_pricing_compute import seed_products

pytestmark = pytest.mark.integration

STAGING = re.compile(r"^\.google\.xml\.[0-9a-f]{32}\.tmp$")
V1 = b"<rss>" + b"<item>first</item>" * 20_000 + b"</rss>"
V2 = b"<rss>" + b"<item>second!</item>" * 30_000 + b"</rss>"


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    root = tmp_path / "remote"
    root.mkdir()
    return root


@pytest.fixture
def server(remote: Path) -> Iterator[SandboxSftpServer]:
    with SandboxSftpServer(remote, writable=True) as sftp:
        yield sftp


def set_connection(monkeypatch: pytest.MonkeyPatch, server: SandboxSftpServer, **changes: object) -> None:
    values: dict[str, object] = {
        "conn_type": "sftp",
        "host": "127.0.0.1",
        "port": server.port,
        "login": "supplier",
        "password": "sandbox-secret",
        "extra": {"host_key": server.host_key_line},
    }
    monkeypatch.setenv("AIRFLOW_CONN_FEED_SFTP", json.dumps(values | changes))


def settings(server: SandboxSftpServer, path: str = "/published/google.xml") -> FeedSettings:
    return FeedSettings(
        path="google.xml",
        title="t",
        shop_url="https://shop.example.com",
        target=f"sftp://127.0.0.1:{server.port}{path}",
        target_conn_id="feed_sftp",
    )


def local_feed(tmp_path: Path, body: bytes) -> Path:
    path = tmp_path / "google.xml"
    path.write_bytes(body)
    return path


def staging_files(directory: Path) -> list[Path]:
    return [p for p in directory.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize(
    ("host_key", "message"),
    [
        (None, r"connection 'feed_sftp' has no extra\.host_key"),
        ("other", r"does not match extra\.host_key of connection 'feed_sftp'"),
    ],
)
def test_sftp_target_refuses_unknown_host_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: SandboxSftpServer, host_key: str | None, message: str
) -> None:
    extra: dict[str, str] = {}
    if host_key == "other":
        extra = {"host_key": f"{server.host_key.get_name()} {paramiko.ECDSAKey.generate().get_base64()}"}
    set_connection(monkeypatch, server, extra=extra)
    with pytest.raises(ConfigError, match=message):
        publish_copy(local_feed(tmp_path, V1), settings(server))
    assert server.connections == 1
    assert not (server.root / "published").exists()


def test_upload_creates_missing_directories_and_equals_local_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: SandboxSftpServer
) -> None:
    set_connection(monkeypatch, server)
    feed = settings(server, "/published/feeds/pl/google.xml")
    assert publish_copy(local_feed(tmp_path, V1), feed) == feed.target
    directory = server.root / "published" / "feeds" / "pl"
    assert (directory / "google.xml").read_bytes() == V1
    assert [p.name for p in directory.iterdir()] == ["google.xml"]
    assert (directory / "google.xml").stat().st_mode & 0o777 == 0o644  # the server's web root can serve it


def test_upload_sets_the_configured_mode_before_the_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: SandboxSftpServer
) -> None:
    set_connection(monkeypatch, server)
    feed = settings(server).model_copy(update={"file_mode": 0o640})
    local = local_feed(tmp_path, V1)
    local.chmod(0o600)  # as mkstemp leaves it
    publish_copy(local, feed)
    assert (server.root / "published" / "google.xml").stat().st_mode & 0o777 == 0o640


def test_second_upload_replaces_the_feed_atomically(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: SandboxSftpServer
) -> None:
    set_connection(monkeypatch, server)
    publish_copy(local_feed(tmp_path, V1), settings(server))
    published = server.root / "published" / "google.xml"
    with published.open("rb") as reader:  # a consumer that opened the old feed keeps reading it whole
        inode = os.fstat(reader.fileno()).st_ino
        publish_copy(local_feed(tmp_path, V2), settings(server))
        assert reader.read() == V1
    assert published.read_bytes() == V2
    assert published.stat().st_ino != inode  # renamed into place, not overwritten in place
    assert staging_files(published.parent) == []


def test_connection_dropped_mid_upload_keeps_previous_feed_and_stale_staging_is_cleaned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: SandboxSftpServer
) -> None:
    set_connection(monkeypatch, server)
    publish_copy(local_feed(tmp_path, V1), settings(server))
    published = server.root / "published" / "google.xml"

    server.faults[".google.xml.*.tmp"] = "drop"
    server.fault_at_bytes = 100_000
    with pytest.raises(
        TransientError, match=r"feed target sftp://127\.0\.0\.1:\d+/published/google\.xml: upload failed"
    ):
        publish_copy(local_feed(tmp_path, V2), settings(server))
    assert published.read_bytes() == V1
    (leftover,) = staging_files(published.parent)  # the connection was gone: nothing could remove it
    assert STAGING.match(leftover.name) and leftover.stat().st_size <= 100_000

    server.faults.clear()
    publish_copy(local_feed(tmp_path, V2), settings(server))
    assert published.read_bytes() == V2
    assert staging_files(published.parent) == [leftover]  # fresh: could be another upload in progress

    stale = time.time() - staging.STALE_STAGING_SECONDS - 60
    os.utime(leftover, (stale, stale))
    publish_copy(local_feed(tmp_path, V1), settings(server))
    assert published.read_bytes() == V1
    assert staging_files(published.parent) == []


def test_short_upload_is_caught_by_the_size_check_before_the_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: SandboxSftpServer
) -> None:
    set_connection(monkeypatch, server)
    publish_copy(local_feed(tmp_path, V1), settings(server))
    server.faults[".google.xml.*.tmp"] = "full"
    server.fault_at_bytes = 100_000
    with pytest.raises(TransientError, match=rf"the server holds 100000 bytes of the {len(V2)} sent"):
        publish_copy(local_feed(tmp_path, V2), settings(server))
    published = server.root / "published" / "google.xml"
    assert published.read_bytes() == V1
    assert staging_files(published.parent) == []


def test_refused_rename_keeps_previous_feed_and_removes_staging(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: SandboxSftpServer
) -> None:
    set_connection(monkeypatch, server)
    publish_copy(local_feed(tmp_path, V1), settings(server))
    server.faults["google.xml"] = "refuse_rename"
    with pytest.raises(ChannelError, match=r"refused to replace the feed.*previous feed there is unchanged"):
        publish_copy(local_feed(tmp_path, V2), settings(server))
    published = server.root / "published" / "google.xml"
    assert published.read_bytes() == V1
    assert staging_files(published.parent) == []


def test_private_key_login(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: SandboxSftpServer) -> None:
    key = paramiko.ECDSAKey.generate()
    pem = io.StringIO()
    key.write_private_key(pem)
    server.client_key = key
    server.password = None  # the password login is off: only the key can succeed
    set_connection(
        monkeypatch, server, password=None, extra={"host_key": server.host_key_line, "private_key": pem.getvalue()}
    )
    publish_copy(local_feed(tmp_path, V1), settings(server))
    assert (server.root / "published" / "google.xml").read_bytes() == V1


def test_refused_credentials_and_read_only_server_are_final_with_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: SandboxSftpServer
) -> None:
    set_connection(monkeypatch, server, password="wrong")
    with pytest.raises(ChannelError, match=r"refused the credentials of connection 'feed_sftp'") as info:
        publish_copy(local_feed(tmp_path, V1), settings(server))
    assert "wrong" not in str(info.value)

    (server.root / "published").mkdir()
    server.writable = False
    set_connection(monkeypatch, server)
    with pytest.raises(ChannelError, match=r"give the login of connection 'feed_sftp' write access to /published"):
        publish_copy(local_feed(tmp_path, V1), settings(server))
    assert list((server.root / "published").iterdir()) == []


def test_target_outside_the_server_root_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: SandboxSftpServer
) -> None:
    set_connection(monkeypatch, server)
    with pytest.raises(ChannelError):
        publish_copy(local_feed(tmp_path, V1), settings(server, "/../escaped/google.xml"))
    assert not (server.root.parent / "escaped").exists()


def test_sandbox_server_writes_stay_under_root_and_rename_does_not_overwrite(
    tmp_path: Path, server: SandboxSftpServer
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (server.root / "link").symlink_to(outside)
    (server.root / "a.txt").write_bytes(b"a")
    (server.root / "b.txt").write_bytes(b"b")
    with paramiko.Transport(("127.0.0.1", server.port)) as transport:
        transport.connect(username="supplier", password="sandbox-secret")
        sftp = paramiko.SFTPClient.from_transport(transport)
        assert sftp is not None
        for path in ("/link/x.txt", "/../x.txt"):
            with pytest.raises(PermissionError):
                sftp.open(path, "wb")
        with pytest.raises(PermissionError):
            sftp.mkdir("/link/d")
        with pytest.raises(OSError, match="Failure"):
            sftp.rename("/a.txt", "/b.txt")  # SFTP v3 rename never replaces
        assert (server.root / "b.txt").read_bytes() == b"b"
        sftp.posix_rename("/a.txt", "/b.txt")
        sftp.remove("/b.txt")
    assert list(outside.iterdir()) == []
    assert sorted(p.name for p in server.root.iterdir()) == ["link"]


def test_object_storage_target_uses_own_staging_and_removes_it_on_failure(tmp_path: Path) -> None:
    store = tmp_path / "store"
    feed = FeedSettings(
        path="google.xml", title="t", shop_url="https://shop.example.com", target=f"file://{store}/out/google.xml"
    )
    old_fixed_staging = store / "out" / "google.xml.tmp"  # what an older version used: must not matter
    old_fixed_staging.parent.mkdir(parents=True)
    old_fixed_staging.write_bytes(b"someone else's")
    assert publish_copy(local_feed(tmp_path, V1), feed) == feed.target
    assert (store / "out" / "google.xml").read_bytes() == V1
    assert old_fixed_staging.read_bytes() == b"someone else's"

    # A source that fails mid-copy (reading /proc/self/mem at offset 0 is an I/O error) after the
    # staging file was opened: the error surfaces unchanged and the staging file is gone.
    with pytest.raises(OSError, match="Input/output error"):
        publish_copy(Path("/proc/self/mem"), feed)
    assert (store / "out" / "google.xml").read_bytes() == V1
    assert staging_files(store / "out") == [old_fixed_staging]

    (store / "out" / "dir.xml").mkdir()
    into_directory = feed.model_copy(update={"target": f"file://{store}/out/dir.xml"})
    with pytest.raises(ConfigError, match=r"out/dir\.xml is a directory; feed\.target must name the feed file"):
        publish_copy(local_feed(tmp_path, V1), into_directory)
    assert list((store / "out" / "dir.xml").iterdir()) == []


def test_write_feed_publishes_to_sftp_and_records_it_in_the_ledger(
    hub_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: SandboxSftpServer
) -> None:
    from commerce_sync.channels.feeds import write_feed

    set_connection(monkeypatch, server)
    seed_products(hub_dsn, 15)
    channel = Channel(id="google", kind="google_merchant_feed", pricing_rule="g-rule", feed=settings(server))
    rule = PricingRule(id="g-rule", version=1, margin_pct=Decimal(20), min_margin_pct=Decimal(5))
    compute_channel_offers(hub_dsn, channel, rule, ledger.RunContext(run_id="t", dag_id="t", task_id="compute"))
    result = write_feed(hub_dsn, channel, tmp_path / "data", ledger.RunContext(run_id="t", dag_id="t", task_id="feed"))
    target = f"sftp://127.0.0.1:{server.port}/published/google.xml"
    assert result.item_count == 15 and result.published_to == target
    assert (server.root / "published" / "google.xml").read_bytes() == Path(result.path).read_bytes()
    with connect(hub_dsn) as conn:
        row = conn.execute(
            "SELECT status, details->>'published_to' FROM audit.transfer WHERE task_id = 'feed'"
        ).fetchone()
    assert row == ("success", target)
