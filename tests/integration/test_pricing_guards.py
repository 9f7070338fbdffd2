"""Incremental recomputation, breakers, change caps with approve/reject, explain, exchange rates (real PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from commerce_sync.audit import ledger
from commerce_sync.config import (
    ChangeCap,
    Channel,
    Config,
    ErpSource,
    ExchangeRate,
    ExchangeRates,
    OfferBreakers,
)
from commerce_sync.db import connect
from commerce_sync.errors import BreakerTripped, CommerceSyncError, DataError
from commerce_sync.pricing.compute import PricingSetup, compute_channel_offers
from commerce_sync.pricing.explain import explain_offer, format_explanation
from commerce_sync.pricing.proposals import ApprovalAnswer, apply_approval, decide_proposal, pending_summary
from commerce_sync.pricing.rates import configured_rates, effective_rates, load_rates, read_rates_csv
from commerce_sync.quality.breakers import Override
from tests.integration.test_pricing_compute import RULE, RUN, assert_change_digests, insert_supply, seed_products

pytestmark = pytest.mark.integration
D = Decimal


def channel(**kw: object) -> Channel:
    base: dict[str, object] = {"id": "allegro", "kind": "allegro", "conn_id": "x", "pricing_rule": "test-rule"}
    base.update(kw)
    return Channel.model_validate(base)


def scalar(dsn: str, query: str, *params: object) -> object:
    with connect(dsn) as conn:
        row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def set_cost(dsn: str, skus: list[str], factor: str) -> None:
    with connect(dsn) as conn:
        conn.execute(
            "UPDATE hub.product SET purchase_price = purchase_price * %s WHERE sku = ANY(%s)", (D(factor), skus)
        )


# ---------------------------------------------------------------- incremental
def test_only_changed_inputs_are_recomputed(hub_dsn: str) -> None:
    seed_products(hub_dsn, 200)
    ch = channel()
    first = compute_channel_offers(hub_dsn, ch, RULE, RUN)
    assert (first.mode, first.offers_evaluated) == ("full", 200)
    assert compute_channel_offers(hub_dsn, ch, RULE, RUN).offers_evaluated == 0

    set_cost(hub_dsn, ["SKU-00003", "SKU-00150"], "1.5")
    with connect(hub_dsn) as conn:
        conn.execute("UPDATE hub.stock SET quantity = quantity + 7 WHERE sku = 'SKU-00004'")
        insert_supply(conn.cursor(), [{"sku": "SKU-00005", "cost": D("1"), "currency": "PLN", "qty": 9}], "0" * 32)
    second = compute_channel_offers(hub_dsn, ch, RULE, RUN)
    assert (second.mode, second.offers_evaluated) == ("incremental", 4)
    assert second.offers_changed == 4 - (
        0 if scalar(hub_dsn, "SELECT active FROM hub.product WHERE sku='SKU-00004'") else 1
    )

    with connect(hub_dsn) as conn:  # a deleted supply row leaves no updated_at: the trigger notes it
        conn.execute("DELETE FROM hub.sku_supply WHERE sku = 'SKU-00005'")
    assert compute_channel_offers(hub_dsn, ch, RULE, RUN).offers_evaluated == 1

    bumped = RULE.model_copy(update={"version": RULE.version + 1})
    assert compute_channel_offers(hub_dsn, ch, bumped, RUN).mode == "full"  # rule change: whole channel
    with connect(hub_dsn) as conn:
        conn.execute(
            "INSERT INTO hub.exchange_rate (currency, quote, valid_on, rate, source, transfer_id) "
            "VALUES ('EUR', 'PLN', current_date, 4.3, 'test', gen_random_uuid())"
        )
    assert compute_channel_offers(hub_dsn, ch, bumped, RUN).mode == "full"  # effective rates changed
    assert compute_channel_offers(hub_dsn, ch, bumped, RUN).offers_evaluated == 0
    assert compute_channel_offers(hub_dsn, ch, bumped, RUN, full=True).offers_evaluated == 200


# ---------------------------------------------------------------- breakers
GUARDED = channel(
    breakers=OfferBreakers(price_move_pct=D(20), max_price_moves_pct=D(10), min_offers=10, max_stockouts=3)
)


def test_price_move_breaker_blocks_everything_and_records_why(hub_dsn: str) -> None:
    seed_products(hub_dsn, 50)
    compute_channel_offers(hub_dsn, GUARDED, RULE, RUN)
    before = scalar(hub_dsn, "SELECT md5(string_agg(row_hash, ',' ORDER BY sku)) FROM hub.channel_offer")
    outbox_before = scalar(hub_dsn, "SELECT count(*) FROM hub.outbox")
    set_cost(hub_dsn, [f"SKU-{i:05d}" for i in range(6)], "2")  # 12 % of the offers move by ~100 %

    with pytest.raises(BreakerTripped, match=r"price_moves: 12% > limit 10%.*6 of 50 offers of channel 'allegro'"):
        compute_channel_offers(hub_dsn, GUARDED, RULE, RUN)
    assert scalar(hub_dsn, "SELECT md5(string_agg(row_hash, ',' ORDER BY sku)) FROM hub.channel_offer") == before
    assert scalar(hub_dsn, "SELECT count(*) FROM hub.outbox") == outbox_before
    with connect(hub_dsn) as conn:
        status, details, tid = conn.execute(
            "SELECT status, details, transfer_id FROM audit.transfer WHERE dataset = 'channel_offer' ORDER BY seq DESC"
        ).fetchone()
        assert conn.execute("SELECT count(*) FROM audit.change WHERE transfer_id = %s", (tid,)).fetchone()[0] == 0
    assert status == "failed"
    assert details["breakers"]["tripped"] == ["price_moves"] and details["breakers"]["outcome"] == "blocked"

    # the operator checked the batch: one run may pass, and the override is in the ledger
    passed = compute_channel_offers(hub_dsn, GUARDED, RULE, RUN, override=Override(by="alice", reason="supplier +100%"))
    assert passed.offers_changed == 6
    details = scalar(hub_dsn, "SELECT details FROM audit.transfer WHERE transfer_id = %s", passed.transfer_id)
    assert details["breakers"]["outcome"] == "overridden"
    assert details["breakers"]["override"] == {"by": "alice", "reason": "supplier +100%"}


def test_breaker_share_counts_offers_added_by_incremental_runs(hub_dsn: str) -> None:
    """The channel's offer count is kept in hub.pricing_state, not rescanned: it must follow new offers."""
    seed_products(hub_dsn, 200)
    compute_channel_offers(hub_dsn, GUARDED, RULE, RUN)
    with connect(hub_dsn) as conn:
        conn.execute(
            "INSERT INTO hub.product (sku, name, purchase_price, currency, vat_rate, active, row_hash, transfer_id) "
            "SELECT 'NEW-' || i, 'new', 10, 'PLN', 0.23, true, 'h', gen_random_uuid() FROM generate_series(1, 20) AS i"
        )
    added = compute_channel_offers(hub_dsn, GUARDED, RULE, RUN)
    assert (added.mode, added.offers_changed) == ("incremental", 20)
    stored = scalar(hub_dsn, "SELECT offer_count FROM hub.pricing_state WHERE channel = 'allegro'")
    assert stored == scalar(hub_dsn, "SELECT count(*) FROM hub.channel_offer WHERE channel = 'allegro'") == 220

    set_cost(hub_dsn, [f"SKU-{i:05d}" for i in range(23)], "2")  # 23 of 220 = 10.45 % > 10 %
    with pytest.raises(BreakerTripped, match=r"price_moves: 10\.45% > limit 10%.*23 of 220 offers"):
        compute_channel_offers(hub_dsn, GUARDED, RULE, RUN)
    full = compute_channel_offers(hub_dsn, GUARDED, RULE, RUN, full=True, override=Override(by="t", reason="test"))
    assert full.offers_changed == 23
    assert scalar(hub_dsn, "SELECT offer_count FROM hub.pricing_state WHERE channel = 'allegro'") == 220


