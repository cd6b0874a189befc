"""Turns one parsed event into a Finding: what kind of mutation, how severe, who did it, and what it
names. Request shapes differ per API (EC2's query shape, wrapped requests, SSM's JSON), so every
field is read defensively: a surprising shape yields less evidence, never a crash."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from immutable_guard.detection import paths
from immutable_guard.detection.config import CONFIG_HANDLERS
from immutable_guard.detection.events import (
    CloudTrailEvent,
    ParsedEvent,
    quote,
    record_account,
    record_region,
)
from immutable_guard.detection.paths.shell import read_ssm_targets, remote_host_id
from immutable_guard.detection.readers import (
    Facts,
    as_dict,
    clip,
    describe_permissions,
    describe_ports,
    first_of,
    int_of,
    is_world,
    items_of,
    permission,
    port_severity,
    protocol_of,
    strings_of,
    text_of,
    unique,
)
from immutable_guard.errors import InvalidEvent
from immutable_guard.model import Actor, Finding, Kind, Severity, Source

# ---------------------------------------------------------------- port opened


def _ip_permissions(request: dict[str, Any], direction: str) -> list[dict[str, Any]]:
    """Permissions from EC2's query shape: ipPermissions.items[].{ipRanges,ipv6Ranges,...}.items[]."""
    found: list[dict[str, Any]] = []
    for raw in items_of(request.get("ipPermissions")):
        perm = as_dict(raw)
        base = permission(perm.get("ipProtocol"), perm.get("fromPort"), perm.get("toPort"), direction)
        for entry in items_of(perm.get("ipRanges")):
            found.append({**base, "cidr": text_of(as_dict(entry).get("cidrIp"))})
        for entry in items_of(perm.get("ipv6Ranges")):
            found.append({**base, "cidr": text_of(as_dict(entry).get("cidrIpv6"))})
        for entry in items_of(perm.get("prefixListIds")):
            found.append({**base, "prefix_list_id": text_of(as_dict(entry).get("prefixListId"))})
        for entry in items_of(perm.get("groups")):
            found.append({**base, "source_group_id": text_of(as_dict(entry).get("groupId"))})
    # The legacy flat form (CidrIp/IpProtocol/FromPort/ToPort as top-level parameters).
    if text_of(request.get("cidrIp")):
        flat = permission(
            request.get("ipProtocol"), request.get("fromPort"), request.get("toPort"), direction
        )
        found.append({**flat, "cidr": text_of(request.get("cidrIp"))})
    return found


def _response_group_ids(response: dict[str, Any]) -> list[str]:
    """The groups of the rules the call created: securityGroupRuleSet.items[].groupId in CloudTrail
    (SecurityGroupRules[].GroupId where a record keeps the SDK's shape)."""
    rules = items_of(response.get("securityGroupRuleSet")) or items_of(response.get("SecurityGroupRules"))
    found = (text_of(first_of(as_dict(rule), "groupId", "GroupId")) for rule in rules)
    return [group_id for group_id in found if group_id]


def _security_group_authorize(request: dict[str, Any], name: str, response: dict[str, Any]) -> Facts:
    direction = "egress" if name == "AuthorizeSecurityGroupEgress" else "ingress"
    group_name = text_of(request.get("groupName"))
    # A group named by name (default VPC, EC2-Classic style) has its id only in the response; without
    # an id nothing resolves the instances, so such a finding is alerted rather than ignored.
    group_ids = list(unique([text_of(request.get("groupId")), *_response_group_ids(response)]))
    group_id = group_ids[0] if group_ids else None
    permissions = _ip_permissions(request, direction)
    severity = port_severity(permissions)
    target = group_id or group_name or "an unnamed security group"
    return Facts(
        Kind.PORT_OPENED,
        severity,
        f"{direction.capitalize()} opened on {target}"
        f"{f' ({group_name})' if group_name and group_id else ''}: {describe_permissions(permissions)}.",
        resource_ids=group_ids,
        evidence={
            "group_id": group_id,
            "group_name": group_name,
            "direction": direction,
            "permissions": permissions,
        },
        alert_if_unresolved=group_id is None,
    )


