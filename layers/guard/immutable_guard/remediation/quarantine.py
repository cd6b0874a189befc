"""Contain: cut a mutated instance off the network first, then keep it as evidence and take it out of
service. Everything needed to undo it (release) is in the ledger before the change it undoes: the prior
state before the first change, the target groups before leaving them, network ACL entries before adding."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import ConfigDict, Field

from immutable_guard.errors import AwsCallFailed, GuardError, InstanceNotFound, IsolationFailed, error_code
from immutable_guard.ledger import IncidentLedger, Status, now_iso
from immutable_guard.model import Finding
from immutable_guard.remediation.launch_source import PRIOR_STATE_KEY as LAUNCH_SOURCE_KEY
from immutable_guard.remediation.launch_source import record_launch_source
from immutable_guard.remediation.network_acl import DETAIL_KEY as ACL_DETAIL_KEY
from immutable_guard.remediation.network_acl import deny_instance_addresses, instance_addresses
from immutable_guard.remediation.offending_rules import (
    offending_acl_entries,
    offending_rules,
    remove_offending_acl_entries,
    revoke_offending_rules,
)
from immutable_guard.step_input import InstancePlace

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_iam import IAMClient

    from immutable_guard.clients import Clients

TAG_INCIDENT = "immutable-guard:incident"
TAG_STATE = "immutable-guard:state"
TAG_ROLE = "immutable-guard:role"
STATE_QUARANTINED = "quarantined"
ASG_NAME_TAG = "aws:autoscaling:groupName"

ROLE_PASSTHROUGH = "passthrough"
ROLE_ISOLATION = "isolation"
GROUP_NAMES = {
    ROLE_PASSTHROUGH: "immutable-guard-passthrough",
    ROLE_ISOLATION: "immutable-guard-isolation",
}
_GROUP_DESCRIPTIONS = {
    ROLE_PASSTHROUGH: "Immutable Guard: all traffic for an instant, so tracked connections become untracked",
    ROLE_ISOLATION: "Immutable Guard: no rules at all; a quarantined instance talks to nobody",
}

STAGE_CONTAINED = "contained"

_WORLD = ("0.0.0.0/0", "::/0")
_INSTANCE_NOT_FOUND = frozenset({"InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed"})
_GONE_STATES = frozenset({"shutting-down", "terminated"})
# A group created a moment ago may not be visible to the next call yet (EC2 is eventually consistent).
_NOT_YET_VISIBLE = frozenset({"InvalidGroup.NotFound", "InvalidSecurityGroupID.NotFound"})
_VISIBILITY_WAITS = (0.5, 1.0, 2.0)
# A read right after a write may still show the old groups (EC2 API "Eventual consistency"): verification
# reads again with these back-offs before it concludes anything (about 7 s in all, bounded).
_VERIFY_WAITS = (0.5, 1.0, 2.0, 4.0)
# Putting an interface back on the isolation group when a step of the swap failed: quick, few tries.
_LEAVE_PASSTHROUGH_WAITS = (0.2, 0.5, 1.0)
_READ_WORKERS = 8

# Interfaces the instance does not own: an AWS service manages them, and EC2 lets nobody else change
# their attributes (https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/requester-managed-eni.html), or
# they carry other workloads' traffic (ECS trunk and branch interfaces). Reported and left alone.
_NOT_OWNED_TYPES = frozenset({"trunk", "branch"})

# Spot instances cannot have termination protection, nor stop protection; EC2 refuses both
# ("You can't enable termination protection for Spot Instances",
# https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/Using_ChangingDisableAPITermination.html).
SPOT = "spot"

# Network Load Balancer target groups (their protocols), and the attribute that makes the load balancer
# close a deregistered target's established connections at the end of the deregistration delay
# (https://docs.aws.amazon.com/elasticloadbalancing/latest/APIReference/API_TargetGroupAttribute.html).
_NLB_PROTOCOLS = frozenset({"TCP", "UDP", "TLS", "TCP_UDP", "QUIC", "TCP_QUIC"})
CONNECTION_TERMINATION = "deregistration_delay.connection_termination.enabled"
_TARGET_GROUP_GONE = frozenset({"TargetGroupNotFound"})
PRIOR_TARGET_GROUPS = "prior_target_groups"
"""Incident details key: the target groups the instance was in when Contain took it out (for Release)."""

DEPTH_SECURITY_GROUPS = "security-groups"
DEPTH_NETWORK_ACL = "network-acl"
ISOLATION_DEPTHS = (DEPTH_SECURITY_GROUPS, DEPTH_NETWORK_ACL)

_T = TypeVar("_T")


class ContainRequest(InstancePlace):
    """What the state machine's Contain task passes (the execution input, from Detect)."""

    model_config = ConfigDict(extra="ignore")

    incident_id: str = Field(min_length=1)
    instance_id: str = Field(pattern=r"^i-[0-9a-f]+$")
    finding: Finding


# ---------------------------------------------------------------- AWS calls with typed errors


def call_aws(
    call: Callable[..., _T], what: str, *, error: type[GuardError] = AwsCallFailed, **kwargs: Any
) -> _T:
    """Make one AWS call; a ClientError (throttling included, once boto's retries are spent) becomes
    ``error`` naming ``what`` - the resource and the intent."""
    try:
        return call(**kwargs)
    except ClientError as exc:
        raise error(f"{what}: {error_code(exc)}: {exc}") from exc


def call_aws_unless_done(
    call: Callable[..., Any],
    what: str,
    done: Collection[str],
    *,
    error: type[GuardError] = AwsCallFailed,
    **kwargs: Any,
) -> bool:
    """Like `call_aws`, but an error code in ``done`` means a previous run already did it: False."""
    try:
        call(**kwargs)
    except ClientError as exc:
        if error_code(exc) in done:
            return False
        raise error(f"{what}: {error_code(exc)}: {exc}") from exc
    return True


