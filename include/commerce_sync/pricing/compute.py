"""Set-based computation of channel offers, with the outbox filled in the same transaction.

For one channel, offers are computed in SQL with the formulas of :mod:`commerce_sync.pricing.rules`
(rule per product by override precedence, currency conversion, supplier cost, floor, MAP, max price,
rounding, stock buffers). Only offers whose row hash changed are written (version + 1); for API
channels one outbox row per changed field (price, quantity) is added with an idempotency key derived
from the change, and older unsent outbox rows for the same field are superseded. Every changed price
and quantity is written to ``audit.change``. The ledger row, carrying the digest of those change
rows, is appended in the same transaction, so offers, outbox, changes and ledger always agree.

**Incremental**: a channel recomputes only SKUs whose inputs changed (``hub.product``,
``hub.stock``, ``hub.sku_supply`` rows with ``updated_at`` after the channel's ``inputs_seen_until``,
and deleted stock/supply rows). The bound is the start of the oldest transaction open in the hub when
the previous computation began, so a row committed later by a long transaction is still seen. Any
change of the rules, overrides, channel settings or effective exchange rates (a fingerprint in
``hub.pricing_state``) recomputes the whole channel, as does ``full=True``.

**Guards**, in this order, on what the run would change:

1. Circuit breakers (``Channel.breakers``): more than Z % of the channel's offers moving by more than
   W %, or more than N offers going to stock 0, refuses the whole run (nothing written; a failed ledger
   row carries ``details.breakers``) unless the operator overrides it for the run.
2. Change cap (``Channel.change_cap``): when more than ``max_count`` offers (or ``max_share_pct``)
   would move by more than ``move_pct``, those price moves are held in ``hub.price_proposal_item``
   for approval (:mod:`commerce_sync.pricing.proposals`); their stock still goes out. A held move
   stays held while it is pending and after a rejection, until its inputs change (a new price hash).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import ClientCursor

from commerce_sync import registry
from commerce_sync.audit import changes, ledger
from commerce_sync.config import Channel, PricingRule, RuleOverride
from commerce_sync.db import connect
from commerce_sync.errors import DataError, TransientError
from commerce_sync.pricing.rates import effective_rates
from commerce_sync.quality import breakers

DATASET = "channel_offer"
FORMULA_VERSION = 2  # bump when the SQL below changes what it computes: forces a full recomputation


# The price part of an offer, and the whole row. Both the computation and the held-move
# substitution hash through these, so a row's hash never depends on which path wrote it.
PRICE_HASH = (
    "md5(concat_ws('|', {t}.price, {t}.currency, {t}.cost, {t}.floor_price, {t}.floor_applied, "
    "{t}.max_price_applied, {t}.rule_id, {t}.rule_version, {t}.rule_level, {t}.cost_source, {t}.exchange_rate))"
)
ROW_HASH = "md5(concat_ws('|', {price_hash}, {t}.quantity, {t}.availability))"

_SCOPE_INCREMENTAL = """
CREATE TEMP TABLE pricing_scope ON COMMIT DROP AS
SELECT sku FROM hub.product WHERE updated_at > %(since)s
UNION SELECT sku FROM hub.stock WHERE updated_at > %(since)s
UNION SELECT sku FROM hub.sku_supply WHERE updated_at > %(since)s
UNION SELECT sku FROM hub.pricing_input_deletion WHERE deleted_at > %(since)s
"""

# Bound for the next incremental run, taken before anything is read: rows committed after our
# statements' snapshots belong to transactions that started at or after it.
_INPUTS_BOUND = """
SELECT least(now(), (SELECT min(xact_start) FROM pg_stat_activity
                     WHERE datname = current_database() AND pid <> pg_backend_pid() AND xact_start IS NOT NULL))
"""

_BASE = """
CREATE TEMP TABLE pricing_base ON COMMIT DROP AS
WITH product AS (
    SELECT p.* FROM hub.product AS p {scope}
), own AS (
    SELECT st.sku, sum(st.quantity) AS quantity, sum(st.reserved) AS reserved
    FROM hub.stock AS st {stock_scope}
    GROUP BY st.sku
)
SELECT p.sku, p.active, p.vat_rate, p.version AS product_version, p.transfer_id AS product_transfer_id,
       p.currency AS erp_currency, ss.currency AS supply_currency,
       coalesce(os.rule_id, ob.rule_id, oc.rule_id, %(default_rule)s) AS rule_id,
       CASE WHEN os.rule_id IS NOT NULL THEN 'sku' WHEN ob.rule_id IS NOT NULL THEN 'brand'
            WHEN oc.rule_id IS NOT NULL THEN 'category' ELSE 'default' END AS rule_level,
       er.rate AS erp_rate, round(p.purchase_price * er.rate, 4) AS erp_cost,
       p.active AND coalesce(ss.chosen_quantity, 0) > 0 AS supply_contributes,
       sr.rate AS supply_rate, round(ss.purchase_price * sr.rate, 4) AS supply_cost,
       coalesce(own.quantity, 0) - coalesce(own.reserved, 0) + coalesce(ss.chosen_quantity, 0) AS available
