"""Preflight refuses what cannot be rolled out safely; shifts and promotion are conditional on the alias
being as the rollout left it; rollback always ends on the stable version and never deletes a version."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from immutable_guard.canary.errors import AliasChanged, CanaryRefused
from immutable_guard.canary.lock import RolloutLock
from immutable_guard.canary.plan import parse_request
from immutable_guard.canary.traffic import failure_reason, preflight, promote, release, rollback, shift
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
    aws: Clients, target: Any, plan: dict[str, Any], lock: RolloutLock
) -> None:
    first = shift(aws.lambda_, lock, plan, 0, plan["revision_id"])
    assert (first["percent"], first["last"]) == (10, False) and _alias(aws, target) == ("1", {"2": 0.1})
    assert (
        shift(aws.lambda_, lock, plan, 0, plan["revision_id"])["weight"] == 0.1
    )  # Lambda retry: already done
    revision = first["revision_id"]
    for index in range(1, 9):
        revision = shift(aws.lambda_, lock, plan, index, revision)["revision_id"]
    assert _alias(aws, target) == ("1", {"2": 0.9})
    promoted = promote(aws.lambda_, lock, plan, revision)
    assert promoted["promoted_version"] == "2" and _alias(aws, target) == ("2", {})
    assert promote(aws.lambda_, lock, plan, revision)["promoted_version"] == "2"


def test_a_shift_refuses_an_alias_changed_by_someone_else(
    aws: Clients, target: Any, plan: dict[str, Any], lock: RolloutLock
) -> None:
    revision = shift(aws.lambda_, lock, plan, 0, plan["revision_id"])["revision_id"]
    aws.lambda_.update_alias(FunctionName=target.function, Name=target.alias, FunctionVersion="2")
    with pytest.raises(AliasChanged, match="expected version 1 with 10 % on version 2, found version 2"):
        shift(aws.lambda_, lock, plan, 1, revision)
    with pytest.raises(AliasChanged):
        promote(aws.lambda_, lock, plan, revision)


def test_a_shift_refuses_a_stale_revision(
    aws: Clients, target: Any, plan: dict[str, Any], lock: RolloutLock
) -> None:
    with pytest.raises(AliasChanged, match=r"revision .* is not stale-revision"):
        shift(aws.lambda_, lock, plan, 0, "stale-revision")
    assert _alias(aws, target) == ("1", {})


def test_rollback_restores_the_stable_version_and_keeps_the_new_one(
    aws: Clients, target: Any, plan: dict[str, Any], lock: RolloutLock
) -> None:
    shift(aws.lambda_, lock, plan, 0, plan["revision_id"])
    failure = {"state": "HealthGate", "reason": "alarm orders-live-errors in ALARM"}
    result = rollback(aws.lambda_, lock, plan, failure)
    assert result["outcome"] == "rolled_back" and result["rolled_back_to"] == "1"
    assert result["action"] == "moved from version 1 with 10 % on version 2 to version 1"
    assert result["reason"] == "alarm orders-live-errors in ALARM" and _alias(aws, target) == ("1", {})
    assert rollback(aws.lambda_, lock, plan, failure)["action"] == "already on the stable version"
    versions = aws.lambda_.list_versions_by_function(FunctionName=target.function)["Versions"]
    assert {"1", "2"} <= {v["Version"] for v in versions}


def test_rollback_leaves_an_alias_someone_else_changed_as_found(
    aws: Clients, target: Any, plan: dict[str, Any], lock: RolloutLock
) -> None:
    # The stale-rollout case: while this rollout waited, version 3 was promoted by someone else.
    aws.lambda_.update_function_configuration(
        FunctionName=target.function, Environment={"Variables": {"V": "3"}}
    )
    aws.lambda_.publish_version(FunctionName=target.function)
    shift(aws.lambda_, lock, plan, 0, plan["revision_id"])
    aws.lambda_.update_alias(
        FunctionName=target.function, Name=target.alias, FunctionVersion="3", RoutingConfig={}
    )
    result = rollback(aws.lambda_, lock, plan, {"state": "Shift", "reason": "alias changed"})
    assert result["outcome"] == "superseded" and result["rolled_back_to"] is None
    assert "was changed outside this rollout" in result["reason"] and "found version 3" in result["reason"]
    assert _alias(aws, target)[0] == "3"  # not reverted to version 1


def test_the_lock_holds_one_rollout_per_alias_and_is_released_only_by_its_holder(
    aws: Clients, target: Any, plan: dict[str, Any], lock: RolloutLock
) -> None:
    other = "arn:aws:states:us-east-1:123456789012:execution:canary:second"
    with pytest.raises(CanaryRefused, match="another rollout of orders:live holds it"):
        preflight(aws.lambda_, aws.cloudwatch, parse_request(_document(target)), lock, other)
    assert not lock.release(target.function, target.alias, other)  # never another rollout's lock
    assert release(lock, plan)["released"] is True
    second = preflight(aws.lambda_, aws.cloudwatch, parse_request(_document(target)), lock, other)
    assert second["execution"] == other and lock.get(target.function, target.alias)["execution"] == other


def test_an_expired_lock_can_be_taken_over(
    aws: Clients, target: Any, plan: dict[str, Any], lock: RolloutLock
) -> None:
    aws.dynamodb.update_item(
        TableName="immutable-guard-ledger",
        Key={"pk": {"S": f"CANARY#{target.function}:{target.alias}"}},
        UpdateExpression="SET expires_at = :past",
        ExpressionAttributeValues={":past": {"N": "1"}},
    )
    other = "arn:aws:states:us-east-1:123456789012:execution:canary:after-a-crash"
    assert preflight(aws.lambda_, aws.cloudwatch, parse_request(_document(target)), lock, other)
    # The old holder lost the alias: its next move stops instead of writing.
    with pytest.raises(AliasChanged, match="no longer holds the alias's lock"):
        shift(aws.lambda_, lock, plan, 0, plan["revision_id"])


def test_a_refused_preflight_releases_the_lock_it_took(aws: Clients, target: Any, lock: RolloutLock) -> None:
    execution = "arn:aws:states:us-east-1:123456789012:execution:canary:refused"
    with pytest.raises(CanaryRefused, match="typo-alarm does not exist"):
        preflight(
            aws.lambda_,
            aws.cloudwatch,
            parse_request(_document(target, alarms=["typo-alarm"])),
            lock,
            execution,
        )
    assert lock.get(target.function, target.alias) is None


def _document(target: Any, **changes: Any) -> dict[str, Any]:
    return {"function": target.function, "alias": target.alias, "target_version": "2", **changes}


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
