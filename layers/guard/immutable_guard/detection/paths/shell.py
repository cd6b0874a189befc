"""Shell and code on a server without touching its attributes: SSM Automation and State Manager
associations, EC2 Instance Connect Endpoint tunnels and endpoints, and the serial console switch."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Final

from botocore.exceptions import BotoCoreError, ClientError

from immutable_guard.detection.events import quote
from immutable_guard.detection.readers import (
    GUARD_WIRING_EVIDENCE_KEY,
    SSM_TAG_TARGETS_EVIDENCE_KEY,
    Facts,
    Handler,
    as_dict,
    clip,
    first_of,
    int_of,
    items_of,
    strings_of,
    text_of,
    unique,
)
from immutable_guard.detection.scope_resolvers import Resolver
from immutable_guard.errors import ScopeResolutionFailed
from immutable_guard.model import Kind, Severity
from immutable_guard.settings import GuardIdentity

if TYPE_CHECKING:
    from immutable_guard.clients import Clients
    from immutable_guard.detection.events import CloudTrailDetail

_SSM: Final = "ssm.amazonaws.com"
_EC2: Final = "ec2.amazonaws.com"
_EIC: Final = "ec2-instance-connect.amazonaws.com"

# SSM documents that only read a node: an association of one runs no code of the caller's, but a
# second inventory association silences the guard's (a node runs no inventory when two target it).
_INVENTORY_DOCUMENT: Final = "AWS-GatherSoftwareInventory"

# ---------------------------------------------------------------- SSM targets


@dataclass
class SsmTargets:
    """What an SSM `Targets` list (and the older `InstanceIds`) selects.

    `instance_ids` are named outright; `resolvable` are selectors scope resolves through EC2 filters
    (`tag:<key>`, `tag-key`, `InstanceIds=*`); `unresolvable` are selectors it cannot (a resource
    group, an unknown key), so a finding with them alerts when nothing else resolves.
    """

    instance_ids: list[str] = field(default_factory=list)
    resolvable: list[dict[str, Any]] = field(default_factory=list)
    unresolvable: list[dict[str, Any]] = field(default_factory=list)

    def descriptors(self) -> list[str]:
        """The selectors as resource ids ("tag:Role=web", "resource-groups:Name=prod"), so `explain`
        and alerts show what was targeted and change keys tell two selections apart."""
        return [
            f"{target['key']}={','.join(target['values'])}"[:256]
            for target in [*self.resolvable, *self.unresolvable]
        ]

    def evidence(self) -> dict[str, Any]:
        found: dict[str, Any] = {}
        if self.resolvable:
            found[SSM_TAG_TARGETS_EVIDENCE_KEY] = clip(self.resolvable)
        if self.unresolvable:
            found["other_targets"] = clip(self.unresolvable)
        return found


# Keys that narrow another selector rather than select nodes themselves.
_FILTER_KEYS: Final = frozenset({"resource-groups:resourcetypefilters"})


def read_ssm_targets(targets: object, *instance_lists: object) -> SsmTargets:
    """Reads SSM targets as CloudTrail records them ([{"key": ..., "values": [...]}], camelCase).

    Parameters
    ----------
    targets:
        The request's `targets` (or `Targets`) value.
    instance_lists:
        Other places that name instances outright (`instanceIds`, `instanceId`).
    """
    found = SsmTargets()
    for value in instance_lists:
        found.instance_ids.extend(strings_of(value))
    for raw in items_of(targets):
        target = as_dict(raw)
        key = (text_of(first_of(target, "key", "Key")) or "")[:128]
        values = strings_of(first_of(target, "values", "Values"))[:50]
        lowered = key.lower()
        if lowered in _FILTER_KEYS:
            continue
        if lowered == "instanceids":
            if "*" in values:
                # Every managed node of the account (State Manager's documented "all instances").
                found.resolvable.append({"key": "InstanceIds", "values": ["*"]})
            found.instance_ids.extend(v for v in values if v != "*")
        elif (key.startswith("tag:") and len(key) > 4) or lowered == "tag-key":
            found.resolvable.append({"key": key if key.startswith("tag:") else "tag-key", "values": values})
        elif lowered == "parametervalues":
            # Automation: the values of the target parameter, instance ids when it is an instance.
            found.instance_ids.extend(v for v in values if v.startswith("i-"))
        else:
            found.unresolvable.append({"key": key, "values": values})
    found.instance_ids = list(unique(found.instance_ids))
    return found


def _instance_parameters(parameters: object) -> list[str]:
    """Instance ids among a document's parameters ({"InstanceId": ["i-..."]}); CloudTrail may hide them."""
    ids: list[str] = []
    for name, value in as_dict(parameters).items():
        if "instance" in str(name).lower():
            ids.extend(v for v in strings_of(value) if v.startswith(("i-", "mi-")))
    return ids


