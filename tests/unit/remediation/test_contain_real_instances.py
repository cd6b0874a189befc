"""Contain on instances as a real account has them (issue 12): Spot instances (no termination protection),
reads that lag behind writes, target groups deleted meanwhile, a failure in the middle of the two-step
swap, connections that security groups do not cut (NLB, network ACLs), and interfaces the instance does
not own. moto knows none of this; each AWS behaviour is modelled by a fix of the local runtime
(local/moto_fixes.py), applied here for one test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from botocore.exceptions import ReadTimeoutError
from immutable_guard.clients import Clients
from immutable_guard.errors import IsolationFailed
from immutable_guard.ledger import IncidentLedger, Status
from immutable_guard.local import moto_fixes
from immutable_guard.model import Kind, PostEvidenceAction
from immutable_guard.remediation import quarantine
from immutable_guard.remediation.network_acl import DETAIL_KEY as ACL_DETAIL_KEY
from immutable_guard.remediation.nuke import nuke_instance
from immutable_guard.remediation.quarantine import (
    CONNECTION_TERMINATION,
    GROUP_NAMES,
    TAG_STATE,
    quarantine_instance,
)
from immutable_guard.remediation.release import release_incident
from immutable_guard.settings import NukeSettings
from moto.ec2.models import ec2_backends
from moto.elbv2.models import elbv2_backends
from remediation_world import GOLDEN_AMI, ContainedInstance, GoldenWorkload, make_finding

OpenIncident = Callable[[str, dict[str, Any]], str]
ACCOUNT, REGION = "123456789012", "us-east-1"
SPOT_REFUSAL = "Modifying 'disableApiTermination' is not supported for spot instances."


@pytest.fixture
def fix(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Apply one fix of the local runtime for this test only (undone by monkeypatch)."""

    def apply(fix_function: Callable[..., None], **options: Any) -> None:
        fix_function(
            lambda target, name, value: monkeypatch.setattr(target, name, value, raising=False), **options
        )

    return apply


@pytest.fixture(autouse=True)
def no_back_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """The back-offs are for a real EC2; counting the reads is what these tests assert."""
    monkeypatch.setattr(quarantine, "_VERIFY_WAITS", (0.0, 0.0, 0.0, 0.0))
    monkeypatch.setattr(quarantine, "_LEAVE_PASSTHROUGH_WAITS", (0.0, 0.0, 0.0))


@pytest.fixture
def finding(golden_asg_member: GoldenWorkload) -> dict[str, Any]:
    return make_finding(
        Kind.SSH_KEY_PUSHED,
        event_name="SendSSHPublicKey",
        event_source="ec2-instance-connect.amazonaws.com",
        resource_ids=(golden_asg_member.instance_id,),
    )


def _groups_of_enis(aws: Clients, instance_id: str) -> dict[str, list[str]]:
    enis = aws.ec2.describe_network_interfaces(
        Filters=[{"Name": "attachment.instance-id", "Values": [instance_id]}]
    )["NetworkInterfaces"]
    return {e["NetworkInterfaceId"]: [g["GroupId"] for g in e["Groups"]] for e in enis}


def _our_group(aws: Clients, vpc_id: str, role: str) -> str:
    return str(
        aws.ec2.describe_security_groups(
            Filters=[
                {"Name": "vpc-id", "Values": [vpc_id]},
                {"Name": "group-name", "Values": [GROUP_NAMES[role]]},
            ]
        )["SecurityGroups"][0]["GroupId"]
    )


def _instance(aws: Clients, instance_id: str) -> dict[str, Any]:
    return dict(aws.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0])


def _count(client: Any, operation: str) -> list[dict[str, Any]]:
    """Every request of ``operation`` made through ``client``, with its parameters."""
    seen: list[dict[str, Any]] = []
    service = client.meta.service_model.service_id.hyphenize()
    client.meta.events.register(
        f"provide-client-params.{service}.{operation}", lambda params, **_: seen.append(dict(params))
    )
    return seen


# ---------------------------------------------------------------- Spot instances


