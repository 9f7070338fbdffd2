"""The price and stock formulas, exact (Decimal): the reference the set-based SQL is held equal to.

For one SKU on one channel (all amounts in the channel's currency):

1. **Rule**: the channel's default rule, unless an override in ``pricing.yaml`` matches the product;
   precedence sku > brand > category > default (:func:`select_rule`).
2. **Cost**: the ERP purchase price converted at the newest exchange rate and rounded to 4 decimals.
   When the chosen supplier (``hub.sku_supply``) contributes stock (``chosen_quantity > 0`` on an
   active product), a unit sold may be a dropshipped one, so the cost is the *higher* of the ERP cost
   and the supplier's converted purchase price: we never sell below what the unit costs us.
3. **Price**: ``(cost x (1 + margin %) + margin amount + fixed fee) x (1 + commission %) [x (1 + VAT)]``,
   rounded by the rule (``0.99``: nearest .99 ending; ``0.05``: nearest 0.05; ``none``: the cent), then
   cut to ``max_price`` if above it.
4. **Floor**: ``(cost x (1 + min margin %) + fixed fee) x (1 + commission %) [x (1 + VAT)]`` rounded up
   to the cent, and never below ``min_price`` (MAP). If the price is below the floor, the smallest
   price allowed by the rounding at or above the floor is used and the offer is flagged
   ``floor_applied``; the floor wins over ``max_price`` too.
5. **Stock**: own stock - ERP reserved - units held by marketplace orders the ERP's figures do not
   include yet (``hub.reservation_outstanding``) + the chosen supplier's ``chosen_quantity`` = available;
   minus the channel's buffer (``stock_buffer`` units + ``stock_buffer_pct`` of the available stock,
   rounded up); cut to ``max_listed_quantity``; never negative; 0 for inactive products, and 0 when at
   or below the channel's ``end_when_at_or_below``. Out of stock is published as quantity 0 /
   ``out_of_stock``, never left out.

:mod:`commerce_sync.pricing.compute` implements the same in SQL; the integration tests hold the two
equal on random SKUs, rules, currencies and supply.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal, localcontext
from typing import Literal

from commerce_sync.config import Channel, PricingRule, RuleOverride

CENT = Decimal("0.01")
ONE = Decimal(1)
HUNDRED = Decimal(100)
TWENTY = Decimal(20)
COST_QUANTUM = Decimal("0.0001")
RuleLevel = Literal["sku", "brand", "category", "default"]
PRECEDENCE: tuple[RuleLevel, ...] = ("sku", "brand", "category")


@dataclass(frozen=True)
class Step:
    """One step of a computation, for explanations."""

    name: str
    value: Decimal | int | str
    note: str = ""


@dataclass(frozen=True)
class PriceResult:
    """A computed channel price with the floor that bounded it."""

    price: Decimal
    floor_price: Decimal
    floor_applied: bool
    max_price_applied: bool = False
    steps: tuple[Step, ...] = field(default=(), compare=False)


def charm_nearest(value: Decimal) -> Decimal:
    """The nearest price ending in .99 (ties go up): 12.34 -> 11.99, 12.50 -> 12.99."""
    return (value + CENT).quantize(ONE, rounding=ROUND_HALF_UP) - CENT


def charm_at_least(value: Decimal) -> Decimal:
    """The smallest price ending in .99 that is >= value: 12.34 -> 12.99, 12.99 -> 12.99."""
    return (value + CENT).quantize(ONE, rounding=ROUND_CEILING) - CENT


def round_price(value: Decimal, rounding: str) -> Decimal:
    """``value`` rounded to the nearest price point of ``rounding`` (ties go up)."""
    if rounding == "0.99":
        return charm_nearest(value)
    if rounding == "0.05":
        return (value * TWENTY).quantize(ONE, rounding=ROUND_HALF_UP) / TWENTY
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def round_up(value: Decimal, rounding: str) -> Decimal:
    """The smallest price point of ``rounding`` that is >= ``value``."""
    if rounding == "0.99":
        return charm_at_least(value)
    if rounding == "0.05":
        return (value * TWENTY).quantize(ONE, rounding=ROUND_CEILING) / TWENTY
    return value.quantize(CENT, rounding=ROUND_CEILING)


def compute_price(
    cost: Decimal,
    vat_rate: Decimal,
    rule: PricingRule,
    *,
    prices_include_vat: bool,
) -> PriceResult:
    """Channel price for one SKU from its cost in the channel's currency (module docstring, steps 3-4)."""
    if cost <= 0:
        raise ValueError(f"cost must be > 0 to price an offer, got {cost}")
    with localcontext() as ctx:
        ctx.prec = 60  # exact for every product below, like PostgreSQL's numeric
        tax = ONE + vat_rate if prices_include_vat else ONE
        commission = ONE + rule.commission_pct / HUNDRED
        raw = (cost * (ONE + rule.margin_pct / HUNDRED) + rule.margin_amount + rule.fixed_fee) * commission * tax
        floor = ((cost * (ONE + rule.min_margin_pct / HUNDRED) + rule.fixed_fee) * commission * tax).quantize(
            CENT, rounding=ROUND_CEILING
        )
        steps = [
            Step("cost", cost, "in the channel's currency"),
            Step(
                "raw price",
                raw,
                f"(cost x (1 + {rule.margin_pct}%) + {rule.margin_amount} + fee {rule.fixed_fee}) x "
                f"(1 + {rule.commission_pct}% commission)" + (f" x (1 + {vat_rate} VAT)" if prices_include_vat else ""),
            ),
            Step("cost floor", floor, f"(cost x (1 + {rule.min_margin_pct}% min margin) + fee) x commission, up"),
        ]
        if rule.min_price is not None and rule.min_price > floor:
            floor = rule.min_price
            steps.append(Step("floor", floor, "raised to the rule's min_price (MAP)"))
        candidate = round_price(raw, rule.rounding)
        steps.append(Step("rounded", candidate, f"rounding {rule.rounding!r}"))
        capped = rule.max_price is not None and candidate > rule.max_price
        if capped:
            assert rule.max_price is not None
            candidate = rule.max_price
            steps.append(Step("capped", candidate, "cut to the rule's max_price"))
        if candidate < floor:
            price = round_up(floor, rule.rounding)
            steps.append(Step("price", price, f"floor applied: {candidate} < floor {floor}"))
            return PriceResult(price, floor, True, capped, tuple(steps))
        steps.append(Step("price", candidate, "at or above the floor"))
        return PriceResult(candidate, floor, False, capped, tuple(steps))


