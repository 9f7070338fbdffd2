"""The pricing SQL stays in ``pricing/sql/*.sql``: no Python module of ``pricing/`` builds SQL text
with an f-string, ``%``, ``str.format`` or ``+`` (compose with :mod:`psycopg.sql` instead), and every
file is fit to be composed and run."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import commerce_sync.pricing
from commerce_sync.pricing.sqlfiles import sql_text

PRICING = Path(commerce_sync.pricing.__file__).parent
SQL_DIR = PRICING / "sql"
MODULES = sorted(PRICING.rglob("*.py"))
SQL_FILES = sorted(SQL_DIR.glob("*.sql"))

# Upper-case statement keywords (prose in messages is lower case), or unmistakable lower-case SQL.
SQL_WORDS = re.compile(
    r"\b(SELECT|INSERT|UPDATE|DELETE|CREATE|ALTER|ANALYZE|TRUNCATE|MERGE)\b"
    r"|(?i:\bselect\b.+\bfrom\b|\binsert\s+into\b|\bupdate\s+[\w.]+\s+set\b|\bdelete\s+from\b|\bcreate\s+temp)",
    re.DOTALL,
)


def _text(node: ast.AST) -> str | None:
    """The literal text of a str constant or an f-string (its interpolations as ``{}``)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(str(v.value) if isinstance(v, ast.Constant) else "{}" for v in node.values)
    return None


def sql_built_from_strings(source: str) -> list[tuple[int, str]]:
    """(line, how) of every SQL text built with an f-string, ``%``, ``.format`` or ``+`` in ``source``.

    SQL text is a string literal with SQL keywords, or a name assigned one (``_BASE.format(...)``).
    """
    tree = ast.parse(source)
    sql_names = {
        target.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign) and (text := _text(node.value)) is not None and SQL_WORDS.search(text)
        for target in node.targets
        if isinstance(target, ast.Name)
    }

    def _is_sql(node: ast.AST) -> bool:
        if isinstance(node, ast.Name):
            return node.id in sql_names
        text = _text(node)
        return text is not None and SQL_WORDS.search(text) is not None

    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr) and _is_sql(node):
            found.append((node.lineno, "f-string"))
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod) and _is_sql(node.left):
            found.append((node.lineno, "% formatting"))
        elif (
            isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add) and (_is_sql(node.left) or _is_sql(node.right))
        ):
            found.append((node.lineno, "concatenation"))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("format", "format_map")
            and _is_sql(node.func.value)
        ):
            found.append((node.lineno, "str.format"))
    return found


@pytest.mark.parametrize(
    ("source", "how"),
    [
        ('q = f"SELECT * FROM hub.product WHERE sku = {sku}"', "f-string"),
        ('q = f"""\nupdate hub.offer set price = 1 where {cond}\n"""', "f-string"),
        ('q = "DELETE FROM hub.outbox WHERE id = %s" % i', "% formatting"),
        ('q = "SELECT {cols} FROM t".format(cols=c)', "str.format"),
        ('q = "SELECT a FROM t " + where', "concatenation"),
        ('q = prefix + "INSERT INTO t VALUES (1)"', "concatenation"),
        ('_BASE = """\nSELECT p.* FROM hub.product AS p {scope}\n"""\nq = _BASE.format(scope=s)', "str.format"),
    ],
)
def test_the_check_finds_sql_built_from_strings(source: str, how: str) -> None:
    assert [h for _, h in sql_built_from_strings(source)] == [how]


@pytest.mark.parametrize(
    "source",
    [
        'q = sql.SQL("SELECT {c} FROM t").format(c=sql.Identifier("x"))',
        'q = sql_file("update_offers")',
        'conn.execute("SELECT 1 FROM t WHERE a = %(a)s", {"a": 1})',
        'msg = f"channel {c!r}: {n} changed offers were deleted from hub.channel_offer during the run"',
        'lock = f"channel_offer:{channel_id}"',
    ],
)
def test_the_check_passes_composition_and_prose(source: str) -> None:
    assert sql_built_from_strings(source) == []


@pytest.mark.parametrize("module", MODULES, ids=lambda p: str(p.relative_to(PRICING)))
def test_no_pricing_module_builds_sql_from_strings(module: Path) -> None:
    assert sql_built_from_strings(module.read_text(encoding="utf-8")) == [], (
        f"{module}: put the statement in pricing/sql/ and compose it with psycopg.sql"
    )


def test_the_pricing_sql_is_in_files() -> None:
    assert len(SQL_FILES) >= 40, SQL_FILES


@pytest.mark.parametrize("path", SQL_FILES, ids=lambda p: p.name)
def test_sql_file_is_fit_to_compose_and_run(path: Path) -> None:
    raw = path.read_text(encoding="utf-8")
    assert re.fullmatch(r"[a-z][a-z0-9_]*\.sql", path.name), "name: lower case words, underscores"
    assert raw.startswith("-- "), "begins with a header comment saying what it is for"
    body = sql_text(path.stem)
    assert body and not body.startswith("--"), "the header comment is followed by the SQL"
    # psycopg reads every % as a placeholder (comments and strings included): values as %(name)s only.
    assert re.sub(r"%\(\w+\)s", "", body).count("%") == 0, "a % that is not a %(name)s parameter"
    # A fragment is put in mid-statement: a comment on its last line would swallow what follows.
    assert "--" not in body.splitlines()[-1], "a comment on the last line"
    # Braces are psycopg.sql placeholders: named, so the composition says what goes where.
    assert re.sub(r"\{[a-z_]+\}", "", body).count("{") == 0, "a brace that is not a {name} placeholder"