def _modify_security_group_rules(request: dict[str, Any], name: str) -> Facts:
    wrapped = as_dict(first_of(request, "ModifySecurityGroupRulesRequest")) or request
    group_id = text_of(first_of(wrapped, "GroupId", "groupId"))
    rules = first_of(wrapped, "SecurityGroupRule", "SecurityGroupRules", "securityGroupRule")
    permissions: list[dict[str, Any]] = []
    rule_ids: list[str] = []
    for raw in rules if isinstance(rules, list) else [rules]:
        update = as_dict(raw)
        rule_id = text_of(first_of(update, "SecurityGroupRuleId", "securityGroupRuleId"))
        if rule_id:
            rule_ids.append(rule_id)
        rule = as_dict(first_of(update, "SecurityGroupRule", "securityGroupRule"))
        if not rule:
            continue
        base = permission(
            first_of(rule, "IpProtocol", "ipProtocol"),
            first_of(rule, "FromPort", "fromPort"),
            first_of(rule, "ToPort", "toPort"),
            "unknown",
        )
        base["rule_id"] = rule_id
        cidr = text_of(first_of(rule, "CidrIpv4", "cidrIpv4")) or text_of(
            first_of(rule, "CidrIpv6", "cidrIpv6")
        )
        if cidr:
            permissions.append({**base, "cidr": cidr})
        elif text_of(first_of(rule, "ReferencedGroupId", "referencedGroupId")):
            permissions.append({**base, "source_group_id": text_of(first_of(rule, "ReferencedGroupId"))})
        elif text_of(first_of(rule, "PrefixListId", "prefixListId")):
            permissions.append({**base, "prefix_list_id": text_of(first_of(rule, "PrefixListId"))})
        else:
            permissions.append(base)
    target = group_id or "an unnamed security group"
    return Facts(
        Kind.PORT_OPENED,
        port_severity(permissions),
        f"Security group rule changed on {target}: {describe_permissions(permissions)}.",
        resource_ids=[group_id],
        evidence={
            "group_id": group_id,
            "rule_ids": rule_ids,
            "direction": "unknown",
            "permissions": permissions,
        },
    )


def _network_acl_entry(request: dict[str, Any], name: str) -> Facts:
    acl_id = text_of(request.get("networkAclId"))
    raw_egress = request.get("egress")
    egress = raw_egress is True or (isinstance(raw_egress, str) and raw_egress.lower() == "true")
    direction = "egress" if egress else "ingress"
    action = (text_of(request.get("ruleAction")) or "unknown").lower()[:16]
    port_range = as_dict(request.get("portRange"))
    from_port, to_port = int_of(port_range.get("from")), int_of(port_range.get("to"))
    protocol = protocol_of(request.get("aclProtocol"))
    cidr = text_of(request.get("cidrBlock")) or text_of(request.get("ipv6CidrBlock"))
    rule_number = int_of(request.get("ruleNumber"))
    entry = {
        "direction": direction,
        "protocol": protocol,
        "from_port": from_port,
        "to_port": to_port,
        "cidr": cidr,
        "rule_number": rule_number,
        "rule_action": action,
    }
    critical = action == "allow" and not egress and is_world(cidr)
    verb = "Created" if name == "CreateNetworkAclEntry" else "Replaced"
    return Facts(
        Kind.PORT_OPENED,
        Severity.CRITICAL if critical else Severity.HIGH,
        f"{verb} network ACL entry {rule_number} on {acl_id or 'an unnamed ACL'}: {action} {direction} "
        f"protocol {protocol} {describe_ports(from_port, to_port)} "
        f"{'to' if egress else 'from'} {cidr or '?'}.",
        resource_ids=[acl_id],
        evidence={"network_acl_id": acl_id, "permissions": [entry]},
    )