def _shell_facts(
    what: str, document: str | None, targets: SsmTargets, evidence: dict[str, Any], unresolved_alerts: bool
) -> Facts:
    named = ", ".join(targets.instance_ids[:5]) or ", ".join(targets.descriptors()[:3]) or "no named target"
    return Facts(
        Kind.SHELL_ACCESS,
        Severity.HIGH,
        f"{what} {quote(document or '?')} targets {named}.",
        resource_ids=[*targets.instance_ids, *targets.descriptors()],
        instance_ids=targets.instance_ids,
        evidence={"document_name": clip(document), **evidence, **targets.evidence()},
        alert_if_unresolved=unresolved_alerts,
    )


# ---------------------------------------------------------------- SSM Automation


def _start_automation_execution(detail: CloudTrailDetail) -> Facts:
    request = detail.request_parameters or {}
    document = text_of(first_of(request, "documentName", "DocumentName"))
    parameters = first_of(request, "parameters", "Parameters")
    target_maps = items_of(first_of(request, "targetMaps", "TargetMaps"))
    targets = read_ssm_targets(
        first_of(request, "targets", "Targets"),
        _instance_parameters(parameters),
        *[value for entry in target_maps for value in as_dict(entry).values()],
    )
    # Parameters hidden (or not a map) and no targets: it may run on any instance; say so.
    hidden = not isinstance(parameters, dict) and not targets.resolvable and not targets.instance_ids
    return _shell_facts(
        "Automation runbook",
        document,
        targets,
        {
            "execution_id": clip(
                text_of(first_of(as_dict(detail.response_elements), "automationExecutionId"))
            ),
            "target_parameter_name": clip(
                text_of(first_of(request, "targetParameterName", "TargetParameterName"))
            ),
            "mode": clip(text_of(first_of(request, "mode", "Mode"))),
            "parameters": clip(parameters),
        },
        unresolved_alerts=bool(targets.unresolvable) or hidden,
    )


# ---------------------------------------------------------------- State Manager associations


def _association(value: object) -> dict[str, Any]:
    """The association a response describes: {"associationDescription": {...}}."""
    return as_dict(first_of(as_dict(value), "associationDescription", "AssociationDescription"))


def _is_guard_association(association_id: str | None, name: str | None, identity: GuardIdentity) -> bool:
    if association_id and association_id == identity.guard_inventory_association_id:
        return True
    # template.yaml names it "<stack name>-inventory".
    return bool(name) and name == f"{identity.guard_stack_name}-inventory"


def _guard_association_changed(verb: str, association_id: str | None, evidence: dict[str, Any]) -> Facts:
    return Facts(
        Kind.DETECTION_DISABLED,
        Severity.CRITICAL,
        f"Immutable Guard's inventory association {quote(association_id or '?')} {verb}: changed files on "
        "immutable servers may no longer be seen.",
        resource_ids=[association_id],
        evidence={"sensor": "inventory association", "target": clip(association_id), **evidence},
    )


def _association_entry(entry: dict[str, Any], response: dict[str, Any], verb: str) -> Facts:
    """One created or updated association (request entry, with the response's description)."""
    described = _association(response)
    document = text_of(first_of(entry, "name", "Name")) or text_of(described.get("name"))
    association_id = text_of(first_of(entry, "associationId", "AssociationId")) or text_of(
        described.get("associationId")
    )
    association_name = text_of(first_of(entry, "associationName", "AssociationName")) or text_of(
        described.get("associationName")
    )
    identity = GuardIdentity.from_env()
    evidence = {
        "association_id": clip(association_id),
        "association_name": clip(association_name),
        "schedule": clip(text_of(first_of(entry, "scheduleExpression", "ScheduleExpression"))),
        "parameters": clip(first_of(entry, "parameters", "Parameters")),
    }
    if _is_guard_association(association_id, association_name, identity):
        return _guard_association_changed(verb, association_id, evidence)
    # An update names only what it changes; the response holds the targets it now has.
    raw_targets = first_of(entry, "targets", "Targets")
    if raw_targets is None:
        raw_targets = described.get("targets")
    targets = read_ssm_targets(
        raw_targets,
        first_of(entry, "instanceId", "InstanceId"),
        described.get("instanceId"),
        _instance_parameters(first_of(entry, "parameters", "Parameters")),
    )
    if document == _INVENTORY_DOCUMENT:
        # Read-only, but a second inventory association stops inventory on every node both target.
        return Facts(
            Kind.DETECTION_DISABLED,
            Severity.HIGH,
            f"Inventory association {quote(association_name or association_id or '?')} {verb} for "
            f"{', '.join(targets.descriptors() + targets.instance_ids) or 'unnamed targets'}: a node "
            "that two inventory associations target runs neither, so file changes may go unseen.",
            resource_ids=[association_id],
            evidence={"sensor": "inventory association", **evidence, **targets.evidence()},
        )
    return _shell_facts(
        f"State Manager association {verb} with",
        document,
        targets,
        evidence,
        unresolved_alerts=bool(targets.unresolvable),
    )


