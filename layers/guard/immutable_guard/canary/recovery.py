"""What happens when a rollout's execution ends without finishing: StopExecution (ABORTED), the execution's
own timeout (TIMED_OUT) or an error nothing caught (FAILED, e.g. States.DataLimitExceeded or
States.Runtime, which a States.ALL catcher does not catch). Step Functions reports each on EventBridge as a
"Step Functions Execution Status Change" event
(https://docs.aws.amazon.com/step-functions/latest/dg/cw-events.html); this rolls the alias back if it is
exactly as the rollout left it (else leaves it, superseded), releases the lock and alerts.

A rollout that ended through its own states (promoted, rolled back, superseded, refused) has released its
lock already: its event finds no lock of that execution and does nothing.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from immutable_guard.canary.alerts import ABORTED, ROLLBACK_FAILED, SUPERSEDED, CanaryStageEvent, notify
from immutable_guard.canary.errors import RollbackFailed
from immutable_guard.canary.lock import RolloutLock
from immutable_guard.canary.plan import function_name
from immutable_guard.canary.traffic import restore

if TYPE_CHECKING:
    from mypy_boto3_lambda import LambdaClient
    from mypy_boto3_sns import SNSClient

ENDED_UNFINISHED = frozenset({"ABORTED", "TIMED_OUT", "FAILED"})


def _target(detail: dict[str, Any]) -> tuple[str, str] | None:
    """Function name and alias from the execution's input (carried in the event)."""
    try:
        document = json.loads(detail.get("input") or "")
    except (TypeError, ValueError):
        return None
    if not isinstance(document, dict) or not document.get("function") or not document.get("alias"):
        return None
    return function_name(str(document["function"])), str(document["alias"])


def recover(
    lambda_: LambdaClient,
    lock: RolloutLock,
    sns: SNSClient,
    topic_arn: str,
    event: dict[str, Any],
    state_machine_arn: str,
) -> dict[str, Any]:
    """Handle one execution status change of the canary state machine; returns what was done."""
    detail = event.get("detail") or {}
    execution, status = str(detail.get("executionArn", "")), str(detail.get("status", ""))
    if detail.get("stateMachineArn") != state_machine_arn or status not in ENDED_UNFINISHED:
        return {"stage": "none", "why": "not an unfinished execution of the canary state machine"}
    target = _target(detail)
    if target is None:
        return {"stage": "none", "why": "the execution's input names no function and alias"}
    held = lock.get(*target)
    if held is None or held["execution"] != execution:
        return {"stage": "none", "why": "the rollout released its lock itself (it ended through its states)"}
    plan = {**held["plan"], "execution": execution}
    ended = f"execution {detail.get('name', execution)} ended {status}"
    if detail.get("error") or detail.get("cause"):
        ended += f" ({detail.get('error') or 'error'}: {str(detail.get('cause') or '')[:500]})"
    request = held.get("request") or {}
    if request.get("action") == "revert":
        # `immutable-guard canary revert` says so on the lock before it stops the execution.
        ended += (
            f"; reverted by {request.get('by')} at {request.get('at')} to version {request.get('to_version')}"
        )
    try:
        result = restore(lambda_, lock, plan, execution)
    except RollbackFailed as exc:
        lock.release(target[0], target[1], execution)
        stage, detail_out = ROLLBACK_FAILED, {"reason": f"{ended}; the rollback failed: {exc}"}
    else:
        lock.release(target[0], target[1], execution)
        if result["outcome"] == "superseded":
            stage = SUPERSEDED
            detail_out = {**result, "reason": f"{ended}; {result['superseded_because']}"}
        else:
            stage, detail_out = ABORTED, {**result, "reason": ended}
    sent = notify(
        sns,
        topic_arn,
        CanaryStageEvent(stage=stage, plan=plan, detail=detail_out, execution=execution),
        str(event.get("account", "")),
        str(event.get("region", "")),
    )
    return {**detail_out, "stage": stage, "execution": execution, "status": status, "alert": sent}