def _group_ids(value: object) -> list[str]:
    return [gid for gid in (text_of(as_dict(item).get("groupId")) for item in items_of(value)) if gid]


# ---------------------------------------------------------------- instance attributes

_HIGH_RISK_ATTRIBUTES: Final = frozenset({"userData"})


def _modify_instance_attribute(request: dict[str, Any], name: str) -> Facts:
    instance_id = text_of(request.get("instanceId"))
    if "groupSet" in request:
        groups = _group_ids(request.get("groupSet"))
        return Facts(
            Kind.PORT_OPENED,
            Severity.HIGH,
            f"Security groups of {instance_id or 'an instance'} replaced with {', '.join(groups) or 'none'}.",
            resource_ids=[instance_id],
            instance_ids=[instance_id],
            evidence={"group_ids": groups},
        )
    # Either {"attribute": "userData", "value": ...} or {"userData": {...}} / {"instanceType": {...}}.
    attributes = [key for key in request if key not in ("instanceId", "attribute", "value")]
    named = text_of(request.get("attribute"))
    if named:
        attributes.insert(0, named)
    attributes = list(dict.fromkeys(attributes))
    high = any(attribute in _HIGH_RISK_ATTRIBUTES for attribute in attributes)
    return Facts(
        Kind.INSTANCE_MODIFIED,
        Severity.HIGH if high else Severity.MEDIUM,
        f"Attribute {', '.join(attributes) or 'unknown'} of {instance_id or 'an instance'} modified.",
        resource_ids=[instance_id],
        instance_ids=[instance_id],
        evidence={"attributes": clip(attributes)},
    )


def _flag(value: object) -> bool:
    """A boolean as EC2 records it: plain, a string, or an attribute value {"value": ...}."""
    if isinstance(value, dict):
        value = value.get("value")
    return value is True or (isinstance(value, str) and value.lower() == "true")


def _modify_network_interface_attribute(request: dict[str, Any], name: str) -> Facts:
    eni_id = text_of(request.get("networkInterfaceId"))
    if "groupSet" in request:
        groups = _group_ids(request.get("groupSet"))
        return Facts(
            Kind.PORT_OPENED,
            Severity.HIGH,
            f"Security groups of network interface {eni_id or '?'} replaced with "
            f"{', '.join(groups) or 'none'}.",
            resource_ids=[eni_id],
            evidence={"network_interface_id": eni_id, "group_ids": groups},
        )
    if _flag(request.get("associatePublicIpAddress")):
        # A public IPv4 address on an interface of a running server: reachable from the internet.
        return Facts(
            Kind.PORT_OPENED,
            Severity.HIGH,
            f"Public IPv4 address associated with network interface {eni_id or '?'}.",
            resource_ids=[eni_id],
            evidence={"network_interface_id": eni_id, "associate_public_ip_address": True},
        )
    attributes = [key for key in request if key != "networkInterfaceId"]
    return Facts(
        Kind.INSTANCE_MODIFIED,
        Severity.MEDIUM,
        f"Attribute {', '.join(attributes) or 'unknown'} of network interface {eni_id or '?'} modified.",
        resource_ids=[eni_id],
        evidence={"network_interface_id": eni_id, "attributes": clip(attributes)},
    )


# ---------------------------------------------------------------- keys and shells


def _key_type(public_key: str | None) -> str | None:
    return public_key.split(maxsplit=1)[0][:64] if public_key and public_key.strip() else None


def _send_ssh_public_key(request: dict[str, Any], name: str) -> Facts:
    instance_id = text_of(request.get("instanceId"))
    public_key = text_of(request.get("sSHPublicKey"))
    evidence: dict[str, Any] = {"key_type": _key_type(public_key)}
    if name == "SendSerialConsoleSSHPublicKey":
        evidence["serial_port"] = int_of(request.get("serialPort"))
        what = f"serial console of {instance_id or 'an instance'}"
    else:
        evidence["os_user"] = clip(text_of(request.get("instanceOSUser")))
        what = f"user {evidence['os_user'] or '?'} on {instance_id or 'an instance'}"
    return Facts(
        Kind.SSH_KEY_PUSHED,
        Severity.HIGH,
        f"SSH public key pushed to the {what}.",
        resource_ids=[instance_id],
        instance_ids=[instance_id],
        evidence=evidence,
    )


