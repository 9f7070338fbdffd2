"""How one channel offer was (or would be) priced: inputs, rule and why it was chosen, every step.

:func:`explain_offer` reads the SKU's inputs from the hub (product, stock, the chosen supplier offer,
exchange rates), recomputes the offer with the exact reference (:mod:`commerce_sync.pricing.rules`)
and puts it beside what is stored in ``hub.channel_offer`` and any held price move
(``hub.price_proposal_item``). ``commerce-sync explain --channel C --sku S`` prints it.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import psycopg
from psycopg.rows import dict_row

from commerce_sync.config import Config
from commerce_sync.errors import CommerceSyncError
from commerce_sync.pricing.rates import effective_rates
from commerce_sync.pricing.rules import channel_quantity, compute_price, convert, effective_cost, select_rule
from commerce_sync.pricing.sqlfiles import sql_file


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Decimal):
        return str(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value if value is None or isinstance(value, str | int | float | bool) else str(value)


def explain_offer(conn: psycopg.Connection, config: Config, channel_id: str, sku: str) -> dict[str, Any]:
    """Everything that decides ``sku``'s offer on ``channel_id``, as a JSON-ready dict."""
    channel = config.channel(channel_id)
    cur = conn.cursor(row_factory=dict_row)
    keys = {"channel": channel_id, "sku": sku}
    product = cur.execute(sql_file("explain_product"), keys).fetchone()
    if product is None:
        raise CommerceSyncError(f"SKU {sku!r} is not in hub.product; check the SKU or load the ERP first")
    stock = cur.execute(sql_file("explain_stock"), keys).fetchall()
    supply = cur.execute(sql_file("explain_supply"), keys).fetchone()
    stored = cur.execute(sql_file("explain_stored_offer"), keys).fetchone()
    held = cur.execute(sql_file("explain_held_moves"), keys).fetchall()
    rates = effective_rates(conn, channel.currency)

    rule, level = select_rule(
        channel, config.rules, config.rule_overrides, sku=sku, brand=product["brand"], category=product["category"]
    )
    matched = {"sku": sku, "brand": product["brand"], "category": product["category"]}.get(level)
    why = (
        f"channel {channel_id!r} default rule"
        if level == "default"
        else f"override for {level} {matched!r} (precedence sku > brand > category > default)"
    )
    explanation: dict[str, Any] = {
        "channel": channel_id,
        "sku": sku,
        "inputs": {"product": product, "stock": stock, "supply": supply, "rates_into": channel.currency},
        "rule": {**rule.model_dump(mode="json"), "level": level, "why": why},
        "steps": [],
        "stored_offer": stored,
        "held_moves": held,
    }
    steps: list[dict[str, Any]] = explanation["steps"]
    erp_rate = rates.get(str(product["currency"]).strip())
    supply_rate = rates.get(str(supply["currency"]).strip()) if supply else None
    if erp_rate is None:
        explanation["problem"] = (
            f"no exchange rate {product['currency']} -> {channel.currency}: the offer cannot be priced"
        )
        return _jsonable(explanation)
    erp_cost = convert(product["purchase_price"], erp_rate)
    steps.append(
        {
            "name": "ERP cost",
            "value": erp_cost,
            "note": f"{product['purchase_price']} {product['currency']} x {erp_rate}",
        }
    )
    quantity_supply = supply["chosen_quantity"] if supply else 0
    supply_cost = convert(supply["purchase_price"], supply_rate) if supply and supply_rate is not None else None
    if supply is not None:
        steps.append(
            {
                "name": "supplier cost",
                "value": supply_cost,
                "note": f"{supply['supplier']} {supply['purchase_price']} {supply['currency']} x {supply_rate}; "
                f"chosen_quantity {quantity_supply}",
            }
        )
    cost, source = effective_cost(erp_cost, supply_cost, quantity_supply, active=product["active"])
    steps.append(
        {
            "name": "cost used",
            "value": cost,
            "note": "the supplier's dearer cost: its stock is listed" if source == "supplier" else "ERP cost",
        }
    )
    own = sum(s["quantity"] for s in stock)
    reserved = sum(s["reserved"] for s in stock)
    held_row = conn.execute(sql_file("explain_held"), {"sku": sku}).fetchone()
    held_by_orders = int(held_row[0]) if held_row else 0
    quantity = channel_quantity(own, reserved, quantity_supply, channel, active=product["active"], held=held_by_orders)
    result: dict[str, Any] = {"quantity": quantity, "availability": "in_stock" if quantity > 0 else "out_of_stock"}
    if cost > 0:
        price = compute_price(cost, product["vat_rate"], rule, prices_include_vat=channel.prices_include_vat)
        steps.extend({"name": s.name, "value": s.value, "note": s.note} for s in price.steps)
        result.update(
            price=price.price,
            floor_price=price.floor_price,
            floor_applied=price.floor_applied,
            max_price_applied=price.max_price_applied,
            cost_source=source,
        )
    else:
        result["problem"] = "cost is 0: the product is not priced on any channel until it has a purchase price"
    steps.append(
        {
            "name": "quantity",
            "value": quantity,
            "note": f"own {own} - reserved {reserved} - held by orders {held_by_orders} + dropship {quantity_supply} "
            f"- buffer {channel.stock_buffer} units and {channel.stock_buffer_pct}%"
            + (f", at most {channel.max_listed_quantity}" if channel.max_listed_quantity is not None else "")
            + (f", 0 at or below {channel.end_when_at_or_below}" if channel.end_when_at_or_below is not None else "")
            + ("; product inactive -> 0" if not product["active"] else ""),
        }
    )
    explanation["result"] = result
    if stored is not None and "price" in result:
        explanation["stored_matches_rules"] = stored["price"] == result["price"] and stored["quantity"] == quantity
    return _jsonable(explanation)


def format_explanation(e: dict[str, Any]) -> str:
    """A readable rendering of :func:`explain_offer`'s result."""
    p = e["inputs"]["product"]
    lines = [
        f"{e['channel']} / {e['sku']}: {p['name']}",
        f"rule {e['rule']['id']} v{e['rule']['version']} ({e['rule']['why']})",
        "steps:",
        *(f"  {s['name']:<14} {s['value']!s:>14}  {s['note']}" for s in e["steps"]),
    ]
    if "problem" in e:
        lines.append(f"problem: {e['problem']}")
    result = e.get("result", {})
    if "price" in result:
        lines.append(
            f"result: price {result['price']} (floor {result['floor_price']}, floor applied: "
            f"{result['floor_applied']}, max price applied: {result['max_price_applied']}), "
            f"quantity {result['quantity']} {result['availability']}"
        )
    stored = e.get("stored_offer")
    lines.append(
        f"stored offer: price {stored['price']} qty {stored['quantity']} v{stored['version']} "
        f"(rule {stored['rule_id']} v{stored['rule_version']}, computed {stored['computed_at']})"
        if stored
        else "stored offer: none yet"
    )
    if "stored_matches_rules" in e and not e["stored_matches_rules"]:
        lines.append("  differs from the rules now: inputs changed since, or a price move is held (below)")
    for h in e.get("held_moves", []):
        lines.append(
            f"held move: {h['old_price']} -> {h['price']} ({h['move_pct']}%) item {h['status']}, proposal "
            f"{h['proposal_status']}" + (f" by {h['decided_by']} at {h['decided_at']}" if h["decided_by"] else "")
        )
    return "\n".join(lines)