def _create_association(detail: CloudTrailDetail) -> Facts:
    return _association_entry(detail.request_parameters or {}, detail.response_elements or {}, "created")


def _update_association(detail: CloudTrailDetail) -> Facts:
    return _association_entry(detail.request_parameters or {}, detail.response_elements or {}, "updated")


def _create_association_batch(detail: CloudTrailDetail) -> Facts:
    request = detail.request_parameters or {}
    findings = [
        _association_entry(as_dict(entry), {}, "created")
        for entry in items_of(first_of(request, "entries", "Entries"))[:50]
    ]
    if not findings:
        return _association_entry({}, {}, "created")
    # The most severe entry speaks for the batch; every entry's targets are resolved.
    worst = max(findings, key=lambda f: (f.kind is Kind.DETECTION_DISABLED, _RANK[f.severity]))
    if worst.kind is Kind.DETECTION_DISABLED:
        return worst
    return Facts(
        Kind.SHELL_ACCESS,
        Severity.HIGH,
        f"{len(findings)} State Manager associations created: {worst.summary}",
        resource_ids=[r for f in findings for r in f.resource_ids],
        instance_ids=[i for f in findings for i in f.instance_ids],
        evidence=_merged_evidence(findings),
        alert_if_unresolved=any(f.alert_if_unresolved for f in findings),
    )


_RANK: Final = {Severity.LOW: 0, Severity.MEDIUM: 1, Severity.HIGH: 2, Severity.CRITICAL: 3}


def _merged_evidence(findings: Iterable[Facts]) -> dict[str, Any]:
    merged: dict[str, Any] = {"entries": []}
    for facts in findings:
        for key in (SSM_TAG_TARGETS_EVIDENCE_KEY, "other_targets"):
            if key in facts.evidence:
                merged.setdefault(key, []).extend(facts.evidence[key])
        merged["entries"].append({"document_name": facts.evidence.get("document_name")})
    return merged


def _delete_association(detail: CloudTrailDetail) -> Facts:
    request = detail.request_parameters or {}
    association_id = text_of(first_of(request, "associationId", "AssociationId"))
    identity = GuardIdentity.from_env()
    if _is_guard_association(association_id, None, identity):
        return _guard_association_changed("deleted", association_id, {"association_id": association_id})
    target = association_id or text_of(first_of(request, "name", "Name"))
    evidence = {"sensor": "association", "target": clip(target)}
    if identity.guard_inventory_association_id is None:
        # The guard made no inventory association of its own (or, offline, its id is unknown): the one
        # the operator runs instead may be this one, and the record no longer says which it was.
        return Facts(
            Kind.DETECTION_DISABLED,
            Severity.HIGH,
            f"State Manager association {quote(target or '?')} deleted: if it collected the inventory "
            "Immutable Guard watches, changed files on immutable servers may no longer be seen.",
            resource_ids=[target],
            evidence=evidence,
        )
    # Deleting someone else's association runs nothing on any server.
    return Facts(
        Kind.DETECTION_DISABLED,
        Severity.LOW,
        f"State Manager association {quote(target or '?')} deleted; it is not Immutable Guard's.",
        resource_ids=[target],
        evidence={**evidence, GUARD_WIRING_EVIDENCE_KEY: False},
    )


# ---------------------------------------------------------------- EC2 Instance Connect Endpoint


