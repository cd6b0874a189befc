"""Nuke: the one destructive step. It re-reads everything from the APIs and the ledger, and acts (terminate,
stop or keep) only when every volume's snapshot is completed, the manifest is recorded and the
replacement is healthy; its inputs are never trusted for that."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError
from pydantic import ConfigDict, Field

from immutable_guard.errors import (
    AwsCallFailed,
    EvidenceIncomplete,
    InstanceNotFound,
    NukeRefused,
    ReplacementFailed,
)
from immutable_guard.ledger import IncidentLedger, Status
from immutable_guard.model import PostEvidenceAction
from immutable_guard.remediation.evidence import (
    STAGE_EVIDENCE_COMPLETE,
    TAG_INCIDENT,
    attached_volumes,
    describe_instance,
    describe_snapshots,
)
from immutable_guard.remediation.network_acl import DETAIL_KEY as ACL_DETAIL_KEY
from immutable_guard.remediation.network_acl import remove_entries
from immutable_guard.remediation.replace import STAGE_REPLACEMENT_STARTED, STRATEGY_MANUAL, replacement_health
from immutable_guard.step_input import InstancePlace

if TYPE_CHECKING:
    from immutable_guard.clients import Clients
    from immutable_guard.settings import NukeSettings

TAG_STATE = "immutable-guard:state"
STATE_QUARANTINED = "quarantined"

_GONE_STATES = frozenset({"shutting-down", "terminated"})
_STOPPED_STATES = frozenset({"stopping", "stopped"})
_ALLOWED_STATUSES = frozenset({Status.EVIDENCE_COMPLETE, Status.REPLACED})


class NukeRequest(InstancePlace):
    """What the state machine passes to the Nuke function; every claim in it is re-verified."""

    model_config = ConfigDict(extra="ignore")

    incident_id: str = Field(min_length=1)
    instance_id: str = Field(min_length=1)
    snapshot_ids: list[str] = Field(default_factory=list)
    manifest: dict[str, Any] = Field(default_factory=dict)
    replacement: dict[str, Any] = Field(default_factory=dict)


_RESULT_ACTION = {
    PostEvidenceAction.TERMINATE: "terminated",
    PostEvidenceAction.STOP: "stopped",
    PostEvidenceAction.KEEP: "kept",
}
_STAGE = {"terminated": "nuked", "stopped": "stopped", "kept": "kept"}


def _tags(resource: Mapping[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in resource.get("Tags", []) if "Key" in t}


def _verify_evidence(
    clients: Clients, incident_id: str, instance: Mapping[str, Any], snapshot_ids: Sequence[str]
) -> None:
    instance_id = instance["InstanceId"]
    snapshots = describe_snapshots(clients.ec2, snapshot_ids)  # EvidenceIncomplete if one is missing
    not_ours = sorted(s["SnapshotId"] for s in snapshots if _tags(s).get(TAG_INCIDENT) != incident_id)
    if not_ours:
        raise NukeRefused(f"snapshots {', '.join(not_ours)} are not evidence of incident {incident_id}")
    pending = sorted(
        f"{s['SnapshotId']} ({s.get('State')})" for s in snapshots if s.get("State") != "completed"
    )
    if pending:
        raise EvidenceIncomplete(f"snapshots {', '.join(pending)} of {instance_id} are not completed")
    covered = {s.get("VolumeId") for s in snapshots}
    uncovered = sorted(set(attached_volumes(instance)) - covered)
    if uncovered:
        raise EvidenceIncomplete(f"volumes {', '.join(uncovered)} of {instance_id} have no snapshot")


def _verify_ledger(
    ledger: IncidentLedger, incident_id: str, instance_id: str, snapshot_ids: Sequence[str]
) -> tuple[str, dict[str, Any]]:
    incident = ledger.get(incident_id)
    if incident.instance_id != instance_id:
        raise NukeRefused(f"incident {incident_id} is about {incident.instance_id}, not {instance_id}")
    if incident.status not in _ALLOWED_STATUSES:
        raise NukeRefused(f"incident {incident_id} is {incident.status}, not evidence complete or replaced")
    evidence = incident.details.get(STAGE_EVIDENCE_COMPLETE)
    if not isinstance(evidence, dict) or not evidence.get("sha256"):
        raise NukeRefused(f"incident {incident_id} has no recorded evidence manifest")
    recorded = evidence.get("snapshot_ids")
    if recorded is not None and sorted(recorded) != sorted(snapshot_ids):
        raise NukeRefused(
            f"snapshots {sorted(snapshot_ids)} are not the ones the manifest of {incident_id} lists"
        )
    replacement = incident.details.get(STAGE_REPLACEMENT_STARTED)
    if not isinstance(replacement, dict):
        raise NukeRefused(f"incident {incident_id} has no recorded replacement")
    return str(evidence["sha256"]), replacement


def _verify_replacement(
    clients: Clients, instance_id: str, recorded: Mapping[str, Any], claimed: Mapping[str, Any]
) -> list[str]:
    strategy = recorded.get("strategy")
    if strategy == STRATEGY_MANUAL or claimed.get("strategy") == STRATEGY_MANUAL:
        raise NukeRefused(f"nobody replaces {instance_id} (manual strategy): it is never nuked automatically")
    if claimed.get("strategy") and claimed.get("strategy") != strategy:
        raise NukeRefused(
            f"replacement strategy {claimed.get('strategy')} differs from the recorded {strategy}"
        )
    try:
        health = replacement_health(clients, instance_id, recorded)
    except ReplacementFailed as exc:
        raise NukeRefused(f"replacement of {instance_id} failed: {exc}") from exc
    if not health.healthy:
        raise NukeRefused(f"replacement of {instance_id} is not healthy: {health.reason}")
    return health.replacement_instance_ids


def _act(clients: Clients, instance: Mapping[str, Any], action: PostEvidenceAction) -> None:
    ec2 = clients.ec2
    instance_id = instance["InstanceId"]
    # EC2 refuses both protection attributes on a Spot instance, even to turn them off; it has neither.
    spot = instance.get("InstanceLifecycle") == "spot"
    try:
        if action is PostEvidenceAction.TERMINATE:
            # The Contain step protected the evidence against termination; only we lift it, only now.
            if not spot:
                ec2.modify_instance_attribute(InstanceId=instance_id, DisableApiTermination={"Value": False})
            ec2.terminate_instances(InstanceIds=[instance_id])
        elif action is PostEvidenceAction.STOP:
            if not spot:
                ec2.modify_instance_attribute(InstanceId=instance_id, DisableApiStop={"Value": False})
            ec2.stop_instances(InstanceIds=[instance_id])
    except ClientError as exc:
        raise AwsCallFailed(f"cannot {action.value} instance {instance_id}: {exc}") from exc


def _free_addresses(clients: Clients, ledger: IncidentLedger, incident_id: str) -> int:
    """A terminated instance's private addresses go back to the subnet, and the next instance there may get
    them: the network-ACL deny entries Contain added for them (IsolationDepth=network-acl) must go too."""
    entries = ledger.get(incident_id).details.get(ACL_DETAIL_KEY) or []
    return len(remove_entries(clients.ec2, entries, [])) if entries else 0


def nuke_instance(
    clients: Clients,
    ledger: IncidentLedger,
    settings: NukeSettings,
    incident_id: str,
    instance_id: str,
    snapshot_ids: Sequence[str],
    replacement: Mapping[str, Any],
) -> dict[str, Any]:
    """Terminate, stop or keep the quarantined instance, after verifying the evidence and the replacement.

    Parameters
    ----------
    settings:
        ``post_evidence_action`` says what to do.
    snapshot_ids, replacement:
        What the state machine believes; both are re-verified, never trusted.

    Returns
    -------
    dict
        ``{"action": "terminated"|"stopped"|"kept", "instance_id", "snapshot_ids", "manifest_sha256",
        "replacement_instance_ids", "already_done"}``.

    Raises
    ------
    EvidenceIncomplete
        A snapshot is missing or not completed, or an attached volume has no snapshot.
    NukeRefused
        A snapshot is not this incident's, the ledger has no manifest or the wrong status, the
        replacement is manual or unhealthy, or the instance is not tagged as this incident's.
    """
    action = settings.post_evidence_action
    try:
        instance = describe_instance(clients.ec2, instance_id)
        state = str(instance.get("State", {}).get("Name", ""))
    except InstanceNotFound:
        if action is not PostEvidenceAction.TERMINATE:
            raise
        instance, state = {}, "terminated"

    already = state in _GONE_STATES or (action is PostEvidenceAction.STOP and state in _STOPPED_STATES)
    if already:
        done = "terminated" if state in _GONE_STATES else "stopped"
        result: dict[str, Any] = {
            "action": done,
            "instance_id": instance_id,
            "snapshot_ids": sorted(snapshot_ids),
            "already_done": True,
        }
        if done == "terminated":
            result["network_acl_entries_removed"] = _free_addresses(clients, ledger, incident_id)
        ledger.record_stage(incident_id, _STAGE[done], details=result)
        return result

    # The same condition as the function's IAM policy, so the local runtime (no IAM) refuses alike.
    tags = _tags(instance)
    if tags.get(TAG_INCIDENT) != incident_id or tags.get(TAG_STATE) != STATE_QUARANTINED:
        raise NukeRefused(f"instance {instance_id} is not tagged as quarantined by incident {incident_id}")
    _verify_evidence(clients, incident_id, instance, snapshot_ids)
    sha256, recorded_replacement = _verify_ledger(ledger, incident_id, instance_id, snapshot_ids)
    replacement_ids = _verify_replacement(clients, instance_id, recorded_replacement, replacement)

    # Write the intent before the irreversible act: a ledger we cannot write to stops us here, instead
    # of leaving a terminated instance that the ledger (and the failure alert) know nothing about.
    ledger.record_stage(
        incident_id, "nuke_started", details={"action": str(action), "snapshot_ids": snapshot_ids}
    )
    _act(clients, instance, action)
    done = _RESULT_ACTION[action]
    result = {
        "action": done,
        "instance_id": instance_id,
        "snapshot_ids": sorted(snapshot_ids),
        "manifest_sha256": sha256,
        "replacement_instance_ids": replacement_ids,
        "already_done": False,
    }
    if done == "terminated":
        result["network_acl_entries_removed"] = _free_addresses(clients, ledger, incident_id)
    ledger.record_stage(incident_id, _STAGE[done], details=result)
    return result
