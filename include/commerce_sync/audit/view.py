"""The auditor's view of the transfer ledger: a small server-rendered FastAPI app.

Mounted inside the Airflow api-server by ``plugins/audit_view_plugin.py`` (under ``/audit``) and
reached from the Airflow UI's *Browse* menu. Pages:

* ``/``                         transfers, filtered (DAG, source, target, status, dates), 50 a page
* ``/transfers.csv``            the same list as CSV (current filters, every page)
* ``/transfers/{id}``           one transfer: counts, checksum, details, validation, quarantined rows
* ``/transfers/{id}/quarantine.csv``  that transfer's quarantined rows as CSV
* ``/trace``                    a channel offer traced back to its sources (``audit.trace.trace_offer``)
* ``/verify``                   walks the hash chain on demand (``audit.ledger.verify``)

Every endpoint requires an authenticated Airflow user: the request must carry the JWT that the
Airflow UI uses (``_token`` cookie set at login, or ``Authorization: Bearer``), validated by the
same dependency as Airflow's own REST API (``airflow.api_fastapi.core_api.security.get_user``).
Without one, HTML pages redirect to the Airflow login page and CSV endpoints answer 401.

The view only reads: it connects to the hub through the ``hub_db`` Airflow connection (falling back
to ``HUB_DATABASE_URL``) in read-only transactions and runs SELECTs only.
"""

# No ``from __future__ import annotations`` here: FastAPI must resolve the routes' Annotated
# dependencies (defined inside create_app) at runtime.
import csv
import html
import importlib
import io
import json
import math
import mimetypes
import os
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from commerce_sync.errors import ConfigError

PAGE_SIZE = 50
VIEW_NAME = "Audit ledger"
APPLICATION_NAME = "commerce_sync_audit_view"
CSV_INJECTION_PREFIXES = ("=", "+", "-", "@", "\t", "\r", "\0")

TRANSFER_COLUMNS = (
    "seq",
    "transfer_id",
    "dag_id",
    "run_id",
    "task_id",
    "try_number",
    "map_index",
    "source",
    "target",
    "dataset",
    "status",
    "rows_read",
    "rows_written",
    "rows_rejected",
    "rows_changed",
    "payload_sha256",
    "message",
    "started_at",
    "finished_at",
    "prev_hash",
    "hash",
)
QUARANTINE_COLUMNS = (
    "id",
    "dataset",
    "source",
    "transfer_id",
    "record_key",
    "record_no",
    "source_line",
    "expectation",
    "column_name",
    "observed_value",
    "reason",
    "raw",
    "status",
    "created_at",
    "resolved_at",
    "resolved_transfer_id",
)
LIST_COLUMNS = ("seq", "finished_at", "dag_id", "task_id", "source", "target", "dataset", "status")
COUNT_COLUMNS = ("rows_read", "rows_written", "rows_rejected", "rows_changed")


# --------------------------------------------------------------------------------------------
# Database access (read-only)
# --------------------------------------------------------------------------------------------


def hub_dsn() -> str:
    """The hub's DSN: the ``hub_db`` Airflow connection, else ``HUB_DATABASE_URL``."""
    try:
        from commerce_sync.connections import get_connection

        return get_connection("hub_db").postgres_dsn()
    except (ConfigError, ImportError) as exc:
        fallback = os.environ.get("HUB_DATABASE_URL")
        if fallback:
            return fallback
        raise ConfigError(
            "the audit view needs the hub database: define the Airflow connection 'hub_db' "
            "(AIRFLOW_CONN_HUB_DB) or set HUB_DATABASE_URL"
        ) from exc


@contextmanager
def read_only(dsn: str) -> Iterator[psycopg.Connection]:
    """A connection whose transactions are read-only (the server refuses any write)."""
    conn = psycopg.connect(
        dsn,
        application_name=APPLICATION_NAME,
        options="-c default_transaction_read_only=on",
    )
    conn.read_only = True
    try:
        yield conn
    finally:
        conn.rollback()
        conn.close()