def test_stockout_breaker(hub_dsn: str) -> None:
    seed_products(hub_dsn, 50)
    compute_channel_offers(hub_dsn, GUARDED, RULE, RUN)
    with connect(hub_dsn) as conn:
        conn.execute("UPDATE hub.stock SET quantity = 0, reserved = 0")
    live = scalar(hub_dsn, "SELECT count(*) FROM hub.channel_offer WHERE quantity > 0")
    with pytest.raises(BreakerTripped, match=rf"stockouts: {live} offers > limit 3 offers"):
        compute_channel_offers(hub_dsn, GUARDED, RULE, RUN)
    assert scalar(hub_dsn, "SELECT count(*) FROM hub.channel_offer WHERE quantity > 0") == live


# ---------------------------------------------------------------- change cap + approval
CAPPED = channel(change_cap=ChangeCap(move_pct=D(15), max_count=2, max_share_pct=D(50)))
BIG = [f"SKU-{i:05d}" for i in (1, 2, 3, 4, 5)]


def _hold_five(dsn: str) -> tuple[str, dict[str, Decimal]]:
    """30 offers, then 5 large moves (held: cap is 2) and one small; return the proposal and the live prices."""
    seed_products(dsn, 30)
    compute_channel_offers(dsn, CAPPED, RULE, RUN)
    live = _prices(dsn, BIG)
    set_cost(dsn, BIG, "1.5")
    set_cost(dsn, ["SKU-00010"], "1.04")  # a small move goes through
    with connect(dsn) as conn:
        conn.execute("UPDATE hub.stock SET quantity = quantity + 3 WHERE sku = 'SKU-00001'")
    result = compute_channel_offers(dsn, CAPPED, RULE, RUN)
    assert result.held == 5 and result.proposal_id is not None
    return result.proposal_id, live


