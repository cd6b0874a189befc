"""Replace: the owner of the instance (Auto Scaling group or CloudFormation stack) rebuilds it, the check
says healthy only when a fresh instance serves, and an instance nobody owns is left to a person."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from immutable_guard.clients import Clients
from immutable_guard.errors import ReplacementFailed
from immutable_guard.ledger import IncidentLedger, Status
from immutable_guard.local.stack_updates import stack_updates_run_as_their_principal
from immutable_guard.remediation.replace import StackReplacement, check_replacement, start_replacement
from remediation_world import (
    GOLDEN_AMI,
    ContainedInstance,
    FakeLambdaContext,
    detach_from_group,
    group_members,
    load_function,
)

MakeContained = Callable[..., ContainedInstance]

STACK_TEMPLATE = {
    "Parameters": {
        "ReplacementGeneration": {"Type": "Number", "Default": "0"},
        "Rebuild": {"Type": "Number", "Default": "0"},
        "InstanceType": {"Type": "String", "Default": "t3.micro"},
    },
    "Resources": {
        "Web": {
            "Type": "AWS::EC2::Instance",
            "Properties": {
                "ImageId": GOLDEN_AMI,
                "InstanceType": {"Ref": "InstanceType"},
                "Tags": [{"Key": "generation", "Value": {"Ref": "ReplacementGeneration"}}],
            },
        }
    },
}


STACK_ROLE = "arn:aws:iam::123456789012:role/web-stack-service-role"
OPERATOR_ROLE = "arn:aws:iam::123456789012:role/replacement-by-the-operator"
# What the operator declares in template.yaml's parameters: the stack "web" may be rebuilt.
DECLARED = StackReplacement(declared_stacks=frozenset({"web"}))


@pytest.fixture(autouse=True)
def stack_updates_as_in_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto forgets a stack's service role on the next update that names none, and lets anyone update
    anything; in AWS the role stays and the update runs as it (the local runtime's fix, undone after)."""
    stack_updates_run_as_their_principal(
        lambda target, name, value: monkeypatch.setattr(target, name, value, raising=False)
    )


def _create_service_role(aws: Clients) -> None:
    """The stack's service role: CloudFormation may assume it, and it may replace the instance."""
    iam = aws._session.client("iam", region_name="us-east-1")
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "cloudformation.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
    iam.create_role(RoleName=STACK_ROLE.rsplit("/", 1)[-1], AssumeRolePolicyDocument=json.dumps(trust))
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": ["ec2:RunInstances", "ec2:TerminateInstances"], "Resource": "*"}
        ],
    }
    iam.put_role_policy(
        RoleName=STACK_ROLE.rsplit("/", 1)[-1], PolicyName="web", PolicyDocument=json.dumps(policy)
    )


def _create_stack(
    aws: Clients,
    parameters: dict[str, str],
    role_arn: str | None = STACK_ROLE,
    tags: dict[str, str] | None = None,
) -> str:
    """A stack that owns one standalone instance (run as `role_arn`); returns the instance id."""
    if role_arn == STACK_ROLE:
        _create_service_role(aws)
    aws.cloudformation.create_stack(
        StackName="web",
        TemplateBody=json.dumps(STACK_TEMPLATE),
        # moto resolves UsePreviousValue only for parameters given at creation.
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
        Tags=[{"Key": k, "Value": v} for k, v in (tags or {}).items()],
        **({"RoleARN": role_arn} if role_arn else {}),
    )
    detail = aws.cloudformation.describe_stack_resource(StackName="web", LogicalResourceId="Web")
    return str(detail["StackResourceDetail"]["PhysicalResourceId"])


def _stack_parameters(aws: Clients) -> dict[str, str]:
    stack = aws.cloudformation.describe_stacks(StackName="web")["Stacks"][0]
    return {p["ParameterKey"]: p["ParameterValue"] for p in stack["Parameters"]}


GENERATION_4 = {"ReplacementGeneration": "4", "Rebuild": "0", "InstanceType": "t3.micro"}