def _open_tunnel(detail: CloudTrailDetail) -> Facts:
    request = detail.request_parameters or {}
    endpoint_id = text_of(first_of(request, "instanceConnectEndpointId", "InstanceConnectEndpointId"))
    private_ip = text_of(first_of(request, "privateIpAddress", "PrivateIpAddress"))
    instance_id = text_of(first_of(request, "instanceId", "InstanceId"))
    port = int_of(first_of(request, "remotePort", "RemotePort"))
    tunnel = f"{endpoint_id}/{private_ip}" if endpoint_id and private_ip and _is_ip(private_ip) else None
    return Facts(
        Kind.SHELL_ACCESS,
        Severity.HIGH,
        f"Tunnel opened through Instance Connect Endpoint {endpoint_id or '?'} to "
        f"{instance_id or private_ip or 'an unnamed address'} port {port if port is not None else '?'}.",
        resource_ids=[instance_id, tunnel],
        instance_ids=[instance_id],
        evidence={
            "instance_connect_endpoint_id": clip(endpoint_id),
            "private_ip_address": clip(private_ip),
            "remote_port": port,
            "max_tunnel_duration": int_of(first_of(request, "maxTunnelDuration", "MaxTunnelDuration")),
        },
        # The address may belong to no instance any more (or the endpoint be gone): a person checks.
        alert_if_unresolved=True,
    )


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _create_instance_connect_endpoint(detail: CloudTrailDetail) -> Facts:
    request = as_dict(first_of(detail.request_parameters or {}, "CreateInstanceConnectEndpointRequest")) or (
        detail.request_parameters or {}
    )
    response = as_dict(
        first_of(detail.response_elements or {}, "CreateInstanceConnectEndpointResponse")
    ) or as_dict(detail.response_elements)
    endpoint = as_dict(first_of(response, "instanceConnectEndpoint", "InstanceConnectEndpoint"))
    subnet_id = text_of(first_of(request, "SubnetId", "subnetId")) or text_of(endpoint.get("subnetId"))
    endpoint_id = text_of(endpoint.get("instanceConnectEndpointId"))
    vpc_id = text_of(endpoint.get("vpcId"))
    # The endpoint changes no server: it opens a way to reach any of its VPC's instances that their
    # groups admit. The tunnels through it (OpenTunnel) are what reach a server, and are remediated;
    # the endpoint itself is alerted, never resolved to a VPC's worth of instances to replace.
    return Facts(
        Kind.NETWORK_PATH_CHANGED,
        Severity.HIGH,
        f"Instance Connect Endpoint {endpoint_id or '?'} created in subnet {subnet_id or '?'}"
        f"{f' of {vpc_id}' if vpc_id else ''}: it opens a way in to the VPC's instances without a public "
        "address.",
        evidence={
            "instance_connect_endpoint_id": endpoint_id,
            "subnet_id": subnet_id,
            "vpc_id": vpc_id,
            "preserve_client_ip": clip(first_of(request, "PreserveClientIp", "preserveClientIp")),
            "security_group_ids": clip(first_of(request, "SecurityGroupId", "SecurityGroupIds")),
        },
        alert_if_unresolved=True,
    )


# ---------------------------------------------------------------- serial console


def _enable_serial_console_access(detail: CloudTrailDetail) -> Facts:
    response = as_dict(first_of(detail.response_elements or {}, "EnableSerialConsoleAccessResponse"))
    return Facts(
        Kind.SHELL_ACCESS,
        Severity.HIGH,
        f"EC2 serial console access enabled for the account in {detail.aws_region or 'this region'}: any "
        "instance's console can now be reached by whoever may push a serial console key.",
        evidence={"serial_console_access_enabled": response.get("serialConsoleAccessEnabled")},
        # It names no instance: an account-level alert (each later key push is remediated on its own).
        alert_if_unresolved=True,
    )


# ---------------------------------------------------------------- resolving a private address

REMOTE_HOST_PREFIX: Final = "remote-host:"
"""Resource id of a Session Manager port forward's remote host: "remote-host:<address>@<jump host>"."""


def remote_host_id(address: str | None, jump_host: str | None) -> str | None:
    """The resource id of a forwarded-to private address, or None when it is not an IP address (a DNS
    name cannot be resolved to an instance here)."""
    if not address or not _is_ip(address):
        return None
    return f"{REMOTE_HOST_PREFIX}{address}@{jump_host or ''}"


def _owners_by_vpc(clients: Clients, address: str, through: str) -> dict[str, list[str]]:
    owners: dict[str, list[str]] = {}
    try:
        paginator = clients.ec2.get_paginator("describe_network_interfaces")
        by_address: list[Any] = [{"Name": "addresses.private-ip-address", "Values": [address]}]
        for page in paginator.paginate(Filters=by_address):
            for eni in page.get("NetworkInterfaces", []):
                owner = eni.get("Attachment", {}).get("InstanceId")
                if owner:
                    owners.setdefault(eni.get("VpcId", ""), []).append(owner)
    except (ClientError, BotoCoreError) as exc:
        raise ScopeResolutionFailed(
            f"could not resolve the instance at {address} behind {through}: {type(exc).__name__}"
        ) from exc
    return owners


