"""Airflow notifiers for source alerts (supplier price-change report).

The notifier logs the alert and appends one JSON line to a file under the data directory, so a fresh
install alerts somewhere visible without any mail or chat set-up, and sends it through the operators'
notifiers (SMTP / webhook connections, :func:`commerce_sync.notify.alert`) with the DAG's runbook line.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from airflow.sdk import BaseNotifier

from commerce_sync.config import PriceChangeReport
from commerce_sync.notify import alert, runbook_line
from commerce_sync.sources.price_changes import PriceChangeSummary, alert_line

log = logging.getLogger(__name__)


class LogFileNotifier(BaseNotifier):
    """Log ``message`` as a warning and, when ``path`` is set, append it as a JSON line there.

    Args:
        message: The alert sentence (templated: Airflow context variables may be used).
        details: Extra JSON-serialisable facts (counts, transfer id, report path).
        path: The JSON-lines file to append to; None logs only.
        subject: When set, the alert also goes through the operators' notifiers with this subject and
            the runbook line of the DAG's docs headed ``runbook`` (e.g. ``*Price alert*``).
        runbook: The runbook bullet's head to quote.
    """

    template_fields = ("message",)

    def __init__(
        self,
        message: str,
        details: dict[str, Any] | None = None,
        path: Path | None = None,
        *,
        subject: str | None = None,
        runbook: str = "",
    ) -> None:
        super().__init__()
        self.message = message
        self.details = details or {}
        self.path = path
        self.subject = subject
        self.runbook = runbook

    def notify(self, context: Any) -> None:
        """Write the alert; the run's DAG/task ids are added from ``context`` when present."""
        ti = context.get("ti") if hasattr(context, "get") else None
        entry = {
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "message": self.message,
            "dag_id": getattr(ti, "dag_id", None),
            "task_id": getattr(ti, "task_id", None),
            "run_id": getattr(ti, "run_id", None),
            "map_index": getattr(ti, "map_index", None),
            **self.details,
        }
        log.warning("ALERT: %s", self.message)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(entry, default=str, sort_keys=True) + "\n")
        if self.subject is not None:
            dag = context.get("dag") if hasattr(context, "get") else None
            alert(
                self.subject,
                self.message,
                runbook=runbook_line(getattr(dag, "doc_md", None), self.runbook),
                dag_id=entry["dag_id"],
                run_id=entry["run_id"],
                details={k: v for k, v in entry.items() if k not in ("at", "message", "dag_id", "run_id")},
            )


def price_change_notifier(summary: PriceChangeSummary, settings: PriceChangeReport) -> LogFileNotifier:
    """The configured notifier for a supplier price-change alert (``notifier`` in suppliers.yaml)."""
    from commerce_sync.settings import data_dir

    path = data_dir() / "alerts" / "supplier_price_changes.jsonl" if settings.notifier == "file" else None
    details = {k: v for k, v in asdict(summary).items() if k != "top"}
    return LogFileNotifier(
        alert_line(summary),
        {"kind": "supplier_price_change", **details},
        path,
        subject=f"commerce-sync: supplier price alert ({summary.supplier})",
        runbook="price alert",
    )
