"""Contain closes a network ACL hole the attacker made, so the replacement (same subnet) does not inherit
it: the allow entry a CreateNetworkAclEntry created is deleted while it is still that entry; a replaced
entry (whose previous content is unknown) and a reused rule number are left, and said."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from immutable_guard.clients import Clients
from immutable_guard.detection import normalise, parse_event
from immutable_guard.ledger import IncidentLedger
from immutable_guard.remediation.quarantine import quarantine_instance
from remediation_world import GoldenWorkload

OpenIncident = Callable[[str, dict[str, Any]], str]
SAMPLE = Path(__file__).resolve().parents[3] / "events" / "cloudtrail-create-network-acl-entry.json"
VPC_RANGE = "10.0.0.0/16"


def acl_with_entries(aws: Clients, vpc_id: str) -> str:
    """A subnet ACL with SSH from the world as entry 90 (the attack) and HTTPS from the VPC as 100."""
    acl_id = aws.ec2.create_network_acl(VpcId=vpc_id)["NetworkAcl"]["NetworkAclId"]
    for number, port, cidr in ((90, 22, "0.0.0.0/0"), (100, 443, VPC_RANGE)):
        aws.ec2.create_network_acl_entry(
            NetworkAclId=acl_id,
            RuleNumber=number,
            Protocol="6",
            RuleAction="allow",
            Egress=False,
            CidrBlock=cidr,
            PortRange={"From": port, "To": port},
        )
    return acl_id


def finding_for(acl_id: str, instance_id: str, event_name: str = "CreateNetworkAclEntry") -> dict[str, Any]:
    """What Detect makes of the sample call on this ACL (the real normaliser, not a hand-made dict)."""
    raw = json.loads(SAMPLE.read_text())
    raw["detail"]["eventName"] = event_name
    raw["detail"]["requestParameters"]["networkAclId"] = acl_id
    finding = normalise(parse_event(raw)).model_dump(mode="json")
    finding["instance_ids"] = [instance_id]
    return finding


def ingress_numbers(aws: Clients, acl_id: str) -> list[int]:
    (acl,) = aws.ec2.describe_network_acls(NetworkAclIds=[acl_id])["NetworkAcls"]
    return sorted(e["RuleNumber"] for e in acl["Entries"] if not e["Egress"] and e["RuleNumber"] < 32767)


def test_the_allow_entry_the_attacker_created_is_deleted_and_the_others_kept(
    aws: Clients, ledger: IncidentLedger, golden_asg_member: GoldenWorkload, open_incident: OpenIncident
) -> None:
    w = golden_asg_member
    acl_id = acl_with_entries(aws, w.vpc_id)
    finding = finding_for(acl_id, w.instance_id)
    incident_id = open_incident(w.instance_id, finding)

    result = quarantine_instance(aws, ledger, incident_id, w.instance_id, finding)

    assert ingress_numbers(aws, acl_id) == [100]
    [removed] = result["removed_acl_entries"]
    assert (removed["network_acl_id"], removed["rule_number"], removed["cidr"]) == (acl_id, 90, "0.0.0.0/0")
    assert f"deleted ingress network ACL entry 90 of {acl_id}" in result["actions"]


def test_a_rule_number_reused_for_another_entry_is_left_and_said(
    aws: Clients, ledger: IncidentLedger, golden_asg_member: GoldenWorkload, open_incident: OpenIncident
) -> None:
    # Given entry 90 was since replaced by someone else with a narrower source
    w = golden_asg_member
    acl_id = acl_with_entries(aws, w.vpc_id)
    aws.ec2.replace_network_acl_entry(
        NetworkAclId=acl_id,
        RuleNumber=90,
        Protocol="6",
        RuleAction="allow",
        Egress=False,
        CidrBlock=VPC_RANGE,
        PortRange={"From": 22, "To": 22},
    )
    finding = finding_for(acl_id, w.instance_id)
    incident_id = open_incident(w.instance_id, finding)

    result = quarantine_instance(aws, ledger, incident_id, w.instance_id, finding)

    assert ingress_numbers(aws, acl_id) == [90, 100]
    assert (
        f"ingress network ACL entry 90 of {acl_id} no longer is the entry the event created: left as it is"
        in (result["actions"])
    )


def test_a_replaced_entry_is_not_deleted_because_what_it_replaced_is_unknown(
    aws: Clients, ledger: IncidentLedger, golden_asg_member: GoldenWorkload, open_incident: OpenIncident
) -> None:
    w = golden_asg_member
    acl_id = acl_with_entries(aws, w.vpc_id)
    finding = finding_for(acl_id, w.instance_id, event_name="ReplaceNetworkAclEntry")
    incident_id = open_incident(w.instance_id, finding)

    result = quarantine_instance(aws, ledger, incident_id, w.instance_id, finding)

    assert ingress_numbers(aws, acl_id) == [90, 100]
    assert result["removed_acl_entries"] == []


def test_running_contain_again_finds_the_entry_already_gone(
    aws: Clients, ledger: IncidentLedger, golden_asg_member: GoldenWorkload, open_incident: OpenIncident
) -> None:
    w = golden_asg_member
    acl_id = acl_with_entries(aws, w.vpc_id)
    finding = finding_for(acl_id, w.instance_id)
    incident_id = open_incident(w.instance_id, finding)
    quarantine_instance(aws, ledger, incident_id, w.instance_id, finding)

    again = quarantine_instance(aws, ledger, incident_id, w.instance_id, finding)

    assert ingress_numbers(aws, acl_id) == [100]
    assert f"ingress network ACL entry 90 of {acl_id} already gone" in again["actions"]