def _prices(dsn: str, skus: list[str]) -> dict[str, Decimal]:
    with connect(dsn) as conn:
        return dict(conn.execute("SELECT sku, price FROM hub.channel_offer WHERE sku = ANY(%s)", (skus,)).fetchall())


def test_cap_holds_large_moves_and_approval_publishes_them(hub_dsn: str, tmp_path: Path) -> None:
    proposal, live = _hold_five(hub_dsn)
    assert _prices(hub_dsn, BIG) == live  # held: the live prices stay
    with connect(hub_dsn) as conn:
        price_rows = conn.execute(
            "SELECT sku FROM hub.outbox WHERE field = 'price' AND status = 'pending' AND offer_version > 1"
        ).fetchall()
        qty = conn.execute(
            "SELECT count(*) FROM hub.outbox WHERE sku = 'SKU-00001' AND field = 'quantity' AND offer_version = 2"
        ).fetchone()[0]
    assert price_rows == [("SKU-00010",)]  # only the small move is published now
    assert qty == 1  # the held SKU's stock still goes out

    # re-running without input changes proposes nothing new and loses nothing
    again = compute_channel_offers(hub_dsn, CAPPED, RULE, RUN, full=True)
    assert (again.held, again.proposal_id, again.offers_changed) == (5, None, 0)

    summary = pending_summary(hub_dsn, tmp_path)
    assert summary is not None and summary.items == 5 and summary.proposal_ids == [proposal]
    csv_lines = Path(summary.csv_path).read_text(encoding="utf-8").splitlines()
    assert len(csv_lines) == 6 and csv_lines[0].startswith("proposal_id,channel,sku")
    assert "SKU-0000" in summary.markdown() and summary.csv_path in summary.markdown()

    at = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    answer = ApprovalAnswer.from_hitl(
        {"chosen_options": ["Approve"], "responded_by_user": {"id": "7", "name": "bob"}, "responded_at": at},
        summary.proposal_ids,
    )
    [decision] = apply_approval(hub_dsn, answer, RUN)
    assert (decision.decision, decision.applied, decision.stale) == ("approved", 5, 0)
    assert _prices(hub_dsn, BIG) != live
    with connect(hub_dsn) as conn:
        details = conn.execute(
            "SELECT details FROM audit.transfer WHERE transfer_id = %s", (decision.transfer_id,)
        ).fetchone()[0]
        audited = conn.execute(
            "SELECT count(*) FROM audit.change WHERE transfer_id = %s AND field = 'price'", (decision.transfer_id,)
        ).fetchone()[0]
        outboxed = conn.execute(
            "SELECT count(*) FROM hub.outbox WHERE field = 'price' AND created_transfer_id = %s",
            (decision.transfer_id,),
        ).fetchone()[0]
        assert conn.execute("SELECT decided_by FROM hub.price_proposal").fetchone()[0] == "bob"
        assert ledger.verify(conn).ok
    assert details["approval"]["decision"] == "approved" and details["approval"]["decided_by"] == "bob"
    assert details["approval"]["decided_at"] == at.isoformat()
    assert audited == outboxed == 5

    # deciding again (a retried task) changes nothing; the rules now agree with what is live
    assert decide_proposal(hub_dsn, proposal, approved=True, by="bob", at=at, run=RUN).decision == "already approved"
    assert compute_channel_offers(hub_dsn, CAPPED, RULE, RUN, full=True).offers_changed == 0
    assert_change_digests(hub_dsn)


