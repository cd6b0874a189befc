"""Turns one parsed event into a Finding: what kind of mutation, how severe, who did it, and what it
names. Request shapes differ per API (EC2's query shape, wrapped requests, SSM's JSON), so every
field is read defensively: a surprising shape yields less evidence, never a crash."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from typing import Any, Final

from immutable_guard.detection.events import CloudTrailEvent, ConfigEvent, ParsedEvent, quote
from immutable_guard.errors import InvalidEvent
from immutable_guard.model import Actor, Finding, Kind, Severity, Source

# Evidence travels in alerts and the ledger; a hostile request must not make it unbounded.
_MAX_TEXT: Final = 1024
_MAX_ITEMS: Final = 50
_MAX_DEPTH: Final = 6
_MAX_ID: Final = 256

INSTANCE_TAGS_EVIDENCE_KEY: Final = "instance_tags"
"""Evidence key holding the tags of an instance when a Config item carried them."""

SSM_TAG_TARGETS_EVIDENCE_KEY: Final = "tag_targets"
"""Evidence key holding SSM `tag:` targets ({"key": "tag:Name", "values": [...]}) to resolve."""


# ---------------------------------------------------------------- defensive readers


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _items(value: object) -> list[Any]:
    """EC2 records lists as {"items": [...]} (or {} when empty); other services use plain lists."""
    if isinstance(value, dict):
        value = value.get("items")
    return list(value) if isinstance(value, list) else []


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def _get(mapping: dict[str, Any], *names: str) -> Any:
    """The first present key among spellings (SSM records are camelCase, hand-written ones are not)."""
    for name in names:
        if name in mapping:
            return mapping[name]
    return None


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value] if value else []
    return [item for item in _items(value) if isinstance(item, str) and item]


def _unique(values: Iterable[str | None]) -> tuple[str, ...]:
    # Real ids are short; a giant "id" is hostile input and is cut to keep change keys bounded.
    return tuple(dict.fromkeys(value[:_MAX_ID] for value in values if value))


def _clip(value: object, depth: int = 0) -> Any:
    """A JSON-able copy of untrusted data, bounded in depth, length and item count."""
    if isinstance(value, str):
        return value if len(value) <= _MAX_TEXT else value[:_MAX_TEXT] + "...[truncated]"
    if value is None or isinstance(value, bool | int | float):
        return value
    if depth >= _MAX_DEPTH:
        return "...[truncated]"
    if isinstance(value, dict):
        return {
            str(key)[:_MAX_TEXT]: _clip(item, depth + 1) for key, item in list(value.items())[:_MAX_ITEMS]
        }
    if isinstance(value, list | tuple):
        return [_clip(item, depth + 1) for item in list(value)[:_MAX_ITEMS]]
    return str(value)[:_MAX_TEXT]


def _is_world(cidr: str | None) -> bool:
    if not cidr:
        return False
    try:
        return ipaddress.ip_network(cidr.strip(), strict=False).prefixlen == 0
    except ValueError:
        return False


def _ports(from_port: int | None, to_port: int | None) -> str:
    if (from_port is None and to_port is None) or from_port == -1:
        return "all ports"
    if from_port == to_port or to_port is None:
        return f"port {from_port}"
    return f"ports {from_port}-{to_port}"


# ---------------------------------------------------------------- the result of one handler


class _Facts:
    """What a handler found; `normalise` adds the envelope and actor."""

    def __init__(
        self,
        kind: Kind,
        severity: Severity,
        summary: str,
        *,
        resource_ids: Iterable[str | None] = (),
        instance_ids: Iterable[str | None] = (),
        evidence: dict[str, Any] | None = None,
    ) -> None:
        self.kind = kind
        self.severity = severity
        self.summary = " ".join(summary.split())[:_MAX_TEXT]
        self.resource_ids = _unique(resource_ids)
        self.instance_ids = _unique(i for i in instance_ids if i and i.startswith("i-"))
        self.evidence: dict[str, Any] = _clip(evidence or {})


# ---------------------------------------------------------------- port opened


def _protocol(value: object) -> str:
    """EC2 takes names ("tcp") or numbers ("6", 6); "-1" means every protocol."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return (_str(value) or "-1")[:32]


def _permission(protocol: object, from_port: object, to_port: object, direction: str) -> dict[str, Any]:
    return {
        "direction": direction,
        "protocol": _protocol(protocol),
        "from_port": _int(from_port),
        "to_port": _int(to_port),
        "cidr": None,
    }