def _launch(aws: Clients) -> str:
    return str(
        aws.ec2.run_instances(ImageId=GOLDEN_AMI, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    )


@pytest.fixture
def stubbed_cloudformation(aws: Clients) -> Iterator[Stubber]:
    """moto neither replaces an instance on update nor describes it afterwards: the stack side is stubbed."""
    client = boto3.client("cloudformation", region_name="us-east-1")
    aws.__dict__["cloudformation"] = client  # Clients caches per attribute: this one is used from now on
    with Stubber(client) as stubber:
        yield stubber
        stubber.assert_no_pending_responses()


def _stack_status(stubber: Stubber, status: str) -> None:
    stubber.add_response(
        "describe_stacks",
        {
            "Stacks": [
                {"StackName": "web", "StackStatus": status, "CreationTime": datetime(2025, 1, 1, tzinfo=UTC)}
            ]
        },
        {"StackName": "arn:aws:cloudformation:us-east-1:123456789012:stack/web/1"},
    )


def _stack_resource(stubber: Stubber, physical_id: str) -> None:
    stubber.add_response(
        "describe_stack_resource",
        {
            "StackResourceDetail": {
                "LogicalResourceId": "Web",
                "PhysicalResourceId": physical_id,
                "ResourceType": "AWS::EC2::Instance",
                "LastUpdatedTimestamp": datetime(2025, 1, 1, tzinfo=UTC),
                "ResourceStatus": "UPDATE_COMPLETE",
            }
        },
        {
            "StackName": "arn:aws:cloudformation:us-east-1:123456789012:stack/web/1",
            "LogicalResourceId": "Web",
        },
    )


def _stack_replacement(**fields: Any) -> dict[str, Any]:
    return {
        "strategy": "cloudformation",
        "stack_name": "web",
        "stack_id": "arn:aws:cloudformation:us-east-1:123456789012:stack/web/1",
        "logical_id": "Web",
        "parameter": "ReplacementGeneration",
        "generation": "1",
        "service_role": None,
        "polls": 0,
        "healthy": False,
        **fields,
    }


# ---------------------------------------------------------------- Auto Scaling group


def test_group_member_is_replaced_by_the_group_and_healthy_once_a_new_one_serves(
    aws: Clients, ledger: IncidentLedger, golden_group: str, make_contained: MakeContained
) -> None:
    # Given a group member that the Contain step detached without lowering the desired capacity
    member = group_members(aws, golden_group)[0]
    contained = make_contained(member, auto_scaling_group=golden_group)
    detach_from_group(aws, golden_group, member)
    # When the replacement starts
    started = start_replacement(aws, ledger, contained.incident_id, member)
    # Then the group is the owner
    assert started == {
        "strategy": "auto_scaling_group",
        "asg_name": golden_group,
        "desired_capacity": 1,
        "polls": 0,
        "healthy": False,
        "replacement_instance_ids": [],
    }
    # And the check finds the instance the group launched, which is not the quarantined one
    checked = check_replacement(aws, ledger, contained.incident_id, member, started, max_polls=3)
    assert checked["healthy"] is True
    assert checked["polls"] == 1
    assert checked["replacement_instance_ids"] == group_members(aws, golden_group)
    assert member not in checked["replacement_instance_ids"]
    incident = ledger.get(contained.incident_id)
    assert incident.status is Status.REPLACED
    assert "replacement_started" in incident.timeline and "replaced" in incident.timeline


def test_the_quarantined_instance_never_counts_as_its_own_replacement(
    aws: Clients, ledger: IncidentLedger, golden_group: str, make_contained: MakeContained
) -> None:
    # Given a member still in its group, and a ledger that does not remember the group
    member = group_members(aws, golden_group)[0]
    contained = make_contained(member, auto_scaling_group=None)
    # When the replacement starts, the group is found from the instance's own tag
    started = start_replacement(aws, ledger, contained.incident_id, member)
    assert started["strategy"] == "auto_scaling_group" and started["asg_name"] == golden_group
    # Then the group at full strength with only the quarantined instance is not a healthy replacement
    checked = check_replacement(aws, ledger, contained.incident_id, member, started, max_polls=3)
    assert checked["healthy"] is False
    assert checked["replacement_instance_ids"] == []
    assert ledger.get(contained.incident_id).status is Status.CONTAINED


def test_a_group_that_never_becomes_healthy_fails_after_max_polls(
    aws: Clients, ledger: IncidentLedger, golden_group: str, make_contained: MakeContained
) -> None:
    # Given the new instance is unhealthy
    member = group_members(aws, golden_group)[0]
    contained = make_contained(member, auto_scaling_group=golden_group)
    detach_from_group(aws, golden_group, member)
    started = start_replacement(aws, ledger, contained.incident_id, member)
    for instance_id in group_members(aws, golden_group):
        aws.autoscaling.set_instance_health(InstanceId=instance_id, HealthStatus="Unhealthy")
    # When the last allowed poll still sees no healthy instance  Then the replacement failed
    polled = check_replacement(aws, ledger, contained.incident_id, member, started, max_polls=2)
    assert polled["healthy"] is False
    with pytest.raises(ReplacementFailed, match="after 2 polls"):
        check_replacement(aws, ledger, contained.incident_id, member, polled, max_polls=2)


# ---------------------------------------------------------------- CloudFormation stack


def test_stack_instance_is_replaced_by_updating_the_stack_with_a_new_generation(
    aws: Clients, ledger: IncidentLedger, make_contained: MakeContained
) -> None:
    # Given a standalone instance of a declared stack that has a service role and a replacement parameter
    instance_id = _create_stack(aws, GENERATION_4)
    contained = make_contained(instance_id)
    # When the replacement starts
    started = start_replacement(aws, ledger, contained.incident_id, instance_id, DECLARED)
    # Then the stack is updated with its previous template, the generation bumped, the rest unchanged
    assert started["strategy"] == "cloudformation"
    assert (started["stack_name"], started["logical_id"], started["parameter"]) == (
        "web",
        "Web",
        "ReplacementGeneration",
    )
    assert (started["previous_generation"], started["generation"]) == ("4", "5")
    assert _stack_parameters(aws) == {
        "ReplacementGeneration": "5",
        "Rebuild": "0",
        "InstanceType": "t3.micro",
    }
    # And the update ran as the stack's own service role
    assert (started["service_role"], started["service_role_source"]) == (STACK_ROLE, "stack")
    assert ledger.get(contained.incident_id).details["replacement_started"]["generation"] == "5"


def test_a_stack_the_operator_did_not_declare_is_left_to_a_person_untouched(
    aws: Clients, ledger: IncidentLedger, make_contained: MakeContained
) -> None:
    # Given the instance's stack is in no declared list and carries no declared tag
    instance_id = _create_stack(aws, GENERATION_4)
    contained = make_contained(instance_id)
    # When the replacement starts with nothing (or another stack) declared
    for stacks in (None, StackReplacement(declared_stacks=frozenset({"other"}), replaceable_tag_value="yes")):
        started = start_replacement(aws, ledger, contained.incident_id, instance_id, stacks)
        # Then it is left to a person, and the alert will say why
        assert started["strategy"] == "manual"
        assert "stack web is not declared replaceable" in started["reason"]
    # And the stack was not touched
    assert _stack_parameters(aws)["ReplacementGeneration"] == "4"


@pytest.mark.parametrize(("value", "declared"), [("yes", True), ("no", False), (None, False)])
def test_a_stack_carrying_the_declared_tag_is_replaceable(
    aws: Clients, ledger: IncidentLedger, make_contained: MakeContained, value: str | None, declared: bool
) -> None:
    # Given a stack tagged immutable-guard-replaceable=yes, and a guard declaring the tag value `value`
    instance_id = _create_stack(aws, GENERATION_4, tags={"immutable-guard-replaceable": "yes"})
    contained = make_contained(instance_id)
    # When the replacement starts
    stacks = StackReplacement(replaceable_tag_value=value)
    started = start_replacement(aws, ledger, contained.incident_id, instance_id, stacks)
    # Then only the declared value makes it replaceable
    assert started["strategy"] == ("cloudformation" if declared else "manual")
    assert _stack_parameters(aws)["ReplacementGeneration"] == ("5" if declared else "4")


def test_a_stack_without_a_service_role_is_left_to_a_person_saying_why(
    aws: Clients, ledger: IncidentLedger, make_contained: MakeContained
) -> None:
    # Given a declared stack created without a service role, and no role named by the operator
    instance_id = _create_stack(aws, GENERATION_4, role_arn=None)
    contained = make_contained(instance_id)
    # When the replacement starts
    started = start_replacement(aws, ledger, contained.incident_id, instance_id, DECLARED)
    # Then it is left to a person: an update would run with Replace's own, narrow credentials and fail
    assert started["strategy"] == "manual"
    assert started["reason"] == (
        "stack web has no service role; Replace's own credentials cannot update it: give the stack a "
        "service role (update it once with a role), or name one in ReplacementStackRoleArn"
    )
    assert _stack_parameters(aws)["ReplacementGeneration"] == "4"
    # And the check says a person must act
    checked = check_replacement(aws, ledger, contained.incident_id, instance_id, started, max_polls=5)
    assert checked["healthy"] is False and "no service role" in checked["reason"]


def test_an_instance_tag_choosing_the_parameter_is_refused(
    aws: Clients, ledger: IncidentLedger, make_contained: MakeContained
) -> None:
    # Given someone tagged the instance to have another parameter of its stack bumped
    instance_id = _create_stack(aws, {**GENERATION_4, "Rebuild": "7"})
    aws.ec2.create_tags(
        Resources=[instance_id], Tags=[{"Key": "immutable-guard:replacement-parameter", "Value": "Rebuild"}]
    )
    contained = make_contained(instance_id)
    # When the replacement starts
    started = start_replacement(aws, ledger, contained.incident_id, instance_id, DECLARED)
    # Then the tag is refused: the parameter comes from the guard's configuration only
    assert started["strategy"] == "manual"
    assert "immutable-guard:replacement-parameter='Rebuild'" in started["reason"]
    assert "configured ReplacementGeneration" in started["reason"]
    # And no parameter was bumped
    assert _stack_parameters(aws) == {**GENERATION_4, "Rebuild": "7"}


def test_the_configured_parameter_is_bumped_and_a_tag_naming_it_too_is_harmless(
    aws: Clients, ledger: IncidentLedger, make_contained: MakeContained
) -> None:
    # Given the operator configured "Rebuild", and the instance's tag names that same parameter
    instance_id = _create_stack(aws, {**GENERATION_4, "Rebuild": "7"})
    aws.ec2.create_tags(
        Resources=[instance_id], Tags=[{"Key": "immutable-guard:replacement-parameter", "Value": "Rebuild"}]
    )
    contained = make_contained(instance_id)
    stacks = StackReplacement(declared_stacks=frozenset({"web"}), parameter="Rebuild")
    # When the replacement starts  Then that parameter is bumped, and only that one
    start_replacement(aws, ledger, contained.incident_id, instance_id, stacks)
    assert _stack_parameters(aws) == {**GENERATION_4, "Rebuild": "8"}


def test_a_stack_without_the_configured_parameter_fails_naming_it(
    aws: Clients, ledger: IncidentLedger, make_contained: MakeContained
) -> None:
    # Given the operator configured a parameter the stack does not have
    instance_id = _create_stack(aws, GENERATION_4)
    contained = make_contained(instance_id)
    stacks = StackReplacement(declared_stacks=frozenset({"web"}), parameter="Generation")
    # When the replacement starts  Then it fails clearly, and the stack is untouched
    with pytest.raises(ReplacementFailed, match="no parameter Generation"):
        start_replacement(aws, ledger, contained.incident_id, instance_id, stacks)
    assert _stack_parameters(aws)["ReplacementGeneration"] == "4"


def test_a_retried_start_does_not_replace_twice(
    aws: Clients, ledger: IncidentLedger, make_contained: MakeContained
) -> None:
    # Given the replacement already started (the stack update was accepted)
    instance_id = _create_stack(aws, GENERATION_4)
    contained = make_contained(instance_id)
    first = start_replacement(aws, ledger, contained.incident_id, instance_id, DECLARED)
    # When the step runs again
    second = start_replacement(aws, ledger, contained.incident_id, instance_id, DECLARED)
    # Then the generation is bumped once
    assert second["generation"] == first["generation"] == "5"
    assert _stack_parameters(aws)["ReplacementGeneration"] == "5"


@pytest.mark.parametrize(
    ("status", "physical", "healthy"),
    [
        ("UPDATE_IN_PROGRESS", None, False),
        ("UPDATE_COMPLETE_CLEANUP_IN_PROGRESS", None, False),
        ("UPDATE_COMPLETE", "old", False),
        ("UPDATE_COMPLETE", "new", True),
    ],
)
def test_stack_check_is_healthy_only_when_the_stack_points_to_a_new_running_instance(
    aws: Clients,
    ledger: IncidentLedger,
    make_contained: MakeContained,
    stubbed_cloudformation: Stubber,
    status: str,
    physical: str | None,
    healthy: bool,
) -> None:
    # Given a stack update in the given state
    contained = make_contained()
    new_instance = _launch(aws)
    _stack_status(stubbed_cloudformation, status)
    if physical is not None:
        _stack_resource(stubbed_cloudformation, contained.instance_id if physical == "old" else new_instance)
    # When the replacement is checked
    checked = check_replacement(
        aws, ledger, contained.incident_id, contained.instance_id, _stack_replacement(), 5
    )
    # Then it is healthy only with a new, running instance behind the logical id
    assert checked["healthy"] is healthy
    assert checked["polls"] == 1
    assert checked["replacement_instance_ids"] == ([new_instance] if healthy else [])


def test_stack_check_is_not_healthy_while_the_new_instance_is_not_running(
    aws: Clients, ledger: IncidentLedger, make_contained: MakeContained, stubbed_cloudformation: Stubber
) -> None:
    # Given the stack points to a new instance that is stopped
    contained = make_contained()
    new_instance = _launch(aws)
    aws.ec2.stop_instances(InstanceIds=[new_instance])
    _stack_status(stubbed_cloudformation, "UPDATE_COMPLETE")
    _stack_resource(stubbed_cloudformation, new_instance)
    # When checked  Then not healthy
    checked = check_replacement(
        aws, ledger, contained.incident_id, contained.instance_id, _stack_replacement(), 5
    )
    assert checked["healthy"] is False


@pytest.mark.parametrize(
    "status", ["UPDATE_ROLLBACK_COMPLETE", "UPDATE_ROLLBACK_IN_PROGRESS", "UPDATE_FAILED"]
)
def test_stack_rollback_or_failure_fails_the_replacement(
    aws: Clients,
    ledger: IncidentLedger,
    make_contained: MakeContained,
    stubbed_cloudformation: Stubber,
    status: str,
) -> None:
    contained = make_contained()
    _stack_status(stubbed_cloudformation, status)
    with pytest.raises(ReplacementFailed, match=status):
        check_replacement(aws, ledger, contained.incident_id, contained.instance_id, _stack_replacement(), 5)


def _no_updates(stubber: Stubber) -> None:
    stubber.add_client_error(
        "update_stack",
        service_error_code="ValidationError",
        service_message="No updates are to be performed.",
    )


def _stack_description(stubber: Stubber, role_arn: str | None = STACK_ROLE) -> None:
    stubber.add_response(
        "describe_stacks",
        {
            "Stacks": [
                {
                    "StackName": "web",
                    "StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/web/1",
                    "StackStatus": "UPDATE_COMPLETE",
                    "CreationTime": datetime(2025, 1, 1, tzinfo=UTC),
                    "Parameters": [{"ParameterKey": "ReplacementGeneration", "ParameterValue": "1"}],
                    "Capabilities": ["CAPABILITY_IAM"],
                    **({"RoleARN": role_arn} if role_arn else {}),
                }
            ]
        },
        {"StackName": "web"},
    )


def _stack_member(aws: Clients, make_contained: MakeContained) -> ContainedInstance:
    contained = make_contained()
    aws.ec2.create_tags(
        Resources=[contained.instance_id],
        Tags=[
            {"Key": "aws:cloudformation:stack-name", "Value": "web"},
            {"Key": "aws:cloudformation:logical-id", "Value": "Web"},
        ],
    )
    return contained


def _expect_update(stubber: Stubber, incident_id: str, **role: str) -> None:
    stubber.add_response(
        "update_stack",
        {"StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/web/1"},
        {
            "StackName": "arn:aws:cloudformation:us-east-1:123456789012:stack/web/1",
            "UsePreviousTemplate": True,
            "Parameters": [{"ParameterKey": "ReplacementGeneration", "ParameterValue": "2"}],
            "Capabilities": ["CAPABILITY_IAM"],
            "ClientRequestToken": f"immutable-guard-{incident_id}-2",
            **role,
        },
    )


def test_no_updates_is_tolerated_when_the_stack_already_points_elsewhere(
    aws: Clients, ledger: IncidentLedger, make_contained: MakeContained, stubbed_cloudformation: Stubber
) -> None:
    # Given a stack that already replaced the instance, so the update changes nothing
    contained = _stack_member(aws, make_contained)
    _stack_description(stubbed_cloudformation)
    _no_updates(stubbed_cloudformation)
    _stack_resource(stubbed_cloudformation, "i-0aaaaaaaaaaaaaaaa")
    # When the replacement starts  Then it carries on (the check decides health)
    started = start_replacement(aws, ledger, contained.incident_id, contained.instance_id, DECLARED)
    assert started["already_replaced"] is True


def test_no_updates_fails_when_the_stack_still_points_to_the_instance(
    aws: Clients, ledger: IncidentLedger, make_contained: MakeContained, stubbed_cloudformation: Stubber
) -> None:
    # Given the parameter does not feed the instance, so nothing would ever replace it
    contained = _stack_member(aws, make_contained)
    _stack_description(stubbed_cloudformation)
    _no_updates(stubbed_cloudformation)
    _stack_resource(stubbed_cloudformation, contained.instance_id)
    # When the replacement starts  Then it fails, saying why
    with pytest.raises(ReplacementFailed, match="must depend on it"):
        start_replacement(aws, ledger, contained.incident_id, contained.instance_id, DECLARED)


@pytest.mark.parametrize("operator_role", [None, OPERATOR_ROLE])
def test_the_stacks_own_service_role_is_used_without_passing_any_role(
    aws: Clients,
    ledger: IncidentLedger,
    make_contained: MakeContained,
    stubbed_cloudformation: Stubber,
    operator_role: str | None,
) -> None:
    # Given a declared stack created with CAPABILITY_IAM and its own service role (and maybe an operator's)
    contained = _stack_member(aws, make_contained)
    _stack_description(stubbed_cloudformation)
    # When the replacement starts  Then UpdateStack names no role: CloudFormation uses the stack's own,
    # and nothing is passed, so no iam:PassRole is needed (the Stubber checks the request exactly)
    _expect_update(stubbed_cloudformation, contained.incident_id)
    stacks = StackReplacement(declared_stacks=frozenset({"web"}), operator_role_arn=operator_role)
    started = start_replacement(aws, ledger, contained.incident_id, contained.instance_id, stacks)
    assert (started["generation"], started["service_role"]) == ("2", STACK_ROLE)


def test_the_operators_role_is_passed_to_a_stack_without_its_own(
    aws: Clients, ledger: IncidentLedger, make_contained: MakeContained, stubbed_cloudformation: Stubber
) -> None:
    # Given a declared stack without a service role, and a role the operator named for such stacks
    contained = _stack_member(aws, make_contained)
    _stack_description(stubbed_cloudformation, role_arn=None)
    # When the replacement starts  Then UpdateStack passes exactly that role
    _expect_update(stubbed_cloudformation, contained.incident_id, RoleARN=OPERATOR_ROLE)
    stacks = StackReplacement(declared_stacks=frozenset({"web"}), operator_role_arn=OPERATOR_ROLE)
    started = start_replacement(aws, ledger, contained.incident_id, contained.instance_id, stacks)
    assert (started["service_role"], started["service_role_source"]) == (OPERATOR_ROLE, "operator")


# ---------------------------------------------------------------- nobody owns it


def test_an_instance_nobody_owns_is_left_to_a_person(
    aws: Clients, ledger: IncidentLedger, make_contained: MakeContained
) -> None:
    # Given a hand-launched instance  When the replacement starts  Then the strategy is manual
    contained = make_contained()
    started = start_replacement(aws, ledger, contained.incident_id, contained.instance_id)
    assert started["strategy"] == "manual" and started["healthy"] is False
    # And a check never calls it healthy
    checked = check_replacement(
        aws, ledger, contained.incident_id, contained.instance_id, started, max_polls=5
    )
    assert checked["healthy"] is False


# ---------------------------------------------------------------- handler and IAM


def test_handler_starts_and_checks(
    aws: Clients,
    golden_group: str,
    make_contained: MakeContained,
    lambda_context: FakeLambdaContext,
    step_environment: pytest.MonkeyPatch,
) -> None:
    # Given a detached group member and the function's environment
    step_environment.setenv("MAX_POLLS", "3")
    member = group_members(aws, golden_group)[0]
    contained = make_contained(member, auto_scaling_group=golden_group)
    detach_from_group(aws, golden_group, member)
    app = load_function("replace")
    base = {"incident_id": contained.incident_id, "instance_id": member}
    # When the state machine calls start, then check with the previous result
    started = app.handler({**base, "action": "start"}, lambda_context)
    checked = app.handler({**base, "action": "check", "replacement": started, "max_polls": 3}, lambda_context)
    # Then the contract's shapes come back
    assert started["strategy"] == "auto_scaling_group"
    assert checked["healthy"] is True and checked["polls"] == 1


@pytest.mark.parametrize(
    ("environment", "strategy"),
    [
        ({}, "manual"),
        ({"SCOPE_STACK_NAMES": "other,web", "REPLACEMENT_STACK_ROLE_ARN": ""}, "cloudformation"),
        ({"SCOPE_STACK_NAMES": "", "REPLACEABLE_STACK_TAG_VALUE": "true"}, "cloudformation"),
        ({"SCOPE_STACK_NAMES": "web", "REPLACEMENT_PARAMETER": "Rebuild"}, "cloudformation"),
    ],
)
def test_handler_reads_which_stacks_are_declared_from_its_environment(
    aws: Clients,
    ledger: IncidentLedger,
    make_contained: MakeContained,
    lambda_context: FakeLambdaContext,
    step_environment: pytest.MonkeyPatch,
    environment: dict[str, str],
    strategy: str,
) -> None:
    # Given a stack tagged replaceable, and the function's environment as template.yaml sets it
    instance_id = _create_stack(aws, GENERATION_4, tags={"immutable-guard-replaceable": "true"})
    contained = make_contained(instance_id)
    step_environment.setenv("MAX_POLLS", "3")
    for name, value in environment.items():
        step_environment.setenv(name, value)
    app = load_function("replace")
    # When the state machine calls start
    started = app.handler(
        {"incident_id": contained.incident_id, "instance_id": instance_id, "action": "start"}, lambda_context
    )
    # Then only a declared stack is updated, bumping the configured parameter
    assert started["strategy"] == strategy
    if strategy == "cloudformation":
        assert started["parameter"] == environment.get("REPLACEMENT_PARAMETER", "ReplacementGeneration")