@pytest.fixture
def spot_member(aws: Clients, golden_asg_member: GoldenWorkload, fix: Callable[..., None]) -> Iterator[str]:
    """A Spot instance beside the group member, in the same subnet and group, whose root volume would be
    deleted with it; the local runtime refuses protection on Spot as EC2 does."""
    fix(moto_fixes.spot_instances_refuse_protection)
    launched = aws.ec2.run_instances(
        ImageId=GOLDEN_AMI,
        InstanceType="t3.micro",
        MinCount=1,
        MaxCount=1,
        SubnetId=golden_asg_member.subnet_id,
        SecurityGroupIds=[golden_asg_member.app_group_id],
        InstanceMarketOptions={"MarketType": "spot"},
    )["Instances"][0]
    assert launched["InstanceLifecycle"] == "spot"
    yield str(launched["InstanceId"])


def test_the_local_runtime_refuses_termination_protection_on_spot_as_ec2_does(
    aws: Clients, spot_member: str
) -> None:
    with pytest.raises(aws.ec2.exceptions.ClientError) as refused:
        aws.ec2.modify_instance_attribute(InstanceId=spot_member, DisableApiTermination={"Value": True})
    assert refused.value.response["Error"]["Code"] == "UnsupportedOperation"
    assert refused.value.response["Error"]["Message"] == SPOT_REFUSAL


def test_a_spot_instance_is_contained_to_the_end_and_its_volumes_outlive_it(
    aws: Clients,
    ledger: IncidentLedger,
    spot_member: str,
    finding: dict[str, Any],
    open_incident: OpenIncident,
) -> None:
    # Given a Spot instance, which EC2 lets nobody protect against termination
    incident_id = open_incident(spot_member, finding)

    # When it is contained
    result = quarantine_instance(aws, ledger, incident_id, spot_member, finding)

    # Then every step ran: quarantine tag on, volumes kept on termination, incident CONTAINED
    instance = _instance(aws, spot_member)
    assert {t["Key"]: t["Value"] for t in instance["Tags"]}[TAG_STATE] == "quarantined"
    assert [m["Ebs"]["DeleteOnTermination"] for m in instance["BlockDeviceMappings"]] == [False]
    assert result["spot"] is True and result["termination_protection"] is False
    assert ledger.get(incident_id).status is Status.CONTAINED
    assert any("Spot" in action for action in result["actions"])


def test_a_contained_spot_instance_is_nuked_and_released_without_touching_its_protection(
    aws: Clients,
    ledger: IncidentLedger,
    spot_member: str,
    finding: dict[str, Any],
    open_incident: OpenIncident,
) -> None:
    # Given a contained Spot instance, judged a false positive
    incident_id = open_incident(spot_member, finding)
    quarantine_instance(aws, ledger, incident_id, spot_member, finding)

    # When a person releases it, Then EC2's refusal of the protection attribute does not stop it
    result = release_incident(aws, ledger, incident_id)
    assert ledger.get(incident_id).status is Status.RELEASED
    assert result["protection"]["instance_initiated_shutdown_behavior"] == "stop"

    # And Nuke's own act (lift our protection, then terminate) terminates a Spot instance too
    from immutable_guard.remediation import nuke

    nuke._act(aws, _instance(aws, spot_member), PostEvidenceAction.TERMINATE)
    assert _instance(aws, spot_member)["State"]["Name"] in ("shutting-down", "terminated")


# ---------------------------------------------------------------- eventual consistency


def test_a_stale_read_after_isolating_does_not_fail_contain(
    aws: Clients,
    ledger: IncidentLedger,
    golden_asg_member: GoldenWorkload,
    finding: dict[str, Any],
    open_incident: OpenIncident,
    fix: Callable[..., None],
) -> None:
    # Given EC2 answers the next two reads of an interface with its groups before the change
    fix(moto_fixes.ec2_reads_lag_behind_writes, stale_reads=2)
    w = golden_asg_member
    incident_id = open_incident(w.instance_id, finding)
    reads = _count(aws.ec2, "DescribeNetworkInterfaces")

    # When the instance is contained
    result = quarantine_instance(aws, ledger, incident_id, w.instance_id, finding)

    # Then verification read again until EC2 showed the change, and Contain completed
    isolation = _our_group(aws, w.vpc_id, "isolation")
    assert all(groups == [isolation] for groups in _groups_of_enis(aws, w.instance_id).values())
    assert ledger.get(incident_id).status is Status.CONTAINED
    assert result["isolation_group_ids"] == [isolation]
    assert len(reads) >= 3  # one while observing, then the stale reads and the one that sees it


