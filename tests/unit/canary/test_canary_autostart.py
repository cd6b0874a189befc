"""A deploy published a version (CloudTrail UpdateAlias20150331 of the function's published alias): the
rollout its plan describes starts once, on the serving alias; anything else starts nothing."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from canary_names import Target
from immutable_guard.canary.autostart import (
    IGNORED,
    PLAN_PARAMETER_PREFIX,
    REFUSED,
    SKIPPED,
    STARTED,
    publication,
    start_on_publication,
)
from immutable_guard.clients import Clients

# An UpdateAlias record as CloudTrail writes Lambda's (event name with its API version, requestParameters
# functionName / name / functionVersion): https://docs.aws.amazon.com/lambda/latest/dg/logging-using-cloudtrail.html
SAMPLE = Path(__file__).resolve().parents[3] / "events" / "canary" / "cloudtrail-update-alias-published.json"
PLAN = {"published_alias": "published", "alias": "live", "alarms": ["orders-live-errors"], "bake_seconds": 60}


def _event(**request: Any) -> dict[str, Any]:
    event = copy.deepcopy(json.loads(SAMPLE.read_text()))
    event["detail"]["requestParameters"].update(request)
    return dict(event)


@pytest.fixture
def machine(aws: Clients) -> str:
    role = aws.iam.create_role(RoleName="canary-sfn", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    definition = json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}})
    return str(
        aws.stepfunctions.create_state_machine(name="canary", definition=definition, roleArn=role)[
            "stateMachineArn"
        ]
    )


def _plan(aws: Clients, plan: Any = PLAN) -> None:
    value = plan if isinstance(plan, str) else json.dumps(plan)
    aws.ssm.put_parameter(Name=f"{PLAN_PARAMETER_PREFIX}orders", Value=value, Type="String", Overwrite=True)


def _start(aws: Clients, machine: str, event: dict[str, Any]) -> dict[str, Any]:
    return start_on_publication(event, aws.lambda_, aws.ssm, aws.stepfunctions, machine)


def test_the_sample_record_is_read_as_version_2_published_to_orders() -> None:
    found = publication(_event())
    assert found is not None
    assert (found.function, found.alias, found.version) == ("orders", "published", "2")


def test_a_publication_starts_the_plans_rollout_to_the_serving_alias_once(
    aws: Clients, target: Target, machine: str
) -> None:
    # Given version 2 published to `published` while `live` serves version 1, and a plan
    _plan(aws)
    # When the record arrives, twice (EventBridge delivers at least once)
    first = _start(aws, machine, _event())
    second = _start(aws, machine, _event())
    # Then one rollout of version 2 to `live` runs, with the plan's settings
    assert first["action"] == STARTED
    assert first["input"] == {
        "alias": "live",
        "alarms": ["orders-live-errors"],
        "bake_seconds": 60,
        "function": "orders",
        "target_version": "2",
    }
    assert (
        second["action"] in (STARTED, SKIPPED)
        and second.get("execution_arn", first["execution_arn"]) == first["execution_arn"]
    )
    executions = aws.stepfunctions.list_executions(stateMachineArn=machine)["executions"]
    assert len(executions) == 1 and executions[0]["name"].startswith("orders-live-v2-")


@pytest.mark.parametrize(
    ("request_parameters", "plan", "action", "why"),
    [
        ({"name": "live"}, PLAN, IGNORED, "not the published alias"),  # the canary's own moves
        ({}, None, IGNORED, "has no rollout plan"),
        ({"functionVersion": "1"}, PLAN, SKIPPED, "already serves version 1"),
        ({}, {**PLAN, "steps": [50]}, REFUSED, "no single step may exceed 10 %"),
        ({}, "not json", REFUSED, "is not JSON"),
        ({}, {**PLAN, "alias": "nope"}, SKIPPED, "serving alias nope does not exist yet"),
    ],
)
def test_what_starts_nothing_says_why(
    aws: Clients,
    target: Target,
    machine: str,
    request_parameters: dict[str, Any],
    plan: Any,
    action: str,
    why: str,
) -> None:
    if plan is not None:
        _plan(aws, plan)
    result = _start(aws, machine, _event(**request_parameters))
    assert result["action"] == action and why in result["reason"]
    assert aws.stepfunctions.list_executions(stateMachineArn=machine)["executions"] == []


def test_failed_calls_and_other_events_are_not_publications() -> None:
    failed = _event()
    failed["detail"]["errorCode"] = "ResourceConflictException"
    other = _event()
    other["detail"]["eventName"] = "PublishVersion20150331"
    description_only = _event()
    del description_only["detail"]["requestParameters"]["functionVersion"]
    assert (
        publication(failed) is None and publication(other) is None and publication(description_only) is None
    )


def test_the_templates_rule_delivers_alias_moves_only() -> None:
    from immutable_guard.patterns import matches
    from immutable_guard.template import event_rules, load_template

    template = load_template(Path(__file__).resolve().parents[3] / "template.yaml")
    (rule,) = [r for r in event_rules(template) if r.function_logical_id == "CanaryStartFunction"]
    published = _event()
    failed = _event()
    failed["detail"]["errorCode"] = "ResourceConflictException"
    new_version = _event()
    new_version["detail"]["eventName"] = "PublishVersion20150331"
    assert matches(rule.pattern, published)
    assert not matches(rule.pattern, failed) and not matches(rule.pattern, new_version)
