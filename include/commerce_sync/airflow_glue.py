"""The thin layer between Airflow tasks and the library: context, connections, error mapping.

Task bodies in ``dags/`` call into :mod:`commerce_sync` through these helpers so that:
- every transfer knows its run, task, try and map index (for the ledger);
- the hub is reached through the ``hub_db`` Airflow connection;
- bad data and bad configuration fail the task without retry and say what to do, while
  transient faults raise a retryable error.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from airflow.sdk import get_current_context, task
from airflow.sdk.definitions.callback import AsyncCallback
from airflow.sdk.definitions.deadline import DeadlineAlert, DeadlineReference
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException

from commerce_sync import registry
from commerce_sync.audit.ledger import RunContext
from commerce_sync.connections import get_connection
from commerce_sync.db import as_data_error, lost_connection_is_transient
from commerce_sync.errors import BreakerTripped, ChannelError, ConfigError, DataError, TransientError
from commerce_sync.notify import FailureNotifier, deadline_missed, runbook_line
from commerce_sync.quality.breakers import OVERRIDE_PARAM, OVERRIDE_REASON_PARAM, Override

log = logging.getLogger(__name__)

HUB_CONN_ID = "hub_db"


def run_context() -> RunContext:
    """The current task instance as a ledger RunContext."""
    context = get_current_context()
    ti = context["ti"]
    return RunContext(
        run_id=ti.run_id,
        dag_id=ti.dag_id,
        task_id=ti.task_id,
        try_number=ti.try_number,
        map_index=ti.map_index,
    )


def hub_dsn() -> str:
    """DSN of the hub database from the ``hub_db`` connection."""
    return get_connection(HUB_CONN_ID).postgres_dsn()


def breaker_override() -> Override | None:
    """The operator's override of tripped breakers for this run, if the run was triggered with one.

    Set by triggering the DAG with the Param ``override_breakers`` = true (and an
    ``override_reason``); the user who triggered the run is taken from the DAG run.
    """
    context = get_current_context()
    params = context.get("params") or {}
    if not params.get(OVERRIDE_PARAM):
        return None
    dag_run = context.get("dag_run")
    by = getattr(dag_run, "triggering_user_name", None) or "unknown (no triggering user on the run)"
    return Override(by=str(by), reason=str(params.get(OVERRIDE_REASON_PARAM) or ""))


@contextmanager
def operator_errors(what: str) -> Iterator[None]:
    """Map library errors to Airflow's retry semantics, with a message an operator can act on.

    Args:
        what: the subject, e.g. ``"supplier 'acme'"``; it starts every failure message.
    """
    try:
        # A terminated backend or a dropped connection is a temporary fault like a network error.
        with lost_connection_is_transient():
            yield
    except ConfigError as exc:
        raise AirflowFailException(
            f"{what}: configuration problem, not retried. {exc}\n"
            "What to do: fix the YAML under include/config or the Airflow connection, then clear the task."
        ) from exc
    except BreakerTripped as exc:
        raise AirflowFailException(
            f"{what}: {exc}\n"
            "What to do: look at the batch (the numbers are in audit.transfer.details->'breakers'). If it is "
            "right (e.g. the catalog really shrank), trigger the DAG again with the Param "
            f"{OVERRIDE_PARAM}=true and an {OVERRIDE_REASON_PARAM}; the override is recorded in the ledger."
        ) from exc
    except DataError as exc:
        raise AirflowFailException(
            f"{what}: the data was refused, not retried; nothing was changed in the hub. {exc}\n"
            "What to do: fix the source data (or ask the supplier/ERP owner to), then clear the task. "
            "Rejected rows are in hub.quarantine; the attempt is in audit.transfer."
        ) from exc
    except ChannelError as exc:
        raise AirflowFailException(
            f"{what}: the channel refused the request, not retried. {exc}\n"
            "What to do: read the channel's message above; fix credentials or offer data, then clear the task."
        ) from exc
    except psycopg.Error as exc:
        refused = as_data_error(exc)
        if refused is None:
            raise
        raise AirflowFailException(
            f"{what}: {refused} Not retried: the same data fails the same way.\n"
            "What to do: find the value in the message (and the rows in hub.quarantine), fix the source data "
            "or widen the check that let it through, then clear the task."
        ) from exc
    except TransientError as exc:
        raise AirflowException(
            f"{what}: temporary fault, will retry with backoff. {exc}\n"
            "What to do: nothing unless retries are exhausted; then check the service's status and clear the task."
        ) from exc


def check_hub_catalog_task() -> dict[str, Any]:
    """The hub catalog suite (GX on PostgreSQL) as a task runs it: evidence in the ledger, refusal above the limit.

    Shared by the pricing DAG (for changes above the fast-path size) and ``hub_maintenance`` (daily).
    """
    from commerce_sync.config import data_docs_root, load_quality
    from commerce_sync.lineage import report_transfer
    from commerce_sync.quality.catalog import check_hub_catalog

    with operator_errors("hub catalog"):
        quality = load_quality()
        outcome = check_hub_catalog(
            hub_dsn(),
            run_context(),
            data_docs_root(quality),
            max_failing_skus=quality.hub_catalog.max_failing_skus,
            on_transfer=report_transfer,
        )
    return outcome.summary()


# Celery queues (ignored by the LocalExecutor): marketplace API calls on one queue, database and CPU
# work on another, so a slow or throttled marketplace never holds the slots the hub work needs.
HUB_QUEUE = os.environ.get("COMMERCE_SYNC_HUB_QUEUE", "default")
MARKETPLACE_QUEUE = os.environ.get("COMMERCE_SYNC_MARKETPLACE_QUEUE", "marketplace")

# Defaults every DAG uses: retries with exponential backoff for transient faults (bad data fails
# without retry through AirflowFailException, see operator_errors); a final failure notifies the
# operators (SMTP / webhook connections, commerce_sync.notify) with the runbook line that applies;
# tasks go to the database/CPU queue unless they talk to a marketplace (MARKETPLACE_QUEUE).
DEFAULT_ARGS = {
    "owner": "data-engineering",
    "retries": 3,
    # COMMERCE_SYNC_RETRY_DELAY_SECONDS shortens it where a test must see a retry soon.
    "retry_delay": timedelta(seconds=float(os.environ.get("COMMERCE_SYNC_RETRY_DELAY_SECONDS", "30"))),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": timedelta(minutes=10),
    "on_failure_callback": FailureNotifier(),
    "queue": HUB_QUEUE,
}
START_DATE = datetime(2026, 1, 1, tzinfo=UTC)

MAX_PARALLEL_CHANNELS = 4
"""Mapped per-channel/per-supplier tasks of one run running at once (``max_active_tis_per_dagrun``)."""

LATENCY_CRITICAL: dict[str, Any] = {"priority_weight": 10, "weight_rule": "absolute"}
"""Task arguments of the tasks between an ERP change or a sale and the marketplaces: when more task
instances are queued than the executor has slots, the scheduler starts these first (every other task
has the default weight 1), so a single price change does not wait behind a feed channel's pricing or a
reconciliation."""


def channels_rung(run_type: str, events: Iterable[Mapping[str, Any]]) -> set[str] | None:
    """The channels a run's triggering asset events name (their ``extra``), or None for every channel.

    An order doorbell event names them in ``payload.channels``, a shop webhook event in ``channel``. A run
    the cron (or a person) started, or one with an event naming no channel (e.g. posted by hand to the
    REST API), imports every channel.
    """
    if run_type != "asset_triggered":
        return None
    named: set[str] = set()
    for extra in events:
        payload = extra.get("payload")
        channels = payload.get("channels") if isinstance(payload, Mapping) else [extra.get("channel")]
        if not isinstance(channels, list) or not channels or not all(isinstance(c, str) and c for c in channels):
            return None
        named.update(channels)
    return named or None


@task
def _channels_of_kind(
    kind: str, capability: registry.Capability, family: registry.Family | None, rung_only: bool = False
) -> list[str]:
    """The enabled channels of ``kind`` whose kind has ``capability`` (config order); with ``rung_only``,
    only those the run's triggering events name (:func:`channels_rung`)."""
    from commerce_sync.config import load_config

    with operator_errors("channels.yaml"):
        channels = [c for c in load_config().channels if c.kind == kind]
        chosen = registry.channels_that(channels, capability, family)
    if rung_only and chosen:
        context = get_current_context()
        events = [
            dict(event.extra or {}) for per_asset in context["triggering_asset_events"].values() for event in per_asset
        ]
        rung = channels_rung(str(getattr(context["dag_run"], "run_type", "")), events)
        if rung is not None:
            left = [c for c in chosen if c not in rung]
            chosen = [c for c in chosen if c in rung]
            if left:
                log.info("%s: not rung by this run's events (the next ring or the cron reads them)", left)
    return chosen