FROM product AS p
LEFT JOIN own ON own.sku = p.sku
LEFT JOIN hub.sku_supply AS ss ON ss.sku = p.sku
LEFT JOIN pricing_rate AS er ON er.currency = p.currency
LEFT JOIN pricing_rate AS sr ON sr.currency = ss.currency
LEFT JOIN pricing_override AS os ON os.level = 'sku' AND os.match = p.sku
LEFT JOIN pricing_override AS ob ON ob.level = 'brand' AND ob.match = p.brand
LEFT JOIN pricing_override AS oc ON oc.level = 'category' AND oc.match = p.category
"""

_MISSING_RATES = """
SELECT currency, count(*), min(sku) FROM (
    SELECT erp_currency AS currency, sku FROM pricing_base WHERE erp_rate IS NULL
    UNION ALL
    SELECT supply_currency, sku FROM pricing_base WHERE supply_contributes AND supply_rate IS NULL
) AS m GROUP BY currency ORDER BY currency
"""

# Each step is a LATERAL subquery fenced with OFFSET 0, so it is evaluated once per row. As plain CTEs
# the planner inlined every step into each reference to it: the final price expression repeated the
# rounding, cost and floor arithmetic some twenty times per row (2.5x the time of the whole statement).
_COMPUTE = """
CREATE TEMP TABLE computed_offer ON COMMIT DROP AS
SELECT %(channel)s::text AS channel, b.sku, %(currency)s::char(3) AS currency,
       sl.sellable AS quantity,
       CASE WHEN sl.sellable > 0 THEN 'in_stock' ELSE 'out_of_stock' END AS availability,
       k.cost::numeric(14, 4) AS cost,
       p.floor_price::numeric(14, 2) AS floor_price,
       (CASE WHEN cp.candidate >= p.floor_price THEN cp.candidate
             WHEN r.rounding = '0.99' THEN ceil(p.floor_price + 0.01) - 0.01
             WHEN r.rounding = '0.05' THEN ceil(p.floor_price * 20) / 20
             ELSE p.floor_price END)::numeric(14, 2) AS price,
       cp.candidate < p.floor_price AS floor_applied,
       cp.max_price_applied,
       b.rule_id, r.version AS rule_version, b.rule_level,
       CASE WHEN k.supplier_cost THEN 'supplier' ELSE 'erp' END AS cost_source,
       k.rate::numeric(18, 8) AS exchange_rate,
       b.product_version, b.product_transfer_id
