"""Contain: cut a mutated instance off the network first, then keep it as evidence and take it out of
service. Everything needed to undo it (release) is in the ledger before the first change."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, ConfigDict, Field

from immutable_guard.errors import AwsCallFailed, GuardError, InstanceNotFound, IsolationFailed, error_code
from immutable_guard.ledger import IncidentLedger, Status, now_iso
from immutable_guard.model import Finding
from immutable_guard.remediation.launch_source import PRIOR_STATE_KEY as LAUNCH_SOURCE_KEY
from immutable_guard.remediation.launch_source import record_launch_source
from immutable_guard.remediation.offending_rules import (
    offending_acl_entries,
    offending_rules,
    remove_offending_acl_entries,
    revoke_offending_rules,
)

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_elbv2 import ElasticLoadBalancingv2Client
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
_READ_WORKERS = 8

_T = TypeVar("_T")


class ContainRequest(BaseModel):
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

    def as_dict(self) -> dict[str, Any]:
        return {"arn": self.target_group_arn, "targets": self.targets}


@dataclass
class ObservedInstance:
    """The instance as it was when Contain started: what the steps act on, and what release restores."""

    instance: Mapping[str, Any]
    disable_api_termination: bool
    shutdown_behavior: str
    association: dict[str, Any] | None
    registrations: list[Registration]
    our_groups: dict[tuple[str, str], Mapping[str, Any]] = field(default_factory=dict)

    @property
    def instance_id(self) -> str:
        return str(self.instance["InstanceId"])

    @property
    def network_interfaces(self) -> list[Mapping[str, Any]]:
        return list(self.instance.get("NetworkInterfaces", []))

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
        """Enough to undo the quarantine: release.py reads exactly these keys."""
        return {
            "instance_id": self.instance_id,
            "instance_state": self.instance.get("State", {}).get("Name"),
            "network_interfaces": [
                {
                    "eni": eni["NetworkInterfaceId"],
                    "vpc_id": eni.get("VpcId"),
                    "groups": [group["GroupId"] for group in eni.get("Groups", [])],
                }
                for eni in self.network_interfaces
            ],
            "iam_instance_profile": self.association,
            "auto_scaling_group": self.auto_scaling_group,
            "target_groups": [registration.as_dict() for registration in self.registrations],
            "disable_api_termination": self.disable_api_termination,
            "instance_initiated_shutdown_behavior": self.shutdown_behavior,
            "volumes": self.volumes,
            "recorded_at": now_iso(),
        }


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


def _all_target_registrations(elbv2: ElasticLoadBalancingv2Client) -> list[tuple[str, str, list[Any]]]:
    """(arn, target type, registered targets) of every instance/ip target group, health read in parallel."""
    groups: list[tuple[str, str]] = []
    try:
        for page in elbv2.get_paginator("describe_target_groups").paginate():
            groups.extend(
                (tg["TargetGroupArn"], tg.get("TargetType", "instance"))
                for tg in page["TargetGroups"]
                if tg.get("TargetType", "instance") in ("instance", "ip")
            )
    except ClientError as exc:
        raise AwsCallFailed(f"target groups: describe: {error_code(exc)}: {exc}") from exc

    def health(arn: str) -> list[Any]:
        response = call_aws(
            elbv2.describe_target_health, f"target group {arn}: describe health", TargetGroupArn=arn
        )
        return [d["Target"] for d in response["TargetHealthDescriptions"]]

    if not groups:
        return []
    with ThreadPoolExecutor(max_workers=_READ_WORKERS) as pool:
        targets = list(pool.map(health, [arn for arn, _ in groups]))
    return [(arn, kind, found) for (arn, kind), found in zip(groups, targets, strict=True)]


def _instance_registrations(
    instance: Mapping[str, Any], registrations: list[tuple[str, str, list[Any]]]
) -> list[Registration]:
    instance_id = instance["InstanceId"]
    addresses = {
        address["PrivateIpAddress"]
        for eni in instance.get("NetworkInterfaces", [])
        for address in eni.get("PrivateIpAddresses", [])
        if "PrivateIpAddress" in address
    }
    found = []
    for arn, kind, targets in registrations:
        ours = [
            {key: target[key] for key in ("Id", "Port", "AvailabilityZone") if key in target}
            for target in targets
            if (kind == "instance" and target["Id"] == instance_id)
            or (kind == "ip" and target["Id"] in addresses)
        ]
        if ours:
            found.append(Registration(arn, ours))
    return found


def observe_instance(clients: Clients, instance_id: str) -> ObservedInstance:
    """Every read the quarantine needs, concurrently: the time before isolation is one round trip
    (two when target groups exist), not one per attribute and target group."""
    # boto3 sessions are not thread-safe: create the clients here, share the (thread-safe) clients.
    ec2, elbv2, iam = clients.ec2, clients.elbv2, clients.iam
    with ThreadPoolExecutor(max_workers=6) as pool:
        described = pool.submit(describe_instance, ec2, instance_id)
        termination = pool.submit(_attribute, ec2, instance_id, "disableApiTermination")
        shutdown = pool.submit(_attribute, ec2, instance_id, "instanceInitiatedShutdownBehavior")
        association = pool.submit(_profile_association, ec2, iam, instance_id)
        groups = pool.submit(_our_groups, ec2)
        registrations = pool.submit(_all_target_registrations, elbv2)
        # The instance first: when it is gone, that is the error to report, not a failed attribute read.
        instance = described.result()
        return ObservedInstance(
            instance=instance,
            disable_api_termination=bool(termination.result()),
            shutdown_behavior=str(shutdown.result() or "stop"),
            association=association.result(),
            registrations=_instance_registrations(instance, registrations.result()),
            our_groups=groups.result(),
        )


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


def _finish_isolation(ec2: EC2Client, eni_id: str, isolation: str, previous: list[str]) -> None:
    """Second step of the swap. The passthrough group allows all traffic: whatever fails here, the ENI
    must not stay on it. Try the isolation group once more, else put the previous groups back, then fail."""
    try:
        _set_groups(ec2, eni_id, [isolation])
        return
    except IsolationFailed as first:
        for fallback in ([isolation], previous):
            try:
                ec2.modify_network_interface_attribute(NetworkInterfaceId=eni_id, Groups=fallback)
            except ClientError:
                continue
            if fallback == [isolation]:
                return
            break
        raise first


def isolate_network_interfaces(
    ec2: EC2Client, observed: ObservedInstance, actions: list[str]
) -> dict[str, str]:
    """Two-step swap on every ENI; returns VPC id -> isolation group id.

    Changing groups does not cut connections that are tracked. A group allowing all traffic both ways
    makes them untracked; replacing it with a group without rules then drops them at once.
    """
    by_vpc: dict[str, tuple[str, str]] = {}
    for eni in observed.network_interfaces:
        vpc_id = eni["VpcId"]
        if vpc_id not in by_vpc:
            by_vpc[vpc_id] = (
                _get_or_create_group(ec2, vpc_id, ROLE_PASSTHROUGH, observed.our_groups, actions),
                _get_or_create_group(ec2, vpc_id, ROLE_ISOLATION, observed.our_groups, actions),
            )
        passthrough, isolation = by_vpc[vpc_id]
        current = [group["GroupId"] for group in eni.get("Groups", [])]
        if current == [isolation]:
            # Already isolated (a retry): passing through again would reopen it for a moment.
            actions.append(f"{eni['NetworkInterfaceId']} already isolated")
            continue
        _set_groups(ec2, eni["NetworkInterfaceId"], [passthrough])
        _finish_isolation(ec2, eni["NetworkInterfaceId"], isolation, current)
        actions.append(f"isolated {eni['NetworkInterfaceId']} (was {', '.join(current) or 'no group'})")
    return {vpc: ids[1] for vpc, ids in by_vpc.items()}


def verify_isolated(ec2: EC2Client, instance_id: str, isolation_by_vpc: Mapping[str, str]) -> None:
    """Read every ENI attached now (one attached meanwhile included) and demand only our isolation group."""
    response = call_aws(
        ec2.describe_network_interfaces,
        f"instance {instance_id}: read back network interfaces",
        error=IsolationFailed,
        Filters=[{"Name": "attachment.instance-id", "Values": [instance_id]}],
    )
    problems = []
    for eni in response["NetworkInterfaces"]:
        groups = [group["GroupId"] for group in eni.get("Groups", [])]
        expected = isolation_by_vpc.get(eni.get("VpcId", ""))
        if expected is None or groups != [expected]:
            problems.append(f"{eni['NetworkInterfaceId']} has {groups or 'no groups'}")
    if problems:
        raise IsolationFailed(f"instance {instance_id} is not isolated: {'; '.join(problems)}")


# ---------------------------------------------------------------- evidence protection and service


def protect_evidence(
    ec2: EC2Client, incident_id: str, observed: ObservedInstance, actions: list[str]
) -> None:
    """Keep the instance and its disks through any terminate or shutdown until evidence is taken."""
    instance_id = observed.instance_id
    if not observed.disable_api_termination:
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


def deregister_targets(clients: Clients, observed: ObservedInstance, actions: list[str]) -> None:
    for registration in observed.registrations:
        call_aws(
            clients.elbv2.deregister_targets,
            f"instance {observed.instance_id}: deregister from {registration.target_group_arn}",
            TargetGroupArn=registration.target_group_arn,
            Targets=registration.targets,
        )
        actions.append(f"deregistered from {registration.target_group_arn}")


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


def quarantine_instance(
    clients: Clients,
    ledger: IncidentLedger,
    incident_id: str,
    instance_id: str,
    finding: dict[str, Any],
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

    Returns
    -------
    dict
        The Contain contract: instance_id, isolation_group_ids, network_interfaces (with the groups they
        had before the incident), revoked_rules, removed_acl_entries, left_auto_scaling_group,
        deregistered_from, profile_detached, protected, actions.

    Raises
    ------
    InstanceNotFound
        The instance does not exist or is terminating.
    IsolationFailed
        An ENI could not be isolated, or still carries another group afterwards.
    AwsCallFailed
        Any other AWS refusal, after boto's retries.
    """
    ec2 = clients.ec2
    observed = observe_instance(clients, instance_id)
    # First write wins in the ledger, so a retry cannot overwrite the real prior state with ours.
    # With it the launch source in force now, so Replace can refuse a golden image changed after this.
    launch = record_launch_source(clients, observed.auto_scaling_group, _tag_map(observed.instance))
    ledger.record_prior_state(incident_id, {**observed.prior_state(), LAUNCH_SOURCE_KEY: launch})

    actions: list[str] = []
    isolation_by_vpc = isolate_network_interfaces(ec2, observed, actions)
    verify_isolated(ec2, instance_id, isolation_by_vpc)

    leave_auto_scaling_group(clients, observed, actions)
    rules = offending_rules(finding)
    revoke_offending_rules(ec2, rules, actions)
    acl_entries = offending_acl_entries(finding)
    remove_offending_acl_entries(ec2, acl_entries, actions)
    protect_evidence(ec2, incident_id, observed, actions)
    deregister_targets(clients, observed, actions)
    detach_instance_profile(ec2, observed, actions)

    # On a retry the instance is already changed: report what it was, from the first record.
    prior = ledger.get(incident_id).prior_state or observed.prior_state()
    profile = prior.get("iam_instance_profile")
    result: dict[str, Any] = {
        "instance_id": instance_id,
        "isolation_group_ids": sorted(set(isolation_by_vpc.values())),
        "network_interfaces": [
            {"eni": eni["eni"], "previous_groups": eni["groups"]} for eni in prior["network_interfaces"]
        ],
        "revoked_rules": rules,
        "removed_acl_entries": acl_entries,
        "left_auto_scaling_group": prior.get("auto_scaling_group"),
        "deregistered_from": [tg["arn"] for tg in prior.get("target_groups", [])],
        "profile_detached": profile["arn"] if profile else None,
        "protected": True,
        "actions": actions,
    }
    ledger.record_stage(incident_id, STAGE_CONTAINED, status=Status.CONTAINED, details=result)
    return result
