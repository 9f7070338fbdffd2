"""The safe XML parser refuses XXE, entity expansion, external DTDs and deep nesting."""

from __future__ import annotations

import contextlib
import io
import resource
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from commerce_sync.safe_xml import UnsafeXmlError, XmlError, iterparse, make_parser


@pytest.fixture
def hit_server() -> Iterator[tuple[str, list[str]]]:
    """A loopback HTTP server that records every path requested from it."""
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            body = b'<!ENTITY leak "LEAKED">'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", hits
    server.shutdown()
    server.server_close()


def _texts(document: bytes, tag: str = "p") -> list[str | None]:
    return [element.text for element in iterparse(io.BytesIO(document), tag)]


def test_normal_feed_parses_namespace_agnostic(tmp_path: Path) -> None:
    feed = tmp_path / "feed.xml"
    feed.write_bytes(
        b'<?xml version="1.0" encoding="UTF-8"?>\n<rss xmlns:g="http://base.google.com/ns/1.0"><channel>'
        + b"".join(b"<g:item><g:id>%d</g:id></g:item>" % i for i in range(1000))
        + b"</channel></rss>"
    )
    ids = [element[0].text for element in iterparse(feed, "item")]
    assert ids == [str(i) for i in range(1000)]


def test_records_are_cleared_so_memory_stays_flat() -> None:
    document = b"<r>" + b"<p>x</p>" * 100 + b"</r>"
    elements = iterparse(io.BytesIO(document), "p")
    first = next(elements)
    root = first.getparent()
    for _ in elements:
        pass
    assert root is not None
    assert len(root) <= 1  # finished siblings were deleted as we went


def test_xxe_local_file_is_refused_and_never_read() -> None:
    document = b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r><p>&x;</p></r>'
    with pytest.raises(UnsafeXmlError, match="declares entities") as excinfo:
        _texts(document)
    assert "root:" not in str(excinfo.value)


def test_tree_parser_does_not_expand_entities_either() -> None:
    from lxml import etree

    document = b'<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r>&x;</r>'
    root = etree.fromstring(document, make_parser())
    assert "root:" not in etree.tostring(root).decode()


@pytest.mark.parametrize(
    "template",
    [
        b'<!DOCTYPE r SYSTEM "{url}/external.dtd"><r><p>a</p></r>',
        b'<!DOCTYPE r [<!ENTITY % pe SYSTEM "{url}/pe.dtd"> %pe;]><r><p>a</p></r>',
        b'<!DOCTYPE r [<!ENTITY x SYSTEM "{url}/x.txt">]><r><p>&x;</p></r>',
    ],
    ids=["external-dtd", "parameter-entity", "external-entity"],
)
def test_no_network_request_is_made(hit_server: tuple[str, list[str]], template: bytes) -> None:
    url, hits = hit_server
    document = template.replace(b"{url}", url.encode())
    with contextlib.suppress(XmlError):  # refusing is fine; fetching is not
        _texts(document)
    time.sleep(0.1)
    assert hits == []


def test_external_dtd_entity_reference_is_refused(hit_server: tuple[str, list[str]]) -> None:
    url, hits = hit_server
    document = f'<!DOCTYPE r SYSTEM "{url}/e.dtd"><r><p>a&leak;b</p></r>'.encode()
    with pytest.raises(UnsafeXmlError, match="unresolved entity reference"):
        _texts(document)
    assert hits == []


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_billion_laughs_refused_quickly_with_small_memory() -> None:
    entities = ['<!ENTITY lol0 "lol">'] + [f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10)]
    document = f'<?xml version="1.0"?><!DOCTYPE r [{"".join(entities)}]><r><p>&lol9;</p></r>'.encode()
    before = _peak_rss_mb()
    with pytest.raises(UnsafeXmlError):
        _texts(document)
    assert _peak_rss_mb() - before < 50


def test_quadratic_blowup_refused_quickly_with_small_memory() -> None:
    big = "x" * 100_000
    document = (f'<!DOCTYPE r [<!ENTITY a "{big}">]><r><p>' + "&a;" * 20_000 + "</p></r>").encode()
    before = _peak_rss_mb()
    with pytest.raises(UnsafeXmlError):
        _texts(document)
    assert _peak_rss_mb() - before < 50  # expanded it would be 2 GB


