"""The last check before an offer leaves the hub: floor, currency and the channel's field limits.

Pricing already refuses prices below the floor (and the database has a CHECK for it), but an
outbox payload or a feed row is a copy: this check compares what is *about to be sent* with the
offer's ``floor_price`` and the channel's accepted currencies, so a floor violation can never
reach a channel whatever wrote the copy. Failing offers are written to ``hub.quarantine``
(dataset ``channel_offer``, source ``channel:<id>``) with the rule and the observed value, and
are not published; the rest of the batch goes on. An offer that passes later resolves its open
quarantine rows.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import psycopg

DATASET = "channel_offer"
GOOGLE_LIMITS: Mapping[str, int] = {"id": 50, "title": 150, "description": 5000}
"""Google Merchant Center field lengths (characters); longer values are disapproved."""


@dataclass(frozen=True)
class Rejection:
    """One offer that must not be published, and why."""

    sku: str
    rule: str
    column: str
    observed: str | None
    reason: str
    raw: Mapping[str, Any] = field(default_factory=dict)


def check_offer(
    channel_id: str,
    sku: str,
    *,
    price: Decimal | str | None,
    floor_price: Decimal | str | None,
    currency: str | None,
    currencies: Iterable[str],
    texts: Mapping[str, str | None] | None = None,
    limits: Mapping[str, int] | None = None,
) -> list[Rejection]:
    """Every rule the offer breaks (empty if it may be published).

    Args:
        channel_id: the channel (named in the reasons).
        sku: the offer's SKU.
        price: the price about to be sent; None for a quantity-only change.
        floor_price: the offer's floor from ``hub.channel_offer`` (None: the offer is unknown).
        currency: the currency about to be sent (None for a quantity-only change).
        currencies: the currencies the channel accepts.
        texts: text fields about to be sent (feed fields such as id, title, description).
        limits: maximum length per text field.
    """
    raw: dict[str, Any] = {
        "channel": channel_id,
        "sku": sku,
        "price": None if price is None else str(price),
        "floor_price": None if floor_price is None else str(floor_price),
        "currency": currency,
    }
    problems: list[Rejection] = []
    if price is not None:
        try:
            amount = Decimal(str(price))
        except InvalidOperation:
            amount = None
        if amount is None or not amount.is_finite() or amount <= 0:
            problems.append(
                Rejection(
                    sku,
                    "price_positive",
                    "price",
                    raw["price"],
                    f"{channel_id}/{sku}: price {price!r} is not a positive amount",
                    raw,
                )
            )
        elif floor_price is None:
            problems.append(
                Rejection(
                    sku,
                    "price_at_least_floor",
                    "floor_price",
                    None,
                    f"{channel_id}/{sku}: no computed offer with a floor price in hub.channel_offer; "
                    "run the pricing DAG before publishing",
                    raw,
                )
            )
        elif amount < Decimal(str(floor_price)):
            problems.append(
                Rejection(
                    sku,
                    "price_at_least_floor",
                    "price",
                    raw["price"],
                    f"{channel_id}/{sku}: price {amount} is below the floor {floor_price}; not published. "
                    "Check the pricing rule and the purchase price, then recompute the offer",
                    raw,
                )
            )
    accepted = sorted(set(currencies))
    if price is not None and currency not in accepted:
        problems.append(
            Rejection(
                sku,
                "currency_accepted",
                "currency",
                currency,
                f"{channel_id}/{sku}: currency {currency!r} is not accepted by the channel (accepted: {accepted}); "
                "fix the pricing rule's currency or the channel's accepted_currencies",
                raw,
            )
        )
    for name, limit in (limits or {}).items():
        value = (texts or {}).get(name)
        if value is not None and len(value) > limit:
            problems.append(
                Rejection(
                    sku,
                    f"{name}_max_length",
                    name,
                    value[:80],
                    f"{channel_id}/{sku}: {name} has {len(value)} characters, the channel allows {limit}; "
                    f"shorten it in the ERP",
                    {**raw, name + "_length": len(value)},
                )
            )
    return problems


def check_price_change(
    channel_id: str,
    sku: str,
    *,
    amount: Decimal | str | None,
    currency: str | None,
    floor_price: Decimal | str | None,
    offer_currency: str | None,
    currencies: Iterable[str] | None,
) -> list[Rejection]:
    """The check of one outbox price change before a marketplace publisher sends it.

    ``currencies`` are the channel's accepted currencies; when the channel lists none, the offer's
    own currency (``hub.channel_offer.currency``) is the only one accepted.
    """
    accepted = list(currencies) if currencies is not None else [offer_currency] if offer_currency else []
    return check_offer(channel_id, sku, price=amount, floor_price=floor_price, currency=currency, currencies=accepted)


def refusal(problems: Iterable[Rejection]) -> str:
    """The outbox row's error text for offers the check refused."""
    return "pre-publish check: " + "; ".join(p.reason for p in problems)


