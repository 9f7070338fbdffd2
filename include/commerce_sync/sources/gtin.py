"""GTIN/EAN normalisation and check-digit validation (GS1 mod-10)."""

from __future__ import annotations

import re

_SEPARATORS = re.compile(r"[\s-]")
VALID_LENGTHS = (8, 12, 13, 14)


def gtin_problem(raw: str | None) -> str | None:
    """Why ``raw`` is not a valid GTIN, or None if it is one."""
    if raw is None or not raw.strip():
        return "missing"
    digits = _SEPARATORS.sub("", raw)
    if not digits.isdigit() or not digits.isascii():
        return "contains characters other than digits"
    if len(digits) not in VALID_LENGTHS:
        return f"has {len(digits)} digits; a GTIN has 8, 12, 13 or 14"
    if set(digits) == {"0"}:
        return "is all zeros"
    if check_digit(digits[:-1]) != int(digits[-1]):
        return f"check digit is {digits[-1]}, expected {check_digit(digits[:-1])}"
    return None


def check_digit(data_digits: str) -> int:
    """GS1 check digit for the data digits (weights 3,1,3,... from the rightmost)."""
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(data_digits)))
    return (10 - total % 10) % 10


def checked_gtin(raw: str | None) -> tuple[str | None, str | None]:
    """``(gtin padded to 14 digits, None)`` if valid, else ``(None, why not)``: one check, no repeat."""
    problem = gtin_problem(raw)
    if problem:
        return None, problem
    assert raw is not None
    return _SEPARATORS.sub("", raw).zfill(14), None


def normalize_gtin(raw: str | None) -> str:
    """The GTIN as 14 digits (left-padded with zeros); ValueError saying why if invalid."""
    problem = gtin_problem(raw)
    if problem:
        raise ValueError(f"GTIN {raw!r} {problem}")
    assert raw is not None
    return _SEPARATORS.sub("", raw).zfill(14)
