"""Supplier price-change report: which purchase prices moved a lot in one supplier load.

:func:`record` runs inside the load's transaction, before the merge, and compares the typed, valid
staged offers with what ``hub.supplier_offer`` holds: moves beyond ``threshold_pct`` (and currency
changes) become rows of ``hub.supplier_price_change``; their count and digest go into the ledger row.
After the commit, :func:`publish` writes the CSV report, logs the top lines and, above the alert
threshold, calls the notifier. A re-delivered file is a duplicate transfer and reports nothing again.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from commerce_sync.config import PriceChangeReport
from commerce_sync.csv_export import write_csv
from commerce_sync.settings import data_dir

log = logging.getLogger(__name__)

CSV_HEADER = (
    "supplier",
    "supplier_sku",
    "gtin",
    "old_price",
    "old_currency",
    "new_price",
    "new_currency",
    "change_pct",
    "alert",
)

_INSERT = sql.SQL(
    """
    INSERT INTO hub.supplier_price_change
           (transfer_id, supplier, supplier_sku, gtin, old_price, old_currency, new_price, new_currency,
            change_pct, alert)
    SELECT %(transfer_id)s, s.supplier, s.supplier_sku, s.gtin, t.purchase_price, t.currency, s.purchase_price,
           s.currency, c.change_pct, c.change_pct IS NULL OR abs(c.change_pct) > %(alert_pct)s
      FROM ({source}) AS s
      JOIN hub.supplier_offer AS t ON t.supplier = s.supplier AND t.supplier_sku = s.supplier_sku
     CROSS JOIN LATERAL (SELECT CASE WHEN t.currency = s.currency
                                     THEN round((s.purchase_price - t.purchase_price) * 100 / t.purchase_price, 2)
                                END AS change_pct) AS c
     WHERE t.purchase_price IS NOT NULL AND s.purchase_price IS NOT NULL  -- a first price (stock feed first) is no move
       AND (t.currency <> s.currency OR abs(c.change_pct) > %(threshold_pct)s)
    """
)

_SUMMARY = """
    SELECT count(*), count(*) FILTER (WHERE alert), max(abs(change_pct)),
           coalesce(string_agg(concat_ws('|', supplier_sku, old_price, old_currency, new_price, new_currency,
                                         change_pct), E'\\n' ORDER BY supplier_sku), '')
      FROM hub.supplier_price_change WHERE transfer_id = %s
"""

_ROWS = """
    SELECT supplier, supplier_sku, gtin, old_price, old_currency, new_price, new_currency, change_pct, alert
      FROM hub.supplier_price_change WHERE transfer_id = %s
     ORDER BY abs(change_pct) DESC NULLS FIRST, supplier_sku
"""


@dataclass(frozen=True)
class PriceChangeSummary:
    """What one load reported; ``alert`` is the decision to notify."""

    supplier: str
    transfer_id: str
    reported: int
    beyond_alert: int
    max_abs_pct: str | None
    digest: str
    alert: bool
    threshold_pct: str
    alert_pct: str
    csv_path: str | None = None
    top: list[str] = field(default_factory=list)

    def ledger_details(self) -> dict[str, Any]:
        """The part that goes into the ledger row's details (no file paths: they are not evidence)."""
        return {
            "reported": self.reported,
            "beyond_alert": self.beyond_alert,
            "max_abs_pct": self.max_abs_pct,
            "sha256": self.digest,
            "alert": self.alert,
            "threshold_pct": self.threshold_pct,
            "alert_pct": self.alert_pct,
        }


def record(
    db: psycopg.Connection,
    typed_source: sql.Composable,
    params: dict[str, Any],
    supplier: str,
    settings: PriceChangeReport,
) -> PriceChangeSummary:
    """Insert this transfer's reportable price moves (call before the merge, same transaction).

    Args:
        db: The load's connection (its transaction also holds the merge and the ledger row).
        typed_source: SELECT of the typed valid staged offers (supplier, supplier_sku, gtin,
            purchase_price, currency), parameterised by ``params``.
        params: Query parameters of ``typed_source``; must hold ``transfer_id``.
        supplier: The supplier id, for the summary.
        settings: Thresholds.
    """
    db.execute(
        _INSERT.format(source=typed_source),
        {**params, "threshold_pct": settings.threshold_pct, "alert_pct": settings.alert_pct},
    )
    row = db.execute(_SUMMARY, (params["transfer_id"],)).fetchone()
    assert row is not None
    reported, beyond, max_abs, canonical = row
    return PriceChangeSummary(
        supplier=supplier,
        transfer_id=str(params["transfer_id"]),
        reported=reported,
        beyond_alert=beyond,
        max_abs_pct=None if max_abs is None else str(max_abs),
        digest=hashlib.sha256(canonical.encode("utf-8")).hexdigest(),
        alert=beyond > 0 or reported > settings.alert_count,
        threshold_pct=str(settings.threshold_pct),
        alert_pct=str(settings.alert_pct),
    )


def _line(row: tuple[Any, ...]) -> str:
    supplier, sku, gtin, old, old_cur, new, new_cur, pct, alert = row
    move = "currency changed" if pct is None else f"{pct:+}%"
    flag = " ALERT" if alert else ""
    return f"{supplier} {sku} (gtin {gtin or '-'}): {old} {old_cur} -> {new} {new_cur} ({move}){flag}"


def publish(dsn: str, summary: PriceChangeSummary, settings: PriceChangeReport) -> PriceChangeSummary:
    """After the commit: CSV under the data dir, top lines in the task log; returns the summary with both.

    Nothing is written when nothing moved beyond the threshold.
    """
    if summary.reported == 0:
        return summary
    from commerce_sync.db import connect

    with connect(dsn) as db:
        rows = db.execute(_ROWS, (summary.transfer_id,)).fetchall()
    path = data_dir() / "reports" / "supplier_price_changes" / f"{summary.supplier}-{summary.transfer_id}.csv"
    write_csv(path, CSV_HEADER, ([*r[:7], "" if r[7] is None else r[7], "yes" if r[8] else "no"] for r in rows))
    top = [_line(r) for r in rows[: settings.log_top]]
    log.warning(
        "supplier %s: %d purchase price(s) moved beyond +/-%s%% (%d beyond the alert threshold +/-%s%%); "
        "report %s; top %d:\n  %s",
        summary.supplier,
        summary.reported,
        summary.threshold_pct,
        summary.beyond_alert,
        summary.alert_pct,
        path,
        len(top),
        "\n  ".join(top),
    )
    return PriceChangeSummary(**{**asdict(summary), "csv_path": str(path), "top": top})


def alert_line(summary: PriceChangeSummary) -> str:
    """One sentence for a notification: who, how many, how much, where the list is."""
    return (
        f"supplier {summary.supplier}: {summary.reported} purchase price(s) moved beyond "
        f"+/-{summary.threshold_pct}% ({summary.beyond_alert} beyond +/-{summary.alert_pct}%, largest "
        f"{summary.max_abs_pct or 'currency change'}%); transfer {summary.transfer_id}; "
        f"list: {summary.csv_path or 'hub.supplier_price_change'}. Check the supplier's price list before "
        "pricing publishes it (the pricing gates may hold it)."
    )