def test_verification_gives_up_after_bounded_reads_when_ec2_never_shows_the_change(
    aws: Clients,
    ledger: IncidentLedger,
    golden_asg_member: GoldenWorkload,
    finding: dict[str, Any],
    open_incident: OpenIncident,
    fix: Callable[..., None],
) -> None:
    # Given reads that stay stale for longer than any verification waits
    fix(moto_fixes.ec2_reads_lag_behind_writes, stale_reads=1000)
    w = golden_asg_member
    incident_id = open_incident(w.instance_id, finding)
    reads = _count(aws.ec2, "DescribeNetworkInterfaces")

    # When the instance is contained, Then it fails after a bounded number of reads
    with pytest.raises(IsolationFailed, match="not isolated"):
        quarantine_instance(aws, ledger, incident_id, w.instance_id, finding)
    assert len(reads) <= 1 + 2 * (len(quarantine._VERIFY_WAITS) + 1)


# ---------------------------------------------------------------- target groups


def test_a_target_group_deleted_while_contain_looks_is_skipped(
    aws: Clients,
    ledger: IncidentLedger,
    golden_asg_member: GoldenWorkload,
    finding: dict[str, Any],
    open_incident: OpenIncident,
) -> None:
    # Given a second target group, deleted between the listing and the read of its targets
    w = golden_asg_member
    doomed = aws.elbv2.create_target_group(
        Name="doomed", Protocol="HTTP", Port=80, VpcId=w.vpc_id, TargetType="instance"
    )["TargetGroups"][0]["TargetGroupArn"]
    backend = elbv2_backends[ACCOUNT][REGION]

    def delete_doomed(**_: Any) -> None:
        if doomed in backend.target_groups:
            backend.delete_target_group(doomed)

    aws.elbv2.meta.events.register(
        "before-call.elastic-load-balancing-v2.DescribeTargetHealth", delete_doomed
    )
    incident_id = open_incident(w.instance_id, finding)

    # When the instance is contained
    result = quarantine_instance(aws, ledger, incident_id, w.instance_id, finding)

    # Then the group that is gone is no group of the instance's, and the other one is left
    assert doomed not in backend.target_groups
    assert result["deregistered_from"] == [w.target_group_arn]
    assert ledger.get(incident_id).status is Status.CONTAINED


def test_a_target_group_deleted_before_deregistration_does_not_fail_contain(
    aws: Clients,
    ledger: IncidentLedger,
    golden_asg_member: GoldenWorkload,
    finding: dict[str, Any],
    open_incident: OpenIncident,
) -> None:
    # Given the instance's target group is deleted just before it is deregistered
    w = golden_asg_member
    backend = elbv2_backends[ACCOUNT][REGION]

    def delete_it(**_: Any) -> None:
        backend.delete_target_group(w.target_group_arn)

    aws.elbv2.meta.events.register("before-call.elastic-load-balancing-v2.DeregisterTargets", delete_it)
    incident_id = open_incident(w.instance_id, finding)

    # When the instance is contained, Then it completes and says so
    result = quarantine_instance(aws, ledger, incident_id, w.instance_id, finding)
    assert ledger.get(incident_id).status is Status.CONTAINED
    assert any("deleted meanwhile" in action for action in result["actions"]), result["actions"]


def test_target_groups_are_looked_up_only_after_isolation(
    aws: Clients,
    ledger: IncidentLedger,
    golden_asg_member: GoldenWorkload,
    finding: dict[str, Any],
    open_incident: OpenIncident,
) -> None:
    # Given every call is recorded in order
    w = golden_asg_member
    calls: list[str] = []
    for client in (aws.ec2, aws.elbv2):
        client.meta.events.register(
            f"before-call.{client.meta.service_model.service_id.hyphenize()}",
            lambda model, **_: calls.append(model.name),
        )
    incident_id = open_incident(w.instance_id, finding)

    # When it is contained
    quarantine_instance(aws, ledger, incident_id, w.instance_id, finding)

    # Then no target group read delays the isolation
    last_isolation = max(i for i, name in enumerate(calls) if name == "ModifyNetworkInterfaceAttribute")
    assert calls.index("DescribeTargetGroups") > last_isolation


