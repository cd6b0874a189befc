"""Preflight refuses what cannot be rolled out safely; shifts and promotion are conditional on the alias
being as the rollout left it; rollback always ends on the stable version and never deletes a version."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from immutable_guard.canary.errors import AliasChanged, CanaryRefused
from immutable_guard.canary.plan import parse_request
from immutable_guard.canary.traffic import failure_reason, preflight, promote, rollback, shift
from immutable_guard.clients import Clients


def _preflight(aws: Clients, target: Any, **changes: Any) -> dict[str, Any]:
    document = {"function": target.function, "alias": target.alias, "target_version": "2", **changes}
    return preflight(aws.lambda_, aws.cloudwatch, parse_request(document))


def _alias(aws: Clients, target: Any) -> tuple[str, dict[str, float]]:
    alias = aws.lambda_.get_alias(FunctionName=target.function, Name=target.alias)
    return alias["FunctionVersion"], dict(
        (alias.get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {}
    )


def test_preflight_accepts_a_ready_alias_and_records_the_stable_version(aws: Clients, target: Any) -> None:
    plan = _preflight(aws, target, alarms=[target.alarm])
    assert plan["stable_version"] == "1" and plan["target_version"] == "2"
    assert plan["function_arn"].endswith(":function:orders") and plan["step_count"] == 9
    assert _alias(aws, target) == ("1", {})  # preflight changes nothing


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"alias": "prod"}, "alias: function orders has no alias 'prod'"),
        ({"target_version": "9"}, "target_version: function orders has no version 9 does not exist"),
        ({"target_version": "1"}, "target_version: orders:live already points to version 1"),
        ({"alarms": ["orders-live-errors", "typo-alarm"]}, "alarms: typo-alarm does not exist"),
        ({"pre_traffic_hook": "no-such-hook"}, "pre_traffic_hook: function no-such-hook does not exist"),
    ],
)
def test_preflight_refuses_with_the_field_named(
    aws: Clients, target: Any, changes: dict[str, Any], expected: str
) -> None:
    with pytest.raises(CanaryRefused) as caught:
        _preflight(aws, target, **changes)
    assert expected in str(caught.value)


def test_preflight_refuses_an_alias_that_already_routes(aws: Clients, target: Any) -> None:
    aws.lambda_.update_alias(
        FunctionName=target.function,
        Name=target.alias,
        RoutingConfig={"AdditionalVersionWeights": {"2": 0.3}},
    )
    with pytest.raises(CanaryRefused, match=r"already routes traffic \(version 1 with 30 % on version 2\)"):
        _preflight(aws, target)


def test_preflight_refuses_an_alarm_already_firing(aws: Clients, target: Any) -> None:
    aws.cloudwatch.set_alarm_state(AlarmName=target.alarm, StateValue="ALARM", StateReason="test")
    with pytest.raises(CanaryRefused, match="orders-live-errors already in ALARM"):
        _preflight(aws, target, alarms=[target.alarm])


def test_preflight_refuses_functions_without_the_canary_tag(
    aws: Clients, target: Any, make_function: Callable[..., str]
) -> None:
    make_function("untagged-hook", tagged=False)
    with pytest.raises(
        CanaryRefused, match=r"post_traffic_hook: .*untagged-hook lacks the tag immutable-guard:canary"
    ):
        _preflight(aws, target, post_traffic_hook="untagged-hook")


def test_shifts_then_promotion_move_the_alias_and_a_retried_call_is_harmless(
    aws: Clients, target: Any, plan: dict[str, Any]
) -> None:
    first = shift(aws.lambda_, plan, 0, plan["revision_id"])
    assert (first["percent"], first["last"]) == (10, False) and _alias(aws, target) == ("1", {"2": 0.1})
    assert shift(aws.lambda_, plan, 0, plan["revision_id"])["weight"] == 0.1  # Lambda retry: already done
    revision = first["revision_id"]
    for index in range(1, 9):
        revision = shift(aws.lambda_, plan, index, revision)["revision_id"]
    assert _alias(aws, target) == ("1", {"2": 0.9})
    promoted = promote(aws.lambda_, plan, revision)
    assert promoted["promoted_version"] == "2" and _alias(aws, target) == ("2", {})
    assert promote(aws.lambda_, plan, revision)["promoted_version"] == "2"


def test_a_shift_refuses_an_alias_changed_by_someone_else(
    aws: Clients, target: Any, plan: dict[str, Any]
) -> None:
    revision = shift(aws.lambda_, plan, 0, plan["revision_id"])["revision_id"]
    aws.lambda_.update_alias(FunctionName=target.function, Name=target.alias, FunctionVersion="2")
    with pytest.raises(AliasChanged, match="expected version 1 with 10 % on version 2, found version 2"):
        shift(aws.lambda_, plan, 1, revision)
    with pytest.raises(AliasChanged):
        promote(aws.lambda_, plan, revision)


def test_a_shift_refuses_a_stale_revision(aws: Clients, target: Any, plan: dict[str, Any]) -> None:
    with pytest.raises(AliasChanged, match=r"revision .* is not stale-revision"):
        shift(aws.lambda_, plan, 0, "stale-revision")
    assert _alias(aws, target) == ("1", {})


def test_rollback_restores_the_stable_version_from_any_state_and_keeps_the_new_one(
    aws: Clients, target: Any, plan: dict[str, Any]
) -> None:
    shift(aws.lambda_, plan, 0, plan["revision_id"])
    failure = {"state": "HealthGate", "reason": "alarm orders-live-errors in ALARM"}
    result = rollback(aws.lambda_, plan, failure)
    assert result["action"] == "moved from version 1 with 10 % on version 2 to version 1"
    assert result["reason"] == "alarm orders-live-errors in ALARM" and _alias(aws, target) == ("1", {})
    assert rollback(aws.lambda_, plan, failure)["action"] == "already on the stable version"
    aws.lambda_.update_alias(FunctionName=target.function, Name=target.alias, FunctionVersion="2")
    assert rollback(aws.lambda_, plan, None)["rolled_back_to"] == "1" and _alias(aws, target) == ("1", {})
    versions = aws.lambda_.list_versions_by_function(FunctionName=target.function)["Versions"]
    assert {"1", "2"} <= {v["Version"] for v in versions}


def test_failure_reasons_read_like_sentences() -> None:
    lambda_error = {
        "Error": "AliasChanged",
        "Cause": '{"errorType": "AliasChanged", "errorMessage": "alias orders:live was changed"}',
    }
    assert (
        failure_reason({"state": "Shift", "error": lambda_error})
        == "Shift: AliasChanged: alias orders:live was changed"
    )
    timeout = {"state": "PreTrafficHook", "error": {"Error": "States.Timeout", "Cause": ""}}
    assert failure_reason(timeout) == "PreTrafficHook: States.Timeout: did not finish in time"
    rejected = {"state": "PostTrafficHook", "reason": "the hook said no", "verdict": {"status": "Failed"}}
    assert failure_reason(rejected) == 'the hook said no; it returned {"status": "Failed"}'
