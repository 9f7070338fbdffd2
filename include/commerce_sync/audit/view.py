"""The auditor's view of the transfer ledger: a small server-rendered FastAPI app.

Mounted inside the Airflow api-server by ``plugins/audit_view_plugin.py`` (under ``/audit``) and
reached from the Airflow UI's *Browse* menu. Pages:

* ``/``                         health per source and channel (``audit.health``: last success, backlog,
                                quarantine, held moves, event triggers), then the transfers, filtered
                                (DAG, source, target, status, dates), 50 a page
* ``/transfers.csv``            the same list as CSV (current filters, every page)
* ``/transfers/{id}``           one transfer: counts, checksum, details, validation, quarantined rows
* ``/transfers/{id}/quarantine.csv``  that transfer's quarantined rows as CSV
* ``/trace``                    a channel offer traced back to its sources (``audit.trace.trace_offer``)
* ``/verify``                   walks the hash chain on demand (``audit.ledger.verify``)
* ``/static/audit.css``         the pages' style sheet

Every endpoint requires an authenticated Airflow user: the request must carry the JWT that the
Airflow UI uses (``_token`` cookie set at login, or ``Authorization: Bearer``), validated by the
same dependency as Airflow's own REST API (``airflow.api_fastapi.core_api.security.get_user``).
Without one, HTML pages redirect to the Airflow login page and the other endpoints answer 401.

Every response carries security headers (:func:`security_headers`): a strict
Content-Security-Policy (no script at all, style sheets and images from this app only, framed only
by the Airflow UI of the same origin), ``X-Content-Type-Options: nosniff`` and a ``Referrer-Policy``.
Data Docs pages, rendered by Great Expectations from feed data, are additionally served with the
CSP ``sandbox`` directive: even markup that escaped the escaping cannot run a script there.
A NUL byte in a query parameter, or a page number past any real list, is answered with 400.

Pages are Jinja2 templates (``audit/templates``: one base layout, one template per page) rendered
with autoescaping and ``StrictUndefined``; no template marks data safe. The data comes from
:mod:`commerce_sync.audit.view_queries`, which connects to the hub through the ``hub_db`` Airflow
connection (falling back to ``HUB_DATABASE_URL``) in read-only transactions and runs SELECTs only.
"""

# No ``from __future__ import annotations`` here: FastAPI must resolve the routes' Annotated
# dependencies (defined inside create_app) at runtime.
import csv
import functools
import importlib
import importlib.resources
import io
import json
import mimetypes
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

import jinja2
import markupsafe
import psycopg

from commerce_sync.audit.health import airflow_database_url, health
from commerce_sync.audit.view_queries import (
    QUARANTINE_COLUMNS,
    TRANSFER_COLUMNS,
    TransferFilter,
    chain_facts,
    hub_dsn,
    iter_transfers,
    quarantine_rows,
    read_only,
    transfer_detail,
    transfer_page,
)
from commerce_sync.errors import ConfigError

__all__ = [
    "DATA_DOCS_CSP",
    "PAGE_CSP",
    "VIEW_NAME",
    "LazyASGIApp",
    "create_app",
    "csv_cell",
    "csv_lines",
    "data_docs_file",
    "read_only",
    "security_headers",
    "templates",
]

VIEW_NAME = "Audit ledger"
CSV_INJECTION_PREFIXES = ("=", "+", "-", "@", "\t", "\r", "\0")
LIST_COLUMNS = ("seq", "finished_at", "dag_id", "task_id", "source", "target", "dataset", "status")
COUNT_COLUMNS = ("rows_read", "rows_written", "rows_rejected", "rows_changed")
MONO_SUFFIXES = ("hash", "sha256", "_id")
STATUSES = ("success", "failed")
# Responses of these paths are data, not pages: an unauthenticated request gets 401, no login redirect.
NON_HTML_SUFFIXES = (".csv", ".json", ".css")
# The largest page number asked for that is still answered (50 a page: 50 billion transfers);
# beyond it the OFFSET would overflow PostgreSQL's bigint.
MAX_PAGE = 1_000_000_000
# The pages need nothing but their own style sheet: no script, no inline style, no other host.
PAGE_CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'self'; base-uri 'none'"
)
# GX's Data Docs use inline styles and their own fonts and images; scripts never run (``sandbox``
# without ``allow-scripts``). ``allow-same-origin`` keeps the session cookie on the pages' own
# style sheets; without scripts it gives the page nothing else.
DATA_DOCS_CSP = (
    "sandbox allow-same-origin allow-popups; default-src 'none'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self'; frame-ancestors 'self'; base-uri 'none'; form-action 'none'"
)
DATA_DOCS_PREFIX = "/data-docs/"


