"""Fixtures for the remediation steps: a golden workload in moto (an Auto Scaling group behind a target
group, with an instance profile) and an open incident about one of its instances."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from immutable_guard.clients import Clients
from immutable_guard.ledger import Incident, IncidentLedger, Status, now_iso
from immutable_guard.local.moto_fixes import eni_groups_as_in_aws as eni_groups_fix
from remediation_world import (
    ACCOUNT_ID,
    EVIDENCE_BUCKET,
    GOLDEN_AMI,
    REGION,
    ContainedInstance,
    FakeLambdaContext,
    GoldenWorkload,
    Network,
    make_finding,
)


def _profile(aws: Clients) -> str:
    iam = aws._session.client("iam", region_name="us-east-1")
    iam.create_role(RoleName="golden-app", AssumeRolePolicyDocument="{}")
    profile = iam.create_instance_profile(InstanceProfileName="golden-app")["InstanceProfile"]
    iam.add_role_to_instance_profile(InstanceProfileName="golden-app", RoleName="golden-app")
    return str(profile["Arn"])


@pytest.fixture
def eni_groups_as_in_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto reports an attached ENI's groups as its own plus the instance's launch groups, so no ENI could
    ever be isolated; in EC2 an ENI's groups are exactly its own (the local runtime's fix, undone after
    the test)."""
    eni_groups_fix(lambda target, name, value: monkeypatch.setattr(target, name, value, raising=False))


@pytest.fixture
def golden_asg_member(aws: Clients, eni_groups_as_in_aws: None) -> GoldenWorkload:
    """An in-service ASG member on port 8080 of a target group, with a profile and two ENIs; someone has
    just opened SSH to the world on its group."""
    ec2 = aws.ec2
    vpc_id = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet_id = ec2.create_subnet(VpcId=vpc_id, CidrBlock="10.0.1.0/24", AvailabilityZone="us-east-1a")[
        "Subnet"
    ]["SubnetId"]
    group_id = ec2.create_security_group(GroupName="app", Description="golden app", VpcId=vpc_id)["GroupId"]
    ec2.authorize_security_group_ingress(
        GroupId=group_id,
        IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "IpRanges": [{"CidrIp": "10.0.0.0/16"}]}
        ],
    )
    ssh = ec2.authorize_security_group_ingress(
        GroupId=group_id,
        IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
        ],
    )
    ec2.create_launch_template(
        LaunchTemplateName="golden-app",
        LaunchTemplateData={
            "ImageId": GOLDEN_AMI,
            "InstanceType": "t3.micro",
            "SecurityGroupIds": [group_id],
        },
    )
    aws.autoscaling.create_auto_scaling_group(
        AutoScalingGroupName="golden-app",
        LaunchTemplate={"LaunchTemplateName": "golden-app"},
        MinSize=2,
        MaxSize=2,
        DesiredCapacity=2,
        VPCZoneIdentifier=subnet_id,
    )
    members = aws.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=["golden-app"])
    instance_id = members["AutoScalingGroups"][0]["Instances"][0]["InstanceId"]
    target_group_arn = aws.elbv2.create_target_group(
        Name="golden-app", Protocol="HTTP", Port=80, VpcId=vpc_id, TargetType="instance"
    )["TargetGroups"][0]["TargetGroupArn"]
    aws.elbv2.register_targets(TargetGroupArn=target_group_arn, Targets=[{"Id": instance_id, "Port": 8080}])
    profile_arn = _profile(aws)
    ec2.associate_iam_instance_profile(IamInstanceProfile={"Arn": profile_arn}, InstanceId=instance_id)
    eni = ec2.create_network_interface(SubnetId=subnet_id, Groups=[group_id])["NetworkInterface"]
    ec2.attach_network_interface(
        NetworkInterfaceId=eni["NetworkInterfaceId"], InstanceId=instance_id, DeviceIndex=1
    )
    return GoldenWorkload(
        vpc_id=vpc_id,
        subnet_id=subnet_id,
        app_group_id=group_id,
        auto_scaling_group="golden-app",
        target_group_arn=target_group_arn,
        profile_arn=profile_arn,
        instance_id=instance_id,
        second_eni_id=eni["NetworkInterfaceId"],
        ssh_rule_id=ssh["SecurityGroupRules"][0]["SecurityGroupRuleId"],
    )


@pytest.fixture
def ssh_opened_finding(golden_asg_member: GoldenWorkload) -> dict[str, Any]:
    """What Detect makes of AuthorizeSecurityGroupIngress tcp/22 from 0.0.0.0/0 on the app group."""
    group_id = golden_asg_member.app_group_id
    return make_finding(
        resource_ids=(group_id,),
        instance_ids=(golden_asg_member.instance_id,),
        evidence={
            "group_id": group_id,
            "direction": "ingress",
            "permissions": [
                {
                    "direction": "ingress",
                    "protocol": "tcp",
                    "from_port": 22,
                    "to_port": 22,
                    "cidr": "0.0.0.0/0",
                }
            ],
        },
    )