def _start_session(request: dict[str, Any], name: str) -> Facts:
    target = text_of(first_of(request, "target", "Target"))
    document = text_of(first_of(request, "documentName", "DocumentName"))
    # A port forward to a remote host (AWS-StartPortForwardingSessionToRemoteHost) reaches that host
    # through the target: a mutable jump box must not hide the immutable server behind it.
    parameters = as_dict(first_of(request, "parameters", "Parameters"))
    hosts = list(unique(strings_of(first_of(parameters, "host", "Host"))))[:5]
    ports = strings_of(first_of(parameters, "portNumber", "PortNumber"))[:5]
    forwarded = f" forwarding to {', '.join(hosts)}{f' port {ports[0]}' if ports else ''}" if hosts else ""
    return Facts(
        Kind.SHELL_ACCESS,
        Severity.HIGH,
        f"Session Manager session started on {target or 'an unnamed target'}"
        f"{f' with {document}' if document else ''}{forwarded}.",
        resource_ids=[target, *(remote_host_id(host, target) for host in hosts)],
        instance_ids=[target],
        evidence={
            "target": clip(target),
            "document_name": clip(document),
            "remote_hosts": clip(hosts) if hosts else None,
            "remote_port": clip(ports[0]) if ports else None,
        },
    )


def _send_command(request: dict[str, Any], name: str) -> Facts:
    # Every documented target key (InstanceIds, tag:<key>, tag-key, resource-groups:Name) and the older
    # instanceIds list; what scope cannot resolve (a resource group) is alerted rather than ignored.
    targets = read_ssm_targets(
        first_of(request, "targets", "Targets"), first_of(request, "instanceIds", "InstanceIds")
    )
    document = text_of(first_of(request, "documentName", "DocumentName"))
    parameters = first_of(request, "parameters", "Parameters")
    # CloudTrail usually hides parameters ("HIDDEN_DUE_TO_SECURITY_REASONS"); keep them when present.
    commands = first_of(as_dict(parameters), "commands") if isinstance(parameters, dict) else None
    evidence: dict[str, Any] = {
        "document_name": clip(document),
        "commands": clip(strings_of(commands)) if commands is not None else None,
        "parameters": clip(parameters) if not isinstance(parameters, dict) else None,
        "comment": clip(text_of(first_of(request, "comment", "Comment"))),
        **targets.evidence(),
    }
    named = ", ".join(targets.instance_ids[:5]) or ", ".join(targets.descriptors()[:3]) or "no named target"
    return Facts(
        Kind.SHELL_ACCESS,
        Severity.HIGH,
        f"Run Command {document or 'with an unnamed document'} sent to {named}.",
        resource_ids=[*targets.instance_ids, *targets.descriptors()],
        instance_ids=targets.instance_ids,
        evidence=evidence,
        alert_if_unresolved=bool(targets.unresolvable),
    )


def _key_pair(request: dict[str, Any], name: str, response: dict[str, Any]) -> Facts:
    key_name = text_of(request.get("keyName")) or text_of(response.get("keyName"))
    key_pair_id = text_of(response.get("keyPairId"))
    verb = "imported" if name == "ImportKeyPair" else "created"
    return Facts(
        Kind.KEY_PAIR_ADDED,
        Severity.MEDIUM,
        f"Key pair {quote(key_name or '?')} {verb}; it can be used to launch or reach instances.",
        resource_ids=[key_pair_id or key_name],
        evidence={
            "key_name": clip(key_name),
            "key_pair_id": key_pair_id,
            "key_fingerprint": clip(text_of(response.get("keyFingerprint"))),
        },
    )


