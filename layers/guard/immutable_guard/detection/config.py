"""Turns AWS Config configuration item changes into Facts, judged as Config means them: what changed is in
`configurationItemDiff.changedProperties` (the Describe API's shape, lists diffed element by element), and
an item that records no mutation (a discovery, a deletion, a state transition, a revoked rule, a deny
entry, a file only read) says so in its evidence. Config items carry no actor."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Final

from immutable_guard.detection.events import ConfigEvent
from immutable_guard.detection.readers import (
    GUARD_TAG_PREFIX,
    INSTANCE_TAGS_EVIDENCE_KEY,
    MAX_ITEMS,
    TAG_CHANGES_EVIDENCE_KEY,
    TAGS_ONLY_EVIDENCE_KEY,
    Facts,
    as_dict,
    clip,
    describe_permissions,
    describe_ports,
    int_of,
    is_world,
    items_of,
    permission,
    port_severity,
    protocol_of,
    text_of,
    unique,
)
from immutable_guard.model import Kind, Severity

NOT_A_CHANGE_EVIDENCE_KEY: Final = "config_not_a_change"
"""Evidence key holding a sentence on why a Config item records no mutation; the policy ignores it."""

RELATED_EVENTS_EVIDENCE_KEY: Final = "related_events"
"""Evidence key holding the ids of the CloudTrail events Config names as the cause (`relatedEvents`)."""

RELEASE_SHAPED_EVIDENCE_KEY: Final = "release_shaped"
"""Evidence key, True when an item changes only what the guard's Release restores (security groups, the
instance profile, the guard's own `immutable-guard:*` tags): the policy takes it as the release's echo
when the ledger says the guard released the instance a short while ago."""


PREVIOUS_TAGS_EVIDENCE_KEY: Final = "previous_instance_tags"
"""Evidence key holding the instance's tags before the change, when the item's diff shows every change."""

# configurationItemStatus values that record no change to an existing resource (AWS Config API Reference,
# ConfigurationItem): a resource first seen, one Config stopped or never started recording, one deleted.
_NOT_CHANGES: Final = {
    "ResourceDiscovered": "Config discovered the resource (new, or newly recorded): nothing on it changed.",
    "ResourceNotRecorded": "Config recorded the resource's existence, not a change to it.",
    "ResourceDeleted": "The resource was deleted; a deletion opens nothing on a live server.",
    "ResourceDeletedNotRecorded": "A resource Config does not record was deleted.",
}

# Instance fields that move with start, stop, reboot and launch, not with a change to the server.
_TRANSITION_FIELDS: Final = (
    "state",
    "statetransitionreason",
    "statereason",
    "launchtime",
    "usageoperationupdatetime",
    "bootmode",
    "currentinstancebootmode",
)
# Move with a stop/start when the public IP is the one EC2 assigns (not an Elastic IP).
_PUBLIC_ADDRESS_FIELDS: Final = ("publicipaddress", "publicdnsname")
_TAG_FIELDS: Final = ("tags", "supplementaryconfiguration.tags")


# ---------------------------------------------------------------- reading the diff


def _changed_properties(event: ConfigEvent) -> dict[str, Any]:
    diff = event.detail.configuration_item_diff
    return diff.changed_properties if diff is not None else {}


def _field(name: str) -> str:
    """A property path without its "Configuration." prefix, lower-cased: "state.name", "ippermissions.0"."""
    lowered = name.lower()
    return lowered.removeprefix("configuration.")


def _under(name: str, *fields: str) -> bool:
    field = _field(name)
    return any(field == f or field.startswith(f + ".") for f in fields)


def _values(change: object) -> tuple[Any, Any, str]:
    """(previousValue, updatedValue, changeType) of one changed property."""
    change = as_dict(change)
    kind = (text_of(change.get("changeType")) or "UPDATE").upper()
    return change.get("previousValue"), change.get("updatedValue"), kind


def _pick(value: object, *names: str) -> Any:
    """A field in Config's lowerCamel shape or the PascalCase its diffs sometimes use."""
    mapping = as_dict(value)
    for name in names:
        for spelling in (name, name[:1].upper() + name[1:]):
            if spelling in mapping:
                return mapping[spelling]
    return None


