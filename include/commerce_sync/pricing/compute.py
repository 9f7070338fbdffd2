"""Set-based computation of channel offers, with the outbox filled in the same transaction.

For one channel, offers are computed in SQL with the formulas of :mod:`commerce_sync.pricing.rules`
(rule per product by override precedence, currency conversion, supplier cost, floor, MAP, max price,
rounding, stock buffers). Only offers whose row hash changed are written (version + 1); for API
channels one outbox row per changed field (price, quantity) is added with an idempotency key derived
from the change, and older unsent outbox rows for the same field are superseded. Every changed price
and quantity is written to ``audit.change``. The ledger row, carrying the digest of those change
rows, is appended in the same transaction, so offers, outbox, changes and ledger always agree.
Kinds that publish product content (``content`` in their ``outbox_fields``) also get a ``content``
row per offer whose product content changed (:func:`queue_content`), apart from price and quantity.

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

The statements are in ``pricing/sql/`` (one per file, see :mod:`commerce_sync.pricing.sqlfiles`); the
functions ``*_statement`` below compose the ones that take identifiers or fragments.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from typing import Any

import psycopg
from psycopg import ClientCursor, sql

from commerce_sync import registry
from commerce_sync.audit import changes, ledger
from commerce_sync.config import Channel, PricingRule, RuleOverride
from commerce_sync.db import connect
from commerce_sync.errors import DataError, TransientError
from commerce_sync.pricing.rates import effective_rates
from commerce_sync.pricing.sqlfiles import sql_file
from commerce_sync.quality import breakers

DATASET = "channel_offer"
FORMULA_VERSION = 3  # bump when the SQL in pricing/sql/ changes what it computes: forces a full recomputation


def price_hash(t: str) -> sql.Composed:
    """The hash of the price part of the offer row aliased ``t`` (``sql/price_hash.sql``).

    Both the computation and the held-move substitution hash through this and :func:`row_hash`, so a
    row's hash never depends on which path wrote it.
    """
    return sql_file("price_hash").format(t=sql.Identifier(t))


def row_hash(price_hash: sql.Composable, t: str) -> sql.Composed:
    """The hash of the whole offer row aliased ``t`` over its ``price_hash`` (``sql/row_hash.sql``)."""
    return sql_file("row_hash").format(price_hash=price_hash, t=sql.Identifier(t))


@cache
def base_statement(*, incremental: bool) -> sql.Composed:
    """``sql/create_pricing_base.sql``, limited to ``pricing_scope`` for an incremental run."""
    if not incremental:
        return sql_file("create_pricing_base").format(
            scope=sql.SQL(""), stock_scope=sql.SQL(""), held_scope=sql.SQL("")
        )
    return sql_file("create_pricing_base").format(
        scope=sql_file("scope_join").format(t=sql.Identifier("p")),
        stock_scope=sql_file("scope_join").format(t=sql.Identifier("st")),
        held_scope=sql_file("scope_join").format(t=sql.Identifier("ro")),
    )


@cache
def changes_statement() -> sql.Composed:
    """``sql/create_offer_change.sql`` with the hashes of the computed offer (alias c)."""
    return sql_file("create_offer_change").format(
        price_hash=price_hash("c"), row_hash=row_hash(sql.Identifier("p", "price_hash"), "c")
    )


@cache
def keep_live_price_statement() -> sql.Composed:
    """``sql/keep_live_price.sql`` with the hashes of the live price (alias o) and the new stock (alias c)."""
    return sql_file("keep_live_price").format(price_hash=price_hash("o"), row_hash=row_hash(price_hash("o"), "c"))


@cache
def write_field_changes_statement() -> sql.Composed:
    """``sql/write_field_changes.sql`` with its field rows and the audit digest of the rows it records."""
    return sql_file("write_field_changes").format(
        field_rows=sql_file("field_rows"), row_text=changes.ROW_TEXT, digest=changes.DIGEST
    )


def write_field_changes(conn: psycopg.Connection, transfer: ledger.Transfer, *, outbox: bool) -> tuple[int, int]:
    """Write offer_change's changed fields to audit.change and (``outbox``) hub.outbox.

    Sets ``transfer.changes_count`` / ``changes_sha256`` from the change rows written (the transfer
    must write no other change rows). Returns (outbox rows superseded, outbox rows added).
    """
    with changes.sort_memory(conn):
        row = conn.execute(
            write_field_changes_statement(), {"transfer_id": str(transfer.transfer_id), "outbox": outbox}
        ).fetchone()
    assert row is not None
    transfer.changes_count, transfer.changes_sha256 = int(row[0]), str(row[1])
    return int(row[2]), int(row[3])


def queue_content(conn: psycopg.Connection, channel_id: str, transfer_id: str, since: Any) -> tuple[int, int]:
    """Queue a ``content`` outbox row for each offer whose product content changed (``sql/queue_content.sql``).

    Args:
        since: the previous run's input bound (products changed after it are looked at); None: every offer.

    Returns:
        (content rows queued, older pending content rows superseded).
    """
    row = conn.execute(
        sql_file("queue_content"), {"channel": channel_id, "transfer_id": transfer_id, "since": since}
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


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
    conn.execute(sql_file("lock_channel"), {"lock": f"channel_offer:{channel_id}"})


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
    conn.execute(sql_file("create_parameter_tables"))
    with conn.cursor() as cur:
        cur.executemany(
            sql_file("insert_rule_param"),
            [
                {
                    "rule_id": r.id,
                    "version": str(r.version),
                    "margin_pct": r.margin_pct,
                    "margin_amount": r.margin_amount,
                    "commission_pct": r.commission_pct,
                    "fixed_fee": r.fixed_fee,
                    "min_margin_pct": r.min_margin_pct,
                    "rounding": r.rounding,
                    "min_price": r.min_price,
                    "max_price": r.max_price,
                }
                for r in setup.rules.values()
            ],
        )
        overrides = setup.for_channel(channel)
        if overrides:
            cur.executemany(
                sql_file("insert_override"),
                [{"level": o.level, "match": o.match, "rule_id": o.rule} for o in overrides],
            )
        cur.executemany(sql_file("insert_rate"), [{"currency": c, "rate": r} for c, r in rates.items()])
        cur.execute(sql_file("analyze_parameter_tables"))


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
            row = self._conn.execute(sql_file("count_offers"), {"channel": self._channel_id}).fetchone()
            self._value = int(row[0]) if row else 0
        return self._value


@dataclass(frozen=True)
class _ChangeStats:
    """One scan of offer_change (``sql/change_stats.sql``)."""

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
            sql_file("change_stats"),
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
        rows = conn.execute(sql_file("largest_moves"), {"move_pct": limits.price_move_pct}).fetchall()
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
    held = conn.execute(sql_file("hold_known_moves")).rowcount
    cap = channel.change_cap
    if cap is not None and (
        large > cap.max_count or (large and Decimal(large) * 100 / max(count(), 1) > cap.max_share_pct)
    ):
        held += conn.execute(sql_file("hold_large_moves"), {"move_pct": cap.move_pct}).rowcount
    params = {"channel": channel.id}
    conn.execute(sql_file("supersede_proposal_items"), params)
    conn.execute(sql_file("close_empty_proposals"), params)
    if not held:  # a new proposal item is always a held move
        return 0, None
    proposal_id = str(uuid.uuid4())
    conn.execute(
        sql_file("insert_proposal"), {"proposal_id": proposal_id, "channel": channel.id, "transfer_id": transfer_id}
    )
    new_items = conn.execute(sql_file("insert_proposal_items"), {"proposal_id": proposal_id}).rowcount
    if new_items:
        conn.execute(sql_file("set_proposal_items"), {"items": new_items, "proposal_id": proposal_id})
    else:
        conn.execute(sql_file("delete_proposal"), {"proposal_id": proposal_id})
    conn.execute(keep_live_price_statement())
    conn.execute(sql_file("drop_unchanged_held"))
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
    kind = registry.get(channel.kind)
    outbox = kind.uses_outbox
    params: dict[str, Any] = {
        "channel": channel.id,
        "currency": channel.currency,
        "gross": channel.prices_include_vat,
        "buffer": channel.stock_buffer,
        "buffer_pct": channel.stock_buffer_pct,
        "max_listed": channel.max_listed_quantity,
        "end_at_or_below": -1 if channel.end_when_at_or_below is None else channel.end_when_at_or_below,
        "default_rule": rule.id,
        "transfer_id": tid,
    }
    with ledger.recording(dsn, transfer), connect(dsn) as conn:
        lock_channel(conn, channel.id)
        bound_row = conn.execute(sql_file("inputs_bound")).fetchone()
        bound = bound_row[0] if bound_row else None
        rates = effective_rates(conn, channel.currency)
        fingerprint = config_fingerprint(channel, setup, rates)
        state = conn.execute(sql_file("read_state"), {"channel": channel.id}).fetchone()
        incremental = not full and state is not None and state[0] == fingerprint
        _load_parameters(conn, channel, setup, rates)
        if incremental:
            assert state is not None
            with ClientCursor(conn) as cur:
                cur.execute(sql_file("create_pricing_scope"), {"since": state[1]})
            conn.execute(sql_file("index_pricing_scope"))
            conn.execute(sql_file("favour_key_lookups"))
        # CREATE TABLE AS takes no server-side parameters: bind these (typed, escaped) client-side.
        with ClientCursor(conn) as cur:
            cur.execute(base_statement(incremental=incremental), params)
            missing = cur.execute(sql_file("missing_rates")).fetchall()
            if missing:
                raise DataError(
                    f"channel {channel.id!r}: no exchange rate into {channel.currency} for "
                    + "; ".join(f"{cur_} ({n} SKUs, e.g. {sku})" for cur_, n, sku in missing)
                    + ". Add the rate to pricing.yaml exchange_rates (or its CSV) and run again."
                )
            evaluated = cur.execute(sql_file("create_computed_offer"), params).rowcount
        conn.execute(changes_statement())
        if not incremental:  # large after a full run: statistics for the joins below
            conn.execute(sql_file("analyze_offer_change"))
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
        updated = conn.execute(sql_file("update_offers"), params).rowcount
        if new_offers:
            conn.execute(sql_file("insert_offers"), params)
        if updated != changed - new_offers:
            raise TransientError(
                f"channel {channel.id!r}: {changed - new_offers - updated} changed offers were deleted from "
                "hub.channel_offer during the run by a writer that does not take the channel lock; nothing was "
                "written. Run the task again."
            )
        superseded, outbox_rows = write_field_changes(conn, transfer, outbox=outbox)
        content_rows = content_superseded = 0
        if kind.queues("content"):
            since = state[1] if incremental and state is not None else None
            content_rows, content_superseded = queue_content(conn, channel.id, tid, since)
        conn.execute(
            sql_file("save_state"),
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
        if kind.queues("content"):
            transfer.details.update({"content_rows": content_rows, "content_superseded": content_superseded})
        ledger.append(conn, transfer, "success")
    return OfferComputation(
        channel.id, tid, evaluated, changed, floors, outbox_rows, superseded, mode, held, proposal_id
    )