def security_headers(path: str) -> dict[str, str]:
    """The security headers of the response to ``path`` (the path inside the app)."""
    return {
        "Content-Security-Policy": DATA_DOCS_CSP if path.startswith(DATA_DOCS_PREFIX) else PAGE_CSP,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
        "X-Frame-Options": "SAMEORIGIN",
    }


# --------------------------------------------------------------------------------------------
# CSV
# --------------------------------------------------------------------------------------------


def csv_cell(value: Any) -> str:
    """A value as a CSV cell, neutralised against formula injection (OWASP)."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        text = value.isoformat()
    elif isinstance(value, dict | list):
        text = json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)
    else:
        text = str(value)
    if text.startswith(CSV_INJECTION_PREFIXES):
        return "'" + text
    return text


def csv_lines(columns: Sequence[str], rows: Iterator[Mapping[str, Any]] | Sequence[Mapping[str, Any]]) -> Iterator[str]:
    """Header plus one CSV line per row."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")

    def flush() -> str:
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    writer.writerow(columns)
    yield flush()
    for row in rows:
        writer.writerow([csv_cell(row.get(c)) for c in columns])
        yield flush()


# --------------------------------------------------------------------------------------------
# Templates
# --------------------------------------------------------------------------------------------


# markupsafe spells quotes as numeric references; the view has always written them as html.escape
# does, so the same text gives the same page. Both sides are constants: no data becomes markup.
_QUOTE_ENTITIES = (
    (markupsafe.Markup("&#34;"), markupsafe.Markup("&quot;")),
    (markupsafe.Markup("&#39;"), markupsafe.Markup("&#x27;")),
)


def _finalize(value: Any) -> Any:
    """The environment's ``finalize``: what every ``{{ expression }}`` becomes before autoescape.

    ``None`` prints as nothing and datetimes as UTC text. Everything else is escaped by
    ``markupsafe.escape`` (which leaves the templates' own macro output alone) with quotes spelled
    as ``html.escape`` spells them; autoescape then has nothing left to do.
    """
    if value is None:
        return ""
    if isinstance(value, jinja2.Undefined):
        return value  # StrictUndefined: raises when printed
    if isinstance(value, datetime):
        value = value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    escaped = markupsafe.escape(value)
    for numeric, named in _QUOTE_ENTITIES:
        escaped = escaped.replace(numeric, named)
    return escaped


def _key_union(items: Sequence[Mapping[Any, Any]]) -> list[str]:
    """The keys of a list of mappings as text, in order of first appearance (a table's columns)."""
    columns: list[str] = []
    for item in items:
        columns.extend(str(k) for k in item if str(k) not in columns)
    return columns


def _json_text(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)


