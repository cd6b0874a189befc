"""The canary's input: a bad rollout fails before any traffic moves, with a message naming the field."""

from __future__ import annotations

import re
from typing import Any

import pytest
from immutable_guard.canary.errors import CanaryRefused, InvalidCanaryInput
from immutable_guard.canary.plan import DEFAULT_STEPS, execution_name, parse_request

VALID = {"function": "orders", "alias": "live", "target_version": "7"}


def refused(**changes: Any) -> str:
    with pytest.raises(InvalidCanaryInput) as caught:
        parse_request({**VALID, **changes})
    return str(caught.value)


def test_defaults_are_ten_percent_steps_with_positive_confirmation() -> None:
    request = parse_request(VALID)
    assert request.steps == DEFAULT_STEPS == (10, 20, 30, 40, 50, 60, 70, 80, 90)
    assert request.min_invocations >= 1 and request.failure_limit >= 2 and request.confidence >= 0.99
    assert request.alarms == () and request.pre_traffic_hook is None


def test_a_trailing_hundred_is_the_promotion_and_decimals_are_allowed() -> None:
    steps = [2.5, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 100]
    assert parse_request({**VALID, "steps": steps}).steps == tuple(steps[:-1])


def test_a_step_above_ten_percent_is_refused() -> None:
    message = refused(steps=[10, 30, 40, 50, 60, 70, 80, 90])
    assert "steps: step 2 raises traffic from 10 % to 30 % (+20); no single step may exceed 10 %" in message


def test_a_plan_that_would_promote_a_large_share_at_once_is_refused() -> None:
    assert "promotion would move 90 % at once" in refused(steps=[5, 10])


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"steps": [10, 10, 20]}, "steps: step 2 (10.0 %) does not raise the share of step 1"),
        ({"steps": [0, 10]}, "steps: step 1 is 0.0 %"),
        ({"steps": []}, "steps: the plan needs at least one step"),
        ({"target_version": "$LATEST"}, "target_version: '$LATEST' is not a published version number"),
        ({"target_version": 0}, "target_version: 0 is not a published version number"),
        ({"alias": "12"}, "alias: '12' is not an alias name"),
        ({"function": "orders:live"}, "function: 'orders:live' is not a function name or an unqualified"),
        ({"bake_seconds": -1}, "bake_seconds: Input should be greater than or equal to 0"),
        ({"min_invocations": -1}, "min_invocations: Input should be greater than or equal to 0"),
        ({"failure_limit": 0}, "failure_limit: Input should be greater than or equal to 1"),
        ({"confidence": 1}, "confidence: Input should be less than or equal to 0.9999"),
        ({"alarms": ["a", "a"]}, "alarms: an alarm is listed twice"),
        ({"alarm": ["a"]}, "alarm: unknown field (check its spelling)"),
        ({"pre_traffic_hook": "orders"}, "a hook cannot be the function being rolled out"),
        ({"hook_timeout_seconds": 1000}, "hook_timeout_seconds: Input should be less than or equal to 900"),
    ],
)
def test_input_errors_name_the_field(changes: dict[str, Any], expected: str) -> None:
    assert expected in refused(**changes)


def test_missing_fields_are_all_named_and_refusal_is_a_canary_refusal() -> None:
    with pytest.raises(CanaryRefused) as caught:
        parse_request({"function": "orders"})
    assert "alias: required field is missing" in str(caught.value)
    assert "target_version: required field is missing" in str(caught.value)
    with pytest.raises(InvalidCanaryInput, match="must be a JSON object, not list"):
        parse_request([VALID])


def test_execution_names_say_what_rolls_out_and_never_collide() -> None:
    arn = "arn:aws:lambda:us-east-1:123456789012:function:orders"
    first, second = execution_name(arn, "live", "7"), execution_name("orders", "live", "7")
    assert first.startswith("orders-live-v7-") and second.startswith("orders-live-v7-")
    assert first != second  # a retried version, or a second start, gets its own name
    # Names from function and alias alone collided: function a-b + alias c, function a + alias b-c.
    assert execution_name("a-b", "c", "1") != execution_name("a", "b-c", "1")
    long = execution_name("f" * 64, "a" * 60, "12")
    assert len(long) <= 80 and re.fullmatch(r"[\w-]+", long)


def test_a_plan_whose_looks_could_outgrow_the_execution_history_is_refused() -> None:
    from immutable_guard.canary.plan import MAX_GATE_CHECKS

    assert parse_request(VALID).most_gate_looks() == 9 * (7 + 5 + 2 + 1)  # the defaults, far below
    with pytest.raises(InvalidCanaryInput, match="more than one execution's history holds"):
        parse_request({**VALID, "bake_seconds": 86_400, "check_interval_seconds": 60})
    day_long = parse_request({**VALID, "bake_seconds": 86_400, "check_interval_seconds": 3_600})
    assert day_long.most_gate_looks() <= MAX_GATE_CHECKS
