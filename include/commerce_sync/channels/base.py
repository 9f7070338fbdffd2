"""The shared HTTP plumbing of channel clients: base URL, timeouts, retries, errors, auth hooks.

A concrete client declares its ``channel`` name and, if it authenticates, overrides
:meth:`HttpClient._auth_headers` and :meth:`HttpClient._refresh_auth`. Retry policy (see
REFERENCE.md): connection errors, timeouts, 429 and 5xx are retried with capped exponential
backoff and full jitter, honouring ``Retry-After`` (seconds or an HTTP-date); other 4xx answers
are never retried. Exhausted retries raise :class:`~commerce_sync.errors.TransientError`, a
refusal raises :class:`ChannelRequestError`. Messages name the channel, method, path (without the
query string), status and the service's own error text, and never a credential.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

import requests

from commerce_sync.errors import ChannelError, TransientError
from commerce_sync.retry import retry_after_seconds

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
DEFAULT_TIMEOUT = (5.0, 60.0)  # (connect, read) seconds


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
    """

    channel = "http"

    def __init__(
        self,
        base_url: str,
        *,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
        max_attempts: int = 5,
        backoff_base: float = 0.5,
        backoff_cap: float = 60.0,
        session: requests.Session | None = None,
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
        self.sleep: Callable[[float], None] = time.sleep

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
            else:
                status = response.status_code
                if status < 400:
                    return response
                if status == 401 and authenticate and not refreshed and self._refresh_auth():
                    # One retry with a fresh token: it may simply have expired.
                    refreshed = True
                    attempt -= 1
                    continue
                if status not in RETRY_STATUSES:
                    raise ChannelRequestError(self.channel, method, shown_path, status, error_text(response))
                problem = f"status {status}: {error_text(response)}"
            if attempt >= self.max_attempts:
                raise TransientError(
                    f"{self.channel}: {method} {shown_path} failed after {attempt} attempts; last: {problem}"
                )
            wait = self.backoff(attempt, response)
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
