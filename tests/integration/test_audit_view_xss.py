"""The auditor's view never turns hub text into markup: XSS payloads on every page stay text.

Hostile product names, SKUs, quarantine reasons, supplier names, ledger details and channel error
messages (``audit_view_hostile.py``) go into a real PostgreSQL hub. Then every GET route of the app
(read from ``app.routes``, so a new page is covered without editing this test) is requested with
its path parameters filled in, with no query, with each query parameter set to the payloads and
with the queries that show the hostile rows. No HTML response may contain a payload as it was
written, or any tag or event-handler attribute the payloads would create; where a value is shown,
its escaped form must be on the page.
"""

from __future__ import annotations

import html
import uuid
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest

from commerce_sync.errors import ConfigError
from tests.integration.audit_view_hostile import Hostile, fill_hostile
from tests.integration.test_audit_view_api import _token

pytestmark = pytest.mark.integration

PREFIX = "/audit"
# Tags that no page of the view writes itself: finding one means hub text became markup.
FOREIGN_TAGS = {"script", "img", "iframe", "object", "embed", "svg", "math", "base", "meta", "link", "style"}
OWN_HEAD_TAGS = {("meta", "charset"), ("link", "stylesheet")}


class _Markup(HTMLParser):
    """Every start tag of a document and its attributes."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def assert_no_markup_from(text: str, payloads: tuple[str, ...], where: str) -> None:
    """``text`` (an HTML page) holds none of ``payloads`` raw and no tag or handler they could make."""
    for payload in payloads:
        assert payload not in text, f"{where}: raw payload {payload!r} in the page"
    parser = _Markup()
    parser.feed(text)
    parser.close()
    for tag, attrs in parser.tags:
        handlers = [name for name in attrs if name.startswith("on")]
        assert not handlers, f"{where}: <{tag}> carries event handler attributes {handlers}"
        if tag in FOREIGN_TAGS:
            own = (tag, "charset") if "charset" in attrs else (tag, attrs.get("rel") or "")
            assert own in OWN_HEAD_TAGS, f"{where}: a <{tag} {attrs}> tag the view never writes"


def assert_shown_escaped(text: str, values: tuple[str, ...], where: str) -> None:
    """Each of ``values`` is on the page, escaped."""
    for value in values:
        assert html.escape(value, quote=True) in text, f"{where}: {value!r} is not shown (escaped)"


@pytest.fixture(scope="module")
def auth_manager() -> Any:
    """Airflow's auth manager, initialised as the api-server does it."""
    import os

    if "AIRFLOW_HOME" not in os.environ or not os.environ.get("AIRFLOW__API_AUTH__JWT_SECRET"):
        pytest.skip("needs the embedded Airflow home and JWT secret: run through `make test` (scripts/test.sh)")
    from airflow.api_fastapi.app import init_auth_manager

    return init_auth_manager()


@pytest.fixture
def hostile(hub_dsn: str) -> Hostile:
    return fill_hostile(hub_dsn)


@pytest.fixture
def docs_dir(tmp_path: Path, hostile: Hostile) -> Path:
    """A Data Docs directory holding the (hostile-named) site the hostile transfer links to."""
    docs = tmp_path / "data_docs"
    docs.mkdir()
    site = docs / hostile.data_docs
    site.parent.mkdir(parents=True)
    site.write_text("<html><body>GX evidence</body></html>", encoding="utf-8")
    return docs


def _app(hub_dsn: str, docs_dir: Path) -> Any:
    from commerce_sync.audit.view import create_app

    return create_app(dsn=lambda: hub_dsn, data_docs_dir=lambda: docs_dir)


@pytest.fixture
def app(hub_dsn: str, docs_dir: Path) -> Any:
    return _app(hub_dsn, docs_dir)


@pytest.fixture
def client(app: Any, auth_manager: Any) -> Iterator[Any]:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    root = FastAPI()
    root.mount(PREFIX, app)
    with TestClient(root, follow_redirects=False) as test_client:
        test_client.headers["Authorization"] = f"Bearer {_token(auth_manager)}"
        yield test_client


