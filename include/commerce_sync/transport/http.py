"""The shared HTTP plumbing of channel clients and the ERP REST reader: base URL, timeouts, retries,
errors, auth hooks. A transport module: it imports only kernel modules, so sources and channels both use it.

A concrete client declares its ``channel`` name and, if it authenticates, overrides
:meth:`HttpClient._auth_headers` and :meth:`HttpClient._refresh_auth`. Every client owns a
:class:`TokenBucket` (the channel's request rate limit; waits, never fails) and a
:class:`CircuitBreaker` (opens after sustained 5xx/network failures, then fails fast with
:class:`CircuitOpenError` until a half-open probe succeeds). Both take an injectable clock so
their behaviour is tested without sleeping. Retry policy (see
REFERENCE.md): connection errors, timeouts, 429 and 5xx are retried with capped exponential
backoff and full jitter, honouring ``Retry-After`` (seconds or an HTTP-date); other 4xx answers
are never retried. Exhausted retries raise :class:`~commerce_sync.errors.TransientError`, a
refusal raises :class:`ChannelRequestError`. Messages name the channel, method, path (without the
query string), status and the service's own error text, and never a credential.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import requests

from commerce_sync.errors import ChannelError, TransientError
from commerce_sync.retry import retry_after_seconds

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
DEFAULT_TIMEOUT = (5.0, 60.0)  # (connect, read) seconds


def settle_environment(session: requests.Session) -> None:
    """Read once what requests would otherwise look up in the environment before every request.

    With ``trust_env`` requests re-reads every proxy variable (and ``~/.netrc``) per request: ~0.5 of the
    ~1.5 ms a loopback call costs here. When no proxy variable, ``NETRC`` or ``.netrc`` is present, the
    only thing it can find is a CA bundle (``REQUESTS_CA_BUNDLE``, then ``CURL_CA_BUNDLE``): that is set
    on the session now and the per-request look-up is switched off. Otherwise nothing changes.
    """
    if urllib.request.getproxies() or os.environ.get("NETRC"):
        return
    if (Path.home() / ".netrc").exists() or (Path.home() / "_netrc").exists():
        return
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle and session.verify is True:
        session.verify = bundle
    session.trust_env = False


class CircuitOpenError(TransientError):
    """The channel failed repeatedly; requests fail fast until the breaker's cool-down ends."""


Clock = Callable[[], float]


class TokenBucket:
    """A token bucket: ``rate`` requests per ``per`` seconds, bursts up to ``capacity``.

    :meth:`acquire` waits (with the injected ``sleep``) until a token is free, so a client never
    exceeds the channel's limit (Allegro: 9,000 requests/min per client id; Amazon
    ``createFeed``: 5 per 5 minutes). Thread-safe.

    Args:
        rate: tokens added per ``per`` seconds.
        per: the period in seconds.
        capacity: most tokens held (the burst); default ``rate``.
        clock: monotonic clock in seconds.
        sleep: how to wait.
    """

    def __init__(
        self,
        rate: float,
        per: float,
        capacity: float | None = None,
        *,
        clock: Clock = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0 or per <= 0:
            raise ValueError("rate and per must be positive")
        self.rate = rate
        self.per = per
        self.capacity = float(capacity if capacity is not None else rate)
        if self.capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.clock = clock
        self.sleep = sleep
        self._tokens = self.capacity
        self._stamp = clock()
        self._lock = threading.Lock()
        self.waited = 0.0
        """Total seconds spent waiting for tokens (reported in logs and the ledger)."""

    def __repr__(self) -> str:
        return f"TokenBucket(rate={self.rate:g}/{self.per:g}s, capacity={self.capacity:g})"

    def _refill(self) -> None:
        now = self.clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate / self.per)
        self._stamp = now

    def delay(self, tokens: float = 1.0) -> float:
        """Seconds until ``tokens`` are available (0 if they are now)."""
        with self._lock:
            self._refill()
            missing = tokens - self._tokens
            return 0.0 if missing <= 0 else missing * self.per / self.rate

    def acquire(self, tokens: float = 1.0) -> float:
        """Take ``tokens``, waiting as long as needed; return the seconds waited."""
        if tokens > self.capacity:
            raise ValueError(f"cannot take {tokens} tokens from a bucket of {self.capacity:g}")
        waited = 0.0
        while True:
            with self._lock:
                self._refill()
                # The tolerance absorbs float rounding of the refill, which could otherwise
                # leave a bucket 1e-12 tokens short forever.
                if self._tokens >= tokens - 1e-6:
                    self._tokens = max(0.0, self._tokens - tokens)
                    self.waited += waited
                    return waited
                wait = (tokens - self._tokens) * self.per / self.rate
            self.sleep(wait)
            waited += wait


