"""Which supplier feeds a scheduled run loads: each feed on its own interval (``every_minutes``).

The supplier DAG runs every :data:`GRID_MINUTES`; a scheduled run loads a feed when its last successful
load (a ``not modified`` or ``duplicate`` check counts) is at least ``every_minutes`` minus half a run
old, so an hourly catalogue loads once an hour and a 15-minute stock feed every run. A feed that failed
is due again at the next run. Manual runs load every feed (the caller decides).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from psycopg.rows import tuple_row

from commerce_sync.config import Supplier
from commerce_sync.db import connect

GRID_MINUTES = 15
DATASET = "supplier_offer"

_LAST_SUCCESS = """
    SELECT source, max(finished_at) FROM audit.transfer
     WHERE dataset = %s AND status = 'success' AND source = ANY(%s)
     GROUP BY source
"""


def due_feeds(dsn: str, suppliers: list[Supplier], now: datetime | None = None) -> list[Supplier]:
    """The feed views (:meth:`Supplier.feed_views`) of enabled suppliers that are due for a load."""
    views = [view for supplier in suppliers if supplier.enabled for view in supplier.feed_views()]
    with connect(dsn) as db:
        cur = db.cursor(row_factory=tuple_row)
        last: dict[str, datetime] = dict(cur.execute(_LAST_SUCCESS, (DATASET, [v.source for v in views])).fetchall())
    moment = now or datetime.now(UTC)
    slack = timedelta(minutes=GRID_MINUTES / 2)
    return [
        view
        for view in views
        if (when := last.get(view.source)) is None
        or moment - when >= timedelta(minutes=view.spec.every_minutes) - slack
    ]