@pytest.mark.parametrize("depth", [100, 10_000])
def test_deep_nesting_refused(depth: int) -> None:
    document = b"<r>" + b"<a>" * depth + b"<p>x</p>" + b"</a>" * depth + b"</r>"
    with pytest.raises(UnsafeXmlError, match="deep"):
        list(iterparse(io.BytesIO(document), "p", max_depth=64))


@pytest.mark.parametrize(
    ("document", "match"),
    [
        (b"this is not xml", "Start tag expected"),
        (b"<r><p>1</p><p>2", "Premature end of data"),
        (b"", "empty"),
    ],
)
def test_malformed_documents_raise_xml_error(document: bytes, match: str) -> None:
    with pytest.raises(XmlError, match=match):
        _texts(document)


def _nested(depth: int) -> bytes:
    """A document whose innermost element ``p`` is at ``depth`` (the root is depth 1)."""
    return b"<a>" * (depth - 1) + b"<p>x</p>" + b"</a>" * (depth - 1)


def test_default_depth_limit_is_exactly_256_levels() -> None:
    # At the default limit the depth check is libxml2's own (records-only fast path): pin that it
    # still accepts 256 levels and refuses 257, like the element-counting path does for smaller limits.
    assert _texts(_nested(256)) == ["x"]
    with pytest.raises(UnsafeXmlError, match="deeper than 256 levels"):
        _texts(_nested(257))
    assert [e.text for e in iterparse(io.BytesIO(_nested(64)), "p", max_depth=64)] == ["x"]
    with pytest.raises(UnsafeXmlError, match="deeper than 64"):
        list(iterparse(io.BytesIO(_nested(65)), "p", max_depth=64))


@pytest.mark.parametrize("max_depth", [256, 64])
def test_entity_declarations_refused_before_the_first_record(max_depth: int) -> None:
    document = b'<!DOCTYPE r [<!ENTITY x "y">]><r><p>1</p><p>2</p></r>'
    elements = iterparse(io.BytesIO(document), "p", max_depth=max_depth)
    with pytest.raises(UnsafeXmlError, match="declares entities"):
        next(elements)


def test_entity_declarations_refused_without_any_record() -> None:
    with pytest.raises(UnsafeXmlError, match="declares entities"):
        _texts(b'<!DOCTYPE r [<!ENTITY x "y">]><r><q>&x;</q></r>')


def test_a_doctype_without_entities_is_accepted() -> None:
    assert _texts(b"<!DOCTYPE r [<!ELEMENT r ANY>]><r><p>1</p></r>") == ["1"]


@pytest.mark.parametrize("max_depth", [256, 64])
def test_records_before_a_syntax_error_are_delivered_first(max_depth: int) -> None:
    seen: list[str | None] = []

    def consume() -> None:
        for element in iterparse(io.BytesIO(b"<r><p>1</p><p>2</p><p>3"), "p", max_depth=max_depth):
            seen.append(element.text)

    with pytest.raises(XmlError, match="Premature end of data"):
        consume()
    assert seen == ["1", "2"]


def test_both_paths_give_the_same_records_and_lines_across_read_chunks(tmp_path: Path) -> None:
    feed = tmp_path / "feed.xml"
    lines = [b'<?xml version="1.0" encoding="UTF-8"?>', b'<rss xmlns:g="http://base.google.com/ns/1.0"><channel>']
    for i in range(20_000):  # ~1 MB: many 64 KiB reads, records split across their boundaries
        lines.append(b"<!-- c --><g:item>\n<g:id>%d</g:id><other>%s</other>\n</g:item>" % (i, b"z" * (i % 50)))
    lines.append(b"</channel></rss>")
    feed.write_bytes(b"\n".join(lines))
    fast = [(e[0].text, e.sourceline) for e in iterparse(feed, "item")]
    counted = [(e[0].text, e.sourceline) for e in iterparse(feed, "item", max_depth=64)]
    assert fast == counted
    assert fast[0] == ("0", 3) and fast[-1] == ("19999", 3 + 3 * 19_999)


def test_a_wildcard_record_tag_matches_only_literally() -> None:
    assert _texts(b"<r><p>1</p><q>2</q></r>", "*") == []
