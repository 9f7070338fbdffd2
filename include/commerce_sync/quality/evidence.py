"""Great Expectations evidence for one validated batch: a Data Docs site an auditor can open.

The row checks already ran in SQL (:mod:`.gate`) and their failures are in ``hub.quarantine``.
Here Great Expectations, through its PostgreSQL datasource, validates two batches of the same
transfer where they are:

* the staged batch (``<suite>.batch``): batch-level expectations, i.e. it is not empty, and, when
  a last good batch exists, the row count the ``row_count_drop`` breaker allows;
* the transfer's quarantine rows (``<suite>.rows``): one ``UnexpectedRowsExpectation`` per row
  expectation of the suite (how many rows broke it), and the findings themselves (record number,
  key, source line, reason; GX lists the first 20, ``hub.quarantine`` holds them all), so the page
  shows what was rejected and why.

The site is rendered to ``<data_docs_dir>/<source>/<transfer_id>/`` and its ``index.html`` path,
relative to ``data_docs_dir``, goes into the ledger row (``details.data_docs``). The auditor's view
serves that directory (``/audit/data-docs/...``).

Feed text is hostile until proven otherwise, and GX writes table cells into its pages unescaped
(its ``.j2`` templates are not autoescaped). So every text the queries hand to GX is HTML-escaped in
SQL (:func:`html_text`), and each rendered page is stripped of scripts and of every reference to a
CDN (:func:`harden_pages`): the pages work offline and carry no code. The view also serves them with
a ``Content-Security-Policy: sandbox`` that forbids scripts, should a page escape both.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from commerce_sync.errors import CommerceSyncError
from commerce_sync.quality.breakers import Decision
from commerce_sync.quality.suites import Suite, ValidationOutcome

log = logging.getLogger(__name__)

_SAFE = re.compile(r"[^A-Za-z0-9_-]+")
# What harden_pages removes from GX's pages: every script (inline or from a CDN; the pages read fine
# without them) and every style sheet, icon or image fetched from another host.
_SCRIPT = re.compile(r"<script\b[^>]*>.*?</script\s*>", re.IGNORECASE | re.DOTALL)
_REMOTE = re.compile(r"<(?:link|img)\b[^>]*\b(?:href|src)\s*=\s*[\"']?(?:https?:)?//[^>]*>", re.IGNORECASE | re.DOTALL)
_REMOTE_CSS_URL = re.compile(r"url\(\s*[\"']?(?:https?:)?//[^)]*\)", re.IGNORECASE)
_HTML_ENTITIES = (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ('"', "&quot;"), ("'", "&#x27;"))
# Failing rows listed per expectation on the page (GX's own cap on query results is 200).
ROWS_SHOWN = 200


@dataclass(frozen=True)
class Evidence:
    """Where the rendered Data Docs of one transfer are."""

    site_dir: Path
    index_relative: str
    success: bool


def sqlalchemy_url(dsn: str) -> str:
    """The hub DSN as a SQLAlchemy URL using psycopg 3."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if dsn.startswith(prefix):
            return "postgresql+psycopg://" + dsn[len(prefix) :]
    raise ValueError(f"not a PostgreSQL URL: {dsn.split('@')[-1]!r}")


def site_relative_dir(source: str, transfer_id: uuid.UUID | str) -> str:
    """``<source>/<transfer_id>`` with characters unsafe in a path replaced (``supplier:acme`` -> ``supplier_acme``)."""
    return f"{_SAFE.sub('_', source)}/{uuid.UUID(str(transfer_id))}"


def _context(site_dir: Path | None) -> Any:
    """An in-memory GX context; with ``site_dir``, a Data Docs site named ``evidence`` there."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    # In memory, no progress bars on task logs, no analytics calls from a machine without internet.
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),
        progress_bars=ProgressBarsConfig(globally=False),
        analytics_enabled=False,
    )
    context = gx.get_context(mode="ephemeral", project_config=config)
    if site_dir is None:
        return context
    context.add_data_docs_site(
        "evidence",
        {
            "class_name": "SiteBuilder",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(site_dir)},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        },
    )
    return context


def gx_exception(info: Any) -> str | None:
    """The exception message in a GX result's ``exception_info`` (flat, or keyed by metric), if any."""
    if not isinstance(info, dict):
        return None
    if info.get("raised_exception"):
        return str(info.get("exception_message"))
    for value in info.values():
        if isinstance(value, dict) and value.get("raised_exception"):
            return str(value.get("exception_message"))
    return None


def _min_rows(decision: Decision | None) -> int:
    """The smallest row count the row-count breaker lets through (1 when there is none)."""
    for measure in decision.measures if decision else ():
        if measure.name == "row_count_drop":
            match = re.search(r"vs ([0-9,]+) in the last good batch", measure.detail)
            if match:
                last = int(match.group(1).replace(",", ""))
                return max(1, math.ceil(last * (100 - measure.limit) / 100))
    return 1


def html_text(expression: str) -> str:
    """SQL that HTML-escapes the text ``expression`` (``&`` first, then ``<>"'``), as ``html.escape`` does.

    GX puts query results into its pages as they are; escaped here, a SKU such as
    ``<img src=x onerror=...>`` reads as text on the page. No ``%``: GX's DBAPI treats it specially.
    """
    for char, entity in _HTML_ENTITIES:
        quoted = char.replace("'", "''")
        expression = f"replace({expression}, '{quoted}', '{entity}')"
    return expression