def _ip_permissions(request: dict[str, Any], direction: str) -> list[dict[str, Any]]:
    """Permissions from EC2's query shape: ipPermissions.items[].{ipRanges,ipv6Ranges,...}.items[]."""
    found: list[dict[str, Any]] = []
    for raw in _items(request.get("ipPermissions")):
        perm = _dict(raw)
        base = _permission(perm.get("ipProtocol"), perm.get("fromPort"), perm.get("toPort"), direction)
        for entry in _items(perm.get("ipRanges")):
            found.append({**base, "cidr": _str(_dict(entry).get("cidrIp"))})
        for entry in _items(perm.get("ipv6Ranges")):
            found.append({**base, "cidr": _str(_dict(entry).get("cidrIpv6"))})
        for entry in _items(perm.get("prefixListIds")):
            found.append({**base, "prefix_list_id": _str(_dict(entry).get("prefixListId"))})
        for entry in _items(perm.get("groups")):
            found.append({**base, "source_group_id": _str(_dict(entry).get("groupId"))})
    # The legacy flat form (CidrIp/IpProtocol/FromPort/ToPort as top-level parameters).
    if _str(request.get("cidrIp")):
        flat = _permission(
            request.get("ipProtocol"), request.get("fromPort"), request.get("toPort"), direction
        )
        found.append({**flat, "cidr": _str(request.get("cidrIp"))})
    return found


def _describe(permissions: list[dict[str, Any]]) -> str:
    parts = []
    for perm in permissions[:3]:
        source = perm.get("cidr") or perm.get("source_group_id") or perm.get("prefix_list_id") or "?"
        protocol = "all protocols" if perm["protocol"] == "-1" else perm["protocol"]
        preposition = {"ingress": "from", "egress": "to"}.get(perm["direction"], "with")
        parts.append(f"{protocol} {_ports(perm['from_port'], perm['to_port'])} {preposition} {source}")
    more = f" and {len(permissions) - 3} more" if len(permissions) > 3 else ""
    return ", ".join(parts) + more if parts else "no readable rule"


def _port_severity(permissions: list[dict[str, Any]]) -> Severity:
    # A rule whose direction the record does not say (ModifySecurityGroupRules) counts as ingress:
    # treating a world-open rule as the less severe case would be the wrong way to be wrong.
    for perm in permissions:
        if perm["direction"] in ("ingress", "unknown") and _is_world(perm.get("cidr")):
            return Severity.CRITICAL
    return Severity.HIGH


def _security_group_authorize(request: dict[str, Any], name: str) -> _Facts:
    direction = "egress" if name == "AuthorizeSecurityGroupEgress" else "ingress"
    group_id = _str(request.get("groupId"))
    permissions = _ip_permissions(request, direction)
    severity = _port_severity(permissions)
    target = group_id or _str(request.get("groupName")) or "an unnamed security group"
    return _Facts(
        Kind.PORT_OPENED,
        severity,
        f"{direction.capitalize()} opened on {target}: {_describe(permissions)}.",
        resource_ids=[group_id],
        evidence={"group_id": group_id, "direction": direction, "permissions": permissions},
    )


def _modify_security_group_rules(request: dict[str, Any], name: str) -> _Facts:
    wrapped = _dict(_get(request, "ModifySecurityGroupRulesRequest")) or request
    group_id = _str(_get(wrapped, "GroupId", "groupId"))
    rules = _get(wrapped, "SecurityGroupRule", "SecurityGroupRules", "securityGroupRule")
    permissions: list[dict[str, Any]] = []
    rule_ids: list[str] = []
    for raw in rules if isinstance(rules, list) else [rules]:
        update = _dict(raw)
        rule_id = _str(_get(update, "SecurityGroupRuleId", "securityGroupRuleId"))
        if rule_id:
            rule_ids.append(rule_id)
        rule = _dict(_get(update, "SecurityGroupRule", "securityGroupRule"))
        if not rule:
            continue
        base = _permission(
            _get(rule, "IpProtocol", "ipProtocol"),
            _get(rule, "FromPort", "fromPort"),
            _get(rule, "ToPort", "toPort"),
            "unknown",
        )
        base["rule_id"] = rule_id
        cidr = _str(_get(rule, "CidrIpv4", "cidrIpv4")) or _str(_get(rule, "CidrIpv6", "cidrIpv6"))
        if cidr:
            permissions.append({**base, "cidr": cidr})
        elif _str(_get(rule, "ReferencedGroupId", "referencedGroupId")):
            permissions.append({**base, "source_group_id": _str(_get(rule, "ReferencedGroupId"))})
        elif _str(_get(rule, "PrefixListId", "prefixListId")):
            permissions.append({**base, "prefix_list_id": _str(_get(rule, "PrefixListId"))})
        else:
            permissions.append(base)
    target = group_id or "an unnamed security group"
    return _Facts(
        Kind.PORT_OPENED,
        _port_severity(permissions),
        f"Security group rule changed on {target}: {_describe(permissions)}.",
        resource_ids=[group_id],
        evidence={
            "group_id": group_id,
            "rule_ids": rule_ids,
            "direction": "unknown",
            "permissions": permissions,
        },
    )


