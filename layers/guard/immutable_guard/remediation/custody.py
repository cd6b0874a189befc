"""Evidence custody in the security account (organisation mode, issue 14): a member account's administrator
can delete the member's snapshots, so an incident there is not nuked until a copy the security account owns
is completed and locked.

Per snapshot of the member, each poll advances what it can, read back from the APIs (so a re-run is safe):

1. the member role copies the snapshot into the security account's home region, re-encrypted with the
   security account's custody key. "You can't share snapshots that are encrypted with the default AWS
   managed key", only ones encrypted with a customer managed key
   (https://docs.aws.amazon.com/ebs/latest/userguide/ebs-modifying-snapshot-permissions.html); CopySnapshot
   with KmsKeyId re-encrypts, and is called in the destination region with SourceRegion naming the source
   (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_CopySnapshot.html);
2. once that transfer copy is completed, the member role shares it with the security account only
   (ModifySnapshotAttribute, createVolumePermission, one UserId);
3. the security account copies it into its own account with its own key (the custody copy);
4. once the custody copy is completed it is locked (LockSnapshot: "A locked snapshot can't be deleted",
   https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_LockSnapshot.html) and the transfer copy is
   unshared.

Why the home region and not the incident's: one custody key, one Object-Lock bucket and one place where
the security team finds the evidence, in the one region the security account's stack is deployed in. The
cost is a cross-region copy (time and data transfer) for incidents outside the home region, and evidence
leaving its region; docs/organization.md says so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from botocore.exceptions import ClientError

from immutable_guard.errors import AwsCallFailed, EvidenceIncomplete, SnapshotFailed, error_code
from immutable_guard.ledger import IncidentLedger
from immutable_guard.remediation.evidence import TAG_INCIDENT

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client

    from immutable_guard.clients import Clients

TAG_SOURCE_SNAPSHOT = "immutable-guard:source-snapshot"
TAG_MEMBER_SNAPSHOT = "immutable-guard:member-snapshot"
TAG_SOURCE_ACCOUNT = "immutable-guard:source-account"
TAG_SOURCE_REGION = "immutable-guard:source-region"

STAGE_CUSTODY_COMPLETE = "custody_complete"
# Lock states in which the snapshot cannot be deleted (DescribeLockedSnapshots' LockState).
LOCKED_STATES = frozenset({"governance", "compliance", "compliance-cooloff"})
_GONE_CODES = frozenset({"InvalidSnapshot.NotFound", "InvalidSnapshotID.Malformed"})
# "You have exceeded an Amazon EC2 resource limit. For example, you might have too many snapshot copies in
# progress" (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/errors-overview.html): a region takes
# 20 concurrent copies (EBS quotas, not adjustable). An organisation-wide incident can exceed that; the
# copy is asked for again at the next poll, bounded by MaxPolls like every other wait.
_COPY_SLOTS_FULL = "ResourceLimitExceeded"
WAITING_FOR_COPY_SLOT = "waiting_for_copy_slot"


@dataclass(frozen=True)
class CustodyPlace:
    """Where the custody copies go and how they are held.

    Attributes
    ----------
    account, region:
        The security account and its home region.
    key_arn:
        The custody key (a customer managed key of the security account in ``region``).
    lock_mode:
        ``governance`` or ``compliance`` (LockSnapshot's LockMode).
    lock_days:
        LockDuration, in days (the evidence bucket's retention).
    """

    account: str
    region: str
    key_arn: str
    lock_mode: Literal["governance", "compliance"] = "governance"
    lock_days: int = 90


def _tags(resource: Mapping[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in resource.get("Tags", []) if "Key" in t}


def _incident_copies(ec2: EC2Client, incident_id: str) -> dict[str, dict[str, Any]]:
    """This account's snapshots of the incident, by the snapshot they were copied from."""
    copies: dict[str, dict[str, Any]] = {}
    try:
        for page in ec2.get_paginator("describe_snapshots").paginate(
            OwnerIds=["self"], Filters=[{"Name": f"tag:{TAG_INCIDENT}", "Values": [incident_id]}]
        ):
            for snapshot in page.get("Snapshots", []):
                source = _tags(snapshot).get(TAG_SOURCE_SNAPSHOT)
                if source:
                    copies[source] = dict(snapshot)
    except ClientError as exc:
        raise AwsCallFailed(f"cannot list the copies of incident {incident_id}: {exc}") from exc
    return copies


def _copy(
    ec2: EC2Client,
    source_id: str,
    source_region: str,
    place: CustodyPlace,
    tags: Mapping[str, str],
    what: str,
) -> dict[str, Any] | None:
    """Start the copy; None when the region's concurrent copies are all taken (asked again next poll)."""
    try:
        response = ec2.copy_snapshot(
            SourceSnapshotId=source_id,
            SourceRegion=source_region,
            Encrypted=True,
            KmsKeyId=place.key_arn,
            Description=f"Immutable Guard {what} of {source_id} (incident {tags[TAG_INCIDENT]})",
            TagSpecifications=[
                {
                    "ResourceType": "snapshot",
                    "Tags": [{"Key": k, "Value": v} for k, v in sorted(tags.items())],
                }
            ],
        )
    except ClientError as exc:
        if error_code(exc) == _COPY_SLOTS_FULL:
            return None
        if error_code(exc) in _GONE_CODES:
            raise EvidenceIncomplete(
                f"snapshot {source_id} is gone (or no longer shared) before its {what} was made: {exc}"
            ) from exc
        raise AwsCallFailed(f"cannot make the {what} of snapshot {source_id}: {exc}") from exc
    return {"SnapshotId": response["SnapshotId"], "State": "pending", "Tags": []}


def _share(ec2: EC2Client, snapshot_id: str, account: str, operation: Literal["add", "remove"]) -> None:
    try:
        ec2.modify_snapshot_attribute(
            SnapshotId=snapshot_id,
            Attribute="createVolumePermission",
            OperationType=operation,
            UserIds=[account],
        )
    except ClientError as exc:
        if operation == "remove" and error_code(exc) in _GONE_CODES:
            return  # a snapshot that is gone is shared with nobody
        raise AwsCallFailed(f"cannot {operation} account {account} on snapshot {snapshot_id}: {exc}") from exc


def snapshot_lock(ec2: EC2Client, snapshot_id: str) -> dict[str, Any] | None:
    """The snapshot's lock as DescribeLockedSnapshots reports it; None when it has none."""
    try:
        response = ec2.describe_locked_snapshots(SnapshotIds=[snapshot_id])
    except ClientError as exc:
        if error_code(exc) in _GONE_CODES:
            return None
        raise AwsCallFailed(f"cannot read the lock of snapshot {snapshot_id}: {exc}") from exc
    for lock in response.get("Snapshots", []):
        if lock.get("SnapshotId") == snapshot_id:
            return dict(lock)
    return None


def _lock(ec2: EC2Client, snapshot_id: str, place: CustodyPlace) -> dict[str, Any]:
    lock = snapshot_lock(ec2, snapshot_id)
    if lock is not None and lock.get("LockState") in LOCKED_STATES:
        return lock
    try:
        # No cooling-off period in compliance mode: locked at once (API_LockSnapshot.html, CoolOffPeriod).
        ec2.lock_snapshot(SnapshotId=snapshot_id, LockMode=place.lock_mode, LockDuration=place.lock_days)
    except ClientError as exc:
        raise AwsCallFailed(f"cannot lock custody snapshot {snapshot_id}: {exc}") from exc
    return snapshot_lock(ec2, snapshot_id) or {}


def _state(snapshot: Mapping[str, Any], what: str) -> str:
    state = str(snapshot.get("State", ""))
    if state == "error":
        raise SnapshotFailed(f"the {what} {snapshot['SnapshotId']} ended in the error state")
    return state


def advance_custody(
    member_home: Clients,
    custody: Clients,
    place: CustodyPlace,
    ledger: IncidentLedger,
    incident_id: str,
    member_account: str,
    member_region: str,
    snapshot_ids: Sequence[str],
    polls: int,
    max_polls: int,
) -> dict[str, Any]:
    """Advance the custody of the member's snapshots by one poll.

    Parameters
    ----------
    member_home:
        The member role's clients in the security account's home region (where the transfer copies go).
    custody:
        The security account's own clients in its home region.
    snapshot_ids:
        The member's completed snapshots of the incident.

    Returns
    -------
    dict
        ``{"snapshot_ids", "all_completed": True, "custody": True, "custody_polls": polls + 1,
        "custody_complete": bool, "copies": [...]}``; each copy is
        ``{"member_snapshot_id", "transfer_snapshot_id", "custody_snapshot_id", "state", "lock_state",
        "lock_expires_on"}``. When complete, stage ``custody_complete`` is recorded with the copies.

    Raises
    ------
    EvidenceIncomplete
        A member snapshot (or the transfer copy) is gone before the security account's copy was made, or
        this was poll ``max_polls`` and custody is not complete.
    SnapshotFailed
        A copy ended in the ``error`` state.
    """
    if not snapshot_ids:
        raise EvidenceIncomplete(f"incident {incident_id} has no member snapshot to take into custody")
    transfers = _incident_copies(member_home.ec2, incident_id)
    held = _incident_copies(custody.ec2, incident_id)
    copies: list[dict[str, Any]] = []
    for member_snapshot in sorted(snapshot_ids):
        entry: dict[str, Any] = {"member_snapshot_id": member_snapshot, "state": "transferring"}
        copies.append(entry)
        tags = {
            TAG_INCIDENT: incident_id,
            TAG_MEMBER_SNAPSHOT: member_snapshot,
            TAG_SOURCE_ACCOUNT: member_account,
            TAG_SOURCE_REGION: member_region,
        }
        transfer = transfers.get(member_snapshot) or _copy(
            member_home.ec2,
            member_snapshot,
            member_region,
            place,
            {**tags, TAG_SOURCE_SNAPSHOT: member_snapshot},
            "transfer copy",
        )
        if transfer is None:
            entry["state"] = WAITING_FOR_COPY_SLOT
            continue
        transfer_id = str(transfer["SnapshotId"])
        entry["transfer_snapshot_id"] = transfer_id
        copy = held.get(transfer_id)
        if copy is None:
            if _state(transfer, "transfer copy") != "completed":
                continue
            _share(member_home.ec2, transfer_id, place.account, "add")
            copy = _copy(
                custody.ec2,
                transfer_id,
                place.region,
                place,
                {**tags, TAG_SOURCE_SNAPSHOT: transfer_id},
                "custody copy",
            )
            if copy is None:
                entry["state"] = WAITING_FOR_COPY_SLOT
                continue
        entry["custody_snapshot_id"] = copy["SnapshotId"]
        if _state(copy, "custody copy") != "completed":
            entry["state"] = "copying"
            continue
        lock = _lock(custody.ec2, str(copy["SnapshotId"]), place)
        entry["lock_state"] = lock.get("LockState")
        expires = lock.get("LockExpiresOn")
        entry["lock_expires_on"] = expires.isoformat() if isinstance(expires, datetime) else expires
        # Shared only for the copy: once the security account holds its own, the member's is its own again.
        _share(member_home.ec2, transfer_id, place.account, "remove")
        entry["state"] = "locked" if entry["lock_state"] in LOCKED_STATES else "unlocked"
    complete = all(c["state"] == "locked" for c in copies)
    # The shape of the snapshot check's result (the state machine keeps both in one place), plus custody's.
    result = {
        "snapshot_ids": sorted(snapshot_ids),
        "all_completed": True,
        "custody": True,
        "custody_polls": polls + 1,
        "custody_complete": complete,
        "copies": copies,
    }
    if complete:
        ledger.record_stage(
            incident_id,
            STAGE_CUSTODY_COMPLETE,
            details={"account": place.account, "region": place.region, "copies": copies},
        )
    elif polls + 1 >= max_polls:
        waiting = sorted(
            f"{c['member_snapshot_id']} ({c['state']})" for c in copies if c["state"] != "locked"
        )
        raise EvidenceIncomplete(
            f"the security account's copies of {', '.join(waiting)} are not locked after {polls + 1} polls"
        )
    return result


def verify_custody(
    custody: Clients, ledger: IncidentLedger, incident_id: str, snapshot_ids: Sequence[str]
) -> list[str]:
    """Nuke's precondition in organisation mode: every member snapshot has a completed, locked copy in the
    security account, tagged as this incident's. Read from the EC2 API; the ledger only names the copies.

    Returns
    -------
    list
        The custody snapshot ids.

    Raises
    ------
    EvidenceIncomplete
        Custody is not recorded, a copy is missing, not completed or not locked.
    """
    recorded = ledger.get(incident_id).details.get(STAGE_CUSTODY_COMPLETE)
    copies = recorded.get("copies") if isinstance(recorded, dict) else None
    if not copies:
        raise EvidenceIncomplete(f"incident {incident_id} has no copy in the security account")
    by_member = {c.get("member_snapshot_id"): c.get("custody_snapshot_id") for c in copies}
    uncovered = sorted(set(snapshot_ids) - {k for k, v in by_member.items() if v})
    if uncovered:
        raise EvidenceIncomplete(f"snapshots {', '.join(uncovered)} have no copy in the security account")
    custody_ids = sorted(str(by_member[s]) for s in snapshot_ids)
    try:
        snapshots = custody.ec2.describe_snapshots(SnapshotIds=custody_ids)["Snapshots"]
    except ClientError as exc:
        if error_code(exc) in _GONE_CODES:
            raise EvidenceIncomplete(f"a custody copy among {', '.join(custody_ids)} is gone: {exc}") from exc
        raise AwsCallFailed(f"cannot describe custody copies {', '.join(custody_ids)}: {exc}") from exc
    found = {s["SnapshotId"]: s for s in snapshots}
    for custody_id in custody_ids:
        snapshot = found.get(custody_id)
        if snapshot is None or _tags(snapshot).get(TAG_INCIDENT) != incident_id:
            raise EvidenceIncomplete(f"custody copy {custody_id} of incident {incident_id} does not exist")
        if snapshot.get("State") != "completed":
            raise EvidenceIncomplete(f"custody copy {custody_id} is {snapshot.get('State')}, not completed")
        lock = snapshot_lock(custody.ec2, custody_id)
        if lock is None or lock.get("LockState") not in LOCKED_STATES:
            raise EvidenceIncomplete(f"custody copy {custody_id} is not locked")
    return custody_ids
