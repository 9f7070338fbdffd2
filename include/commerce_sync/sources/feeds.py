"""Streaming record readers for supplier feeds: one small subclass per format on a shared base.

A reader turns a feed file into :class:`RawRecord` tuples holding the configured fields as raw,
stripped text (empty becomes None). Nothing is typed or normalised here: decimal separators,
GTIN padding and range checks belong to validation and to the SQL merge, which see the whole
batch. Any parse failure becomes a :class:`~commerce_sync.errors.FeedError` that names the
supplier, the location and, when known, the line.
"""

from __future__ import annotations

import csv
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar, NamedTuple

from lxml import etree

from commerce_sync.config import CsvMapping, Supplier, XmlMapping
from commerce_sync.errors import FeedError
from commerce_sync.sources.safe_xml import XmlError, iterparse, local_name


class RawRecord(NamedTuple):
    """One record as delivered: its 1-based position, the line it starts on and its raw fields."""

    record_no: int
    source_line: int | None
    values: dict[str, str | None]


def _clean(text: str | None) -> str | None:
    if text is None:
        return None
    text = text.strip()
    return text or None


class FeedReader(ABC):
    """Base reader: owns the supplier, the location for messages and the error wrapping."""

    format: ClassVar[str]

    def __init__(self, supplier: Supplier, location: str) -> None:
        self.supplier = supplier
        self.location = location

    def error(self, problem: str, line: int | None = None) -> FeedError:
        """A FeedError for this feed, mentioning the line when known."""
        return FeedError(self.supplier.id, self.location, f"line {line}: {problem}" if line else problem)

    @abstractmethod
    def records(self, path: Path) -> Iterator[RawRecord]:
        """Yield the records of the file at ``path`` in order."""


class XmlFeedReader(FeedReader):
    """Generic XML: one element per record (``record_tag``), fields as relative paths.

    A path is ``/``-separated local names (namespaces ignored); a last step ``@name`` reads an
    attribute, and ``.`` or ``@name`` alone read the record element itself.
    """

    format = "xml"

    def __init__(self, supplier: Supplier, location: str) -> None:
        super().__init__(supplier, location)
        assert supplier.xml is not None  # the config model guarantees it for format "xml"
        self.mapping: XmlMapping = supplier.xml
        self.paths = {name: [step for step in path.split("/") if step] for name, path in self.mapping.fields.items()}

    @staticmethod
    def _value(record: etree._Element, steps: list[str]) -> str | None:
        node = record
        for i, step in enumerate(steps):
            if step == ".":
                continue
            if step.startswith("@"):
                if i != len(steps) - 1:
                    return None
                wanted = step[1:]
                for key, value in node.attrib.items():
                    if str(key).rpartition("}")[2] == wanted:
                        return _clean(str(value))
                return None
            child = next((c for c in node if local_name(c) == step), None)
            if child is None:
                return None
            node = child
        return _clean("".join(node.itertext()))

    def records(self, path: Path) -> Iterator[RawRecord]:
        """Yield one record per ``record_tag`` element, streamed with the safe parser."""
        record_no = 0
        try:
            for element in iterparse(path, self.mapping.record_tag):
                record_no += 1
                values = {name: self._value(element, steps) for name, steps in self.paths.items()}
                yield RawRecord(record_no, element.sourceline, values)
        except XmlError as exc:
            raise self.error(f"not a well-formed XML feed: {exc.problem}", exc.line) from None
        if record_no == 0:
            raise self.error(f"no <{self.mapping.record_tag}> records found")


class CsvFeedReader(FeedReader):
    """CSV with a header row; our fields map to the supplier's column headers."""

    format = "csv"

    def __init__(self, supplier: Supplier, location: str) -> None:
        super().__init__(supplier, location)
        assert supplier.csv is not None  # the config model guarantees it for format "csv"
        self.mapping: CsvMapping = supplier.csv

    def _positions(self, header: list[str]) -> dict[str, int]:
        # A BOM left by a plain utf-8 decode and stray spaces are not part of the header name.
        found = [h.lstrip("\ufeff").strip() for h in header]
        missing = [column for column in self.mapping.columns.values() if column not in found]
        if missing:
            raise self.error(f"missing column(s) {missing} in the header; columns found: {found}", 1)
        return {name: found.index(column) for name, column in self.mapping.columns.items()}

    def records(self, path: Path) -> Iterator[RawRecord]:
        """Yield one record per data row; blank lines are skipped."""
        line = 0
        try:
            with path.open(encoding=self.mapping.encoding, newline="") as handle:
                reader = csv.reader(
                    handle, delimiter=self.mapping.delimiter, quotechar=self.mapping.quotechar, strict=True
                )
                header = next(reader, None)
                if header is None:
                    raise self.error("the file is empty (no header row)")
                positions = self._positions(header)
                line = reader.line_num
                record_no = 0
                for row in reader:
                    start_line = line + 1  # a quoted field may span lines: report where the row starts
                    line = reader.line_num
                    if not row or all(not cell.strip() for cell in row):
                        continue
                    record_no += 1
                    values = {
                        name: _clean(row[index]) if index < len(row) else None for name, index in positions.items()
                    }
                    yield RawRecord(record_no, start_line, values)
        except UnicodeDecodeError as exc:
            raise self.error(
                f"not valid {self.mapping.encoding} text ({exc.reason} at byte {exc.start} of a read block); "
                "check the encoding configured for this supplier",
                line + 1,
            ) from None
        except csv.Error as exc:
            raise self.error(f"malformed CSV: {exc}", line + 1) from None


READERS: dict[str, type[FeedReader]] = {"xml": XmlFeedReader, "csv": CsvFeedReader}


def reader_for(supplier: Supplier, location: str) -> FeedReader:
    """The reader for the supplier's configured format."""
    return READERS[supplier.format](supplier, location)


def read_records(supplier: Supplier, path: Path, location: str) -> Iterator[RawRecord]:
    """Stream the records of ``path`` (fetched from ``location``) for ``supplier``.

    Raises:
        FeedError: the file cannot be parsed; names supplier, location and line when known.
    """
    return reader_for(supplier, location).records(path)