def _instances_at(
    clients: Clients, address: str, through: str, vpc_of: Callable[[], str | None]
) -> list[str]:
    """The instances holding a private address. Private addresses repeat across VPCs: when the address
    is held in more than one, only the VPC `vpc_of` names counts; when that cannot be learnt, nothing is
    resolved and the finding is alerted (or judged on its other instances) instead of guessed."""
    owners = _owners_by_vpc(clients, address, through)
    if len(owners) == 1:
        return next(iter(owners.values()))
    return owners.get(vpc_of() or "", []) if owners else []


def _tunnel_instances(clients: Clients, tunnels: list[str]) -> list[str]:
    """The instances behind "eice-.../10.0.1.5" ids, in the endpoint's VPC."""
    found: list[str] = []
    for tunnel in tunnels:
        endpoint_id, _, address = tunnel.partition("/")
        found += _instances_at(clients, address, endpoint_id, partial(_endpoint_vpc, clients, endpoint_id))
    return found


def _remote_host_instances(clients: Clients, hosts: list[str]) -> list[str]:
    """The instances behind "remote-host:10.0.1.5@i-jump" ids, in the jump host's VPC."""
    found: list[str] = []
    for host in hosts:
        address, _, jump_host = host.removeprefix(REMOTE_HOST_PREFIX).partition("@")
        vpc_of = partial(_instance_vpc, clients, jump_host)
        found += _instances_at(clients, address, jump_host or "a session", vpc_of)
    return found


def _instance_vpc(clients: Clients, instance_id: str) -> str | None:
    if not instance_id.startswith("i-"):
        return None
    try:
        reservations = clients.ec2.describe_instances(InstanceIds=[instance_id]).get("Reservations", [])
    except ClientError as exc:
        if "NotFound" in exc.response.get("Error", {}).get("Code", ""):
            return None
        raise ScopeResolutionFailed(f"could not describe jump host {instance_id}") from exc
    except BotoCoreError as exc:
        raise ScopeResolutionFailed(f"could not describe jump host {instance_id}") from exc
    for reservation in reservations:
        for instance in reservation.get("Instances", []):
            if instance.get("VpcId"):
                return instance["VpcId"]
    return None


def _endpoint_vpc(clients: Clients, endpoint_id: str) -> str | None:
    """The endpoint's VPC, or None when it is gone (the tunnel is then resolved by address alone)."""
    try:
        response = clients.ec2.describe_instance_connect_endpoints(InstanceConnectEndpointIds=[endpoint_id])
    except ClientError as exc:
        if "NotFound" in exc.response.get("Error", {}).get("Code", ""):
            return None
        raise ScopeResolutionFailed(
            f"could not describe Instance Connect Endpoint {endpoint_id}: "
            f"{exc.response.get('Error', {}).get('Code', 'error')}"
        ) from exc
    except BotoCoreError as exc:
        raise ScopeResolutionFailed(
            f"could not describe Instance Connect Endpoint {endpoint_id}: {type(exc).__name__}"
        ) from exc
    for endpoint in response.get("InstanceConnectEndpoints", []):
        if endpoint.get("VpcId"):
            return endpoint["VpcId"]
    return None


HANDLERS: Final[dict[tuple[str, str], Handler]] = {
    (_SSM, "StartAutomationExecution"): _start_automation_execution,
    (_SSM, "CreateAssociation"): _create_association,
    (_SSM, "UpdateAssociation"): _update_association,
    (_SSM, "CreateAssociationBatch"): _create_association_batch,
    (_SSM, "DeleteAssociation"): _delete_association,
    (_EIC, "OpenTunnel"): _open_tunnel,
    (_EC2, "CreateInstanceConnectEndpoint"): _create_instance_connect_endpoint,
    (_EC2, "EnableSerialConsoleAccess"): _enable_serial_console_access,
}
"""(eventSource, eventName) -> handler, for the CloudTrail records of this path."""

RESOLVERS: Final[tuple[Resolver, ...]] = (
    Resolver(
        name="instance connect tunnel",
        applies_to=lambda rid: rid.startswith("eice-") and "/" in rid,
        find_instances=_tunnel_instances,
    ),
    Resolver(
        name="port forward to a remote host",
        applies_to=lambda rid: rid.startswith(REMOTE_HOST_PREFIX),
        find_instances=_remote_host_instances,
    ),
)
"""A tunnel or a port forward names a private address: the instance holding it."""