FROM pricing_base AS b
JOIN pricing_rule_param AS r ON r.rule_id = b.rule_id
CROSS JOIN LATERAL (
    SELECT s.supplier_cost, CASE WHEN s.supplier_cost THEN b.supply_cost ELSE b.erp_cost END AS cost,
           CASE WHEN s.supplier_cost THEN b.supply_rate ELSE b.erp_rate END AS rate,
           CASE WHEN %(gross)s THEN 1 + b.vat_rate ELSE 1 END AS tax
    FROM (SELECT b.supply_contributes AND b.supply_cost > b.erp_cost AS supplier_cost) AS s
    OFFSET 0
) AS k
CROSS JOIN LATERAL (
    SELECT (k.cost * (1 + r.margin_pct / 100) + r.margin_amount + r.fixed_fee) * (1 + r.commission_pct / 100) * k.tax
               AS raw_price,
           greatest(ceil((k.cost * (1 + r.min_margin_pct / 100) + r.fixed_fee) * (1 + r.commission_pct / 100) * k.tax
                         * 100) / 100,
                    coalesce(r.min_price, 0)) AS floor_price
    OFFSET 0
) AS p
CROSS JOIN LATERAL (
    SELECT CASE r.rounding WHEN '0.99' THEN round(p.raw_price + 0.01) - 0.01
                           WHEN '0.05' THEN round(p.raw_price * 20) / 20
                           ELSE round(p.raw_price, 2) END AS rounded_price
    OFFSET 0
) AS rd
CROSS JOIN LATERAL (
    SELECT coalesce(rd.rounded_price > r.max_price, false) AS max_price_applied,
           CASE WHEN rd.rounded_price > r.max_price THEN r.max_price ELSE rd.rounded_price END AS candidate
    OFFSET 0
) AS cp
CROSS JOIN LATERAL (
    SELECT (CASE WHEN b.active
                 THEN least(coalesce(%(max_listed)s::integer, 2147483647),
                            greatest(0, b.available - %(buffer)s::integer
                                        - ceil(greatest(b.available, 0) * %(buffer_pct)s::numeric / 100)))
                 ELSE 0 END)::integer AS sellable
    OFFSET 0
) AS sl
WHERE k.cost > 0
"""

_CHANGES = f"""
CREATE TEMP TABLE offer_change ON COMMIT DROP AS
SELECT c.*, h.price_hash, h.row_hash, o.price AS old_price, o.currency AS old_currency,
       o.quantity AS old_quantity, o.row_hash AS old_row_hash, coalesce(o.version, 0) + 1 AS new_version,
       o.ctid AS old_ctid,
       CASE WHEN o.price > 0 AND o.currency = c.currency
            THEN round(abs(c.price - o.price) * 100 / o.price, 2) END AS move_pct,
       false AS held
FROM computed_offer AS c
CROSS JOIN LATERAL (SELECT {PRICE_HASH.format(t="c")} AS price_hash) AS p
CROSS JOIN LATERAL (SELECT p.price_hash, {ROW_HASH.format(price_hash="p.price_hash", t="c")} AS row_hash) AS h
LEFT JOIN hub.channel_offer AS o ON o.channel = c.channel AND o.sku = c.sku
WHERE o.sku IS NULL OR o.row_hash IS DISTINCT FROM h.row_hash
"""

# Everything the guards and the ledger row need from offer_change, in one scan. A NULL limit (no
# breakers, no cap) counts nothing. Read again after moves were held (see _apply_cap), which changes the
# rows' floor flags and drops the ones left unchanged.
_CHANGE_STATS = """
SELECT count(*) FILTER (WHERE move_pct > %(breaker_move_pct)s) AS moves,
       count(*) FILTER (WHERE old_quantity > 0 AND quantity = 0) AS stockouts,
       count(*) FILTER (WHERE move_pct > %(cap_move_pct)s) AS large_moves,
       count(*) AS changed, count(*) FILTER (WHERE floor_applied) AS floors,
       count(*) FILTER (WHERE old_row_hash IS NULL) AS new_offers
FROM offer_change
"""

_LARGEST_MOVES = """
SELECT sku, old_price, price, move_pct FROM offer_change WHERE move_pct > %(move_pct)s
ORDER BY move_pct DESC, sku LIMIT 3
"""

# A move matching a pending or rejected proposal item (same price hash) stays held.
_HOLD_KNOWN = """
UPDATE offer_change AS c SET held = true
WHERE c.old_price IS NOT NULL AND EXISTS (
    SELECT 1 FROM hub.price_proposal_item AS i
    WHERE i.channel = c.channel AND i.sku = c.sku AND i.price_hash = c.price_hash
      AND i.status IN ('pending', 'rejected'))
"""

_HOLD_LARGE = """
UPDATE offer_change SET held = true WHERE move_pct > %(move_pct)s AND NOT held
"""

# Pending items of re-evaluated SKUs whose proposed price is no longer what the rules compute.
_SUPERSEDE_ITEMS = """
UPDATE hub.price_proposal_item AS i SET status = 'superseded'
WHERE i.status = 'pending' AND i.channel = %(channel)s
  AND EXISTS (SELECT 1 FROM computed_offer AS c WHERE c.sku = i.sku)
  AND NOT EXISTS (SELECT 1 FROM offer_change AS c WHERE c.sku = i.sku AND c.held AND c.price_hash = i.price_hash)
"""

_CLOSE_EMPTY_PROPOSALS = """
UPDATE hub.price_proposal AS p SET status = 'superseded'
WHERE p.status = 'pending' AND p.channel = %(channel)s
  AND NOT EXISTS (SELECT 1 FROM hub.price_proposal_item AS i WHERE i.proposal_id = p.proposal_id
                  AND i.status = 'pending')
