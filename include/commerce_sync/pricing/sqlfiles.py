"""The pricing SQL, kept in ``pricing/sql/*.sql`` and read once per process.

Each file holds one statement (or a few sent in one round trip, said in its header) or one fragment,
named for what it does, with a header comment that says what it is for and what its ``{name}``
placeholders take. Identifiers and fragments are put in with :mod:`psycopg.sql` only
(``sql_file("row_hash").format(t=sql.Identifier("c"), ...)``); values stay bound parameters
(``%(name)s``). With its placeholders substituted, a file runs as it is in psql (and under EXPLAIN).

The header comment (the leading ``--`` lines) is not sent to the server; a fragment is put in without
its surrounding white space.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from psycopg import sql

PACKAGE = "commerce_sync.pricing"
DIRECTORY = "sql"


@cache
def sql_text(name: str) -> str:
    """The text of ``sql/<name>.sql`` without its header comment and surrounding white space."""
    text = files(PACKAGE).joinpath(DIRECTORY, f"{name}.sql").read_text(encoding="utf-8")
    lines = text.splitlines()
    while lines and (not lines[0].strip() or lines[0].lstrip().startswith("--")):
        lines.pop(0)
    return "\n".join(lines).strip()


@cache
def sql_file(name: str) -> sql.SQL:
    """The statement or fragment of ``sql/<name>.sql``, for :mod:`psycopg.sql` composition or execution."""
    # The files are part of the package (fixed at build time), not input: as trusted as a literal.
    return sql.SQL(sql_text(name))