def _network_acl_entry(request: dict[str, Any], name: str) -> _Facts:
    acl_id = _str(request.get("networkAclId"))
    raw_egress = request.get("egress")
    egress = raw_egress is True or (isinstance(raw_egress, str) and raw_egress.lower() == "true")
    direction = "egress" if egress else "ingress"
    action = (_str(request.get("ruleAction")) or "unknown").lower()[:16]
    port_range = _dict(request.get("portRange"))
    from_port, to_port = _int(port_range.get("from")), _int(port_range.get("to"))
    protocol = _protocol(request.get("aclProtocol"))
    cidr = _str(request.get("cidrBlock")) or _str(request.get("ipv6CidrBlock"))
    rule_number = _int(request.get("ruleNumber"))
    entry = {
        "direction": direction,
        "protocol": protocol,
        "from_port": from_port,
        "to_port": to_port,
        "cidr": cidr,
        "rule_number": rule_number,
        "rule_action": action,
    }
    critical = action == "allow" and not egress and _is_world(cidr)
    verb = "Created" if name == "CreateNetworkAclEntry" else "Replaced"
    return _Facts(
        Kind.PORT_OPENED,
        Severity.CRITICAL if critical else Severity.HIGH,
        f"{verb} network ACL entry {rule_number} on {acl_id or 'an unnamed ACL'}: {action} {direction} "
        f"protocol {protocol} {_ports(from_port, to_port)} {'to' if egress else 'from'} {cidr or '?'}.",
        resource_ids=[acl_id],
        evidence={"network_acl_id": acl_id, "permissions": [entry]},
    )


def _group_ids(value: object) -> list[str]:
    return [gid for gid in (_str(_dict(item).get("groupId")) for item in _items(value)) if gid]


# ---------------------------------------------------------------- instance attributes

_HIGH_RISK_ATTRIBUTES: Final = frozenset({"userData"})


def _modify_instance_attribute(request: dict[str, Any], name: str) -> _Facts:
    instance_id = _str(request.get("instanceId"))
    if "groupSet" in request:
        groups = _group_ids(request.get("groupSet"))
        return _Facts(
            Kind.PORT_OPENED,
            Severity.HIGH,
            f"Security groups of {instance_id or 'an instance'} replaced with {', '.join(groups) or 'none'}.",
            resource_ids=[instance_id],
            instance_ids=[instance_id],
            evidence={"group_ids": groups},
        )
    # Either {"attribute": "userData", "value": ...} or {"userData": {...}} / {"instanceType": {...}}.
    attributes = [key for key in request if key not in ("instanceId", "attribute", "value")]
    named = _str(request.get("attribute"))
    if named:
        attributes.insert(0, named)
    attributes = list(dict.fromkeys(attributes))
    high = any(attribute in _HIGH_RISK_ATTRIBUTES for attribute in attributes)
    return _Facts(
        Kind.INSTANCE_MODIFIED,
        Severity.HIGH if high else Severity.MEDIUM,
        f"Attribute {', '.join(attributes) or 'unknown'} of {instance_id or 'an instance'} modified.",
        resource_ids=[instance_id],
        instance_ids=[instance_id],
        evidence={"attributes": _clip(attributes)},
    )


