"""The one place that builds lxml parsers: no entity expansion, no network, no DTD loading.

Supplier feeds come from outside, so every XML document is treated as hostile:

* entities are never expanded (``resolve_entities=False``), so an XXE ``SYSTEM`` entity cannot read
  local files and a billion-laughs document cannot expand;
* a document whose internal DTD declares entities is refused outright, and so is any entity
  reference left in a record (e.g. one declared in an external DTD we did not load);
* DTDs are never fetched (``load_dtd=False, no_network=True``);
* nesting deeper than ``max_depth`` is refused (by libxml2 itself at the default 256, so Python only
  sees finished records);
* records are cleared after use and their finished siblings deleted, so memory stays flat however
  large the feed grows.

Other libraries can replace lxml's global default parser, so nothing here relies on it: each call
passes its settings explicitly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import IO

from lxml import etree

from commerce_sync.errors import CommerceSyncError

DEFAULT_MAX_DEPTH = 256
# libxml2 refuses deeper nesting by itself unless ``huge_tree`` is set (tests/unit/test_safe_xml.py pins it):
# up to this limit the fast path leaves the depth check to libxml2.
LIBXML2_MAX_DEPTH = 256
_CHUNK = 64 * 1024
# Shared by the parser constructor and iterparse so both can never drift apart.
SAFE_OPTIONS = {"resolve_entities": False, "no_network": True, "load_dtd": False, "huge_tree": False}


class XmlError(CommerceSyncError):
    """The document is not well-formed XML; ``line`` is where the parser stopped, if known."""

    def __init__(self, problem: str, line: int | None = None) -> None:
        self.problem = problem
        self.line = line
        super().__init__(problem if line is None else f"line {line}: {problem}")


class UnsafeXmlError(XmlError):
    """The document uses a construct we refuse: entity declarations or references, deep nesting."""


def make_parser() -> etree.XMLParser:
    """A safe tree parser, for small documents (API responses, tests); feeds use :func:`iterparse`."""
    return etree.XMLParser(**SAFE_OPTIONS)


def local_name(element: etree._Element) -> str:
    """The element's tag without its namespace (``{ns}item`` -> ``item``)."""
    tag = element.tag
    if not isinstance(tag, str):  # comments and processing instructions have a function as tag
        return ""
    return tag.rpartition("}")[2]


def _refuse_entity_declarations(root: etree._Element) -> None:
    dtd = root.getroottree().docinfo.internalDTD
    if dtd is None:
        return
    names = [entity.name for entity in dtd.iterentities()]
    if names:
        raise UnsafeXmlError(
            f"the DOCTYPE declares entities {names[:5]}; entity declarations are refused "
            "(they are used for XXE and entity-expansion attacks)",
            root.sourceline,
        )


def _refuse_entity_references(element: etree._Element) -> None:
    for entity in element.iter(etree.Entity):
        raise UnsafeXmlError(
            f"unresolved entity reference {entity.text} inside <{local_name(element)}>; "
            "entity references are not expanded",
            entity.sourceline,
        )


def iterparse(
    source: str | Path | IO[bytes], tag: str | Collection[str], *, max_depth: int = DEFAULT_MAX_DEPTH
) -> Iterator[etree._Element]:
    """Yield each completed element whose local name is ``tag`` (or one of ``tag``), namespace-agnostic.

    The yielded element is only valid until the next one is requested: it is cleared afterwards
    (and earlier siblings deleted) to keep memory flat. Read what you need before resuming.

    Args:
        source: A file path or a binary file object.
        tag: Local name(s) of the record element (``product`` matches ``{any-ns}product``).
        max_depth: Deepest element nesting accepted.

    Raises:
        UnsafeXmlError: entity declarations or references, or nesting deeper than ``max_depth``.
        XmlError: the document is not well-formed (not XML, truncated, bad encoding).
    """
    if isinstance(source, Path):
        source = str(source)
    tags = [tag] if isinstance(tag, str) else list(tag)
    try:
        # A name that is not plain would be a wildcard in lxml's tag filter: compared literally instead.
        if max_depth >= LIBXML2_MAX_DEPTH and all(plain_name(name) for name in tags):
            yield from _iterparse_records(source, tags)
        else:
            yield from _iterparse_counting_depth(source, frozenset(tags), max_depth)
    except etree.XMLSyntaxError as exc:
        message = exc.msg or str(exc)
        line = exc.lineno if exc.lineno else None
        if "Excessive depth" in message:
            # libxml2's own limit (the fast path's depth check): the same words as the counting path.
            raise UnsafeXmlError(f"elements nest deeper than {LIBXML2_MAX_DEPTH} levels", line) from None
        if message.startswith("no element found"):
            raise XmlError("the document is empty: no XML element found", None) from None
        raise XmlError(message, line) from None