# ---------------------------------------------------------------- what we read before changing anything


@dataclass(frozen=True)
class Registration:
    """The targets of one ELBv2 target group that are this instance (by id, or by IP for ip groups)."""

    target_group_arn: str
    targets: list[dict[str, Any]]
    protocol: str = ""

    @property
    def network_load_balancer(self) -> bool:
        return self.protocol in _NLB_PROTOCOLS

    def as_dict(self) -> dict[str, Any]:
        return {"arn": self.target_group_arn, "targets": self.targets, "protocol": self.protocol}


@dataclass
class ObservedInstance:
    """The instance as it was when Contain started: what the steps act on, and what release restores."""

    instance: Mapping[str, Any]
    disable_api_termination: bool
    shutdown_behavior: str
    association: dict[str, Any] | None
    our_groups: dict[tuple[str, str], Mapping[str, Any]] = field(default_factory=dict)
    # DescribeNetworkInterfaces' view of the attached interfaces (it alone says RequesterManaged).
    interfaces: dict[str, Mapping[str, Any]] = field(default_factory=dict)

    @property
    def instance_id(self) -> str:
        return str(self.instance["InstanceId"])

    @property
    def is_spot(self) -> bool:
        return self.instance.get("InstanceLifecycle") == SPOT

    def _not_owned(self, eni: Mapping[str, Any]) -> str | None:
        described = {**eni, **self.interfaces.get(eni["NetworkInterfaceId"], {})}
        return not_owned_reason(described)

    @property
    def network_interfaces(self) -> list[Mapping[str, Any]]:
        """The interfaces Contain isolates: those the instance owns."""
        return [eni for eni in self.instance.get("NetworkInterfaces", []) if self._not_owned(eni) is None]

    @property
    def skipped_interfaces(self) -> list[dict[str, str]]:
        return [
            {"eni": str(eni["NetworkInterfaceId"]), "reason": str(reason)}
            for eni in self.instance.get("NetworkInterfaces", [])
            if (reason := self._not_owned(eni)) is not None
        ]

    @property
    def auto_scaling_group(self) -> str | None:
        for tag in self.instance.get("Tags", []):
            if tag.get("Key") == ASG_NAME_TAG:
                return str(tag["Value"])
        return None

    @property
    def volumes(self) -> list[dict[str, Any]]:
        return [
            {
                "device_name": mapping["DeviceName"],
                "volume_id": mapping["Ebs"].get("VolumeId"),
                "delete_on_termination": bool(mapping["Ebs"].get("DeleteOnTermination", False)),
            }
            for mapping in self.instance.get("BlockDeviceMappings", [])
            if "Ebs" in mapping
        ]

    def prior_state(self) -> dict[str, Any]:
        """Enough to undo the quarantine: release.py reads exactly these keys. The target groups are found
        after isolation and kept apart (incident details, PRIOR_TARGET_GROUPS)."""
        return {
            "instance_id": self.instance_id,
            "instance_state": self.instance.get("State", {}).get("Name"),
            "instance_lifecycle": self.instance.get("InstanceLifecycle", "on-demand"),
            "network_interfaces": [
                {
                    "eni": eni["NetworkInterfaceId"],
                    "vpc_id": eni.get("VpcId"),
                    "groups": [group["GroupId"] for group in eni.get("Groups", [])],
                }
                for eni in self.network_interfaces
            ],
            "skipped_network_interfaces": self.skipped_interfaces,
            "iam_instance_profile": self.association,
            "auto_scaling_group": self.auto_scaling_group,
            "disable_api_termination": self.disable_api_termination,
            "instance_initiated_shutdown_behavior": self.shutdown_behavior,
            "volumes": self.volumes,
            "recorded_at": now_iso(),
        }


# Detect's first response (first_response.py) records the part of the prior state that isolation
# changes, in the lock's transaction; Contain completes it before its own first change.
PARTIAL = "partial"
"""Prior-state key: True while only Detect's part (the interfaces' groups) is recorded."""
RECORDED_BY = "recorded_by"


def partial_prior_state(instance: Mapping[str, Any]) -> dict[str, Any]:
    """The part of the prior state that the isolation changes, from a DescribeInstances description."""
    return {
        "instance_id": instance["InstanceId"],
        "network_interfaces": [
            {
                "eni": eni["NetworkInterfaceId"],
                "vpc_id": eni.get("VpcId"),
                "groups": [group["GroupId"] for group in eni.get("Groups", [])],
            }
            for eni in instance.get("NetworkInterfaces", [])
            if eni.get("InterfaceType") not in _NOT_OWNED_TYPES
        ],
        PARTIAL: True,
        RECORDED_BY: "detect",
        "recorded_at": now_iso(),
    }


def complete_prior_state(recorded: Mapping[str, Any], observed: Mapping[str, Any]) -> dict[str, Any]:
    """Contain's full observation, with the groups Detect recorded before it isolated: an interface Detect
    isolated shows our isolation group now. An interface attached since keeps the groups observed now."""
    before = {eni["eni"]: eni for eni in recorded.get("network_interfaces", [])}
    interfaces = [before.get(eni["eni"], eni) for eni in observed.get("network_interfaces", [])]
    return {**observed, "network_interfaces": interfaces, RECORDED_BY: "detect, completed by contain"}


def not_owned_reason(eni: Mapping[str, Any]) -> str | None:
    """Why Contain must leave this interface alone, or None when the instance owns it."""
    if eni.get("RequesterManaged"):
        return f"requester-managed (by {eni.get('RequesterId', 'an AWS service')}): EC2 lets nobody change it"
    if eni.get("InterfaceType") in _NOT_OWNED_TYPES:
        return f"{eni['InterfaceType']} interface: it carries other workloads' traffic"
    return None


