"""Operators' view of health: per source and channel, and whether the event triggers are alive.

Used by ``commerce-sync status`` and the header of the auditor's view. Per source (``erp``,
``supplier:<id>``) and channel (``channel:<id>``): the last successful and the last failed transfer in
the ledger, the outbox backlog (pending rows and the age of the oldest), open quarantine rows and held
price moves waiting for approval. Read-only: SELECTs on the hub.

Event triggers are read generically from Airflow's metadata database (its ``asset_watcher``,
``trigger`` and ``job`` tables): one line per asset watcher, alive when a triggerer that is running and
heartbeating holds its trigger. Without watchers the answer is "none configured"; without access to
Airflow's database it says so instead of guessing.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

HEARTBEAT_GRACE = timedelta(seconds=90)
"""A triggerer whose last heartbeat is older than this is taken as dead (its default heartrate is 5 s)."""

_ENDPOINTS_SQL = """
WITH transfers AS (
    SELECT CASE
               WHEN target LIKE 'channel:%' THEN target
               WHEN source LIKE 'channel:%' THEN source
               WHEN target = 'hub' AND source NOT LIKE 'hub%' AND source NOT LIKE 'config:%'
                    AND source NOT LIKE 'approval:%' THEN source
           END AS endpoint,
           status, finished_at
      FROM audit.transfer
), ledger AS (
    SELECT endpoint,
           max(finished_at) FILTER (WHERE status = 'success') AS last_success,
           max(finished_at) FILTER (WHERE status = 'failed') AS last_failure
      FROM transfers WHERE endpoint IS NOT NULL GROUP BY endpoint
), backlog AS (
    SELECT 'channel:' || channel AS endpoint, count(*) AS outbox_pending, min(created_at) AS oldest_pending
      FROM hub.outbox WHERE status = 'pending' GROUP BY channel
), quarantine AS (
    SELECT source AS endpoint, count(*) AS quarantine_open
      FROM hub.quarantine WHERE status = 'open' GROUP BY source
), held AS (
    SELECT 'channel:' || channel AS endpoint, count(*) AS held_moves
      FROM hub.price_proposal_item WHERE status = 'pending' GROUP BY channel
)
SELECT endpoint, l.last_success, l.last_failure,
       coalesce(b.outbox_pending, 0), b.oldest_pending,
       coalesce(q.quarantine_open, 0), coalesce(h.held_moves, 0)
  FROM ledger l
  FULL JOIN backlog b USING (endpoint)
  FULL JOIN quarantine q USING (endpoint)
  FULL JOIN held h USING (endpoint)
 ORDER BY endpoint LIKE 'channel:%', endpoint
"""

_TRIGGERS_SQL = """
SELECT aw.name, a.name, t.classpath, t.triggerer_id, j.state, j.latest_heartbeat
  FROM asset_watcher aw
  JOIN asset a ON a.id = aw.asset_id
  LEFT JOIN "trigger" t ON t.id = aw.trigger_id
  LEFT JOIN job j ON j.id = t.triggerer_id
 ORDER BY a.name, aw.name
