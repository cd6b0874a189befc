"""Containment done again (remediation/contain_again.py): after someone else undid part of a quarantine
(a rule added to the isolation group, an interface moved back to its groups, a profile attached again),
Contain puts the server back: every interface on the isolation group with no rules, the added rule
revoked, the profile detached; the prior state the first containment recorded is kept, so `release`
still restores the server as it was before the attack. Nothing is done once the incident has ended."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from immutable_guard.clients import Clients
from immutable_guard.errors import InvalidEvent
from immutable_guard.ledger import IncidentLedger
from immutable_guard.model import Kind
from immutable_guard.remediation.contain_again import (
    STAGE_CONTAINED_AGAIN,
    contain_again,
    contain_again_request,
)
from immutable_guard.remediation.quarantine import CONTAIN_AGAIN, GROUP_NAMES, quarantine_instance
from remediation_world import FakeLambdaContext, GoldenWorkload, load_function, make_finding

OpenIncident = Callable[[str, dict[str, Any]], str]


def _groups_of_enis(aws: Clients, instance_id: str) -> dict[str, list[str]]:
    enis = aws.ec2.describe_network_interfaces(
        Filters=[{"Name": "attachment.instance-id", "Values": [instance_id]}]
    )["NetworkInterfaces"]
    return {eni["NetworkInterfaceId"]: [g["GroupId"] for g in eni["Groups"]] for eni in enis}


def _isolation_group(aws: Clients, vpc_id: str) -> dict[str, Any]:
    [group] = aws.ec2.describe_security_groups(
        Filters=[
            {"Name": "vpc-id", "Values": [vpc_id]},
            {"Name": "group-name", "Values": [GROUP_NAMES["isolation"]]},
        ]
    )["SecurityGroups"]
    return dict(group)


@pytest.fixture
def quarantined(
    aws: Clients,
    ledger: IncidentLedger,
    golden_asg_member: GoldenWorkload,
    ssh_opened_finding: dict[str, Any],
    open_incident: OpenIncident,
) -> tuple[GoldenWorkload, str]:
    """The golden ASG member as Contain leaves it, its incident open."""
    incident_id = open_incident(golden_asg_member.instance_id, ssh_opened_finding)
    quarantine_instance(aws, ledger, incident_id, golden_asg_member.instance_id, ssh_opened_finding)
    return golden_asg_member, incident_id


def test_a_rule_added_to_the_isolation_group_and_an_interface_moved_back_are_undone(
    aws: Clients, ledger: IncidentLedger, quarantined: tuple[GoldenWorkload, str]
) -> None:
    w, incident_id = quarantined
    isolation = _isolation_group(aws, w.vpc_id)["GroupId"]
    prior = ledger.get(incident_id).prior_state
    # Given someone opened SSH to the world on the isolation group and moved an interface back to the app
    # group
    aws.ec2.authorize_security_group_ingress(
        GroupId=isolation,
        IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
        ],
    )
    aws.ec2.modify_network_interface_attribute(NetworkInterfaceId=w.second_eni_id, Groups=[w.app_group_id])
    world_ssh = {
        "direction": "ingress",
        "protocol": "tcp",
        "from_port": 22,
        "to_port": 22,
        "cidr": "0.0.0.0/0",
    }
    tampering = make_finding(
        Kind.PORT_OPENED,
        resource_ids=(isolation,),
        evidence={"group_id": isolation, "direction": "ingress", "permissions": [world_ssh]},
    )
    # When Contain is asked to contain it again
    result = contain_again(aws, ledger, incident_id, w.instance_id, tampering)
    # Then every interface is on the isolation group alone, and that group has no rule again
    assert all(groups == [isolation] for groups in _groups_of_enis(aws, w.instance_id).values())
    group = _isolation_group(aws, w.vpc_id)
    assert (group["IpPermissions"], group["IpPermissionsEgress"]) == ([], [])
    assert result["isolation_group_ids"] == [isolation]
    # And the prior state is still the one from before the attack was answered (release restores it)
    incident = ledger.get(incident_id)
    assert incident.prior_state == prior
    assert STAGE_CONTAINED_AGAIN in incident.timeline
    assert incident.details[STAGE_CONTAINED_AGAIN]["event_id"] == tampering["event_id"]


def test_a_profile_attached_again_is_detached(
    aws: Clients, ledger: IncidentLedger, quarantined: tuple[GoldenWorkload, str]
) -> None:
    w, incident_id = quarantined
    # Given someone attached the profile again (new credentials on the metadata service)
    aws.ec2.associate_iam_instance_profile(
        IamInstanceProfile={"Arn": w.profile_arn}, InstanceId=w.instance_id
    )
    # When
    contain_again(aws, ledger, incident_id, w.instance_id, make_finding(Kind.ROLE_CHANGED))
    # Then
    associations = aws.ec2.describe_iam_instance_profile_associations(
        Filters=[{"Name": "instance-id", "Values": [w.instance_id]}]
    )["IamInstanceProfileAssociations"]
    assert [a for a in associations if a["State"] == "associated"] == []


def test_nothing_is_done_once_the_incident_has_ended(
    aws: Clients, ledger: IncidentLedger, quarantined: tuple[GoldenWorkload, str]
) -> None:
    w, incident_id = quarantined
    # Given the incident ended (a person released the server: its lock is gone) and its groups are back
    incident = ledger.get(incident_id)
    ledger.at(incident.account, incident.region).release_lock(w.instance_id, incident_id)
    aws.ec2.modify_network_interface_attribute(NetworkInterfaceId=w.second_eni_id, Groups=[w.app_group_id])
    # When a late request arrives
    result = contain_again(aws, ledger, incident_id, w.instance_id, make_finding())
    # Then the released server is left as it is
    assert "skipped" in result
    assert _groups_of_enis(aws, w.instance_id)[w.second_eni_id] == [w.app_group_id]


@pytest.mark.parametrize(
    "event",
    [
        {CONTAIN_AGAIN: "i-0abc"},
        {CONTAIN_AGAIN: {"incident_id": "ig-x", "instance_id": "not-an-instance", "finding": {}}},
        {CONTAIN_AGAIN: {"incident_id": "ig-x", "instance_id": "i-0abc"}, "extra": 1},
    ],
)
def test_a_malformed_request_is_refused_with_its_reason(event: dict[str, Any]) -> None:
    with pytest.raises(InvalidEvent, match=CONTAIN_AGAIN):
        contain_again_request(event)


def test_a_step_of_the_workflow_is_not_a_request() -> None:
    assert contain_again_request({"incident_id": "ig-x", "instance_id": "i-0abc"}) is None


def test_the_contain_function_takes_the_request(
    aws: Clients,
    ledger: IncidentLedger,
    quarantined: tuple[GoldenWorkload, str],
    step_environment: pytest.MonkeyPatch,
    lambda_context: FakeLambdaContext,
) -> None:
    w, incident_id = quarantined
    isolation = _isolation_group(aws, w.vpc_id)["GroupId"]
    aws.ec2.modify_network_interface_attribute(NetworkInterfaceId=w.second_eni_id, Groups=[w.app_group_id])
    app = load_function("quarantine")
    incident = ledger.get(incident_id)
    request = {
        CONTAIN_AGAIN: {
            "incident_id": incident_id,
            "instance_id": w.instance_id,
            "account": incident.account,
            "region": incident.region,
            "finding": make_finding(Kind.SSH_KEY_PUSHED, event_name="SendSSHPublicKey"),
        }
    }
    result = app.handler(request, lambda_context)
    assert result["isolation_group_ids"] == [isolation]
    assert _groups_of_enis(aws, w.instance_id)[w.second_eni_id] == [isolation]


def _termination_protected(aws: Clients, instance_id: str) -> bool:
    attribute = aws.ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="disableApiTermination")
    return bool(attribute["DisableApiTermination"]["Value"])


def test_termination_protection_turned_off_is_turned_on_again_until_the_evidence_is_complete(
    aws: Clients, ledger: IncidentLedger, quarantined: tuple[GoldenWorkload, str]
) -> None:
    w, incident_id = quarantined
    # Given someone turned termination protection off while the evidence is still being taken
    aws.ec2.modify_instance_attribute(InstanceId=w.instance_id, DisableApiTermination={"Value": False})
    # When
    contain_again(aws, ledger, incident_id, w.instance_id, make_finding(Kind.INSTANCE_MODIFIED))
    # Then it is on again
    assert _termination_protected(aws, w.instance_id)
    # But once the evidence is complete, Nuke may turn it off to terminate: it is left to Nuke
    ledger.record_stage(incident_id, "evidence_complete")
    aws.ec2.modify_instance_attribute(InstanceId=w.instance_id, DisableApiTermination={"Value": False})
    contain_again(aws, ledger, incident_id, w.instance_id, make_finding(Kind.INSTANCE_MODIFIED))
    assert not _termination_protected(aws, w.instance_id)