@pytest.fixture
def open_incident(ledger: IncidentLedger) -> Callable[[str, dict[str, Any]], str]:
    """Open an incident the way Detect does; returns its id."""

    def open_(instance_id: str, finding: dict[str, Any]) -> str:
        incident_id = f"ig-{uuid.uuid4().hex[:12]}"
        now = now_iso()
        ledger.open_incident(
            Incident(
                incident_id=incident_id,
                instance_id=instance_id,
                mode="enforce",
                decision="remediate",
                kind=finding["kind"],
                severity=finding["severity"],
                account=finding["account"],
                region=finding["region"],
                created_at=now,
                finding=finding,
                timeline={"detected": now},
            )
        )
        return incident_id

    return open_


# ---------------------------------------------------------------- evidence, replace and nuke


@pytest.fixture
def workload_network(aws: Clients) -> Network:
    vpc_id = aws.ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet_id = aws.ec2.create_subnet(VpcId=vpc_id, CidrBlock="10.0.1.0/24", AvailabilityZone="us-east-1a")[
        "Subnet"
    ]["SubnetId"]
    return Network(vpc_id, subnet_id)


@pytest.fixture
def make_contained(
    aws: Clients,
    ledger: IncidentLedger,
    workload_network: Network,
    open_incident: Callable[[str, dict[str, Any]], str],
) -> Callable[..., ContainedInstance]:
    """Make an instance look contained: tagged, protected, with an incident at CONTAINED.

    Launches a fresh instance with a second (data) volume unless ``instance_id`` names one; the group the
    Contain step detached it from is remembered as the Contain step does.
    """

    def make(
        instance_id: str | None = None, *, auto_scaling_group: str | None = None, data_volume: bool = True
    ) -> ContainedInstance:
        ec2 = aws.ec2
        if instance_id is None:
            instance_id = ec2.run_instances(
                ImageId=GOLDEN_AMI,
                InstanceType="t3.micro",
                MinCount=1,
                MaxCount=1,
                SubnetId=workload_network.subnet_id,
            )["Instances"][0]["InstanceId"]
        if data_volume:
            volume_id = ec2.create_volume(Size=4, AvailabilityZone="us-east-1a")["VolumeId"]
            ec2.attach_volume(VolumeId=volume_id, InstanceId=instance_id, Device="/dev/sdf")
        incident_id = open_incident(instance_id, make_finding())
        ec2.create_tags(
            Resources=[instance_id],
            Tags=[
                {"Key": "immutable-guard:incident", "Value": incident_id},
                {"Key": "immutable-guard:state", "Value": "quarantined"},
            ],
        )
        ec2.modify_instance_attribute(InstanceId=instance_id, DisableApiTermination={"Value": True})
        ledger.record_prior_state(incident_id, {"auto_scaling_group": auto_scaling_group})
        ledger.record_stage(
            incident_id,
            "contained",
            status=Status.CONTAINED,
            details={"left_auto_scaling_group": auto_scaling_group, "protected": True},
        )
        instance = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
        volumes = {m["Ebs"]["VolumeId"]: m["DeviceName"] for m in instance["BlockDeviceMappings"]}
        return ContainedInstance(incident_id, instance_id, volumes)

    return make


@pytest.fixture
def golden_group(aws: Clients, workload_network: Network) -> str:
    """An Auto Scaling group of one healthy instance, built from a launch template."""
    aws.ec2.create_launch_template(
        LaunchTemplateName="web-golden",
        LaunchTemplateData={"ImageId": GOLDEN_AMI, "InstanceType": "t3.micro"},
    )
    aws.autoscaling.create_auto_scaling_group(
        AutoScalingGroupName="web",
        LaunchTemplate={"LaunchTemplateName": "web-golden"},
        MinSize=1,
        MaxSize=3,
        DesiredCapacity=1,
        VPCZoneIdentifier=workload_network.subnet_id,
    )
    return "web"


@pytest.fixture
def evidence_bucket(aws: Clients) -> str:
    """The template's EvidenceBucket: versioned, Object Lock with a GOVERNANCE default retention."""
    aws.s3.create_bucket(Bucket=EVIDENCE_BUCKET, ObjectLockEnabledForBucket=True)
    aws.s3.put_object_lock_configuration(
        Bucket=EVIDENCE_BUCKET,
        ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}},
        },
    )
    return EVIDENCE_BUCKET


@pytest.fixture
def set_snapshot_state(aws: Clients) -> Callable[[str, str], None]:
    """moto completes snapshots at once; real ones stay `pending` for minutes, and some end in `error`."""
    from moto.ec2.models import ec2_backends

    def run(snapshot_id: str, state: str) -> None:
        ec2_backends[ACCOUNT_ID][REGION].snapshots[snapshot_id].status = state

    return run


@pytest.fixture
def lambda_context() -> FakeLambdaContext:
    return FakeLambdaContext()


@pytest.fixture
def step_environment(monkeypatch: pytest.MonkeyPatch, ledger: IncidentLedger) -> pytest.MonkeyPatch:
    """What every remediation function's environment holds (template.yaml Globals)."""
    monkeypatch.setenv("LEDGER_TABLE", "immutable-guard-ledger")
    monkeypatch.setenv("ALERT_TOPIC_ARN", f"arn:aws:sns:{REGION}:{ACCOUNT_ID}:alerts")
    return monkeypatch
