"""The health gate passes a step only on positive confirmation, and holds, then fails, without data."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from immutable_guard.canary.gate import HEALTHY, HOLD, UNHEALTHY, evaluate
from immutable_guard.clients import Clients


def _step(seconds_ago: float = 1) -> dict[str, Any]:
    shifted = datetime.now(UTC) - timedelta(seconds=seconds_ago)
    return {"index": 2, "percent": 30.0, "shifted_at": shifted.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}


def test_enough_clean_traffic_with_alarms_ok_is_healthy(
    aws: Clients, plan: dict[str, Any], served: Callable[..., None]
) -> None:
    served("2", 12, 0)
    served("1", 100, 1)
    result = evaluate(aws.cloudwatch, plan, _step(), checks=0)
    assert result["verdict"] == HEALTHY, result["reason"]
    assert result["new"]["invocations"] == 12 and result["stable"]["errors"] == 1
    assert (result["step"], result["checks"], result["alarms"]) == (3, 1, {"orders-live-errors": "OK"})


def test_too_few_invocations_hold_then_fail_after_the_bounded_rechecks(
    aws: Clients, plan: dict[str, Any], served: Callable[..., None]
) -> None:
    served("2", 3, 0)
    first = evaluate(aws.cloudwatch, plan, _step(), checks=0)
    assert first["verdict"] == HOLD and "served 3 of the 10 invocations needed" in first["reason"]
    assert evaluate(aws.cloudwatch, plan, _step(), checks=1)["verdict"] == HOLD  # max_holds = 2 re-checks
    last = evaluate(aws.cloudwatch, plan, _step(), checks=2)
    assert last["verdict"] == UNHEALTHY and last["reason"].startswith("not enough data after 3 checks")


def test_no_data_at_all_is_never_healthy(aws: Clients, plan: dict[str, Any]) -> None:
    verdicts = {evaluate(aws.cloudwatch, plan, _step(), checks=n)["verdict"] for n in range(5)}
    assert verdicts == {HOLD, UNHEALTHY}


def test_traffic_before_the_shift_does_not_count(
    aws: Clients, plan: dict[str, Any], served: Callable[..., None]
) -> None:
    served("2", 50, 0)
    assert evaluate(aws.cloudwatch, plan, _step(seconds_ago=-5), checks=0)["verdict"] == HOLD


def test_an_alarm_in_alarm_fails_the_step_even_with_good_traffic(
    aws: Clients, target: Any, plan: dict[str, Any], served: Callable[..., None]
) -> None:
    served("2", 50, 0)
    aws.cloudwatch.set_alarm_state(AlarmName=target.alarm, StateValue="ALARM", StateReason="test")
    result = evaluate(aws.cloudwatch, plan, _step(), checks=0)
    assert result["verdict"] == UNHEALTHY and result["reason"] == "alarm orders-live-errors in ALARM"


def test_an_alarm_deleted_mid_rollout_fails_the_step(
    aws: Clients, target: Any, plan: dict[str, Any], served: Callable[..., None]
) -> None:
    served("2", 50, 0)
    aws.cloudwatch.delete_alarms(AlarmNames=[target.alarm])
    result = evaluate(aws.cloudwatch, plan, _step(), checks=0)
    assert result["verdict"] == UNHEALTHY and "no longer exists" in result["reason"]


def test_an_alarm_without_data_is_not_a_confirmation(
    aws: Clients, target: Any, plan: dict[str, Any], served: Callable[..., None]
) -> None:
    served("2", 50, 0)
    aws.cloudwatch.set_alarm_state(AlarmName=target.alarm, StateValue="INSUFFICIENT_DATA", StateReason="test")
    assert evaluate(aws.cloudwatch, plan, _step(), checks=0)["verdict"] == HOLD


def test_errors_above_the_stable_rate_plus_tolerance_fail_the_step(
    aws: Clients, plan: dict[str, Any], served: Callable[..., None]
) -> None:
    served("1", 200, 2)  # stable: 1 %
    served("2", 50, 1)  # new: 2 %, within 1 % + 1 pt
    assert evaluate(aws.cloudwatch, plan, _step(), checks=0)["verdict"] == HEALTHY
    served("2", 50, 4)  # new: 5 of 100
    result = evaluate(aws.cloudwatch, plan, _step(), checks=0)
    assert result["verdict"] == UNHEALTHY
    assert (
        "version 2 failed 5 of 100 requests (5.0%), above stable version 1's 1.0% + 1 pt" in result["reason"]
    )


def test_errors_already_too_many_for_the_minimum_fail_without_waiting(
    aws: Clients, plan: dict[str, Any], served: Callable[..., None]
) -> None:
    served("2", 2, 2)  # 2 failures: even if the next 8 succeed, 20 % > 1 pt
    assert evaluate(aws.cloudwatch, plan, _step(), checks=0)["verdict"] == UNHEALTHY
