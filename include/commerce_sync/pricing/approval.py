"""The Airflow approval task for held price moves (see :mod:`commerce_sync.pricing.proposals`).

:class:`HeldPriceMovesApproval` is the providers-standard ``ApprovalOperator`` that also records a
**Reject** in the hub and the ledger as soon as the answer arrives: on Reject the operator skips its
downstream tasks, so no later task can be relied on to see the answer. An **Approve** is applied by
the downstream ``publish_held_changes`` task (retryable on its own, without asking the person again).
"""

from __future__ import annotations

from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator

SUMMARY_TASK = "summarise_held_changes"


def decide_from_context(context: Any, response: Any, *, only_rejection: bool) -> list[dict[str, Any]]:
    """Apply an approval ``response`` to the proposals the summary task showed; return the decisions."""
    from dataclasses import asdict

    from commerce_sync import registry
    from commerce_sync.airflow_glue import hub_dsn, operator_errors, run_context
    from commerce_sync.config import load_config
    from commerce_sync.pricing.proposals import ApprovalAnswer, apply_approval

    summary = context["ti"].xcom_pull(task_ids=SUMMARY_TASK)
    if not response or not summary:
        return []
    answer = ApprovalAnswer.from_hitl(response, summary["proposal_ids"])
    if only_rejection and answer.approved:
        return []
    with operator_errors("held price moves"):
        outbox = frozenset(c.id for c in load_config().channels if registry.get(c.kind).uses_outbox)
        return [asdict(d) for d in apply_approval(hub_dsn(), answer, run_context(), outbox)]


class HeldPriceMovesApproval(ApprovalOperator):
    """ApprovalOperator whose Reject is written to the hub (items rejected) and the ledger at once."""

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        # Before the parent: on Reject it skips downstream by raising (Task SDK), so nothing after it runs.
        if "error" not in event and self.REJECT in (event.get("chosen_options") or []):
            decisions = decide_from_context(context, event, only_rejection=True)
            self.log.info("Rejected held price moves recorded: %s", decisions)
        return super().execute_complete(context=context, event=event)
