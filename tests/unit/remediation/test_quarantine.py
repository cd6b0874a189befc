"""Contain: every ENI ends with only the isolation group (through the passthrough group first), the
offending rule is gone, evidence is protected, the instance is out of service, and the prior state is
in the ledger before the first change."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from immutable_guard.clients import Clients
from immutable_guard.errors import AwsCallFailed, InstanceNotFound, InvalidEvent, IsolationFailed
from immutable_guard.ledger import IncidentLedger, Status
from immutable_guard.model import Kind
from immutable_guard.remediation import quarantine
from immutable_guard.remediation.quarantine import (
    GROUP_NAMES,
    PRIOR_TARGET_GROUPS,
    TAG_INCIDENT,
    TAG_STATE,
    quarantine_instance,
)
from remediation_world import FakeLambdaContext, GoldenWorkload, load_function, make_finding

OpenIncident = Callable[[str, dict[str, Any]], str]
READ_ONLY_PREFIXES = ("Describe", "Get")


# ---------------------------------------------------------------- helpers


def _groups_of_enis(aws: Clients, instance_id: str) -> dict[str, list[str]]:
    enis = aws.ec2.describe_network_interfaces(
        Filters=[{"Name": "attachment.instance-id", "Values": [instance_id]}]
    )
    return {
        eni["NetworkInterfaceId"]: [g["GroupId"] for g in eni["Groups"]] for eni in enis["NetworkInterfaces"]
    }


def _our_group_id(aws: Clients, vpc_id: str, role: str) -> str:
    groups = aws.ec2.describe_security_groups(
        Filters=[
            {"Name": "vpc-id", "Values": [vpc_id]},
            {"Name": "group-name", "Values": [GROUP_NAMES[role]]},
        ]
    )["SecurityGroups"]
    assert len(groups) == 1
    return str(groups[0]["GroupId"])


def _ingress(aws: Clients, group_id: str) -> list[tuple[Any, Any, list[str]]]:
    group = aws.ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"][0]
    return [
        (p.get("FromPort"), p.get("ToPort"), [r["CidrIp"] for r in p.get("IpRanges", [])])
        for p in group["IpPermissions"]
    ]


def _record_ni_groups(aws: Clients) -> list[tuple[str, list[str]]]:
    seen: list[tuple[str, list[str]]] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        seen.append((params["NetworkInterfaceId"], list(params["Groups"])))

    aws.ec2.meta.events.register("before-parameter-build.ec2.ModifyNetworkInterfaceAttribute", record)
    return seen


@dataclass
class _FakeHttp:
    status_code: int
    headers: dict[str, str]


def _answer(
    aws_client: Any,
    operation: str,
    status: int,
    parsed: dict[str, Any],
    *,
    on_call: int = 1,
    and_after: bool = False,
) -> None:
    """Short-circuit the on_call-th call of an operation (and every later one with ``and_after``) with a
    canned answer (a fault, or a silent no-op)."""
    calls = {"n": 0}

    def answer(**_: Any) -> tuple[_FakeHttp, dict[str, Any]] | None:
        calls["n"] += 1
        hit = calls["n"] == on_call or (and_after and calls["n"] > on_call)
        return (_FakeHttp(status, {}), parsed) if hit else None

    service = aws_client.meta.service_model.service_name
    aws_client.meta.events.register(f"before-call.{service}.{operation}", answer)


# ---------------------------------------------------------------- contain an ASG member


def test_every_eni_is_left_with_only_the_isolation_group(
    aws: Clients,
    ledger: IncidentLedger,
    golden_asg_member: GoldenWorkload,
    ssh_opened_finding: dict[str, Any],
    open_incident: OpenIncident,
) -> None:
    # Given an ASG member with two ENIs in the mutated group
    w = golden_asg_member
    incident_id = open_incident(w.instance_id, ssh_opened_finding)
    assert len(_groups_of_enis(aws, w.instance_id)) == 2

    # When it is contained
    result = quarantine_instance(aws, ledger, incident_id, w.instance_id, ssh_opened_finding)

    # Then EC2 reports only the isolation group on every ENI, and that group has no rules at all
    isolation = _our_group_id(aws, w.vpc_id, "isolation")
    groups_now = _groups_of_enis(aws, w.instance_id)
    assert len(groups_now) == 2
    assert all(groups == [isolation] for groups in groups_now.values())
    group = aws.ec2.describe_security_groups(GroupIds=[isolation])["SecurityGroups"][0]
    assert group["IpPermissions"] == []
    assert group["IpPermissionsEgress"] == []
    assert result["isolation_group_ids"] == [isolation]
    assert {e["eni"]: e["previous_groups"] for e in result["network_interfaces"]} == {
        eni: [w.app_group_id] for eni in _groups_of_enis(aws, w.instance_id)
    }


def test_passthrough_group_is_applied_before_the_isolation_group_on_each_eni(
    aws: Clients,
    ledger: IncidentLedger,
    golden_asg_member: GoldenWorkload,
    ssh_opened_finding: dict[str, Any],
    open_incident: OpenIncident,
) -> None:
    # Given the ENI group changes are recorded as they are requested
    w = golden_asg_member
    incident_id = open_incident(w.instance_id, ssh_opened_finding)
    changes = _record_ni_groups(aws)

    # When the instance is contained
    quarantine_instance(aws, ledger, incident_id, w.instance_id, ssh_opened_finding)

    # Then each ENI went app -> passthrough (all traffic: connections become untracked) -> isolation
    passthrough = _our_group_id(aws, w.vpc_id, "passthrough")
    isolation = _our_group_id(aws, w.vpc_id, "isolation")
    per_eni: dict[str, list[list[str]]] = {}
    for eni, groups in changes:
        per_eni.setdefault(eni, []).append(groups)
    assert len(per_eni) == 2
    assert all(sequence == [[passthrough], [isolation]] for sequence in per_eni.values())
    rules = aws.ec2.describe_security_groups(GroupIds=[passthrough])["SecurityGroups"][0]
    for direction in ("IpPermissions", "IpPermissionsEgress"):
        everything = [p for p in rules[direction] if p["IpProtocol"] == "-1"]
        assert {"CidrIp": "0.0.0.0/0"} in [r for p in everything for r in p["IpRanges"]]


def test_prior_state_is_in_the_ledger_before_the_first_change(
    aws: Clients,
    ledger: IncidentLedger,
    golden_asg_member: GoldenWorkload,
    ssh_opened_finding: dict[str, Any],
    open_incident: OpenIncident,
) -> None:
    # Given every call to EC2, Auto Scaling, ELB and DynamoDB is recorded in order
    w = golden_asg_member
    incident_id = open_incident(w.instance_id, ssh_opened_finding)
    calls: list[str] = []

    def record(model: Any, **_: Any) -> None:
        calls.append(model.name)

    for client in (aws.ec2, aws.autoscaling, aws.elbv2, aws.dynamodb):
        client.meta.events.register(f"before-call.{client.meta.service_model.service_name}", record)

    # When the instance is contained
    quarantine_instance(aws, ledger, incident_id, w.instance_id, ssh_opened_finding)

    # Then the ledger write precedes every change, and the prior state is enough to undo it all
    first_change = next(i for i, name in enumerate(calls) if not name.startswith(READ_ONLY_PREFIXES))
    assert calls[first_change] == "UpdateItem"
    prior = ledger.get(incident_id).prior_state
    assert prior is not None
    assert {e["eni"]: e["groups"] for e in prior["network_interfaces"]} == {
        eni: [w.app_group_id] for eni in _groups_of_enis(aws, w.instance_id)
    }
    assert prior["iam_instance_profile"]["arn"] == w.profile_arn
    assert prior["iam_instance_profile"]["association_id"].startswith("iip-assoc-")
    assert prior["auto_scaling_group"] == w.auto_scaling_group
    # Target groups are looked up once the instance is isolated, and kept before it leaves any.
    deregistered = calls.index("DeregisterTargets")
    assert calls.index("DescribeTargetHealth") > calls.index("ModifyNetworkInterfaceAttribute")
    assert "UpdateItem" in calls[calls.index("DescribeTargetHealth") : deregistered]
    assert ledger.get(incident_id).details[PRIOR_TARGET_GROUPS] == [
        {"arn": w.target_group_arn, "targets": [{"Id": w.instance_id, "Port": 8080}], "protocol": "HTTP"}
    ]
    assert prior["disable_api_termination"] is False
    assert prior["instance_initiated_shutdown_behavior"] == "stop"
    assert [v["delete_on_termination"] for v in prior["volumes"]] == [True]


def test_the_offending_rule_is_revoked_and_the_others_kept(
    aws: Clients,
    ledger: IncidentLedger,
    golden_asg_member: GoldenWorkload,
    ssh_opened_finding: dict[str, Any],
    open_incident: OpenIncident,
) -> None:
    # Given SSH was opened to the world on a group that also allows 443 from the VPC
    w = golden_asg_member
    incident_id = open_incident(w.instance_id, ssh_opened_finding)

    # When the instance is contained
    result = quarantine_instance(aws, ledger, incident_id, w.instance_id, ssh_opened_finding)

    # Then the replacement, which uses the same group, does not inherit the hole
    assert _ingress(aws, w.app_group_id) == [(443, 443, ["10.0.0.0/16"])]
    assert result["revoked_rules"] == [
        {
            "group_id": w.app_group_id,
            "direction": "ingress",
            "permission": {
                "IpProtocol": "tcp",
                "FromPort": 22,
                "ToPort": 22,
                "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
            },
        }
    ]


def test_a_modified_rule_is_revoked_by_its_rule_id(
    aws: Clients, ledger: IncidentLedger, golden_asg_member: GoldenWorkload, open_incident: OpenIncident
) -> None:
    # Given ModifySecurityGroupRules turned an existing rule into SSH from the world (direction unknown)
    w = golden_asg_member
    finding = make_finding(
        event_name="ModifySecurityGroupRules",
        resource_ids=(w.app_group_id,),
        evidence={
            "group_id": w.app_group_id,
            "rule_ids": [w.ssh_rule_id],
            "direction": "unknown",
            "permissions": [
                {
                    "direction": "unknown",
                    "protocol": "tcp",
                    "from_port": 22,
                    "to_port": 22,
                    "cidr": "0.0.0.0/0",
                    "rule_id": w.ssh_rule_id,
                }
            ],
        },
    )
    incident_id = open_incident(w.instance_id, finding)

    # When the instance is contained
    quarantine_instance(aws, ledger, incident_id, w.instance_id, finding)

    # Then that rule is gone and the other is kept
    assert _ingress(aws, w.app_group_id) == [(443, 443, ["10.0.0.0/16"])]


def test_a_finding_that_is_not_about_a_port_revokes_nothing(
    aws: Clients, ledger: IncidentLedger, golden_asg_member: GoldenWorkload, open_incident: OpenIncident
) -> None:
    # Given an SSH key was pushed (the group itself was not changed)
    w = golden_asg_member
    finding = make_finding(
        Kind.SSH_KEY_PUSHED,
        event_name="SendSSHPublicKey",
        event_source="ec2-instance-connect.amazonaws.com",
        resource_ids=(w.instance_id,),
    )
    incident_id = open_incident(w.instance_id, finding)

    # When the instance is contained
    result = quarantine_instance(aws, ledger, incident_id, w.instance_id, finding)

    # Then the group's rules are untouched (only the instance is cut off)
    assert result["revoked_rules"] == []
    assert sorted(_ingress(aws, w.app_group_id)) == [(22, 22, ["0.0.0.0/0"]), (443, 443, ["10.0.0.0/16"])]


def test_evidence_is_protected_and_the_instance_tagged(
    aws: Clients,
    ledger: IncidentLedger,
    golden_asg_member: GoldenWorkload,
    ssh_opened_finding: dict[str, Any],
    open_incident: OpenIncident,
) -> None:
    # Given a terminable instance whose shutdown would terminate it and delete its volume
    w = golden_asg_member
    aws.ec2.modify_instance_attribute(
        InstanceId=w.instance_id, Attribute="instanceInitiatedShutdownBehavior", Value="terminate"
    )
    incident_id = open_incident(w.instance_id, ssh_opened_finding)

    # When it is contained
    result = quarantine_instance(aws, ledger, incident_id, w.instance_id, ssh_opened_finding)

    # Then nothing can delete it or its disks by accident, and the tags name the incident
    ec2 = aws.ec2
    assert ec2.describe_instance_attribute(InstanceId=w.instance_id, Attribute="disableApiTermination")[
        "DisableApiTermination"
    ]["Value"]
    shutdown = ec2.describe_instance_attribute(
        InstanceId=w.instance_id, Attribute="instanceInitiatedShutdownBehavior"
    )
    assert shutdown["InstanceInitiatedShutdownBehavior"]["Value"] == "stop"
    instance = ec2.describe_instances(InstanceIds=[w.instance_id])["Reservations"][0]["Instances"][0]
    assert [m["Ebs"]["DeleteOnTermination"] for m in instance["BlockDeviceMappings"]] == [False]
    tags = {t["Key"]: t["Value"] for t in instance["Tags"]}
    assert tags[TAG_INCIDENT] == incident_id
    assert tags[TAG_STATE] == "quarantined"
    assert result["protected"] is True
    prior = ledger.get(incident_id).prior_state
    assert prior is not None
    assert prior["instance_initiated_shutdown_behavior"] == "terminate"


def test_it_leaves_the_asg_which_launches_a_replacement_and_leaves_the_target_group(
    aws: Clients,
    ledger: IncidentLedger,
    golden_asg_member: GoldenWorkload,
    ssh_opened_finding: dict[str, Any],
    open_incident: OpenIncident,
) -> None:
    # Given an in-service ASG member registered in a target group
    w = golden_asg_member
    incident_id = open_incident(w.instance_id, ssh_opened_finding)

    # When it is contained
    result = quarantine_instance(aws, ledger, incident_id, w.instance_id, ssh_opened_finding)

    # Then the group keeps its capacity with a fresh instance, and no traffic is sent to the suspect
    group = aws.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[w.auto_scaling_group])[
        "AutoScalingGroups"
    ][0]
    members = [i["InstanceId"] for i in group["Instances"]]
    assert group["DesiredCapacity"] == 2
    assert len(members) == 2
    assert w.instance_id not in members
    targets = aws.elbv2.describe_target_health(TargetGroupArn=w.target_group_arn)["TargetHealthDescriptions"]
    assert w.instance_id not in [t["Target"]["Id"] for t in targets]
    assert result["left_auto_scaling_group"] == w.auto_scaling_group
    assert result["deregistered_from"] == [w.target_group_arn]


def test_the_instance_profile_is_detached(
    aws: Clients,
    ledger: IncidentLedger,
    golden_asg_member: GoldenWorkload,
    ssh_opened_finding: dict[str, Any],
    open_incident: OpenIncident,
) -> None:
    # Given an instance with a profile
    w = golden_asg_member
    incident_id = open_incident(w.instance_id, ssh_opened_finding)

    # When it is contained
    result = quarantine_instance(aws, ledger, incident_id, w.instance_id, ssh_opened_finding)

    # Then the metadata service has no role to hand out any more
    associations = aws.ec2.describe_iam_instance_profile_associations(
        Filters=[{"Name": "instance-id", "Values": [w.instance_id]}]
    )["IamInstanceProfileAssociations"]
    assert [a for a in associations if a["State"] == "associated"] == []
    assert result["profile_detached"] == w.profile_arn


def test_the_ledger_says_contained_with_the_result(
    aws: Clients,
    ledger: IncidentLedger,
    golden_asg_member: GoldenWorkload,
    ssh_opened_finding: dict[str, Any],
    open_incident: OpenIncident,
) -> None:
    w = golden_asg_member
    incident_id = open_incident(w.instance_id, ssh_opened_finding)

    result = quarantine_instance(aws, ledger, incident_id, w.instance_id, ssh_opened_finding)

    incident = ledger.get(incident_id)
    assert incident.status is Status.CONTAINED
    assert "contained" in incident.timeline
    assert incident.details["contained"] == result


# ---------------------------------------------------------------- idempotency and reuse


def test_running_twice_gives_the_same_end_state_without_reopening_the_instance(
    aws: Clients,
    ledger: IncidentLedger,
    golden_asg_member: GoldenWorkload,
    ssh_opened_finding: dict[str, Any],
    open_incident: OpenIncident,
) -> None:
    # Given an instance contained once
    w = golden_asg_member
    incident_id = open_incident(w.instance_id, ssh_opened_finding)
    first = quarantine_instance(aws, ledger, incident_id, w.instance_id, ssh_opened_finding)
    state_after_first = _groups_of_enis(aws, w.instance_id)
    prior_after_first = ledger.get(incident_id).prior_state
    changes = _record_ni_groups(aws)

    # When the step runs again (a Step Functions retry)
    second = quarantine_instance(aws, ledger, incident_id, w.instance_id, ssh_opened_finding)

    # Then it finds everything done: same result, same ENIs, no passthrough reopening, prior state kept
    assert {k: v for k, v in second.items() if k != "actions"} == {
        k: v for k, v in first.items() if k != "actions"
    }
    assert _groups_of_enis(aws, w.instance_id) == state_after_first
    assert changes == []
    assert ledger.get(incident_id).prior_state == prior_after_first


def test_isolation_groups_are_reused_across_instances_of_one_vpc(
    aws: Clients,
    ledger: IncidentLedger,
    golden_asg_member: GoldenWorkload,
    ssh_opened_finding: dict[str, Any],
    open_incident: OpenIncident,
) -> None:
    # Given both members of the group are compromised
    w = golden_asg_member
    members = aws.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[w.auto_scaling_group])
    other = next(
        i["InstanceId"]
        for i in members["AutoScalingGroups"][0]["Instances"]
        if i["InstanceId"] != w.instance_id
    )

    # When both are contained
    first = quarantine_instance(
        aws, ledger, open_incident(w.instance_id, ssh_opened_finding), w.instance_id, ssh_opened_finding
    )
    second = quarantine_instance(
        aws, ledger, open_incident(other, ssh_opened_finding), other, ssh_opened_finding
    )

    # Then one isolation group (and one passthrough group) serves the VPC
    assert first["isolation_group_ids"] == second["isolation_group_ids"]
    names = [GROUP_NAMES["isolation"], GROUP_NAMES["passthrough"]]
    ours = aws.ec2.describe_security_groups(
        Filters=[{"Name": "vpc-id", "Values": [w.vpc_id]}, {"Name": "group-name", "Values": names}]
    )["SecurityGroups"]
    assert len(ours) == 2


def test_a_rule_smuggled_into_the_isolation_group_is_removed_before_it_is_used(
    aws: Clients,
    ledger: IncidentLedger,
    golden_asg_member: GoldenWorkload,
    ssh_opened_finding: dict[str, Any],
    open_incident: OpenIncident,
) -> None:
    # Given the isolation group exists and someone added an ingress rule to it
    w = golden_asg_member
    quarantine_instance(
        aws, ledger, open_incident(w.instance_id, ssh_opened_finding), w.instance_id, ssh_opened_finding
    )
    isolation = _our_group_id(aws, w.vpc_id, "isolation")
    aws.ec2.authorize_security_group_ingress(
        GroupId=isolation,
        IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
        ],
    )
    members = aws.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[w.auto_scaling_group])
    other = members["AutoScalingGroups"][0]["Instances"][0]["InstanceId"]

    # When another instance is contained with it
    quarantine_instance(aws, ledger, open_incident(other, ssh_opened_finding), other, ssh_opened_finding)

    # Then the isolation group is empty again
    assert _ingress(aws, isolation) == []


# ---------------------------------------------------------------- failures


def test_isolation_failed_when_an_eni_keeps_another_group(
    monkeypatch: pytest.MonkeyPatch,
    aws: Clients,
    ledger: IncidentLedger,
    golden_asg_member: GoldenWorkload,
    ssh_opened_finding: dict[str, Any],
    open_incident: OpenIncident,
) -> None:
    # Given EC2 acknowledges the second ENI's isolation, and every later attempt, but never applies it
    # (once only, verification sets it again: test_contain_real_instances.py)
    w = golden_asg_member
    incident_id = open_incident(w.instance_id, ssh_opened_finding)
    monkeypatch.setattr(quarantine, "_VERIFY_WAITS", (0.0,))
    monkeypatch.setattr(quarantine, "_LEAVE_PASSTHROUGH_WAITS", (0.0,))
    _answer(aws.ec2, "ModifyNetworkInterfaceAttribute", 200, {}, on_call=4, and_after=True)

    # When the instance is contained, Then verification catches it
    with pytest.raises(IsolationFailed, match="not isolated"):
        quarantine_instance(aws, ledger, incident_id, w.instance_id, ssh_opened_finding)
    assert ledger.get(incident_id).status is Status.OPEN


def test_an_unknown_instance_is_instance_not_found_and_nothing_is_recorded(
    aws: Clients,
    ledger: IncidentLedger,
    golden_asg_member: GoldenWorkload,
    ssh_opened_finding: dict[str, Any],
    open_incident: OpenIncident,
) -> None:
    incident_id = open_incident("i-0123456789abcdef0", ssh_opened_finding)

    with pytest.raises(InstanceNotFound, match="i-0123456789abcdef0"):
        quarantine_instance(aws, ledger, incident_id, "i-0123456789abcdef0", ssh_opened_finding)
    assert ledger.get(incident_id).prior_state is None


def test_throttling_that_outlasts_retries_is_aws_call_failed_naming_the_resource(
    aws: Clients,
    ledger: IncidentLedger,
    golden_asg_member: GoldenWorkload,
    ssh_opened_finding: dict[str, Any],
    open_incident: OpenIncident,
) -> None:
    w = golden_asg_member
    incident_id = open_incident(w.instance_id, ssh_opened_finding)
    _answer(
        aws.autoscaling, "DetachInstances", 400, {"Error": {"Code": "Throttling", "Message": "Rate exceeded"}}
    )

    with pytest.raises(AwsCallFailed, match=f"{w.instance_id}.*{w.auto_scaling_group}.*Throttling"):
        quarantine_instance(aws, ledger, incident_id, w.instance_id, ssh_opened_finding)
    # Isolation came first and stays.
    isolation = _our_group_id(aws, w.vpc_id, "isolation")
    assert all(groups == [isolation] for groups in _groups_of_enis(aws, w.instance_id).values())


# ---------------------------------------------------------------- handler


def test_the_handler_contains_the_instance_of_the_execution_input(
    aws: Clients,
    ledger: IncidentLedger,
    golden_asg_member: GoldenWorkload,
    ssh_opened_finding: dict[str, Any],
    open_incident: OpenIncident,
    step_environment: pytest.MonkeyPatch,
    lambda_context: FakeLambdaContext,
) -> None:
    # Given the function's environment and the state machine's payload
    w = golden_asg_member
    app = load_function("quarantine")
    incident_id = open_incident(w.instance_id, ssh_opened_finding)
    payload = {"incident_id": incident_id, "instance_id": w.instance_id, "finding": ssh_opened_finding}

    # When it is invoked
    result = app.handler(payload, lambda_context)

    # Then the instance is contained and the contract's fields are there
    assert result["instance_id"] == w.instance_id
    assert ledger.get(incident_id).status is Status.CONTAINED
    with pytest.raises(InvalidEvent):
        app.handler({"incident_id": incident_id}, lambda_context)
