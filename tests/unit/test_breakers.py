"""The breaker decision: tripped measures block unless overridden; the ledger gets the numbers."""

from __future__ import annotations

import pytest

from commerce_sync.audit.ledger import Transfer
from commerce_sync.errors import BreakerTripped, DataError
from commerce_sync.quality.breakers import Measure, Override, decide

DROP = Measure("row_count_drop_pct", 60.0, 50.0, "%", "1200 rows vs 3000 in the last good batch")
REJECTS = Measure("rejected_pct", 1.0, 5.0, "%", "12 of 1200 rows quarantined")


def test_nothing_tripped_passes() -> None:
    decision = decide("supplier_offer", "supplier:acme", [REJECTS], None)
    decision.enforce()
    assert decision.ledger_details()["outcome"] == "passed"
    assert decision.ledger_details()["override"] is None


def test_tripped_blocks_with_the_numbers() -> None:
    transfer = Transfer(source="supplier:acme", target="hub", dataset="supplier_offer")
    decision = decide("supplier_offer", "supplier:acme", [DROP, REJECTS], None)
    decision.record(transfer)
    with pytest.raises(BreakerTripped) as caught:
        decision.enforce()
    assert isinstance(caught.value, DataError)
    assert "row_count_drop_pct: 60% > limit 50%" in str(caught.value)
    assert "rejected_pct" not in str(caught.value)
    assert transfer.details["breakers"]["tripped"] == ["row_count_drop_pct"]
    assert transfer.details["breakers"]["outcome"] == "blocked"


def test_override_lets_it_through_and_is_recorded() -> None:
    decision = decide("supplier_offer", "supplier:acme", [DROP], Override(by="alice", reason="catalog cut"))
    decision.enforce()
    details = decision.ledger_details()
    assert details["outcome"] == "overridden"
    assert details["override"] == {"by": "alice", "reason": "catalog cut"}


def test_limit_is_inclusive() -> None:
    assert not Measure("m", 50.0, 50.0, "%", "").tripped