def _tag_map(instance: Mapping[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in instance.get("Tags", []) if "Key" in t and "Value" in t}


def call_on_instance(call: Callable[..., _T], instance_id: str, what: str, **kwargs: Any) -> _T:
    """`call_aws` for calls about one instance: an unknown instance is InstanceNotFound."""
    try:
        return call(**kwargs)
    except ClientError as exc:
        if error_code(exc) in _INSTANCE_NOT_FOUND:
            raise InstanceNotFound(f"instance {instance_id} does not exist: {error_code(exc)}") from exc
        raise AwsCallFailed(f"instance {instance_id}: {what}: {error_code(exc)}: {exc}") from exc


def describe_instance(ec2: EC2Client, instance_id: str) -> Mapping[str, Any]:
    """The instance, unless it is gone or going (shutting-down, terminated): InstanceNotFound."""
    response = call_on_instance(ec2.describe_instances, instance_id, "describe", InstanceIds=[instance_id])
    instances = [i for reservation in response["Reservations"] for i in reservation["Instances"]]
    if not instances:
        raise InstanceNotFound(f"instance {instance_id} does not exist")
    instance: Mapping[str, Any] = instances[0]
    if instance.get("State", {}).get("Name") in _GONE_STATES:
        raise InstanceNotFound(f"instance {instance_id} is {instance['State']['Name']}")
    return instance


def _attribute(ec2: EC2Client, instance_id: str, name: str) -> Any:
    response: Any = call_on_instance(
        ec2.describe_instance_attribute, instance_id, f"read {name}", InstanceId=instance_id, Attribute=name
    )
    key = name[0].upper() + name[1:]
    return response.get(key, {}).get("Value")


def instance_profile_identity(iam: IAMClient, profile_arn: str) -> dict[str, Any]:
    """What a profile is now: its id (a profile deleted and made again under the same name has another)
    and the ARNs of its roles (the credentials a server with it gets).

    Raises
    ------
    ClientError, BotoCoreError
        When IAM cannot be read (NoSuchEntity when the profile is gone).
    """
    name = profile_arn.rsplit("/", 1)[-1]
    profile = iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]
    return {
        "id": profile.get("InstanceProfileId"),
        "roles": sorted(str(role["Arn"]) for role in profile.get("Roles", [])),
    }


def _profile_association(ec2: EC2Client, iam: IAMClient, instance_id: str) -> dict[str, Any] | None:
    response = call_aws(
        ec2.describe_iam_instance_profile_associations,
        f"instance {instance_id}: read instance profile association",
        Filters=[
            {"Name": "instance-id", "Values": [instance_id]},
            {"Name": "state", "Values": ["associated", "associating"]},
        ],
    )
    for association in response.get("IamInstanceProfileAssociations", []):
        recorded: dict[str, Any] = {
            "association_id": association["AssociationId"],
            "arn": association["IamInstanceProfile"]["Arn"],
        }
        # Release gives the profile back only while it holds the role it holds now; Contain must
        # isolate whatever happens, so a failed read is recorded (Release then refuses), never raised.
        try:
            recorded.update(instance_profile_identity(iam, recorded["arn"]))
        except (ClientError, BotoCoreError) as exc:
            recorded["identity_unknown"] = f"{type(exc).__name__}: {str(exc)[:200]}"
        return recorded
    return None


def _our_groups(ec2: EC2Client) -> dict[tuple[str, str], Mapping[str, Any]]:
    """Our passthrough and isolation groups in every VPC, found by tag (a few groups per account)."""
    found: dict[tuple[str, str], Mapping[str, Any]] = {}
    paginator = ec2.get_paginator("describe_security_groups")
    try:
        for page in paginator.paginate(
            Filters=[{"Name": f"tag:{TAG_ROLE}", "Values": [ROLE_PASSTHROUGH, ROLE_ISOLATION]}]
        ):
            for group in page["SecurityGroups"]:
                role = next((t["Value"] for t in group.get("Tags", []) if t["Key"] == TAG_ROLE), None)
                if role in GROUP_NAMES and group.get("GroupName") == GROUP_NAMES[role]:
                    found[(group.get("VpcId", ""), role)] = group
    except ClientError as exc:
        raise AwsCallFailed(f"isolation groups: describe: {error_code(exc)}: {exc}") from exc
    return found


def _attached_interfaces(ec2: EC2Client, instance_id: str) -> dict[str, Mapping[str, Any]]:
    response = call_aws(
        ec2.describe_network_interfaces,
        f"instance {instance_id}: read network interfaces",
        Filters=[{"Name": "attachment.instance-id", "Values": [instance_id]}],
    )
    return {eni["NetworkInterfaceId"]: eni for eni in response.get("NetworkInterfaces", [])}


def observe_instance(clients: Clients, instance_id: str) -> ObservedInstance:
    """Every read the isolation needs, concurrently: the time before isolation is one round trip.
    Target groups (one read per group) are found after isolating (`find_registrations`)."""
    # boto3 sessions are not thread-safe: create the clients here, share the (thread-safe) clients.
    ec2, iam = clients.ec2, clients.iam
    with ThreadPoolExecutor(max_workers=6) as pool:
        described = pool.submit(describe_instance, ec2, instance_id)
        termination = pool.submit(_attribute, ec2, instance_id, "disableApiTermination")
        shutdown = pool.submit(_attribute, ec2, instance_id, "instanceInitiatedShutdownBehavior")
        association = pool.submit(_profile_association, ec2, iam, instance_id)
        groups = pool.submit(_our_groups, ec2)
        interfaces = pool.submit(_attached_interfaces, ec2, instance_id)
        # The instance first: when it is gone, that is the error to report, not a failed attribute read.
        instance = described.result()
        return ObservedInstance(
            instance=instance,
            disable_api_termination=bool(termination.result()),
            shutdown_behavior=str(shutdown.result() or "stop"),
            association=association.result(),
            our_groups=groups.result(),
            interfaces=interfaces.result(),
        )


