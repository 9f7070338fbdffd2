"""Exceptions that carry enough context for an operator to act on them."""

from __future__ import annotations


class CommerceSyncError(Exception):
    """Base class for errors raised by commerce_sync."""


class ConfigError(CommerceSyncError):
    """Configuration is invalid: the message names the file, the key and the problem."""


class DataError(CommerceSyncError):
    """The input data is unusable as a whole (not retryable: fixing the data is needed)."""


class DatabaseDataError(DataError):
    """The database refused a value (SQLSTATE class 22 data exception or 23 integrity violation).

    Retrying the same statement on the same data fails the same way, so this is never transient.
    """

    def __init__(self, sqlstate: str, message: str) -> None:
        self.sqlstate = sqlstate
        super().__init__(f"the database refused the data (SQLSTATE {sqlstate}): {message}")


class FeedError(DataError):
    """A supplier feed could not be read or parsed; names the supplier and the location."""

    def __init__(self, supplier: str, location: str, problem: str) -> None:
        self.supplier = supplier
        self.location = location
        self.problem = problem
        super().__init__(f"supplier {supplier!r}: feed {location} rejected: {problem}")


class BreakerTripped(DataError):
    """A batch circuit breaker tripped: the batch as a whole looks wrong and was not applied."""

    def __init__(self, dataset: str, source: str, tripped: list[str]) -> None:
        self.dataset = dataset
        self.source = source
        self.tripped = tripped
        super().__init__(
            f"circuit breaker tripped for {dataset} from {source}; the batch was not applied and the last good "
            "state stays live: " + "; ".join(tripped)
        )


class TransientError(CommerceSyncError):
    """A network or service fault that may go away on retry."""


class ChannelError(CommerceSyncError):
    """A channel refused or failed a request."""