"""

_NEW_ITEMS = """
INSERT INTO hub.price_proposal_item
    (proposal_id, channel, sku, old_price, price, move_pct, currency, cost, floor_price, floor_applied,
     max_price_applied, rule_id, rule_version, rule_level, cost_source, exchange_rate, price_hash)
SELECT %(proposal_id)s, c.channel, c.sku, c.old_price, c.price, c.move_pct, c.currency, c.cost, c.floor_price,
       c.floor_applied, c.max_price_applied, c.rule_id, c.rule_version, c.rule_level, c.cost_source,
       c.exchange_rate, c.price_hash
FROM offer_change AS c
WHERE c.held AND NOT EXISTS (
    SELECT 1 FROM hub.price_proposal_item AS i
    WHERE i.channel = c.channel AND i.sku = c.sku AND i.price_hash = c.price_hash
      AND i.status IN ('pending', 'rejected'))
"""

# Held rows keep the live price (and what it was made from); their stock still goes out.
_KEEP_LIVE_PRICE = f"""
UPDATE offer_change AS c SET
    price = o.price, currency = o.currency, cost = o.cost, floor_price = o.floor_price,
    floor_applied = o.floor_applied, max_price_applied = o.max_price_applied, rule_id = o.rule_id,
    rule_version = o.rule_version, rule_level = o.rule_level, cost_source = o.cost_source,
    exchange_rate = o.exchange_rate, price_hash = {PRICE_HASH.format(t="o")},
    row_hash = {ROW_HASH.format(price_hash=PRICE_HASH.format(t="o"), t="c")}
FROM hub.channel_offer AS o
WHERE c.held AND o.channel = c.channel AND o.sku = c.sku
"""

# Changed offers that exist are updated where offer_change read them (their ctid, checked against the
# key), new ones inserted: under the channel lock nothing else adds, removes or rewrites a channel's
# offers, so the two sets are exact and the row versions are still there. The ctid saves a second
# descent of the primary key per offer; a row that moved anyway is missed, not mistaken, and the
# count check below fails the run. (An upsert through ON CONFLICT costs a speculative insertion and a
# tuple lock per row: about 1.3x the time.)
_UPDATE_OFFERS = """
UPDATE hub.channel_offer AS t SET
    price = c.price, currency = c.currency, quantity = c.quantity, availability = c.availability, cost = c.cost,
    floor_price = c.floor_price, floor_applied = c.floor_applied, max_price_applied = c.max_price_applied,
    rule_id = c.rule_id, rule_version = c.rule_version, rule_level = c.rule_level, cost_source = c.cost_source,
    exchange_rate = c.exchange_rate, row_hash = c.row_hash, version = c.new_version, computed_at = now(),
    transfer_id = %(transfer_id)s
FROM offer_change AS c
WHERE c.old_row_hash IS NOT NULL AND t.ctid = c.old_ctid AND t.channel = c.channel AND t.sku = c.sku
"""

_INSERT_OFFERS = """
INSERT INTO hub.channel_offer
    (channel, sku, price, currency, quantity, availability, cost, floor_price, floor_applied, max_price_applied,
     rule_id, rule_version, rule_level, cost_source, exchange_rate, row_hash, version, computed_at, transfer_id)
SELECT channel, sku, price, currency, quantity, availability, cost, floor_price, floor_applied, max_price_applied,
       rule_id, rule_version, rule_level, cost_source, exchange_rate, row_hash, new_version, now(), %(transfer_id)s
FROM offer_change
WHERE old_row_hash IS NULL
"""

# The changed fields are written in one statement (WRITE_FIELD_CHANGES), from one row per changed
# field (price, quantity), read in one scan of offer_change and carrying what the audit row records
# about the offer. The idempotency key is computed once there, so the outbox row and the audit row
# carry the same one.
_FIELD_ROWS = """
SELECT f.*,
       encode(sha256(convert_to(concat_ws('|', f.channel, f.sku, f.field, f.new_version, f.payload::text),
                                'UTF8')), 'hex') AS idempotency_key
