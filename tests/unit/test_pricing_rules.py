"""The exact price formulas: rounding, floors, stock."""

from __future__ import annotations

from decimal import Decimal

import pytest

from commerce_sync.config import Channel, PricingRule, RuleOverride
from commerce_sync.pricing.rules import (
    channel_quantity,
    charm_at_least,
    charm_nearest,
    compute_price,
    convert,
    effective_cost,
    round_price,
    round_up,
    select_rule,
    sellable_quantity,
)

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


# ---------------------------------------------------------------- rule model (issue 5)
def full_rule(**kw: object) -> PricingRule:
    base: dict[str, object] = {"id": "rule-x", "version": 1, "margin_pct": D("20"), "min_margin_pct": D("5")}
    base.update(kw)
    return PricingRule.model_validate(base)


@pytest.mark.parametrize(
    ("value", "rounding", "nearest", "up"),
    [
        ("12.34", "0.05", "12.35", "12.35"),
        ("12.324", "0.05", "12.30", "12.35"),
        ("12.325", "0.05", "12.35", "12.35"),
        ("12.30", "0.05", "12.30", "12.30"),
        ("12.341", "none", "12.34", "12.35"),
        ("12.345", "none", "12.35", "12.35"),
        ("12.34", "0.99", "11.99", "12.99"),
    ],
)
def test_rounding_strategies(value: str, rounding: str, nearest: str, up: str) -> None:
    assert round_price(D(value), rounding) == D(nearest)
    assert round_up(D(value), rounding) == D(up)


def test_absolute_margin_and_fixed_fee() -> None:
    # (100 x 1.10 + 5 + fee 2) x 1.10 commission = 128.70 net; floor (100 x 1.05 + 2) x 1.10 = 117.70
    r = full_rule(margin_pct=D("10"), margin_amount=D("5"), fixed_fee=D("2"), commission_pct=D("10"), rounding="none")
    result = compute_price(D("100"), D("0.23"), r, prices_include_vat=False)
    assert (result.price, result.floor_price, result.floor_applied) == (D("128.70"), D("117.70"), False)


@pytest.mark.parametrize(("gross", "expected"), [(False, D("120.00")), (True, D("147.60"))])
def test_vat_modes(gross: bool, expected: Decimal) -> None:
    result = compute_price(D("100"), D("0.23"), full_rule(rounding="none"), prices_include_vat=gross)
    assert result.price == expected


def test_max_price_cuts_but_floor_wins() -> None:
    capped = compute_price(D("100"), D("0"), full_rule(rounding="none", max_price=D("110")), prices_include_vat=False)
    assert (capped.price, capped.max_price_applied, capped.floor_applied) == (D("110"), True, False)
    # the cap is below the cost floor (105.00): the floor wins and the offer is flagged both ways
    below = compute_price(D("100"), D("0"), full_rule(rounding="0.99", max_price=D("101")), prices_include_vat=False)
    assert below.price == D("105.99") and below.floor_applied and below.max_price_applied


def test_min_price_map_raises_the_floor() -> None:
    result = compute_price(D("10"), D("0"), full_rule(rounding="0.05", min_price=D("19.99")), prices_include_vat=False)
    assert result.floor_price == D("19.99")
    assert result.price == D("20.00") and result.floor_applied


def test_rule_validation() -> None:
    with pytest.raises(ValueError, match=r"min_price .* is above max_price"):
        full_rule(min_price=D("10"), max_price=D("5"))
    with pytest.raises(ValueError, match="every price would be floored"):
        full_rule(margin_pct=D("2"), min_margin_pct=D("5"))
    assert full_rule(margin_pct=D("0"), margin_amount=D("3"), min_margin_pct=D("5")).margin_amount == D("3")


def _channel(**kw: object) -> Channel:
    base: dict[str, object] = {"id": "shop", "kind": "allegro", "conn_id": "x", "pricing_rule": "default"}
    base.update(kw)
    return Channel.model_validate(base)


