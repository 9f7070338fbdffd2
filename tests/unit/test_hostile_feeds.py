"""Hostile XML through the supplier feed readers (generic XML and BMEcat): refused with a clear error,
no file read (proved with a named pipe nobody may open), no network call (a loopback server counts
hits), the secret never in any output, and memory bounded (peak RSS of a fresh subprocess)."""

from __future__ import annotations

import errno
import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from commerce_sync.config import Supplier
from commerce_sync.errors import FeedError
from commerce_sync.sources.feeds import reader_for

SECRET = "TOP-SECRET-4c1f9e"

XML_SUPPLIER = {
    "format": "xml",
    "xml": {"record_tag": "p", "fields": {"supplier_sku": "c", "purchase_price": "v", "quantity": "q"}},
}
BMECAT_SUPPLIER = {"format": "bmecat"}


def supplier(kind: dict[str, Any]) -> Supplier:
    return Supplier.model_validate(
        {"id": "mallory", "name": "Mallory", "transport": {"type": "file", "path": "m.xml"}, **kind}
    )


@pytest.fixture
def hits() -> Iterator[tuple[str, list[str]]]:
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            body = f'<!ENTITY leak "{SECRET}">'.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


@pytest.fixture
def trap(tmp_path: Path) -> Path:
    """A named pipe: anyone opening it for reading blocks until a writer comes, which we detect."""
    path = tmp_path / "secret.fifo"
    os.mkfifo(path)
    return path


def _reader_waiting(fifo: Path) -> bool:
    """True if some thread is blocked opening ``fifo`` for reading (then release it with the secret)."""
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno != errno.ENXIO:  # ENXIO: no reader, nobody tried to read the file
            raise
        return False
    with os.fdopen(fd, "w") as handle:
        handle.write(SECRET)
    return True


def _read_all(kind: dict[str, Any], path: Path) -> tuple[str, list[Any]]:
    """Parse in a thread (so a blocked file read cannot hang the test); return (error text, records)."""
    outcome: dict[str, Any] = {"error": "", "records": []}

    def run() -> None:
        try:
            outcome["records"] = list(reader_for(supplier(kind), str(path)).records(path))
        except FeedError as exc:
            outcome["error"] = str(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout=20)
    return outcome["error"], outcome["records"]


RECORD = {
    "xml": "<p><c>1</c><v>1</v><q>1</q>{body}</p>",
    "bmecat": "<PRODUCT><SUPPLIER_PID>{body}</SUPPLIER_PID></PRODUCT>",
}


def _document(kind: str, doctype: str, body: str) -> str:
    record = RECORD[kind].format(body=body)
    if kind == "xml":
        return f'<?xml version="1.0"?>{doctype}<r>{record}</r>'
    return f'<?xml version="1.0"?>{doctype}<BMECAT version="2005"><T_NEW_CATALOG>{record}</T_NEW_CATALOG></BMECAT>'


@pytest.mark.parametrize("kind", ["xml", "bmecat"])
@pytest.mark.parametrize(
    ("doctype", "body", "reason"),
    [
        ('<!DOCTYPE r [<!ENTITY x SYSTEM "file://{fifo}">]>', "&x;", "declares entities"),
        ('<!DOCTYPE r [<!ENTITY % p SYSTEM "file://{fifo}"> %p;]>', "", "declares entities|entity"),
        ('<!DOCTYPE r SYSTEM "file://{fifo}">', "&leak;", "unresolved entity reference"),
    ],
    ids=["xxe-local-file", "parameter-entity-file", "external-dtd-file"],
)
def test_local_file_is_never_opened(
    kind: str, doctype: str, body: str, reason: str, trap: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    path = tmp_path / "feed.xml"
    path.write_text(_document(kind, doctype.replace("{fifo}", str(trap)), body), encoding="utf-8")
    error, records = _read_all(BMECAT_SUPPLIER if kind == "bmecat" else XML_SUPPLIER, path)
    assert not _reader_waiting(trap), "the parser tried to open the local file"
    if error:
        assert "mallory" in error and str(path) in error
    else:  # nothing to expand and nothing read: the record carries no secret
        assert records and reason
    assert SECRET not in error + repr(records) + caplog.text


@pytest.mark.parametrize("kind", ["xml", "bmecat"])
@pytest.mark.parametrize(
    ("doctype", "body"),
    [
        ('<!DOCTYPE r SYSTEM "{url}/external.dtd">', "&leak;"),
        ('<!DOCTYPE r [<!ENTITY % pe SYSTEM "{url}/pe.dtd"> %pe;]>', ""),
        ('<!DOCTYPE r [<!ENTITY x SYSTEM "{url}/x.txt">]>', "&x;"),
    ],
    ids=["external-dtd", "parameter-entity", "external-entity"],
)
def test_no_network_call(kind: str, doctype: str, body: str, hits: tuple[str, list[str]], tmp_path: Path) -> None:
    url, seen = hits
    path = tmp_path / "feed.xml"
    path.write_text(_document(kind, doctype.replace("{url}", url), body), encoding="utf-8")
    error, records = _read_all(BMECAT_SUPPLIER if kind == "bmecat" else XML_SUPPLIER, path)
    assert seen == []
    assert SECRET not in error + repr(records)


_MEASURE = """
import json, resource, sys
from pathlib import Path
from commerce_sync.config import Supplier
from commerce_sync.errors import FeedError
from commerce_sync.sources.feeds import reader_for
supplier = Supplier.model_validate(json.loads(sys.argv[2]))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    list(reader_for(supplier, sys.argv[1]).records(Path(sys.argv[1])))
    error = ""
except FeedError as exc:
    error = str(exc)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"error": error, "growth_mb": (after - before) / 1024}))
"""


def _laughs() -> str:
    entities = ['<!ENTITY lol0 "lol">'] + [f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10)]
    return f"<!DOCTYPE r [{''.join(entities)}]>"


@pytest.mark.parametrize("kind", ["xml", "bmecat"])
@pytest.mark.parametrize(
    ("doctype", "body", "match"),
    [
        (_laughs(), "&lol9;", "declares entities"),
        (f'<!DOCTYPE r [<!ENTITY a "{"x" * 100_000}">]>', "&a;" * 20_000, "declares entities"),
        ("", "<a>" * 5000 + "x" + "</a>" * 5000, "nest"),
    ],
    ids=["billion-laughs", "quadratic-blowup", "deep-nesting"],
)
def test_expansion_attacks_refused_within_a_small_memory_bound(
    kind: str, doctype: str, body: str, match: str, tmp_path: Path
) -> None:
    path = tmp_path / "feed.xml"
    path.write_text(_document(kind, doctype, body), encoding="utf-8")
    config = {"id": "mallory", "name": "Mallory", "transport": {"type": "file", "path": "m.xml"}}
    config |= BMECAT_SUPPLIER if kind == "bmecat" else XML_SUPPLIER
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(path), json.dumps(config)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,  # a hang guard, not a timing assertion
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert match in result["error"] and "mallory" in result["error"]
    assert result["growth_mb"] < 30, result  # expanded, billion laughs is ~3 GB and the quadratic one 2 GB
