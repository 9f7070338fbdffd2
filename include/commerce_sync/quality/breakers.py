"""Batch circuit breakers: measures of a whole batch compared with limits, and the decision.

A breaker protects what is live: when a batch looks wrong as a whole (row count collapsed, too
many rejected rows, a mass price jump, many offers going to stock 0 at once) the task fails
without retry, nothing of the batch is merged or published, and the decision is written to the
ledger. An operator who has checked the batch can let it through for one run with the DAG Param
``override_breakers`` (the override, who triggered the run and the reason are in the ledger).

Usage, inside ``ledger.recording(dsn, transfer)`` and before anything is written::

    decision = breakers.decide("supplier_offer", "supplier:acme", measures, override)
    decision.record(transfer)          # always: the numbers go to the ledger row's details
    decision.enforce()                 # raises BreakerTripped unless nothing tripped or overridden
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from commerce_sync.audit.ledger import Transfer
from commerce_sync.errors import BreakerTripped

OVERRIDE_PARAM = "override_breakers"
OVERRIDE_REASON_PARAM = "override_reason"


@dataclass(frozen=True)
class Override:
    """An operator's one-run permission to let tripped breakers through."""

    by: str
    reason: str = ""


@dataclass(frozen=True)
class Measure:
    """One breaker: what was observed in the batch against the configured limit.

    ``observed > limit`` trips it. ``detail`` says what was compared, e.g.
    "1,200 rows now vs 3,000 in the last good batch (transfer 9f…)".
    """

    name: str
    observed: float
    limit: float
    unit: str
    detail: str

    @property
    def tripped(self) -> bool:
        return self.observed > self.limit

    def describe(self) -> str:
        return f"{self.name}: {self.observed:g}{self.unit} > limit {self.limit:g}{self.unit} ({self.detail})"


@dataclass(frozen=True)
class Decision:
    """The outcome of a batch's breakers."""

    dataset: str
    source: str
    measures: tuple[Measure, ...]
    override: Override | None

    @property
    def tripped(self) -> tuple[Measure, ...]:
        return tuple(m for m in self.measures if m.tripped)

    @property
    def blocked(self) -> bool:
        return bool(self.tripped) and self.override is None

    def ledger_details(self) -> dict[str, Any]:
        return {
            "measures": [{**asdict(m), "tripped": m.tripped} for m in self.measures],
            "tripped": [m.name for m in self.tripped],
            "outcome": "blocked" if self.blocked else ("overridden" if self.tripped else "passed"),
            "override": asdict(self.override) if self.override and self.tripped else None,
        }

    def record(self, transfer: Transfer) -> None:
        """Put the decision into the transfer's ledger details (key ``breakers``)."""
        transfer.details["breakers"] = self.ledger_details()

    def enforce(self) -> None:
        """Raise :class:`BreakerTripped` if a breaker tripped and no override was given."""
        if self.blocked:
            raise BreakerTripped(self.dataset, self.source, [m.describe() for m in self.tripped])


def decide(dataset: str, source: str, measures: Sequence[Measure], override: Override | None) -> Decision:
    """Evaluate ``measures`` for one batch of ``dataset`` from ``source``."""
    return Decision(dataset, source, tuple(measures), override)