def outbox_channels(config: Any) -> list[Any]:
    """The enabled channels whose changes go through ``hub.outbox`` and ``hub_to_marketplaces``."""
    return [
        c
        for c in config.channels
        if c.enabled and registry.get(c.kind).family == "marketplace" and registry.get(c.kind).can("publish")
    ]


def start_publish(results: Iterable[Any]) -> dict[str, str]:
    """The body of a ``start_marketplace_publish`` task (outlet: the offer asset ``hub_to_marketplaces`` is
    scheduled on): succeed, and so start that DAG, when the tasks before it left something to send;
    skip when their inline publishes (``channels.publish.publish_inline``, under ``inline`` in each
    task's answer) sent everything."""
    left: dict[str, str] = {}
    for result in results:
        inline = (result or {}).get("inline")
        if not isinstance(inline, Mapping):
            return {"*": "changes queued and not sent inline (COMMERCE_SYNC_INLINE_PUBLISH=0, or a large change)"}
        left.update(inline.get("left") or {})
    if not left:
        raise AirflowSkipException("every queued change was sent inline: no hub_to_marketplaces run needed")
    return left


def per_kind(
    worker: Any,
    verb: str,
    capability: registry.Capability,
    family: registry.Family | None = None,
    *,
    rung_only: bool = False,
) -> list[Any]:
    """Per registered kind with ``capability``: ``list_<kind>_channels``, then ``<verb>_<kind>`` mapped over
    that kind's enabled channels in the kind's API pool (``worker`` takes ``channel_id``).

    The pool bounds concurrent calls to a marketplace's API across DAGs (publish, read back, orders);
    the client's token bucket bounds their rate. (One list task for all kinds would save start-ups, but
    Airflow cannot map over one key of a task's output.) A kind without enabled channels gets an empty
    list: its task is skipped. ``rung_only``: in a run started by asset events, only the channels the
    events name (:func:`channels_rung`). Returns the mapped tasks, in registry order.
    """
    # The list task is on the path its worker is on: it takes the worker's priority.
    priority = {k: v for k, v in worker.kwargs.items() if k in ("priority_weight", "weight_rule")}
    mapped = []
    for kind in registry.kinds(family, capability):
        channels = _channels_of_kind.override(task_id=f"list_{kind.name}_channels", **priority)(
            kind.name, capability, family, rung_only
        )
        mapped.append(worker.override(task_id=f"{verb}_{kind.name}", pool=kind.pool).expand(channel_id=channels))
    return mapped


