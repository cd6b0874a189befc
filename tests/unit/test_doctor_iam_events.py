"""`immutable-guard doctor` says when the instance-role path is blind: IAM's events reach EventBridge in
us-east-1 only, so a stack elsewhere hears role changes only through an enabled forwarding rule there
(iam-events-forwarder.yaml) aimed at its region's default bus."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import boto3
import pytest
from immutable_guard.doctor import IAM_EVENTS_REGION, CheckResult, DoctorClients, Verdict, run_checks
from immutable_guard.template import load_template
from moto import mock_aws
from test_doctor import REGION, Guard, _deploy

ELSEWHERE = "eu-west-1"
FORWARDER = Path(__file__).resolve().parents[2] / "iam-events-forwarder.yaml"


@pytest.fixture
def guard() -> Iterator[Guard]:
    """A healthy guard on moto, deployed as test_doctor deploys it."""
    with mock_aws():
        clients = DoctorClients(boto3.Session(region_name=REGION), region_name=REGION)
        yield Guard(clients, _deploy(clients))


def _forwarding_rule(
    guard: Guard, *, state: str = "ENABLED", pattern: dict[str, object] | None = None
) -> str:
    """The rule iam-events-forwarder.yaml creates in us-east-1, aimed at the other region's bus."""
    forwarder = load_template(FORWARDER)["Resources"]["ForwardIamRoleChanges"]["Properties"]
    events = guard.clients.events_of_iam_region
    account = guard.clients.sts.get_caller_identity()["Account"]
    events.put_rule(
        Name="guard-iam-events-ForwardIamRoleChanges",
        EventPattern=json.dumps(pattern or forwarder["EventPattern"]),
        State=state,
    )
    events.put_targets(
        Rule="guard-iam-events-ForwardIamRoleChanges",
        Targets=[
            {
                "Id": "GuardRegionDefaultBus",
                "Arn": f"arn:aws:events:{ELSEWHERE}:{account}:event-bus/default",
                "RoleArn": f"arn:aws:iam::{account}:role/guard-iam-events-ForwardingRole",
            }
        ],
    )
    return "guard-iam-events-ForwardIamRoleChanges"


def _check(guard: Guard, region: str) -> CheckResult:
    (result,) = run_checks(guard.clients, replace(guard.stack, region=region), only=["iam_events"])
    return result


def test_a_stack_in_us_east_1_hears_iam_itself(guard: Guard) -> None:
    result = _check(guard, IAM_EVENTS_REGION)
    assert result.verdict is Verdict.PASS


def test_a_stack_elsewhere_without_a_forwarder_is_blind_and_told_how_to_deploy_one(guard: Guard) -> None:
    # Given the guard in eu-west-1, and nothing in us-east-1 forwarding IAM's events to it
    # When the IAM events are checked
    result = _check(guard, ELSEWHERE)
    # Then doctor fails, says the instance-role path is blind, and gives the forwarder's deploy command
    assert result.verdict is Verdict.FAIL
    assert "instance-role path is BLIND" in result.summary
    assert "iam-events-forwarder.yaml" in result.fix
    assert f"GuardRegion={ELSEWHERE}" in result.fix


def test_an_enabled_forwarder_to_this_region_passes(guard: Guard) -> None:
    name = _forwarding_rule(guard)
    result = _check(guard, ELSEWHERE)
    assert result.verdict is Verdict.PASS
    assert result.details["forwarding_rules"] == [name]


def test_a_disabled_forwarder_fails_with_the_command_that_enables_it(guard: Guard) -> None:
    name = _forwarding_rule(guard, state="DISABLED")
    result = _check(guard, ELSEWHERE)
    assert result.verdict is Verdict.FAIL
    assert f"aws events enable-rule --region us-east-1 --name {name}" in result.fix


def test_a_rule_to_this_region_that_forwards_no_iam_event_does_not_count(guard: Guard) -> None:
    _forwarding_rule(guard, pattern={"source": ["aws.ec2"]})
    result = _check(guard, ELSEWHERE)
    assert result.verdict is Verdict.FAIL