@dataclass(frozen=True)
class TransferFilter:
    """Filters of the transfers list; empty fields do not filter."""

    dag_id: str = ""
    source: str = ""
    target: str = ""
    status: str = ""
    date_from: date | None = None
    date_to: date | None = None

    def where(self) -> tuple[sql.Composable, dict[str, Any]]:
        """A WHERE clause (possibly empty) and its bound parameters."""
        clauses: list[sql.Composable] = []
        params: dict[str, Any] = {}
        for name in ("dag_id", "source", "target", "status"):
            value = getattr(self, name)
            if value:
                clauses.append(sql.SQL("{} = {}").format(sql.Identifier(name), sql.Placeholder(name)))
                params[name] = value
        if self.date_from is not None:
            clauses.append(sql.SQL("finished_at >= %(date_from)s"))
            params["date_from"] = datetime.combine(self.date_from, datetime.min.time(), UTC)
        if self.date_to is not None:
            clauses.append(sql.SQL("finished_at < %(date_to)s"))
            params["date_to"] = datetime.combine(self.date_to + timedelta(days=1), datetime.min.time(), UTC)
        if not clauses:
            return sql.SQL(""), params
        return sql.SQL(" WHERE ") + sql.SQL(" AND ").join(clauses), params

    def query_params(self) -> dict[str, str]:
        """The filters as URL query parameters (only those set)."""
        values = {
            "dag_id": self.dag_id,
            "source": self.source,
            "target": self.target,
            "status": self.status,
            "date_from": self.date_from.isoformat() if self.date_from else "",
            "date_to": self.date_to.isoformat() if self.date_to else "",
        }
        return {k: v for k, v in values.items() if v}


def _select_transfers(flt: TransferFilter) -> tuple[sql.Composed, dict[str, Any]]:
    where, params = flt.where()
    columns = sql.SQL(", ").join(sql.Identifier(c) for c in TRANSFER_COLUMNS)
    query = sql.SQL("SELECT {}, details FROM audit.transfer{} ORDER BY seq DESC").format(columns, where)
    return query, params


def list_transfers(
    conn: psycopg.Connection, flt: TransferFilter, page: int = 1, page_size: int = PAGE_SIZE
) -> tuple[list[dict[str, Any]], int]:
    """One page of transfers (newest first) and the total number matching the filters."""
    where, params = flt.where()
    total_row = conn.execute(sql.SQL("SELECT count(*) FROM audit.transfer{}").format(where), params).fetchone()
    total = int(total_row[0]) if total_row else 0
    query, params = _select_transfers(flt)
    paged = query + sql.SQL(" LIMIT %(limit)s OFFSET %(offset)s")
    params = dict(params, limit=page_size, offset=(max(page, 1) - 1) * page_size)
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(paged, params).fetchall()
    return rows, total


def iter_transfers(conn: psycopg.Connection, flt: TransferFilter) -> Iterator[dict[str, Any]]:
    """Every transfer matching the filters, newest first, through a server-side cursor."""
    query, params = _select_transfers(flt)
    with conn.cursor(name="audit_view_export", row_factory=dict_row) as cur:
        cur.itersize = 2000
        cur.execute(query, params)
        yield from cur


def filter_choices(conn: psycopg.Connection) -> dict[str, list[str]]:
    """Distinct values offered in the filter drop-downs."""
    choices: dict[str, list[str]] = {}
    for name in ("dag_id", "source", "target"):
        query = sql.SQL("SELECT DISTINCT {col} FROM audit.transfer WHERE {col} IS NOT NULL ORDER BY 1").format(
            col=sql.Identifier(name)
        )
        choices[name] = [row[0] for row in conn.execute(query).fetchall()]
    return choices


def get_transfer(conn: psycopg.Connection, transfer_id: uuid.UUID) -> dict[str, Any] | None:
    """One ledger row, or None."""
    columns = sql.SQL(", ").join(sql.Identifier(c) for c in TRANSFER_COLUMNS)
    query = sql.SQL("SELECT {}, details FROM audit.transfer WHERE transfer_id = %s").format(columns)
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, (transfer_id,)).fetchone()


