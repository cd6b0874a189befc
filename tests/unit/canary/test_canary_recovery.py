"""An execution aborted, timed out or crashed mid-rollout: its status-change event rolls the alias back only
if it is exactly as the rollout left it (else superseded), releases the lock and alerts. Hooks answer
through a wrapper that turns any answer into a small verdict."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from canary_names import EXECUTION
from immutable_guard.canary.hooks import MAX_ANSWER_BYTES, judge_answer
from immutable_guard.canary.lock import RolloutLock
from immutable_guard.canary.recovery import recover
from immutable_guard.canary.traffic import shift
from immutable_guard.clients import Clients

# Shape of "Step Functions Execution Status Change" as documented in
# https://docs.aws.amazon.com/step-functions/latest/dg/cw-events.html (the detail is DescribeExecution's).
SAMPLE = Path(__file__).resolve().parents[3] / "events" / "canary" / "stepfunctions-execution-aborted.json"
STATE_MACHINE = "arn:aws:states:us-east-1:123456789012:stateMachine:CanaryStateMachine-Ab12Cd34"


def _event(execution: str = EXECUTION, status: str = "ABORTED") -> dict[str, Any]:
    event = json.loads(SAMPLE.read_text())
    event["detail"].update(executionArn=execution, status=status)
    return dict(event)


def _recover(aws: Clients, lock: RolloutLock, event: dict[str, Any]) -> dict[str, Any]:
    topic = aws.sns.create_topic(Name="alerts")["TopicArn"]
    return recover(aws.lambda_, lock, aws.sns, topic, event, STATE_MACHINE)


def _alias(aws: Clients) -> tuple[str, dict[str, float]]:
    alias = aws.lambda_.get_alias(FunctionName="orders", Name="live")
    return alias["FunctionVersion"], dict(
        (alias.get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {}
    )


def test_an_aborted_rollout_is_rolled_back_released_and_alerted(
    aws: Clients, plan: dict[str, Any], lock: RolloutLock
) -> None:
    shift(aws.lambda_, lock, plan, 0, plan["revision_id"])
    result = _recover(aws, lock, _event())
    assert result["stage"] == "canary_aborted", result
    assert result["outcome"] == "rolled_back"
    assert "ended ABORTED" in result["reason"] and result["alert"]["severity"] == "high"
    assert _alias(aws) == ("1", {}) and lock.get("orders", "live") is None


def test_an_aborted_rollout_whose_alias_someone_else_changed_is_left_as_found(
    aws: Clients, plan: dict[str, Any], lock: RolloutLock
) -> None:
    shift(aws.lambda_, lock, plan, 0, plan["revision_id"])
    aws.lambda_.update_alias(FunctionName="orders", Name="live", FunctionVersion="2", RoutingConfig={})
    result = _recover(aws, lock, _event(status="TIMED_OUT"))
    assert result["stage"] == "canary_superseded" and "was changed outside this rollout" in result["reason"]
    assert _alias(aws) == ("2", {}) and lock.get("orders", "live") is None


def test_an_execution_that_ended_through_its_own_states_is_left_alone(
    aws: Clients, plan: dict[str, Any], lock: RolloutLock
) -> None:
    shift(aws.lambda_, lock, plan, 0, plan["revision_id"])
    other = _event(execution="arn:aws:states:us-east-1:123456789012:execution:canary:someone-else")
    assert _recover(aws, lock, other)["stage"] == "none"  # the lock is another execution's
    foreign = {
        **_event(),
        "detail": {**_event()["detail"], "stateMachineArn": "arn:aws:states:x:1:stateMachine:y"},
    }
    assert _recover(aws, lock, foreign)["stage"] == "none"
    assert _alias(aws) == ("1", {"2": 0.1}) and lock.get("orders", "live") is not None


@pytest.mark.parametrize(
    ("raw", "truncated", "error", "status", "reason"),
    [
        (b'{"status": "Succeeded", "reason": "ok"}', False, None, "Succeeded", "ok"),
        (b'{"status": "Failed", "reason": "db down"}', False, None, "Failed", "db down"),
        (b'"Succeeded"', False, None, "Failed", "the hook answered str, not an object"),
        (b"not json", False, None, "Failed", "the hook's answer is not JSON"),
        (
            b'{"errorType": "RuntimeError", "errorMessage": "boom"}',
            False,
            "Unhandled",
            "Failed",
            "raised RuntimeError: boom",
        ),
        (b"x" * MAX_ANSWER_BYTES, True, None, "Failed", f"more than {MAX_ANSWER_BYTES} bytes"),
    ],
)
def test_any_hook_answer_becomes_a_small_verdict(
    raw: bytes, truncated: bool, error: str | None, status: str, reason: str
) -> None:
    verdict = judge_answer(raw, truncated, error)
    assert verdict["status"] == status and reason in verdict["reason"]
    assert len(json.dumps(verdict)) < 2000


def test_a_long_reason_is_cut() -> None:
    verdict = judge_answer(json.dumps({"status": "Failed", "reason": "r" * 20_000}).encode(), False, None)
    assert len(verdict["reason"]) == 1000
