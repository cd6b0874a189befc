"""The rule that let the attack in, removed so the replacement (same group, same subnet) inherits no hole:
the security-group rules a port_opened finding says were added, and the network ACL allow entries it
says were created. Only what the event names is touched, and only while it is still what was added."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from immutable_guard.errors import AwsCallFailed, error_code
from immutable_guard.model import Kind

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client


# ---------------------------------------------------------------- security-group rules


def _ip_permission(perm: Mapping[str, Any]) -> dict[str, Any] | None:
    """Detection's permission record -> one boto3 IpPermission; None when it names no source."""
    protocol = str(perm.get("protocol") or "-1")
    rule: dict[str, Any] = {"IpProtocol": protocol}
    if protocol not in ("-1", "all"):
        if perm.get("from_port") is not None:
            rule["FromPort"] = int(perm["from_port"])
        if perm.get("to_port") is not None:
            rule["ToPort"] = int(perm["to_port"])
    else:
        rule["IpProtocol"] = "-1"
    if perm.get("cidr"):
        cidr = str(perm["cidr"])
        try:
            is_v6 = ipaddress.ip_network(cidr, strict=False).version == 6
        except ValueError:
            return None
        rule["Ipv6Ranges" if is_v6 else "IpRanges"] = [{"CidrIpv6" if is_v6 else "CidrIp": cidr}]
    elif perm.get("source_group_id"):
        rule["UserIdGroupPairs"] = [{"GroupId": str(perm["source_group_id"])}]
    elif perm.get("prefix_list_id"):
        rule["PrefixListIds"] = [{"PrefixListId": str(perm["prefix_list_id"])}]
    else:
        return None
    return rule


