"""The pre-publish check rules: floor, positive price, accepted currency, feed field limits."""

from __future__ import annotations

import pytest

from commerce_sync.channels.prepublish import GOOGLE_LIMITS, check_offer


@pytest.mark.parametrize(
    ("price", "floor", "currency", "rules"),
    [
        ("12.00", "12.00", "PLN", []),
        ("11.99", "12.00", "PLN", ["price_at_least_floor"]),
        ("15.00", None, "PLN", ["price_at_least_floor"]),
        ("0", "1", "PLN", ["price_positive"]),
        ("abc", "1", "PLN", ["price_positive"]),
        ("20.00", "12.00", "EUR", ["currency_accepted"]),
        ("5.00", "12.00", "USD", ["price_at_least_floor", "currency_accepted"]),
    ],
)
def test_check_offer_rules(price: str, floor: str | None, currency: str, rules: list[str]) -> None:
    problems = check_offer("allegro", "SKU-1", price=price, floor_price=floor, currency=currency, currencies=["PLN"])
    assert [p.rule for p in problems] == rules
    assert all("allegro/SKU-1" in p.reason for p in problems)


def test_feed_field_limits() -> None:
    texts = {"id": "X" * 51, "title": "t" * 150, "description": "d" * 5001}
    problems = check_offer(
        "google",
        "X" * 51,
        price="10",
        floor_price="1",
        currency="PLN",
        currencies=["PLN"],
        texts=texts,
        limits=GOOGLE_LIMITS,
    )
    assert [p.rule for p in problems] == ["id_max_length", "description_max_length"]
    assert "allows 5000" in problems[1].reason
