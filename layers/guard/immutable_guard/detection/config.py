"""Turns AWS Config configuration item changes into Facts. Config items carry no actor; what changed is in
`configurationItemDiff.changedProperties`, in the shape of the service's Describe API."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from immutable_guard.detection.events import ConfigEvent
from immutable_guard.detection.readers import (
    INSTANCE_TAGS_EVIDENCE_KEY,
    MAX_ITEMS,
    Facts,
    as_dict,
    clip,
    describe_permissions,
    items_of,
    permission,
    port_severity,
    text_of,
    unique,
)
from immutable_guard.model import Kind, Severity


def _changed_properties(event: ConfigEvent) -> dict[str, Any]:
    diff = event.detail.configuration_item_diff
    return diff.changed_properties if diff is not None else {}


def _config_security_group(event: ConfigEvent) -> Facts:
    group_id = event.detail.resource_id
    permissions: list[dict[str, Any]] = []
    for name, raw in _changed_properties(event).items():
        change = as_dict(raw)
        lowered = name.lower()
        if not lowered.startswith("configuration.ippermissions"):
            continue
        direction = "egress" if lowered.startswith("configuration.ippermissionsegress") else "ingress"
        # Config records the item in DescribeSecurityGroups' shape: plain lists, camelCase keys.
        perm = as_dict(change.get("updatedValue"))
        if not perm:
            continue
        base = permission(perm.get("ipProtocol"), perm.get("fromPort"), perm.get("toPort"), direction)
        cidrs = [text_of(as_dict(r).get("cidrIp")) for r in items_of(perm.get("ipv4Ranges"))]
        cidrs += [text_of(as_dict(r).get("cidrIpv6")) for r in items_of(perm.get("ipv6Ranges"))]
        cidrs += [r for r in items_of(perm.get("ipRanges")) if isinstance(r, str)]
        for cidr in unique(cidrs):
            permissions.append({**base, "cidr": cidr})
        for pair in items_of(perm.get("userIdGroupPairs")):
            permissions.append({**base, "source_group_id": text_of(as_dict(pair).get("groupId"))})
    summary = (
        f"Configuration of security group {group_id} changed: {describe_permissions(permissions)}."
        if permissions
        else f"Configuration of security group {group_id} changed."
    )
    return Facts(
        Kind.PORT_OPENED,
        port_severity(permissions),
        summary,
        resource_ids=[group_id],
        evidence={
            "group_id": group_id,
            "permissions": permissions[:MAX_ITEMS],
            "changed_properties": clip(sorted(_changed_properties(event))),
        },
    )


def _config_instance(event: ConfigEvent) -> Facts:
    instance_id = event.detail.resource_id
    changed = sorted(_changed_properties(event))
    evidence: dict[str, Any] = {"changed_properties": clip(changed)}
    item = event.detail.configuration_item
    if item is not None and item.tags is not None:
        evidence[INSTANCE_TAGS_EVIDENCE_KEY] = clip(item.tags)
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
    return Facts(
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
        change = as_dict(raw)
        value = as_dict(change.get("updatedValue")) or as_dict(change.get("previousValue"))
        directory, file_name = text_of(value.get("InstalledDir")), text_of(value.get("Name"))
        if directory and file_name:
            paths.append(f"{directory.rstrip('/')}/{file_name}")
        elif rest:
            paths.append(rest)
    if not paths and event.detail.configuration_item is not None:
        # No diff (first recording): fall back to the files the item lists.
        content = as_dict(
            as_dict(as_dict(event.detail.configuration_item.configuration).get("AWS:File")).get("Content")
        )
        paths.extend(str(key) for key in content)
    return list(unique(paths))


def _config_file(event: ConfigEvent) -> Facts:
    instance_id = event.detail.resource_id
    paths = _file_paths(event)
    shown = ", ".join(paths[:5]) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")
    return Facts(
        Kind.FILE_CHANGED,
        Severity.HIGH,
        f"Files changed on {instance_id} as seen by SSM Inventory: {shown or 'see the item'}.",
        resource_ids=[instance_id],
        instance_ids=[instance_id],
        evidence={"paths": clip(paths), "oversized": event.detail.is_oversized},
    )


CONFIG_HANDLERS: Final[dict[str, Callable[[ConfigEvent], Facts]]] = {
    "AWS::EC2::SecurityGroup": _config_security_group,
    "AWS::EC2::Instance": _config_instance,
    "AWS::SSM::ManagedInstanceInventory": _config_file,
    "AWS::SSM::FileData": _config_file,
}