FROM (
    SELECT c.channel, c.sku, v.field, c.new_version,
           CASE v.field WHEN 'price' THEN jsonb_build_object('amount', c.price::text, 'currency', c.currency)
                        ELSE jsonb_build_object('value', c.quantity) END AS payload,
           CASE v.field WHEN 'price' THEN c.old_price::text ELSE c.old_quantity::text END AS old_value,
           CASE v.field WHEN 'price' THEN c.price::text ELSE c.quantity::text END AS new_value,
           c.rule_id, c.rule_version, c.currency, c.cost, c.floor_applied, c.rule_level, c.cost_source,
           c.exchange_rate, c.held, c.product_version, c.product_transfer_id
    FROM offer_change AS c
    CROSS JOIN LATERAL (VALUES
        ('price', c.old_price IS DISTINCT FROM c.price OR c.old_currency IS DISTINCT FROM c.currency),
        ('quantity', c.old_quantity IS DISTINCT FROM c.quantity)
    ) AS v (field, changed)
    WHERE v.changed  -- the values of a changed field only are built
) AS f
"""

# 1. audit.change: the channel's price/quantity changes with the rule that produced them and the
#    offer version (and, for outbox channels, the idempotency key of the outbox row that carries the
#    change). Their count and digest are taken from what the insert returns, so the rows are not read
#    back (the digest is the one audit.changes.change_digest computes from the table).
# 2. For outbox channels, older unsent outbox rows of the same field are superseded. The sub-statements
#    share one snapshot, so this never sees the rows enqueued by 3.
# 3. The outbox rows: a plain INSERT. The key covers a new offer version, and versions only grow under
#    the channel lock, so a duplicate cannot arise. If it ever did, the unique index refuses the whole
#    run instead of silently dropping a change (and the check costs one index descent, not two as
#    ON CONFLICT would).
WRITE_FIELD_CHANGES = f"""
WITH f AS MATERIALIZED ({_FIELD_ROWS}),
recorded AS (
    INSERT INTO audit.change AS c (transfer_id, dataset, sku, channel, field, old_value, new_value, rule_id,
                                   rule_version, source_ref)
    SELECT %(transfer_id)s, 'channel_offer', f.sku, f.channel, f.field, f.old_value, f.new_value, f.rule_id,
           f.rule_version,
           jsonb_build_object('offer_version', f.new_version,
                              'idempotency_key', CASE WHEN %(outbox)s THEN f.idempotency_key END,
                              'currency', f.currency, 'cost', f.cost::text, 'floor_applied', f.floor_applied,
                              'rule_level', f.rule_level, 'cost_source', f.cost_source,
                              'exchange_rate', f.exchange_rate::text, 'held', f.held,
                              'product_version', f.product_version, 'product_transfer_id', f.product_transfer_id)
    FROM f
    RETURNING {changes.ROW_TEXT} AS row_text
), superseded AS (
    UPDATE hub.outbox AS o SET status = 'superseded'
    FROM f
    WHERE %(outbox)s AND o.status = 'pending' AND o.channel = f.channel AND o.sku = f.sku AND o.field = f.field
      AND o.offer_version < f.new_version
    RETURNING 1
), enqueued AS (
    INSERT INTO hub.outbox (channel, sku, field, payload, offer_version, idempotency_key, created_transfer_id)
    SELECT f.channel, f.sku, f.field, f.payload, f.new_version, f.idempotency_key, %(transfer_id)s
    FROM f
    WHERE %(outbox)s
    RETURNING 1
)
SELECT {changes.DIGEST}, (SELECT count(*) FROM superseded), (SELECT count(*) FROM enqueued)
FROM recorded AS r
"""


def write_field_changes(conn: psycopg.Connection, transfer: ledger.Transfer, *, outbox: bool) -> tuple[int, int]:
    """Write offer_change's changed fields to audit.change and (``outbox``) hub.outbox.

    Sets ``transfer.changes_count`` / ``changes_sha256`` from the change rows written (the transfer
    must write no other change rows). Returns (outbox rows superseded, outbox rows added).
    """
    with changes.sort_memory(conn):
        row = conn.execute(WRITE_FIELD_CHANGES, {"transfer_id": str(transfer.transfer_id), "outbox": outbox}).fetchone()
    assert row is not None
    transfer.changes_count, transfer.changes_sha256 = int(row[0]), str(row[1])
    return int(row[2]), int(row[3])


_SAVE_STATE = """
INSERT INTO hub.pricing_state (channel, config_sha256, inputs_seen_until, computed_at, transfer_id, offer_count)
VALUES (%(channel)s, %(config_sha256)s, %(bound)s, now(), %(transfer_id)s, %(offer_count)s)
ON CONFLICT (channel) DO UPDATE SET config_sha256 = EXCLUDED.config_sha256,
    inputs_seen_until = EXCLUDED.inputs_seen_until, computed_at = EXCLUDED.computed_at,
    transfer_id = EXCLUDED.transfer_id, offer_count = EXCLUDED.offer_count
