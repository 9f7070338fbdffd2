"""CSV exports neutralise formula cells and are written whole or not at all."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from commerce_sync.csv_export import safe_cell, write_csv


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('=HYPERLINK("http://x")', '\'=HYPERLINK("http://x")'),
        ("+1", "'+1"),
        ("-5.00", "'-5.00"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("\0x", "'\0x"),
        ("SKU-1", "SKU-1"),
        ("12.99", "12.99"),
        (None, ""),
        (7, "7"),
    ],
)
def test_safe_cell(value: object, expected: str) -> None:
    assert safe_cell(value) == expected


def test_write_csv_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "out" / "report.csv"
    assert write_csv(path, ["sku", "note"], [("SKU-1", "=cmd|' /C calc'!A0"), ("SKU-2", "ok")]) == 2
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows == [["sku", "note"], ["SKU-1", "'=cmd|' /C calc'!A0"], ["SKU-2", "ok"]]


def test_failed_write_keeps_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "report.csv"
    write_csv(path, ["sku"], [("A",)])

    def broken() -> object:
        yield ("B",)
        raise RuntimeError("source failed mid-way")

    with pytest.raises(RuntimeError):
        write_csv(path, ["sku"], broken())  # type: ignore[arg-type]
    assert path.read_text(encoding="utf-8").splitlines() == ["sku", "A"]
    assert [p.name for p in tmp_path.iterdir()] == ["report.csv"]


@pytest.mark.parametrize(
    ("env", "mode", "expected"),
    [(None, None, 0o644), ("0640", None, 0o640), (None, 0o600, 0o600), ("0640", 0o664, 0o664)],
    ids=["default-0644", "env-0640", "argument", "argument-over-env"],
)
def test_published_report_has_a_mode_a_web_server_can_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: str | None, mode: int | None, expected: int
) -> None:
    if env is None:
        monkeypatch.delenv("COMMERCE_SYNC_FILE_MODE", raising=False)
    else:
        monkeypatch.setenv("COMMERCE_SYNC_FILE_MODE", env)
    path = tmp_path / "report.csv"
    write_csv(path, ["sku"], [("A",)], mode=mode)
    assert path.stat().st_mode & 0o777 == expected  # mkstemp's 0600 is replaced before the rename
    assert [p.name for p in tmp_path.iterdir()] == ["report.csv"]


def test_file_mode_setting_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    from commerce_sync.settings import published_file_mode

    monkeypatch.setenv("COMMERCE_SYNC_FILE_MODE", "rw-r--r--")
    with pytest.raises(ValueError, match="not an octal file mode"):
        published_file_mode()
