"""ERP readers: stream ERP rows as dicts for :func:`commerce_sync.sources.erp.sync_erp`.

* **SQL**, any SQLAlchemy URL from the Airflow connection. PostgreSQL keeps its fast path (psycopg
  server-side cursor); other dialects stream with ``stream_results``/``yield_per``. The query, key
  and cursor column come from erp.yaml; the watermark filter is a bound parameter.
* **REST**, paged JSON (``paging: cursor`` or ``page``) with the watermark as ``updated_since``;
  auth from the connection (bearer token or basic), retries with backoff through the shared
  :class:`~commerce_sync.transport.http.HttpClient`. Numbers are parsed as ``Decimal``, never floats.

Every reader yields rows ordered by the key, with the cursor column as an aware UTC datetime so
the watermark logic is the same for all of them.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from psycopg import sql
from psycopg.rows import dict_row

from commerce_sync.config import ErpRestSource, ErpSource
from commerce_sync.connections import ConnectionInfo
from commerce_sync.db import connect
from commerce_sync.errors import ConfigError, DataError
from commerce_sync.transport.http import HttpClient

POSTGRES_TYPES = frozenset({"postgres", "postgresql"})


def _aware(value: Any) -> Any:
    """Cursor values as aware UTC datetimes (naive ones are taken as UTC; ISO strings are parsed)."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value  # left as text: validation names the row
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def sql_url(conn: ConnectionInfo) -> str:
    """The SQLAlchemy URL of an Airflow connection (``extra.sqlalchemy_url`` wins if set)."""
    explicit = conn.extra.get("sqlalchemy_url")
    if explicit:
        return str(explicit)
    if (conn.conn_type or "postgres") in POSTGRES_TYPES:
        return conn.postgres_dsn()
    from sqlalchemy.engine import URL

    if not conn.conn_type:
        raise ConfigError(f"connection {conn.conn_id!r} has no type; set it to the SQLAlchemy dialect+driver")
    return URL.create(
        drivername=conn.conn_type.replace("_", "+", 1) if "+" not in conn.conn_type else conn.conn_type,
        username=conn.login,
        password=conn.password,
        host=conn.host,
        port=conn.port,
        database=conn.schema,
    ).render_as_string(hide_password=False)


def _postgres_rows(url: str, erp: ErpSource, since: datetime | None) -> Iterator[dict[str, Any]]:
    query = sql.SQL("SELECT * FROM ({query}) AS erp_rows").format(query=sql.SQL(erp.query))
    params: list[Any] = []
    if since is not None:
        query += sql.SQL(" WHERE {cursor} >= %s").format(cursor=sql.Identifier(erp.cursor_column))
        params.append(since)
    query += sql.SQL(" ORDER BY {key}").format(key=sql.Identifier(erp.key))
    with connect(url) as conn:
        conn.execute("SET TIME ZONE 'UTC'")
        with conn.cursor(name="erp_extract", row_factory=dict_row) as cur:
            cur.itersize = erp.fetch_size
            cur.execute(query, params)
            yield from cur


def _sqlalchemy_rows(url: str, erp: ErpSource, since: datetime | None) -> Iterator[dict[str, Any]]:
    from sqlalchemy import DateTime, bindparam, create_engine, text

    engine = create_engine(url)
    try:
        quote = engine.dialect.identifier_preparer.quote
        statement = f"SELECT * FROM ({erp.query}) erp_rows"
        if since is not None:
            statement += f" WHERE {quote(erp.cursor_column)} >= :since"
        statement += f" ORDER BY {quote(erp.key)}"
        query = text(statement)
        params: dict[str, Any] = {}
        if since is not None:
            query = query.bindparams(bindparam("since", type_=DateTime()))
            params["since"] = since.astimezone(UTC).replace(tzinfo=None)  # naive UTC, like most ERP columns
        with engine.connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=erp.fetch_size).execute(query, params)
            for row in result:
                record = dict(row._mapping)
                record[erp.cursor_column] = _aware(record.get(erp.cursor_column))
                yield record
    finally:
        engine.dispose()


class ErpRestClient(HttpClient):
    """The ERP's JSON API: base URL and credentials from the Airflow connection.

    ``extra.auth = "bearer"`` (or a password without a login) sends ``Authorization: Bearer <password>``;
    a login and password send HTTP Basic.
    """

    channel = "erp"

    def __init__(self, conn: ConnectionInfo, erp: ErpRestSource, **kwargs: Any) -> None:
        super().__init__(conn.base_url(), timeout=(10.0, erp.timeout_seconds), max_attempts=erp.retries + 1, **kwargs)
        bearer = conn.extra.get("auth") == "bearer" or (conn.password and not conn.login)
        self._bearer = conn.password if bearer else None
        self._basic = (conn.login, conn.password) if not bearer and conn.login and conn.password else None

    def _auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._bearer}"} if self._bearer else {}

    def page(self, path: str, params: dict[str, Any]) -> Any:
        """GET one page and parse it with decimals for numbers."""
        response = self.request("GET", path, params=params, auth=self._basic)
        try:
            return response.json(parse_float=Decimal)
        except ValueError as exc:
            raise DataError(f"ERP API {self.url(path)} answered with something that is not JSON: {exc}") from None


def rest_rows(
    erp: ErpRestSource, conn: ConnectionInfo, since: datetime | None, client: ErpRestClient | None = None
) -> Iterator[dict[str, Any]]:
    """Stream the ERP's rows page by page (see the module docstring)."""
    client = client or ErpRestClient(conn, erp)
    params: dict[str, Any] = {erp.page_size_param: erp.page_size}
    if since is not None:
        params[erp.updated_since_param] = since.astimezone(UTC).isoformat()
    page_no = 1
    try:
        while True:
            if erp.paging == "page":
                params[erp.page_param] = page_no
            document = client.page(erp.path, params)
            items = document.get(erp.items_field) if isinstance(document, dict) else None
            if not isinstance(items, list):
                raise DataError(
                    f"ERP API {client.url(erp.path)} page {page_no}: expected a JSON object with a list "
                    f"{erp.items_field!r}; check items_field in erp.yaml"
                )
            for item in items:
                row = dict(item)
                for column, key in erp.fields.items():
                    row[column] = item.get(key)
                row[erp.cursor_column] = _aware(row.get(erp.cursor_column))
                yield row
            if erp.paging == "page":
                if len(items) < erp.page_size:
                    return
            else:
                following = document.get(erp.next_cursor_field)
                if not following:
                    return
                params[erp.cursor_param] = following
            page_no += 1
    finally:
        client.close()


def read_erp_rows(
    erp: ErpSource | ErpRestSource, source: str | ConnectionInfo, since: datetime | None
) -> Iterator[dict[str, Any]]:
    """Rows of the ERP from ``since`` on (all rows when None).

    Args:
        erp: The ERP configuration (``type: sql`` or ``rest``).
        source: A database URL, or the Airflow connection (SQL URL built from it, or the API).
        since: The watermark.
    """
    if isinstance(erp, ErpRestSource):
        if not isinstance(source, ConnectionInfo):
            raise ConfigError(f"ERP {erp.id!r}: a REST ERP needs its Airflow connection {erp.conn_id!r}")
        return rest_rows(erp, source, since)
    url = source if isinstance(source, str) else sql_url(source)
    if url.split(":", 1)[0].split("+", 1)[0] in POSTGRES_TYPES:
        return _postgres_rows(url, erp, since)
    return _sqlalchemy_rows(url, erp, since)