"""


@dataclass(frozen=True)
class PricingSetup:
    """Everything besides the hub data that decides a channel's offers."""

    rules: dict[str, PricingRule]
    overrides: tuple[RuleOverride, ...] = ()

    def for_channel(self, channel: Channel) -> list[RuleOverride]:
        return [o for o in self.overrides if o.channel == channel.id]


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
    mode: str = "full"
    held: int = 0
    proposal_id: str | None = None


def lock_channel(conn: psycopg.Connection, channel_id: str) -> None:
    """Serialise writers of one channel's offers (computation, approval) until the transaction ends."""
    conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"channel_offer:{channel_id}",))


def config_fingerprint(channel: Channel, setup: PricingSetup, rates: dict[str, Decimal]) -> str:
    """sha256 over what makes a channel's offers besides the hub rows (a change forces a full run)."""
    overrides = setup.for_channel(channel)
    used = sorted({channel.pricing_rule, *(o.rule for o in overrides)})
    payload = {
        "formula": FORMULA_VERSION,
        "channel": channel.model_dump(mode="json"),
        "rules": [setup.rules[r].model_dump(mode="json") for r in used],
        "overrides": [o.model_dump(mode="json") for o in overrides],
        "rates": {k: str(v) for k, v in sorted(rates.items())},
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _load_parameters(
    conn: psycopg.Connection, channel: Channel, setup: PricingSetup, rates: dict[str, Decimal]
) -> None:
    conn.execute(
        """CREATE TEMP TABLE pricing_rule_param (
               rule_id text PRIMARY KEY, version text, margin_pct numeric, margin_amount numeric,
               commission_pct numeric, fixed_fee numeric, min_margin_pct numeric, rounding text,
               min_price numeric, max_price numeric) ON COMMIT DROP;
           CREATE TEMP TABLE pricing_override (level text, match text, rule_id text, PRIMARY KEY (level, match))
               ON COMMIT DROP;
           CREATE TEMP TABLE pricing_rate (currency char(3) PRIMARY KEY, rate numeric) ON COMMIT DROP"""
    )
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO pricing_rule_param VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [
                (
                    r.id,
                    str(r.version),
                    r.margin_pct,
                    r.margin_amount,
                    r.commission_pct,
                    r.fixed_fee,
                    r.min_margin_pct,
                    r.rounding,
                    r.min_price,
                    r.max_price,
                )
                for r in setup.rules.values()
            ],
        )
        overrides = setup.for_channel(channel)
        if overrides:
            cur.executemany(
                "INSERT INTO pricing_override VALUES (%s, %s, %s)", [(o.level, o.match, o.rule) for o in overrides]
            )
        cur.executemany("INSERT INTO pricing_rate VALUES (%s, %s)", list(rates.items()))
        for table in ("pricing_rule_param", "pricing_override", "pricing_rate"):
            cur.execute(f"ANALYZE {table}")


class _OfferCount:
    """The channel's offer count before this run, for the guards' shares.

    Kept in ``hub.pricing_state.offer_count`` by every computation; counted (a scan at 1M offers)
    only when there is no stored count yet, and then only if a guard needs it.
    """

    def __init__(self, conn: psycopg.Connection, channel_id: str, stored: int | None) -> None:
        self._conn, self._channel_id = conn, channel_id
        self._value = -1 if stored is None else stored

    def __call__(self) -> int:
        if self._value < 0:
            row = self._conn.execute(
                "SELECT count(*) FROM hub.channel_offer WHERE channel = %s", (self._channel_id,)
            ).fetchone()
            self._value = int(row[0]) if row else 0
        return self._value


@dataclass(frozen=True)
class _ChangeStats:
    """One scan of offer_change (see _CHANGE_STATS)."""

    moves: int
    stockouts: int
    large_moves: int
    changed: int
    floors: int
    new_offers: int

    @classmethod
    def read(cls, conn: psycopg.Connection, channel: Channel) -> _ChangeStats:
        limits, cap = channel.breakers, channel.change_cap
        row = conn.execute(
            _CHANGE_STATS,
            {
                "breaker_move_pct": limits.price_move_pct if limits else None,
                "cap_move_pct": cap.move_pct if cap else None,
            },
        ).fetchone()
        assert row is not None
        return cls(*(int(v) for v in row))