def test_a_network_load_balancer_closes_the_instance_connections(
    aws: Clients,
    ledger: IncidentLedger,
    golden_asg_member: GoldenWorkload,
    finding: dict[str, Any],
    open_incident: OpenIncident,
) -> None:
    # Given the instance is also behind a Network Load Balancer (TCP target group), whose connections
    # are tracked whatever its security groups say
    w = golden_asg_member
    nlb_group = aws.elbv2.create_target_group(
        Name="golden-tcp", Protocol="TCP", Port=443, VpcId=w.vpc_id, TargetType="instance"
    )["TargetGroups"][0]["TargetGroupArn"]
    aws.elbv2.register_targets(TargetGroupArn=nlb_group, Targets=[{"Id": w.instance_id}])
    incident_id = open_incident(w.instance_id, finding)

    # When it is contained
    result = quarantine_instance(aws, ledger, incident_id, w.instance_id, finding)

    # Then the NLB group terminates a deregistered target's connections, and the instance left both groups
    attributes = {
        a["Key"]: a["Value"]
        for a in aws.elbv2.describe_target_group_attributes(TargetGroupArn=nlb_group)["Attributes"]
    }
    assert attributes[CONNECTION_TERMINATION] == "true"
    assert result["connection_termination_enabled"] == [nlb_group]
    assert sorted(result["deregistered_from"]) == sorted([w.target_group_arn, nlb_group])
    targets = aws.elbv2.describe_target_health(TargetGroupArn=nlb_group)["TargetHealthDescriptions"]
    assert w.instance_id not in [t["Target"]["Id"] for t in targets]
    # An HTTP (Application Load Balancer) group has no such attribute: left alone
    http = {
        a["Key"]: a["Value"]
        for a in aws.elbv2.describe_target_group_attributes(TargetGroupArn=w.target_group_arn)["Attributes"]
    }
    assert CONNECTION_TERMINATION not in http


# ---------------------------------------------------------------- the passthrough group is never left on


def _fail_isolation_step(aws: Clients, isolation_of: Callable[[], str], error: Exception, times: int) -> None:
    """Make the first ``times`` requests that put an interface on the isolation group fail with ``error``
    before they reach EC2 (so the interface is still on the passthrough group)."""
    left = {"n": times}
    pending: dict[str, Any] = {}

    def remember(params: dict[str, Any], **_: Any) -> None:
        pending["groups"] = list(params.get("Groups", []))

    def fail(**_: Any) -> None:
        if left["n"] > 0 and pending.get("groups") == [isolation_of()]:
            left["n"] -= 1
            raise error

    aws.ec2.meta.events.register("provide-client-params.ec2.ModifyNetworkInterfaceAttribute", remember)
    aws.ec2.meta.events.register("before-call.ec2.ModifyNetworkInterfaceAttribute", fail)


def _isolation_group_lookup(aws: Clients, vpc_id: str) -> Callable[[], str]:
    def lookup() -> str:
        from immutable_guard.remediation.quarantine import ROLE_ISOLATION

        groups = aws.ec2.describe_security_groups(
            Filters=[
                {"Name": "vpc-id", "Values": [vpc_id]},
                {"Name": "tag:immutable-guard:role", "Values": [ROLE_ISOLATION]},
            ]
        )["SecurityGroups"]
        return str(groups[0]["GroupId"]) if groups else "none yet"

    return lookup


def test_a_timeout_at_the_second_step_does_not_leave_the_passthrough_group(
    aws: Clients,
    ledger: IncidentLedger,
    golden_asg_member: GoldenWorkload,
    finding: dict[str, Any],
    open_incident: OpenIncident,
) -> None:
    # Given the first request for the isolation group times out (botocore's ReadTimeoutError)
    w = golden_asg_member
    timeout = ReadTimeoutError(endpoint_url="https://ec2.us-east-1.amazonaws.com/")
    _fail_isolation_step(aws, _isolation_group_lookup(aws, w.vpc_id), timeout, times=1)
    incident_id = open_incident(w.instance_id, finding)

    # When the instance is contained
    quarantine_instance(aws, ledger, incident_id, w.instance_id, finding)

    # Then the isolation group was set again at once: both interfaces are isolated, none passes all
    isolation = _our_group(aws, w.vpc_id, "isolation")
    assert all(groups == [isolation] for groups in _groups_of_enis(aws, w.instance_id).values())
    assert ledger.get(incident_id).status is Status.CONTAINED