def quarantine_rows(conn: psycopg.Connection, transfer_id: uuid.UUID) -> list[dict[str, Any]]:
    """The rows a transfer put in quarantine, in file order."""
    columns = sql.SQL(", ").join(sql.Identifier(c) for c in QUARANTINE_COLUMNS)
    query = sql.SQL("SELECT {} FROM hub.quarantine WHERE transfer_id = %s ORDER BY record_no NULLS LAST, id").format(
        columns
    )
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, (transfer_id,)).fetchall()


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
# HTML rendering
# --------------------------------------------------------------------------------------------

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1f2933;background:#fff}
header{background:#017cee;color:#fff;padding:8px 16px;display:flex;gap:18px;align-items:center}
header a{color:#fff;text-decoration:none;font-weight:600}
header .who{margin-left:auto;font-weight:400;opacity:.85}
main{padding:12px 16px}
table{border-collapse:collapse;margin:8px 0;font-size:13px}
th,td{border:1px solid #d5dbe1;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#f0f3f6}
tr.failed td{background:#fdecea}
td.num{text-align:right;font-variant-numeric:tabular-nums}
code,.mono{font-family:ui-monospace,monospace;font-size:12px;word-break:break-all}
form.filters{display:flex;flex-wrap:wrap;gap:8px;align-items:end;background:#f7f9fb;padding:8px;
  border:1px solid #e1e6eb}
form label{display:flex;flex-direction:column;font-size:12px;color:#52606d}
dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px;margin:4px 0}
dt{font-weight:600;color:#52606d}dd{margin:0}
.ok{color:#0b7a3b;font-weight:700}.broken{color:#b3261e;font-weight:700}
.gaps{background:#fff4ce;border:2px solid #e0a800;padding:6px 10px;margin:8px 0}
.gaps li{color:#8a4b00;font-weight:600}
.pager{display:flex;gap:12px;align-items:center}
.muted{color:#7b8794}
pre{background:#f7f9fb;border:1px solid #e1e6eb;padding:8px;overflow:auto;font-size:12px}
"""


def h(value: Any) -> str:
    """HTML-escape anything."""
    return html.escape("" if value is None else str(value), quote=True)


def _fmt(value: Any) -> str:
    if value is None:
        return '<span class="muted">-</span>'
    if isinstance(value, datetime):
        return h(value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"))
    return h(value)


def render_value(value: Any, key: str | None = None) -> str:
    """Any JSON-like value as nested HTML: dicts as definition lists, lists of dicts as tables."""
    css = ' class="gaps"' if key == "gaps" and value else ""
    if isinstance(value, Mapping):
        if not value:
            return '<span class="muted">{}</span>'
        items = "".join(f"<dt>{h(k)}</dt><dd>{render_value(v, str(k))}</dd>" for k, v in value.items())
        return f"<dl{css}>{items}</dl>"
    if isinstance(value, list | tuple):
        if not value:
            return '<span class="muted">(none)</span>'
        if all(isinstance(item, Mapping) for item in value):
            columns: list[str] = []
            for item in value:
                columns.extend(str(k) for k in item if str(k) not in columns)
            head = "".join(f"<th>{h(c)}</th>" for c in columns)
            body = "".join(
                "<tr>" + "".join(f"<td>{render_value(item.get(c), c)}</td>" for c in columns) + "</tr>"
                for item in value
            )
            return f"<div{css}><table><tr>{head}</tr>{body}</table></div>"
        return f"<ul{css}>" + "".join(f"<li>{render_value(item)}</li>" for item in value) + "</ul>"
    return _fmt(value)


def page(title: str, body: str, *, base: str, user: str | None = None) -> str:
    """The common page frame."""
    who = f'<span class="who">signed in as {h(user)}</span>' if user else ""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{h(title)} - {VIEW_NAME}</title><style>{STYLE}</style></head><body>"
        f'<header><a href="{h(base)}/">{VIEW_NAME}</a><a href="{h(base)}/trace">SKU trace</a>'
        f'<a href="{h(base)}/verify">Chain verification</a>{who}</header>'
        f"<main><h1>{h(title)}</h1>{body}</main></body></html>"
    )


def _select(name: str, label: str, options: Sequence[str], current: str) -> str:
    opts = ['<option value="">(all)</option>']
    for option in options:
        selected = " selected" if option == current else ""
        opts.append(f'<option value="{h(option)}"{selected}>{h(option)}</option>')
    return f'<label>{h(label)}<select name="{h(name)}">{"".join(opts)}</select></label>'


def render_transfers(
    base: str,
    flt: TransferFilter,
    rows: Sequence[Mapping[str, Any]],
    total: int,
    page_no: int,
    choices: Mapping[str, Sequence[str]],
) -> str:
    """The transfers list page body."""
    pages = max(1, math.ceil(total / PAGE_SIZE))
    date_from = flt.date_from.isoformat() if flt.date_from else ""
    date_to = flt.date_to.isoformat() if flt.date_to else ""
    form = (
        f'<form class="filters" method="get" action="{h(base)}/">'
        + _select("dag_id", "DAG", choices.get("dag_id", []), flt.dag_id)
        + _select("source", "Source", choices.get("source", []), flt.source)
        + _select("target", "Target / channel", choices.get("target", []), flt.target)
        + _select("status", "Status", ["success", "failed"], flt.status)
        + f'<label>From (UTC date)<input type="date" name="date_from" value="{h(date_from)}"></label>'
        + f'<label>To (UTC date)<input type="date" name="date_to" value="{h(date_to)}"></label>'
        + '<button type="submit">Filter</button>'
        + f'<a href="{h(base)}/">Reset</a>'
        + "</form>"
    )
    export = f"{base}/transfers.csv?{urlencode(flt.query_params())}"
    head = "".join(f"<th>{h(c)}</th>" for c in (*LIST_COLUMNS, *COUNT_COLUMNS))
    body_rows = []
    for row in rows:
        link = f'<a href="{h(base)}/transfers/{h(row["transfer_id"])}">{h(row["seq"])}</a>'
        cells = [f"<td>{link}</td>"]
        cells += [f"<td>{_fmt(row.get(c))}</td>" for c in LIST_COLUMNS[1:]]
        cells += [f'<td class="num">{_fmt(row.get(c))}</td>' for c in COUNT_COLUMNS]
        body_rows.append(f'<tr class="{h(row["status"])}">{"".join(cells)}</tr>')
    table = f'<table id="transfers"><tr>{head}</tr>{"".join(body_rows)}</table>' if rows else "<p>No transfers.</p>"

    def page_link(number: int, text: str) -> str:
        query = urlencode({**flt.query_params(), "page": number})
        return f'<a href="{h(base)}/?{h(query)}">{h(text)}</a>'

    def pager(ids: bool) -> str:
        info_id, csv_id = (' id="page-info"', ' id="export-csv"') if ids else ("", "")
        nav = [f"<span{info_id}>{total} transfers, page {page_no} of {pages}</span>"]
        if page_no > 1:
            nav.insert(0, page_link(page_no - 1, "« newer"))
        if page_no < pages:
            nav.append(page_link(page_no + 1, "older »"))
        nav.append(f'<a href="{h(export)}"{csv_id}>Export CSV</a>')
        return f'<div class="pager">{"".join(nav)}</div>'

    return form + pager(True) + table + (pager(False) if len(rows) > 20 else "")


def render_transfer(base: str, row: Mapping[str, Any], quarantine: Sequence[Mapping[str, Any]]) -> str:
    """A transfer's detail page body."""
    details = row.get("details") or {}
    facts = "".join(
        f"<dt>{h(c)}</dt><dd{' class=mono' if c.endswith(('hash', 'sha256', '_id')) else ''}>{_fmt(row.get(c))}</dd>"
        for c in TRANSFER_COLUMNS
    )
    status_css = "ok" if row.get("status") == "success" else "broken"
    parts = [
        f'<p>Status: <span class="{status_css}" id="status">{h(row.get("status"))}</span></p>',
        "<h2>Counts</h2><table><tr>"
        + "".join(f"<th>{h(c)}</th>" for c in COUNT_COLUMNS)
        + "</tr><tr>"
        + "".join(f'<td class="num">{_fmt(row.get(c))}</td>' for c in COUNT_COLUMNS)
        + "</tr></table>",
        f'<h2>Ledger row</h2><dl id="ledger-row">{facts}</dl>',
    ]
    validation = details.get("validation") if isinstance(details, Mapping) else None
    if validation:
        parts.append(f'<h2>Validation</h2><div id="validation">{render_value(validation)}</div>')
    docs = details.get("data_docs") if isinstance(details, Mapping) else None
    if isinstance(docs, str) and docs:
        parts.append(
            f'<p><a id="data-docs" href="{h(base)}/data-docs/{h(quote(docs))}" target="_blank" rel="noopener">'
            "Open the validation evidence (Great Expectations Data Docs)</a></p>"
        )
    breakers = details.get("breakers") if isinstance(details, Mapping) else None
    if breakers:
        parts.append(f'<h2>Circuit breakers</h2><div id="breakers">{render_value(breakers)}</div>')
    parts.append(f'<h2>Details</h2><div id="details">{render_value(details)}</div>')
    parts.append(
        "<details><summary>Details as JSON</summary><pre>"
        + h(json.dumps(details, indent=2, sort_keys=True, default=str, ensure_ascii=False))
        + "</pre></details>"
    )
    csv_link = f"{base}/transfers/{row['transfer_id']}/quarantine.csv"
    if quarantine:
        columns = [c for c in QUARANTINE_COLUMNS if c not in ("transfer_id", "raw")]
        head = "".join(f"<th>{h(c)}</th>" for c in (*columns, "raw"))
        body = "".join(
            "<tr>"
            + "".join(f"<td>{_fmt(q.get(c))}</td>" for c in columns)
            + f"<td><code>{h(json.dumps(q.get('raw'), sort_keys=True, default=str, ensure_ascii=False))}</code></td>"
            + "</tr>"
            for q in quarantine
        )
        parts.append(
            f'<h2>Quarantined rows ({len(quarantine)})</h2><p><a id="quarantine-csv" href="{h(csv_link)}">'
            f'Export quarantined rows as CSV</a></p><table id="quarantine"><tr>{head}</tr>{body}</table>'
        )
    else:
        parts.append('<h2>Quarantined rows</h2><p id="quarantine-none">This transfer quarantined no rows.</p>')
    return "".join(parts)


def data_docs_file(relative: str, root: Path | None = None) -> Path | None:
    """The file ``relative`` inside the Data Docs directory, or None if it is not a file there.

    ``..``, absolute paths and symlinks that lead outside the directory are refused: the path is
    resolved first and must stay under the resolved root.
    """
    if root is None:
        from commerce_sync.config import load_quality
        from commerce_sync.quality.gate import data_docs_root

        root = data_docs_root(load_quality())
    base = root.resolve()
    try:
        target = (base / relative).resolve()
    except (OSError, ValueError):
        return None
    if not target.is_relative_to(base) or not target.is_file():
        return None
    return target


def render_trace_form(base: str, channel: str, sku: str, at: str) -> str:
    """The SKU trace form."""
    return (
        f'<form class="filters" method="get" action="{h(base)}/trace">'
        f'<label>Channel<input name="channel" required value="{h(channel)}" placeholder="allegro"></label>'
        f'<label>SKU<input name="sku" required value="{h(sku)}" placeholder="SKU-000001"></label>'
        f'<label>At (UTC, optional)<input type="datetime-local" step="1" name="at" value="{h(at)}"></label>'
        '<button type="submit">Trace</button></form>'
    )


def render_trace(result: Mapping[str, Any]) -> str:
    """A trace result: gaps first and highlighted, then the whole nested result."""
    gaps = result.get("gaps") or []
    if gaps:
        items = "".join(f"<li>{render_value(g)}</li>" for g in gaps)
        summary = f'<div class="gaps" id="gaps"><strong>{len(gaps)} gap(s) in the trace</strong><ul>{items}</ul></div>'
    else:
        summary = '<p class="ok" id="gaps-none">No gaps: every value traces back to a ledger row.</p>'
    rest = {k: v for k, v in result.items() if k != "gaps"}
    return summary + f'<div id="trace">{render_value(rest)}</div>'


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


def create_app(dsn: Callable[[], str] = hub_dsn, data_docs_dir: Callable[[], Path] | None = None) -> Any:
    """Build the FastAPI app. ``dsn`` returns the hub DSN (looked up per request); ``data_docs_dir``
    the directory of the GX Data Docs (default: ``quality.yaml``'s, under the data directory)."""
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

    # App-level dependency: runs before anything else on every route (FastAPI caches the result
    # for the route's own ``Depends(require_viewer)``), so no endpoint can be added unprotected.
    app = FastAPI(
        title=VIEW_NAME, docs_url=None, redoc_url=None, openapi_url=None, dependencies=[Depends(require_viewer)]
    )

    def wants_html(request: Request) -> bool:
        path = request.url.path
        return not path.endswith((".csv", ".json"))

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
            return HTMLResponse(page("Forbidden", f"<p>{h(message)}</p>", base=_base(request)), status_code=403)
        return JSONResponse({"detail": message}, status_code=403)

    @app.exception_handler(ConfigError)
    async def on_config_error(request: Request, exc: ConfigError) -> Response:
        return HTMLResponse(page("Not configured", f"<p>{h(exc)}</p>", base=_base(request)), status_code=503)

    def _base(request: Request) -> str:
        return str(request.scope.get("root_path", "")).rstrip("/")

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
        with read_only(dsn()) as conn:
            rows, total = list_transfers(conn, flt, page_no)
            choices = filter_choices(conn)
        body = render_transfers(_base(request), flt, rows, total, page_no, choices)
        return HTMLResponse(page("Transfers", body, base=_base(request), user=user.get_name()))

    @app.get("/transfers.csv")
    def transfers_csv(flt: Filter, user: Viewer) -> Response:
        dsn_value = dsn()

        def generate() -> Iterator[str]:
            with read_only(dsn_value) as conn:
                yield from csv_lines([*TRANSFER_COLUMNS, "details"], iter_transfers(conn, flt))

        headers = {"Content-Disposition": 'attachment; filename="transfers.csv"'}
        return StreamingResponse(generate(), media_type="text/csv; charset=utf-8", headers=headers)

    @app.get("/transfers/{transfer_id}", response_class=HTMLResponse)
    def transfer_detail(request: Request, transfer_id: uuid.UUID, user: Viewer) -> HTMLResponse:
        with read_only(dsn()) as conn:
            row = get_transfer(conn, transfer_id)
            quarantine = quarantine_rows(conn, transfer_id) if row else []
        base = _base(request)
        if row is None:
            body = f"<p>No transfer {h(transfer_id)} in the ledger.</p>"
            return HTMLResponse(page("Transfer not found", body, base=base, user=user.get_name()), status_code=404)
        title = f"Transfer #{row['seq']}: {row['source']} → {row['target']}"
        return HTMLResponse(page(title, render_transfer(base, row, quarantine), base=base, user=user.get_name()))

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

    @app.get("/trace", response_class=HTMLResponse)
    def trace(
        request: Request,
        user: Viewer,
        channel: str = "",
        sku: str = "",
        at: str = "",
    ) -> HTMLResponse:
        base = _base(request)
        body = render_trace_form(base, channel, sku, at)
        status_code = 200
        if channel and sku:
            trace_offer = load_trace_offer()
            try:
                point = parse_point_in_time(at)
            except ValueError:
                point = None
                body += f'<p class="broken">Not a timestamp: {h(at)}</p>'
                status_code = 422
            if trace_offer is None:
                body += "<p>Tracing is not available in this installation (commerce_sync.audit.trace).</p>"
                status_code = 501
            elif status_code == 200:
                try:
                    with read_only(dsn()) as conn:
                        result = trace_offer(conn, channel, sku, point)
                except psycopg.Error as exc:
                    body += f'<p class="broken">The trace query failed: {h(exc)}</p>'
                    status_code = 500
                else:
                    body += render_trace(result if isinstance(result, Mapping) else {"result": result})
        title = f"Trace of {sku} on {channel}" if channel and sku else "SKU trace"
        return HTMLResponse(page(title, body, base=base, user=user.get_name()), status_code=status_code)

    @app.get("/verify", response_class=HTMLResponse)
    def verify_chain(request: Request, user: Viewer) -> HTMLResponse:
        from commerce_sync.audit.ledger import verify

        with read_only(dsn()) as conn:
            result = verify(conn)
        state = '<span class="ok">chain OK</span>' if result.ok else '<span class="broken">chain BROKEN</span>'
        facts = {
            "rows checked": result.rows_checked,
            "head seq": result.head_seq,
            "head hash": result.head_hash,
            "first broken seq": result.first_broken_seq,
            "problem": result.problem,
            "verified at": datetime.now(UTC),
        }
        items = "".join(f"<dt>{h(k)}</dt><dd class=mono>{_fmt(v)}</dd>" for k, v in facts.items())
        body = (
            f'<p id="verify-state">{state}</p><dl id="verify-facts">{items}</dl>'
            f'<p><a href="{h(_base(request))}/verify">Verify again</a></p>'
            '<p class="muted">Walks every row of audit.transfer in order and recomputes each hash. Compare '
            "the head hash with one exported earlier to detect a rewrite of the whole chain.</p>"
        )
        return HTMLResponse(page("Chain verification", body, base=_base(request), user=user.get_name()))

    return app
