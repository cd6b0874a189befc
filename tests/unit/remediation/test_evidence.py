"""Evidence: every volume is snapshotted once per incident, polling reports pending / error / timeout, and
the manifest is stored write-once with a SHA-256 the ledger remembers."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError
from immutable_guard.clients import Clients
from immutable_guard.errors import EvidenceIncomplete, InstanceNotFound, InvalidEvent, SnapshotFailed
from immutable_guard.ledger import IncidentLedger, Status
from immutable_guard.remediation.evidence import (
    build_manifest,
    check_snapshots,
    describe_snapshots,
    manifest_key,
    start_snapshots,
    write_manifest,
)
from remediation_world import EVIDENCE_BUCKET, ContainedInstance, FakeLambdaContext, load_function


def _tags(resource: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in resource.get("Tags", [])}


@pytest.fixture
def contained(make_contained: Callable[..., ContainedInstance]) -> ContainedInstance:
    return make_contained()


@pytest.fixture
def snapshotted(aws: Clients, ledger: IncidentLedger, contained: ContainedInstance) -> list[str]:
    return list(start_snapshots(aws, ledger, contained.incident_id, contained.instance_id)["snapshot_ids"])


# ---------------------------------------------------------------- start


def test_start_snapshots_every_volume_tagged_with_incident_volume_and_device(
    aws: Clients, ledger: IncidentLedger, contained: ContainedInstance
) -> None:
    # Given a contained instance with a boot volume and a data volume
    assert len(contained.volumes) == 2
    # When the evidence step starts
    result = start_snapshots(aws, ledger, contained.incident_id, contained.instance_id)
    # Then there is one snapshot per volume, each saying which incident, instance, volume and device
    snapshots = describe_snapshots(aws.ec2, result["snapshot_ids"])
    assert {s["VolumeId"] for s in snapshots} == set(contained.volumes)
    for snapshot in snapshots:
        tags = _tags(snapshot)
        assert tags["immutable-guard:incident"] == contained.incident_id
        assert tags["immutable-guard:instance"] == contained.instance_id
        assert tags["immutable-guard:volume"] == snapshot["VolumeId"]
        assert tags["immutable-guard:device"] == contained.volumes[snapshot["VolumeId"]]
        assert tags["immutable-guard:acquired-at"]
    assert result["polls"] == 0
    assert (
        ledger.get(contained.incident_id).details["snapshots_started"]["snapshot_ids"]
        == result["snapshot_ids"]
    )


def test_start_twice_returns_the_same_snapshots(
    aws: Clients, ledger: IncidentLedger, contained: ContainedInstance
) -> None:
    # Given the evidence step already started once
    first = start_snapshots(aws, ledger, contained.incident_id, contained.instance_id)
    # When it runs again (a Lambda retry)
    second = start_snapshots(aws, ledger, contained.incident_id, contained.instance_id)
    # Then no new snapshot is taken
    assert second["snapshot_ids"] == first["snapshot_ids"]
    owned = aws.ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]
    assert len([s for s in owned if s["VolumeId"] in contained.volumes]) == len(contained.volumes)


def test_start_restores_per_volume_tags_a_crashed_run_left_out(
    aws: Clients, ledger: IncidentLedger, contained: ContainedInstance
) -> None:
    # Given snapshots of this incident whose volume and device tags are missing
    first = start_snapshots(aws, ledger, contained.incident_id, contained.instance_id)
    aws.ec2.delete_tags(
        Resources=first["snapshot_ids"],
        Tags=[{"Key": "immutable-guard:volume"}, {"Key": "immutable-guard:device"}],
    )
    # When the step runs again
    start_snapshots(aws, ledger, contained.incident_id, contained.instance_id)
    # Then every snapshot names its volume and device again
    for snapshot in describe_snapshots(aws.ec2, first["snapshot_ids"]):
        assert _tags(snapshot)["immutable-guard:volume"] == snapshot["VolumeId"]
        assert _tags(snapshot)["immutable-guard:device"] == contained.volumes[snapshot["VolumeId"]]


def test_start_for_a_vanished_instance_is_instance_not_found(aws: Clients, ledger: IncidentLedger) -> None:
    # Given no such instance  When the step starts  Then it says so
    with pytest.raises(InstanceNotFound, match="i-0123456789abcdef0"):
        start_snapshots(aws, ledger, "ig-x", "i-0123456789abcdef0")


# ---------------------------------------------------------------- check


def test_check_reports_pending_then_completed(
    aws: Clients, snapshotted: list[str], set_snapshot_state: Callable[[str, str], None]
) -> None:
    # Given one snapshot still pending
    set_snapshot_state(snapshotted[0], "pending")
    # When the snapshots are polled
    first = check_snapshots(aws, snapshotted, polls=0, max_polls=5)
    # Then they are not all completed, and the poll is counted
    assert first == {"snapshot_ids": sorted(snapshotted), "polls": 1, "all_completed": False}
    # And once it completes, the next poll says so
    set_snapshot_state(snapshotted[0], "completed")
    second = check_snapshots(aws, snapshotted, polls=first["polls"], max_polls=5)
    assert second["all_completed"] is True
    assert second["polls"] == 2


def test_check_raises_snapshot_failed_naming_the_snapshot_in_error(
    aws: Clients, snapshotted: list[str], set_snapshot_state: Callable[[str, str], None]
) -> None:
    # Given a snapshot that ended in error
    set_snapshot_state(snapshotted[1], "error")
    # When polled  Then SnapshotFailed names it
    with pytest.raises(SnapshotFailed, match=snapshotted[1]):
        check_snapshots(aws, snapshotted, polls=0, max_polls=5)


def test_check_gives_up_after_max_polls(
    aws: Clients, snapshotted: list[str], set_snapshot_state: Callable[[str, str], None]
) -> None:
    # Given a snapshot pending for ever
    set_snapshot_state(snapshotted[0], "pending")
    # When the last allowed poll still sees it pending  Then the evidence is incomplete
    check_snapshots(aws, snapshotted, polls=1, max_polls=3)
    with pytest.raises(EvidenceIncomplete, match=snapshotted[0]):
        check_snapshots(aws, snapshotted, polls=2, max_polls=3)


def test_check_of_a_deleted_snapshot_is_evidence_incomplete(aws: Clients, snapshotted: list[str]) -> None:
    # Given a snapshot deleted behind our back
    aws.ec2.delete_snapshot(SnapshotId=snapshotted[0])
    # When polled  Then the evidence is incomplete
    with pytest.raises(EvidenceIncomplete):
        check_snapshots(aws, snapshotted, polls=0, max_polls=5)


# ---------------------------------------------------------------- manifest


def test_manifest_is_stored_locked_and_its_sha256_matches_the_object(
    aws: Clients,
    ledger: IncidentLedger,
    contained: ContainedInstance,
    snapshotted: list[str],
    evidence_bucket: str,
) -> None:
    # Given completed snapshots
    finding = {"kind": "port_opened", "event_id": "abc"}
    # When the manifest is written
    result = write_manifest(
        aws, ledger, evidence_bucket, contained.incident_id, contained.instance_id, snapshotted, finding
    )
    # Then it is stored under the incident's key, with the bucket's Object Lock retention
    assert result["key"] == f"incidents/{contained.incident_id}/manifest.json"
    stored = aws.s3.get_object(Bucket=evidence_bucket, Key=result["key"], VersionId=result["version_id"])
    body = stored["Body"].read()
    assert hashlib.sha256(body).hexdigest() == result["sha256"]
    assert stored["ObjectLockMode"] == "GOVERNANCE"
    # And it holds the finding, the instance and every snapshot with its volume and device
    manifest = json.loads(body)
    assert manifest["schema_version"] == "1"
    assert manifest["incident_id"] == contained.incident_id
    assert manifest["finding"] == finding
    assert manifest["instance"]["InstanceId"] == contained.instance_id
    assert manifest["console_output"]["available"] is True
    assert {(s["volume_id"], s["device"]) for s in manifest["snapshots"]} == set(contained.volumes.items())
    assert {s["state"] for s in manifest["snapshots"]} == {"completed"}
    # And the ledger says the evidence is complete, with the same digest
    incident = ledger.get(contained.incident_id)
    assert incident.status is Status.EVIDENCE_COMPLETE
    assert incident.details["evidence_complete"]["sha256"] == result["sha256"]


def test_manifest_written_twice_is_one_object_with_one_digest(
    aws: Clients,
    ledger: IncidentLedger,
    contained: ContainedInstance,
    snapshotted: list[str],
    evidence_bucket: str,
) -> None:
    # Given a manifest already written
    first = write_manifest(
        aws, ledger, evidence_bucket, contained.incident_id, contained.instance_id, snapshotted
    )
    # When the step runs again
    second = write_manifest(
        aws, ledger, evidence_bucket, contained.incident_id, contained.instance_id, snapshotted
    )
    # Then it returns the same record and stores no second version
    assert second == first
    versions = aws.s3.list_object_versions(Bucket=evidence_bucket, Prefix=manifest_key(contained.incident_id))
    assert len(versions["Versions"]) == 1


def test_manifest_bytes_are_the_same_on_every_build(
    aws: Clients, contained: ContainedInstance, snapshotted: list[str]
) -> None:
    # Given the same evidence  When the manifest is built twice  Then the bytes (so the digest) are equal
    snapshots = describe_snapshots(aws.ec2, snapshotted)
    first = build_manifest(aws, contained.incident_id, contained.instance_id, snapshots, {"k": 1})
    second = build_manifest(
        aws, contained.incident_id, contained.instance_id, list(reversed(snapshots)), {"k": 1}
    )
    assert first == second


def test_manifest_refused_while_a_snapshot_is_pending(
    aws: Clients,
    ledger: IncidentLedger,
    contained: ContainedInstance,
    snapshotted: list[str],
    evidence_bucket: str,
    set_snapshot_state: Callable[[str, str], None],
) -> None:
    # Given a pending snapshot
    set_snapshot_state(snapshotted[0], "pending")
    # When the manifest is asked for  Then there is none, and the ledger is unchanged
    with pytest.raises(EvidenceIncomplete, match=snapshotted[0]):
        write_manifest(
            aws, ledger, evidence_bucket, contained.incident_id, contained.instance_id, snapshotted
        )
    assert ledger.get(contained.incident_id).status is Status.CONTAINED


def test_manifest_tolerates_console_output_being_unavailable(
    aws: Clients,
    ledger: IncidentLedger,
    contained: ContainedInstance,
    snapshotted: list[str],
    evidence_bucket: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given EC2 refuses the console output (as for some instance types)
    def refuse(**_: Any) -> None:
        raise ClientError({"Error": {"Code": "UnsupportedOperation", "Message": "no"}}, "GetConsoleOutput")

    monkeypatch.setattr(aws.ec2, "get_console_output", refuse)
    # When the manifest is written
    result = write_manifest(
        aws, ledger, evidence_bucket, contained.incident_id, contained.instance_id, snapshotted
    )
    # Then it is stored and says why the console output is missing
    body = aws.s3.get_object(Bucket=evidence_bucket, Key=result["key"])["Body"].read()
    assert json.loads(body)["console_output"] == {"available": False, "reason": "UnsupportedOperation"}


# ---------------------------------------------------------------- handler and IAM


def test_handler_dispatches_start_check_and_manifest(
    aws: Clients,
    contained: ContainedInstance,
    evidence_bucket: str,
    lambda_context: FakeLambdaContext,
    step_environment: pytest.MonkeyPatch,
) -> None:
    # Given the function's environment as template.yaml sets it
    step_environment.setenv("EVIDENCE_BUCKET", EVIDENCE_BUCKET)
    step_environment.setenv("MAX_POLLS", "3")
    app = load_function("evidence")
    base = {"incident_id": contained.incident_id, "instance_id": contained.instance_id}
    # When the state machine calls start, check, then manifest
    started = app.handler({**base, "action": "start"}, lambda_context)
    checked = app.handler(
        {**base, "action": "check", "snapshot_ids": started["snapshot_ids"], "polls": 0}, lambda_context
    )
    stored = app.handler(
        {**base, "action": "manifest", "snapshot_ids": checked["snapshot_ids"], "finding": {"k": "v"}},
        lambda_context,
    )
    # Then each returns the contract's shape
    assert len(started["snapshot_ids"]) == 2
    assert checked["all_completed"] is True and checked["polls"] == 1
    assert stored["bucket"] == EVIDENCE_BUCKET and len(stored["sha256"]) == 64


def test_handler_rejects_an_unknown_action(
    aws: Clients, lambda_context: FakeLambdaContext, step_environment: pytest.MonkeyPatch
) -> None:
    step_environment.setenv("EVIDENCE_BUCKET", EVIDENCE_BUCKET)
    step_environment.setenv("MAX_POLLS", "3")
    app = load_function("evidence")
    with pytest.raises(InvalidEvent, match="action"):
        app.handler({"incident_id": "ig-1", "instance_id": "i-1", "action": "delete"}, lambda_context)
