"""GTIN normalisation and check digits (GS1 mod-10)."""

from __future__ import annotations

import pytest

from commerce_sync.sources.gtin import check_digit, checked_gtin, gtin_problem, normalize_gtin


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("5901234123457", "05901234123457"),
        ("590 1234 12345-7", "05901234123457"),
        ("96385074", "00000096385074"),
        ("036000291452", "00036000291452"),
        ("10036000291459", "10036000291459"),
    ],
)
def test_valid_gtins_are_padded_to_14(raw: str, expected: str) -> None:
    assert gtin_problem(raw) is None
    assert normalize_gtin(raw) == expected
    assert checked_gtin(raw) == (expected, None)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (None, "missing"),
        ("  ", "missing"),
        ("5901234123458", "check digit is 8, expected 7"),
        ("59012341234", "has 11 digits"),
        ("00000000", "all zeros"),
        ("59O1234123457", "characters other than digits"),
        ("٥٩٠١٢٣٤١٢٣٤٥٧", "characters other than digits"),
    ],
)
def test_invalid_gtins_say_why(raw: str | None, reason: str) -> None:
    assert reason in (gtin_problem(raw) or "")
    normalized, problem = checked_gtin(raw)
    assert normalized is None
    assert reason in (problem or "")
    with pytest.raises(ValueError, match="GTIN"):
        normalize_gtin(raw)


def test_check_digit() -> None:
    assert check_digit("590123412345") == 7