def harden_pages(site_dir: Path) -> int:
    """Remove scripts and remote style sheets, icons and images from every page of a rendered site.

    Returns how many tags were removed. GX's pages load jQuery, Bootstrap and Vega from public CDNs
    (so they break offline) and run inline scripts; what stays is HTML and GX's own style sheet from
    the site's ``static`` directory.
    """
    removed = 0
    for page in site_dir.rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        text, scripts = _SCRIPT.subn("", text)
        text, remote = _REMOTE.subn("", text)
        text, css = _REMOTE_CSS_URL.subn("none", text)
        remote += css
        if scripts or remote:
            page.write_text(text, encoding="utf-8")
            removed += scripts + remote
    return removed


def share_static(docs_dir: Path, site_dir: Path) -> None:
    """Replace the site's ``static`` (4 MB of GX CSS/JS/fonts, the same for every site) by a
    relative symlink to one shared copy, ``<docs_dir>/_static``: 88 kB per transfer instead of 4 MB.

    The link stays inside ``docs_dir``, so the audit view (which refuses paths resolving outside
    it) still serves it. Concurrent tasks may race to create the shared copy: the loser keeps
    using the winner's.
    """
    site_static = site_dir / "static"
    shared = docs_dir / "_static"
    if not site_static.is_dir() or site_static.is_symlink():
        return
    if not shared.is_dir():
        with contextlib.suppress(OSError):  # another task created it first
            os.replace(site_static, shared)
    if site_static.exists():
        shutil.rmtree(site_static)
    site_static.symlink_to(os.path.relpath(shared, site_dir), target_is_directory=True)


def render(
    dsn: str,
    suite: Suite,
    outcome: ValidationOutcome,
    *,
    dataset: str,
    source: str,
    transfer_id: uuid.UUID | str,
    docs_dir: Path,
    decision: Decision | None = None,
) -> Evidence:
    """Validate the transfer's staged batch and quarantine rows with GX and render Data Docs.

    Call while the staged rows still exist (before staging is cleaned up).
    """
    import great_expectations as gx

    tid = str(uuid.UUID(str(transfer_id)))
    relative = site_relative_dir(source, tid)
    site_dir = docs_dir / relative
    site_dir.mkdir(parents=True, exist_ok=True)
    context = _context(site_dir)
    datasource = context.data_sources.add_postgres("hub", connection_string=sqlalchemy_url(dsn))
    staged = datasource.add_query_asset(
        f"{dataset}_staged", query=f"SELECT * FROM {suite.staging} WHERE transfer_id = '{tid}'"
    )
    rejected = datasource.add_query_asset(
        f"{dataset}_quarantine",
        query=(
            f"SELECT record_no, {html_text('record_key')} AS record_key, source_line, expectation, column_name, "
            f"{html_text('observed_value')} AS observed_value, {html_text('reason')} AS reason, "
            # Concatenation, not format(): GX passes the query through a DBAPI that treats % specially.
            + html_text(
                "'record ' || record_no || ' (key ' || coalesce(record_key, '-') || ', line ' "
                "|| coalesce(source_line::text, '-') || '): ' || reason"
            )
            + " AS finding "
            f"FROM hub.quarantine WHERE transfer_id = '{tid}' AND dataset = '{dataset}'"
        ),
    )

    batch_suite = context.suites.add(gx.ExpectationSuite(name=f"{suite.name}.batch"))
    batch_suite.add_expectation(gx.expectations.ExpectTableRowCountToBeBetween(min_value=_min_rows(decision)))
    rows_suite = context.suites.add(gx.ExpectationSuite(name=f"{suite.name}.rows"))
    # Every quarantined row is a finding: GX lists them (record, key, line, reason) with the count.
    rows_suite.add_expectation(
        gx.expectations.ExpectColumnValuesToBeNull(
            column="finding", description="No row of this transfer is in quarantine (findings listed below)"
        )
    )
    for expectation in suite.expectations:
        rows_suite.add_expectation(
            gx.expectations.UnexpectedRowsExpectation(
                description=(
                    f"{expectation.label} {expectation.kwargs or ''}: rows of transfer {tid} that break it "
                    "(they are in hub.quarantine and were not loaded)"
                )
                .replace("{", "(")
                .replace("}", ")"),
                unexpected_rows_query=(
                    "SELECT record_no, record_key, source_line, observed_value, reason FROM {batch} "
                    f"WHERE expectation = '{expectation.expectation}' AND column_name = '{expectation.column}' "
                    f"ORDER BY record_no LIMIT {ROWS_SHOWN}"
                ),
            )
        )
    definitions = [
        context.validation_definitions.add(
            gx.ValidationDefinition(
                name=f"{suite.name}.batch", data=staged.add_batch_definition_whole_table("all"), suite=batch_suite
            )
        ),
        context.validation_definitions.add(
            gx.ValidationDefinition(
                name=f"{suite.name}.rows", data=rejected.add_batch_definition_whole_table("all"), suite=rows_suite
            )
        ),
    ]
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name=f"{suite.name}_{tid}",
            validation_definitions=definitions,
            actions=[gx.checkpoint.UpdateDataDocsAction(name="data_docs", site_names=["evidence"])],
            result_format={"result_format": "COMPLETE"},
        )
    )
    result = checkpoint.run()
    for validation in result.run_results.values():
        for item in validation.results:
            failure = gx_exception(item.exception_info)
            if failure:
                raise CommerceSyncError(
                    f"Data Docs of {suite.name} for transfer {tid}: {item.expectation_config.type} could not run: "
                    f"{failure}"
                )
    index = site_dir / "index.html"
    if not index.exists():
        raise RuntimeError(f"GX did not render Data Docs into {site_dir}")
    harden_pages(site_dir)
    share_static(docs_dir, site_dir)
    log.info(
        "Data Docs of %s from %s (transfer %s, %d rows, %d quarantined): %s",
        suite.name,
        source,
        tid,
        outcome.rows_evaluated,
        outcome.rows_quarantined,
        index,
    )
    return Evidence(site_dir=site_dir, index_relative=f"{relative}/index.html", success=bool(result.success))
