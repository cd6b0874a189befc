"""Helpers for the detection tests: the samples in events/ and a small moto EC2 world whose ids can
be written into those samples (the samples carry fixed, realistic ids; moto makes up its own)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_iam import IAMClient

EVENTS_DIR = Path(__file__).resolve().parents[3] / "events"

# The ids the samples in events/ use.
SAMPLE_ACCOUNT = "111122223333"
SAMPLE_INSTANCE = "i-0abc1234def567890"
SAMPLE_OTHER_INSTANCE = "i-0def5678abc901234"
SAMPLE_GROUP = "sg-0a1b2c3d4e5f67890"
SAMPLE_ENI = "eni-0123456789abcdef0"
SAMPLE_ACL = "acl-0f1e2d3c4b5a69788"
SAMPLE_ASSOCIATION = "iip-assoc-0123456789abcdef0"
SAMPLE_GUARD_STACK = "immutable-guard"
SAMPLE_GUARD_RULE = "immutable-guard-DetectFunctionShellOpened-1A2B3C4D5E6F"
SAMPLE_GUARD_FUNCTION = "immutable-guard-DetectFunction-Q7W8E9R0T1Y2"
SAMPLE_GUARD_INVENTORY_ASSOCIATION = "3f2a1b4c-5d6e-4f70-8a9b-0c1d2e3f4a5b"
SAMPLE_INSTANCE_CONNECT_ENDPOINT = "eice-0123456789abcdef0"
SAMPLE_PRIVATE_IP = "10.0.1.25"
SAMPLE_ROLE = "web-server-role"
SAMPLE_INSTANCE_PROFILE = "web-server-profile"
SAMPLE_LAUNCH_TEMPLATE = "lt-0a1b2c3d4e5f67890"
SAMPLE_OTHER_LAUNCH_TEMPLATE = "lt-0f9e8d7c6b5a43210"
SAMPLE_AUTO_SCALING_GROUP = "web-asg"

LoadEvent = Callable[..., dict[str, Any]]


def load_sample(name: str, substitutions: dict[str, str] | None = None) -> dict[str, Any]:
    """A sample from events/, with every occurrence of each old id replaced by a new one."""
    text = (EVENTS_DIR / name).read_text()
    for old, new in (substitutions or {}).items():
        text = text.replace(old, new)
    event: dict[str, Any] = json.loads(text)
    return event


def sample_names(prefix: str = "") -> list[str]:
    return sorted(path.name for path in EVENTS_DIR.glob(f"{prefix}*.json"))


@dataclass(frozen=True)
class World:
    """A VPC with one subnet and a web-tier group used by an immutable, a mutable and a terminated
    instance; plus a spare group and interface for the ENI cases."""

    ec2: EC2Client
    iam: IAMClient
    vpc_id: str
    subnet_id: str
    group_id: str
    spare_group_id: str
    immutable_id: str
    mutable_id: str
    terminated_id: str
    eni_id: str
    image_id: str

    def substitutions(self) -> dict[str, str]:
        """Sample ids → world ids: the sample's instance is the immutable one."""
        return {
            SAMPLE_INSTANCE: self.immutable_id,
            SAMPLE_OTHER_INSTANCE: self.mutable_id,
            SAMPLE_GROUP: self.group_id,
            SAMPLE_ENI: self.eni_id,
        }

    def event(self, name: str, **extra: str) -> dict[str, Any]:
        return load_sample(name, {**self.substitutions(), **extra})

    def launch(self, tags: dict[str, str], group_ids: list[str] | None = None) -> str:
        response = self.ec2.run_instances(
            ImageId=self.image_id,
            InstanceType="t3.micro",
            MinCount=1,
            MaxCount=1,
            SubnetId=self.subnet_id,
            SecurityGroupIds=group_ids or [self.group_id],
            TagSpecifications=[
                {"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}
            ],
        )
        return response["Instances"][0]["InstanceId"]


def build_world(ec2: EC2Client) -> World:
    vpc_id = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet_id = ec2.create_subnet(VpcId=vpc_id, CidrBlock="10.0.1.0/24", AvailabilityZone="us-east-1a")[
        "Subnet"
    ]["SubnetId"]
    group_id = ec2.create_security_group(GroupName="web-tier", Description="web tier", VpcId=vpc_id)[
        "GroupId"
    ]
    spare_group_id = ec2.create_security_group(GroupName="spare", Description="spare", VpcId=vpc_id)[
        "GroupId"
    ]
    eni_id = ec2.create_network_interface(SubnetId=subnet_id, Groups=[spare_group_id])["NetworkInterface"][
        "NetworkInterfaceId"
    ]
    partial = World(
        ec2=ec2,
        iam=boto3.client("iam", region_name="us-east-1"),
        vpc_id=vpc_id,
        subnet_id=subnet_id,
        group_id=group_id,
        spare_group_id=spare_group_id,
        immutable_id="",
        mutable_id="",
        terminated_id="",
        eni_id=eni_id,
        image_id=ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"],
    )
    immutable_id = partial.launch({"Name": "web-1", "immutable": "true"})
    mutable_id = partial.launch({"Name": "scratch-box"})
    terminated_id = partial.launch({"Name": "web-0", "immutable": "true"})
    ec2.terminate_instances(InstanceIds=[terminated_id])
    return World(
        ec2=ec2,
        iam=partial.iam,
        vpc_id=vpc_id,
        subnet_id=subnet_id,
        group_id=group_id,
        spare_group_id=spare_group_id,
        immutable_id=immutable_id,
        mutable_id=mutable_id,
        terminated_id=terminated_id,
        eni_id=eni_id,
        image_id=partial.image_id,
    )