"""


@dataclass(frozen=True)
class EndpointHealth:
    """One source or channel."""

    endpoint: str
    last_success: datetime | None
    last_failure: datetime | None
    outbox_pending: int
    oldest_pending: datetime | None
    quarantine_open: int
    held_moves: int

    @property
    def kind(self) -> str:
        return "channel" if self.endpoint.startswith("channel:") else "source"


@dataclass(frozen=True)
class TriggerHealth:
    """One asset watcher of Airflow: which trigger, and whether a live triggerer runs it."""

    watcher: str
    asset: str
    trigger: str | None
    alive: bool
    detail: str


@dataclass(frozen=True)
class Health:
    """Everything ``commerce-sync status`` shows."""

    at: datetime
    endpoints: list[EndpointHealth]
    triggers: list[TriggerHealth]
    triggers_note: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "endpoints": [{**asdict(e), "kind": e.kind} for e in self.endpoints],
            "triggers": [asdict(t) for t in self.triggers],
            "triggers_note": self.triggers_note,
        }


def endpoint_health(conn: psycopg.Connection) -> list[EndpointHealth]:
    """Per source and channel, from the ledger, the outbox, the quarantine and the held price moves."""
    return [EndpointHealth(*row) for row in conn.execute(_ENDPOINTS_SQL).fetchall()]


def airflow_database_url() -> str | None:
    """Airflow's metadata database: ``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN``, else Airflow's own configuration."""
    url = os.environ.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN")
    if url:
        return url
    try:
        from airflow.configuration import conf

        return str(conf.get("database", "sql_alchemy_conn"))
    except Exception:  # Airflow not configured in this process
        return None


def trigger_health(url: str | None, now: datetime | None = None) -> tuple[list[TriggerHealth], str]:
    """The asset watchers in Airflow's database at ``url`` and whether each is alive, with a summary note."""
    if not url:
        return [], "unknown: Airflow's metadata database is not configured here (AIRFLOW__DATABASE__SQL_ALCHEMY_CONN)"
    import sqlalchemy

    now = now or datetime.now(UTC)
    try:
        engine = sqlalchemy.create_engine(url)
        try:
            with engine.connect() as conn:
                rows = conn.execute(sqlalchemy.text(_TRIGGERS_SQL)).fetchall()
        finally:
            engine.dispose()
    except Exception as exc:  # another Airflow version's schema, or the database is down
        return [], f"unknown: Airflow's metadata database could not be read ({type(exc).__name__})"
    found = []
    for watcher, asset, classpath, triggerer_id, state, heartbeat in rows:
        if isinstance(heartbeat, str):  # SQLite hands back text
            heartbeat = datetime.fromisoformat(heartbeat)
        if heartbeat is not None and heartbeat.tzinfo is None:
            heartbeat = heartbeat.replace(tzinfo=UTC)
        if classpath is None:
            alive, detail = False, "no trigger (the DAG is paused or was never parsed)"
        elif triggerer_id is None:
            alive, detail = False, "trigger not picked up by any triggerer (is one running?)"
        elif state != "running" or heartbeat is None or now - heartbeat > HEARTBEAT_GRACE:
            alive, detail = (
                False,
                f"its triggerer (job {triggerer_id}) is {state or 'gone'}, last heartbeat {heartbeat}",
            )
        else:
            alive, detail = (
                True,
                f"triggerer job {triggerer_id}, heartbeat {int((now - heartbeat).total_seconds())} s ago",
            )
        found.append(TriggerHealth(watcher, asset, classpath, alive, detail))
    if not found:
        return [], "none configured"
    dead = sum(not t.alive for t in found)
    return found, f"{len(found) - dead} of {len(found)} alive"


def health(conn: psycopg.Connection, airflow_url: str | None = None) -> Health:
    """The whole picture: hub endpoints and Airflow's event triggers."""
    triggers, note = trigger_health(airflow_url if airflow_url is not None else airflow_database_url())
    return Health(datetime.now(UTC), endpoint_health(conn), triggers, note)


def _when(value: datetime | None, now: datetime) -> str:
    if value is None:
        return "never"
    age = now - value
    if age < timedelta(hours=1):
        ago = f"{int(age.total_seconds() // 60)} min ago"
    elif age < timedelta(days=2):
        ago = f"{age.total_seconds() / 3600:.1f} h ago"
    else:
        ago = f"{age.days} d ago"
    return f"{value.astimezone(UTC):%Y-%m-%d %H:%M} UTC ({ago})"


def format_health(report: Health) -> str:
    """The text ``commerce-sync status`` prints."""
    now = report.at
    lines = [f"{'source / channel':24} {'last success':34} {'backlog':>8} {'quarantine':>10} {'held':>5}  note"]
    for e in report.endpoints:
        notes = []
        if e.last_failure is not None and (e.last_success is None or e.last_failure > e.last_success):
            notes.append(f"last transfer FAILED {_when(e.last_failure, now)}")
        if e.oldest_pending is not None:
            notes.append(f"oldest pending {_when(e.oldest_pending, now)}")
        lines.append(
            f"{e.endpoint:24} {_when(e.last_success, now):34} {e.outbox_pending:>8} {e.quarantine_open:>10} "
            f"{e.held_moves:>5}  {'; '.join(notes)}".rstrip()
        )
    if not report.endpoints:
        lines.append("(no transfers in the ledger yet)")
    lines += ["", f"event triggers: {report.triggers_note}"]
    lines += [f"  {'alive' if t.alive else 'DEAD '}  {t.asset} / {t.watcher}: {t.detail}" for t in report.triggers]
    return "\n".join(lines)
