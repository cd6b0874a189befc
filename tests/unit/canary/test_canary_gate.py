"""The health gate: fail fast, pass slow, and not on noise. A step fails at any check on an alarm or on a
version shown worse on consecutive checks; it passes only after its bake, on settled metrics, with enough
requests over the rollout; and without data it holds, then fails."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from immutable_guard.canary.gate import (
    HEALTHY,
    HOLD,
    UNHEALTHY,
    Check,
    VersionTraffic,
    evaluate,
    excess_error_rate_bound,
    judge,
    required_invocations,
)
from immutable_guard.clients import Clients

FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def _step(seconds_ago: float = 1, index: int = 2) -> dict[str, Any]:
    shifted = datetime.now(UTC) - timedelta(seconds=seconds_ago)
    return {"index": index, "percent": 30.0, "shifted_at": shifted.strftime(FORMAT)}


# ---------------------------------------------------------------- positive confirmation, or hold, then fail


def test_enough_clean_traffic_with_alarms_ok_is_healthy(
    aws: Clients, plan: dict[str, Any], served: Callable[..., None]
) -> None:
    served("2", 12, 0)
    served("1", 100, 1)
    result = evaluate(aws.cloudwatch, plan, _step())
    assert result["verdict"] == HEALTHY, result["reason"]
    assert result["new"]["invocations"] == 12 and result["stable"]["errors"] == 1
    assert (result["step"], result["checks"], result["alarms"]) == (3, 0, {"orders-live-errors": "OK"})


def test_too_few_invocations_hold_then_fail_after_the_bounded_rechecks(
    aws: Clients, plan: dict[str, Any], served: Callable[..., None]
) -> None:
    # Step 3 of 9 needs 30/90 of min_invocations (10): 4
    served("2", 3, 0)
    first = evaluate(aws.cloudwatch, plan, _step(), checks=0)
    assert first["verdict"] == HOLD and "served 3 of the 4 invocations needed by step 3" in first["reason"]
    assert first["wait_seconds"] == plan["hold_seconds"]
    assert evaluate(aws.cloudwatch, plan, _step(), checks=1)["verdict"] == HOLD  # max_holds = 2 re-checks
    last = evaluate(aws.cloudwatch, plan, _step(), checks=2)
    assert last["verdict"] == UNHEALTHY and last["reason"].startswith("not enough data after 3 checks")


def test_no_data_at_all_is_never_healthy(aws: Clients, plan: dict[str, Any]) -> None:
    verdicts = {evaluate(aws.cloudwatch, plan, _step(), checks=n)["verdict"] for n in range(5)}
    assert verdicts == {HOLD, UNHEALTHY}


def test_traffic_before_the_rollout_started_does_not_count(
    aws: Clients, plan: dict[str, Any], served: Callable[..., None]
) -> None:
    served("2", 50, 0)
    later = {**plan, "started_at": (datetime.now(UTC) + timedelta(seconds=5)).strftime(FORMAT)}
    assert evaluate(aws.cloudwatch, later, _step())["verdict"] == HOLD


def test_requests_count_over_the_whole_rollout_not_one_step(
    aws: Clients, plan: dict[str, Any], served: Callable[..., None]
) -> None:
    # Given a quiet function: what the new version served before this step's shift still counts
    served("2", 12, 0)
    step = _step(seconds_ago=-2)  # this step's weight was set after the traffic was recorded
    result = evaluate(aws.cloudwatch, plan, step, now=datetime.now(UTC) + timedelta(seconds=5))
    assert result["verdict"] == HEALTHY and result["new"]["invocations"] == 12


def test_the_last_step_needs_the_full_count_and_the_first_its_share() -> None:
    plan = {"min_invocations": 100, "steps": [10, 20, 30, 40, 50, 60, 70, 80, 90]}
    assert [required_invocations(plan, i) for i in (0, 4, 8)] == [12, 56, 100]
    assert required_invocations({**plan, "min_invocations": 0}, 8) == 0


# ---------------------------------------------------------------- alarms fail at once


def test_an_alarm_in_alarm_fails_the_step_even_with_good_traffic(
    aws: Clients, target: Any, plan: dict[str, Any], served: Callable[..., None]
) -> None:
    served("2", 50, 0)
    aws.cloudwatch.set_alarm_state(AlarmName=target.alarm, StateValue="ALARM", StateReason="test")
    result = evaluate(aws.cloudwatch, plan, _step())
    assert result["verdict"] == UNHEALTHY and result["reason"] == "alarm orders-live-errors in ALARM"


def test_an_alarm_deleted_mid_rollout_fails_the_step(
    aws: Clients, target: Any, plan: dict[str, Any], served: Callable[..., None]
) -> None:
    served("2", 50, 0)
    aws.cloudwatch.delete_alarms(AlarmNames=[target.alarm])
    result = evaluate(aws.cloudwatch, plan, _step())
    assert result["verdict"] == UNHEALTHY and "no longer exists" in result["reason"]


def test_an_alarm_without_data_is_not_a_confirmation(
    aws: Clients, target: Any, plan: dict[str, Any], served: Callable[..., None]
) -> None:
    served("2", 50, 0)
    aws.cloudwatch.set_alarm_state(AlarmName=target.alarm, StateValue="INSUFFICIENT_DATA", StateReason="test")
    assert evaluate(aws.cloudwatch, plan, _step())["verdict"] == HOLD


# ---------------------------------------------------------------- fail fast, pass slow


def test_an_alarm_during_the_bake_fails_the_step_at_the_next_check(
    aws: Clients, target: Any, plan: dict[str, Any], served: Callable[..., None]
) -> None:
    # Given a 300 s bake that started a second ago
    baking = {**plan, "bake_seconds": 300, "check_interval_seconds": 30}
    served("2", 50, 0)
    assert evaluate(aws.cloudwatch, baking, _step())["verdict"] == HOLD
    # When the alarm fires / Then the very next check fails the step, not the end of the bake
    aws.cloudwatch.set_alarm_state(AlarmName=target.alarm, StateValue="ALARM", StateReason="test")
    assert evaluate(aws.cloudwatch, baking, _step())["verdict"] == UNHEALTHY


def test_a_clean_step_does_not_pass_before_its_bake_and_metric_delay_are_over(
    aws: Clients, plan: dict[str, Any], served: Callable[..., None]
) -> None:
    served("2", 50, 0)
    slow = {**plan, "bake_seconds": 300, "check_interval_seconds": 60, "metric_delay_seconds": 120}
    step = _step(seconds_ago=0)
    shifted = datetime.strptime(step["shifted_at"], FORMAT).replace(tzinfo=UTC)
    during = evaluate(aws.cloudwatch, slow, step, now=shifted + timedelta(seconds=10))
    assert during["verdict"] == HOLD and during["reason"].startswith("baking")
    assert during["wait_seconds"] == 60  # the next look is one check interval away
    unsettled = evaluate(aws.cloudwatch, slow, step, now=shifted + timedelta(seconds=390))
    assert unsettled["verdict"] == HOLD and unsettled["wait_seconds"] == 30  # not past the settled window
    settled = evaluate(aws.cloudwatch, slow, step, now=shifted + timedelta(seconds=421))
    assert settled["verdict"] == HEALTHY


# ---------------------------------------------------------------- noise is not a regression


def _check(
    new: tuple[int, int], stable: tuple[int, int], alarms: dict[str, str | None] | None = None
) -> Check:
    now = datetime.now(UTC)
    return Check(
        new=VersionTraffic("2", new[0], new[1], 0),
        stable=VersionTraffic("1", stable[0], stable[1], 0),
        alarms=alarms or {},
        now=now,
        shifted_at=now - timedelta(seconds=600),
    )


PLAN: dict[str, Any] = {
    "target_version": "2",
    "stable_version": "1",
    "steps": [10, 20, 30, 40, 50, 60, 70, 80, 90],
    "min_invocations": 100,
    "error_rate_tolerance": 1.0,
    "failure_limit": 2,
    "confidence": 0.99,
    "bake_seconds": 300,
    "metric_delay_seconds": 120,
    "check_interval_seconds": 60,
    "hold_seconds": 60,
    "max_holds": 5,
}
STEP = {"index": 8, "percent": 90.0}


def test_a_version_as_good_as_the_stable_one_is_not_rolled_back_for_a_few_unlucky_errors() -> None:
    # Given a 2 % baseline, and the new version 4 failed of 150 (2.7 %): above 2 % + 1 pt? no, but the old
    # gate failed 4 of 100 outright (4 % > 3 %)
    for new in ((150, 4), (100, 4), (120, 5)):
        result = judge(PLAN, STEP, _check(new, (2000, 40)), checks=0, failures=0)
        assert result["verdict"] == HEALTHY, (new, result["reason"])
        assert result["excess_error_rate_bound"] < 0.01


def test_a_clearly_worse_version_fails_on_the_second_consecutive_check_with_its_evidence() -> None:
    # Given the new version failing 30 of 200 (15 %) against a 2 % baseline
    first = judge(PLAN, STEP, _check((200, 30), (2000, 40)), checks=0, failures=0)
    assert first["verdict"] == HOLD and first["failures"] == 1 and first["reason"].startswith("suspect")
    assert first["wait_seconds"] == 60
    second = judge(PLAN, STEP, _check((220, 33), (2100, 42)), checks=0, failures=first["failures"])
    assert second["verdict"] == UNHEALTHY
    # The decision record carries the sample sizes and the bound it was decided on
    assert "33 failed of 220 requests" in second["reason"] and "42 of 2100" in second["reason"]
    assert second["excess_error_rate_bound"] > 0.01 and second["confidence"] == 0.99


def test_one_suspect_check_followed_by_a_clean_one_resets_the_count() -> None:
    suspect = judge(PLAN, STEP, _check((200, 30), (2000, 40)), checks=0, failures=0)
    clean = judge(PLAN, STEP, _check((400, 10), (4000, 80)), checks=0, failures=suspect["failures"])
    assert (clean["verdict"], clean["failures"]) == (HEALTHY, 0)


def test_a_broken_version_fails_fast_even_on_a_handful_of_requests() -> None:
    # 5 of 5 failing is worse than 2 % with 99 % confidence already; with failure_limit 1, at once
    result = judge({**PLAN, "failure_limit": 1}, STEP, _check((5, 5), (2000, 40)), checks=0, failures=0)
    assert result["verdict"] == UNHEALTHY


def test_min_invocations_zero_gates_on_alarms_alone() -> None:
    alarm_only = {**PLAN, "min_invocations": 0}
    assert judge(alarm_only, STEP, _check((0, 0), (0, 0), {"a": "OK"}), 0, 0)["verdict"] == HEALTHY
    assert judge(alarm_only, STEP, _check((10, 9), (100, 0), {"a": "OK"}), 0, 0)["verdict"] == HEALTHY
    assert judge(alarm_only, STEP, _check((0, 0), (0, 0), {"a": "ALARM"}), 0, 0)["verdict"] == UNHEALTHY


@pytest.mark.parametrize(
    ("new", "stable", "worse"),
    [
        ((1000, 20), (1000, 20), False),  # equal
        ((1000, 60), (1000, 20), True),  # 6 % vs 2 %: 4 pt more, well above 1 pt
        ((10, 1), (1000, 20), False),  # one error in ten: could be luck
        ((0, 0), (0, 0), False),  # no data is no evidence
    ],
)
def test_the_bound_says_worse_only_with_evidence(
    new: tuple[int, int], stable: tuple[int, int], worse: bool
) -> None:
    bound = excess_error_rate_bound(
        VersionTraffic("2", new[0], new[1], 0), VersionTraffic("1", stable[0], stable[1], 0), 0.99
    )
    assert (bound > 0.01) is worse
