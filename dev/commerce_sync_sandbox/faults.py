"""Switchable faults shared by the marketplace simulators: what production APIs do on a bad day.

Each simulator owns one :class:`Faults`; tests (or ``POST /_sandbox/faults`` with a JSON body of
the same names) arm them:

* ``throttle``: the next N API requests answer 429 with ``Retry-After`` in seconds or as an HTTP-date;
* ``outage``: the next N API requests answer 503 (a 5xx burst);
* ``drop_after_apply``: the next N writes are applied, then the connection is closed without an answer;
* ``slow``: every API request waits this many seconds before answering;
* ``reject``: SKUs whose item-level changes are refused with a per-item error;
* ``duplicate_events``: order event pages carry every event twice (Allegro delivers events at least once);
* ``shuffle_events``: order event pages come out of order (ids and ``occurredAt`` not ascending);
* ``sparse_orders``: order searches leave out what a reader must then fetch per order (eBay getOrders
  without ``cancelStatus``, Amazon searchOrders without ``fulfillment``).

Counters record what fired, so tests can assert that a fault really happened.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any, Literal

RetryAfterForm = Literal["seconds", "date"]


@dataclass
class Faults:
    """Armed faults and what fired; thread-safe."""

    throttle: int = 0
    retry_after: float = 1.0
    retry_after_form: RetryAfterForm = "seconds"
    outage: int = 0
    drop_after_apply: int = 0
    slow: float = 0.0
    reject: dict[str, str] = field(default_factory=dict)
    duplicate_events: bool = False
    shuffle_events: bool = False
    sparse_orders: bool = False
    fired: dict[str, int] = field(default_factory=lambda: {"throttle": 0, "outage": 0, "drop": 0, "reject": 0})
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def arm(self, **settings: Any) -> None:
        """Set faults by name (``reject`` takes a list of SKUs or a {sku: message} mapping)."""
        with self._lock:
            for name, value in settings.items():
                if name == "reject":
                    value = (
                        dict(value)
                        if isinstance(value, dict)
                        else {sku: "rejected by the marketplace" for sku in value}
                    )
                if name.startswith("_") or name == "fired" or not hasattr(self, name):
                    raise ValueError(f"unknown fault {name!r}")
                setattr(self, name, value)

    def clear(self) -> None:
        """Disarm everything (counters stay)."""
        self.arm(
            throttle=0,
            outage=0,
            drop_after_apply=0,
            slow=0.0,
            reject={},
            duplicate_events=False,
            shuffle_events=False,
            sparse_orders=False,
        )

    def before_request(self) -> tuple[int, dict[str, str]] | None:
        """An error answer (status, headers) to give instead of handling the request, or None."""
        if self.slow:
            time.sleep(self.slow)
        with self._lock:
            if self.throttle > 0:
                self.throttle -= 1
                self.fired["throttle"] += 1
                if self.retry_after_form == "date":
                    # HTTP-dates have whole seconds: round up so the client never comes back early.
                    when = datetime.now(UTC) + timedelta(seconds=self.retry_after + 1)
                    return 429, {"Retry-After": format_datetime(when, usegmt=True)}
                return 429, {"Retry-After": str(max(int(self.retry_after), 0))}
            if self.outage > 0:
                self.outage -= 1
                self.fired["outage"] += 1
                return 503, {}
        return None

    def drop_now(self) -> bool:
        """True if this applied write must lose its answer."""
        with self._lock:
            if self.drop_after_apply > 0:
                self.drop_after_apply -= 1
                self.fired["drop"] += 1
                return True
        return False

    def rejection(self, sku: str | None) -> str | None:
        """The per-item error for ``sku``, if it is to be refused."""
        if sku is None:
            return None
        with self._lock:
            message = self.reject.get(sku)
            if message is not None:
                self.fired["reject"] += 1
            return message

    def snapshot(self) -> dict[str, Any]:
        """Armed faults and counters, for ``GET /_sandbox/faults``."""
        with self._lock:
            return {
                "throttle": self.throttle,
                "retry_after": self.retry_after,
                "retry_after_form": self.retry_after_form,
                "outage": self.outage,
                "drop_after_apply": self.drop_after_apply,
                "slow": self.slow,
                "reject": dict(self.reject),
                "duplicate_events": self.duplicate_events,
                "shuffle_events": self.shuffle_events,
                "sparse_orders": self.sparse_orders,
                "fired": dict(self.fired),
            }
