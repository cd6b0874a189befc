"""Evidence: snapshot every EBS volume of a quarantined instance, wait until the snapshots are completed,
and store a write-once manifest that ties them to the incident. Nothing is nuked without it."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any, Literal

from botocore.exceptions import ClientError
from pydantic import ConfigDict, Field

from immutable_guard.errors import (
    AwsCallFailed,
    EvidenceIncomplete,
    InstanceNotFound,
    SnapshotFailed,
)
from immutable_guard.ledger import IncidentLedger, Status, now_iso
from immutable_guard.step_input import InstancePlace

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client

    from immutable_guard.clients import Clients

MANIFEST_SCHEMA_VERSION = "1"

TAG_INCIDENT = "immutable-guard:incident"
TAG_INSTANCE = "immutable-guard:instance"
TAG_VOLUME = "immutable-guard:volume"
TAG_DEVICE = "immutable-guard:device"
TAG_ACQUIRED_AT = "immutable-guard:acquired-at"

STAGE_SNAPSHOTS_STARTED = "snapshots_started"
STAGE_EVIDENCE_COMPLETE = "evidence_complete"

_NOT_FOUND_CODES = frozenset({"InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed"})


class EvidenceRequest(InstancePlace):
    """What the state machine passes to the Evidence function (one of three actions)."""

    model_config = ConfigDict(extra="ignore")

    action: Literal["start", "check", "manifest"]
    incident_id: str = Field(min_length=1)
    instance_id: str = Field(min_length=1)
    snapshot_ids: list[str] = Field(default_factory=list)
    polls: int = 0
    max_polls: int | None = None
    finding: dict[str, Any] = Field(default_factory=dict)


def manifest_key(incident_id: str) -> str:
    return f"incidents/{incident_id}/manifest.json"


def describe_instance(ec2: EC2Client, instance_id: str) -> dict[str, Any]:
    """The instance as EC2 describes it; InstanceNotFound when EC2 does not know it."""
    try:
        response = ec2.describe_instances(InstanceIds=[instance_id])
    except ClientError as exc:
        if exc.response["Error"]["Code"] in _NOT_FOUND_CODES:
            raise InstanceNotFound(f"instance {instance_id} does not exist") from exc
        raise AwsCallFailed(f"cannot describe instance {instance_id}: {exc}") from exc
    for reservation in response.get("Reservations", []):
        for instance in reservation.get("Instances", []):
            if instance.get("InstanceId") == instance_id:
                return dict(instance)
    raise InstanceNotFound(f"instance {instance_id} does not exist")


def attached_volumes(instance: Mapping[str, Any]) -> dict[str, str]:
    """Volume id -> device name of every EBS volume attached to the instance."""
    volumes: dict[str, str] = {}
    for mapping in instance.get("BlockDeviceMappings", []):
        ebs = mapping.get("Ebs") or {}
        if ebs.get("VolumeId"):
            volumes[ebs["VolumeId"]] = mapping.get("DeviceName", "")
    return volumes


def describe_snapshots(ec2: EC2Client, snapshot_ids: Sequence[str]) -> list[dict[str, Any]]:
    """The named snapshots; EvidenceIncomplete when any of them does not exist (any more)."""
    if not snapshot_ids:
        raise EvidenceIncomplete("no snapshot ids were given: there is no evidence to check")
    try:
        response = ec2.describe_snapshots(SnapshotIds=list(snapshot_ids))
    except ClientError as exc:
        if exc.response["Error"]["Code"] in ("InvalidSnapshot.NotFound", "InvalidSnapshotID.Malformed"):
            raise EvidenceIncomplete(f"snapshot missing among {', '.join(snapshot_ids)}: {exc}") from exc
        raise AwsCallFailed(f"cannot describe snapshots {', '.join(snapshot_ids)}: {exc}") from exc
    snapshots = [dict(s) for s in response.get("Snapshots", [])]
    missing = sorted(set(snapshot_ids) - {s["SnapshotId"] for s in snapshots})
    if missing:
        raise EvidenceIncomplete(f"snapshots {', '.join(missing)} do not exist")
    return snapshots


def _incident_snapshots(ec2: EC2Client, incident_id: str) -> list[dict[str, Any]]:
    snapshots: list[dict[str, Any]] = []
    paginator = ec2.get_paginator("describe_snapshots")
    try:
        for page in paginator.paginate(
            OwnerIds=["self"], Filters=[{"Name": f"tag:{TAG_INCIDENT}", "Values": [incident_id]}]
        ):
            snapshots.extend(dict(s) for s in page.get("Snapshots", []))
    except ClientError as exc:
        raise AwsCallFailed(f"cannot list snapshots of incident {incident_id}: {exc}") from exc
    return snapshots


def _tags(resource: Mapping[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in resource.get("Tags", []) if "Key" in t}


def _tag_each_snapshot(
    ec2: EC2Client, snapshots: Sequence[Mapping[str, Any]], devices: dict[str, str]
) -> None:
    # create_snapshots gives every snapshot the same tags: which volume and device a snapshot holds is
    # added one by one, and again on a re-run if a previous run stopped half-way.
    for snapshot in snapshots:
        tags = _tags(snapshot)
        wanted = {
            TAG_VOLUME: snapshot.get("VolumeId", ""),
            TAG_DEVICE: devices.get(snapshot.get("VolumeId", ""), ""),
        }
        missing = {k: v for k, v in wanted.items() if tags.get(k) != v}
        if not missing:
            continue
        try:
            ec2.create_tags(
                Resources=[snapshot["SnapshotId"]],
                Tags=[{"Key": k, "Value": v} for k, v in sorted(missing.items())],
            )
        except ClientError as exc:
            raise AwsCallFailed(f"cannot tag snapshot {snapshot['SnapshotId']}: {exc}") from exc


def _snapshot_result(snapshots: Sequence[Mapping[str, Any]], polls: int) -> dict[str, Any]:
    return {
        "snapshot_ids": sorted(s["SnapshotId"] for s in snapshots),
        "polls": polls,
        "all_completed": bool(snapshots) and all(s.get("State") == "completed" for s in snapshots),
    }


def start_snapshots(
    clients: Clients, ledger: IncidentLedger, incident_id: str, instance_id: str
) -> dict[str, Any]:
    """Snapshot every EBS volume of the instance (boot volume included) in one crash-consistent call.

    Parameters
    ----------
    clients:
        The boto3 bundle (uses ``ec2``).
    ledger:
        The incident ledger; stage ``snapshots_started`` is recorded.
    incident_id, instance_id:
        The incident and its instance.

    Returns
    -------
    dict
        ``{"snapshot_ids": [...], "polls": 0, "all_completed": bool}``. A re-run returns the snapshots
        the first run created instead of creating new ones.

    Raises
    ------
    InstanceNotFound
        The instance is gone.
    EvidenceIncomplete
        The instance has no EBS volume, so there is nothing to preserve.
    """
    ec2 = clients.ec2
    instance = describe_instance(ec2, instance_id)
    devices = attached_volumes(instance)
    snapshots = _incident_snapshots(ec2, incident_id)
    if not snapshots:
        if not devices:
            raise EvidenceIncomplete(f"instance {instance_id} has no EBS volume to snapshot")
        acquired_at = now_iso()
        try:
            response = ec2.create_snapshots(
                InstanceSpecification={"InstanceId": instance_id, "ExcludeBootVolume": False},
                Description=f"Immutable Guard evidence for incident {incident_id} ({instance_id})",
                TagSpecifications=[
                    {
                        "ResourceType": "snapshot",
                        "Tags": [
                            {"Key": TAG_INCIDENT, "Value": incident_id},
                            {"Key": TAG_INSTANCE, "Value": instance_id},
                            {"Key": TAG_ACQUIRED_AT, "Value": acquired_at},
                        ],
                    }
                ],
                # The volumes' own tags (Name, owner) help whoever investigates later.
                CopyTagsFromSource="volume",
            )
        except ClientError as exc:
            raise AwsCallFailed(f"cannot snapshot the volumes of instance {instance_id}: {exc}") from exc
        snapshots = [dict(s) for s in response.get("Snapshots", [])]
        if not snapshots:
            raise EvidenceIncomplete(f"EC2 created no snapshot for instance {instance_id}")
    _tag_each_snapshot(ec2, snapshots, devices)
    result = _snapshot_result(snapshots, polls=0)
    ledger.record_stage(
        incident_id, STAGE_SNAPSHOTS_STARTED, details={"snapshot_ids": result["snapshot_ids"]}
    )
    return result


def check_snapshots(
    clients: Clients, snapshot_ids: Sequence[str], polls: int, max_polls: int
) -> dict[str, Any]:
    """Poll the snapshots once.

    Returns
    -------
    dict
        ``{"snapshot_ids", "polls": polls + 1, "all_completed"}``.

    Raises
    ------
    SnapshotFailed
        A snapshot is in the ``error`` state.
    EvidenceIncomplete
        A snapshot vanished, or this was poll number ``max_polls`` and some are still pending.
    """
    snapshots = describe_snapshots(clients.ec2, snapshot_ids)
    failed = sorted(s["SnapshotId"] for s in snapshots if s.get("State") == "error")
    if failed:
        raise SnapshotFailed(f"snapshots {', '.join(failed)} ended in the error state")
    result = _snapshot_result(snapshots, polls=polls + 1)
    if not result["all_completed"] and result["polls"] >= max_polls:
        pending = sorted(s["SnapshotId"] for s in snapshots if s.get("State") != "completed")
        raise EvidenceIncomplete(
            f"snapshots {', '.join(pending)} still not completed after {result['polls']} polls"
        )
    return result


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_jsonable(v) for v in value]
    return value


def _iso(value: Any) -> str:
    # UTC, so that times compare as strings whatever zone the SDK parsed them in.
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return str(value)


def _console_output(ec2: EC2Client, instance_id: str) -> dict[str, Any]:
    # Console output is best effort: stopped instances, some instance types and fresh launches have none.
    try:
        response = ec2.get_console_output(InstanceId=instance_id)
    except ClientError as exc:
        return {"available": False, "reason": exc.response["Error"].get("Code", "unknown")}
    encoded = response.get("Output")
    if not encoded:
        return {"available": False, "reason": "empty"}
    try:
        text = base64.b64decode(encoded, validate=True).decode("utf-8", errors="replace")
    except binascii.Error:
        # EC2 documents base64; some emulators return the text itself. Keep whatever came.
        text = encoded
    # The response's Timestamp is left out: the manifest must hash the same when written again.
    return {"available": True, "output": text}


def build_manifest(
    clients: Clients,
    incident_id: str,
    instance_id: str,
    snapshots: Sequence[Mapping[str, Any]],
    finding: Mapping[str, Any],
) -> bytes:
    """The manifest as canonical JSON bytes (sorted keys, fixed times), so a re-run hashes the same."""
    instance = describe_instance(clients.ec2, instance_id)
    devices = attached_volumes(instance)
    acquired_at = min(_iso(s["StartTime"]) for s in snapshots)
    manifest = {
        "schema_version": MANIFEST_SCHEMA_VERSION,
        "incident_id": incident_id,
        "instance_id": instance_id,
        "acquired_at": acquired_at,
        "finding": _jsonable(dict(finding)),
        "instance": _jsonable(instance),
        "console_output": _console_output(clients.ec2, instance_id),
        "snapshots": sorted(
            (
                {
                    "snapshot_id": s["SnapshotId"],
                    "volume_id": s.get("VolumeId"),
                    "device": _tags(s).get(TAG_DEVICE) or devices.get(s.get("VolumeId", "")),
                    "state": s.get("State"),
                    "volume_size": s.get("VolumeSize"),
                    "start_time": _iso(s.get("StartTime")),
                }
                for s in snapshots
            ),
            key=lambda entry: str(entry["snapshot_id"]),
        ),
    }
    return json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def write_manifest(
    clients: Clients,
    ledger: IncidentLedger,
    bucket: str,
    incident_id: str,
    instance_id: str,
    snapshot_ids: Sequence[str],
    finding: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Store the evidence manifest in the Object Lock bucket and record its SHA-256 in the ledger.

    The bucket's default retention locks the object; the request carries Content-MD5 and a SHA-256
    checksum, which Object Lock requires and which S3 verifies on receipt.

    Returns
    -------
    dict
        ``{"bucket", "key", "version_id", "sha256"}`` (hex digest of the stored bytes). A re-run after
        the ledger recorded the manifest returns that record and writes nothing.

    Raises
    ------
    EvidenceIncomplete
        A snapshot is missing or not completed.
    """
    incident = ledger.get(incident_id)
    recorded = incident.details.get(STAGE_EVIDENCE_COMPLETE)
    if (
        isinstance(recorded, dict)
        and recorded.get("sha256")
        and recorded.get("key") == manifest_key(incident_id)
    ):
        return {k: recorded.get(k) for k in ("bucket", "key", "version_id", "sha256")}

    snapshots = describe_snapshots(clients.ec2, snapshot_ids)
    pending = sorted(s["SnapshotId"] for s in snapshots if s.get("State") != "completed")
    if pending:
        raise EvidenceIncomplete(f"snapshots {', '.join(pending)} are not completed; no manifest yet")
    body = build_manifest(clients, incident_id, instance_id, snapshots, finding or incident.finding)
    digest = hashlib.sha256(body).digest()
    key = manifest_key(incident_id)
    try:
        response = clients.s3.put_object(
            Bucket=bucket,
            Key=key,
            Body=body,
            ContentType="application/json",
            ContentMD5=base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode("ascii"),
            ChecksumSHA256=base64.b64encode(digest).decode("ascii"),
        )
    except ClientError as exc:
        raise AwsCallFailed(f"cannot store manifest s3://{bucket}/{key}: {exc}") from exc
    result = {
        "bucket": bucket,
        "key": key,
        "version_id": response.get("VersionId"),
        "sha256": digest.hex(),
    }
    ledger.record_stage(
        incident_id,
        STAGE_EVIDENCE_COMPLETE,
        status=Status.EVIDENCE_COMPLETE,
        details={**result, "snapshot_ids": sorted(snapshot_ids)},
    )
    return result