# ---------------------------------------------------------------- load balancers


def find_registrations(clients: Clients, instance: Mapping[str, Any]) -> list[Registration]:
    """The instance's registrations in every instance/ip target group, health read in parallel.

    A target group deleted between the listing and its health read is simply not one the instance is in.
    Targets still draining count: their connections are what connection termination closes.
    """
    elbv2 = clients.elbv2
    groups: list[tuple[str, str, str]] = []
    try:
        for page in elbv2.get_paginator("describe_target_groups").paginate():
            groups.extend(
                (tg["TargetGroupArn"], tg.get("TargetType", "instance"), tg.get("Protocol", ""))
                for tg in page["TargetGroups"]
                if tg.get("TargetType", "instance") in ("instance", "ip")
            )
    except ClientError as exc:
        raise AwsCallFailed(f"target groups: describe: {error_code(exc)}: {exc}") from exc

    def targets_of(arn: str) -> list[Any]:
        try:
            response = elbv2.describe_target_health(TargetGroupArn=arn)
        except ClientError as exc:
            if error_code(exc) in _TARGET_GROUP_GONE:
                return []
            raise AwsCallFailed(f"target group {arn}: describe health: {error_code(exc)}: {exc}") from exc
        return [d["Target"] for d in response["TargetHealthDescriptions"]]

    if not groups:
        return []
    with ThreadPoolExecutor(max_workers=_READ_WORKERS) as pool:
        found = list(pool.map(targets_of, [arn for arn, _, _ in groups]))
    instance_id = instance["InstanceId"]
    addresses = {
        address["PrivateIpAddress"]
        for eni in instance.get("NetworkInterfaces", [])
        for address in eni.get("PrivateIpAddresses", [])
        if "PrivateIpAddress" in address
    }
    registrations = []
    for (arn, kind, protocol), targets in zip(groups, found, strict=True):
        ours = [
            {key: target[key] for key in ("Id", "Port", "AvailabilityZone") if key in target}
            for target in targets
            if (kind == "instance" and target["Id"] == instance_id)
            or (kind == "ip" and target["Id"] in addresses)
        ]
        if ours:
            registrations.append(Registration(arn, ours, protocol))
    return registrations


def close_load_balancer_connections(
    clients: Clients, registrations: list[Registration], actions: list[str]
) -> list[str]:
    """Have each Network Load Balancer close the instance's connections once it is deregistered.

    Connections through an NLB are tracked whatever the security groups say, and a deregistered target
    that stays healthy keeps its established connections unless the group terminates them. The attribute
    belongs to the whole target group: it is turned on, never off (Release reports it). Returns the groups
    it was turned on for.
    """
    turned_on: list[str] = []
    elbv2 = clients.elbv2
    for registration in registrations:
        if not registration.network_load_balancer:
            continue
        arn = registration.target_group_arn
        try:
            attributes = {
                a["Key"]: a["Value"]
                for a in elbv2.describe_target_group_attributes(TargetGroupArn=arn)["Attributes"]
            }
            if attributes.get(CONNECTION_TERMINATION) == "true":
                continue
            elbv2.modify_target_group_attributes(
                TargetGroupArn=arn, Attributes=[{"Key": CONNECTION_TERMINATION, "Value": "true"}]
            )
        except ClientError as exc:
            if error_code(exc) in _TARGET_GROUP_GONE:
                actions.append(f"target group {arn} was deleted meanwhile")
                continue
            raise AwsCallFailed(f"target group {arn}: enable connection termination: {exc}") from exc
        delay = attributes.get("deregistration_delay.timeout_seconds", "300")
        actions.append(
            f"NLB target group {arn} now closes a deregistered target's connections ({delay} s delay)"
        )
        turned_on.append(arn)
    return turned_on


# ---------------------------------------------------------------- isolation


def _has_world_all_traffic(permissions: Iterable[Mapping[str, Any]]) -> tuple[bool, bool]:
    v4 = v6 = False
    for perm in permissions:
        if perm.get("IpProtocol") != "-1":
            continue
        v4 = v4 or any(r.get("CidrIp") == "0.0.0.0/0" for r in perm.get("IpRanges", []))
        v6 = v6 or any(r.get("CidrIpv6") == "::/0" for r in perm.get("Ipv6Ranges", []))
    return v4, v6


def _repair_group(ec2: EC2Client, group: Mapping[str, Any], role: str, actions: list[str]) -> None:
    """Make the group what its role says, whatever someone did to it since (or whatever a squatter made)."""
    group_id = group["GroupId"]
    if role == ROLE_ISOLATION:
        # Anyone who can add a rule here can reopen every quarantined instance: strip all of them.
        for direction, permissions in (
            ("ingress", group.get("IpPermissions", [])),
            ("egress", group.get("IpPermissionsEgress", [])),
        ):
            if not permissions:
                continue
            revoke = (
                ec2.revoke_security_group_ingress
                if direction == "ingress"
                else ec2.revoke_security_group_egress
            )
            call_aws_unless_done(
                revoke,
                f"isolation group {group_id}: revoke {direction} rules",
                {"InvalidPermission.NotFound"},
                GroupId=group_id,
                IpPermissions=list(permissions),
            )
            actions.append(f"removed every {direction} rule from isolation group {group_id}")
        return
    everything = {
        "IpProtocol": "-1",
        "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
        "Ipv6Ranges": [{"CidrIpv6": "::/0"}],
    }
    for direction, permissions in (
        ("ingress", group.get("IpPermissions", [])),
        ("egress", group.get("IpPermissionsEgress", [])),
    ):
        if all(_has_world_all_traffic(permissions)):
            continue
        authorize = (
            ec2.authorize_security_group_ingress
            if direction == "ingress"
            else ec2.authorize_security_group_egress
        )
        v4, v6 = _has_world_all_traffic(permissions)
        rule: dict[str, Any] = {"IpProtocol": "-1"}
        if not v4:
            rule["IpRanges"] = everything["IpRanges"]
        if not v6:
            rule["Ipv6Ranges"] = everything["Ipv6Ranges"]
        call_aws_unless_done(
            authorize,
            f"passthrough group {group_id}: allow all {direction}",
            {"InvalidPermission.Duplicate"},
            GroupId=group_id,
            IpPermissions=[rule],
        )