def _without(mapping: Mapping[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in mapping.items() if k not in keys}


@functools.cache
def templates() -> jinja2.Environment:
    """The view's Jinja2 environment over the package's ``templates`` directory.

    Autoescaping is on for every template (they are all HTML) and an undefined name is an
    error, not an empty string.
    """
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("commerce_sync.audit", "templates"),
        autoescape=jinja2.select_autoescape(["html"], default_for_string=True, default=True),
        undefined=jinja2.StrictUndefined,
        finalize=_finalize,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.tests["list_like"] = lambda value: isinstance(value, list | tuple)
    env.tests["mapping_list"] = lambda value: all(isinstance(item, Mapping) for item in value)
    env.filters["key_union"] = _key_union
    env.filters["json"] = _json_text
    env.filters["without"] = _without
    return env


def render(name: str, **context: Any) -> str:
    """Render the page template ``name`` with ``context`` (plain data only)."""
    return templates().get_template(name).render(view_name=VIEW_NAME, **context)


@functools.cache
def static_files() -> dict[str, bytes]:
    """The files of the package's ``static`` directory by name (served at ``/static/<name>``)."""
    folder = importlib.resources.files("commerce_sync.audit").joinpath("static")
    return {entry.name: entry.read_bytes() for entry in folder.iterdir() if entry.is_file()}


@dataclass(frozen=True)
class Notice:
    """A line shown above a page's result: an error (``broken``) or a plain remark."""

    text: str
    broken: bool = False


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def data_docs_file(relative: str, root: Path | None = None) -> Path | None:
    """The file ``relative`` inside the Data Docs directory, or None if it is not a file there.

    ``..``, absolute paths and symlinks that lead outside the directory are refused: the path is
    resolved first and must stay under the resolved root.
    """
    if root is None:
        from commerce_sync.config import data_docs_root, load_quality

        root = data_docs_root(load_quality())
    base = root.resolve()
    try:
        target = (base / relative).resolve()
    except (OSError, ValueError):
        return None
    if not target.is_relative_to(base) or not target.is_file():
        return None
    return target


def parse_date(value: str | None) -> date | None:
    """A YYYY-MM-DD query parameter, or None when empty."""
    return date.fromisoformat(value) if value else None


def parse_point_in_time(value: str | None) -> datetime | None:
    """An ISO timestamp (``datetime-local`` gives one without zone: read as UTC), or None."""
    if not value:
        return None
    parsed = datetime.fromisoformat(value)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


def load_trace_offer() -> Callable[..., Any] | None:
    """``commerce_sync.audit.trace.trace_offer`` if this installation has it."""
    try:
        module = importlib.import_module("commerce_sync.audit.trace")
    except ImportError:
        return None
    func = getattr(module, "trace_offer", None)
    return func if callable(func) else None


# --------------------------------------------------------------------------------------------
# The FastAPI app
# --------------------------------------------------------------------------------------------


class LazyASGIApp:
    """An ASGI app that builds the real one on its first request.

    Airflow loads plugins in every process that needs them (task runners load them for macros),
    and building the view imports Airflow's API security module (~4 s cold). Deferring the build
    keeps importing the plugin cheap everywhere except the api-server that serves it.
    """

    def __init__(self, factory: Callable[[], Any]) -> None:
        self._factory = factory
        self._app: Any = None
        self._lock = threading.Lock()

    def get_app(self) -> Any:
        """The real app, built once."""
        if self._app is None:
            with self._lock:
                if self._app is None:
                    self._app = self._factory()
        return self._app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """ASGI entry point."""
        await self.get_app()(scope, receive, send)


class NotAuthorized(Exception):
    """An authenticated user whom the auth manager does not allow to see this view."""


def create_app(
    dsn: Callable[[], str] = hub_dsn,
    data_docs_dir: Callable[[], Path] | None = None,
    airflow_url: Callable[[], str | None] = airflow_database_url,
) -> Any:
    """Build the FastAPI app. ``dsn`` returns the hub DSN (looked up per request); ``data_docs_dir``
    the directory of the GX Data Docs (default: ``quality.yaml``'s, under the data directory);
    ``airflow_url`` Airflow's metadata database, read for the event triggers' health."""
    # The very dependency Airflow's REST API uses: JWT from "Authorization: Bearer" or the
    # "_token" cookie, validated (signature, expiry, revocation) by the configured auth manager.
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.core_api.security import GetUserDep
    from fastapi import Depends, FastAPI, HTTPException, Query, Request
    from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse

    def require_viewer(user: GetUserDep) -> Any:
        """The authenticated user, if the auth manager lets them see this view."""
        allowed = get_auth_manager().is_authorized_custom_view(method="GET", resource_name=VIEW_NAME, user=user)
        if not allowed:
            raise NotAuthorized(user.get_name())
        return user

    def refuse_nul(request: Request) -> None:
        """400 for a NUL byte in a query parameter: PostgreSQL text cannot hold one."""
        if any("\0" in key or "\0" in value for key, value in request.query_params.multi_items()):
            raise HTTPException(status_code=400, detail="a query parameter holds a NUL byte")

    # App-level dependencies: run before anything else on every route (FastAPI caches the result
    # for the route's own ``Depends(require_viewer)``), so no endpoint can be added unprotected.
    app = FastAPI(
        title=VIEW_NAME,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        dependencies=[Depends(require_viewer), Depends(refuse_nul)],
    )

    @app.middleware("http")
    async def add_security_headers(request: Request, call_next: Callable[[Request], Any]) -> Response:
        response: Response = await call_next(request)
        root = str(request.scope.get("root_path", ""))
        path = request.url.path[len(root) :] if root and request.url.path.startswith(root) else request.url.path
        response.headers.update(security_headers(path))
        return response

    def wants_html(request: Request) -> bool:
        return not request.url.path.endswith(NON_HTML_SUFFIXES)

    def _base(request: Request) -> str:
        return str(request.scope.get("root_path", "")).rstrip("/")

    def page(
        request: Request, template: str, title: str, user: Any = None, status_code: int = 200, **context: Any
    ) -> HTMLResponse:
        """A page: ``template`` inside the base layout, with the signed-in user's name if known."""
        name = user.get_name() if user is not None else None
        body = render(template, base=_base(request), title=title, user=name, **context)
        return HTMLResponse(body, status_code=status_code)

    @app.exception_handler(HTTPException)
    async def on_http_error(request: Request, exc: HTTPException) -> Response:
        if exc.status_code in (401, 403) and wants_html(request) and request.method == "GET":
            login = get_auth_manager().get_url_login(next_url=str(request.url))
            return RedirectResponse(login, status_code=303)
        headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)

    @app.exception_handler(NotAuthorized)
    async def on_not_authorized(request: Request, exc: NotAuthorized) -> Response:
        message = f"User {exc} may not see the {VIEW_NAME}."
        if wants_html(request):
            return page(request, "message.html", "Forbidden", status_code=403, message=message)
        return JSONResponse({"detail": message}, status_code=403)

    @app.exception_handler(ConfigError)
    async def on_config_error(request: Request, exc: ConfigError) -> Response:
        return page(request, "message.html", "Not configured", status_code=503, message=str(exc))

    def _filter(
        dag_id: str = "",
        source: str = "",
        target: str = "",
        status: str = "",
        date_from: str = "",
        date_to: str = "",
    ) -> TransferFilter:
        try:
            return TransferFilter(dag_id, source, target, status, parse_date(date_from), parse_date(date_to))
        except ValueError as exc:
            raise HTTPException(status_code=422, detail=f"dates must be YYYY-MM-DD: {exc}") from exc

    Viewer = Annotated[Any, Depends(require_viewer)]
    Filter = Annotated[TransferFilter, Depends(_filter)]

    @app.get("/", response_class=HTMLResponse)
    def transfers(
        request: Request,
        flt: Filter,
        user: Viewer,
        page_no: Annotated[int, Query(alias="page", ge=1)] = 1,
    ) -> HTMLResponse:
        if page_no > MAX_PAGE:
            raise HTTPException(status_code=400, detail=f"page must be at most {MAX_PAGE:,}")
        with read_only(dsn()) as conn:
            listing = transfer_page(conn, flt, page_no)
            report = health(conn, airflow_url() or "")
        base = _base(request)

        def page_href(number: int) -> str:
            return f"{base}/?{urlencode({**flt.query_params(), 'page': number})}"

        return page(
            request,
            "transfers.html",
            "Transfers",
            user,
            listing=listing,
            filter=flt,
            statuses=STATUSES,
            list_columns=LIST_COLUMNS,
            count_columns=COUNT_COLUMNS,
            page_href=page_href,
            export_href=f"{base}/transfers.csv?{urlencode(flt.query_params())}",
            health=report,
        )

    @app.get("/transfers.csv")
    def transfers_csv(flt: Filter, user: Viewer) -> Response:
        dsn_value = dsn()

        def generate() -> Iterator[str]:
            with read_only(dsn_value) as conn:
                yield from csv_lines([*TRANSFER_COLUMNS, "details"], iter_transfers(conn, flt))

        headers = {"Content-Disposition": 'attachment; filename="transfers.csv"'}
        return StreamingResponse(generate(), media_type="text/csv; charset=utf-8", headers=headers)

    @app.get("/transfers/{transfer_id}", response_class=HTMLResponse)
    def transfer(request: Request, transfer_id: uuid.UUID, user: Viewer) -> HTMLResponse:
        with read_only(dsn()) as conn:
            detail = transfer_detail(conn, transfer_id)
        if detail is None:
            message = f"No transfer {transfer_id} in the ledger."
            return page(request, "message.html", "Transfer not found", user, status_code=404, message=message)
        row = detail.row
        details = row.get("details") or {}
        facts = details if isinstance(details, Mapping) else {}
        docs = facts.get("data_docs")
        base = _base(request)
        return page(
            request,
            "transfer.html",
            f"Transfer #{row['seq']}: {row['source']} → {row['target']}",
            user,
            detail=detail,
            details=details,
            details_json=json.dumps(details, indent=2, sort_keys=True, default=str, ensure_ascii=False),
            validation=facts.get("validation"),
            breakers=facts.get("breakers"),
            data_docs_href=f"{base}/data-docs/{quote(docs)}" if isinstance(docs, str) and docs else None,
            quarantine_csv_href=f"{base}/transfers/{row['transfer_id']}/quarantine.csv",
            transfer_columns=TRANSFER_COLUMNS,
            count_columns=COUNT_COLUMNS,
            quarantine_columns=[c for c in QUARANTINE_COLUMNS if c not in ("transfer_id", "raw")],
            mono_suffixes=MONO_SUFFIXES,
        )

    @app.get("/transfers/{transfer_id}/quarantine.csv")
    def quarantine_csv(transfer_id: uuid.UUID, user: Viewer) -> Response:
        with read_only(dsn()) as conn:
            rows = quarantine_rows(conn, transfer_id)
        content = "".join(csv_lines(QUARANTINE_COLUMNS, rows))
        headers = {"Content-Disposition": f'attachment; filename="quarantine-{transfer_id}.csv"'}
        return Response(content, media_type="text/csv; charset=utf-8", headers=headers)

    @app.get("/data-docs/{path:path}")
    def data_docs(path: str, user: Viewer) -> Response:
        """A file of a transfer's GX Data Docs site, only from the configured Data Docs directory."""
        from fastapi.responses import FileResponse

        target = data_docs_file(path, data_docs_dir() if data_docs_dir else None)
        if target is None:
            raise HTTPException(status_code=404, detail=f"no Data Docs file {path!r}")
        return FileResponse(target, media_type=mimetypes.guess_type(target.name)[0] or "application/octet-stream")

    @app.get("/static/{name}")
    def static(name: str, user: Viewer) -> Response:
        """A file of the package's ``static`` directory (looked up by name, never by path)."""
        content = static_files().get(name)
        if content is None:
            raise HTTPException(status_code=404, detail=f"no static file {name!r}")
        media_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        return Response(content, media_type=media_type, headers={"Cache-Control": "private, max-age=300"})

    @app.get("/trace", response_class=HTMLResponse)
    def trace(
        request: Request,
        user: Viewer,
        channel: str = "",
        sku: str = "",
        at: str = "",
    ) -> HTMLResponse:
        notices: list[Notice] = []
        result: Mapping[str, Any] | None = None
        status_code = 200
        if channel and sku:
            trace_offer = load_trace_offer()
            try:
                point = parse_point_in_time(at)
            except ValueError:
                point = None
                notices.append(Notice(f"Not a timestamp: {at}", broken=True))
                status_code = 422
            if trace_offer is None:
                notices.append(Notice("Tracing is not available in this installation (commerce_sync.audit.trace)."))
                status_code = 501
            elif status_code == 200:
                try:
                    with read_only(dsn()) as conn:
                        traced = trace_offer(conn, channel, sku, point)
                except psycopg.Error as exc:
                    notices.append(Notice(f"The trace query failed: {exc}", broken=True))
                    status_code = 500
                else:
                    result = traced if isinstance(traced, Mapping) else {"result": traced}
        title = f"Trace of {sku} on {channel}" if channel and sku else "SKU trace"
        return page(
            request,
            "trace.html",
            title,
            user,
            status_code=status_code,
            channel=channel,
            sku=sku,
            at=at,
            notices=notices,
            result=result,
        )

    @app.get("/verify", response_class=HTMLResponse)
    def verify_chain(request: Request, user: Viewer) -> HTMLResponse:
        with read_only(dsn()) as conn:
            ok, facts = chain_facts(conn)
        return page(request, "verify.html", "Chain verification", user, ok=ok, facts=facts)

    return app
