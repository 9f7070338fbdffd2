"""Feed transports against real servers on 127.0.0.1: a faulty HTTP server and an SFTP server.

Every incomplete transfer is refused whole: short bodies, dropped connections, gzip CRC errors,
files still growing (local and SFTP), short SFTP reads. Nothing here mocks a server.
"""

from __future__ import annotations

import gzip
import hashlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paramiko
import pytest

from commerce_sync.config import Supplier
from commerce_sync.connections import ConnectionInfo
from commerce_sync.errors import ConfigError, FeedError, TransientError
from commerce_sync.sources.transports import FetchState, fetch
from commerce_sync_sandbox.faulty_http import FaultyHttpServer, Served
from commerce_sync_sandbox.sftp_server import SandboxSftpServer

pytestmark = pytest.mark.integration

BODY = b"<catalog>" + b"".join(b"<product><code>%d</code></product>" % i for i in range(2000)) + b"</catalog>"


def supplier(transport: dict[str, Any]) -> Supplier:
    return Supplier.model_validate(
        {
            "id": "acme",
            "name": "ACME",
            "format": "xml",
            "transport": transport,
            "xml": {
                "record_tag": "product",
                "fields": {"supplier_sku": "code", "purchase_price": "p", "quantity": "q"},
            },
        }
    )


class Sleeps(list[float]):
    """Records the waits instead of sleeping; an optional hook runs at each wait."""

    def __init__(self, hook: Any = None) -> None:
        super().__init__()
        self.hook = hook

    def __call__(self, seconds: float) -> None:
        self.append(seconds)
        if self.hook is not None:
            self.hook()


@pytest.fixture
def http() -> Iterator[FaultyHttpServer]:
    with FaultyHttpServer() as server:
        yield server


def http_fetch(server: FaultyHttpServer, tmp_path: Path, previous: FetchState | None = None, retries: int = 2) -> Any:
    feed = supplier({"type": "http", "conn_id": "supplier_acme", "path": "/feed.xml", "retries": retries})
    conn = ConnectionInfo("supplier_acme", host=server.base_url)
    return fetch(feed, conn, tmp_path / "dl", previous, backoff_base=0.001, sleep=Sleeps())


# ------------------------------------------------------------------ HTTP
def test_http_conditional_get_etag_then_304(http: FaultyHttpServer, tmp_path: Path) -> None:
    http.files["/feed.xml"] = Served(BODY)
    first = http_fetch(http, tmp_path)
    assert first.sha256 == hashlib.sha256(BODY).hexdigest() and first.path.read_bytes() == BODY
    previous = FetchState(first.location, first.sha256, first.size, first.etag, first.last_modified)
    second = http_fetch(http, tmp_path, previous)
    assert second.not_modified and second.path is None
    assert http.requests[-1][1]["If-None-Match"] == first.etag
    assert "If-Modified-Since" in http.requests[-1][1]


def test_http_dropped_connection_mid_body_is_retried_then_loaded(http: FaultyHttpServer, tmp_path: Path) -> None:
    http.files["/feed.xml"] = Served(BODY, drop_after=1000, faults_left=2)
    result = http_fetch(http, tmp_path, retries=2)
    assert result.path.read_bytes() == BODY
    assert len(http.requests) == 3
    assert [p.name for p in (tmp_path / "dl").iterdir()] == [result.path.name]  # broken partial files removed


def test_http_dropped_connection_every_time_is_refused_whole(http: FaultyHttpServer, tmp_path: Path) -> None:
    http.files["/feed.xml"] = Served(BODY, drop_after=1000)
    with pytest.raises(FeedError, match=r"incomplete transfer.*after 3 attempts") as info:
        http_fetch(http, tmp_path, retries=2)
    assert "acme" in str(info.value) and "/feed.xml" in str(info.value)
    assert list((tmp_path / "dl").iterdir()) == []


def test_http_truncated_body_against_content_length_is_refused(http: FaultyHttpServer, tmp_path: Path) -> None:
    http.files["/feed.xml"] = Served(BODY, short_by=500)
    with pytest.raises(FeedError, match="incomplete transfer"):
        http_fetch(http, tmp_path, retries=1)
    assert list((tmp_path / "dl").iterdir()) == []


