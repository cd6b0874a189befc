"""Network-ACL isolation (IsolationDepth=network-acl): deny entries for a quarantined instance's addresses,
which cut even the connections security groups keep (the tracked ones), and their removal.

Where the entries go. A network ACL rule matches the *remote* address: the source of inbound traffic, the
destination of outbound traffic, at the boundary of the subnets the ACL is associated with
(https://docs.aws.amazon.com/vpc/latest/userguide/nacl-rules.html). An entry naming the instance's own
address in its own subnet's ACL therefore matches none of its traffic. The entries go into the ACLs of the
VPC's *other* subnets, where the instance's address is the remote one: everything between the instance
and another subnet of its VPC (load balancer nodes, NAT gateways, endpoints, other servers) is cut in both
directions, established connections included, because network ACLs are stateless
(https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/security-group-connection-tracking.html: "Adding a
network ACL that blocks traffic in either direction breaks existing connections"). Traffic inside the
instance's own subnet, and traffic that leaves the VPC from that subnet without crossing another one
(an internet gateway route), does not cross any of those ACLs.

Quota. A network ACL holds 20 rules per direction by default (adjustable;
https://docs.aws.amazon.com/vpc/latest/userguide/amazon-vpc-limits.html); EC2 refuses one more with
NetworkAclEntryLimitExceeded. A full ACL is left as it was (what was added to it is taken back) and the
refusal is reported: security-group isolation still stands.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from immutable_guard.errors import AwsCallFailed, error_code

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client

DETAIL_KEY = "network_acl_entries"
"""Where the ledger keeps the entries Contain added (incident details), for Release and Nuke to remove."""

LIMIT_EXCEEDED = "NetworkAclEntryLimitExceeded"
_ACL_GONE = frozenset({"InvalidNetworkAclID.NotFound"})
_ENTRY_GONE = frozenset({"InvalidNetworkAclEntry.NotFound"})
# The default rules (32767 IPv4, 32768 IPv6) are the "*" rules: never ours, never counted by the quota.
_DEFAULT_RULES = frozenset({32767, 32768})
_LOWEST_RULE = 1


def instance_addresses(interfaces: Iterable[Mapping[str, Any]]) -> list[str]:
    """Every private IPv4 and IPv6 address of the given network interfaces, as /32 and /128 CIDRs."""
    cidrs: list[str] = []
    for eni in interfaces:
        for address in eni.get("PrivateIpAddresses", []):
            if address.get("PrivateIpAddress"):
                cidrs.append(f"{address['PrivateIpAddress']}/32")
        if not eni.get("PrivateIpAddresses") and eni.get("PrivateIpAddress"):
            cidrs.append(f"{eni['PrivateIpAddress']}/32")
        for address in eni.get("Ipv6Addresses", []):
            if address.get("Ipv6Address"):
                cidrs.append(f"{address['Ipv6Address']}/128")
    return list(dict.fromkeys(cidrs))


def _cidr_key(cidr: str) -> str:
    return "Ipv6CidrBlock" if ipaddress.ip_network(cidr, strict=False).version == 6 else "CidrBlock"


def _is_our_deny(entry: Mapping[str, Any], cidr: str) -> bool:
    return (
        entry.get("RuleAction") == "deny"
        and str(entry.get("Protocol")) == "-1"
        and entry.get(_cidr_key(cidr)) == cidr
    )


def _acls_of_other_subnets(ec2: EC2Client, vpc_id: str, own_subnets: set[str]) -> list[Mapping[str, Any]]:
    try:
        acls = ec2.describe_network_acls(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["NetworkAcls"]
    except ClientError as exc:
        raise AwsCallFailed(f"VPC {vpc_id}: describe network ACLs: {error_code(exc)}: {exc}") from exc
    return [
        acl for acl in acls if any(a.get("SubnetId") not in own_subnets for a in acl.get("Associations", []))
    ]


def _plan_for_acl(acl: Mapping[str, Any], cidrs: Sequence[str]) -> tuple[list[dict[str, Any]], str | None]:
    """The entries to add to one ACL (those already there are reused), or why none can be placed."""
    planned: list[dict[str, Any]] = []
    for egress in (False, True):
        entries = [e for e in acl.get("Entries", []) if bool(e.get("Egress")) is egress]
        used = {int(e["RuleNumber"]) for e in entries}
        allows = [int(e["RuleNumber"]) for e in entries if e.get("RuleAction") == "allow"]
        # A deny placed after an allow rule never matches what that rule allows: ours must come first.
        ceiling = min(allows, default=min(_DEFAULT_RULES))
        number = _LOWEST_RULE
        for cidr in cidrs:
            if any(_is_our_deny(e, cidr) for e in entries):
                continue
            while number in used:
                number += 1
            if number >= ceiling:
                direction = "outbound" if egress else "inbound"
                return [], f"no free {direction} rule number ahead of allow rule {ceiling}"
            planned.append(
                {"acl": acl["NetworkAclId"], "rule_number": number, "egress": egress, "cidr": cidr}
            )
            used.add(number)
    return planned, None


def _create(ec2: EC2Client, entry: Mapping[str, Any]) -> None:
    ec2.create_network_acl_entry(
        NetworkAclId=entry["acl"],
        RuleNumber=int(entry["rule_number"]),
        Protocol="-1",
        RuleAction="deny",
        Egress=bool(entry["egress"]),
        **{_cidr_key(entry["cidr"]): entry["cidr"]},
    )


def deny_instance_addresses(
    ec2: EC2Client,
    vpc_id: str,
    own_subnets: set[str],
    cidrs: Sequence[str],
    record: Any,
    actions: list[str],
) -> dict[str, Any]:
    """Add deny entries for ``cidrs`` to the ACLs of the VPC's other subnets.

    ``record(entries)`` is called with the entries about to be created, before they are: whatever
    happens next, Release and Nuke know what to take back. Returns what was added and what was refused.
    """
    result: dict[str, Any] = {"entries": [], "refused": [], "cut": []}
    acls = _acls_of_other_subnets(ec2, vpc_id, own_subnets)
    if not acls:
        result["refused"].append(
            f"VPC {vpc_id} has no other subnet: no network ACL sees this instance's traffic"
        )
        actions.append("network-ACL isolation: nothing to add, the VPC has no other subnet")
        return result
    for acl in acls:
        acl_id = acl["NetworkAclId"]
        planned, problem = _plan_for_acl(acl, cidrs)
        if problem:
            result["refused"].append(f"{acl_id}: {problem}")
            actions.append(f"WARNING network ACL {acl_id} not used: {problem}")
            continue
        record(planned)
        added: list[dict[str, Any]] = []
        try:
            for entry in planned:
                _create(ec2, entry)
                added.append(entry)
        except ClientError as exc:
            if error_code(exc) != LIMIT_EXCEEDED:
                raise AwsCallFailed(
                    f"network ACL {acl_id}: add deny entry: {error_code(exc)}: {exc}"
                ) from exc
            # Full: take back what this ACL got, so it is as it was; the team is told below.
            remove_entries(ec2, added, [])
            result["refused"].append(f"{acl_id}: full ({LIMIT_EXCEEDED})")
            actions.append(
                f"WARNING network ACL {acl_id} is full (rules per ACL quota): addresses not denied"
            )
            continue
        result["entries"].extend(planned)
        result["cut"].append(acl_id)
        if planned:
            actions.append(f"network ACL {acl_id} denies {', '.join(cidrs)} both ways")
    return result


def remove_entries(
    ec2: EC2Client, entries: Sequence[Mapping[str, Any]], actions: list[str]
) -> list[dict[str, Any]]:
    """Delete the given entries where they are still the deny entries we added; returns those removed.

    A rule number is only a slot: one someone else has reused since is left alone.
    """
    removed: list[dict[str, Any]] = []
    by_acl: dict[str, list[Mapping[str, Any]]] = {}
    for entry in entries:
        by_acl.setdefault(str(entry["acl"]), []).append(entry)
    for acl_id, ours in by_acl.items():
        try:
            current = ec2.describe_network_acls(NetworkAclIds=[acl_id])["NetworkAcls"]
        except ClientError as exc:
            if error_code(exc) in _ACL_GONE:
                actions.append(f"network ACL {acl_id} is gone; nothing to remove")
                continue
            raise AwsCallFailed(f"network ACL {acl_id}: describe: {error_code(exc)}: {exc}") from exc
        present = current[0].get("Entries", []) if current else []
        for entry in ours:
            match = [
                e
                for e in present
                if int(e["RuleNumber"]) == int(entry["rule_number"])
                and bool(e.get("Egress")) is bool(entry["egress"])
                and _is_our_deny(e, str(entry["cidr"]))
            ]
            if not match:
                continue
            try:
                ec2.delete_network_acl_entry(
                    NetworkAclId=acl_id, RuleNumber=int(entry["rule_number"]), Egress=bool(entry["egress"])
                )
            except ClientError as exc:
                if error_code(exc) not in _ENTRY_GONE | _ACL_GONE:
                    raise AwsCallFailed(
                        f"network ACL {acl_id}: remove deny entry {entry['rule_number']}: {exc}"
                    ) from exc
            removed.append(dict(entry))
        if any(r["acl"] == acl_id for r in removed):
            actions.append(f"network ACL {acl_id}: deny entries of the quarantine removed")
    return removed
