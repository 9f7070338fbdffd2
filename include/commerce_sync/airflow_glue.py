"""The thin layer between Airflow tasks and the library: context, connections, error mapping.

Task bodies in ``dags/`` call into :mod:`commerce_sync` through these helpers so that:
- every transfer knows its run, task, try and map index (for the ledger);
- the hub is reached through the ``hub_db`` Airflow connection;
- bad data and bad configuration fail the task without retry and say what to do, while
  transient faults raise a retryable error.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from airflow.sdk import get_current_context
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from commerce_sync.audit.ledger import RunContext
from commerce_sync.connections import get_connection
from commerce_sync.db import as_data_error, lost_connection_is_transient
from commerce_sync.errors import BreakerTripped, ChannelError, ConfigError, DataError, TransientError
from commerce_sync.quality.breakers import OVERRIDE_PARAM, OVERRIDE_REASON_PARAM, Override

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


# Defaults every DAG uses: retries with exponential backoff for transient faults (bad data fails
# without retry through AirflowFailException, see operator_errors).
DEFAULT_ARGS = {
    "owner": "data-engineering",
    "retries": 3,
    "retry_delay": timedelta(seconds=30),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": timedelta(minutes=10),
}
START_DATE = datetime(2026, 1, 1, tzinfo=UTC)
