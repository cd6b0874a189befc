"""Instance directories: what a finding reaches, live (moto) and offline; and the scope rule."""

from __future__ import annotations

from typing import TYPE_CHECKING

import boto3
import pytest
from botocore.stub import Stubber
from detection_samples import SAMPLE_ACL, SAMPLE_ASSOCIATION, SAMPLE_INSTANCE, World, load_sample
from immutable_guard.detection import (
    Ec2InstanceDirectory,
    InstanceInfo,
    OfflineInstanceDirectory,
    ScopeRule,
    normalise,
    parse_event,
)
from immutable_guard.errors import ScopeResolutionFailed
from immutable_guard.model import Finding

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client


def finding_from(raw: dict[str, object]) -> Finding:
    return normalise(parse_event(raw))


def resolved_ids(world: World, raw: dict[str, object]) -> set[str]:
    return {info.instance_id for info in Ec2InstanceDirectory(world.ec2).resolve(finding_from(raw))}


def test_a_group_change_reaches_every_live_instance_using_the_group(world: World) -> None:
    # Given a group used by an immutable, a mutable and a terminated instance
    raw = world.event("cloudtrail-authorize-sg-ingress-ssh-world.json")
    # When the ingress event is resolved
    found = resolved_ids(world, raw)
    # Then both live instances are reached, and the terminated one is not
    assert found == {world.immutable_id, world.mutable_id}


def test_a_group_on_a_secondary_interface_reaches_its_instance(world: World) -> None:
    # Given the spare group only on an interface attached to the mutable instance
    world.ec2.attach_network_interface(
        NetworkInterfaceId=world.eni_id, InstanceId=world.mutable_id, DeviceIndex=1
    )
    raw = world.event(
        "cloudtrail-authorize-sg-ingress-ssh-world.json", **{world.group_id: world.spare_group_id}
    )
    # Then the instance is found through the interface
    assert resolved_ids(world, raw) == {world.mutable_id}


def test_an_interface_change_reaches_the_instance_it_is_attached_to(world: World) -> None:
    world.ec2.attach_network_interface(
        NetworkInterfaceId=world.eni_id, InstanceId=world.immutable_id, DeviceIndex=1
    )
    raw = world.event("cloudtrail-modify-network-interface-attribute.json")
    assert resolved_ids(world, raw) == {world.immutable_id}


def test_a_detached_interface_reaches_no_instance(world: World) -> None:
    raw = world.event("cloudtrail-modify-network-interface-attribute.json")
    assert resolved_ids(world, raw) == set()


def _acl_on_the_subnet(world: World) -> str:
    acl_id = world.ec2.create_network_acl(VpcId=world.vpc_id)["NetworkAcl"]["NetworkAclId"]
    current = world.ec2.describe_network_acls(
        Filters=[{"Name": "association.subnet-id", "Values": [world.subnet_id]}]
    )["NetworkAcls"][0]
    association = next(a for a in current["Associations"] if a.get("SubnetId") == world.subnet_id)
    world.ec2.replace_network_acl_association(
        AssociationId=association["NetworkAclAssociationId"], NetworkAclId=acl_id
    )
    return acl_id


def test_a_network_acl_change_reaches_the_live_instances_of_its_subnets(world: World) -> None:
    acl_id = _acl_on_the_subnet(world)
    raw = world.event("cloudtrail-create-network-acl-entry.json", **{SAMPLE_ACL: acl_id})
    assert resolved_ids(world, raw) == {world.immutable_id, world.mutable_id}


def test_an_acl_that_no_longer_exists_reaches_nothing(world: World) -> None:
    assert resolved_ids(world, world.event("cloudtrail-create-network-acl-entry.json")) == set()


def test_a_profile_association_reaches_its_instance(world: World) -> None:
    # Given an instance profile associated with the immutable instance, and a record without response
    world.iam.create_instance_profile(InstanceProfileName="web")
    association_id = world.ec2.associate_iam_instance_profile(
        IamInstanceProfile={"Name": "web"}, InstanceId=world.immutable_id
    )["IamInstanceProfileAssociation"]["AssociationId"]
    raw = world.event(
        "cloudtrail-replace-iam-instance-profile-association.json", **{SAMPLE_ASSOCIATION: association_id}
    )
    raw["detail"]["responseElements"] = None
    # Then the association leads to the instance
    assert resolved_ids(world, raw) == {world.immutable_id}


def test_a_gone_association_reaches_nothing(world: World) -> None:
    raw = world.event("cloudtrail-replace-iam-instance-profile-association.json")
    raw["detail"]["responseElements"] = None
    assert resolved_ids(world, raw) == set()


def test_run_command_by_tag_reaches_the_live_tagged_instances(world: World) -> None:
    raw = world.event("cloudtrail-ssm-send-command.json")
    raw["detail"]["requestParameters"]["instanceIds"] = []
    raw["detail"]["requestParameters"]["targets"] = [{"key": "tag:immutable", "values": ["true"]}]
    assert resolved_ids(world, raw) == {world.immutable_id}