def _breaker_decision(
    conn: psycopg.Connection,
    channel: Channel,
    override: breakers.Override | None,
    count: _OfferCount,
    stats: _ChangeStats,
) -> breakers.Decision | None:
    limits = channel.breakers
    if limits is None:
        return None
    moves, stockouts = stats.moves, stats.stockouts
    largest = ""
    if moves:
        rows = conn.execute(_LARGEST_MOVES, {"move_pct": limits.price_move_pct}).fetchall()
        largest = ", ".join(f"{sku} {old}->{new} ({pct}%)" for sku, old, new, pct in rows)
    total = count() if moves else 0
    share = float(moves) * 100 / total if total >= limits.min_offers and total else 0.0
    measures = [
        breakers.Measure(
            "price_moves",
            round(share, 2),
            float(limits.max_price_moves_pct),
            "%",
            (f"{moves} of {total} offers" if moves else "no offer")
            + f" of channel {channel.id!r} would move by more than {limits.price_move_pct}%"
            + (f"; largest: {largest}" if largest else ""),
        ),
        breakers.Measure(
            "stockouts",
            float(stockouts),
            float(limits.max_stockouts),
            " offers",
            f"{stockouts} offers of channel {channel.id!r} would go from stock > 0 to 0",
        ),
    ]
    return breakers.decide(DATASET, f"channel:{channel.id}", measures, override)


def _apply_cap(
    conn: psycopg.Connection, channel: Channel, transfer_id: str, count: _OfferCount, large: int
) -> tuple[int, str | None]:
    """Hold large moves when the cap is exceeded; return (held moves, new proposal id or None).

    ``large`` is the number of moves above the cap's ``move_pct`` (from _ChangeStats).
    """
    held = conn.execute(_HOLD_KNOWN).rowcount
    cap = channel.change_cap
    if cap is not None and (
        large > cap.max_count or (large and Decimal(large) * 100 / max(count(), 1) > cap.max_share_pct)
    ):
        held += conn.execute(_HOLD_LARGE, {"move_pct": cap.move_pct}).rowcount
    params = {"channel": channel.id}
    conn.execute(_SUPERSEDE_ITEMS, params)
    conn.execute(_CLOSE_EMPTY_PROPOSALS, params)
    if not held:  # a new proposal item is always a held move
        return 0, None
    proposal_id = str(uuid.uuid4())
    conn.execute(
        "INSERT INTO hub.price_proposal (proposal_id, channel, items, created_transfer_id) VALUES (%s, %s, 0, %s)",
        (proposal_id, channel.id, transfer_id),
    )
    new_items = conn.execute(_NEW_ITEMS, {"proposal_id": proposal_id}).rowcount
    if new_items:
        conn.execute("UPDATE hub.price_proposal SET items = %s WHERE proposal_id = %s", (new_items, proposal_id))
    else:
        conn.execute("DELETE FROM hub.price_proposal WHERE proposal_id = %s", (proposal_id,))
    conn.execute(_KEEP_LIVE_PRICE)
    conn.execute("DELETE FROM offer_change WHERE held AND row_hash = old_row_hash")
    return held, proposal_id if new_items else None


