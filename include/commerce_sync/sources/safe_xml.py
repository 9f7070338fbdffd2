"""The one place that builds lxml parsers: no entity expansion, no network, no DTD loading.

Supplier feeds come from outside, so every XML document is treated as hostile:

* entities are never expanded (``resolve_entities=False``), so an XXE ``SYSTEM`` entity cannot read
  local files and a billion-laughs document cannot expand;
* a document whose internal DTD declares entities is refused outright, and so is any entity
  reference left in a record (e.g. one declared in an external DTD we did not load);
* DTDs are never fetched (``load_dtd=False, no_network=True``);
* nesting deeper than ``max_depth`` is refused;
* records are cleared after use and their finished siblings deleted, so memory stays flat however
  large the feed grows.

Other libraries can replace lxml's global default parser, so nothing here relies on it: each call
passes its settings explicitly.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from pathlib import Path
from typing import IO

from lxml import etree

from commerce_sync.errors import CommerceSyncError

DEFAULT_MAX_DEPTH = 256
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
    tags = frozenset([tag] if isinstance(tag, str) else tag)
    # Start events are needed to track depth and to inspect the DOCTYPE before any content.
    events = etree.iterparse(source, events=("start", "end"), remove_comments=True, **SAFE_OPTIONS)
    depth = 0
    try:
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
            element.clear(keep_tail=True)
            parent = element.getparent()
            if parent is not None:
                while element.getprevious() is not None:
                    del parent[0]
    except etree.XMLSyntaxError as exc:
        message = exc.msg or str(exc)
        line = exc.lineno if exc.lineno else None
        if "Excessive depth" in message:
            raise UnsafeXmlError(f"elements nest too deep ({message})", line) from None
        if message.startswith("no element found"):
            raise XmlError("the document is empty: no XML element found", None) from None
        raise XmlError(message, line) from None
