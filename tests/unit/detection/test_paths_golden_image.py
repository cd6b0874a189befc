"""The golden image: a launch template version created, deleted or made the default, or an Auto Scaling
group pointed at another launch source, is alerted (critical) when an in-scope server would be replaced
from it, ignored otherwise, and never remediated: the running servers are unchanged.

Record shapes: CreateLaunchTemplateVersion, ModifyLaunchTemplate and DeleteLaunchTemplateVersions are
newer EC2 APIs whose request CloudTrail wraps (`{"<Operation>Request": {...}}`, SDK field names:
LaunchTemplateId, LaunchTemplateData, SourceVersion, SetDefaultVersion) and whose response is wrapped
in lowerCamel (`launchTemplateVersion.versionNumber`), per the EC2 API reference of each call and the
AWS CLI examples (`aws ec2 create-launch-template-version`). UpdateAutoScalingGroup records Auto
Scaling's request in lowerCamel (`autoScalingGroupName`, `minSize`, `maxSize`), as in the Amazon EC2
Auto Scaling User Guide's "Log Amazon EC2 Auto Scaling API calls with AWS CloudTrail" example; the
`launchTemplate` object follows the same spelling (`launchTemplateId`, `version`).
"""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from detection_samples import (
    SAMPLE_AUTO_SCALING_GROUP,
    SAMPLE_LAUNCH_TEMPLATE,
    SAMPLE_OTHER_LAUNCH_TEMPLATE,
    World,
    load_sample,
)
from immutable_guard.clients import Clients
from immutable_guard.detection import Ec2InstanceDirectory, Policy, ScopeRule, normalise, parse_event
from immutable_guard.detection.policy import judge_event
from immutable_guard.model import Decision, Kind, Severity

PIPELINE = "arn:aws:iam::111122223333:role/deploy-pipeline"
TEMPLATE_SAMPLES = [
    "cloudtrail-create-launch-template-version.json",
    "cloudtrail-modify-launch-template.json",
    "cloudtrail-delete-launch-template-versions.json",
]
IN_SCOPE_GROUP = Policy(scope=ScopeRule(asg_names=(SAMPLE_AUTO_SCALING_GROUP,)))


@pytest.fixture
def clients(world: World) -> Clients:
    return Clients(boto3.Session(region_name="us-east-1"), region_name="us-east-1")


def _template(world: World, name: str = "web-servers") -> str:
    return world.ec2.create_launch_template(
        LaunchTemplateName=name, LaunchTemplateData={"ImageId": world.image_id, "InstanceType": "t3.micro"}
    )["LaunchTemplate"]["LaunchTemplateId"]


def _group(clients: Clients, world: World, template_id: str, name: str = SAMPLE_AUTO_SCALING_GROUP) -> None:
    clients.autoscaling.create_auto_scaling_group(
        AutoScalingGroupName=name,
        LaunchTemplate={"LaunchTemplateId": template_id, "Version": "$Latest"},
        MinSize=1,
        MaxSize=2,
        DesiredCapacity=1,
        VPCZoneIdentifier=world.subnet_id,
    )


def _judge(world: World, clients: Clients, raw: dict[str, Any], policy: Policy = IN_SCOPE_GROUP) -> Any:
    return judge_event(raw, policy, Ec2InstanceDirectory(world.ec2, clients))


# ---------------------------------------------------------------- what the records say


@pytest.mark.parametrize("sample", TEMPLATE_SAMPLES)
def test_a_launch_template_change_is_a_critical_golden_image_change_naming_the_template(sample: str) -> None:
    found = normalise(parse_event(load_sample(sample)))
    assert (found.kind, found.severity) == (Kind.GOLDEN_IMAGE_CHANGED, Severity.CRITICAL)
    assert found.resource_ids == (SAMPLE_LAUNCH_TEMPLATE,)


def test_the_new_version_and_its_image_are_read_from_the_wrapped_record() -> None:
    found = normalise(parse_event(load_sample("cloudtrail-create-launch-template-version.json")))
    assert found.evidence["version_number"] == 2
    assert found.evidence["image_id"] == "ami-0badc0ffee1234567"


def test_a_template_known_by_name_only_is_named_by_name() -> None:
    raw = load_sample("cloudtrail-modify-launch-template.json")
    raw["detail"]["requestParameters"] = {
        "ModifyLaunchTemplateRequest": {"LaunchTemplateName": "web-servers", "SetDefaultVersion": "3"}
    }
    raw["detail"]["responseElements"] = None
    found = normalise(parse_event(raw))
    assert found.resource_ids == ("launch-template/web-servers",)
    assert found.evidence["default_version"] == "3"


