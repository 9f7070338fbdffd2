"""Operator notifications: SMTP and webhook notifiers from Airflow connections, and :func:`alert`.

Two channels, each configured by an Airflow connection (absent connection = channel off):

- ``commerce_sync_smtp`` (:data:`SMTP_CONN_ID`): ``host``, ``port`` (default 25), optional ``login`` /
  ``password``; ``extra``: ``{"from": "airflow@shop.example", "to": ["ops@shop.example"],
  "starttls": false, "ssl": false, "timeout": 10}`` (``to`` may be a comma-separated string).
- ``commerce_sync_webhook`` (:data:`WEBHOOK_CONN_ID`): ``host`` is the URL the JSON message is POSTed
  to (``https://hooks.example/path``); an optional ``password`` is sent as ``Authorization: Bearer …``;
  ``extra``: ``{"headers": {...}, "timeout": 10}``.

Every message names the DAG, the run and the runbook line that applies. :func:`alert` is for product
code outside Airflow callbacks (oversold order lines, a tripped breaker, a supplier price alert): it
sends through every configured channel and never raises. :class:`FailureNotifier` is the tasks'
``on_failure_callback`` (it picks the runbook line from the DAG's ``doc_md`` by the error message), and
:func:`deadline_missed` is the DAGs' deadline-alert callback (it runs on the triggerer).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import smtplib
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

import requests
from airflow.sdk import BaseNotifier

from commerce_sync.connections import ConnectionInfo, get_connection
from commerce_sync.errors import BreakerTripped, ConfigError

log = logging.getLogger(__name__)

SMTP_CONN_ID = "commerce_sync_smtp"
WEBHOOK_CONN_ID = "commerce_sync_webhook"
DEFAULT_TIMEOUT = 10.0
NO_RUNBOOK = "No runbook entry matches: read the DAG's docs (runbook) and the task log."


@dataclass(frozen=True)
class Message:
    """One notification: what happened, where, and what the operator should do.

    Args:
        subject: one line, e.g. "commerce-sync: erp_to_hub_products failed".
        body: the facts (the error message, counts).
        runbook: the runbook line that applies (what to do).
        dag_id: the DAG concerned, if any.
        run_id: the DAG run concerned, if any.
        details: JSON-serialisable extras (task id, map index, transfer id, counts).
    """

    subject: str
    body: str
    runbook: str
    dag_id: str | None = None
    run_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def text(self) -> str:
        """The plain-text form (mail body, log)."""
        lines = [
            self.subject,
            "",
            f"DAG: {self.dag_id or '-'}",
            f"Run: {self.run_id or '-'}",
            f"At: {self.at}",
            "",
            self.body,
            "",
            f"Runbook: {self.runbook}",
        ]
        if self.details:
            lines += ["", "Details:"] + [f"  {key}: {value}" for key, value in sorted(self.details.items())]
        return "\n".join(lines) + "\n"

    def payload(self) -> dict[str, Any]:
        """The JSON form (webhook body)."""
        return {
            "subject": self.subject,
            "body": self.body,
            "runbook": self.runbook,
            "dag_id": self.dag_id,
            "run_id": self.run_id,
            "at": self.at,
            "details": self.details,
        }


def _recipients(conn: ConnectionInfo) -> list[str]:
    to = conn.extra.get("to")
    if isinstance(to, str):
        to = [part.strip() for part in to.split(",")]
    recipients = [str(address) for address in (to or []) if str(address).strip()]
    if not recipients:
        raise ConfigError(f"connection {conn.conn_id!r}: extra.to names no recipient")
    return recipients


def send_smtp(conn: ConnectionInfo, message: Message) -> None:
    """Send ``message`` as a plain-text mail through the SMTP server of ``conn``."""
    if not conn.host:
        raise ConfigError(f"connection {conn.conn_id!r} has no host (the SMTP server)")
    extra = conn.extra
    mail = EmailMessage()
    mail["Subject"] = message.subject
    mail["From"] = str(extra.get("from") or conn.login or "commerce-sync@localhost")
    mail["To"] = ", ".join(_recipients(conn))
    mail.set_content(message.text())
    timeout = float(extra.get("timeout", DEFAULT_TIMEOUT))
    use_ssl = bool(extra.get("ssl", False))
    port = conn.port or (465 if use_ssl else 25)
    server: smtplib.SMTP
    if use_ssl:
        server = smtplib.SMTP_SSL(conn.host, port, timeout=timeout, context=ssl.create_default_context())
    else:
        server = smtplib.SMTP(conn.host, port, timeout=timeout)
    with server:
        if bool(extra.get("starttls", False)) and not use_ssl:
            server.starttls(context=ssl.create_default_context())
        if conn.login and conn.password:
            server.login(conn.login, conn.password)
        server.send_message(mail)


def send_webhook(conn: ConnectionInfo, message: Message) -> None:
    """POST ``message`` as JSON to the URL of ``conn``; any non-2xx answer is an error."""
    url = conn.base_url()
    headers = {"Content-Type": "application/json", **{str(k): str(v) for k, v in conn.extra.get("headers", {}).items()}}
    if conn.password:
        headers["Authorization"] = f"Bearer {conn.password}"
    timeout = float(conn.extra.get("timeout", DEFAULT_TIMEOUT))
    response = requests.post(url, data=json.dumps(message.payload(), default=str), headers=headers, timeout=timeout)
    if not 200 <= response.status_code < 300:
        raise RuntimeError(f"webhook {conn.conn_id!r} answered HTTP {response.status_code}")


SENDERS: dict[str, Callable[[ConnectionInfo, Message], None]] = {
    SMTP_CONN_ID: send_smtp,
    WEBHOOK_CONN_ID: send_webhook,
}
"""Connection id → sender; a channel is on when its connection is defined."""


def configured_channels() -> list[tuple[ConnectionInfo, Callable[[ConnectionInfo, Message], None]]]:
    """The notification channels whose connection is defined, with their sender."""
    found = []
    for conn_id, sender in SENDERS.items():
        try:
            conn = get_connection(conn_id)
        except ConfigError:
            continue
        except Exception as exc:  # a secrets backend that is down must not hide the alert itself
            log.warning("notification connection %r could not be read: %s", conn_id, exc)
            continue
        found.append((conn, sender))
    return found


def deliver(message: Message) -> int:
    """Send ``message`` through every configured channel; log, never raise. Returns how many accepted it."""
    facts = (message.subject, message.dag_id, message.run_id, message.runbook)
    log.warning("ALERT: %s | DAG %s, run %s | runbook: %s", *facts)
    delivered = 0
    for conn, sender in configured_channels():
        try:
            sender(conn, message)
        except Exception as exc:  # alerting must never turn into a second failure
            log.error("alert %r was not delivered through %r: %s", message.subject, conn.conn_id, exc)
        else:
            delivered += 1
    return delivered


def alert(
    subject: str,
    body: str,
    *,
    runbook: str,
    dag_id: str | None = None,
    run_id: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """Notify the operators through every configured notifier. Never raises (failures are logged).

    Args:
        subject: one line saying what happened.
        body: the facts.
        runbook: what the operator should do (the runbook line that applies).
        dag_id: the DAG concerned; taken from the running task when left out and one is running.
        run_id: the DAG run concerned; likewise.
        details: JSON-serialisable extras.
    """
    try:
        if dag_id is None or run_id is None:
            running = _running_task()
            dag_id = dag_id or running.get("dag_id")
            run_id = run_id or running.get("run_id")
        deliver(Message(subject, body, runbook, dag_id, run_id, dict(details or {})))
    except Exception as exc:  # pragma: no cover - defensive: building the message itself failed
        log.error("alert %r could not be sent: %s", subject, exc)


def _running_task() -> dict[str, Any]:
    try:
        from airflow.sdk import get_current_context

        ti = get_current_context()["ti"]
    except Exception:  # not inside a task
        return {}
    return {"dag_id": ti.dag_id, "run_id": ti.run_id}


_BULLET = re.compile(r"^- \*(?P<head>[^*]+)\*:?\s*(?P<rest>.*)$")
_QUOTED = re.compile(r'"([^"]+)"')


def runbook_entries(doc_md: str | None) -> list[tuple[str, str]]:
    """The runbook bullets of a DAG's ``doc_md``: ``(head, whole line)`` per ``- *head*: text`` bullet.

    A bullet's continuation lines (indented) are joined to it. Only the part after a ``**Runbook**``
    heading is read when there is one.
    """
    if not doc_md:
        return []
    text = doc_md.split("**Runbook**", 1)[1] if "**Runbook**" in doc_md else doc_md
    entries: list[tuple[str, str]] = []
    for raw in text.splitlines():
        if raw.startswith("- "):
            match = _BULLET.match(raw.strip())
            entries.append((match.group("head").strip() if match else "", raw.strip()[2:]))
        elif entries and raw.startswith("  ") and raw.strip():
            head, line = entries[-1]
            entries[-1] = (head, f"{line} {raw.strip()}")
        elif raw.strip() and entries:
            break  # the runbook list ended
    return [(head, line) for head, line in entries if head]


def runbook_line(doc_md: str | None, error: str, task_id: str | None = None) -> str:
    """The runbook line of ``doc_md`` that applies to ``error`` (raised by ``task_id``).

    Preference: a bullet whose quoted phrase occurs in the error (``*Failed, "data was refused"*``); then
    one whose whole head does (``*Deadline missed*``, ``*Price alert*``); then one naming the task; then
    a bullet about a failure in general (``*Failed*``); else :data:`NO_RUNBOOK`.
    """
    entries = runbook_entries(doc_md)
    lowered = error.lower()
    for head, line in entries:
        if any(phrase.lower() in lowered for phrase in _QUOTED.findall(head)):
            return line
    for head, line in entries:
        if not _QUOTED.search(head) and head.lower() in lowered:
            return line
    if task_id:
        for head, line in entries:
            if re.search(rf"\b{re.escape(task_id)}\b", head):
                return line
    for head, line in entries:
        if head.lower().startswith("failed") and not _QUOTED.search(head):
            return line
    return NO_RUNBOOK


class ChannelNotifier(BaseNotifier):
    """Base of the SMTP and webhook notifiers: one message through one connection.

    Usable wherever Airflow takes a notifier (``on_failure_callback=SmtpNotifier(...)``); ``subject``
    and ``body`` are templated with the Airflow context. Unlike :func:`alert`, a delivery failure raises
    (Airflow logs it as the callback's failure).
    """

    template_fields = ("subject", "body")
    default_conn_id = ""

    def __init__(self, subject: str, body: str, *, runbook: str = NO_RUNBOOK, conn_id: str | None = None) -> None:
        super().__init__()
        self.subject = subject
        self.body = body
        self.runbook = runbook
        self.conn_id = conn_id or self.default_conn_id

    def send(self, conn: ConnectionInfo, message: Message) -> None:
        raise NotImplementedError

    def notify(self, context: Any) -> None:
        """Send the rendered message, naming the context's DAG and run."""
        facts = context_facts(context)
        message = Message(self.subject, self.body, self.runbook, facts.get("dag_id"), facts.get("run_id"))
        self.send(get_connection(self.conn_id), message)

    async def async_notify(self, context: Any) -> None:
        """The same on the triggerer (deadline alerts): the blocking send runs in a thread."""
        await asyncio.to_thread(self.notify, context)


class SmtpNotifier(ChannelNotifier):
    """Mail through the ``commerce_sync_smtp`` connection (or ``conn_id``)."""

    default_conn_id = SMTP_CONN_ID

    def send(self, conn: ConnectionInfo, message: Message) -> None:
        send_smtp(conn, message)


class WebhookNotifier(ChannelNotifier):
    """JSON POST to the ``commerce_sync_webhook`` connection (or ``conn_id``)."""

    default_conn_id = WEBHOOK_CONN_ID

    def send(self, conn: ConnectionInfo, message: Message) -> None:
        send_webhook(conn, message)


def context_facts(context: Any) -> dict[str, Any]:
    """DAG id, run id, task id, map index and try number from an Airflow context, where present."""
    get = context.get if hasattr(context, "get") else (lambda key, default=None: default)
    ti = get("ti")
    dag_run = get("dag_run")
    facts: dict[str, Any] = {
        "dag_id": getattr(ti, "dag_id", None) or getattr(dag_run, "dag_id", None),
        "run_id": getattr(ti, "run_id", None) or getattr(dag_run, "run_id", None),
    }
    if ti is not None:
        facts.update(task_id=ti.task_id, map_index=ti.map_index, try_number=ti.try_number)
    return facts


class FailureNotifier(BaseNotifier):
    """``on_failure_callback`` of every task: the error and its runbook line through every channel.

    The runbook line is chosen from the DAG's ``doc_md`` by the error message (:func:`runbook_line`); a
    tripped circuit breaker says so in the subject.
    Never raises: a notification failure is logged and the task's own failure stands.
    """

    def notify(self, context: Any) -> None:
        try:
            facts = context_facts(context)
            error = str(context.get("exception") or "the task failed (no exception recorded)")
            dag = context.get("dag")
            task_id = facts.get("task_id")
            where = f"{facts.get('dag_id')}.{task_id}"
            if facts.get("map_index", -1) not in (-1, None):
                where += f"[{facts['map_index']}]"
            details = {k: v for k, v in facts.items() if k not in ("dag_id", "run_id") and v is not None}
            exception = context.get("exception")
            tripped = isinstance(exception, BreakerTripped) or isinstance(
                getattr(exception, "__cause__", None), BreakerTripped
            )
            deliver(
                Message(
                    subject=f"commerce-sync: circuit breaker tripped in {where}"
                    if tripped
                    else f"commerce-sync: {where} failed",
                    body=error,
                    runbook=runbook_line(getattr(dag, "doc_md", None), error, task_id),
                    dag_id=facts.get("dag_id"),
                    run_id=facts.get("run_id"),
                    details=details,
                )
            )
        except Exception as exc:  # never turn a failure callback into a second failure
            log.error("failure notification could not be sent: %s", exc)


async def deadline_missed(*, what: str, runbook: str, context: dict[str, Any] | None = None) -> str:
    """Deadline-alert callback (``AsyncCallback``, runs on the triggerer): alert that a run is late.

    Args:
        what: the promise that was broken, e.g. "ERP sync not finished 10 minutes after it was queued".
        runbook: what the operator should do.
        context: the simple context the scheduler passes (``dag_run`` and ``deadline`` dictionaries).
    """
    dag_run = (context or {}).get("dag_run") or {}
    deadline = (context or {}).get("deadline") or {}
    dag_id = dag_run.get("dag_id")
    run_id = dag_run.get("dag_run_id") or dag_run.get("run_id")
    message = Message(
        subject=f"commerce-sync: {dag_id} missed its deadline",
        body=f"{what}. Run state: {dag_run.get('state', 'unknown')}; deadline was {deadline.get('deadline_time')}.",
        runbook=runbook,
        dag_id=dag_id,
        run_id=run_id,
        details={"deadline_id": deadline.get("id"), "queued_at": dag_run.get("queued_at")},
    )
    delivered = await asyncio.to_thread(deliver, message)
    return f"deadline alert for {dag_id} {run_id} delivered through {delivered} channel(s)"
