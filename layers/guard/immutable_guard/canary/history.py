"""Reads a rollout from the state machine's own execution history: each step's weight, each gate's verdict,
the hooks' answers, and how it ended. The CLI prints it; tests and the demo assert on it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from immutable_guard.canary.steering import commands
from immutable_guard.canary.traffic import failure_reason

if TYPE_CHECKING:
    from mypy_boto3_stepfunctions import SFNClient

_FAILURE_STATES = {
    "ShiftFailed",
    "HealthGateFailed",
    "GateFailed",
    "PromoteFailed",
    "PreTrafficHookFailed",
    "PreTrafficHookRejected",
    "PostTrafficHookFailed",
    "PostTrafficHookRejected",
    "AbortRequested",
    "NobodyAnswered",
    "WaitForPersonFailed",
    "AbortedByPerson",
    "PersonAnswerUnclear",
}
_DECISIONS = {"resume": "RESUMED", "promote": "PROMOTION confirmed", "abort": "ABORTED"}


@dataclass(frozen=True)
class Entry:
    """One line of a rollout's story.

    Attributes
    ----------
    kind:
        plan, hook, shift, gate, waiting, answered, failure, promote, rollback, succeeded, failed.
    text:
        What a person reads.
    data:
        The state's result, for programs.
    """

    kind: str
    text: str
    data: dict[str, Any] = field(default_factory=dict)


def _output(event: dict[str, Any]) -> dict[str, Any]:
    details = event.get("stateExitedEventDetails") or {}
    try:
        value = json.loads(details.get("output") or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _result(output: dict[str, Any], key: str) -> dict[str, Any]:
    value = (output.get(key) or {}).get("result")
    return value if isinstance(value, dict) else {}


def entry_for(event: dict[str, Any]) -> Entry | None:
    """The story line of one history event, or None for bookkeeping events."""
    kind = event.get("type", "")
    if kind == "ExecutionSucceeded":
        return Entry("succeeded", "rollout PROMOTED")
    if kind in {"ExecutionAborted", "ExecutionTimedOut"}:
        details = (
            event.get("executionAbortedEventDetails") or event.get("executionTimedOutEventDetails") or {}
        )
        ended = "ABORTED" if kind == "ExecutionAborted" else "TIMED OUT"
        said = ": ".join(str(v) for v in (details.get("error"), details.get("cause")) if v)
        return Entry(
            "failed",
            f"rollout {ended}" + (f" ({said})" if said else "") + ": the recovery function rolls it back",
            {**details, "error": kind},
        )
    if kind == "ExecutionFailed":
        details = event.get("executionFailedEventDetails") or {}
        error, cause = details.get("error", kind), details.get("cause", "")
        try:
            parsed = json.loads(cause) if cause.startswith("{") else None
        except ValueError:
            parsed = None
        message = parsed.get("errorMessage", cause) if isinstance(parsed, dict) else cause
        return Entry(
            "failed", f"rollout FAILED: {error}" + (f": {message}" if message else ""), dict(details)
        )
    if kind == "TaskStateEntered":
        return _waiting(event)
    if not kind.endswith("StateExited"):
        return None
    name = (event.get("stateExitedEventDetails") or {}).get("name", "")
    output = _output(event)
    if name in {"Shift", "HealthGate", "Promote"} and "error" in output:
        return None  # the step failed and produced no result: its Catch state tells the failure
    if name == "Preflight":
        plan = _result(output, "plan")
        steps = ", ".join(f"{s:g}" for s in plan.get("steps", []))
        return Entry(
            "plan",
            f"preflight OK: {plan.get('function')}:{plan.get('alias')} "
            f"version {plan.get('stable_version')} -> "
            f"{plan.get('target_version')}, steps {steps} %, bake {plan.get('bake_seconds')} s, "
            f"alarms {', '.join(plan.get('alarms') or []) or 'none'}",
            plan,
        )
    if name in {"PreTrafficHook", "PostTrafficHook"}:
        verdict = _result(output, "pre_hook" if name.startswith("Pre") else "post_hook")
        status = verdict.get("status", "no verdict")
        return Entry(
            "hook",
            f"{name}: {status}" + (f" ({verdict['reason']})" if verdict.get("reason") else ""),
            verdict,
        )
    if name == "Shift":
        step = _result(output, "step")
        if not step:  # the shift failed: its failure state tells why
            return None
        return Entry(
            "shift",
            f"step {step.get('step')}: {_percent(step.get('percent'))} of traffic on version "
            f"{step.get('target_version')}",
            step,
        )
    if name == "HealthGate":
        gate = _result(output, "gate")
        return Entry("gate", f"  gate: {gate.get('verdict')} - {gate.get('reason')}", gate)
    if name in _FAILURE_STATES:
        failure = output.get("failure") if isinstance(output.get("failure"), dict) else {}
        return Entry("failure", f"{name}: {failure_reason(failure)}", failure or {})
    if name == "AlertRollbackFailed":
        found = output.get("rollback_error")
        rollback_error: dict[str, Any] = found if isinstance(found, dict) else {}
        cause = rollback_error.get("Cause") or rollback_error.get("Error") or "the rollback gave no answer"
        return Entry("rollback_failed", f"ROLLBACK FAILED: {cause}: a person must act", rollback_error)
    if name == "WaitForPerson":
        answer = output.get("person")
        if not isinstance(answer, dict):  # the wait ran out or failed: its Catch state tells
            return None
        decision = str(answer.get("decision"))
        said = _DECISIONS.get(decision, f"answered {decision!r}")
        return Entry(
            "answered", f"{said} by {answer.get('by') or 'an unknown caller'} at {answer.get('at')}", answer
        )
    if name == "Promote":
        promoted = _result(output, "promote")
        return Entry(
            "promote", f"promoted: alias points to version {promoted.get('promoted_version')}", promoted
        )
    if name == "Rollback":
        rolled = _result(output, "rollback")
        if not rolled:  # it failed: AlertRollbackFailed tells why
            return None
        if rolled.get("outcome") == "superseded":
            return Entry(
                "rollback",
                f"SUPERSEDED: alias left as found ({rolled.get('found')}): {rolled.get('reason')}",
                rolled,
            )
        return Entry(
            "rollback",
            f"ROLLED BACK to version {rolled.get('rolled_back_to')} ({rolled.get('action')}): "
            f"{rolled.get('reason')}",
            rolled,
        )
    return None


def _waiting(event: dict[str, Any]) -> Entry | None:
    """The line a watcher sees when the rollout starts waiting for a person: why, and what to run."""
    details = event.get("stateEnteredEventDetails") or {}
    if details.get("name") != "WaitForPerson":
        return None
    try:
        state = json.loads(details.get("input") or "{}")
    except ValueError:
        state = {}
    plan, gate = _result(state, "plan"), _result(state, "gate")
    found = gate.get("wait")
    wait: dict[str, Any] = found if isinstance(found, dict) else {}
    run = commands(plan, str(wait.get("kind"))) if plan.get("function") else "immutable-guard canary status"
    return Entry(
        "waiting",
        f"WAITING for a person ({wait.get('reason') or gate.get('reason')}): answer with `{run}` within "
        f"{plan.get('max_wait_seconds')} s, or it is rolled back",
        {**wait, "commands": run},
    )


def _percent(value: Any) -> str:
    return f"{value:g} %" if isinstance(value, int | float) else "an unknown share"


def history_events(sfn: SFNClient, execution_arn: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for page in sfn.get_paginator("get_execution_history").paginate(executionArn=execution_arn):
        events.extend(dict(event) for event in page["events"])
    return events


def timeline(events: list[dict[str, Any]]) -> list[Entry]:
    """The story of a rollout from its history events (oldest first)."""
    return [entry for entry in map(entry_for, events) if entry is not None]


def follow(
    sfn: SFNClient, execution_arn: str, poll_seconds: float = 1.0, sleep: Any = None
) -> Iterator[Entry]:
    """Yield each story line as it happens, until the execution ends."""
    import time

    pause = sleep or time.sleep
    seen = 0
    while True:
        status = sfn.describe_execution(executionArn=execution_arn)["status"]
        events = history_events(sfn, execution_arn)
        for event in events[seen:]:
            entry = entry_for(event)
            if entry is not None:
                yield entry
        seen = len(events)
        if status != "RUNNING":
            return
        pause(poll_seconds)