BreakerState = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    """Stops hammering a channel that is down, and notices when it is back.

    Closed: requests pass; ``failure_threshold`` consecutive failures (5xx or network errors, not
    4xx or 429) open it. Open: requests fail fast with :class:`CircuitOpenError` for
    ``reset_timeout`` seconds. Then half-open: one probe request passes; success closes the
    breaker, failure opens it again for another ``reset_timeout``.

    Args:
        channel: channel name for messages.
        failure_threshold: consecutive failures that open the breaker.
        reset_timeout: seconds the breaker stays open before a probe.
        clock: monotonic clock in seconds.
    """

    def __init__(
        self,
        channel: str,
        failure_threshold: int = 5,
        reset_timeout: float = 30.0,
        *,
        clock: Clock = time.monotonic,
    ) -> None:
        if failure_threshold < 1 or reset_timeout <= 0:
            raise ValueError("failure_threshold must be >= 1 and reset_timeout > 0")
        self.channel = channel
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self.clock = clock
        self._state: BreakerState = "closed"
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False
        self._lock = threading.Lock()
        self.opened = 0
        """How often the breaker opened (reported in the ledger)."""

    def __repr__(self) -> str:
        return f"CircuitBreaker(channel={self.channel!r}, state={self.state!r})"

    @property
    def state(self) -> BreakerState:
        """The current state (an open breaker past its cool-down reads as half-open)."""
        with self._lock:
            if self._state == "open" and self.clock() - self._opened_at >= self.reset_timeout:
                return "half_open"
            return self._state

    def before_request(self, what: str) -> None:
        """Let a request through, or raise :class:`CircuitOpenError` while the breaker is open."""
        with self._lock:
            if self._state == "closed":
                return
            remaining = self.reset_timeout - (self.clock() - self._opened_at)
            if self._state == "open" and remaining <= 0:
                self._state = "half_open"
                self._probing = False
            if self._state == "half_open" and not self._probing:
                self._probing = True  # exactly one probe at a time
                log.info("%s: circuit half-open; probing with %s", self.channel, what)
                return
            raise CircuitOpenError(
                f"{self.channel}: circuit open after {self._failures} consecutive failures; {what} not sent. "
                f"Next probe in {max(remaining, 0):.0f}s; pending work stays queued and is sent after recovery"
            )

    def record_success(self) -> None:
        """A request got an answer that is not a server failure: close the breaker."""
        with self._lock:
            if self._state != "closed":
                log.info("%s: circuit closed (channel answers again)", self.channel)
            self._state = "closed"
            self._failures = 0
            self._probing = False

    def record_failure(self) -> None:
        """A request failed with 5xx or a network error."""
        with self._lock:
            self._failures += 1
            if self._state == "half_open" or (self._state == "closed" and self._failures >= self.failure_threshold):
                if self._state == "closed":
                    self.opened += 1
                    log.warning(
                        "%s: circuit opened after %d consecutive failures; failing fast for %.0fs",
                        self.channel,
                        self._failures,
                        self.reset_timeout,
                    )
                self._state = "open"
                self._opened_at = self.clock()
                self._probing = False


class ChannelRequestError(ChannelError):
    """A channel refused a request (a 4xx answer that retrying cannot fix)."""

    def __init__(self, channel: str, method: str, path: str, status: int, problem: str) -> None:
        self.channel = channel
        self.method = method
        self.path = path
        self.status = status
        self.problem = problem
        super().__init__(f"{channel}: {method} {path} answered {status}: {problem}")