def test_a_named_instance_is_described_with_tags_network_and_owner(world: World) -> None:
    raw = world.event("cloudtrail-send-ssh-public-key.json")
    [info] = Ec2InstanceDirectory(world.ec2).resolve(finding_from(raw))
    assert info.instance_id == world.immutable_id
    assert info.state == "running"
    assert info.tags == {"Name": "web-1", "immutable": "true"}
    assert (info.vpc_id, info.subnet_id) == (world.vpc_id, world.subnet_id)
    assert info.security_group_ids == (world.group_id,)
    assert len(info.network_interface_ids) == 1


def test_a_named_instance_that_does_not_exist_reaches_nothing(world: World) -> None:
    assert resolved_ids(world, load_sample("cloudtrail-send-ssh-public-key.json")) == set()


def test_a_terminated_named_instance_reaches_nothing(world: World) -> None:
    raw = world.event("cloudtrail-ssm-start-session.json", **{world.immutable_id: world.terminated_id})
    assert resolved_ids(world, raw) == set()


def test_many_named_instances_are_described_in_chunks(world: World) -> None:
    raw = world.event("cloudtrail-ssm-send-command.json")
    fake = [f"i-{n:017x}" for n in range(250)]
    raw["detail"]["requestParameters"]["instanceIds"] = [*fake, world.immutable_id]
    assert resolved_ids(world, raw) == {world.immutable_id}


def test_an_ec2_refusal_is_a_typed_error_naming_what_was_resolved() -> None:
    # Given EC2 refuses DescribeInstances
    ec2: EC2Client = boto3.client("ec2", region_name="us-east-1")
    finding = finding_from(load_sample("cloudtrail-send-ssh-public-key.json"))
    with Stubber(ec2) as stubber:
        stubber.add_client_error("describe_instances", service_error_code="UnauthorizedOperation")
        # When the finding is resolved / Then the error is typed and says what failed
        with pytest.raises(
            ScopeResolutionFailed, match=f"instance-id={SAMPLE_INSTANCE}: UnauthorizedOperation"
        ):
            Ec2InstanceDirectory(ec2).resolve(finding)


def test_a_throttled_association_lookup_is_a_typed_error() -> None:
    ec2: EC2Client = boto3.client("ec2", region_name="us-east-1")
    raw = load_sample("cloudtrail-replace-iam-instance-profile-association.json")
    raw["detail"]["responseElements"] = None
    with Stubber(ec2) as stubber:
        stubber.add_client_error(
            "describe_iam_instance_profile_associations", service_error_code="RequestLimitExceeded"
        )
        with pytest.raises(ScopeResolutionFailed, match="RequestLimitExceeded"):
            Ec2InstanceDirectory(ec2).resolve(finding_from(raw))


# ---------------------------------------------------------------- offline


def test_offline_a_config_instance_item_supplies_the_tags() -> None:
    [info] = OfflineInstanceDirectory().resolve(
        finding_from(load_sample("benign-out-of-scope-instance.json"))
    )
    assert info.tags == {"Name": "scratch-box", "team": "data"}
    assert not ScopeRule().in_scope(info)


def test_offline_a_cloudtrail_instance_has_unknown_tags_and_is_assumed_in_scope() -> None:
    [info] = OfflineInstanceDirectory().resolve(
        finding_from(load_sample("cloudtrail-send-ssh-public-key.json"))
    )
    assert info.instance_id == SAMPLE_INSTANCE
    assert info.tags is None
    assert ScopeRule().in_scope(info)


def test_offline_a_group_change_names_no_instance() -> None:
    finding = finding_from(load_sample("cloudtrail-authorize-sg-ingress-ssh-world.json"))
    assert OfflineInstanceDirectory().resolve(finding) == []


# ---------------------------------------------------------------- scope rule


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        ({"immutable": "true"}, True),
        ({"immutable": "false"}, False),
        ({"Immutable": "true"}, False),
        ({}, False),
        ({"aws:cloudformation:stack-name": "web-stack"}, True),
        ({"aws:cloudformation:stack-name": "other-stack"}, False),
        ({"aws:autoscaling:groupName": "web-asg"}, True),
        ({"aws:autoscaling:groupName": "batch-asg"}, False),
        (None, True),
    ],
)
def test_scope_is_the_tag_or_a_listed_stack_or_group(tags: dict[str, str] | None, expected: bool) -> None:
    rule = ScopeRule(stack_names=("web-stack",), asg_names=("web-asg",))
    assert rule.in_scope(InstanceInfo(instance_id="i-0123456789abcdef0", tags=tags)) is expected


def test_a_custom_tag_declares_scope() -> None:
    rule = ScopeRule(tag_key="golden", tag_value="yes")
    assert rule.in_scope(InstanceInfo(instance_id="i-0123456789abcdef0", tags={"golden": "yes"}))
    assert not rule.in_scope(InstanceInfo(instance_id="i-0123456789abcdef0", tags={"immutable": "true"}))


def test_owner_names_are_read_from_the_aws_tags() -> None:
    info = InstanceInfo(
        instance_id="i-0123456789abcdef0",
        tags={"aws:autoscaling:groupName": "web-asg", "aws:cloudformation:stack-name": "web-stack"},
    )
    assert (info.asg_name, info.stack_name) == ("web-asg", "web-stack")
    assert info.model_dump()["asg_name"] == "web-asg"