def test_a_group_pointed_at_another_template_names_the_group() -> None:
    found = normalise(parse_event(load_sample("cloudtrail-update-auto-scaling-group-launch-template.json")))
    assert (found.kind, found.severity) == (Kind.GOLDEN_IMAGE_CHANGED, Severity.CRITICAL)
    assert found.resource_ids == (f"autoScalingGroup/{SAMPLE_AUTO_SCALING_GROUP}",)
    assert SAMPLE_OTHER_LAUNCH_TEMPLATE in found.summary


def test_a_capacity_change_names_nothing_to_resolve() -> None:
    found = normalise(parse_event(load_sample("benign-update-auto-scaling-group-capacity.json")))
    assert found.resource_ids == ()
    assert found.evidence["launch_source_changed"] is False


# ---------------------------------------------------------------- template / group -> servers (moto)


@pytest.mark.parametrize("sample", TEMPLATE_SAMPLES)
def test_a_template_of_an_in_scope_group_is_alerted_not_remediated(
    world: World, clients: Clients, sample: str
) -> None:
    # Given an in-scope Auto Scaling group launching from the template
    template_id = _template(world)
    _group(clients, world, template_id)
    # When a version of its template is created, made the default or deleted
    judgement = _judge(world, clients, load_sample(sample, {SAMPLE_LAUNCH_TEMPLATE: template_id}))
    # Then the team is alerted about the group's servers, and none is quarantined
    assert (judgement.decision, judgement.reason) == (Decision.ALERT, "golden_image_at_risk")
    assert len(judgement.instances_in_scope) == 1
    assert "would be replaced from it" in judgement.detail


def test_a_template_of_an_out_of_scope_group_is_ignored(world: World, clients: Clients) -> None:
    template_id = _template(world)
    _group(clients, world, template_id, name="batch-workers")
    raw = load_sample("cloudtrail-create-launch-template-version.json", {SAMPLE_LAUNCH_TEMPLATE: template_id})
    judgement = _judge(world, clients, raw)
    assert (judgement.decision, judgement.reason) == (Decision.IGNORE, "out_of_scope")


def test_a_template_no_server_uses_is_ignored(world: World, clients: Clients) -> None:
    template_id = _template(world)
    raw = load_sample("cloudtrail-create-launch-template-version.json", {SAMPLE_LAUNCH_TEMPLATE: template_id})
    judgement = _judge(world, clients, raw)
    assert (judgement.decision, judgement.reason) == (Decision.IGNORE, "out_of_scope")


def test_a_template_an_immutable_server_was_launched_from_directly_is_alerted(
    world: World, clients: Clients
) -> None:
    # Given an immutable server launched from the template without a group (a stack's instance)
    template_id = _template(world)
    server = world.ec2.run_instances(
        LaunchTemplate={"LaunchTemplateId": template_id},
        MinCount=1,
        MaxCount=1,
        SubnetId=world.subnet_id,
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "immutable", "Value": "true"}]}],
    )["Instances"][0]["InstanceId"]
    raw = load_sample("cloudtrail-modify-launch-template.json", {SAMPLE_LAUNCH_TEMPLATE: template_id})
    # When its default version changes / Then it is alerted for that server
    judgement = _judge(world, clients, raw, Policy())
    assert judgement.decision is Decision.ALERT
    assert [i.instance_id for i in judgement.instances_in_scope] == [server]


def test_an_in_scope_group_pointed_at_another_template_is_alerted(world: World, clients: Clients) -> None:
    _group(clients, world, _template(world))
    judgement = _judge(
        world, clients, load_sample("cloudtrail-update-auto-scaling-group-launch-template.json")
    )
    assert (judgement.decision, judgement.reason) == (Decision.ALERT, "golden_image_at_risk")


def test_a_capacity_change_of_an_in_scope_group_is_ignored(world: World, clients: Clients) -> None:
    _group(clients, world, _template(world))
    judgement = _judge(world, clients, load_sample("benign-update-auto-scaling-group-capacity.json"))
    assert judgement.decision is Decision.IGNORE


def test_the_pipeline_publishing_a_new_version_is_ignored(world: World, clients: Clients) -> None:
    template_id = _template(world)
    _group(clients, world, template_id)
    raw = load_sample("cloudtrail-create-launch-template-version.json", {SAMPLE_LAUNCH_TEMPLATE: template_id})
    raw["detail"]["userIdentity"]["arn"] = "arn:aws:sts::111122223333:assumed-role/deploy-pipeline/codebuild"
    raw["detail"]["userIdentity"]["sessionContext"]["sessionIssuer"]["arn"] = PIPELINE
    policy = IN_SCOPE_GROUP.model_copy(update={"allowed_principal_arns": (PIPELINE,)})
    judgement = _judge(world, clients, raw, policy)
    assert (judgement.decision, judgement.reason) == (Decision.IGNORE, "allow_listed_principal")
