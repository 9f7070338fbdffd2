"""The price and stock formulas, exact (Decimal), as the reference for the set-based SQL.

price  = cost x (1 + margin) x (1 + commission) [x (1 + VAT) on gross channels], rounded
floor  = cost x (1 + min margin) x (1 + commission) [x (1 + VAT)], rounded up to the cent
The published price is never below the floor: when rounding or the rule would go below it, the
smallest allowed price at or above the floor is used and the offer is flagged ``floor_applied``.
:mod:`commerce_sync.pricing.compute` implements the same in SQL; tests hold the two equal.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal
from typing import Literal

from commerce_sync.config import Channel, PricingRule

CENT = Decimal("0.01")
ONE = Decimal(1)
HUNDRED = Decimal(100)
Rounding = Literal["0.99", "none"]


@dataclass(frozen=True)
class PriceResult:
    """A computed channel price with the floor that bounded it."""

    price: Decimal
    floor_price: Decimal
    floor_applied: bool


def charm_nearest(value: Decimal) -> Decimal:
    """The nearest price ending in .99 (ties go up): 12.34 -> 11.99, 12.50 -> 12.99."""
    return (value + CENT).quantize(ONE, rounding=ROUND_HALF_UP) - CENT


def charm_at_least(value: Decimal) -> Decimal:
    """The smallest price ending in .99 that is >= value: 12.34 -> 12.99, 12.99 -> 12.99."""
    return (value + CENT).quantize(ONE, rounding=ROUND_CEILING) - CENT


def compute_price(
    cost: Decimal,
    vat_rate: Decimal,
    rule: PricingRule,
    *,
    prices_include_vat: bool,
) -> PriceResult:
    """Channel price for one SKU (see the module docstring)."""
    if cost <= 0:
        raise ValueError(f"cost must be > 0 to price an offer, got {cost}")
    tax = ONE + vat_rate if prices_include_vat else ONE
    commission = ONE + rule.commission_pct / HUNDRED
    raw = cost * (ONE + rule.margin_pct / HUNDRED) * commission * tax
    floor = (cost * (ONE + rule.min_margin_pct / HUNDRED) * commission * tax).quantize(CENT, rounding=ROUND_CEILING)
    if rule.rounding == "0.99":
        price = charm_nearest(raw)
        if price < floor:
            return PriceResult(charm_at_least(floor), floor, True)
        return PriceResult(price, floor, False)
    price = raw.quantize(CENT, rounding=ROUND_HALF_UP)
    if price < floor:
        return PriceResult(floor, floor, True)
    return PriceResult(price, floor, False)


def sellable_quantity(own_stock: int, reserved: int, dropship: int, buffer: int, *, active: bool) -> int:
    """Quantity a channel may list: own stock - reserved + dropship - buffer, never negative."""
    if not active:
        return 0
    return max(0, own_stock - reserved + dropship - buffer)


def compute_for_channel(cost: Decimal, vat_rate: Decimal, channel: Channel, rule: PricingRule) -> PriceResult:
    """Convenience wrapper taking the channel's VAT setting."""
    return compute_price(cost, vat_rate, rule, prices_include_vat=channel.prices_include_vat)
