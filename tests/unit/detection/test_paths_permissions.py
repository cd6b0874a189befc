"""The instance's permissions: policies attached to, put on or removed from the role behind an immutable
server's instance profile, its trust policy and boundary, the role swapped in the profile, and the
profile disassociated. A role reaches every instance whose profile carries it.

Record shapes: IAM records carry IAM's JSON request fields (`roleName`, `policyArn`, `policyName`,
`policyDocument`, `instanceProfileName`; CreatePolicyVersion's `setAsDefault`, SetDefaultPolicyVersion's
`versionId`), as in the IAM User Guide's "Logging IAM and AWS STS API calls
with AWS CloudTrail" examples and the AttachRolePolicy EventBridge event used by public detection code
(an `aws.iam` event, region us-east-1). DisassociateIamInstanceProfile is one of the newer EC2 APIs whose
request CloudTrail wraps (`DisassociateIamInstanceProfileRequest.AssociationId`); its response names the
association's instance as in the EC2 API reference (DisassociateIamInstanceProfile,
IamInstanceProfileAssociation) and the AWS CLI example `aws ec2 disassociate-iam-instance-profile`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from detection_samples import (
    SAMPLE_INSTANCE,
    SAMPLE_INSTANCE_PROFILE,
    SAMPLE_ROLE,
    World,
    load_sample,
)
from immutable_guard.clients import Clients
from immutable_guard.detection import Ec2InstanceDirectory, Policy, judge, normalise, parse_event
from immutable_guard.detection.paths.permissions import ROLE_EVENT_NAMES
from immutable_guard.detection.policy import judge_event
from immutable_guard.detection.scope import ScopeRule
from immutable_guard.errors import ScopeResolutionFailed
from immutable_guard.model import Decision, Finding, Kind, Severity
from immutable_guard.patterns import matches
from immutable_guard.template import event_rules, find_template, load_template

PIPELINE = "arn:aws:iam::111122223333:role/deploy-pipeline"
ROLE_SAMPLES = [
    "cloudtrail-attach-role-policy.json",
    "cloudtrail-put-role-policy.json",
    "cloudtrail-update-assume-role-policy.json",
    "cloudtrail-create-policy-version.json",
]


def finding_of(raw: dict[str, Any]) -> Finding:
    return normalise(parse_event(raw))


@pytest.fixture
def clients(world: World) -> Clients:
    return Clients(boto3.Session(region_name="us-east-1"), region_name="us-east-1")


def _profile_for(world: World, role: str = SAMPLE_ROLE, profile: str = SAMPLE_INSTANCE_PROFILE) -> str:
    world.iam.create_role(RoleName=role, AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17"}))
    arn = world.iam.create_instance_profile(InstanceProfileName=profile)["InstanceProfile"]["Arn"]
    world.iam.add_role_to_instance_profile(InstanceProfileName=profile, RoleName=role)
    return arn


def _give(world: World, instance_id: str, profile: str = SAMPLE_INSTANCE_PROFILE) -> None:
    world.ec2.associate_iam_instance_profile(InstanceId=instance_id, IamInstanceProfile={"Name": profile})


def _judge(world: World, clients: Clients, raw: dict[str, Any], **policy: Any) -> Any:
    return judge_event(raw, Policy(**policy), Ec2InstanceDirectory(world.ec2, clients))


# ---------------------------------------------------------------- what the records say


@pytest.mark.parametrize("sample", ROLE_SAMPLES[:3])
def test_a_grant_on_a_role_is_a_critical_role_change_naming_the_role(sample: str) -> None:
    # Given a policy attached, an inline policy put, or the trust policy changed on a role
    # When the record is normalised
    found = finding_of(load_sample(sample))
    # Then it is a critical role change that names the role for resolution
    assert found.kind is Kind.ROLE_CHANGED
    assert found.severity is Severity.CRITICAL
    assert found.resource_ids == (f"role/{SAMPLE_ROLE}",)
    assert found.evidence["role_name"] == SAMPLE_ROLE


@pytest.mark.parametrize(
    ("event_name", "severity"),
    [
        ("DetachRolePolicy", Severity.HIGH),
        ("DeleteRolePolicy", Severity.HIGH),
        ("PutRolePermissionsBoundary", Severity.HIGH),
        ("DeleteRolePermissionsBoundary", Severity.CRITICAL),
    ],
)
def test_removals_and_boundaries_are_role_changes_too(event_name: str, severity: Severity) -> None:
    # A removed policy may have been a Deny, and a deleted boundary lifts every limit.
    raw = load_sample("cloudtrail-attach-role-policy.json")
    raw["detail"]["eventName"] = event_name
    found = finding_of(raw)
    assert (found.kind, found.severity) == (Kind.ROLE_CHANGED, severity)
    assert found.resource_ids == (f"role/{SAMPLE_ROLE}",)


def test_a_role_added_to_a_profile_names_the_profile() -> None:
    found = finding_of(load_sample("cloudtrail-add-role-to-instance-profile.json"))
    assert found.kind is Kind.ROLE_CHANGED
    assert found.resource_ids == (f"instance-profile/{SAMPLE_INSTANCE_PROFILE}",)
    assert found.evidence["role_name"] == "AdminRole"


def test_a_disassociated_profile_names_the_instance_from_the_response() -> None:
    found = finding_of(load_sample("cloudtrail-disassociate-iam-instance-profile.json"))
    assert found.kind is Kind.IAM_PROFILE_CHANGED
    assert found.instance_ids == (SAMPLE_INSTANCE,)
    assert found.alert_if_unresolved


def test_a_record_without_a_role_name_is_alerted_rather_than_ignored() -> None:
    raw = load_sample("cloudtrail-attach-role-policy.json")
    raw["detail"]["requestParameters"] = {"policyArn": "arn:aws:iam::aws:policy/AdministratorAccess"}
    found = finding_of(raw)
    judgement = judge(found, [], Policy())
    assert (judgement.decision, judgement.reason) == (Decision.ALERT, "unresolved_target")


# ---------------------------------------------------------------- rules


def _rules() -> list[Any]:
    return event_rules(load_template(find_template()))


@pytest.mark.parametrize(
    "sample",
    [
        *ROLE_SAMPLES,
        "cloudtrail-add-role-to-instance-profile.json",
        "cloudtrail-disassociate-iam-instance-profile.json",
    ],
)
def test_each_sample_is_delivered_by_exactly_one_rule(sample: str) -> None:
    raw = load_sample(sample)
    assert len([rule for rule in _rules() if matches(rule.pattern, raw)]) == 1


def test_a_failed_iam_call_is_delivered_by_no_rule() -> None:
    raw = load_sample("cloudtrail-attach-role-policy.json")
    raw["detail"]["errorCode"] = "AccessDenied"
    assert not [rule for rule in _rules() if matches(rule.pattern, raw)]


def test_the_forwarder_of_us_east_1_forwards_every_iam_call_the_guard_hears() -> None:
    # Given the forwarder template deployed in us-east-1
    forwarder = load_template(find_template().parent / "iam-events-forwarder.yaml")
    pattern = forwarder["Resources"]["ForwardIamRoleChanges"]["Properties"]["EventPattern"]
    # Then it forwards exactly the IAM calls this path handles, and every IAM sample
    assert sorted(pattern["detail"]["eventName"]) == sorted(ROLE_EVENT_NAMES)
    for sample in [*ROLE_SAMPLES, "cloudtrail-add-role-to-instance-profile.json"]:
        assert matches(pattern, load_sample(sample))


# ---------------------------------------------------------------- role -> profile -> instances (moto)


def test_a_role_change_remediates_every_in_scope_instance_whose_profile_carries_the_role(
    world: World, clients: Clients
) -> None:
    # Given the role behind a profile used by the immutable and the mutable instance
    _profile_for(world)
    _give(world, world.immutable_id)
    _give(world, world.mutable_id)
    # When AdministratorAccess is attached to the role
    judgement = _judge(world, clients, load_sample("cloudtrail-attach-role-policy.json"))
    # Then the immutable instance is remediated, and only it
    assert judgement.decision is Decision.REMEDIATE
    assert [i.instance_id for i in judgement.instances_in_scope] == [world.immutable_id]


def test_a_role_used_only_by_out_of_scope_instances_is_ignored(world: World, clients: Clients) -> None:
    _profile_for(world)
    _give(world, world.mutable_id)
    judgement = _judge(world, clients, load_sample("cloudtrail-put-role-policy.json"))
    assert (judgement.decision, judgement.reason) == (Decision.IGNORE, "out_of_scope")


def test_a_role_no_instance_uses_is_ignored(world: World, clients: Clients) -> None:
    _profile_for(world)
    judgement = _judge(world, clients, load_sample("cloudtrail-update-assume-role-policy.json"))
    assert (judgement.decision, judgement.reason) == (Decision.IGNORE, "out_of_scope")


def test_a_role_deleted_since_reaches_nothing_without_failing(world: World, clients: Clients) -> None:
    judgement = _judge(world, clients, load_sample("cloudtrail-attach-role-policy.json"))
    assert judgement.decision is Decision.IGNORE


def test_a_role_added_to_the_profile_of_an_immutable_instance_remediates_it(
    world: World, clients: Clients
) -> None:
    _profile_for(world)
    _give(world, world.immutable_id)
    judgement = _judge(world, clients, load_sample("cloudtrail-add-role-to-instance-profile.json"))
    assert judgement.decision is Decision.REMEDIATE
    assert [i.instance_id for i in judgement.instances_in_scope] == [world.immutable_id]


def test_the_profile_taken_off_an_immutable_instance_remediates_it(world: World, clients: Clients) -> None:
    raw = world.event("cloudtrail-disassociate-iam-instance-profile.json")
    judgement = _judge(world, clients, raw)
    assert judgement.decision is Decision.REMEDIATE
    assert [i.instance_id for i in judgement.instances_in_scope] == [world.immutable_id]


def test_the_pipeline_changing_the_role_of_an_immutable_instance_is_ignored(
    world: World, clients: Clients
) -> None:
    # Given the role is used by an immutable instance
    _profile_for(world)
    _give(world, world.immutable_id)
    # When the allow-listed pipeline changes it
    judgement = _judge(
        world,
        clients,
        load_sample("benign-attach-role-policy-allow-listed.json"),
        allowed_principal_arns=(PIPELINE,),
    )
    # Then nothing happens
    assert (judgement.decision, judgement.reason) == (Decision.IGNORE, "allow_listed_principal")


@pytest.mark.parametrize(
    ("declared", "decision", "reason"),
    [
        (("web-stack",), Decision.IGNORE, "cloudformation_change"),
        ((), Decision.REMEDIATE, "mutation_of_immutable_instance"),
    ],
    ids=["declared-stack", "undeclared-stack"],
)
def test_cloudformation_changing_the_role_is_ignored_only_for_the_declared_stacks_servers(
    world: World, clients: Clients, declared: tuple[str, ...], decision: Decision, reason: str
) -> None:
    # Given the role is used by an immutable instance of the stack web-stack
    _profile_for(world)
    server = world.launch({"immutable": "true", "aws:cloudformation:stack-name": "web-stack"})
    _give(world, server)
    # When CloudFormation changes the role, for a principal nobody allow-listed
    judgement = _judge(
        world,
        clients,
        load_sample("benign-put-role-policy-cloudformation.json"),
        allowed_principal_arns=(PIPELINE,),
        scope=ScopeRule(stack_names=declared),
    )
    # Then only the operator's declared stack may do so unseen
    assert (judgement.decision, judgement.reason) == (decision, reason)


@pytest.fixture
def refusing_iam() -> Iterator[Clients]:
    iam = boto3.client("iam", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    clients = Clients(boto3.Session(region_name="us-east-1"), region_name="us-east-1")
    clients.__dict__["iam"] = iam
    with Stubber(iam) as stub:
        stub.add_client_error("list_instance_profiles_for_role", service_error_code="AccessDenied")
        yield clients


def test_an_iam_refusal_is_a_typed_error_naming_the_role(world: World, refusing_iam: Clients) -> None:
    # Given Detect may not read the role's profiles
    found = finding_of(load_sample("cloudtrail-attach-role-policy.json"))
    # When the finding is resolved / Then the failure names the role, never a silent "no instance"
    with pytest.raises(ScopeResolutionFailed, match=f"role {SAMPLE_ROLE}: AccessDenied"):
        Ec2InstanceDirectory(world.ec2, refusing_iam).resolve(found)


# ---------------------------------------------------------------- managed policies attached to the role


def _managed_policy_on_the_role(world: World) -> str:
    arn = world.iam.create_policy(
        PolicyName="web-server-s3-read",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}],
            }
        ),
    )["Policy"]["Arn"]
    world.iam.attach_role_policy(RoleName=SAMPLE_ROLE, PolicyArn=arn)
    return arn


def test_a_new_default_version_of_a_policy_on_the_role_remediates_its_immutable_instances(
    world: World, clients: Clients
) -> None:
    # Given a customer-managed policy attached to the role of the immutable instance's profile
    _profile_for(world)
    _give(world, world.immutable_id)
    arn = _managed_policy_on_the_role(world)
    # When a new version of the policy is made the default
    raw = load_sample(
        "cloudtrail-create-policy-version.json", {"arn:aws:iam::111122223333:policy/web-server-s3-read": arn}
    )
    judgement = _judge(world, clients, raw)
    # Then the instance is remediated: the role changed without a call on the role itself
    assert judgement.decision is Decision.REMEDIATE
    assert judgement.finding.kind is Kind.ROLE_CHANGED
    assert [i.instance_id for i in judgement.instances_in_scope] == [world.immutable_id]


def test_a_version_that_is_not_made_the_default_is_ignored() -> None:
    raw = load_sample("cloudtrail-create-policy-version.json")
    raw["detail"]["requestParameters"]["setAsDefault"] = False
    found = finding_of(raw)
    assert found.resource_ids == ()
    assert judge(found, [], Policy()).decision is Decision.IGNORE


def test_setting_an_older_version_as_default_names_the_policy() -> None:
    raw = load_sample("cloudtrail-create-policy-version.json")
    raw["detail"]["eventName"] = "SetDefaultPolicyVersion"
    raw["detail"]["requestParameters"] = {
        "policyArn": "arn:aws:iam::111122223333:policy/web-server-s3-read",
        "versionId": "v1",
    }
    found = finding_of(raw)
    assert (found.kind, found.severity) == (Kind.ROLE_CHANGED, Severity.CRITICAL)
    assert found.resource_ids == ("arn:aws:iam::111122223333:policy/web-server-s3-read",)
