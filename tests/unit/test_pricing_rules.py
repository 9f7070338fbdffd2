"""The exact price formulas: rounding, floors, stock."""

from __future__ import annotations

from decimal import Decimal

import pytest

from commerce_sync.config import PricingRule
from commerce_sync.pricing.rules import charm_at_least, charm_nearest, compute_price, sellable_quantity

D = Decimal


def rule(margin: str = "25", commission: str = "10", min_margin: str = "5", rounding: str = "0.99") -> PricingRule:
    return PricingRule(
        id="test-rule",
        version=1,
        margin_pct=D(margin),
        commission_pct=D(commission),
        min_margin_pct=D(min_margin),
        rounding=rounding,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("value", "nearest", "at_least"),
    [
        ("12.34", "11.99", "12.99"),
        ("12.48", "11.99", "12.99"),
        ("12.49", "12.99", "12.99"),
        ("12.50", "12.99", "12.99"),
        ("12.99", "12.99", "12.99"),
        ("13.00", "12.99", "13.99"),
        ("13.0001", "12.99", "13.99"),
        ("0.50", "0.99", "0.99"),
    ],
)
def test_charm_rounding(value: str, nearest: str, at_least: str) -> None:
    assert charm_nearest(D(value)) == D(nearest)
    assert charm_at_least(D(value)) == D(at_least)


def test_price_formula_net_channel() -> None:
    # 100 x 1.25 x 1.10 = 137.50 -> nearest .99 is 137.99; floor 100 x 1.05 x 1.10 = 115.50
    result = compute_price(D("100"), D("0.23"), rule(), prices_include_vat=False)
    assert result.price == D("137.99")
    assert result.floor_price == D("115.50")
    assert not result.floor_applied


def test_price_formula_gross_channel() -> None:
    # 100 x 1.25 x 1.10 x 1.23 = 169.125 -> 168.99
    result = compute_price(D("100"), D("0.23"), rule(), prices_include_vat=True)
    assert result.price == D("168.99")
    assert result.floor_price == D("142.07")  # 142.065 rounded up to the cent


def test_rounding_down_below_floor_is_lifted_to_the_floor() -> None:
    # margin equal to min margin: rounding to the nearest .99 would go below cost + min margin
    r = rule(margin="5", commission="0", min_margin="5")
    result = compute_price(D("10.00"), D("0"), r, prices_include_vat=False)  # raw 10.50 -> 10.99 ok
    assert result.price == D("10.99")
    result = compute_price(D("10.40"), D("0"), r, prices_include_vat=False)  # raw 10.92 -> 10.99
    assert result.price >= result.floor_price
    low = compute_price(D("11.00"), D("0"), r, prices_include_vat=False)  # raw 11.55 -> 11.99
    assert low.price == D("11.99")
    tricky = compute_price(D("12.00"), D("0"), r, prices_include_vat=False)  # raw 12.60 -> 12.99 ok
    assert tricky.price == D("12.99")
    floored = compute_price(D("11.80"), D("0"), r, prices_include_vat=False)  # raw 12.39 -> 11.99 < 12.39
    assert floored.floor_applied
    assert floored.price == D("12.99")


@pytest.mark.parametrize("cost", ["0.01", "0.99", "1", "9.99", "123.4567", "1999.99"])
@pytest.mark.parametrize("rounding", ["0.99", "none"])
def test_price_never_below_floor(cost: str, rounding: str) -> None:
    r = rule(margin="5", commission="12", min_margin="5", rounding=rounding)
    result = compute_price(D(cost), D("0.23"), r, prices_include_vat=True)
    assert result.price >= result.floor_price
    assert result.floor_price >= D(cost) * D("1.05")


def test_zero_cost_cannot_be_priced() -> None:
    with pytest.raises(ValueError, match="cost must be > 0"):
        compute_price(D("0"), D("0.23"), rule(), prices_include_vat=True)


@pytest.mark.parametrize(
    ("own", "reserved", "dropship", "buffer", "active", "expected"),
    [
        (10, 2, 0, 2, True, 6),
        (0, 0, 5, 2, True, 3),
        (1, 3, 0, 0, True, 0),
        (10, 0, 10, 0, False, 0),
        (0, 0, 0, 5, True, 0),
    ],
)
def test_sellable_quantity(own: int, reserved: int, dropship: int, buffer: int, active: bool, expected: int) -> None:
    assert sellable_quantity(own, reserved, dropship, buffer, active=active) == expected