def test_when_the_isolation_group_cannot_be_set_the_interface_goes_back_not_open_to_all(
    aws: Clients,
    ledger: IncidentLedger,
    golden_asg_member: GoldenWorkload,
    finding: dict[str, Any],
    open_incident: OpenIncident,
) -> None:
    # Given every request for the isolation group times out
    w = golden_asg_member
    timeout = ReadTimeoutError(endpoint_url="https://ec2.us-east-1.amazonaws.com/")
    _fail_isolation_step(aws, _isolation_group_lookup(aws, w.vpc_id), timeout, times=1000)
    incident_id = open_incident(w.instance_id, finding)

    # When the instance is contained, Then the step fails ...
    with pytest.raises(IsolationFailed, match="isolation step failed"):
        quarantine_instance(aws, ledger, incident_id, w.instance_id, finding)
    # ... and no interface is left on the all-traffic passthrough group: it is back on its own group
    passthrough = _our_group(aws, w.vpc_id, "passthrough")
    groups = _groups_of_enis(aws, w.instance_id)
    assert all(passthrough not in g for g in groups.values()), groups
    assert [w.app_group_id] in groups.values()


def test_an_isolation_ec2_acknowledged_but_did_not_apply_is_set_again(
    aws: Clients,
    ledger: IncidentLedger,
    golden_asg_member: GoldenWorkload,
    finding: dict[str, Any],
    open_incident: OpenIncident,
) -> None:
    # Given EC2 answers 200 to the first isolation request without applying it (the ENI stays on the
    # passthrough group)
    w = golden_asg_member
    isolation_of = _isolation_group_lookup(aws, w.vpc_id)
    pending: dict[str, Any] = {}
    left = {"n": 1}

    def remember(params: dict[str, Any], **_: Any) -> None:
        pending["groups"] = list(params.get("Groups", []))

    def swallow(**_: Any) -> Any:
        if left["n"] and pending.get("groups") == [isolation_of()]:
            left["n"] -= 1

            class Http:
                status_code = 200
                headers: dict[str, str] = {}

            return Http(), {}
        return None

    aws.ec2.meta.events.register("provide-client-params.ec2.ModifyNetworkInterfaceAttribute", remember)
    aws.ec2.meta.events.register("before-call.ec2.ModifyNetworkInterfaceAttribute", swallow)
    incident_id = open_incident(w.instance_id, finding)

    # When the instance is contained
    quarantine_instance(aws, ledger, incident_id, w.instance_id, finding)

    # Then verification saw the passthrough group, set the isolation group again, and all is isolated
    isolation = _our_group(aws, w.vpc_id, "isolation")
    assert all(groups == [isolation] for groups in _groups_of_enis(aws, w.instance_id).values())


# ---------------------------------------------------------------- interfaces the instance does not own


@pytest.mark.parametrize(
    ("attribute", "value", "reason"),
    [("requester_managed", True, "requester-managed"), ("interface_type", "trunk", "trunk interface")],
)
def test_an_interface_the_instance_does_not_own_is_reported_and_left_alone(
    aws: Clients,
    ledger: IncidentLedger,
    golden_asg_member: GoldenWorkload,
    finding: dict[str, Any],
    open_incident: OpenIncident,
    attribute: str,
    value: Any,
    reason: str,
) -> None:
    # Given the instance's second interface is managed by an AWS service (or is an ECS trunk)
    w = golden_asg_member
    setattr(ec2_backends[ACCOUNT][REGION].enis[w.second_eni_id], attribute, value)
    incident_id = open_incident(w.instance_id, finding)

    # When the instance is contained
    result = quarantine_instance(aws, ledger, incident_id, w.instance_id, finding)

    # Then its own interface is isolated, the other one is untouched and reported, and Contain completed
    isolation = _our_group(aws, w.vpc_id, "isolation")
    groups = _groups_of_enis(aws, w.instance_id)
    assert groups.pop(w.second_eni_id) == [w.app_group_id]
    assert list(groups.values()) == [[isolation]]
    assert [s["eni"] for s in result["skipped_network_interfaces"]] == [w.second_eni_id]
    assert reason in result["skipped_network_interfaces"][0]["reason"]
    assert any(w.second_eni_id in a and a.startswith("WARNING") for a in result["actions"])
    assert ledger.get(incident_id).status is Status.CONTAINED
    # ... and Release does not touch it either
    assert w.second_eni_id not in [
        e["eni"] for e in ledger.get(incident_id).prior_state["network_interfaces"]
    ]