def select_rule(
    channel: Channel,
    rules: Mapping[str, PricingRule],
    overrides: Sequence[RuleOverride],
    *,
    sku: str,
    brand: str | None,
    category: str | None,
) -> tuple[PricingRule, RuleLevel]:
    """The rule for one product on ``channel`` and the level that chose it (sku > brand > category > default)."""
    values: dict[str, str | None] = {"sku": sku, "brand": brand, "category": category}
    for level in PRECEDENCE:
        for o in overrides:
            if o.channel == channel.id and o.level == level and values[level] is not None and o.match == values[level]:
                return rules[o.rule], level
    return rules[channel.pricing_rule], "default"


def convert(amount: Decimal, rate: Decimal) -> Decimal:
    """``amount`` converted at ``rate``, rounded half-up to 4 decimals (the hub's cost precision)."""
    with localcontext() as ctx:
        ctx.prec = 60
        return (amount * rate).quantize(COST_QUANTUM, rounding=ROUND_HALF_UP)


def effective_cost(
    erp_cost: Decimal, supply_cost: Decimal | None, supply_quantity: int, *, active: bool
) -> tuple[Decimal, Literal["erp", "supplier"]]:
    """The cost the floor protects (module docstring, step 2); both costs already converted."""
    if active and supply_cost is not None and supply_quantity > 0 and supply_cost > erp_cost:
        return supply_cost, "supplier"
    return erp_cost, "erp"


def sellable_quantity(own_stock: int, reserved: int, dropship: int, buffer: int, *, active: bool) -> int:
    """Quantity a channel may list: own stock - reserved + dropship - buffer, never negative."""
    if not active:
        return 0
    return max(0, own_stock - reserved + dropship - buffer)


def channel_quantity(
    own_stock: int, reserved: int, dropship: int, channel: Channel, *, active: bool, held: int = 0
) -> int:
    """Quantity ``channel`` lists (module docstring, step 5): buffers in units and %, cap, end, never negative.

    ``held``: units held by marketplace orders that the ERP's ``reserved`` does not include yet.
    """
    available = own_stock - reserved - held + dropship
    pct_buffer = (Decimal(max(available, 0)) * channel.stock_buffer_pct / HUNDRED).to_integral_value(ROUND_CEILING)
    quantity = sellable_quantity(
        own_stock, reserved + held, dropship, channel.stock_buffer + int(pct_buffer), active=active
    )
    if channel.max_listed_quantity is not None:
        quantity = min(quantity, channel.max_listed_quantity)
    if channel.end_when_at_or_below is not None and quantity <= channel.end_when_at_or_below:
        quantity = 0
    return quantity


def compute_for_channel(cost: Decimal, vat_rate: Decimal, channel: Channel, rule: PricingRule) -> PriceResult:
    """Convenience wrapper taking the channel's VAT setting."""
    return compute_price(cost, vat_rate, rule, prices_include_vat=channel.prices_include_vat)
