"""Set-based computation of channel offers, with the outbox filled in the same transaction.

For one channel, every priced product's offer is computed in SQL with the formulas of
:mod:`commerce_sync.pricing.rules`; only offers whose row hash changed are written (version + 1),
and for API channels one outbox row per changed field (price, quantity) is added with an
idempotency key derived from the change. Older unsent outbox rows for the same field are
superseded. Every changed price and quantity is also written to ``audit.change`` (old and new
value, rule id and version, offer version, idempotency key). The ledger row, carrying the digest
of those change rows, is appended in the same transaction, so offers, outbox, changes and ledger
always agree.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import ClientCursor

from commerce_sync.audit import changes, ledger
from commerce_sync.config import Channel, PricingRule
from commerce_sync.db import connect

DATASET = "channel_offer"
OUTBOX_KINDS = frozenset({"allegro"})

_COMPUTE = """
CREATE TEMP TABLE computed_offer ON COMMIT DROP AS
WITH own AS (
    SELECT sku, sum(quantity) AS quantity, sum(reserved) AS reserved FROM hub.stock GROUP BY sku
), dropship AS (
    SELECT gtin, max(quantity) AS quantity FROM hub.supplier_offer WHERE active GROUP BY gtin
), base AS (
    SELECT p.sku, p.purchase_price AS cost, p.active, p.version AS product_version,
           p.transfer_id AS product_transfer_id,
           CASE WHEN %(gross)s THEN 1 + p.vat_rate ELSE 1 END AS tax,
           CASE WHEN p.active
                THEN greatest(0, coalesce(own.quantity, 0) - coalesce(own.reserved, 0)
                                 + coalesce(dropship.quantity, 0) - %(buffer)s)
                ELSE 0 END AS quantity
    FROM hub.product AS p
    LEFT JOIN own ON own.sku = p.sku
    LEFT JOIN dropship ON dropship.gtin = p.gtin
    WHERE p.purchase_price > 0
), priced AS (
    SELECT b.*,
           b.cost * (1 + %(margin)s::numeric / 100) * (1 + %(commission)s::numeric / 100) * b.tax AS raw_price,
           ceil(b.cost * (1 + %(min_margin)s::numeric / 100) * (1 + %(commission)s::numeric / 100) * b.tax * 100) / 100
               AS floor_price
    FROM base AS b
), rounded AS (
    SELECT p.*,
           CASE WHEN %(rounding)s = '0.99' THEN round(p.raw_price + 0.01) - 0.01
                ELSE round(p.raw_price, 2) END AS candidate
    FROM priced AS p
)
SELECT %(channel)s::text AS channel, r.sku, %(currency)s::char(3) AS currency,
       r.quantity::integer AS quantity,
       CASE WHEN r.quantity > 0 THEN 'in_stock' ELSE 'out_of_stock' END AS availability,
       r.cost,
       r.floor_price::numeric(14, 2) AS floor_price,
       (CASE WHEN r.candidate >= r.floor_price THEN r.candidate
             WHEN %(rounding)s = '0.99' THEN ceil(r.floor_price + 0.01) - 0.01
             ELSE r.floor_price END)::numeric(14, 2) AS price,
       r.candidate < r.floor_price AS floor_applied,
       %(rule_id)s::text AS rule_id, %(rule_version)s::text AS rule_version,
       r.product_version, r.product_transfer_id
FROM rounded AS r
"""

_CHANGES = """
CREATE TEMP TABLE offer_change ON COMMIT DROP AS
SELECT c.*, h.row_hash, o.price AS old_price, o.currency AS old_currency, o.quantity AS old_quantity,
       coalesce(o.version, 0) + 1 AS new_version
FROM computed_offer AS c
CROSS JOIN LATERAL (
    SELECT md5(concat_ws('|', c.price, c.currency, c.quantity, c.availability, c.cost, c.floor_price,
                         c.floor_applied, c.rule_id, c.rule_version)) AS row_hash
) AS h
LEFT JOIN hub.channel_offer AS o ON o.channel = c.channel AND o.sku = c.sku
WHERE o.sku IS NULL OR o.row_hash IS DISTINCT FROM h.row_hash
"""

_APPLY = """
INSERT INTO hub.channel_offer AS t
    (channel, sku, price, currency, quantity, availability, cost, floor_price, floor_applied,
     rule_id, rule_version, row_hash, version, computed_at, transfer_id)
SELECT channel, sku, price, currency, quantity, availability, cost, floor_price, floor_applied,
       rule_id, rule_version, row_hash, new_version, now(), %(transfer_id)s
FROM offer_change
ON CONFLICT (channel, sku) DO UPDATE SET
    price = EXCLUDED.price, currency = EXCLUDED.currency, quantity = EXCLUDED.quantity,
    availability = EXCLUDED.availability, cost = EXCLUDED.cost, floor_price = EXCLUDED.floor_price,
    floor_applied = EXCLUDED.floor_applied, rule_id = EXCLUDED.rule_id,
    rule_version = EXCLUDED.rule_version, row_hash = EXCLUDED.row_hash, version = EXCLUDED.version,
    computed_at = EXCLUDED.computed_at, transfer_id = EXCLUDED.transfer_id
