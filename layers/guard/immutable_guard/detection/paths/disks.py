"""What a server boots and reads from, changed under it: volumes attached or detached, its root volume
replaced, and its instance metadata service options (the path to its role's credentials)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from immutable_guard.detection.readers import Facts, Handler, as_dict, first_of, int_of, text_of
from immutable_guard.detection.scope_resolvers import Resolver
from immutable_guard.model import Kind, Severity

if TYPE_CHECKING:
    from immutable_guard.detection.events import CloudTrailDetail


def _flag(value: object) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


def _volume(detail: CloudTrailDetail) -> Facts:
    # AttachVolume names the instance in its request; DetachVolume may name only the volume, and its
    # response then says which instance it left. A volume is not resolved to its instances: a
    # Multi-Attach volume is on several, and only the one named changed.
    request = detail.request_parameters or {}
    response = detail.response_elements or {}
    volume_id = text_of(request.get("volumeId")) or text_of(first_of(response, "volumeId", "VolumeId"))
    instance_id = text_of(request.get("instanceId")) or text_of(
        first_of(response, "instanceId", "InstanceId")
    )
    device = text_of(request.get("device")) or text_of(first_of(response, "device", "Device"))
    attach = detail.event_name == "AttachVolume"
    forced = _flag(request.get("force")) is True
    verb = "attached to" if attach else "detached from"
    what = f"Volume {volume_id or '?'} {verb} {instance_id or 'an instance'}"
    return Facts(
        Kind.DISK_CHANGED,
        Severity.HIGH,
        f"{what}{f' as {device}' if device else ''}{' (forced)' if forced else ''}.",
        resource_ids=[instance_id or volume_id],
        instance_ids=[instance_id],
        evidence={"volume_id": volume_id, "device": device, "operation": detail.event_name, "forced": forced},
        alert_if_unresolved=True,
    )


def _replace_root_volume(detail: CloudTrailDetail) -> Facts:
    request = as_dict(first_of(detail.request_parameters or {}, "CreateReplaceRootVolumeTaskRequest")) or (
        detail.request_parameters or {}
    )
    response = as_dict(first_of(detail.response_elements or {}, "CreateReplaceRootVolumeTaskResponse"))
    task = as_dict(first_of(response, "replaceRootVolumeTask", "ReplaceRootVolumeTask"))
    instance_id = text_of(first_of(request, "InstanceId", "instanceId")) or text_of(
        first_of(task, "instanceId", "InstanceId")
    )
    source = (
        text_of(first_of(request, "ImageId", "imageId"))
        or text_of(first_of(request, "SnapshotId", "snapshotId"))
        or "its launch state"
    )
    return Facts(
        Kind.DISK_CHANGED,
        Severity.HIGH,
        f"Root volume of {instance_id or 'an instance'} replaced from {source}.",
        resource_ids=[instance_id],
        instance_ids=[instance_id],
        evidence={
            "source": source,
            "task_id": text_of(first_of(task, "replaceRootVolumeTaskId", "ReplaceRootVolumeTaskId")),
            "delete_replaced_root_volume": _flag(first_of(request, "DeleteReplacedRootVolume")),
        },
        alert_if_unresolved=True,
    )


# The options that widen who can read the metadata service, and so the role's credentials: IMDSv1
# (no session token, reachable through any request forgery), a hop limit above 1 (containers and
# forwarded hops), and the endpoint switched on without requiring tokens in the same call.
def _loosened(options: dict[str, Any]) -> list[str]:
    tokens = (text_of(options.get("HttpTokens")) or "").lower()
    hops = int_of(options.get("HttpPutResponseHopLimit"))
    endpoint = (text_of(options.get("HttpEndpoint")) or "").lower()
    found = []
    if tokens == "optional":
        found.append("IMDSv1 allowed (HttpTokens optional)")
    if hops is not None and hops > 1:
        found.append(f"hop limit {hops}")
    if endpoint == "enabled" and tokens != "required":
        found.append("metadata endpoint enabled without requiring tokens")
    return found


def _metadata_options(detail: CloudTrailDetail) -> Facts:
    request = detail.request_parameters or {}
    wrapped = as_dict(first_of(request, "ModifyInstanceMetadataOptionsRequest")) or request
    # Hand-written and SDK-shaped records spell the fields in lowerCamel; read both.
    options = {
        key: first_of(wrapped, key, key[:1].lower() + key[1:])
        for key in (
            "HttpTokens",
            "HttpPutResponseHopLimit",
            "HttpEndpoint",
            "HttpProtocolIpv6",
            "InstanceMetadataTags",
        )
    }
    options = {key: value for key, value in options.items() if value is not None}
    instance_id = text_of(first_of(wrapped, "InstanceId", "instanceId"))
    loosened = _loosened(options)
    changes = ", ".join(f"{key}={value}" for key, value in options.items()) or "no readable option"
    # Any change to a running immutable server is a mutation; one that opens the credentials path is
    # worse than one that closes it.
    return Facts(
        Kind.INSTANCE_MODIFIED,
        Severity.HIGH if loosened else Severity.MEDIUM,
        f"Instance metadata options of {instance_id or 'an instance'} changed ({changes})"
        f"{': ' + '; '.join(loosened) if loosened else ''}.",
        resource_ids=[instance_id],
        instance_ids=[instance_id],
        evidence={"metadata_options": {k: str(v)[:64] for k, v in options.items()}, "loosened": loosened},
        alert_if_unresolved=True,
    )


HANDLERS: Final[dict[tuple[str, str], Handler]] = {
    ("ec2.amazonaws.com", "AttachVolume"): _volume,
    ("ec2.amazonaws.com", "DetachVolume"): _volume,
    ("ec2.amazonaws.com", "CreateReplaceRootVolumeTask"): _replace_root_volume,
    ("ec2.amazonaws.com", "ModifyInstanceMetadataOptions"): _metadata_options,
}
"""(eventSource, eventName) -> handler, for the CloudTrail records of this path."""

RESOLVERS: Final[tuple[Resolver, ...]] = ()
"""Every record of this path names its instance (a detach that does not is alerted)."""
