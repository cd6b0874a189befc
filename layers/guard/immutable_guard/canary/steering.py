"""People steer a running rollout. Step Functions cannot pause an execution from outside, so a person's
request (pause, promote, abort) is written on the alias's lock item, conditional on the execution that
holds it, and the health gate acts on it at its next check (at most one check interval later). A rollout
that waits for a person (a pause, an inconclusive step with ``on_inconclusive: wait``, or
``confirm_promotion``) sits in a ``lambda:invoke.waitForTaskToken`` task: its token is kept on the lock item
and a person's answer is SendTaskSuccess with the decision
(https://docs.aws.amazon.com/step-functions/latest/dg/connect-to-resource.html#connect-wait-token).

Each wait costs history events, so a rollout may wait at most ``plan["person_waits"]`` times
(``CanaryRequest.person_waits``), one of them kept for the confirmation when the plan asks for it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from immutable_guard.canary.alerts import WAITING, CanaryStageEvent, notify
from immutable_guard.canary.errors import AliasChanged
from immutable_guard.canary.gate import HEALTHY, UNHEALTHY, evaluate
from immutable_guard.canary.lock import RolloutLock, lock_seconds
from immutable_guard.canary.traffic import confirm_step, now_iso

if TYPE_CHECKING:
    from mypy_boto3_cloudwatch import CloudWatchClient
    from mypy_boto3_lambda import LambdaClient
    from mypy_boto3_sns import SNSClient

PAUSE, RESUME, PROMOTE, ABORT = "pause", "resume", "promote", "abort"
ACTIONS = (PAUSE, RESUME, PROMOTE, ABORT)
# Gate verdicts beside healthy / hold / unhealthy.
WAIT = "wait"
# Why a rollout waits for a person.
PAUSED, INCONCLUSIVE, CONFIRM = "paused", "inconclusive", "confirm_promotion"


def requester(request: dict[str, Any]) -> str:
    """Who asked, and when: the sentence the history and the alerts carry."""
    return f"{request.get('by') or 'an unknown caller'} at {request.get('at') or 'an unknown time'}"


def may_wait(plan: dict[str, Any], waits_used: int, kind: str) -> bool:
    """Whether one more wait of ``kind`` fits the execution's history: the confirmation before promotion
    keeps one wait for itself."""
    allowed = int(plan.get("person_waits") or 0)
    reserved = 1 if plan.get("confirm_promotion") and kind != CONFIRM else 0
    return waits_used < allowed - reserved


def _wait(
    result: dict[str, Any], kind: str, reason: str, request: dict[str, Any] | None = None
) -> dict[str, Any]:
    wait: dict[str, Any] = {"kind": kind, "reason": reason}
    if request:
        wait["request"] = request  # the pause this wait answers: consumed when the wait begins
    return {**result, "verdict": WAIT, "wait": wait, "reason": reason}


def steer(
    plan: dict[str, Any], step: dict[str, Any], result: dict[str, Any], held: dict[str, Any]
) -> dict[str, Any]:
    """The gate's verdict once a person's request, ``confirm_promotion`` and ``on_inconclusive`` apply.

    A failing check (an alarm, a version shown worse) still rolls back over a pause or a promote request:
    a person asks for what the rollout should do while it is healthy, not to keep a failing version.
    """
    request = held.get("request") or {}
    action = request.get("action")
    waits = int(held.get("waits") or 0)
    inconclusive = bool(result.get("inconclusive"))
    if result["verdict"] == UNHEALTHY and not inconclusive:
        return result
    if action == PROMOTE:
        return {**result, "verdict": PROMOTE, "reason": f"promotion requested by {requester(request)}"}
    if action == PAUSE and may_wait(plan, waits, PAUSED):
        return _wait(result, PAUSED, f"paused by {requester(request)}", request)
    if inconclusive and plan.get("on_inconclusive") == "wait":
        if may_wait(plan, waits, INCONCLUSIVE):
            return _wait(result, INCONCLUSIVE, f"inconclusive: {result['reason']}")
        return {**result, "reason": f"{result['reason']} (no wait for a person left in this rollout)"}
    if result["verdict"] == HEALTHY and step.get("last") and plan.get("confirm_promotion"):
        return _wait(
            result,
            CONFIRM,
            "every step was healthy; promotion to 100 % waits for a person's confirmation "
            f"({result['reason']})",
        )
    return result


def check(
    lambda_: LambdaClient,
    cloudwatch: CloudWatchClient,
    lock: RolloutLock,
    plan: dict[str, Any],
    step: dict[str, Any],
    checks: int = 0,
    failures: int = 0,
) -> dict[str, Any]:
    """One look of the health gate: the alias still as the shift left it, the lock still this rollout's,
    an abort request at once, otherwise the health verdict as a person's request and the plan steer it.

    Raises
    ------
    AliasChanged
        Someone else changed the alias, or this rollout no longer holds the alias's lock.
    """
    confirm_step(lambda_, plan, step)
    held = lock.get(plan["function"], plan["alias"])
    if held is None or held["execution"] != plan.get("execution"):
        raise AliasChanged(
            f"alias {plan['function']}:{plan['alias']}: this rollout no longer holds the alias's lock"
        )
    request = held.get("request") or {}
    if request.get("action") == ABORT:
        # No metric is needed to stop: the rollback follows at once.
        return {
            "verdict": ABORT,
            "reason": f"aborted by {requester(request)}",
            "step": int(step["index"]) + 1,
            "percent": step["percent"],
            "checks": checks,
            "failures": failures,
            "wait_seconds": 0,
        }
    return steer(plan, step, evaluate(cloudwatch, plan, step, checks, failures), held)


def commands(plan: dict[str, Any], kind: str) -> str:
    """What a person runs to answer a wait."""
    target = f"{plan['function']} --alias {plan['alias']}"
    choices = "promote|abort" if kind == CONFIRM else "resume|promote|abort"
    return f"immutable-guard canary {choices} {target}"


def begin_wait(
    lock: RolloutLock,
    sns: SNSClient,
    topic_arn: str,
    plan: dict[str, Any],
    gate: dict[str, Any],
    step: dict[str, Any],
    token: str,
    account: str,
    region: str,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Keep the task token on the lock item, keep the lock for the wait and what may follow it, and alert.

    Raises
    ------
    AliasChanged
        This rollout no longer holds the alias's lock: it must stop, not wait.
    """
    now = now or datetime.now(UTC)
    wait = dict(gate.get("wait") or {"kind": PAUSED, "reason": gate.get("reason")})
    consumed = wait.pop("request", None)
    seconds = int(plan.get("max_wait_seconds") or 86_400)
    waiting = {
        **wait,
        "since": now_iso(),
        "answer_by": (now + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "step": step.get("step"),
        "percent": step.get("percent"),
        "commands": commands(plan, str(wait.get("kind"))),
    }
    until = int(now.timestamp()) + seconds + lock_seconds(plan)
    execution = str(plan.get("execution"))
    if not lock.begin_wait(plan["function"], plan["alias"], execution, token, waiting, until, consumed):
        raise AliasChanged(
            f"alias {plan['function']}:{plan['alias']}: this rollout no longer holds the alias's lock"
        )
    detail = {
        **waiting,
        "reason": f"{wait.get('reason')}; answer with `{waiting['commands']}` by {waiting['answer_by']}, "
        "or it is rolled back",
    }
    alert = notify(
        sns,
        topic_arn,
        CanaryStageEvent(stage=WAITING, plan=plan, detail=detail, execution=plan.get("execution")),
        account,
        region,
    )
    return {"waiting": waiting, "alert": alert}