def quarantine_rejections(
    conn: psycopg.Connection, channel_id: str, transfer_id: uuid.UUID, rejections: Iterable[Rejection]
) -> int:
    """Write rejections to ``hub.quarantine`` unless the same problem is already open (idempotent).

    Returns:
        The number of new quarantine rows.
    """
    rows = [
        (r.sku, r.rule, r.column, r.observed, r.reason, json.dumps(dict(r.raw), default=str, ensure_ascii=False))
        for r in rejections
    ]
    if not rows:
        return 0
    return conn.execute(
        "INSERT INTO hub.quarantine (dataset, source, transfer_id, record_key, expectation, column_name, "
        "observed_value, reason, raw) "
        "SELECT %(dataset)s, %(source)s, %(transfer)s, v.sku, v.rule, v.col, v.observed, v.reason, v.raw::jsonb "
        "FROM unnest(%(skus)s::text[], %(rules)s::text[], %(cols)s::text[], %(observed)s::text[], "
        "  %(reasons)s::text[], %(raws)s::text[]) AS v(sku, rule, col, observed, reason, raw) "
        "WHERE NOT EXISTS (SELECT 1 FROM hub.quarantine q WHERE q.dataset = %(dataset)s "
        "  AND q.source = %(source)s AND q.status = 'open' AND q.record_key = v.sku AND q.expectation = v.rule "
        "  AND q.observed_value IS NOT DISTINCT FROM v.observed)",
        {
            "dataset": DATASET,
            "source": f"channel:{channel_id}",
            "transfer": transfer_id,
            "skus": [r[0] for r in rows],
            "rules": [r[1] for r in rows],
            "cols": [r[2] for r in rows],
            "observed": [r[3] for r in rows],
            "reasons": [r[4] for r in rows],
            "raws": [r[5] for r in rows],
        },
    ).rowcount


def resolve_passed(conn: psycopg.Connection, channel_id: str, transfer_id: uuid.UUID, skus: Iterable[str]) -> int:
    """Resolve the open ``channel_offer`` quarantine rows of SKUs that have now been published."""
    return conn.execute(
        "UPDATE hub.quarantine SET status = 'resolved', resolved_at = now(), resolved_transfer_id = %s "
        "WHERE dataset = %s AND source = %s AND status = 'open' AND record_key = ANY(%s) AND transfer_id <> %s",
        (transfer_id, DATASET, f"channel:{channel_id}", list(skus), transfer_id),
    ).rowcount


def resolve_all_but(conn: psycopg.Connection, channel_id: str, transfer_id: uuid.UUID, rejected: Iterable[str]) -> int:
    """Resolve open ``channel_offer`` quarantine rows of every SKU except ``rejected`` (a full feed run)."""
    return conn.execute(
        "UPDATE hub.quarantine SET status = 'resolved', resolved_at = now(), resolved_transfer_id = %s "
        "WHERE dataset = %s AND source = %s AND status = 'open' AND NOT (record_key = ANY(%s)) "
        "AND transfer_id <> %s",
        (transfer_id, DATASET, f"channel:{channel_id}", sorted(set(rejected)), transfer_id),
    ).rowcount
