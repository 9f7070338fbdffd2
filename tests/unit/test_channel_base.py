"""Rate limiting and circuit breaking of channel clients, driven by a fake clock (no sleeping)."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from commerce_sync.transport.http import (
    CircuitBreaker,
    CircuitOpenError,
    HttpClient,
    TokenBucket,
    settle_environment,
)


class FakeClock:
    """A monotonic clock that only moves when something sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_bucket_allows_a_burst_then_paces_requests() -> None:
    clock = FakeClock()
    bucket = TokenBucket(9000, 60, clock=clock, sleep=clock.sleep)
    for _ in range(9000):
        assert bucket.acquire() == 0.0
    assert clock.slept == []
    waited = bucket.acquire()
    assert waited == pytest.approx(60 / 9000)
    assert bucket.waited == pytest.approx(60 / 9000)


def test_bucket_amazon_feed_submissions_five_per_five_minutes() -> None:
    clock = FakeClock()
    bucket = TokenBucket(5, 300, clock=clock, sleep=clock.sleep)
    start = clock.now
    for _ in range(5):
        bucket.acquire()
    bucket.acquire()
    assert clock.now - start == pytest.approx(60.0)  # one token per 60 s after the burst
    assert bucket.delay() == pytest.approx(60.0)
    clock.now += 600
    assert bucket.delay() == 0.0  # refill is capped at the capacity
    for _ in range(5):
        assert bucket.acquire() == 0.0
    assert bucket.acquire() == pytest.approx(60.0)


@pytest.mark.parametrize(("rate", "per", "capacity"), [(0, 1, None), (1, 0, None), (1, 1, 0.5)])
def test_bucket_rejects_nonsense(rate: float, per: float, capacity: float | None) -> None:
    with pytest.raises(ValueError, match="must be"):
        TokenBucket(rate, per, capacity)


def test_breaker_opens_on_sustained_failures_fails_fast_probes_and_closes() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("ebay", failure_threshold=3, reset_timeout=30, clock=clock)
    for _ in range(2):
        breaker.before_request("POST /x")
        breaker.record_failure()
    assert breaker.state == "closed"
    breaker.before_request("POST /x")
    breaker.record_failure()
    assert breaker.state == "open"
    assert breaker.opened == 1
    with pytest.raises(CircuitOpenError, match=r"ebay: circuit open after 3 consecutive failures; POST /x not sent"):
        breaker.before_request("POST /x")
    clock.now += 30
    assert breaker.state == "half_open"
    breaker.before_request("probe")  # the one probe passes
    with pytest.raises(CircuitOpenError):
        breaker.before_request("second request while probing")
    breaker.record_failure()  # the probe failed: open again for a full cool-down
    assert breaker.state == "open"
    clock.now += 29
    with pytest.raises(CircuitOpenError):
        breaker.before_request("POST /x")
    clock.now += 1
    breaker.before_request("probe")
    breaker.record_success()
    assert breaker.state == "closed"
    breaker.before_request("POST /x")
    assert breaker.opened == 1


def test_breaker_success_resets_the_failure_count() -> None:
    breaker = CircuitBreaker("allegro", failure_threshold=2, clock=FakeClock())
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    assert breaker.state == "closed"


def test_client_fails_fast_while_open_without_touching_the_network() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("http", failure_threshold=1, reset_timeout=10, clock=clock)
    # Port 9 on loopback (discard) is closed: every attempt is a connection error.
    client = HttpClient("http://127.0.0.1:9", max_attempts=5, breaker=breaker, timeout=(0.5, 0.5))
    client.sleep = clock.sleep
    with pytest.raises(CircuitOpenError):
        client.request("GET", "/offers")
    assert clock.slept and len(clock.slept) == 1  # one attempt, one backoff, then the breaker refused
    assert "secret" not in repr(client)
    client.close()


def test_environment_is_read_once_when_only_a_ca_bundle_is_set(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy", "NETRC"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    session = requests.Session()
    settle_environment(session)
    assert session.trust_env is False
    assert session.verify == "/etc/ssl/certs/ca-certificates.crt"


@pytest.mark.parametrize("variable", ["HTTPS_PROXY", "NETRC"])
def test_environment_stays_live_when_a_proxy_or_netrc_is_set(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, variable: str
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv(variable, "http://proxy.invalid:3128" if variable == "HTTPS_PROXY" else str(tmp_path / "n"))
    session = requests.Session()
    settle_environment(session)
    assert session.trust_env is True
    assert session.verify is True