def _describe_group(
    ec2: EC2Client, vpc_id: str, *, group_id: str | None = None, name: str | None = None
) -> Any:
    filters = [{"Name": "vpc-id", "Values": [vpc_id]}]
    if name:
        filters.append({"Name": "group-name", "Values": [name]})
    kwargs: dict[str, Any] = {"Filters": filters}
    if group_id:
        kwargs["GroupIds"] = [group_id]
    for wait in (*_VISIBILITY_WAITS, None):
        try:
            groups = ec2.describe_security_groups(**kwargs)["SecurityGroups"]
        except ClientError as exc:
            if error_code(exc) in _NOT_YET_VISIBLE and wait is not None:
                time.sleep(wait)
                continue
            raise AwsCallFailed(f"VPC {vpc_id}: describe group {group_id or name}: {exc}") from exc
        if groups:
            return groups[0]
        if wait is None:
            break
        time.sleep(wait)
    raise IsolationFailed(f"VPC {vpc_id}: security group {group_id or name} cannot be found")


def _get_or_create_group(
    ec2: EC2Client,
    vpc_id: str,
    role: str,
    known: Mapping[tuple[str, str], Mapping[str, Any]],
    actions: list[str],
) -> str:
    group = known.get((vpc_id, role))
    if group is None:
        name = GROUP_NAMES[role]
        try:
            created = ec2.create_security_group(
                GroupName=name,
                Description=_GROUP_DESCRIPTIONS[role],
                VpcId=vpc_id,
                TagSpecifications=[
                    {"ResourceType": "security-group", "Tags": [{"Key": TAG_ROLE, "Value": role}]}
                ],
            )
            group = _describe_group(ec2, vpc_id, group_id=created["GroupId"])
            actions.append(f"created {role} group {created['GroupId']} in {vpc_id}")
        except ClientError as exc:
            if error_code(exc) != "InvalidGroup.Duplicate":
                raise IsolationFailed(f"VPC {vpc_id}: cannot create {name}: {exc}") from exc
            # Another quarantine created it a moment ago, or it lost its tag: adopt it by name.
            group = _describe_group(ec2, vpc_id, name=name)
            call_aws(
                ec2.create_tags,
                f"group {group['GroupId']}: tag as {role}",
                error=IsolationFailed,
                Resources=[group["GroupId"]],
                Tags=[{"Key": TAG_ROLE, "Value": role}],
            )
    _repair_group(ec2, group, role, actions)
    return str(group["GroupId"])


# The input of Contain's group preparation (issue 15): {"prepare_isolation_groups": {"vpc_ids": [...]}}.
PREPARE_ISOLATION_GROUPS = "prepare_isolation_groups"
# Detect's request to contain a quarantined server again (remediation/contain_again.py):
# {"contain_again": <the fields of a ContainRequest>}.
CONTAIN_AGAIN = "contain_again"
# A VPC id: "vpc-" then 8 or 17 hexadecimal digits
# (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_Vpc.html, VpcId).
_VPC_ID = re.compile(r"^vpc-(?:[0-9a-f]{8}|[0-9a-f]{17})$")
MAX_PREPARED_VPCS = 16


def prepare_request_vpcs(event: object) -> list[str] | None:
    """The VPC ids of a group preparation request, or None when ``event`` is not one (then it is a step of
    the workflow). Raises ValueError for a preparation request that is malformed."""
    if not isinstance(event, Mapping) or PREPARE_ISOLATION_GROUPS not in event:
        return None
    request = event[PREPARE_ISOLATION_GROUPS]
    vpc_ids = request.get("vpc_ids") if isinstance(request, Mapping) else None
    if (
        set(event) != {PREPARE_ISOLATION_GROUPS}
        or not isinstance(vpc_ids, list)
        or not 0 < len(vpc_ids) <= MAX_PREPARED_VPCS
        or not all(isinstance(v, str) and _VPC_ID.match(v) for v in vpc_ids)
    ):
        raise ValueError(f"malformed {PREPARE_ISOLATION_GROUPS} request: {str(event)[:300]}")
    return sorted(set(vpc_ids))


def prepare_isolation_groups(ec2: EC2Client, vpc_ids: Iterable[str]) -> list[str]:
    """Both isolation groups in each VPC, made or repaired as the first quarantine there would (the same
    code, idempotent: found by tag, adopted by name), ahead of the first incident. Detect asks for it when
    it first sees an in-scope instance (first_response.prepare_ahead), so the first incident in a VPC
    finds the groups and Detect's first response isolates on the event's path."""
    actions: list[str] = []
    known = _our_groups(ec2)
    for vpc_id in vpc_ids:
        with ThreadPoolExecutor(max_workers=2) as pool:
            made = [
                pool.submit(_get_or_create_group, ec2, vpc_id, role, known, actions)
                for role in (ROLE_PASSTHROUGH, ROLE_ISOLATION)
            ]
            for future in made:
                future.result()
    return actions


