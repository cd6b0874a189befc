"""People steer a rollout: a request on the lock item, conditional on the execution that holds it; the gate
acts on it at its next check; waits for a person are bounded by the execution's history and keep their
task token on the lock; the history tells who asked for what."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from canary_names import EXECUTION
from immutable_guard.canary.errors import AliasChanged, InvalidCanaryInput
from immutable_guard.canary.gate import HEALTHY, HOLD, UNHEALTHY
from immutable_guard.canary.history import entry_for
from immutable_guard.canary.lock import RolloutLock
from immutable_guard.canary.plan import MAX_PERSON_WAITS, parse_request
from immutable_guard.canary.steering import (
    ABORT,
    CONFIRM,
    INCONCLUSIVE,
    PAUSE,
    PAUSED,
    PROMOTE,
    WAIT,
    begin_wait,
    check,
    may_wait,
    steer,
)
from immutable_guard.canary.traffic import shift
from immutable_guard.clients import Clients

OTHER = EXECUTION.replace("-test", "-other")
Served = Callable[[str, int, int], None]  # the canary conftest's `served` fixture
WHO = "arn:aws:sts::123456789012:assumed-role/oncall/alice"


def _request(action: str) -> dict[str, Any]:
    return {"action": action, "by": WHO, "at": "2026-11-29T10:00:00.000000Z"}


def _plan(**overrides: Any) -> dict[str, Any]:
    return {"person_waits": 3, "confirm_promotion": False, "on_inconclusive": "rollback", **overrides}


def _result(verdict: str, **extra: Any) -> dict[str, Any]:
    return {"verdict": verdict, "reason": "version 2: 0 failed of 50 requests", "failures": 0, **extra}


STEP = {"index": 1, "step": 2, "percent": 20.0, "weight": 0.2, "last": False}
LAST = {**STEP, "last": True}


# ---------------------------------------------------------------------------------------- the decision
def test_a_promote_request_promotes_a_healthy_or_baking_step() -> None:
    for verdict in (HEALTHY, HOLD):
        result = steer(_plan(), STEP, _result(verdict), {"request": _request(PROMOTE)})
        assert result["verdict"] == PROMOTE
        assert result["reason"] == f"promotion requested by {WHO} at 2026-11-29T10:00:00.000000Z"


def test_a_failing_check_rolls_back_over_a_pause_or_a_promote_request() -> None:
    # An alarm in ALARM or a version shown worse is not what a person asked to keep
    for action in (PAUSE, PROMOTE):
        failing = _result(UNHEALTHY, reason="alarm orders-errors in ALARM")
        assert steer(_plan(), STEP, failing, {"request": _request(action)}) == failing


def test_a_pause_waits_and_names_who_asked_and_which_request_it_consumes() -> None:
    result = steer(_plan(), STEP, _result(HOLD), {"request": _request(PAUSE), "waits": 0})
    assert result["verdict"] == WAIT
    assert result["wait"] == {
        "kind": PAUSED,
        "reason": f"paused by {WHO} at 2026-11-29T10:00:00.000000Z",
        "request": _request(PAUSE),
    }


def test_waits_are_bounded_and_confirm_promotion_keeps_one_for_itself() -> None:
    plan = _plan(person_waits=2, confirm_promotion=True)
    assert may_wait(plan, 0, PAUSED) and not may_wait(plan, 1, PAUSED) and may_wait(plan, 1, CONFIRM)
    # A pause past the bound is not taken: the rollout goes on as the gate says
    held = {"request": _request(PAUSE), "waits": 1}
    assert steer(plan, STEP, _result(HOLD), held)["verdict"] == HOLD


def test_an_inconclusive_step_waits_when_the_plan_says_so_and_rolls_back_otherwise() -> None:
    inconclusive = _result(UNHEALTHY, inconclusive=True, reason="not enough data after 3 checks: ...")
    assert steer(_plan(), STEP, inconclusive, {}) == inconclusive  # on_inconclusive: rollback (default)
    waited = steer(_plan(on_inconclusive="wait"), STEP, inconclusive, {"waits": 0})
    assert waited["verdict"] == WAIT and waited["wait"]["kind"] == INCONCLUSIVE
    assert waited["reason"] == "inconclusive: not enough data after 3 checks: ..."
    # With no wait left it rolls back, and says why it did not wait
    spent = steer(_plan(on_inconclusive="wait"), STEP, inconclusive, {"waits": 3})
    assert spent["verdict"] == UNHEALTHY and spent["reason"].endswith(
        "(no wait for a person left in this rollout)"
    )


def test_confirm_promotion_waits_after_the_last_healthy_step_only() -> None:
    plan = _plan(confirm_promotion=True)
    assert steer(plan, STEP, _result(HEALTHY), {})["verdict"] == HEALTHY
    confirm = steer(plan, LAST, _result(HEALTHY), {})
    assert confirm["verdict"] == WAIT and confirm["wait"]["kind"] == CONFIRM
    assert steer(_plan(), LAST, _result(HEALTHY), {})["verdict"] == HEALTHY


# ---------------------------------------------------------------------------------------- the plan
def test_the_plan_takes_steering_options_and_refuses_unknown_values() -> None:
    base = {"function": "orders", "alias": "live", "target_version": "2"}
    plan = parse_request(base)
    assert (plan.confirm_promotion, plan.on_inconclusive, plan.max_wait_seconds) == (
        False,
        "rollback",
        86_400,
    )
    assert plan.person_waits() == MAX_PERSON_WAITS
    with pytest.raises(InvalidCanaryInput, match="on_inconclusive"):
        parse_request({**base, "on_inconclusive": "ignore"})
    with pytest.raises(InvalidCanaryInput, match="max_wait_seconds"):
        parse_request({**base, "max_wait_seconds": 0})


# ---------------------------------------------------------------------------------------- the lock
def test_a_request_from_an_execution_that_no_longer_holds_the_lock_is_refused(
    aws: Clients, plan: dict[str, Any], lock: RolloutLock
) -> None:
    # Given the alias's lock held by the rollout (EXECUTION)
    assert lock.request("orders", "live", EXECUTION, _request(PAUSE))
    # When a request names another execution (a stale read: that one ended, this one took the alias)
    refused = lock.request("orders", "live", OTHER, _request(ABORT))
    # Then nothing is written: the holder's pending request is unchanged
    assert refused is False
    assert (lock.get("orders", "live") or {})["request"] == _request(PAUSE)
    # And nobody's request is recorded on a lock that is gone
    lock.release("orders", "live", EXECUTION)
    assert lock.request("orders", "live", EXECUTION, _request(ABORT)) is False


def test_a_pause_past_the_waits_left_is_refused_by_the_condition(
    aws: Clients, plan: dict[str, Any], lock: RolloutLock
) -> None:
    for _ in range(2):
        assert lock.begin_wait("orders", "live", EXECUTION, "token", {"kind": PAUSED}, int(time.time()) + 60)
    assert lock.request("orders", "live", EXECUTION, _request(PAUSE), waits_below=2) is False
    assert lock.request("orders", "live", EXECUTION, _request(PAUSE), waits_below=3) is True


def test_a_wait_keeps_its_token_extends_the_lock_and_consumes_only_its_own_pause(
    aws: Clients, plan: dict[str, Any], lock: RolloutLock
) -> None:
    topic = aws.sns.create_topic(Name="alerts")["TopicArn"]
    step = shift(aws.lambda_, lock, plan, 0, plan["revision_id"])
    pause = _request(PAUSE)
    lock.request("orders", "live", EXECUTION, pause)
    gate = {"verdict": WAIT, "wait": {"kind": PAUSED, "reason": "paused by alice", "request": pause}}
    before = (lock.get("orders", "live") or {})["expires_at"]
    # When the rollout begins to wait for that pause
    result = begin_wait(lock, aws.sns, topic, plan, gate, step, "token-1", "123456789012", "us-east-1")
    held = lock.get("orders", "live") or {}
    # Then the token and why are on the lock, one wait counted, the pause consumed, the lock kept longer
    assert held["task_token"] == "token-1" and held["waits"] == 1 and held["request"] is None
    assert held["waiting"]["kind"] == PAUSED and held["waiting"]["percent"] == 10.0
    assert held["waiting"]["commands"] == "immutable-guard canary resume|promote|abort orders --alias live"
    assert held["expires_at"] >= before + int(plan["max_wait_seconds"])
    assert result["alert"]["stage"] == "canary_waiting"
    # And a promote written after the gate read the pause is not lost by the next wait
    lock.request("orders", "live", EXECUTION, _request(PROMOTE))
    begin_wait(lock, aws.sns, topic, plan, gate, step, "token-2", "123456789012", "us-east-1")
    held = lock.get("orders", "live") or {}
    assert held["request"] == _request(PROMOTE) and held["waits"] == 2
    # An answered wait is forgotten, only with its own token
    assert lock.end_wait("orders", "live", EXECUTION, "token-1") is False
    assert lock.end_wait("orders", "live", EXECUTION, "token-2") is True
    assert (lock.get("orders", "live") or {})["task_token"] is None


def test_a_rollout_that_lost_its_lock_does_not_wait(
    aws: Clients, plan: dict[str, Any], lock: RolloutLock
) -> None:
    topic = aws.sns.create_topic(Name="alerts")["TopicArn"]
    step = shift(aws.lambda_, lock, plan, 0, plan["revision_id"])
    lock.release("orders", "live", EXECUTION)
    with pytest.raises(AliasChanged, match="no longer holds the alias's lock"):
        begin_wait(lock, aws.sns, topic, plan, {"verdict": WAIT}, step, "t", "123456789012", "us-east-1")


# ---------------------------------------------------------------------------------------- the gate
def test_the_gate_aborts_on_request_without_reading_metrics(
    aws: Clients, plan: dict[str, Any], lock: RolloutLock
) -> None:
    step = shift(aws.lambda_, lock, plan, 0, plan["revision_id"])
    lock.request("orders", "live", EXECUTION, _request(ABORT))
    result = check(aws.lambda_, aws.cloudwatch, lock, plan, step)
    assert result["verdict"] == ABORT and result["reason"].startswith(f"aborted by {WHO}")
    assert "new" not in result  # no metric was needed to stop


def test_the_gate_rolls_back_an_alarm_even_when_a_promotion_was_requested(
    aws: Clients, plan: dict[str, Any], lock: RolloutLock, served: Served
) -> None:
    step = shift(aws.lambda_, lock, plan, 0, plan["revision_id"])
    served("2", 50)
    served("1", 450)
    lock.request("orders", "live", EXECUTION, _request(PROMOTE))
    assert check(aws.lambda_, aws.cloudwatch, lock, plan, step)["verdict"] == PROMOTE
    aws.cloudwatch.set_alarm_state(AlarmName="orders-live-errors", StateValue="ALARM", StateReason="test")
    result = check(aws.lambda_, aws.cloudwatch, lock, plan, step)
    assert result["verdict"] == UNHEALTHY and "in ALARM" in result["reason"]


def test_the_gate_stops_a_rollout_whose_lock_another_took(
    aws: Clients, plan: dict[str, Any], lock: RolloutLock
) -> None:
    step = shift(aws.lambda_, lock, plan, 0, plan["revision_id"])
    lock.release("orders", "live", EXECUTION)
    lock.acquire({**plan, "execution": OTHER}, OTHER, 600)
    with pytest.raises(AliasChanged, match="no longer holds the alias's lock"):
        check(aws.lambda_, aws.cloudwatch, lock, plan, step)


# ---------------------------------------------------------------------------------------- the story
def test_the_history_tells_a_wait_and_who_answered_it() -> None:
    state = {
        "plan": {"result": {"function": "orders", "alias": "live", "max_wait_seconds": 600}},
        "gate": {"result": {"verdict": WAIT, "wait": {"kind": PAUSED, "reason": f"paused by {WHO}"}}},
    }
    entered = {
        "type": "TaskStateEntered",
        "stateEnteredEventDetails": {"name": "WaitForPerson", "input": json.dumps(state)},
    }
    waiting = entry_for(entered)
    assert waiting is not None and waiting.kind == "waiting"
    assert waiting.text == (
        f"WAITING for a person (paused by {WHO}): answer with `immutable-guard canary resume|promote|abort "
        "orders --alias live` within 600 s, or it is rolled back"
    )
    answer = {"decision": "resume", "by": WHO, "at": "2026-11-29T10:05:00Z"}
    exited = {
        "type": "TaskStateExited",
        "stateExitedEventDetails": {"name": "WaitForPerson", "output": json.dumps({"person": answer})},
    }
    answered = entry_for(exited)
    assert answered is not None and answered.text == f"RESUMED by {WHO} at 2026-11-29T10:05:00Z"
    # A wait that ran out has no answer: its Catch state (NobodyAnswered) tells it
    timed_out = {
        "type": "TaskStateExited",
        "stateExitedEventDetails": {"name": "WaitForPerson", "output": "{}"},
    }
    assert entry_for(timed_out) is None
    nobody = {
        "type": "PassStateExited",
        "stateExitedEventDetails": {
            "name": "NobodyAnswered",
            "output": json.dumps(
                {"failure": {"state": "WaitForPerson", "reason": "nobody answered within 600 s"}}
            ),
        },
    }
    told = entry_for(nobody)
    assert told is not None and told.text == "NobodyAnswered: nobody answered within 600 s"
