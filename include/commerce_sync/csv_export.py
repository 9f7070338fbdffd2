"""CSV exports that a spreadsheet opens safely (no formula injection) and that name their columns.

Every CSV the project writes for people (price-change reports, proposed price changes, reconciliation
differences) goes through :func:`write_csv`: a cell starting with ``=``, ``+``, ``-``, ``@``, tab,
CR or NUL gets a leading ``'`` so a spreadsheet shows it as text instead of evaluating it (OWASP
ASVS 1.2.10). The file is written to a temporary name and renamed, so a reader never sees half a file;
it gets ``mode`` (default ``COMMERCE_SYNC_FILE_MODE`` or 0644) before the rename, so a web server
running as another user can serve it.
"""

from __future__ import annotations

import csv
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from commerce_sync.settings import published_file_mode

_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\0")


def safe_cell(value: Any) -> str:
    """``value`` as CSV text, neutralised if a spreadsheet would read it as a formula."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]], mode: int | None = None) -> int:
    """Write ``rows`` under ``header`` to ``path`` atomically; return the number of data rows.

    Args:
        mode: Permission bits of the published file (default: :func:`published_file_mode`).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    count = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow([safe_cell(h) for h in header])
            for row in rows:
                writer.writerow([safe_cell(v) for v in row])
                count += 1
        os.chmod(tmp, published_file_mode() if mode is None else mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return count
