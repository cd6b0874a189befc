"""The local AWS Config recorder emits items as Config writes them: ResourceDiscovered for a new resource,
OK with a diff for a change (state, tags, groups, rules), ResourceDeleted for a resource that is gone, and
relatedEvents naming the CloudTrail events that caused the change.

Shapes follow the AWS Config Developer Guide, "Example Configuration Item Change Notifications"
(https://docs.aws.amazon.com/config/latest/developerguide/example-sns-notification.html): a discovered
security group has ``changedProperties: {}`` and ``changeType: CREATE``; a group swap on an instance is
``Configuration.SecurityGroups.0`` DELETE and ``Configuration.SecurityGroups.1`` CREATE, with
``Relationships.N`` changes, under ``changeType: UPDATE``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from immutable_guard.local import config_items
from immutable_guard.local.config_recorder import ConfigRecorder, resource_ids
from immutable_guard.local.trail import Actor, CloudTrailEmitter
from moto import mock_aws

REGION = "us-east-1"
ACCOUNT = "123456789012"
RECORDED = (
    config_items.INSTANCE,
    config_items.SECURITY_GROUP,
    config_items.NETWORK_INTERFACE,
    config_items.VOLUME,
    config_items.ELASTIC_IP,
)


class World:
    """moto's EC2, a recorder of every EC2 type this recorder knows, and an actor's recorded session."""

    def __init__(self) -> None:
        self.session = boto3.Session(region_name=REGION)
        self.ec2 = self.session.client("ec2")
        self.delivered: list[dict[str, Any]] = []
        self.recorder = ConfigRecorder(self.session, self.delivered.append, REGION, ACCOUNT, RECORDED)
        self.trail = CloudTrailEmitter(lambda event: None, REGION, self.recorder)
        self.actor_ec2 = self.trail.session(Actor()).client("ec2")

    def launch(self) -> str:
        image = self.ec2.describe_images()["Images"][0]["ImageId"]
        default = self.ec2.describe_security_groups(GroupNames=["default"])["SecurityGroups"][0]["GroupId"]
        reservation = self.ec2.run_instances(
            ImageId=image,
            MinCount=1,
            MaxCount=1,
            SecurityGroupIds=[default],
            TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "immutable", "Value": "true"}]}],
        )
        return str(reservation["Instances"][0]["InstanceId"])

    def items_for(self, resource_id: str) -> list[dict[str, Any]]:
        return [i for i in self.delivered if i["detail"]["configurationItem"]["resourceId"] == resource_id]

    def event_id(self, name: str) -> str:
        return str(
            next(e for e in self.trail.events if e["detail"]["eventName"] == name)["detail"]["eventID"]
        )


@pytest.fixture
def world() -> Iterator[World]:
    with mock_aws():
        yield World()


def _item(event: dict[str, Any]) -> dict[str, Any]:
    return dict(event["detail"]["configurationItem"])


def _diff(event: dict[str, Any]) -> dict[str, Any]:
    return dict(event["detail"]["configurationItemDiff"])


def test_a_new_instance_is_discovered_with_an_empty_diff(world: World) -> None:
    # Given a recorder that started before the instance existed
    world.recorder.start()
    # When an instance is launched and Config observes
    instance_id = world.launch()
    world.recorder.observe()
    # Then its first item is ResourceDiscovered, CREATE, with no changed properties
    [event] = world.items_for(instance_id)
    item = _item(event)
    assert event["source"] == "aws.config" and event["detail-type"] == "Config Configuration Item Change"
    assert event["detail"]["messageType"] == "ConfigurationItemChangeNotification"
    assert item["configurationItemStatus"] == "ResourceDiscovered"
    assert _diff(event) == {"changedProperties": {}, "changeType": "CREATE"}
    assert item["resourceType"] == "AWS::EC2::Instance" and item["tags"] == {"immutable": "true"}
    assert item["configuration"]["instanceId"] == instance_id
    assert item["configuration"]["state"]["name"] == "running"
    assert {"key": "immutable", "value": "true"} in item["configuration"]["tags"]
    assert {r["name"] for r in item["relationships"]} >= {
        "Contains NetworkInterface",
        "Is associated with SecurityGroup",
    }
    # And its interface and disk are discovered with it
    eni_id = item["configuration"]["networkInterfaces"][0]["networkInterfaceId"]
    assert _item(world.items_for(eni_id)[0])["configurationItemStatus"] == "ResourceDiscovered"


def test_an_unchanged_account_yields_no_item(world: World) -> None:
    world.launch()
    world.recorder.start()
    assert world.recorder.observe() == []
    assert world.recorder.observe() == []


def test_a_state_transition_is_an_ok_item_naming_the_call_that_caused_it(world: World) -> None:
    # Given a running instance Config has recorded
    instance_id = world.launch()
    world.recorder.start()
    # When an actor stops it (the actor's session observes after each change)
    world.actor_ec2.stop_instances(InstanceIds=[instance_id])
    # Then Config reports the state change, related to the StopInstances event
    [event] = [
        e for e in world.items_for(instance_id) if "Configuration.State.Name" in _diff(e)["changedProperties"]
    ]
    diff = _diff(event)
    assert diff["changeType"] == "UPDATE"
    assert diff["changedProperties"]["Configuration.State.Name"] == {
        "previousValue": "running",
        "updatedValue": "stopped",
        "changeType": "UPDATE",
    }
    assert _item(event)["configurationItemStatus"] == "OK"
    assert _item(event)["relatedEvents"] == [world.event_id("StopInstances")]


def test_a_tag_added_is_a_tags_diff(world: World) -> None:
    instance_id = world.launch()
    world.recorder.start()
    world.actor_ec2.create_tags(Resources=[instance_id], Tags=[{"Key": "team", "Value": "blue"}])
    [event] = world.items_for(instance_id)
    changes = _diff(event)["changedProperties"]
    assert list(changes) == [next(k for k in changes if k.startswith("Configuration.Tags."))]
    assert next(iter(changes.values())) == {
        "previousValue": None,
        "updatedValue": {"key": "team", "value": "blue"},
        "changeType": "CREATE",
    }
    assert _item(event)["tags"]["team"] == "blue"
    assert _item(event)["relatedEvents"] == [world.event_id("CreateTags")]


def test_a_group_swap_deletes_the_old_group_and_creates_the_new_one(world: World) -> None:
    # Given an instance in the default group, and another group
    instance_id = world.launch()
    vpc_id = world.ec2.describe_vpcs()["Vpcs"][0]["VpcId"]
    other = world.ec2.create_security_group(GroupName="debug", Description="debug", VpcId=vpc_id)["GroupId"]
    world.recorder.start()
    # When the instance is moved into the other group
    world.actor_ec2.modify_instance_attribute(InstanceId=instance_id, Groups=[other])
    # Then the instance item shows the old group deleted and the new one created, and its relationships
    [event] = world.items_for(instance_id)
    changes = _diff(event)["changedProperties"]
    assert changes["Configuration.SecurityGroups.0"]["changeType"] == "DELETE"
    assert changes["Configuration.SecurityGroups.1"]["updatedValue"] == {
        "groupName": "debug",
        "groupId": other,
    }
    assert any(k.startswith("Relationships.") and v["changeType"] == "CREATE" for k, v in changes.items())
    # And the interface's item changed too, related to the same call through its attachment
    eni_id = _item(event)["configuration"]["networkInterfaces"][0]["networkInterfaceId"]
    [eni_event] = world.items_for(eni_id)
    assert _item(eni_event)["relatedEvents"] == [world.event_id("ModifyInstanceAttribute")]
    assert _item(event)["relatedEvents"] == [world.event_id("ModifyInstanceAttribute")]


def test_a_revoked_rule_is_a_deleted_permission(world: World) -> None:
    vpc_id = world.ec2.describe_vpcs()["Vpcs"][0]["VpcId"]
    group_id = world.ec2.create_security_group(GroupName="web", Description="web", VpcId=vpc_id)["GroupId"]
    rule = {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
    world.ec2.authorize_security_group_ingress(GroupId=group_id, IpPermissions=[rule])
    world.recorder.start()
    world.actor_ec2.revoke_security_group_ingress(GroupId=group_id, IpPermissions=[rule])
    [event] = world.items_for(group_id)
    changes = _diff(event)["changedProperties"]
    assert changes == {
        "Configuration.IpPermissions.0": {
            "previousValue": {
                "ipProtocol": "tcp",
                "fromPort": 22,
                "toPort": 22,
                "userIdGroupPairs": [],
                "ipRanges": ["0.0.0.0/0"],
                "ipv4Ranges": [{"cidrIp": "0.0.0.0/0"}],
                "ipv6Ranges": [],
                "prefixListIds": [],
            },
            "updatedValue": None,
            "changeType": "DELETE",
        }
    }
    assert _item(event)["relatedEvents"] == [world.event_id("RevokeSecurityGroupIngress")]


def test_a_deleted_group_is_resource_deleted_without_configuration(world: World) -> None:
    vpc_id = world.ec2.describe_vpcs()["Vpcs"][0]["VpcId"]
    group_id = world.ec2.create_security_group(GroupName="old", Description="old", VpcId=vpc_id)["GroupId"]
    world.recorder.start()
    world.actor_ec2.delete_security_group(GroupId=group_id)
    [event] = world.items_for(group_id)
    assert _item(event)["configurationItemStatus"] == "ResourceDeleted"
    assert _item(event)["configuration"] is None
    assert _diff(event)["changeType"] == "DELETE"
    assert _diff(event)["changedProperties"]["Configuration"]["previousValue"]["groupId"] == group_id
    assert _item(event)["relatedEvents"] == [world.event_id("DeleteSecurityGroup")]


def test_a_failed_call_is_no_related_event(world: World) -> None:
    # Given a failed call naming the instance, then a change made by someone Config does not hear of
    instance_id = world.launch()
    world.recorder.start()
    with pytest.raises(world.actor_ec2.exceptions.ClientError):
        world.actor_ec2.attach_volume(
            VolumeId="vol-00000000000000000", InstanceId=instance_id, Device="/dev/sdf"
        )
    world.ec2.create_tags(Resources=[instance_id], Tags=[{"Key": "team", "Value": "red"}])
    world.recorder.observe()
    # Then the item names no event: it must be judged alone
    [event] = world.items_for(instance_id)
    assert _item(event)["relatedEvents"] == []


def test_without_a_running_configuration_recorder_nothing_is_recorded(world: World) -> None:
    # Given a recorder that follows the account's Config recorder, and none is recording
    recorder = ConfigRecorder(world.session, world.delivered.append, REGION, ACCOUNT)
    recorder.start()
    world.launch()
    # Then nothing is reported, as AWS Config reports nothing while stopped
    assert recorder.recorded_types() == ()
    assert recorder.observe() == []


def test_a_cloudtrail_event_names_the_resources_of_its_request_and_response() -> None:
    event = {
        "detail": {
            "requestParameters": {"instancesSet": {"items": [{"instanceId": "i-0123456789abcdef0"}]}},
            "responseElements": {"groupId": "sg-0123456789abcdef0", "return": True, "other": "ami-12345678"},
        }
    }
    assert resource_ids(event) == ["i-0123456789abcdef0", "sg-0123456789abcdef0"]


def test_a_list_change_is_diffed_by_element() -> None:
    # Config's documented group swap: the old element deleted at its index, the new one after the old list
    changes = config_items.list_changes(
        "Configuration.SecurityGroups", [{"groupId": "sg-a"}], [{"groupId": "sg-b"}]
    )
    assert changes == {
        "Configuration.SecurityGroups.0": {
            "previousValue": {"groupId": "sg-a"},
            "updatedValue": None,
            "changeType": "DELETE",
        },
        "Configuration.SecurityGroups.1": {
            "previousValue": None,
            "updatedValue": {"groupId": "sg-b"},
            "changeType": "CREATE",
        },
    }