def _modify_network_interface_attribute(request: dict[str, Any], name: str) -> _Facts:
    eni_id = _str(request.get("networkInterfaceId"))
    if "groupSet" in request:
        groups = _group_ids(request.get("groupSet"))
        return _Facts(
            Kind.PORT_OPENED,
            Severity.HIGH,
            f"Security groups of network interface {eni_id or '?'} replaced with "
            f"{', '.join(groups) or 'none'}.",
            resource_ids=[eni_id],
            evidence={"network_interface_id": eni_id, "group_ids": groups},
        )
    attributes = [key for key in request if key != "networkInterfaceId"]
    return _Facts(
        Kind.INSTANCE_MODIFIED,
        Severity.MEDIUM,
        f"Attribute {', '.join(attributes) or 'unknown'} of network interface {eni_id or '?'} modified.",
        resource_ids=[eni_id],
        evidence={"network_interface_id": eni_id, "attributes": _clip(attributes)},
    )


# ---------------------------------------------------------------- keys and shells


def _key_type(public_key: str | None) -> str | None:
    return public_key.split(maxsplit=1)[0][:64] if public_key and public_key.strip() else None


def _send_ssh_public_key(request: dict[str, Any], name: str) -> _Facts:
    instance_id = _str(request.get("instanceId"))
    public_key = _str(request.get("sSHPublicKey"))
    evidence: dict[str, Any] = {"key_type": _key_type(public_key)}
    if name == "SendSerialConsoleSSHPublicKey":
        evidence["serial_port"] = _int(request.get("serialPort"))
        what = f"serial console of {instance_id or 'an instance'}"
    else:
        evidence["os_user"] = _clip(_str(request.get("instanceOSUser")))
        what = f"user {evidence['os_user'] or '?'} on {instance_id or 'an instance'}"
    return _Facts(
        Kind.SSH_KEY_PUSHED,
        Severity.HIGH,
        f"SSH public key pushed to the {what}.",
        resource_ids=[instance_id],
        instance_ids=[instance_id],
        evidence=evidence,
    )


def _start_session(request: dict[str, Any], name: str) -> _Facts:
    target = _str(_get(request, "target", "Target"))
    document = _str(_get(request, "documentName", "DocumentName"))
    return _Facts(
        Kind.SHELL_ACCESS,
        Severity.HIGH,
        f"Session Manager session started on {target or 'an unnamed target'}"
        f"{f' with {document}' if document else ''}.",
        resource_ids=[target],
        instance_ids=[target],
        evidence={"target": _clip(target), "document_name": _clip(document)},
    )


def _send_command(request: dict[str, Any], name: str) -> _Facts:
    instance_ids = _strings(_get(request, "instanceIds", "InstanceIds"))
    tag_targets: list[dict[str, Any]] = []
    other_targets: list[dict[str, Any]] = []
    for raw in _items(_get(request, "targets", "Targets")):
        target = _dict(raw)
        key = _str(_get(target, "key", "Key")) or ""
        values = _strings(_get(target, "values", "Values"))
        if key.lower() == "instanceids":
            instance_ids.extend(values)
        elif key.startswith("tag:") and len(key) > 4:
            tag_targets.append({"key": key, "values": values})
        else:
            other_targets.append({"key": key, "values": values})
    document = _str(_get(request, "documentName", "DocumentName"))
    parameters = _get(request, "parameters", "Parameters")
    # CloudTrail usually hides parameters ("HIDDEN_DUE_TO_SECURITY_REASONS"); keep them when present.
    commands = _get(_dict(parameters), "commands") if isinstance(parameters, dict) else None
    evidence: dict[str, Any] = {
        "document_name": _clip(document),
        "commands": _clip(_strings(commands)) if commands is not None else None,
        "parameters": _clip(parameters) if not isinstance(parameters, dict) else None,
        "comment": _clip(_str(_get(request, "comment", "Comment"))),
    }
    if tag_targets:
        evidence[SSM_TAG_TARGETS_EVIDENCE_KEY] = _clip(tag_targets)
    if other_targets:
        evidence["other_targets"] = _clip(other_targets)
    targets = ", ".join(_unique(instance_ids)[:5]) or "tag-selected instances"
    return _Facts(
        Kind.SHELL_ACCESS,
        Severity.HIGH,
        f"Run Command {document or 'with an unnamed document'} sent to {targets}.",
        resource_ids=instance_ids,
        instance_ids=instance_ids,
        evidence=evidence,
    )