def offending_rules(finding: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The rules a port_opened finding says were added: by rule id where known, else by permission."""
    if finding.get("kind") != Kind.PORT_OPENED.value:
        return []
    evidence = finding.get("evidence") or {}
    group_id = evidence.get("group_id") or next(
        (r for r in finding.get("resource_ids", []) if str(r).startswith("sg-")), None
    )
    if not group_id or not str(group_id).startswith("sg-"):
        return []
    rules: list[dict[str, Any]] = []
    rule_ids = [str(r) for r in evidence.get("rule_ids") or [] if str(r).startswith("sgr-")]
    if rule_ids:
        rules.extend({"group_id": group_id, "rule_id": rule_id} for rule_id in rule_ids)
    for perm in evidence.get("permissions") or []:
        if not isinstance(perm, Mapping) or perm.get("rule_id") in rule_ids:
            continue
        direction = perm.get("direction") or evidence.get("direction")
        permission = _ip_permission(perm)
        if permission is not None and direction in ("ingress", "egress"):
            rules.append({"group_id": group_id, "direction": direction, "permission": permission})
    return rules


def revoke_offending_rules(ec2: EC2Client, rules: list[dict[str, Any]], actions: list[str]) -> None:
    """Revoke exactly the added rules so the replacement, which uses the same group, inherits no hole."""
    by_id = [rule for rule in rules if "rule_id" in rule]
    directions: dict[str, bool] = {}
    if by_id:
        # A modified rule's direction is not in the record; the rule itself knows.
        try:
            found = ec2.describe_security_group_rules(
                SecurityGroupRuleIds=[rule["rule_id"] for rule in by_id]
            )["SecurityGroupRules"]
        except ClientError as exc:
            if error_code(exc) != "InvalidSecurityGroupRuleId.NotFound":
                raise AwsCallFailed(f"rules {[r['rule_id'] for r in by_id]}: describe: {exc}") from exc
            found = []
        directions = {rule["SecurityGroupRuleId"]: bool(rule.get("IsEgress")) for rule in found}
    for rule in rules:
        group_id = rule["group_id"]
        if "rule_id" in rule:
            rule_id = rule["rule_id"]
            if rule_id not in directions:
                actions.append(f"rule {rule_id} of {group_id} already gone")
                continue
            egress = directions[rule_id]
            kwargs: dict[str, Any] = {"GroupId": group_id, "SecurityGroupRuleIds": [rule_id]}
            label = rule_id
        else:
            egress = rule["direction"] == "egress"
            kwargs = {"GroupId": group_id, "IpPermissions": [rule["permission"]]}
            label = _describe_permission(rule["permission"])
        revoke = ec2.revoke_security_group_egress if egress else ec2.revoke_security_group_ingress
        direction = "egress" if egress else "ingress"
        try:
            response_any: Any = revoke(**kwargs)
        except ClientError as exc:
            if error_code(exc) in ("InvalidPermission.NotFound", "InvalidGroup.NotFound"):
                actions.append(f"{direction} rule {label} of {group_id} already gone")
                continue
            raise AwsCallFailed(f"group {group_id}: revoke {direction} {label}: {exc}") from exc
        if response_any.get("UnknownIpPermissions"):
            actions.append(f"{direction} rule {label} of {group_id} already gone")
        else:
            actions.append(f"revoked {direction} rule {label} of {group_id}")


def _describe_permission(permission: Mapping[str, Any]) -> str:
    sources = [
        r.get("CidrIp") or r.get("CidrIpv6")
        for r in (*permission.get("IpRanges", []), *permission.get("Ipv6Ranges", []))
    ]
    sources += [p["GroupId"] for p in permission.get("UserIdGroupPairs", [])]
    sources += [p["PrefixListId"] for p in permission.get("PrefixListIds", [])]
    ports = (
        "all"
        if permission["IpProtocol"] == "-1"
        else f"{permission['IpProtocol']} {permission.get('FromPort')}-{permission.get('ToPort')}"
    )
    return f"{ports} {','.join(str(s) for s in sources)}"


# ---------------------------------------------------------------- network ACL entries

# EC2 reports an entry's protocol by number; the call that created it may have named it.
_PROTOCOL_NUMBERS = {"tcp": "6", "udp": "17", "icmp": "1", "icmpv6": "58", "all": "-1"}


def offending_acl_entries(finding: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The allow entries a CreateNetworkAclEntry finding says were added. A replaced entry is not here:
    what it replaced is unknown, so deleting it could open or close anything (it is said instead)."""
    if finding.get("kind") != Kind.PORT_OPENED.value or finding.get("event_name") != "CreateNetworkAclEntry":
        return []
    evidence = finding.get("evidence") or {}
    acl_id = str(evidence.get("network_acl_id") or "")
    if not acl_id.startswith("acl-"):
        return []
    return [
        {"network_acl_id": acl_id, **entry}
        for entry in evidence.get("permissions") or []
        if isinstance(entry, Mapping)
        and entry.get("rule_action") == "allow"
        and entry.get("rule_number") is not None
    ]


def _same_entry(current: Mapping[str, Any], created: Mapping[str, Any]) -> bool:
    """Is the ACL's entry under that number still the one the event created (numbers can be reused)?"""
    protocol = str(created.get("protocol") or "-1").lower()
    ports = current.get("PortRange") or {}
    return (
        current.get("RuleAction") == "allow"
        and str(current.get("Protocol")) == _PROTOCOL_NUMBERS.get(protocol, protocol)
        and (current.get("CidrBlock") or current.get("Ipv6CidrBlock")) == created.get("cidr")
        and (created.get("from_port") is None or ports.get("From") == created.get("from_port"))
        and (created.get("to_port") is None or ports.get("To") == created.get("to_port"))
    )


def remove_offending_acl_entries(ec2: EC2Client, entries: list[dict[str, Any]], actions: list[str]) -> None:
    """Delete each allow entry the attacker created, if it is still the one created."""
    for entry in entries:
        acl_id, number = entry["network_acl_id"], int(entry["rule_number"])
        egress = entry.get("direction") == "egress"
        label = f"{'egress' if egress else 'ingress'} network ACL entry {number} of {acl_id}"
        try:
            acls = ec2.describe_network_acls(NetworkAclIds=[acl_id])["NetworkAcls"]
        except ClientError as exc:
            if error_code(exc) == "InvalidNetworkAclID.NotFound":
                actions.append(f"{label} already gone (no such ACL)")
                continue
            raise AwsCallFailed(f"{label}: describe: {exc}") from exc
        current = next(
            (
                e
                for acl in acls
                for e in acl.get("Entries", [])
                if e.get("RuleNumber") == number and bool(e.get("Egress")) == egress
            ),
            None,
        )
        if current is None:
            actions.append(f"{label} already gone")
            continue
        if not _same_entry(current, entry):
            actions.append(f"{label} no longer is the entry the event created: left as it is")
            continue
        try:
            ec2.delete_network_acl_entry(NetworkAclId=acl_id, RuleNumber=number, Egress=egress)
        except ClientError as exc:
            if error_code(exc) == "InvalidNetworkAclEntry.NotFound":
                actions.append(f"{label} already gone")
                continue
            raise AwsCallFailed(f"{label}: delete: {exc}") from exc
        actions.append(f"deleted {label}")