def encode_json(document: Any) -> bytes:
    """Canonical JSON bytes (sorted keys, no spaces): what is sent is what is hashed."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def error_text(response: requests.Response) -> str:
    """The service's own error message from a response body, shortened."""
    try:
        document = response.json()
    except ValueError:
        return (response.text or response.reason or "").strip()[:300] or "(no body)"
    if isinstance(document, dict):
        errors = document.get("errors")
        if isinstance(errors, list) and errors:
            parts = []
            for error in errors[:5]:
                if isinstance(error, dict):
                    where = f" at {error['path']}" if error.get("path") else ""
                    text = error.get("userMessage") or error.get("message") or error.get("code")
                    parts.append(f"{error.get('code', 'ERROR')}: {text}{where}")
            return "; ".join(parts)[:500]
        if "error" in document:  # OAuth 2.0 error document
            return f"{document['error']}: {document.get('error_description', '')}".strip(": ")[:300]
    return json.dumps(document)[:300]


class HttpClient:
    """A ``requests`` session bound to one base URL with retries, timeouts and auth hooks.

    Args:
        base_url: scheme, host and optional port (and path prefix) of the API.
        timeout: (connect, read) timeout in seconds.
        max_attempts: attempts per request, including the first.
        backoff_base: first backoff in seconds, doubled per attempt.
        backoff_cap: longest single wait in seconds, also the cap for ``Retry-After``.
        session: a session to use (a new one by default).
        rate_limiter: the request bucket; default from :attr:`requests_per_period` (none if unset).
        breaker: the circuit breaker; default opens after 5 failures for 30 s.
    """

    channel = "http"
    requests_per_period: tuple[float, float] | None = None
    """(requests, seconds) the channel allows per client, e.g. (9000, 60) for Allegro."""
    auth_failure_statuses: frozenset[int] = frozenset({401})
    """Statuses meaning "credentials not accepted": one retry with fresh ones (SP-API also answers 403)."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
        max_attempts: int = 5,
        backoff_base: float = 0.5,
        backoff_cap: float = 60.0,
        session: requests.Session | None = None,
        rate_limiter: TokenBucket | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.session = session or requests.Session()
        self.session.headers["User-Agent"] = "commerce-sync/0.1"
        if session is None:
            settle_environment(self.session)
        self.sleep: Callable[[float], None] = time.sleep
        if rate_limiter is None and self.requests_per_period is not None:
            rate_limiter = TokenBucket(*self.requests_per_period)
        self.rate_limiter = rate_limiter
        self.breaker = breaker or CircuitBreaker(self.channel)
        self.retries = 0
        """Requests sent again after a network error, 429 or 5xx (reported in the ledger)."""
        self.throttled = 0
        """429 answers received."""
        self.retry_after: float | None = None
        """The ``Retry-After`` (seconds) of the last retryable answer that carried one; None otherwise
        (a caller that stops after its retries, e.g. the order doorbell's probe, waits at least this)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(channel={self.channel!r}, base_url={self.base_url!r})"

    def close(self) -> None:
        """Close the pooled connections."""
        self.session.close()

    # ------------------------------------------------------------------ hooks
    def _auth_headers(self) -> dict[str, str]:
        """Headers that authenticate a request (none by default)."""
        return {}

    def _refresh_auth(self) -> bool:
        """Drop cached credentials after a 401; True if a retry with fresh ones makes sense."""
        return False

    # ------------------------------------------------------------------ requests
    def url(self, path: str) -> str:
        """Absolute URL for ``path`` (absolute URLs pass through)."""
        if "://" in path:
            return path
        return self.base_url + ("" if path.startswith("/") else "/") + path

    def backoff(self, attempt: int, response: requests.Response | None) -> float:
        """Seconds to wait before attempt ``attempt + 1``."""
        if response is not None:
            hinted = retry_after_seconds(response.headers.get("Retry-After"))
            if hinted is not None:
                return min(hinted, self.backoff_cap)
        ceiling = min(self.backoff_cap, self.backoff_base * 2 ** (attempt - 1))
        # Full jitter spreads the retries of many workers hit by the same outage.
        return random.uniform(0, ceiling)  # noqa: S311 - jitter, not crypto

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        authenticate: bool = True,
    ) -> requests.Response:
        """Send a request with retries; return the 2xx/3xx response or raise.

        Args:
            method: HTTP method.
            path: path below the base URL, or an absolute URL.
            params: query parameters.
            json_body: a document sent as canonical JSON (see :func:`encode_json`).
            body: raw bytes to send instead.
            headers: extra headers.
            auth: HTTP Basic credentials for this request.
            authenticate: add the client's auth headers (off for the token request itself).

        Raises:
            TransientError: retries exhausted on network errors, 429 or 5xx.
            ChannelRequestError: the service refused the request (4xx).
        """
        data = encode_json(json_body) if json_body is not None else body
        shown_path = path.split("?", 1)[0]
        refreshed = False
        attempt = 0
        while True:
            attempt += 1
            merged = dict(headers or {})
            if authenticate:
                merged.update(self._auth_headers())
            response: requests.Response | None = None
            problem: str
            self.breaker.before_request(f"{method} {shown_path}")
            if self.rate_limiter is not None:
                self.rate_limiter.acquire()
            try:
                response = self.session.request(
                    method,
                    self.url(path),
                    params=params,
                    data=data,
                    headers=merged,
                    auth=auth,
                    timeout=self.timeout,
                )
            except (requests.ConnectionError, requests.Timeout) as exc:
                problem = f"{type(exc).__name__}"
                self.breaker.record_failure()
            else:
                status = response.status_code
                if status >= 500:
                    self.breaker.record_failure()
                else:
                    self.breaker.record_success()
                if status < 400:
                    return response
                if status in self.auth_failure_statuses and authenticate and not refreshed and self._refresh_auth():
                    # One retry with a fresh token: it may simply have expired.
                    refreshed = True
                    attempt -= 1
                    continue
                if status not in RETRY_STATUSES:
                    raise ChannelRequestError(self.channel, method, shown_path, status, error_text(response))
                problem = f"status {status}: {error_text(response)}"
                self.throttled += status == 429
                self.retry_after = retry_after_seconds(response.headers.get("Retry-After"))
            if attempt >= self.max_attempts:
                raise TransientError(
                    f"{self.channel}: {method} {shown_path} failed after {attempt} attempts; last: {problem}"
                )
            wait = self.backoff(attempt, response)
            self.retries += 1
            log.warning(
                "%s: %s %s attempt %d/%d failed (%s); retrying in %.1fs",
                self.channel,
                method,
                shown_path,
                attempt,
                self.max_attempts,
                problem,
                wait,
            )
            self.sleep(wait)