def _get_routes(app: Any) -> list[Any]:
    from fastapi.routing import APIRoute

    routes = [r for r in app.routes if isinstance(r, APIRoute) and "GET" in r.methods]
    assert routes, "the app has no GET routes"
    return routes


def _requests(route: Any, hostile: Hostile) -> list[tuple[str, dict[str, str]]]:
    """Concrete (path, query) requests for ``route``: its path parameters filled in; no query, each
    query parameter set to the payloads, and the queries that show the hostile rows."""
    from fastapi.dependencies.utils import get_flat_dependant

    tail = "".join(hostile.payloads)
    path_values: dict[str, list[str]] = {
        "transfer_id": [str(hostile.transfer_id), str(uuid.uuid4())],
        "path": [quote(hostile.data_docs), quote(tail)],
        "name": ["audit.css", quote(tail)],
    }
    showing: dict[str, list[dict[str, str]]] = {
        "/": [{"source": hostile.source}, {"dag_id": hostile.dag_id, "status": "failed"}],
        "/trace": [{"channel": "allegro", "sku": hostile.sku}],
        "/transfers.csv": [{"source": hostile.source}],
        "/orders": [{"channel": "allegro", "oversold": "1"}],
        "/orders.csv": [{"channel": "allegro"}],
    }
    dependant = get_flat_dependant(route.dependant)
    paths = [route.path]
    for param in dependant.path_params:
        assert param.name in path_values, (
            f"route {route.path}: no test values for path parameter {param.name!r}; add some to _requests"
        )
        paths = [
            p.replace(f"{{{param.name}}}", v).replace(f"{{{param.name}:path}}", v)
            for p in paths
            for v in path_values[param.name]
        ]
    queries: list[dict[str, str]] = [{}]
    names = sorted({param.alias for param in dependant.query_params})
    queries += [{name: tail} for name in names]
    if names:
        queries.append(dict.fromkeys(names, tail))
    queries += showing.get(route.path, [])
    return [(path, query) for path in paths for query in queries]


def test_every_page_escapes_hostile_hub_text(client: Any, app: Any, hostile: Hostile) -> None:
    answered: dict[str, set[int]] = {}
    html_routes: set[str] = set()
    for route in _get_routes(app):
        for path, query in _requests(route, hostile):
            where = f"GET {path} {query}"
            response = client.get(PREFIX + path, params=query)
            answered.setdefault(route.path, set()).add(response.status_code)
            content_type = response.headers.get("content-type", "")
            if content_type.startswith("text/html"):
                html_routes.add(route.path)
                assert_no_markup_from(response.text, hostile.payloads, where)
            else:
                assert content_type.startswith(("text/csv", "application/json", "text/css")), where
                if content_type.startswith("text/csv"):
                    assert response.headers["content-disposition"].startswith("attachment"), where
    never_ok = {path: codes for path, codes in answered.items() if not any(200 <= c < 300 for c in codes)}
    assert not never_ok, f"routes never answered 2xx, so never checked with data: {never_ok}"
    # The pages known today are among those checked (the route listing did not come back short).
    assert {"/", "/transfers/{transfer_id}", "/trace", "/verify", "/orders"} <= html_routes, html_routes