RULES = {name: full_rule(id=name) for name in ("default", "by-cat", "by-brand", "by-sku", "other-channel")}
OVERRIDES = [
    RuleOverride(channel="shop", level="category", match="Tools", rule="by-cat"),
    RuleOverride(channel="shop", level="brand", match="Acme", rule="by-brand"),
    RuleOverride(channel="shop", level="sku", match="SKU-1", rule="by-sku"),
    RuleOverride(channel="elsewhere", level="sku", match="SKU-2", rule="other-channel"),
]


@pytest.mark.parametrize(
    ("sku", "brand", "category", "rule_id", "level"),
    [
        ("SKU-1", "Acme", "Tools", "by-sku", "sku"),
        ("SKU-2", "Acme", "Tools", "by-brand", "brand"),
        ("SKU-3", "Other", "Tools", "by-cat", "category"),
        ("SKU-4", None, None, "default", "default"),
        ("SKU-2", None, "Garden", "default", "default"),  # the SKU override is another channel's
    ],
)
def test_override_precedence(sku: str, brand: str | None, category: str | None, rule_id: str, level: str) -> None:
    rule_, level_ = select_rule(_channel(), RULES, OVERRIDES, sku=sku, brand=brand, category=category)
    assert (rule_.id, level_) == (rule_id, level)


def test_currency_conversion_rounds_to_the_hub_cost_precision() -> None:
    assert convert(D("10.00"), D("4.31234567")) == D("43.1235")
    assert convert(D("1.2345"), D("1")) == D("1.2345")


@pytest.mark.parametrize(
    ("erp", "supply", "qty", "active", "expected"),
    [
        ("10", "12", 5, True, (D("12"), "supplier")),  # dropship listed and dearer: its cost protects the floor
        ("10", "12", 0, True, (D("10"), "erp")),  # supplier has no stock: only own stock is sold
        ("10", "8", 5, True, (D("10"), "erp")),  # cheaper supplier: the ERP cost stays (never below either)
        ("10", "12", 5, False, (D("10"), "erp")),
        ("10", None, 0, True, (D("10"), "erp")),
    ],
)
def test_effective_cost(erp: str, supply: str | None, qty: int, active: bool, expected: tuple[Decimal, str]) -> None:
    assert effective_cost(D(erp), D(supply) if supply else None, qty, active=active) == expected


@pytest.mark.parametrize(
    ("own", "reserved", "dropship", "settings", "expected"),
    [
        (10, 2, 5, {"stock_buffer": 1}, 12),
        (10, 0, 0, {"stock_buffer_pct": D("15")}, 8),  # 15 % of 10 = 1.5 -> 2 units kept back
        (10, 0, 0, {"stock_buffer": 1, "stock_buffer_pct": D("10")}, 8),
        (100, 0, 0, {"max_listed_quantity": 25}, 25),
        (0, 3, 0, {"stock_buffer_pct": D("50")}, 0),
    ],
)
def test_channel_quantity(own: int, reserved: int, dropship: int, settings: dict, expected: int) -> None:
    assert channel_quantity(own, reserved, dropship, _channel(**settings), active=True) == expected
    assert channel_quantity(own, reserved, dropship, _channel(**settings), active=False) == 0


def test_end_when_at_or_below_ends_the_offer_and_orders_held_count() -> None:
    from commerce_sync.config import Channel

    channel = Channel(id="shop", kind="ebay", conn_id="x", pricing_rule="r", end_when_at_or_below=3)
    assert channel_quantity(10, 7, 0, channel, active=True) == 0  # 3 left: ended
    assert channel_quantity(10, 6, 0, channel, active=True) == 4
    assert channel_quantity(10, 2, 0, channel, active=True, held=3) == 5  # units held by marketplace orders
    assert channel_quantity(1, 0, 0, channel, active=True, held=2) == 0  # oversold: never negative