class OAuthClient(HttpClient):
    """An :class:`HttpClient` holding an OAuth 2.0 access token: fetched lazily, refreshed a margin
    before it expires and after a 401, sent as ``auth_header: auth_scheme + token``.

    Subclasses implement :meth:`_request_token` (the grant: client credentials, refresh token, LWA)
    and keep their secrets in name-mangled attributes; the token itself lives here, in one
    name-mangled attribute that no repr, log line, error message or return value includes.
    """

    auth_header = "Authorization"
    auth_scheme = "Bearer "
    token_margin = 60.0
    """Seconds before expiry at which the token is renewed, so no request carries a dying token."""

    def __init__(self, base_url: str, **options: Any) -> None:
        super().__init__(base_url, **options)
        self.__token: str | None = None
        self._token_expires = 0.0

    def _request_token(self) -> requests.Response:
        """Ask the token endpoint for a new access token (with ``authenticate=False``)."""
        raise NotImplementedError

    def _token(self) -> str:
        if self.__token is None or time.monotonic() >= self._token_expires:
            document = self._request_token().json()
            token = document.get("access_token") if isinstance(document, dict) else None
            if not isinstance(token, str) or not token:
                raise ChannelError(
                    f"{self.channel}: the token endpoint returned no access_token; check the connection's credentials"
                )
            lifetime = float(document.get("expires_in") or 3600)
            self.__token = token
            self._token_expires = time.monotonic() + max(lifetime - self.token_margin, lifetime / 2)
        return self.__token

    def _auth_headers(self) -> dict[str, str]:
        return {self.auth_header: self.auth_scheme + self._token()}

    def _refresh_auth(self) -> bool:
        self.__token = None
        return True