def test_http_gzip_feed_is_decompressed_and_hashed_as_delivered(http: FaultyHttpServer, tmp_path: Path) -> None:
    packed = gzip.compress(BODY)
    http.files["/feed.xml"] = Served(packed, content_type="application/gzip")
    result = http_fetch(http, tmp_path)
    assert result.path.read_bytes() == BODY and result.temporary
    assert result.sha256 == hashlib.sha256(packed).hexdigest() and result.size == len(packed)


# ------------------------------------------------------------------ files
def test_gzip_with_bad_crc_is_refused_and_leaves_no_file(tmp_path: Path) -> None:
    packed = bytearray(gzip.compress(BODY))
    packed[-8] ^= 0xFF  # the CRC32 in the gzip trailer
    path = tmp_path / "feed.xml.gz"
    path.write_bytes(bytes(packed))
    feed = supplier({"type": "file", "path": str(path), "settle_seconds": 0})
    with pytest.raises(FeedError, match="gzip data is corrupt or cut short") as info:
        fetch(feed, None, tmp_path / "dl", None)
    assert str(path) in str(info.value)
    assert list((tmp_path / "dl").iterdir()) == []
    assert path.exists()  # the delivery itself is the supplier's: never deleted


def test_gzip_cut_short_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "feed.xml.gz"
    path.write_bytes(gzip.compress(BODY)[:-20])
    feed = supplier({"type": "file", "path": str(path), "settle_seconds": 0})
    with pytest.raises(FeedError, match="incomplete transfer"):
        fetch(feed, None, tmp_path / "dl", None)


def test_local_file_still_growing_is_refused_then_accepted_once_settled(tmp_path: Path) -> None:
    path = tmp_path / "feed.xml"
    path.write_bytes(BODY[:5000])

    def supplier_still_writing() -> None:
        with path.open("ab") as handle:
            handle.write(BODY[5000:6000])

    feed = supplier({"type": "file", "path": str(path), "settle_seconds": 2})
    sleeps = Sleeps(supplier_still_writing)
    with pytest.raises(TransientError, match="still being written") as info:
        fetch(feed, None, tmp_path / "dl", None, sleep=sleeps)
    assert sleeps == [2] and str(path) in str(info.value)
    result = fetch(feed, None, tmp_path / "dl", None, sleep=Sleeps())
    assert result.size == 6000 and not result.temporary


# ------------------------------------------------------------------ SFTP
@pytest.fixture
def sftp_root(tmp_path: Path) -> Path:
    root = tmp_path / "outbox"
    (root / "feeds").mkdir(parents=True)
    (root / "feeds" / "acme.xml").write_bytes(BODY)
    return root


@pytest.fixture
def sftp(sftp_root: Path) -> Iterator[SandboxSftpServer]:
    with SandboxSftpServer(sftp_root) as server:
        yield server


def sftp_supplier(path: str = "/feeds/acme.xml", **transport: Any) -> Supplier:
    return supplier(
        {"type": "sftp", "conn_id": "supplier_acme_sftp", "path": path, "settle_seconds": 1, "retries": 1, **transport}
    )


def sftp_conn(server: SandboxSftpServer, **changes: Any) -> ConnectionInfo:
    values: dict[str, Any] = {
        "conn_id": "supplier_acme_sftp",
        "conn_type": "sftp",
        "host": "127.0.0.1",
        "port": server.port,
        "login": "supplier",
        "password": "sandbox-secret",
        "extra": {"host_key": server.host_key_line},
    }
    return ConnectionInfo(**(values | changes))


def test_sftp_password_download_checks_host_key_and_settles(sftp: SandboxSftpServer, tmp_path: Path) -> None:
    sleeps = Sleeps()
    result = fetch(sftp_supplier(), sftp_conn(sftp), tmp_path / "dl", None, sleep=sleeps)
    assert result.path.read_bytes() == BODY and result.temporary
    assert result.sha256 == hashlib.sha256(BODY).hexdigest()
    assert result.location == f"sftp://127.0.0.1:{sftp.port}/feeds/acme.xml"
    assert "sandbox-secret" not in repr(result)
    assert sleeps == [1]  # stat, settle, stat