def _iam_profile(request: dict[str, Any], name: str, response: dict[str, Any]) -> Facts:
    wrapped = as_dict(first_of(request, f"{name}Request")) or request
    profile = as_dict(first_of(wrapped, "IamInstanceProfile", "iamInstanceProfile"))
    profile_ref = text_of(first_of(profile, "Arn", "arn")) or text_of(first_of(profile, "Name", "name"))
    association = as_dict(as_dict(first_of(response, f"{name}Response")).get("iamInstanceProfileAssociation"))
    instance_id = text_of(first_of(wrapped, "InstanceId", "instanceId")) or text_of(
        association.get("instanceId")
    )
    old_association = text_of(first_of(wrapped, "AssociationId", "associationId"))
    new_association = text_of(association.get("associationId"))
    return Facts(
        Kind.IAM_PROFILE_CHANGED,
        Severity.HIGH,
        f"Instance profile {profile_ref or '?'} attached to "
        f"{instance_id or old_association or 'an instance'}.",
        resource_ids=[instance_id or old_association],
        instance_ids=[instance_id],
        evidence={
            "instance_profile": clip(profile_ref),
            "replaced_association_id": old_association,
            "association_id": new_association,
        },
    )


# What each call that blinds the guard acts on, and where its request names it. Stopping or deleting a
# sensor is critical; changing a trail's event selectors may be routine (data events), so it is high.
_SENSOR_CALLS: Final[dict[str, tuple[str, str, Severity]]] = {
    "StopLogging": ("trail", "name", Severity.CRITICAL),
    "DeleteTrail": ("trail", "name", Severity.CRITICAL),
    "PutEventSelectors": ("trail", "trailName", Severity.HIGH),
    "StopConfigurationRecorder": ("Config recorder", "configurationRecorderName", Severity.CRITICAL),
    "DeleteConfigurationRecorder": ("Config recorder", "configurationRecorderName", Severity.CRITICAL),
    "DeleteDeliveryChannel": ("Config delivery channel", "deliveryChannelName", Severity.CRITICAL),
}


def _detection_disabled(request: dict[str, Any], name: str) -> Facts:
    what, field, severity = _SENSOR_CALLS[name]
    target = text_of(first_of(request, field, field[:1].upper() + field[1:]))
    return Facts(
        Kind.DETECTION_DISABLED,
        severity,
        f"{name} on {what} {quote(target or '?')}: the changes Immutable Guard watches for may no longer "
        "reach it.",
        resource_ids=[target],
        evidence={"sensor": what, "target": clip(target)},
    )


# ---------------------------------------------------------------- CloudTrail dispatch

_Handler = Callable[[dict[str, Any], str], Facts]
_ResponseHandler = Callable[[dict[str, Any], str, dict[str, Any]], Facts]

_HANDLERS: Final[dict[tuple[str, str], _Handler]] = {
    ("ec2.amazonaws.com", "ModifySecurityGroupRules"): _modify_security_group_rules,
    ("ec2.amazonaws.com", "CreateNetworkAclEntry"): _network_acl_entry,
    ("ec2.amazonaws.com", "ReplaceNetworkAclEntry"): _network_acl_entry,
    ("ec2.amazonaws.com", "ModifyInstanceAttribute"): _modify_instance_attribute,
    ("ec2.amazonaws.com", "ModifyNetworkInterfaceAttribute"): _modify_network_interface_attribute,
    ("ec2-instance-connect.amazonaws.com", "SendSSHPublicKey"): _send_ssh_public_key,
    ("ec2-instance-connect.amazonaws.com", "SendSerialConsoleSSHPublicKey"): _send_ssh_public_key,
    ("ssm.amazonaws.com", "StartSession"): _start_session,
    ("ssm.amazonaws.com", "SendCommand"): _send_command,
    **{("cloudtrail.amazonaws.com", name): _detection_disabled for name in ("StopLogging", "DeleteTrail")},
    ("cloudtrail.amazonaws.com", "PutEventSelectors"): _detection_disabled,
    **{
        ("config.amazonaws.com", name): _detection_disabled
        for name in ("StopConfigurationRecorder", "DeleteConfigurationRecorder", "DeleteDeliveryChannel")
    },
}