"""

# One row per changed field: what goes to the outbox (API channels) and to audit.change (all
# channels). The idempotency key is computed once here so both carry the same one.
_FIELD_CHANGES = """
CREATE TEMP TABLE field_change ON COMMIT DROP AS
SELECT f.*,
       encode(sha256(convert_to(concat_ws('|', f.channel, f.sku, f.field, f.new_version, f.payload::text),
                                'UTF8')), 'hex') AS idempotency_key
FROM (
    SELECT channel, sku, 'price'::text AS field, new_version,
           jsonb_build_object('amount', price::text, 'currency', currency) AS payload,
           old_price::text AS old_value, price::text AS new_value
    FROM offer_change
    WHERE old_price IS DISTINCT FROM price OR old_currency IS DISTINCT FROM currency
    UNION ALL
    SELECT channel, sku, 'quantity', new_version, jsonb_build_object('value', quantity),
           old_quantity::text, quantity::text
    FROM offer_change
    WHERE old_quantity IS DISTINCT FROM quantity
) AS f
"""

# The channel's price/quantity changes with the rule that produced them and the offer version
# (and, for outbox channels, the idempotency key of the outbox row that carries the change).
_RECORD_CHANGES = """
INSERT INTO audit.change (transfer_id, dataset, sku, channel, field, old_value, new_value, rule_id, rule_version,
                          source_ref)
SELECT %(transfer_id)s, 'channel_offer', f.sku, f.channel, f.field, f.old_value, f.new_value, o.rule_id,
       o.rule_version,
       jsonb_build_object('offer_version', f.new_version,
                          'idempotency_key', CASE WHEN %(outbox)s THEN f.idempotency_key END,
                          'currency', o.currency, 'cost', o.cost::text, 'floor_applied', o.floor_applied,
                          'product_version', o.product_version, 'product_transfer_id', o.product_transfer_id)
FROM field_change AS f
JOIN offer_change AS o ON o.channel = f.channel AND o.sku = f.sku
"""

_SUPERSEDE = """
UPDATE hub.outbox AS o SET status = 'superseded'
FROM field_change AS f
WHERE o.status = 'pending' AND o.channel = f.channel AND o.sku = f.sku AND o.field = f.field
  AND o.offer_version < f.new_version
"""

_ENQUEUE = """
INSERT INTO hub.outbox (channel, sku, field, payload, offer_version, idempotency_key, created_transfer_id)
SELECT f.channel, f.sku, f.field, f.payload, f.new_version, f.idempotency_key, %(transfer_id)s
FROM field_change AS f
ON CONFLICT (idempotency_key) DO NOTHING
"""


@dataclass(frozen=True)
class OfferComputation:
    """What one channel's computation changed."""

    channel: str
    transfer_id: str
    offers_evaluated: int
    offers_changed: int
    floors_applied: int
    outbox_rows: int
    superseded: int


def compute_channel_offers(dsn: str, channel: Channel, rule: PricingRule, run: ledger.RunContext) -> OfferComputation:
    """Recompute ``channel``'s offers from the hub; write changes, outbox rows and the ledger row."""
    transfer = ledger.Transfer(source="hub", target=f"channel:{channel.id}", dataset=DATASET, run=run)
    tid = str(transfer.transfer_id)
    params = {
        "channel": channel.id,
        "currency": channel.currency,
        "gross": channel.prices_include_vat,
        "buffer": channel.stock_buffer,
        "margin": rule.margin_pct,
        "commission": rule.commission_pct,
        "min_margin": rule.min_margin_pct,
        "rounding": rule.rounding,
        "rule_id": rule.id,
        "rule_version": str(rule.version),
        "transfer_id": tid,
        "outbox": channel.kind in OUTBOX_KINDS,
    }
    with ledger.recording(dsn, transfer), connect(dsn) as conn:
        # CREATE TABLE AS takes no server-side parameters: bind these (typed, escaped) client-side.
        with ClientCursor(conn) as cur:
            evaluated = cur.execute(_COMPUTE, params).rowcount
        conn.execute(_CHANGES)
        changed, floors = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE floor_applied) FROM offer_change"
        ).fetchone() or (0, 0)
        conn.execute(_APPLY, params)
        conn.execute(_FIELD_CHANGES)
        conn.execute(_RECORD_CHANGES, params)
        outbox_rows = superseded = 0
        if channel.kind in OUTBOX_KINDS:
            superseded = conn.execute(_SUPERSEDE).rowcount
            outbox_rows = conn.execute(_ENQUEUE, params).rowcount
        transfer.rows_read = evaluated
        transfer.rows_written = changed
        transfer.rows_changed = changed
        transfer.details = {
            "rule_id": rule.id,
            "rule_version": rule.version,
            "floors_applied_in_changes": floors,
            "outbox_rows": outbox_rows,
            "outbox_superseded": superseded,
        }
        changes.summarise(conn, transfer)
        ledger.append(conn, transfer, "success")
    return OfferComputation(channel.id, tid, evaluated, changed, floors, outbox_rows, superseded)