def _set_groups(ec2: EC2Client, eni_id: str, group_ids: list[str]) -> None:
    for wait in (*_VISIBILITY_WAITS, None):
        try:
            ec2.modify_network_interface_attribute(NetworkInterfaceId=eni_id, Groups=group_ids)
            return
        except ClientError as exc:
            if error_code(exc) in _NOT_YET_VISIBLE and wait is not None:
                time.sleep(wait)
                continue
            raise IsolationFailed(
                f"network interface {eni_id}: cannot set groups {group_ids}: {exc}"
            ) from exc


def _leave_passthrough(ec2: EC2Client, eni_id: str, isolation: str, fallback: list[str]) -> bool:
    """After a failed step of the swap the interface may be on the all-traffic group (a timeout can hide
    a change EC2 made). Put it on the isolation group, trying a few times; failing that, back on its own
    groups (never more open than before). True when it is on the isolation group. Raises nothing."""
    for wait in (*_LEAVE_PASSTHROUGH_WAITS, None):
        try:
            ec2.modify_network_interface_attribute(NetworkInterfaceId=eni_id, Groups=[isolation])
            return True
        except (ClientError, BotoCoreError):
            if wait is not None:
                time.sleep(wait)
    if fallback:
        with contextlib.suppress(ClientError, BotoCoreError):
            ec2.modify_network_interface_attribute(NetworkInterfaceId=eni_id, Groups=fallback)
    return False


def _swap(
    ec2: EC2Client, eni_id: str, passthrough: str, isolation: str, previous: list[str], actions: list[str]
) -> None:
    """The two-step swap of one interface. Whatever fails, it does not stay on the passthrough group."""
    fallback = [] if passthrough in previous else previous
    step = "passthrough"
    try:
        _set_groups(ec2, eni_id, [passthrough])
        step = "isolation"
        _set_groups(ec2, eni_id, [isolation])
        return
    except (GuardError, ClientError, BotoCoreError) as exc:
        # The AWS error itself when there is one: the handler tells a passing failure by it.
        failure: BaseException = exc.__cause__ if isinstance(exc, GuardError) and exc.__cause__ else exc
    if _leave_passthrough(ec2, eni_id, isolation, fallback):
        if step == "passthrough":
            # Isolated, but without passing through: connections tracked before may live until they
            # time out (the network-ACL depth and NLB connection termination cut those on their paths).
            actions.append(f"WARNING {eni_id}: passthrough step failed ({failure}); isolated directly")
        return
    raise IsolationFailed(
        f"network interface {eni_id}: {step} step failed ({failure}); the isolation group could not be set "
        f"either, so it was put back on {fallback or 'its groups'}"
    ) from failure


def isolate_network_interfaces(
    ec2: EC2Client, observed: ObservedInstance, actions: list[str]
) -> dict[str, str]:
    """Two-step swap on every interface the instance owns; returns VPC id -> isolation group id.

    Changing groups does not cut connections that are tracked. A group allowing all traffic both ways
    makes them untracked; replacing it with a group without rules then drops them at once.
    """
    for skipped in observed.skipped_interfaces:
        actions.append(f"WARNING {skipped['eni']} left as it is: {skipped['reason']}")
    by_vpc: dict[str, tuple[str, str]] = {}
    for eni in observed.network_interfaces:
        vpc_id = eni["VpcId"]
        if vpc_id not in by_vpc:
            # Both groups at once: the first quarantine in a VPC makes and repairs them side by side.
            with ThreadPoolExecutor(max_workers=2) as pool:
                made = [
                    pool.submit(_get_or_create_group, ec2, vpc_id, role, observed.our_groups, actions)
                    for role in (ROLE_PASSTHROUGH, ROLE_ISOLATION)
                ]
                by_vpc[vpc_id] = (made[0].result(), made[1].result())
        passthrough, isolation = by_vpc[vpc_id]
        current = [group["GroupId"] for group in eni.get("Groups", [])]
        if current == [isolation]:
            # Already isolated (a retry): passing through again would reopen it for a moment.
            actions.append(f"{eni['NetworkInterfaceId']} already isolated")
            continue
        _swap(ec2, eni["NetworkInterfaceId"], passthrough, isolation, current, actions)
        actions.append(f"isolated {eni['NetworkInterfaceId']} (was {', '.join(current) or 'no group'})")
    return {vpc: ids[1] for vpc, ids in by_vpc.items()}


def _isolation_problems(
    ec2: EC2Client, instance_id: str, isolation_by_vpc: Mapping[str, str]
) -> dict[str, tuple[str | None, list[str]]]:
    """ENI id -> (its VPC's isolation group, its groups now) for every owned ENI not isolated."""
    response = call_aws(
        ec2.describe_network_interfaces,
        f"instance {instance_id}: read back network interfaces",
        error=IsolationFailed,
        Filters=[{"Name": "attachment.instance-id", "Values": [instance_id]}],
    )
    problems: dict[str, tuple[str | None, list[str]]] = {}
    for eni in response["NetworkInterfaces"]:
        if not_owned_reason(eni) is not None:
            continue
        groups = [group["GroupId"] for group in eni.get("Groups", [])]
        expected = isolation_by_vpc.get(eni.get("VpcId", ""))
        if expected is None or groups != [expected]:
            problems[eni["NetworkInterfaceId"]] = (expected, groups)
    return problems


def _read_until_isolated(
    ec2: EC2Client, instance_id: str, isolation_by_vpc: Mapping[str, str]
) -> dict[str, tuple[str | None, list[str]]]:
    for wait in (*_VERIFY_WAITS, None):
        problems = _isolation_problems(ec2, instance_id, isolation_by_vpc)
        if not problems or wait is None:
            return problems
        time.sleep(wait)
    return problems  # pragma: no cover - the loop returns