DEADLINE_ENV_PREFIX = "COMMERCE_SYNC_DEADLINE_"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*$")


def parse_duration(raw: str, name: str) -> timedelta | None:
    """``"10"``/``"10m"`` = 10 minutes, ``"90s"``, ``"2h"``; ``"0"`` or ``"off"`` = no deadline.

    Raises:
        ConfigError: anything else, naming the variable.
    """
    if raw.strip().lower() in ("off", "none", "0"):
        return None
    match = _DURATION.match(raw)
    if not match:
        raise ConfigError(f"{name}={raw!r}: expected minutes (10), or 90s / 10m / 2h, or off")
    value, unit = float(match.group(1)), match.group(2) or "m"
    delta = (
        timedelta(seconds=value) if unit == "s" else timedelta(minutes=value) if unit == "m" else timedelta(hours=value)
    )
    return delta if delta > timedelta(0) else None


def sync_deadline(dag_id: str, doc_md: str | None, *, default: timedelta, what: str) -> list[DeadlineAlert]:
    """The DAG's deadline alert: notify when a run has not finished ``default`` after it was queued.

    ``COMMERCE_SYNC_DEADLINE_<DAG_ID>`` overrides the interval (see :func:`parse_duration`; read when the
    DAG file is parsed). The alert goes through the notifiers (:func:`commerce_sync.notify.deadline_missed`,
    on the triggerer) with the DAG's ``*Deadline missed*`` runbook line.

    Args:
        dag_id: the DAG's id (names the variable).
        doc_md: the DAG's docs, whose runbook says what to do about a late run.
        default: the interval when the variable is not set.
        what: what is late, e.g. "ERP sync" (the alert says "ERP sync not finished 0:10:00 after it was queued").
    """
    name = DEADLINE_ENV_PREFIX + dag_id.upper()
    raw = os.environ.get(name)
    interval = default if raw is None else parse_duration(raw, name)
    if interval is None:
        return []
    line = runbook_line(doc_md, "deadline missed")
    return [
        DeadlineAlert(
            reference=DeadlineReference.DAGRUN_QUEUED_AT,
            interval=interval,
            callback=AsyncCallback(
                deadline_missed, kwargs={"what": f"{what} not finished {interval} after it was queued", "runbook": line}
            ),
            name=f"{dag_id}_late",
        )
    ]


def label_map_index(**values: str) -> None:
    """Put ``values`` into the task's context so ``map_index_template`` (e.g. ``"{{ channel_id }}"``) names
    the mapped instance after what it works on, in the UI and the logs."""
    context = get_current_context()
    for key, value in values.items():
        context[key] = value  # type: ignore[literal-required]