# ---------------------------------------------------------------- IsolationDepth=network-acl


@pytest.fixture
def second_subnet(aws: Clients, golden_asg_member: GoldenWorkload) -> str:
    """Another subnet of the workload's VPC (sharing its default network ACL), where the load balancer
    nodes or the NAT gateway would live."""
    return str(
        aws.ec2.create_subnet(
            VpcId=golden_asg_member.vpc_id, CidrBlock="10.0.2.0/24", AvailabilityZone="us-east-1a"
        )["Subnet"]["SubnetId"]
    )


def _acl(aws: Clients, vpc_id: str) -> dict[str, Any]:
    return dict(
        aws.ec2.describe_network_acls(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["NetworkAcls"][0]
    )


def _addresses(aws: Clients, instance_id: str) -> set[str]:
    return {
        f"{a['PrivateIpAddress']}/32"
        for eni in _instance(aws, instance_id)["NetworkInterfaces"]
        for a in eni["PrivateIpAddresses"]
    }


def test_network_acl_depth_denies_the_instance_addresses_both_ways_ahead_of_any_allow(
    aws: Clients,
    ledger: IncidentLedger,
    golden_asg_member: GoldenWorkload,
    second_subnet: str,
    finding: dict[str, Any],
    open_incident: OpenIncident,
    fix: Callable[..., None],
) -> None:
    # Given a VPC of two subnets and IsolationDepth=network-acl
    fix(moto_fixes.network_acl_entries_are_limited)
    w = golden_asg_member
    incident_id = open_incident(w.instance_id, finding)

    # When the instance is contained
    result = quarantine_instance(
        aws, ledger, incident_id, w.instance_id, finding, isolation_depth="network-acl"
    )

    # Then the ACL the other subnet uses denies each of its addresses, inbound and outbound, before rule 100
    entries = _acl(aws, w.vpc_id)["Entries"]
    denied = {
        (e["CidrBlock"], e["Egress"])
        for e in entries
        if e["RuleAction"] == "deny" and e["RuleNumber"] < 100 and e["Protocol"] == "-1"
    }
    addresses = _addresses(aws, w.instance_id)
    assert denied == {(a, egress) for a in addresses for egress in (False, True)}
    # ... and the ledger knows them (before they existed), for Release and Nuke to take back
    recorded = ledger.get(incident_id).details[ACL_DETAIL_KEY]
    assert {(e["cidr"], e["egress"]) for e in recorded} == denied
    assert result["network_acl"]["refused"] == []

    # When the incident is released, Then the entries are gone and the ACL is as before
    release_incident(aws, ledger, incident_id)
    assert [
        e for e in _acl(aws, w.vpc_id)["Entries"] if e["RuleAction"] == "deny" and e["RuleNumber"] < 100
    ] == []


def test_network_acl_depth_is_idempotent(
    aws: Clients,
    ledger: IncidentLedger,
    golden_asg_member: GoldenWorkload,
    second_subnet: str,
    finding: dict[str, Any],
    open_incident: OpenIncident,
) -> None:
    w = golden_asg_member
    incident_id = open_incident(w.instance_id, finding)
    quarantine_instance(aws, ledger, incident_id, w.instance_id, finding, isolation_depth="network-acl")
    first = sorted((e["RuleNumber"], e["Egress"]) for e in _acl(aws, w.vpc_id)["Entries"])

    # When Contain runs again (a Step Functions retry)
    quarantine_instance(aws, ledger, incident_id, w.instance_id, finding, isolation_depth="network-acl")

    # Then no second set of entries
    assert sorted((e["RuleNumber"], e["Egress"]) for e in _acl(aws, w.vpc_id)["Entries"]) == first


def test_a_full_network_acl_is_refused_cleanly_and_left_as_it_was(
    aws: Clients,
    ledger: IncidentLedger,
    golden_asg_member: GoldenWorkload,
    second_subnet: str,
    finding: dict[str, Any],
    open_incident: OpenIncident,
    fix: Callable[..., None],
) -> None:
    # Given the ACL's outbound rules are one short of the quota (20 per direction): inbound entries fit,
    # the outbound ones do not
    fix(moto_fixes.network_acl_entries_are_limited)
    w = golden_asg_member
    acl_id = _acl(aws, w.vpc_id)["NetworkAclId"]
    for n in range(200, 219):
        aws.ec2.create_network_acl_entry(
            NetworkAclId=acl_id,
            RuleNumber=n,
            Protocol="6",
            RuleAction="allow",
            Egress=True,
            CidrBlock="10.0.0.0/16",
            PortRange={"From": n, "To": n},
        )
    before = sorted((e["RuleNumber"], e["Egress"]) for e in _acl(aws, w.vpc_id)["Entries"])
    incident_id = open_incident(w.instance_id, finding)

    # When the instance is contained with IsolationDepth=network-acl
    result = quarantine_instance(
        aws, ledger, incident_id, w.instance_id, finding, isolation_depth="network-acl"
    )

    # Then that ACL is left exactly as it was, the refusal is reported, and the rest of Contain ran
    assert sorted((e["RuleNumber"], e["Egress"]) for e in _acl(aws, w.vpc_id)["Entries"]) == before
    assert result["network_acl"]["refused"] == [f"{acl_id}: full (NetworkAclEntryLimitExceeded)"]
    assert any(a.startswith("WARNING") and acl_id in a for a in result["actions"])
    assert ledger.get(incident_id).status is Status.CONTAINED


def test_a_single_subnet_vpc_has_no_acl_to_use_and_says_so(
    aws: Clients,
    ledger: IncidentLedger,
    golden_asg_member: GoldenWorkload,
    finding: dict[str, Any],
    open_incident: OpenIncident,
) -> None:
    # Given the instance's subnet is the only one: its own ACL never sees its address as the remote one
    w = golden_asg_member
    incident_id = open_incident(w.instance_id, finding)

    result = quarantine_instance(
        aws, ledger, incident_id, w.instance_id, finding, isolation_depth="network-acl"
    )

    assert result["network_acl"]["entries"] == []
    assert "no other subnet" in result["network_acl"]["refused"][0]
    assert [
        e for e in _acl(aws, w.vpc_id)["Entries"] if e["RuleAction"] == "deny" and e["RuleNumber"] < 100
    ] == []


def test_nuke_frees_the_addresses_of_a_terminated_instance(
    aws: Clients,
    ledger: IncidentLedger,
    make_contained: Callable[..., ContainedInstance],
    workload_network: Any,
) -> None:
    # Given a contained instance whose addresses Contain denied in a network ACL (recorded in the ledger)
    contained = make_contained()
    vpc_id = workload_network.vpc_id
    acl_id = _acl(aws, vpc_id)["NetworkAclId"]
    address = f"{_instance(aws, contained.instance_id)['PrivateIpAddress']}/32"
    entry = {"acl": acl_id, "rule_number": 1, "egress": False, "cidr": address}
    aws.ec2.create_network_acl_entry(
        NetworkAclId=acl_id, RuleNumber=1, Protocol="-1", RuleAction="deny", Egress=False, CidrBlock=address
    )
    ledger.record_detail(contained.incident_id, ACL_DETAIL_KEY, [entry])
    aws.ec2.modify_instance_attribute(
        InstanceId=contained.instance_id, DisableApiTermination={"Value": False}
    )
    aws.ec2.terminate_instances(InstanceIds=[contained.instance_id])

    # When Nuke runs (the instance is already terminated: a retry), Then the entry is removed
    settings = NukeSettings(
        ledger_table="immutable-guard-ledger",
        alert_topic_arn="arn:aws:sns:us-east-1:123456789012:alerts",
        post_evidence_action=PostEvidenceAction.TERMINATE,
    )
    result = nuke_instance(aws, ledger, settings, contained.incident_id, contained.instance_id, [], {})
    assert result["network_acl_entries_removed"] == 1
    assert not [e for e in _acl(aws, vpc_id)["Entries"] if e["RuleNumber"] == 1 and not e["Egress"]]
