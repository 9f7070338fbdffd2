"""Property tests: whatever the rule, cost, rate, commission, fee, rounding or VAT, the floor holds."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from commerce_sync.config import PricingRule
from commerce_sync.pricing.rules import compute_price, convert, effective_cost

D = Decimal


def money(low: str, high: str, places: int = 2) -> st.SearchStrategy[Decimal]:
    return st.decimals(min_value=D(low), max_value=D(high), places=places, allow_nan=False, allow_infinity=False)


@st.composite
def rules(draw: st.DrawFn) -> PricingRule:
    margin_pct = draw(money("0", "300"))
    margin_amount = draw(money("0", "50"))
    min_margin_pct = draw(money("0", "300"))
    if margin_amount == 0:
        min_margin_pct = min(min_margin_pct, margin_pct)
    min_price = draw(st.none() | money("0", "500"))
    max_price = draw(st.none() | money("0.01", "5000"))
    if min_price is not None and max_price is not None and min_price > max_price:
        min_price, max_price = max_price, min_price
    return PricingRule(
        id="prop-rule",
        version=1,
        margin_pct=margin_pct,
        margin_amount=margin_amount,
        commission_pct=draw(money("0", "40")),
        fixed_fee=draw(money("0", "30")),
        min_margin_pct=min_margin_pct,
        rounding=draw(st.sampled_from(["0.99", "0.05", "none"])),
        min_price=min_price,
        max_price=max_price,
    )


@settings(max_examples=1500, deadline=None)
@given(
    rule=rules(),
    erp_cost=money("0", "100000", 4),
    erp_rate=money("0.0001", "50", 8),
    supply_cost=st.none() | money("0.0001", "100000", 4),
    supply_rate=money("0.0001", "50", 8),
    supply_quantity=st.integers(0, 100),
    vat=st.sampled_from([D("0"), D("0.05"), D("0.08"), D("0.23"), D("0.27")]),
    gross=st.booleans(),
)
def test_price_never_below_the_floor(
    rule: PricingRule,
    erp_cost: Decimal,
    erp_rate: Decimal,
    supply_cost: Decimal | None,
    supply_rate: Decimal,
    supply_quantity: int,
    vat: Decimal,
    gross: bool,
) -> None:
    erp = convert(erp_cost, erp_rate)
    supply = convert(supply_cost, supply_rate) if supply_cost is not None else None
    cost, source = effective_cost(erp, supply, supply_quantity, active=True)
    assume(cost > 0)
    result = compute_price(cost, vat, rule, prices_include_vat=gross)
    tax = 1 + vat if gross else D(1)
    cost_floor = (cost * (1 + rule.min_margin_pct / 100) + rule.fixed_fee) * (1 + rule.commission_pct / 100) * tax

    assert result.price >= result.floor_price >= cost_floor
    assert result.price > 0
    assert cost >= erp  # never below what the ERP says the unit costs
    if supply is not None and supply_quantity > 0:
        assert cost >= supply  # nor below the supplier whose stock is listed
    if rule.min_price is not None:
        assert result.price >= rule.min_price
    if rule.max_price is not None and not result.floor_applied:
        assert result.price <= rule.max_price
    if rule.rounding == "0.99" and not (
        rule.max_price is not None and result.max_price_applied and not result.floor_applied
    ):
        assert result.price % 1 == D("0.99")
    if rule.rounding == "0.05" and not result.max_price_applied:
        assert result.price % D("0.05") == 0
    assert result.price == result.price.quantize(D("0.01"))
    assert source in {"erp", "supplier"}