def plain_name(name: str) -> bool:
    """True if ``name`` can go into an lxml tag filter as ``{*}name`` and match only that local name
    (braces or ``*`` would make it a wildcard)."""
    return bool(name) and not any(c in name for c in "{}*")


def any_namespace(*names: str) -> list[str]:
    """lxml tag filters matching each plain local name in any namespace or none."""
    assert all(plain_name(name) for name in names)
    return [f"{{*}}{name}" for name in names]


def _release(element: etree._Element) -> None:
    """Clear a finished record and delete its earlier siblings, so the tree never grows."""
    element.clear(keep_tail=True)
    parent = element.getparent()
    if parent is not None:
        while element.getprevious() is not None:
            del parent[0]


def _iterparse_records(source: str | IO[bytes], tags: list[str]) -> Iterator[etree._Element]:
    """The fast path: lxml hands over only finished records (``tag=`` filter, one event per record).

    Nesting is limited by libxml2 itself (without ``huge_tree`` it refuses depth > 256, reported as
    "Excessive depth"), so no Python callback runs for the other elements. The DOCTYPE is checked
    before any content reaches the record parser: a probe parser is fed the same bytes until it
    reports the root element's start, exactly where the counting path checks it.
    """
    parser = etree.XMLPullParser(events=("end",), tag=any_namespace(*tags), remove_comments=True, **SAFE_OPTIONS)
    probe: etree.XMLPullParser | None = etree.XMLPullParser(events=("start",), remove_comments=True, **SAFE_OPTIONS)
    with contextlib.ExitStack() as stack:
        stream = stack.enter_context(open(source, "rb")) if isinstance(source, str) else source
        fed = 0
        while True:
            data = stream.read(_CHUNK)
            if probe is not None:
                probe = _probe_root(probe, data)
            if not data:
                break
            fed += len(data)
            try:
                parser.feed(data)
            finally:  # records finished before a syntax error are still delivered, as iterparse does
                yield from _finished_records(parser)
        if fed == 0:
            raise XmlError("the document is empty: no XML element found", None)
        try:
            parser.close()
        finally:
            yield from _finished_records(parser)


def _probe_root(probe: etree.XMLPullParser, data: bytes) -> etree.XMLPullParser | None:
    """Feed ``data`` to the probe; refuse entity declarations once the root has started.

    Returns the probe while the root start is still to come, else None (checked, or the document
    is broken before its root: the record parser then reports the same error itself).
    """
    if not data:
        return None
    try:
        probe.feed(data)
    except etree.XMLSyntaxError:
        pass
    else:
        for _event, root in probe.read_events():
            _refuse_entity_declarations(root)
            return None
        return probe
    for _event, root in probe.read_events():  # the root may have started before the error
        _refuse_entity_declarations(root)
    return None


def _finished_records(parser: etree.XMLPullParser) -> Iterator[etree._Element]:
    for _event, element in parser.read_events():
        _refuse_entity_references(element)
        yield element
        _release(element)


def _iterparse_counting_depth(
    source: str | IO[bytes], tags: frozenset[str], max_depth: int
) -> Iterator[etree._Element]:
    """The exact path for a limit below libxml2's own: start and end events for every element."""
    events = etree.iterparse(source, events=("start", "end"), remove_comments=True, **SAFE_OPTIONS)
    depth = 0
    for event, element in events:
        if event == "start":
            depth += 1
            if depth == 1:
                _refuse_entity_declarations(element)
            if depth > max_depth:
                raise UnsafeXmlError(f"elements nest deeper than {max_depth} levels", element.sourceline)
            continue
        depth -= 1
        if local_name(element) not in tags:
            continue
        _refuse_entity_references(element)
        yield element
        _release(element)