def _key_pair(request: dict[str, Any], name: str, response: dict[str, Any]) -> _Facts:
    key_name = _str(request.get("keyName")) or _str(response.get("keyName"))
    key_pair_id = _str(response.get("keyPairId"))
    verb = "imported" if name == "ImportKeyPair" else "created"
    return _Facts(
        Kind.KEY_PAIR_ADDED,
        Severity.MEDIUM,
        f"Key pair {quote(key_name or '?')} {verb}; it can be used to launch or reach instances.",
        resource_ids=[key_pair_id or key_name],
        evidence={
            "key_name": _clip(key_name),
            "key_pair_id": key_pair_id,
            "key_fingerprint": _clip(_str(response.get("keyFingerprint"))),
        },
    )


def _iam_profile(request: dict[str, Any], name: str, response: dict[str, Any]) -> _Facts:
    wrapped = _dict(_get(request, f"{name}Request")) or request
    profile = _dict(_get(wrapped, "IamInstanceProfile", "iamInstanceProfile"))
    profile_ref = _str(_get(profile, "Arn", "arn")) or _str(_get(profile, "Name", "name"))
    association = _dict(_dict(_get(response, f"{name}Response")).get("iamInstanceProfileAssociation"))
    instance_id = _str(_get(wrapped, "InstanceId", "instanceId")) or _str(association.get("instanceId"))
    old_association = _str(_get(wrapped, "AssociationId", "associationId"))
    new_association = _str(association.get("associationId"))
    return _Facts(
        Kind.IAM_PROFILE_CHANGED,
        Severity.HIGH,
        f"Instance profile {profile_ref or '?'} attached to "
        f"{instance_id or old_association or 'an instance'}.",
        resource_ids=[instance_id or old_association],
        instance_ids=[instance_id],
        evidence={
            "instance_profile": _clip(profile_ref),
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


def _detection_disabled(request: dict[str, Any], name: str) -> _Facts:
    what, field, severity = _SENSOR_CALLS[name]
    target = _str(_get(request, field, field[:1].upper() + field[1:]))
    return _Facts(
        Kind.DETECTION_DISABLED,
        severity,
        f"{name} on {what} {quote(target or '?')}: the changes Immutable Guard watches for may no longer "
        "reach it.",
        resource_ids=[target],
        evidence={"sensor": what, "target": _clip(target)},
    )


# ---------------------------------------------------------------- CloudTrail dispatch

_Handler = Callable[[dict[str, Any], str], _Facts]
_ResponseHandler = Callable[[dict[str, Any], str, dict[str, Any]], _Facts]

_HANDLERS: Final[dict[tuple[str, str], _Handler]] = {
    ("ec2.amazonaws.com", "AuthorizeSecurityGroupIngress"): _security_group_authorize,
    ("ec2.amazonaws.com", "AuthorizeSecurityGroupEgress"): _security_group_authorize,
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
    ("ec2.amazonaws.com", "ImportKeyPair"): _key_pair,
    ("ec2.amazonaws.com", "CreateKeyPair"): _key_pair,
    ("ec2.amazonaws.com", "AssociateIamInstanceProfile"): _iam_profile,
    ("ec2.amazonaws.com", "ReplaceIamInstanceProfileAssociation"): _iam_profile,
}


def _cloudtrail_facts(event: CloudTrailEvent) -> _Facts:
    detail = event.detail
    key = (detail.event_source, detail.event_name)
    request = detail.request_parameters or {}
    if key in _HANDLERS:
        return _HANDLERS[key](request, detail.event_name)
    if key in _RESPONSE_HANDLERS:
        return _RESPONSE_HANDLERS[key](request, detail.event_name, detail.response_elements or {})
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


# ---------------------------------------------------------------- Config


def _changed_properties(event: ConfigEvent) -> dict[str, Any]:
    diff = event.detail.configuration_item_diff
    return diff.changed_properties if diff is not None else {}


def _config_security_group(event: ConfigEvent) -> _Facts:
    group_id = event.detail.resource_id
    permissions: list[dict[str, Any]] = []
    for name, raw in _changed_properties(event).items():
        change = _dict(raw)
        lowered = name.lower()
        if not lowered.startswith("configuration.ippermissions"):
            continue
        direction = "egress" if lowered.startswith("configuration.ippermissionsegress") else "ingress"
        # Config records the item in DescribeSecurityGroups' shape: plain lists, camelCase keys.
        perm = _dict(change.get("updatedValue"))
        if not perm:
            continue
        base = _permission(perm.get("ipProtocol"), perm.get("fromPort"), perm.get("toPort"), direction)
        cidrs = [_str(_dict(r).get("cidrIp")) for r in _items(perm.get("ipv4Ranges"))]
        cidrs += [_str(_dict(r).get("cidrIpv6")) for r in _items(perm.get("ipv6Ranges"))]
        cidrs += [r for r in _items(perm.get("ipRanges")) if isinstance(r, str)]
        for cidr in _unique(cidrs):
            permissions.append({**base, "cidr": cidr})
        for pair in _items(perm.get("userIdGroupPairs")):
            permissions.append({**base, "source_group_id": _str(_dict(pair).get("groupId"))})
    summary = (
        f"Configuration of security group {group_id} changed: {_describe(permissions)}."
        if permissions
        else f"Configuration of security group {group_id} changed."
    )
    return _Facts(
        Kind.PORT_OPENED,
        _port_severity(permissions),
        summary,
        resource_ids=[group_id],
        evidence={
            "group_id": group_id,
            "permissions": permissions[:_MAX_ITEMS],
            "changed_properties": _clip(sorted(_changed_properties(event))),
        },
    )


def _config_instance(event: ConfigEvent) -> _Facts:
    instance_id = event.detail.resource_id
    changed = sorted(_changed_properties(event))
    evidence: dict[str, Any] = {"changed_properties": _clip(changed)}
    item = event.detail.configuration_item
    if item is not None and item.tags is not None:
        evidence[INSTANCE_TAGS_EVIDENCE_KEY] = _clip(item.tags)
    if event.detail.is_oversized:
        location = event.detail.s3_delivery_summary
        evidence["oversized"] = True
        evidence["s3_location"] = location.s3_bucket_location if location is not None else None
    status = item.configuration_item_status if item is not None else None
    what = (
        ", ".join(changed[:5])
        if changed
        else "details in the full item"
        if event.detail.is_oversized
        else "?"
    )
    return _Facts(
        Kind.INSTANCE_MODIFIED,
        Severity.MEDIUM,
        f"Configuration of instance {instance_id} changed ({what})"
        f"{f'; status {status}' if status and status != 'OK' else ''}.",
        resource_ids=[instance_id],
        instance_ids=[instance_id],
        evidence=evidence,
    )


def _file_paths(event: ConfigEvent) -> list[str]:
    paths: list[str] = []
    for name, raw in _changed_properties(event).items():
        if "AWS:File" not in name:
            continue
        _, _, rest = name.partition("AWS:File")
        rest = rest.removeprefix(".Content").removeprefix(".")
        change = _dict(raw)
        value = _dict(change.get("updatedValue")) or _dict(change.get("previousValue"))
        directory, file_name = _str(value.get("InstalledDir")), _str(value.get("Name"))
        if directory and file_name:
            paths.append(f"{directory.rstrip('/')}/{file_name}")
        elif rest:
            paths.append(rest)
    if not paths and event.detail.configuration_item is not None:
        # No diff (first recording): fall back to the files the item lists.
        content = _dict(
            _dict(_dict(event.detail.configuration_item.configuration).get("AWS:File")).get("Content")
        )
        paths.extend(str(key) for key in content)
    return list(_unique(paths))


def _config_file(event: ConfigEvent) -> _Facts:
    instance_id = event.detail.resource_id
    paths = _file_paths(event)
    shown = ", ".join(paths[:5]) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")
    return _Facts(
        Kind.FILE_CHANGED,
        Severity.HIGH,
        f"Files changed on {instance_id} as seen by SSM Inventory: {shown or 'see the item'}.",
        resource_ids=[instance_id],
        instance_ids=[instance_id],
        evidence={"paths": _clip(paths), "oversized": event.detail.is_oversized},
    )


_CONFIG_HANDLERS: Final[dict[str, Callable[[ConfigEvent], _Facts]]] = {
    "AWS::EC2::SecurityGroup": _config_security_group,
    "AWS::EC2::Instance": _config_instance,
    "AWS::SSM::ManagedInstanceInventory": _config_file,
    "AWS::SSM::FileData": _config_file,
}


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
            account=detail.recipient_account_id or event.account,
            region=detail.aws_region or event.region,
            actor=_actor(event),
            resource_ids=facts.resource_ids,
            instance_ids=facts.instance_ids,
            evidence=facts.evidence,
            error_code=detail.error_code,
            summary=facts.summary,
        )
    handler = _CONFIG_HANDLERS.get(event.detail.resource_type)
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
        account=event.account,
        region=event.region,
        resource_ids=facts.resource_ids,
        instance_ids=facts.instance_ids,
        evidence=facts.evidence,
        summary=facts.summary,
    )