def test_sftp_private_key_auth(sftp: SandboxSftpServer, tmp_path: Path) -> None:
    key = paramiko.ECDSAKey.generate()
    sftp.client_key = key
    pem = io.StringIO()
    key.write_private_key(pem)
    conn = sftp_conn(sftp, password=None, extra={"host_key": sftp.host_key_line, "private_key": pem.getvalue()})
    assert fetch(sftp_supplier(), conn, tmp_path / "dl", None, sleep=Sleeps()).path.read_bytes() == BODY


def test_sftp_wrong_host_key_is_refused_before_login(sftp: SandboxSftpServer, tmp_path: Path) -> None:
    other = paramiko.ECDSAKey.generate()
    conn = sftp_conn(sftp, extra={"host_key": f"{other.get_name()} {other.get_base64()}"})
    with pytest.raises(FeedError, match=r"does not match extra\.host_key"):
        fetch(sftp_supplier(), conn, tmp_path / "dl", None, sleep=Sleeps())


def test_sftp_without_known_host_key_is_a_config_error_unless_checking_is_off(
    sftp: SandboxSftpServer, tmp_path: Path
) -> None:
    conn = sftp_conn(sftp, extra={})
    with pytest.raises(ConfigError, match=r"no extra\.host_key"):
        fetch(sftp_supplier(), conn, tmp_path / "dl", None, sleep=Sleeps())
    relaxed = sftp_supplier(strict_host_key_checking=False)
    assert fetch(relaxed, conn, tmp_path / "dl", None, sleep=Sleeps()).size == len(BODY)


def test_sftp_bad_password_is_final(sftp: SandboxSftpServer, tmp_path: Path) -> None:
    with pytest.raises(FeedError, match="refused the credentials") as info:
        fetch(sftp_supplier(), sftp_conn(sftp, password="wrong"), tmp_path / "dl", None, sleep=Sleeps())
    assert "wrong" not in str(info.value)
    assert sftp.connections == 1  # not retried


def test_sftp_short_read_is_refused_whole_after_retries(sftp: SandboxSftpServer, tmp_path: Path) -> None:
    sftp.faults["acme.xml"] = "truncate"
    with pytest.raises(FeedError, match=r"incomplete transfer: received \d+ bytes, the server announced"):
        fetch(sftp_supplier(), sftp_conn(sftp), tmp_path / "dl", None, backoff_base=0.001, sleep=Sleeps())
    assert sftp.connections == 2
    assert list((tmp_path / "dl").iterdir()) == []


def test_sftp_growing_file_is_retried_then_transient(sftp: SandboxSftpServer, tmp_path: Path) -> None:
    sftp.faults["acme.xml"] = "grow"
    with pytest.raises(TransientError, match="still growing"):
        fetch(sftp_supplier(), sftp_conn(sftp), tmp_path / "dl", None, backoff_base=0.001, sleep=Sleeps())
    assert list((tmp_path / "dl").iterdir()) == []


def test_sftp_missing_file_and_path_escape_are_refused(sftp: SandboxSftpServer, tmp_path: Path) -> None:
    for path in ("/feeds/nope.xml", "/../../etc/passwd"):
        with pytest.raises(FeedError, match="no such file"):
            fetch(sftp_supplier(path), sftp_conn(sftp), tmp_path / "dl", None, sleep=Sleeps())


def test_sftp_gzip_feed(sftp: SandboxSftpServer, sftp_root: Path, tmp_path: Path) -> None:
    (sftp_root / "feeds" / "acme.xml.gz").write_bytes(gzip.compress(BODY))
    result = fetch(sftp_supplier("/feeds/acme.xml.gz"), sftp_conn(sftp), tmp_path / "dl", None, sleep=Sleeps())
    assert result.path.read_bytes() == BODY