def compute_channel_offers(
    dsn: str,
    channel: Channel,
    rule: PricingRule,
    run: ledger.RunContext,
    *,
    setup: PricingSetup | None = None,
    override: breakers.Override | None = None,
    full: bool = False,
) -> OfferComputation:
    """Recompute ``channel``'s offers from the hub; write changes, outbox rows and the ledger row.

    Args:
        rule: the channel's default rule (``channel.pricing_rule``).
        setup: all rules and the overrides; without it only ``rule`` applies.
        override: the operator's one-run permission to pass tripped breakers.
        full: recompute every SKU even if the channel's inputs did not change.

    Raises:
        BreakerTripped: a breaker tripped (nothing was written; the failed ledger row has the numbers).
        DataError: a cost currency has no exchange rate into the channel's currency.
    """
    setup = setup or PricingSetup(rules={rule.id: rule})
    if rule.id not in setup.rules:
        setup = PricingSetup(rules={**setup.rules, rule.id: rule}, overrides=setup.overrides)
    transfer = ledger.Transfer(source="hub", target=f"channel:{channel.id}", dataset=DATASET, run=run)
    tid = str(transfer.transfer_id)
    outbox = registry.get(channel.kind).uses_outbox
    params: dict[str, Any] = {
        "channel": channel.id,
        "currency": channel.currency,
        "gross": channel.prices_include_vat,
        "buffer": channel.stock_buffer,
        "buffer_pct": channel.stock_buffer_pct,
        "max_listed": channel.max_listed_quantity,
        "default_rule": rule.id,
        "transfer_id": tid,
    }
    with ledger.recording(dsn, transfer), connect(dsn) as conn:
        lock_channel(conn, channel.id)
        bound_row = conn.execute(_INPUTS_BOUND).fetchone()
        bound = bound_row[0] if bound_row else None
        rates = effective_rates(conn, channel.currency)
        fingerprint = config_fingerprint(channel, setup, rates)
        state = conn.execute(
            "SELECT config_sha256, inputs_seen_until, offer_count FROM hub.pricing_state WHERE channel = %s",
            (channel.id,),
        ).fetchone()
        incremental = not full and state is not None and state[0] == fingerprint
        _load_parameters(conn, channel, setup, rates)
        scope = stock_scope = ""
        if incremental:
            assert state is not None
            with ClientCursor(conn) as cur:
                cur.execute(_SCOPE_INCREMENTAL, {"since": state[1]})
            conn.execute("ALTER TABLE pricing_scope ADD PRIMARY KEY (sku); ANALYZE pricing_scope")
            # A few thousand key lookups beat scanning the whole product and stock tables; PostgreSQL's
            # spinning-disk default (4.0) would choose the scans up to ~1 % of the rows.
            conn.execute("SET LOCAL random_page_cost = 1.1")
            scope = "JOIN pricing_scope AS s ON s.sku = p.sku"
            stock_scope = "JOIN pricing_scope AS s ON s.sku = st.sku"
        # CREATE TABLE AS takes no server-side parameters: bind these (typed, escaped) client-side.
        with ClientCursor(conn) as cur:
            cur.execute(_BASE.format(scope=scope, stock_scope=stock_scope), params)
            missing = cur.execute(_MISSING_RATES).fetchall()
            if missing:
                raise DataError(
                    f"channel {channel.id!r}: no exchange rate into {channel.currency} for "
                    + "; ".join(f"{cur_} ({n} SKUs, e.g. {sku})" for cur_, n, sku in missing)
                    + ". Add the rate to pricing.yaml exchange_rates (or its CSV) and run again."
                )
            evaluated = cur.execute(_COMPUTE, params).rowcount
        conn.execute(_CHANGES)
        if not incremental:
            # Large after a full run: statistics for the joins below. An incremental run's few thousand
            # rows are estimated well enough from the table's size, and ANALYZE would cost more.
            conn.execute("ANALYZE offer_change")
        total_offers = _OfferCount(conn, channel.id, state[2] if state is not None and not full else None)
        stats = _ChangeStats.read(conn, channel)
        decision = _breaker_decision(conn, channel, override, total_offers, stats)
        if decision is not None:
            decision.record(transfer)
            decision.enforce()
        held, proposal_id = _apply_cap(conn, channel, tid, total_offers, stats.large_moves)
        if held:  # held rows took the live price (and its floor flag); unchanged ones were dropped
            stats = _ChangeStats.read(conn, channel)
        changed, floors, new_offers = stats.changed, stats.floors, stats.new_offers
        offers_before = total_offers()
        updated = conn.execute(_UPDATE_OFFERS, params).rowcount
        if new_offers:
            conn.execute(_INSERT_OFFERS, params)
        if updated != changed - new_offers:
            raise TransientError(
                f"channel {channel.id!r}: {changed - new_offers - updated} changed offers were deleted from "
                "hub.channel_offer during the run by a writer that does not take the channel lock; nothing was "
                "written. Run the task again."
            )
        superseded, outbox_rows = write_field_changes(conn, transfer, outbox=outbox)
        conn.execute(
            _SAVE_STATE,
            {
                "channel": channel.id,
                "config_sha256": fingerprint,
                "bound": bound,
                "transfer_id": tid,
                "offer_count": offers_before + new_offers,
            },
        )
        mode = "incremental" if incremental else "full"
        transfer.rows_read = evaluated
        transfer.rows_written = changed
        transfer.rows_changed = changed
        transfer.details.update(
            {
                "mode": mode,
                "rule_id": rule.id,
                "rule_version": rule.version,
                "rules": {r.id: r.version for r in setup.rules.values()},
                "config_sha256": fingerprint,
                "floors_applied_in_changes": floors,
                "outbox_rows": outbox_rows,
                "outbox_superseded": superseded,
                "held_price_moves": held,
                "proposal_id": proposal_id,
            }
        )
        ledger.append(conn, transfer, "success")
    return OfferComputation(
        channel.id, tid, evaluated, changed, floors, outbox_rows, superseded, mode, held, proposal_id
    )