def _elements(changes: dict[str, Any], *fields: str) -> tuple[list[Any], list[Any]]:
    """The list elements a diff removed (previous values) and added (updated values) under `fields`.
    Config diffs a list by element: a changed element is its old value deleted and the new one created."""
    before: list[Any] = []
    after: list[Any] = []
    for name, raw in changes.items():
        if not _under(name, *fields):
            continue
        previous, updated, _ = _values(raw)
        if previous is not None:
            before.append(previous)
        if updated is not None:
            after.append(updated)
    return before, after


def _not_a_change(facts_kind: Kind, resource_id: str, why: str, evidence: dict[str, Any]) -> Facts:
    return Facts(
        facts_kind,
        Severity.LOW,
        f"Config item of {resource_id}: {why}",
        resource_ids=[resource_id],
        # Named all the same: what the ledger remembers of a server (its scope) is read from such items.
        instance_ids=[resource_id],
        evidence={**evidence, NOT_A_CHANGE_EVIDENCE_KEY: why},
    )


# ---------------------------------------------------------------- tags


def _tag_pairs(value: object) -> dict[str, str | None]:
    """{key: value} from a tag element ({"key", "value"}), a list of them, or a plain mapping."""
    if isinstance(value, list):
        pairs: dict[str, str | None] = {}
        for item in value:
            pairs.update(_tag_pairs(item))
        return pairs
    mapping = as_dict(value)
    key = _pick(mapping, "key")
    if isinstance(key, str):
        tag_value = _pick(mapping, "value")
        return {key: tag_value if isinstance(tag_value, str) else ""}
    return {str(k): v if isinstance(v, str) else None for k, v in mapping.items()}


def _tag_changes(changes: dict[str, Any]) -> dict[str, dict[str, str | None]]:
    """{key: {"previous", "updated"}} from the diff's tag properties: list elements
    (Configuration.Tags.N = {key, value}) or per-key properties (Tags.<key> = value)."""
    previous: dict[str, str | None] = {}
    updated: dict[str, str | None] = {}
    for name, raw in changes.items():
        if not _under(name, *_TAG_FIELDS):
            continue
        old, new, _ = _values(raw)
        field = _field(name)
        suffix = name[len(name) - len(field) :].split(".", 1)[1] if "." in field else ""
        if suffix and not suffix.isdigit() and not isinstance(old, dict | list) and not isinstance(new, dict):
            # Tags.<key>: the value itself
            previous[suffix] = old if isinstance(old, str) else None
            updated[suffix] = new if isinstance(new, str) else None
            continue
        previous.update(_tag_pairs(old))
        updated.update(_tag_pairs(new))
    result: dict[str, dict[str, str | None]] = {}
    for key in dict.fromkeys([*previous, *updated]):
        before, after = previous.get(key), updated.get(key)
        if before != after:
            result[key] = {"previous": before, "updated": after}
    return result


def _previous_tags(tags: dict[str, str] | None, changes: dict[str, dict[str, str | None]]) -> dict[str, str]:
    before = dict(tags or {})
    for key, change in changes.items():
        if change["previous"] is None:
            before.pop(key, None)
        else:
            before[key] = change["previous"]
    return before


# ---------------------------------------------------------------- security groups


def _config_permissions(perm: dict[str, Any], direction: str) -> list[dict[str, Any]]:
    """Permissions of one Config ipPermissions element: plain lists, camelCase keys."""
    base = permission(_pick(perm, "ipProtocol"), _pick(perm, "fromPort"), _pick(perm, "toPort"), direction)
    found: list[dict[str, Any]] = []
    cidrs = [text_of(_pick(r, "cidrIp")) for r in items_of(_pick(perm, "ipv4Ranges"))]
    cidrs += [text_of(_pick(r, "cidrIpv6")) for r in items_of(_pick(perm, "ipv6Ranges"))]
    cidrs += [
        r if isinstance(r, str) else text_of(_pick(r, "cidrIp")) for r in items_of(_pick(perm, "ipRanges"))
    ]
    for cidr in unique(cidrs):
        found.append({**base, "cidr": cidr})
    for pair in items_of(_pick(perm, "userIdGroupPairs")):
        found.append({**base, "source_group_id": text_of(_pick(pair, "groupId"))})
    for entry in items_of(_pick(perm, "prefixListIds")):
        found.append({**base, "prefix_list_id": text_of(_pick(entry, "prefixListId"))})
    return found