def test_rejection_publishes_nothing_held_and_is_not_reproposed(hub_dsn: str, tmp_path: Path) -> None:
    proposal, live = _hold_five(hub_dsn)
    at = datetime(2026, 11, 23, 13, 0, tzinfo=UTC)
    answer = ApprovalAnswer.from_hitl(
        {
            "chosen_options": ["Reject"],
            "responded_by_user": {"id": "8", "name": "carol"},
            "responded_at": at.isoformat(),
        },
        [proposal],
    )
    [decision] = apply_approval(hub_dsn, answer, RUN)
    assert (decision.decision, decision.rejected, decision.applied) == ("rejected", 5, 0)
    assert _prices(hub_dsn, BIG) == live
    assert (
        scalar(
            hub_dsn,
            "SELECT count(*) FROM hub.outbox WHERE field = 'price' AND sku = ANY(%s) AND offer_version > 1",
            BIG,
        )
        == 0
    )
    details = scalar(hub_dsn, "SELECT details FROM audit.transfer WHERE transfer_id = %s", decision.transfer_id)
    assert details["approval"]["decision"] == "rejected" and details["approval"]["decided_by"] == "carol"

    rerun = compute_channel_offers(hub_dsn, CAPPED, RULE, RUN, full=True)
    assert (rerun.held, rerun.proposal_id) == (5, None)  # rejected moves are remembered, not re-proposed
    assert pending_summary(hub_dsn, tmp_path) is None

    set_cost(hub_dsn, ["SKU-00002"], "1.1")  # new inputs: that SKU's move is proposed again
    with connect(hub_dsn) as conn:
        conn.execute(
            "UPDATE hub.product SET purchase_price = purchase_price * 1.4 WHERE sku IN ('SKU-00020', 'SKU-00021')"
        )
    fresh = compute_channel_offers(hub_dsn, CAPPED, RULE, RUN)
    assert fresh.proposal_id is not None
    items = scalar(
        hub_dsn,
        "SELECT array_agg(sku ORDER BY sku) FROM hub.price_proposal_item WHERE proposal_id = %s",
        fresh.proposal_id,
    )
    assert "SKU-00002" in items and "SKU-00001" not in items
    assert_change_digests(hub_dsn)


# ---------------------------------------------------------------- explain
def test_explain_shows_inputs_rule_steps_and_held_state(hub_dsn: str) -> None:
    proposal, _ = _hold_five(hub_dsn)
    config = Config(
        erp=ErpSource(conn_id="erp", query="SELECT 1"),
        suppliers=[],
        channels=[CAPPED],
        rules={"test-rule": RULE},
    )
    with connect(hub_dsn) as conn:
        e = explain_offer(conn, config, "allegro", "SKU-00002")
    assert e["rule"]["id"] == "test-rule" and e["rule"]["level"] == "default"
    assert [s["name"] for s in e["steps"]][:3] == ["ERP cost", "cost used", "cost"]
    assert e["stored_matches_rules"] is False  # the move is held
    assert e["held_moves"][0]["proposal_id"] == proposal and e["held_moves"][0]["status"] == "pending"
    text = format_explanation(e)
    assert "held move:" in text and "rule test-rule v3" in text
    with pytest.raises(CommerceSyncError, match=r"'NOPE' is not in hub\.product"), connect(hub_dsn) as conn:
        explain_offer(conn, config, "allegro", "NOPE")


# ---------------------------------------------------------------- exchange rates
def test_rates_from_config_and_csv_load_idempotently(hub_dsn: str, tmp_path: Path) -> None:
    (tmp_path / "nbp.csv").write_text(
        "currency;quote;rate;valid_on\nEUR;PLN;4,2987;2026-11-20\nUSD;PLN;3,9;2099-01-01\n"
    )
    settings = ExchangeRates(
        source="NBP table A",
        rates=[ExchangeRate(currency="EUR", quote="PLN", rate=D("4.1"), valid_on=date(2026, 1, 2))],
        csv="nbp.csv",
    )
    rates = configured_rates(settings, tmp_path)
    assert len(rates) == 3
    first = load_rates(hub_dsn, rates, RUN)
    assert first.changed == 3 and first.transfer_id is not None
    assert load_rates(hub_dsn, rates, RUN).changed == 0
    assert load_rates(hub_dsn, [], RUN).transfer_id is None
    with connect(hub_dsn) as conn:
        assert effective_rates(conn, "PLN") == {"EUR": D("4.2987"), "PLN": D(1)}  # newest valid; USD not yet valid
    (tmp_path / "bad.csv").write_text("currency,quote,rate,valid_on\nEUR,PLN,abc,2026-01-01\n")
    with pytest.raises(DataError, match=r"bad.csv:2: rate 'abc'"):
        read_rates_csv(tmp_path / "bad.csv", "x")


def test_explain_cli_prints_the_computation(
    hub_dsn: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from commerce_sync.cli import main
    from commerce_sync.config import load_config

    config = load_config()
    allegro = config.channel("allegro")
    seed_products(hub_dsn, 5)
    compute_channel_offers(
        hub_dsn, allegro, config.rule_for(allegro), RUN, setup=PricingSetup(config.rules, tuple(config.rule_overrides))
    )
    monkeypatch.setenv("HUB_DATABASE_URL", hub_dsn)
    assert main(["explain", "--channel", "allegro", "--sku", "SKU-00002"]) == 0
    out = capsys.readouterr().out
    assert "rule allegro-default v1 (channel 'allegro' default rule)" in out
    assert "floor applied:" in out and "stored offer: price" in out
    assert main(["explain", "--channel", "allegro", "--sku", "NOPE"]) == 2  # named error, exit 2
    assert "'NOPE' is not in hub.product" in capsys.readouterr().err