def verify_isolated(ec2: EC2Client, instance_id: str, isolation_by_vpc: Mapping[str, str]) -> None:
    """Read every ENI attached now (one attached meanwhile included) and demand only our isolation group.

    EC2 is eventually consistent: a read right after the change may show the old groups, so it reads again
    with back-off before concluding. An interface still wrong then is set to the isolation group once more
    (never left on the passthrough group) and read again; only then is the isolation declared failed.
    """
    problems = _read_until_isolated(ec2, instance_id, isolation_by_vpc)
    if not problems:
        return
    fixable = {eni: expected for eni, (expected, _) in problems.items() if expected is not None}
    for eni_id, isolation in fixable.items():
        _leave_passthrough(ec2, eni_id, isolation, [])
    if fixable:
        problems = _read_until_isolated(ec2, instance_id, isolation_by_vpc)
    if problems:
        described = "; ".join(f"{eni} has {groups or 'no groups'}" for eni, (_, groups) in problems.items())
        raise IsolationFailed(f"instance {instance_id} is not isolated: {described}")


# ---------------------------------------------------------------- evidence protection and service


def protect_evidence(
    ec2: EC2Client, incident_id: str, observed: ObservedInstance, actions: list[str]
) -> None:
    """Keep the instance and its disks through any terminate or shutdown until evidence is taken.

    A Spot instance can have neither termination nor stop protection (EC2 refuses both), and EC2 may
    reclaim it at any time: what protects its evidence is that its volumes outlive it.
    """
    instance_id = observed.instance_id
    if observed.is_spot:
        actions.append(
            "Spot instance: no termination protection exists for it; its volumes outlive it instead"
        )
    elif not observed.disable_api_termination:
        call_aws(
            ec2.modify_instance_attribute,
            f"instance {instance_id}: enable termination protection",
            InstanceId=instance_id,
            DisableApiTermination={"Value": True},
        )
        actions.append("termination protection on")
    if observed.shutdown_behavior != "stop":
        call_aws(
            ec2.modify_instance_attribute,
            f"instance {instance_id}: shutdown behaviour stop",
            InstanceId=instance_id,
            # The Attribute/Value form: as valid in EC2, and the one the local runtime implements.
            Attribute="instanceInitiatedShutdownBehavior",
            Value="stop",
        )
        actions.append("a shutdown from inside now stops instead of terminating")
    keep = [v["device_name"] for v in observed.volumes if v["delete_on_termination"]]
    if keep:
        call_aws(
            ec2.modify_instance_attribute,
            f"instance {instance_id}: keep volumes {keep} on termination",
            InstanceId=instance_id,
            BlockDeviceMappings=[
                {"DeviceName": name, "Ebs": {"DeleteOnTermination": False}} for name in keep
            ],
        )
        actions.append(f"volumes {', '.join(keep)} survive termination")
    call_aws(
        ec2.create_tags,
        f"instance {instance_id}: tag quarantined",
        Resources=[instance_id],
        Tags=[{"Key": TAG_INCIDENT, "Value": incident_id}, {"Key": TAG_STATE, "Value": STATE_QUARANTINED}],
    )


def leave_auto_scaling_group(clients: Clients, observed: ObservedInstance, actions: list[str]) -> None:
    """Detach without lowering the desired capacity, so the group launches a fresh golden instance.

    Done right after isolation: the group's health check would otherwise replace the now unreachable
    instance by terminating it, and Auto Scaling ignores termination protection.
    """
    group = observed.auto_scaling_group
    if group is None:
        return
    try:
        clients.autoscaling.detach_instances(
            InstanceIds=[observed.instance_id],
            AutoScalingGroupName=group,
            ShouldDecrementDesiredCapacity=False,
        )
    except ClientError as exc:
        if error_code(exc) == "ValidationError" and "not part of" in str(exc):
            actions.append(f"already out of Auto Scaling group {group}")
            return
        raise AwsCallFailed(f"instance {observed.instance_id}: detach from group {group}: {exc}") from exc
    actions.append(f"detached from Auto Scaling group {group}; it launches a replacement")


def deregister_targets(
    clients: Clients, instance_id: str, registrations: list[Registration], actions: list[str]
) -> None:
    for registration in registrations:
        arn = registration.target_group_arn
        try:
            clients.elbv2.deregister_targets(TargetGroupArn=arn, Targets=registration.targets)  # type: ignore[arg-type]
        except ClientError as exc:
            if error_code(exc) in _TARGET_GROUP_GONE:
                actions.append(f"target group {arn} was deleted meanwhile")
                continue
            raise AwsCallFailed(
                f"instance {instance_id}: deregister from {arn}: {error_code(exc)}: {exc}"
            ) from exc
        actions.append(f"deregistered from {arn}")


def detach_instance_profile(ec2: EC2Client, observed: ObservedInstance, actions: list[str]) -> None:
    """No new credentials from the metadata service; ones already issued stay valid until they expire."""
    if observed.association is None:
        return
    if call_aws_unless_done(
        ec2.disassociate_iam_instance_profile,
        f"instance {observed.instance_id}: detach profile {observed.association['arn']}",
        {"InvalidAssociationID.NotFound"},
        AssociationId=observed.association["association_id"],
    ):
        actions.append(f"instance profile {observed.association['arn']} detached")


# ---------------------------------------------------------------- the step


def isolate_with_network_acls(
    ec2: EC2Client, ledger: IncidentLedger, incident_id: str, observed: ObservedInstance, actions: list[str]
) -> dict[str, Any]:
    """IsolationDepth=network-acl: deny the instance's addresses in the ACLs of its VPC's other subnets."""
    interfaces = observed.network_interfaces
    own_subnets = {str(eni.get("SubnetId")) for eni in interfaces}
    cidrs = instance_addresses(interfaces)
    vpcs = sorted({str(eni["VpcId"]) for eni in interfaces})
    outcome: dict[str, Any] = {"entries": [], "refused": [], "cut": []}

    def record(entries: list[dict[str, Any]]) -> None:
        # Before the entries exist: a crash between the two must not leave entries nobody removes.
        known = list(ledger.get(incident_id).details.get(ACL_DETAIL_KEY) or [])
        known += [e for e in entries if e not in known]
        ledger.record_detail(incident_id, ACL_DETAIL_KEY, known)

    for vpc_id in vpcs:
        added = deny_instance_addresses(ec2, vpc_id, own_subnets, cidrs, record, actions)
        for key in outcome:
            outcome[key] += added[key]
    return outcome