def _fingerprint(perm: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(sorted((k, str(v)) for k, v in perm.items()))


def _config_security_group(event: ConfigEvent) -> Facts:
    group_id = event.detail.resource_id
    changes = _changed_properties(event)
    before: list[dict[str, Any]] = []
    after: list[dict[str, Any]] = []
    for name, raw in changes.items():
        if not _under(name, "ippermissions", "ippermissionsegress"):
            continue
        direction = "egress" if _under(name, "ippermissionsegress") else "ingress"
        previous, updated, _ = _values(raw)
        before += _config_permissions(as_dict(previous), direction)
        after += _config_permissions(as_dict(updated), direction)
    # Only access that exists after the change and did not before opens anything: a revoked rule
    # (changeType DELETE, only a previousValue) or an element rewritten with the same rules does not.
    known = {_fingerprint(perm) for perm in before}
    opened = [perm for perm in after if _fingerprint(perm) not in known]
    evidence: dict[str, Any] = {"group_id": group_id, "changed_properties": clip(sorted(changes))}
    if not opened:
        why = (
            f"the change to security group {group_id} adds no access"
            f"{' (rules revoked)' if before else ''}: nothing was opened."
        )
        return _not_a_change(Kind.PORT_OPENED, group_id, why, evidence)
    return Facts(
        Kind.PORT_OPENED,
        port_severity(opened),
        f"Configuration of security group {group_id} changed: {describe_permissions(opened)}.",
        resource_ids=[group_id],
        evidence={**evidence, "permissions": opened[:MAX_ITEMS]},
    )


# ---------------------------------------------------------------- network ACLs


def _acl_entry(value: object) -> dict[str, Any] | None:
    entry = as_dict(value)
    if not entry:
        return None
    raw_egress = _pick(entry, "egress")
    egress = raw_egress is True or (isinstance(raw_egress, str) and raw_egress.lower() == "true")
    port_range = as_dict(_pick(entry, "portRange"))
    return {
        "direction": "egress" if egress else "ingress",
        "protocol": protocol_of(_pick(entry, "protocol")),
        "from_port": int_of(_pick(port_range, "from")),
        "to_port": int_of(_pick(port_range, "to")),
        "cidr": text_of(_pick(entry, "cidrBlock")) or text_of(_pick(entry, "ipv6CidrBlock")),
        "rule_number": int_of(_pick(entry, "ruleNumber")),
        "rule_action": (text_of(_pick(entry, "ruleAction")) or "unknown").lower()[:16],
    }


def _config_network_acl(event: ConfigEvent) -> Facts:
    acl_id = event.detail.resource_id
    changes = _changed_properties(event)
    before, after = _elements(changes, "entries")
    known = [_acl_entry(e) for e in before]
    # A deny entry blocks; an allow entry that was not there before may open a port.
    allowed = [
        entry
        for entry in (_acl_entry(e) for e in after)
        if entry is not None and entry["rule_action"] != "deny" and entry not in known
    ]
    old_subnets, new_subnets = (
        {text_of(_pick(a, "subnetId")) for a in side} - {None} for side in _elements(changes, "associations")
    )
    joined = sorted(s for s in new_subnets - old_subnets if s)
    evidence: dict[str, Any] = {"network_acl_id": acl_id, "changed_properties": clip(sorted(changes))}
    if allowed:
        critical = any(e["direction"] == "ingress" and is_world(e["cidr"]) for e in allowed)
        first = allowed[0]
        return Facts(
            Kind.PORT_OPENED,
            Severity.CRITICAL if critical else Severity.HIGH,
            f"Configuration of network ACL {acl_id} changed: allow {first['direction']} protocol "
            f"{first['protocol']} {describe_ports(first['from_port'], first['to_port'])} "
            f"{'to' if first['direction'] == 'egress' else 'from'} {first['cidr'] or '?'}"
            f"{f' and {len(allowed) - 1} more' if len(allowed) > 1 else ''}.",
            resource_ids=[acl_id],
            evidence={**evidence, "permissions": allowed[:MAX_ITEMS]},
        )
    if joined:
        return Facts(
            Kind.NETWORK_PATH_CHANGED,
            Severity.HIGH,
            f"Subnet(s) {', '.join(joined[:5])} now use network ACL {acl_id}.",
            resource_ids=[acl_id],
            evidence={**evidence, "subnet_ids": joined[:MAX_ITEMS]},
        )
    why = (
        f"the change to network ACL {acl_id} allows nothing new (deny entries, removals): nothing was opened."
    )
    return _not_a_change(Kind.PORT_OPENED, acl_id, why, evidence)


# ---------------------------------------------------------------- instances


def _group_set(elements: Iterable[Any], nested: bool) -> set[str]:
    """Group ids of securityGroups elements, or (nested) of networkInterfaces elements' groups."""
    ids: set[str] = set()
    for element in elements:
        groups = items_of(_pick(element, "groups")) if nested else [element]
        ids.update(gid for gid in (text_of(_pick(g, "groupId")) for g in groups) if gid)
    return ids


def _interfaces(elements: Iterable[Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for element in elements:
        eni_id = text_of(_pick(element, "networkInterfaceId"))
        if eni_id:
            found[eni_id] = as_dict(element)
    return found


def _public_ip(value: object) -> tuple[str | None, bool]:
    """(public IP, whether it is an Elastic IP) of an association element."""
    association = as_dict(_pick(value, "association"))
    address = text_of(_pick(association, "publicIp"))
    owner = text_of(_pick(association, "ipOwnerId"))
    elastic = bool(_pick(association, "allocationId")) or (owner is not None and owner != "amazon")
    return address, elastic


class _InstanceChange:
    """What an instance item's diff says changed, sorted into what the guard acts on."""

    def __init__(self, changes: dict[str, Any]) -> None:
        self.state_changed = any(_under(name, "state") for name in changes)
        previous_groups, updated_groups = _elements(changes, "securitygroups")
        previous_enis, updated_enis = (_interfaces(side) for side in _elements(changes, "networkinterfaces"))
        self.groups_added = sorted(
            (_group_set(updated_groups, False) - _group_set(previous_groups, False))
            | (_group_set(updated_enis.values(), True) - _group_set(previous_enis.values(), True))
        )
        self.groups_changed = bool(self.groups_added) or (
            _group_set(updated_groups, False) != _group_set(previous_groups, False)
            or _group_set(updated_enis.values(), True) != _group_set(previous_enis.values(), True)
        )
        self.interfaces_attached = sorted(set(updated_enis) - set(previous_enis))
        self.interfaces_detached = sorted(set(previous_enis) - set(updated_enis))
        self.public_ips: list[str] = []
        for eni_id, updated in updated_enis.items():
            address, elastic = _public_ip(updated)
            old_address, _ = _public_ip(previous_enis.get(eni_id, {}))
            # EC2 gives an instance a new public IP on every start: with a state change, only an
            # Elastic IP association is a change.
            if address and address != old_address and (elastic or not self.state_changed):
                self.public_ips.append(address)
        for name, raw in changes.items():
            if _under(name, *_PUBLIC_ADDRESS_FIELDS) and _field(name) == "publicipaddress":
                _, updated_ip, _ = _values(raw)
                if isinstance(updated_ip, str) and updated_ip and not self.state_changed:
                    self.public_ips.append(updated_ip)
        self.public_ips = list(unique(self.public_ips))
        self.profile_changed = any(_under(name, "iaminstanceprofile") for name in changes)
        self.disks_changed = any(_under(name, "blockdevicemappings") for name in changes)
        self.metadata_changed = any(_under(name, "metadataoptions") for name in changes)
        self.tag_changes = _tag_changes(changes)
        handled = (
            *_TAG_FIELDS,
            "securitygroups",
            "networkinterfaces",
            "iaminstanceprofile",
            "blockdevicemappings",
            "metadataoptions",
            *_TRANSITION_FIELDS,
            *_PUBLIC_ADDRESS_FIELDS,
        )
        self.other = sorted(
            name
            for name in changes
            if not _under(name, *handled) and not _field(name).startswith("relationships")
        )
        # Anything else is a transition field (state, launch time, an auto-assigned address, an interface
        # element rewritten with the same groups and attachment), or a relationship mirroring one.
        self.interfaces_moved = bool(self.interfaces_attached or self.interfaces_detached)
        self.significant = bool(
            self.groups_changed
            or self.interfaces_moved
            or self.public_ips
            or self.profile_changed
            or self.disks_changed
            or self.metadata_changed
            or self.tag_changes
            or self.other
        )
        configuration_changed = any(not _field(name).startswith("relationships") for name in changes)
        self.transition_only = configuration_changed and not self.significant
        self.tags_only = bool(self.tag_changes) and all(
            _under(name, *_TAG_FIELDS) or _field(name).startswith("relationships") for name in changes
        )


def _config_instance(event: ConfigEvent) -> Facts:
    instance_id = event.detail.resource_id
    changes = _changed_properties(event)
    changed = sorted(changes)
    evidence: dict[str, Any] = {"changed_properties": clip(changed)}
    item = event.detail.configuration_item
    if item is not None and item.tags is not None:
        evidence[INSTANCE_TAGS_EVIDENCE_KEY] = clip(item.tags)
    if event.detail.is_oversized:
        location = event.detail.s3_delivery_summary
        evidence["oversized"] = True
        evidence["s3_location"] = location.s3_bucket_location if location is not None else None
        return Facts(
            Kind.INSTANCE_MODIFIED,
            Severity.MEDIUM,
            f"Configuration of instance {instance_id} changed (details in the full item).",
            resource_ids=[instance_id],
            instance_ids=[instance_id],
            evidence=evidence,
        )
    if event.detail.configuration_item_diff is None:
        # No diff at all: what changed cannot be told, so the item counts as a change.
        return Facts(
            Kind.INSTANCE_MODIFIED,
            Severity.MEDIUM,
            f"Configuration of instance {instance_id} changed (the item carries no diff).",
            resource_ids=[instance_id],
            instance_ids=[instance_id],
            evidence=evidence,
        )
    if not changes:
        return _not_a_change(
            Kind.INSTANCE_MODIFIED, instance_id, "Config reported no changed property.", evidence
        )
    change = _InstanceChange(changes)
    if change.transition_only:
        why = "only its state changed (a start, stop or reboot); the server itself did not."
        return _not_a_change(Kind.INSTANCE_MODIFIED, instance_id, why, evidence)
    if change.tag_changes:
        evidence[TAG_CHANGES_EVIDENCE_KEY] = change.tag_changes
        evidence[TAGS_ONLY_EVIDENCE_KEY] = change.tags_only
        if item is not None and item.tags is not None:
            evidence[PREVIOUS_TAGS_EVIDENCE_KEY] = _previous_tags(item.tags, change.tag_changes)
    evidence[RELEASE_SHAPED_EVIDENCE_KEY] = (
        (change.groups_changed or change.profile_changed or bool(change.tag_changes))
        and not (change.public_ips or change.interfaces_moved or change.disks_changed)
        and not (change.metadata_changed or change.other)
        and all(key.startswith(GUARD_TAG_PREFIX) for key in change.tag_changes)
    )
    what = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
    kind, severity, summary = (
        Kind.INSTANCE_MODIFIED,
        Severity.MEDIUM,
        f"Configuration of instance {instance_id} changed ({what}).",
    )
    if change.groups_changed or change.public_ips:
        kind, severity = Kind.PORT_OPENED, Severity.HIGH
        parts = []
        if change.groups_changed:
            parts.append(f"security groups changed (added: {', '.join(change.groups_added) or 'none'})")
        if change.public_ips:
            parts.append(f"public address {', '.join(change.public_ips)} associated")
        summary = f"Instance {instance_id}: {'; '.join(parts)}."
        evidence["groups_added"] = change.groups_added
        evidence["public_ips"] = change.public_ips
    elif change.interfaces_moved:
        kind, severity = Kind.NETWORK_PATH_CHANGED, Severity.HIGH
        summary = (
            f"Network interfaces of instance {instance_id} changed (attached: "
            f"{', '.join(change.interfaces_attached) or 'none'}; detached: "
            f"{', '.join(change.interfaces_detached) or 'none'})."
        )
        evidence["interfaces_attached"] = change.interfaces_attached
        evidence["interfaces_detached"] = change.interfaces_detached
    elif change.profile_changed:
        kind, severity = Kind.IAM_PROFILE_CHANGED, Severity.HIGH
        summary = f"IAM instance profile of instance {instance_id} changed."
    elif change.disks_changed:
        kind, severity = Kind.DISK_CHANGED, Severity.HIGH
        summary = f"Block devices of instance {instance_id} changed."
    elif change.metadata_changed:
        severity = Severity.HIGH
        summary = f"Metadata options of instance {instance_id} changed."
    elif change.tags_only:
        shown = ", ".join(list(change.tag_changes)[:5])
        summary = f"Tags of instance {instance_id} changed: {shown}."
    return Facts(
        kind, severity, summary, resource_ids=[instance_id], instance_ids=[instance_id], evidence=evidence
    )


# ---------------------------------------------------------------- interfaces, volumes, addresses


def _attached_instance(value: object) -> str | None:
    return text_of(_pick(_pick(value, "attachment"), "instanceId"))


def _config_network_interface(event: ConfigEvent) -> Facts:
    eni_id = event.detail.resource_id
    changes = _changed_properties(event)
    item = event.detail.configuration_item
    configuration = item.configuration if item is not None else None
    evidence: dict[str, Any] = {"network_interface_id": eni_id, "changed_properties": clip(sorted(changes))}
    previous_groups, updated_groups = _elements(changes, "groups")
    added = sorted(_group_set(updated_groups, False) - _group_set(previous_groups, False))
    groups_changed = _group_set(updated_groups, False) != _group_set(previous_groups, False)
    before_instance = after_instance = None
    for name, raw in changes.items():
        if _under(name, "attachment"):
            previous, updated, _ = _values(raw)
            if _field(name) == "attachment.instanceid":
                before_instance, after_instance = text_of(previous), text_of(updated)
            elif _field(name) == "attachment":
                before_instance = text_of(_pick(previous, "instanceId"))
                after_instance = text_of(_pick(updated, "instanceId"))
    current = _attached_instance(configuration)
    instances = [i for i in (after_instance, before_instance, current) if i]
    public_ips = []
    for name, raw in changes.items():
        if _under(name, "association"):
            previous, updated, _ = _values(raw)
            address = text_of(_pick(updated, "publicIp")) if isinstance(updated, dict) else None
            if _field(name) == "association.publicip":
                address = text_of(updated)
            if address and address != (
                text_of(_pick(previous, "publicIp")) if isinstance(previous, dict) else previous
            ):
                public_ips.append(address)
    if groups_changed or public_ips:
        evidence.update({"groups_added": added, "public_ips": public_ips})
        evidence[RELEASE_SHAPED_EVIDENCE_KEY] = not public_ips and before_instance == after_instance
        return Facts(
            Kind.PORT_OPENED,
            Severity.HIGH,
            f"Network interface {eni_id}: "
            + "; ".join(
                p
                for p in (
                    f"security groups changed (added: {', '.join(added) or 'none'})"
                    if groups_changed
                    else "",
                    f"public address {', '.join(public_ips)} associated" if public_ips else "",
                )
                if p
            )
            + ".",
            resource_ids=[eni_id],
            instance_ids=instances,
            evidence=evidence,
        )
    if before_instance != after_instance:
        evidence.update({"attached_to": after_instance, "detached_from": before_instance})
        return Facts(
            Kind.NETWORK_PATH_CHANGED,
            Severity.HIGH,
            f"Network interface {eni_id} "
            + (f"attached to {after_instance}" if after_instance else f"detached from {before_instance}")
            + ".",
            resource_ids=[eni_id],
            instance_ids=[i for i in (after_instance, before_instance) if i],
            evidence=evidence,
        )
    why = (
        f"the change to network interface {eni_id} moves neither its groups, its address nor its attachment."
    )
    return _not_a_change(Kind.NETWORK_PATH_CHANGED, eni_id, why, evidence)


def _config_volume(event: ConfigEvent) -> Facts:
    volume_id = event.detail.resource_id
    changes = _changed_properties(event)
    before, after = _elements(changes, "attachments")
    old = {text_of(_pick(a, "instanceId")) for a in before} - {None}
    new = {text_of(_pick(a, "instanceId")) for a in after} - {None}
    evidence: dict[str, Any] = {"volume_id": volume_id, "changed_properties": clip(sorted(changes))}
    # An attachment element rewritten for its own state (attaching -> attached) names the same instance.
    attached, detached = sorted(i for i in new - old if i), sorted(i for i in old - new if i)
    if attached or detached:
        evidence.update({"attached_to": attached, "detached_from": detached})
        return Facts(
            Kind.DISK_CHANGED,
            Severity.HIGH,
            f"Volume {volume_id} "
            + "; ".join(
                p
                for p in (
                    f"attached to {', '.join(attached)}" if attached else "",
                    f"detached from {', '.join(detached)}" if detached else "",
                )
                if p
            )
            + ".",
            resource_ids=[volume_id, *attached, *detached],
            instance_ids=[*attached, *detached],
            evidence=evidence,
        )
    why = (
        f"volume {volume_id} was neither attached nor detached (its state, tags or attachment status moved)."
    )
    return _not_a_change(Kind.DISK_CHANGED, volume_id, why, evidence)


def _config_address(event: ConfigEvent) -> Facts:
    allocation_id = event.detail.resource_id
    changes = _changed_properties(event)
    item = event.detail.configuration_item
    configuration = as_dict(item.configuration if item is not None else None)
    evidence: dict[str, Any] = {"allocation_id": allocation_id, "changed_properties": clip(sorted(changes))}
    associated = {
        _field(name): text_of(_values(raw)[1])
        for name, raw in changes.items()
        if _field(name) in ("instanceid", "networkinterfaceid", "associationid")
    }
    instance_id = associated.get("instanceid")
    eni_id = associated.get("networkinterfaceid")
    if instance_id or eni_id or associated.get("associationid"):
        instance_id = instance_id or text_of(_pick(configuration, "instanceId"))
        eni_id = eni_id or text_of(_pick(configuration, "networkInterfaceId"))
        address = text_of(_pick(configuration, "publicIp")) or allocation_id
        evidence.update({"instance_id": instance_id, "network_interface_id": eni_id, "public_ip": address})
        return Facts(
            Kind.PORT_OPENED,
            Severity.HIGH,
            f"Elastic IP {address} associated with {instance_id or eni_id or 'a resource'}.",
            resource_ids=[eni_id, instance_id],
            instance_ids=[instance_id],
            evidence=evidence,
            alert_if_unresolved=not (instance_id or eni_id),
        )
    why = f"Elastic IP {allocation_id} was not associated with anything (a release, a disassociation, tags)."
    return _not_a_change(Kind.PORT_OPENED, allocation_id, why, evidence)


# ---------------------------------------------------------------- files (SSM Inventory)

# File fields that move when the file is read, or with the inventory run, not with its content.
_NOT_CONTENT: Final = frozenset({"lastaccesstime"})


def _file_path(name: str, value: dict[str, Any]) -> str | None:
    directory, file_name = text_of(value.get("InstalledDir")), text_of(value.get("Name"))
    if directory and file_name:
        return f"{directory.rstrip('/')}/{file_name}"
    _, _, rest = name.partition("AWS:File")
    return rest.removeprefix(".Content").removeprefix(".") or None


def _file_content_changed(previous: dict[str, Any], updated: dict[str, Any]) -> bool:
    """Created, deleted, or a content-bearing field (size, modification time, a hash if collected,
    version) differs; the access time alone is not a change."""
    if not previous or not updated:
        return True
    keys = {k for k in (*previous, *updated) if str(k).lower() not in _NOT_CONTENT}
    return any(previous.get(k) != updated.get(k) for k in keys)


def _config_inventory(event: ConfigEvent) -> Facts:
    instance_id = event.detail.resource_id
    changes = _changed_properties(event)
    paths: list[str] = []
    other_types: list[str] = []
    for name, raw in changes.items():
        previous, updated, kind = _values(raw)
        field = name.removeprefix("Configuration.")
        inventory_type = field.split(".", 1)[0]
        if inventory_type != "AWS:File":
            if inventory_type.startswith(("AWS:", "Custom:")) and inventory_type != "AWS:InstanceInformation":
                other_types.append(inventory_type)
            continue
        if not isinstance(previous, dict) and not isinstance(updated, dict):
            # One field of a file record: Configuration.AWS:File.Content.<path>.<Field>
            if name.rsplit(".", 1)[-1].lower() in _NOT_CONTENT | {"capturetime", "schemaversion"}:
                continue
            _, _, rest = name.partition("AWS:File.Content.")
            if rest:
                paths.append(rest.rsplit(".", 1)[0])
            continue
        before, after = as_dict(previous), as_dict(updated)
        if "Content" in before or "Content" in after:
            # The whole AWS:File type: compare its files one by one.
            old_files, new_files = as_dict(before.get("Content")), as_dict(after.get("Content"))
            for key in dict.fromkeys([*old_files, *new_files]):
                if _file_content_changed(as_dict(old_files.get(key)), as_dict(new_files.get(key))):
                    paths.append(str(key))
            continue
        if kind in ("CREATE", "DELETE") or _file_content_changed(before, after):
            path = _file_path(name, after or before)
            if path:
                paths.append(path)
    item = event.detail.configuration_item
    if event.detail.configuration_item_diff is None and item is not None:
        # No diff (first recording): what changed cannot be told, so every file the item lists counts.
        content = as_dict(as_dict(as_dict(item.configuration).get("AWS:File")).get("Content"))
        paths.extend(str(key) for key in content)
    paths = list(unique(paths))
    evidence: dict[str, Any] = {
        "changed_properties": clip(sorted(changes)),
        "oversized": event.detail.is_oversized,
    }
    if event.detail.is_oversized:
        return Facts(
            Kind.FILE_CHANGED,
            Severity.HIGH,
            f"Files changed on {instance_id} as seen by SSM Inventory: see the full item.",
            resource_ids=[instance_id],
            instance_ids=[instance_id],
            evidence=evidence,
        )
    if not paths and not other_types:
        why = (
            f"no watched file on {instance_id} changed its content (only access times or inventory metadata)."
        )
        return _not_a_change(Kind.FILE_CHANGED, instance_id, why, evidence)
    shown = ", ".join(paths[:5]) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")
    if not paths:
        shown = f"inventory {', '.join(unique(other_types))}"
    return Facts(
        Kind.FILE_CHANGED,
        Severity.HIGH,
        f"Files changed on {instance_id} as seen by SSM Inventory: {shown}.",
        resource_ids=[instance_id],
        instance_ids=[instance_id],
        evidence={**evidence, "paths": clip(paths), "inventory_types": list(unique(other_types))},
    )


def _config_file_data(event: ConfigEvent) -> Facts:
    """AWS::SSM::FileData: no documented diff shape to read content fields from; any change counts."""
    instance_id = event.detail.resource_id
    changed = sorted(_changed_properties(event))
    return Facts(
        Kind.FILE_CHANGED,
        Severity.HIGH,
        f"Files changed on {instance_id} as seen by SSM Inventory: "
        f"{', '.join(changed[:5]) or 'see the item'}.",
        resource_ids=[instance_id],
        instance_ids=[instance_id],
        evidence={"paths": clip(changed), "oversized": event.detail.is_oversized},
    )


# ---------------------------------------------------------------- dispatch

ConfigHandler = Callable[[ConfigEvent], Facts]


def _status_of(event: ConfigEvent) -> str | None:
    detail = event.detail
    if detail.configuration_item is not None:
        return detail.configuration_item.configuration_item_status
    assert detail.configuration_item_summary is not None
    return detail.configuration_item_summary.configuration_item_status


def _related_events(event: ConfigEvent) -> list[str]:
    item = event.detail.configuration_item
    if item is None or not item.related_events:
        return []
    return [e for e in item.related_events if isinstance(e, str) and e][:MAX_ITEMS]


def _judged(handler: ConfigHandler, kind: Kind) -> ConfigHandler:
    """The handler behind the checks every item shares: a status that records no change, and the
    CloudTrail events the item names as its cause."""

    def handle(event: ConfigEvent) -> Facts:
        status = _status_of(event)
        if status in _NOT_CHANGES:
            item = event.detail.configuration_item
            evidence: dict[str, Any] = {"status": status}
            if item is not None and item.tags is not None and item.resource_id.startswith("i-"):
                evidence[INSTANCE_TAGS_EVIDENCE_KEY] = clip(item.tags)
            facts = _not_a_change(
                kind, event.detail.resource_id, f"status {status}: {_NOT_CHANGES[status]}", evidence
            )
        else:
            facts = handler(event)
        related = _related_events(event)
        if related:
            facts.evidence[RELATED_EVENTS_EVIDENCE_KEY] = clip(related)
        return facts

    return handle


CONFIG_HANDLERS: Final[dict[str, ConfigHandler]] = {
    "AWS::EC2::SecurityGroup": _judged(_config_security_group, Kind.PORT_OPENED),
    "AWS::EC2::Instance": _judged(_config_instance, Kind.INSTANCE_MODIFIED),
    "AWS::EC2::NetworkAcl": _judged(_config_network_acl, Kind.PORT_OPENED),
    "AWS::EC2::NetworkInterface": _judged(_config_network_interface, Kind.NETWORK_PATH_CHANGED),
    "AWS::EC2::Volume": _judged(_config_volume, Kind.DISK_CHANGED),
    "AWS::EC2::EIP": _judged(_config_address, Kind.PORT_OPENED),
    "AWS::SSM::ManagedInstanceInventory": _judged(_config_inventory, Kind.FILE_CHANGED),
    "AWS::SSM::FileData": _judged(_config_file_data, Kind.FILE_CHANGED),
}
"""resourceType -> handler. template.yaml's ConfigItemChanged rules and the recorder list the same types."""