def test_hostile_values_are_shown_escaped(client: Any, hostile: Hostile) -> None:
    listing = client.get(f"{PREFIX}/")
    assert listing.status_code == 200
    assert_shown_escaped(listing.text, hostile.list_texts, "transfers list")
    filtered = client.get(f"{PREFIX}/", params={"source": hostile.source})
    assert "1 transfers, page 1 of 1" in filtered.text
    assert f'<option value="{html.escape(hostile.source)}" selected>' in filtered.text

    page = client.get(f"{PREFIX}/transfers/{hostile.transfer_id}")
    assert page.status_code == 200
    assert_shown_escaped(page.text, hostile.transfer_texts, "transfer page")
    assert html.escape(f"Transfer #1: {hostile.source} → hub") in page.text  # the title
    assert f'href="{PREFIX}/data-docs/{quote(hostile.data_docs)}"' in page.text
    assert_no_markup_from(page.text, hostile.payloads, "transfer page")

    trace = client.get(f"{PREFIX}/trace", params={"channel": "allegro", "sku": hostile.sku})
    assert trace.status_code == 200
    assert 'id="trace"' in trace.text
    assert_shown_escaped(trace.text, hostile.trace_texts, "SKU trace")
    assert f'name="sku" required value="{html.escape(hostile.sku)}"' in trace.text
    assert_no_markup_from(trace.text, hostile.payloads, "SKU trace")

    orders = client.get(f"{PREFIX}/orders", params={"channel": "allegro", "oversold": "1"})
    assert orders.status_code == 200 and "1 orders, page 1 of 1" in orders.text
    assert_shown_escaped(orders.text, hostile.order_texts, "orders list")
    assert f'href="{PREFIX}/transfers/{hostile.transfer_id}"' in orders.text
    assert_no_markup_from(orders.text, hostile.payloads, "orders list")

    tail = "".join(hostile.payloads)
    reflected = client.get(f"{PREFIX}/trace", params={"channel": tail, "sku": tail, "at": tail})
    assert reflected.status_code == 422
    assert_shown_escaped(reflected.text, (f"Trace of {tail} on {tail}", f"Not a timestamp: {tail}"), "trace form")
    assert_no_markup_from(reflected.text, hostile.payloads, "trace form")


def test_hostile_user_names_and_error_texts_are_escaped(
    client: Any, auth_manager: Any, hostile: Hostile, hub_dsn: str, docs_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    tail = "".join(hostile.payloads)
    signed_in = client.get(f"{PREFIX}/verify", headers={"Authorization": f"Bearer {_token(auth_manager, tail)}"})
    assert signed_in.status_code == 200
    assert_shown_escaped(signed_in.text, (f"signed in as {tail}",), "header")
    assert_no_markup_from(signed_in.text, hostile.payloads, "header")

    forbidden = client.get(f"{PREFIX}/", headers={"Authorization": f"Bearer {_token(auth_manager, tail, None)}"})
    assert forbidden.status_code == 403
    assert_shown_escaped(forbidden.text, (f"User {tail} may not see",), "forbidden page")
    assert_no_markup_from(forbidden.text, hostile.payloads, "forbidden page")

    def failing_trace(*args: Any) -> Any:
        raise psycopg.DataError(f"invalid input: {tail}")

    monkeypatch.setattr("commerce_sync.audit.view.load_trace_offer", lambda: failing_trace)
    failed = client.get(f"{PREFIX}/trace", params={"channel": "allegro", "sku": hostile.sku})
    assert failed.status_code == 500
    assert_shown_escaped(failed.text, (f"The trace query failed: invalid input: {tail}",), "failed trace")
    assert_no_markup_from(failed.text, hostile.payloads, "failed trace")

    from commerce_sync.audit.view import create_app

    def no_hub() -> str:
        raise ConfigError(f"no hub: {tail}")

    root = FastAPI()
    root.mount(PREFIX, create_app(dsn=no_hub, data_docs_dir=lambda: docs_dir))
    with TestClient(root, follow_redirects=False) as unconfigured:
        response = unconfigured.get(f"{PREFIX}/", headers={"Authorization": f"Bearer {_token(auth_manager)}"})
    assert response.status_code == 503
    assert_shown_escaped(response.text, (f"no hub: {tail}",), "not configured page")
    assert_no_markup_from(response.text, hostile.payloads, "not configured page")


def test_the_checks_catch_markup(hostile: Hostile) -> None:
    """The assertions above fail on a page that renders a payload as markup (so they can fail)."""
    for payload in hostile.payloads:
        with pytest.raises(AssertionError):
            assert_no_markup_from(f"<p>{payload}</p>", hostile.payloads, "unescaped")
    with pytest.raises(AssertionError, match="event handler"):
        assert_no_markup_from("<p><b onmouseover=alert(1)>x</b></p>", (), "handler")
    with pytest.raises(AssertionError, match="never writes"):
        assert_no_markup_from("<p><svg></svg></p>", (), "tag")
    with pytest.raises(AssertionError, match="not shown"):
        assert_shown_escaped(f"<p>{hostile.sku}</p>", (hostile.sku,), "raw")