def quarantine_instance(
    clients: Clients,
    ledger: IncidentLedger,
    incident_id: str,
    instance_id: str,
    finding: dict[str, Any],
    *,
    isolation_depth: str = DEPTH_SECURITY_GROUPS,
) -> dict[str, Any]:
    """Contain one instance of an incident; safe to run again (a retry finds everything done).

    Parameters
    ----------
    clients:
        boto3 clients (ec2, autoscaling, elbv2).
    ledger:
        The incident ledger; the incident must exist.
    incident_id, instance_id:
        The incident and the instance it is about.
    finding:
        ``Finding.model_dump(mode="json")``; a port_opened finding names the rule to revoke.
    isolation_depth:
        ``security-groups`` (the two-step group swap), or ``network-acl`` (also deny entries for the
        instance's addresses in the network ACLs of its VPC's other subnets: see network_acl.py).

    Returns
    -------
    dict
        The Contain contract: instance_id, isolation_group_ids, network_interfaces (with the groups they
        had before the incident), skipped_network_interfaces, revoked_rules, removed_acl_entries,
        left_auto_scaling_group, deregistered_from, connection_termination_enabled, network_acl,
        profile_detached, spot, termination_protection, protected, actions.

    Raises
    ------
    InstanceNotFound
        The instance does not exist or is terminating.
    IsolationFailed
        An ENI could not be isolated, or still carries another group afterwards.
    AwsCallFailed
        Any other AWS refusal, after boto's retries.
    """
    if isolation_depth not in ISOLATION_DEPTHS:
        raise ValueError(f"isolation depth {isolation_depth!r} is not one of {ISOLATION_DEPTHS}")
    ec2 = clients.ec2
    with ThreadPoolExecutor(max_workers=1) as pool:
        recorded = pool.submit(ledger.get, incident_id)
        observed = observe_instance(clients, instance_id)
        recorded_prior = recorded.result().prior_state
    # First write wins in the ledger, so a retry cannot overwrite the real prior state with ours.
    # With it the launch source in force now, so Replace can refuse a golden image changed after this.
    launch = record_launch_source(clients, observed.auto_scaling_group, _tag_map(observed.instance))
    prior = {**observed.prior_state(), LAUNCH_SOURCE_KEY: launch}
    if recorded_prior is not None and recorded_prior.get(PARTIAL):
        # Detect isolated first and recorded the groups it replaced; the rest is observed here, before
        # this step changes anything.
        ledger.complete_prior_state(incident_id, complete_prior_state(recorded_prior, prior))
    else:
        ledger.record_prior_state(incident_id, prior)

    actions: list[str] = []
    isolation_by_vpc = isolate_network_interfaces(ec2, observed, actions)
    verify_isolated(ec2, instance_id, isolation_by_vpc)
    network_acl: dict[str, Any] | None = None
    if isolation_depth == DEPTH_NETWORK_ACL:
        network_acl = isolate_with_network_acls(ec2, ledger, incident_id, observed, actions)

    # Out of service. The load balancers first, while the instance is still registered everywhere (leaving
    # the Auto Scaling group deregisters it from the group's target groups too, API_DetachInstances): each
    # NLB must terminate its connections, and what it was in is kept before anything is deregistered (a
    # retry finds nothing registered).
    registrations = find_registrations(clients, observed.instance)
    recorded = ledger.record_detail_once(
        incident_id, PRIOR_TARGET_GROUPS, [registration.as_dict() for registration in registrations]
    )
    terminating = close_load_balancer_connections(clients, registrations, actions)
    deregister_targets(clients, instance_id, registrations, actions)
    leave_auto_scaling_group(clients, observed, actions)

    rules = offending_rules(finding)
    revoke_offending_rules(ec2, rules, actions)
    acl_entries = offending_acl_entries(finding)
    remove_offending_acl_entries(ec2, acl_entries, actions)
    protect_evidence(ec2, incident_id, observed, actions)
    detach_instance_profile(ec2, observed, actions)

    # On a retry the instance is already changed: report what it was, from the first record.
    incident = ledger.get(incident_id)
    prior = incident.prior_state or observed.prior_state()
    profile = prior.get("iam_instance_profile")
    spot = prior.get("instance_lifecycle") == SPOT
    result: dict[str, Any] = {
        "instance_id": instance_id,
        "isolation_group_ids": sorted(set(isolation_by_vpc.values())),
        "network_interfaces": [
            {"eni": eni["eni"], "previous_groups": eni["groups"]} for eni in prior["network_interfaces"]
        ],
        "skipped_network_interfaces": prior.get("skipped_network_interfaces", []),
        "revoked_rules": rules,
        "removed_acl_entries": acl_entries,
        "left_auto_scaling_group": prior.get("auto_scaling_group"),
        "deregistered_from": [tg["arn"] for tg in recorded],
        "connection_termination_enabled": terminating,
        "network_acl": (
            {**network_acl, "entries": incident.details.get(ACL_DETAIL_KEY, network_acl["entries"])}
            if network_acl is not None
            else None
        ),
        "profile_detached": profile["arn"] if profile else None,
        "spot": spot,
        # Spot: none exists; the volumes outliving the instance stand for it.
        "termination_protection": not spot,
        "protected": True,
        "actions": actions,
    }
    ledger.record_stage(incident_id, STAGE_CONTAINED, status=Status.CONTAINED, details=result)
    return result
