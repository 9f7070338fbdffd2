"""Every ``pricing/sql/*.sql`` file is used by the code and renders through psycopg (real PostgreSQL).

Rendering needs a connection (``as_string``, client-side binding with ``mogrify``): a file whose
placeholders, parameters or composition do not fit fails here, before any pricing test runs it.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import ClientCursor, sql

import commerce_sync.pricing
from commerce_sync.db import ensure_server, with_database
from commerce_sync.pricing import compute, proposals
from commerce_sync.pricing.sqlfiles import sql_file, sql_text
from tests.conftest import BASE_URL

PRICING = Path(commerce_sync.pricing.__file__).parent
SQL_FILES = sorted(p.stem for p in (PRICING / "sql").glob("*.sql"))

# How the code composes each file that has {name} placeholders (a new one must be added here).
COMPOSED: dict[str, list[Callable[[], sql.Composed]]] = {
    "price_hash": [lambda: compute.price_hash("c"), lambda: compute.price_hash("o")],
    "row_hash": [
        lambda: compute.row_hash(sql.Identifier("p", "price_hash"), "c"),
        lambda: compute.row_hash(compute.price_hash("o"), "c"),
    ],
    "scope_join": [lambda: compute.base_statement(incremental=True)],
    "create_pricing_base": [
        lambda: compute.base_statement(incremental=False),
        lambda: compute.base_statement(incremental=True),
    ],
    "create_offer_change": [compute.changes_statement],
    "keep_live_price": [compute.keep_live_price_statement],
    "write_field_changes": [compute.write_field_changes_statement],
    "create_held_change": [proposals.held_change_statement],
}


@pytest.fixture(scope="module")
def conn() -> Iterator[psycopg.Connection]:
    """A connection to the server's maintenance database: rendering reads no table."""
    ensure_server(BASE_URL)
    with psycopg.connect(with_database(BASE_URL, "postgres"), autocommit=True) as connection:
        yield connection


def _placeholders(text: str) -> set[str]:
    return set(re.findall(r"\{([a-z_]+)\}", text))


def _render(conn: psycopg.Connection, statement: sql.SQL | sql.Composed) -> str:
    """The statement as the server would get it, every %(name)s bound client-side (to NULL)."""
    text = statement.as_string(conn)
    names = set(re.findall(r"%\((\w+)\)s", text))
    with ClientCursor(conn) as cur:
        return cur.mogrify(statement, dict.fromkeys(names)) if names else cur.mogrify(statement)


def _referenced_names() -> dict[str, list[str]]:
    """sql_file("name") calls in the pricing modules: name -> where (every call takes a literal name)."""
    found: dict[str, list[str]] = {}
    for module in sorted(PRICING.rglob("*.py")):
        for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "sql_file":
                (arg,) = node.args
                assert isinstance(arg, ast.Constant) and isinstance(arg.value, str), (
                    f"{module.name}:{node.lineno}: sql_file takes a literal name (so no file is an orphan)"
                )
                found.setdefault(arg.value, []).append(f"{module.name}:{node.lineno}")
    return found


def test_every_sql_file_is_used_and_every_used_file_exists() -> None:
    referenced = _referenced_names()
    assert sorted(set(SQL_FILES) - set(referenced)) == [], "orphan .sql files (no sql_file call)"
    assert sorted(set(referenced) - set(SQL_FILES)) == [], "sql_file names without a file"


def test_every_file_with_placeholders_is_composed_here() -> None:
    with_placeholders = {name for name in SQL_FILES if _placeholders(sql_text(name))}
    assert with_placeholders == set(COMPOSED)


@pytest.mark.parametrize("name", SQL_FILES)
def test_sql_file_loads_and_renders(conn: psycopg.Connection, name: str) -> None:
    body = sql_text(name)
    assert sql_file(name) is sql_file(name), "read once"
    assert sql_file(name).as_string(conn) == body
    if _placeholders(body):
        return  # rendered composed below
    rendered = _render(conn, sql_file(name))
    if "%(" in body:
        assert "%(" not in rendered and "NULL" in rendered, "every parameter bound"
    else:
        assert rendered == body


@pytest.mark.parametrize(("name", "compose"), [(n, c) for n, cs in COMPOSED.items() for c in cs])
def test_composed_sql_renders(conn: psycopg.Connection, name: str, compose: Callable[[], sql.Composed]) -> None:
    statement = compose()
    text = statement.as_string(conn)
    assert "{" not in text and "}" not in text, "a placeholder left unformatted"
    # The file's own text is in the statement (around its placeholders).
    for piece in re.split(r"\{[a-z_]+\}", sql_text(name)):
        assert piece.strip() in text
    assert "%(" not in _render(conn, statement)


def test_hash_fragments_name_the_alias_given(conn: psycopg.Connection) -> None:
    assert compute.price_hash("o").as_string(conn).count('"o".') == 11
    row = compute.row_hash(sql.Identifier("i", "price_hash"), "o").as_string(conn)
    assert row == """md5(concat_ws('|', "i"."price_hash", "o".quantity, "o".availability))"""