_RESPONSE_HANDLERS: Final[dict[tuple[str, str], _ResponseHandler]] = {
    ("ec2.amazonaws.com", "AuthorizeSecurityGroupIngress"): _security_group_authorize,
    ("ec2.amazonaws.com", "AuthorizeSecurityGroupEgress"): _security_group_authorize,
    ("ec2.amazonaws.com", "ImportKeyPair"): _key_pair,
    ("ec2.amazonaws.com", "CreateKeyPair"): _key_pair,
    ("ec2.amazonaws.com", "AssociateIamInstanceProfile"): _iam_profile,
    ("ec2.amazonaws.com", "ReplaceIamInstanceProfileAssociation"): _iam_profile,
}


def _cloudtrail_facts(event: CloudTrailEvent) -> Facts:
    detail = event.detail
    key = (detail.event_source, detail.event_name)
    request = detail.request_parameters or {}
    if key in _HANDLERS:
        return _HANDLERS[key](request, detail.event_name)
    if key in _RESPONSE_HANDLERS:
        return _RESPONSE_HANDLERS[key](request, detail.event_name, detail.response_elements or {})
    if key in paths.HANDLERS:
        return paths.HANDLERS[key](detail)
    raise InvalidEvent(f"unhandled CloudTrail event {quote(detail.event_source)} {quote(detail.event_name)}")


def _actor(event: CloudTrailEvent) -> Actor:
    identity = event.detail.user_identity
    return Actor(
        principal_arn=identity.arn,
        principal_type=identity.type,
        session_issuer_arn=identity.session_issuer_arn,
        source_ip=event.detail.source_ip_address,
        user_agent=event.detail.user_agent,
        invoked_by=identity.invoked_by,
    )


# ---------------------------------------------------------------- entry point


def normalise(event: ParsedEvent) -> Finding:
    """Describe one mutation in the shared vocabulary.

    Parameters
    ----------
    event:
        A parsed CloudTrail or Config event.

    Returns
    -------
    Finding
        `instance_ids` holds only instances the event names itself; the instances reached through a
        group, an interface or an ACL are resolved later by an instance directory.

    Raises
    ------
    InvalidEvent
        For an event of a kind Immutable Guard does not handle.
    """
    if isinstance(event, CloudTrailEvent):
        facts = _cloudtrail_facts(event)
        detail = event.detail
        return Finding(
            kind=facts.kind,
            severity=facts.severity,
            source=Source.CLOUDTRAIL,
            event_name=detail.event_name,
            event_source=detail.event_source,
            event_id=detail.event_id or event.id,
            event_time=detail.event_time or event.time,
            account=record_account(event),
            region=record_region(event),
            actor=_actor(event),
            resource_ids=facts.resource_ids,
            instance_ids=facts.instance_ids,
            evidence=facts.evidence,
            error_code=detail.error_code,
            summary=facts.summary,
            alert_if_unresolved=facts.alert_if_unresolved,
        )
    handler = CONFIG_HANDLERS.get(event.detail.resource_type)
    if handler is None:
        raise InvalidEvent(f"unhandled Config resource type {quote(event.detail.resource_type)}")
    facts = handler(event)
    return Finding(
        kind=facts.kind,
        severity=facts.severity,
        source=Source.CONFIG,
        event_name=event.detail.message_type,
        event_source="config.amazonaws.com",
        event_id=event.id,
        event_time=event.detail.capture_time or event.time,
        account=record_account(event),
        region=record_region(event),
        resource_ids=facts.resource_ids,
        instance_ids=facts.instance_ids,
        evidence=facts.evidence,
        summary=facts.summary,
        alert_if_unresolved=facts.alert_if_unresolved,
    )
