"""Nuke: the instance is terminated (or stopped, or kept) only when the APIs and the ledger confirm that
every volume has a completed snapshot, the manifest is recorded and the replacement is healthy."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from immutable_guard.clients import Clients
from immutable_guard.errors import EvidenceIncomplete, NukeRefused
from immutable_guard.ledger import Incident, IncidentLedger, Status
from immutable_guard.model import PostEvidenceAction
from immutable_guard.remediation.evidence import start_snapshots, write_manifest
from immutable_guard.remediation.nuke import nuke_instance
from immutable_guard.remediation.replace import check_replacement, start_replacement
from immutable_guard.settings import NukeSettings
from remediation_world import (
    ContainedInstance,
    FakeLambdaContext,
    detach_from_group,
    group_members,
    load_function,
)

MakeContained = Callable[..., ContainedInstance]


def nuke_settings(action: PostEvidenceAction) -> NukeSettings:
    return NukeSettings(
        ledger_table="immutable-guard-ledger",
        alert_topic_arn="arn:aws:sns:us-east-1:123456789012:alerts",
        post_evidence_action=action,
    )


@dataclass(frozen=True)
class Remediated:
    """Everything the state machine has when it reaches Nuke."""

    incident_id: str
    instance_id: str
    snapshot_ids: list[str]
    manifest: dict[str, Any]
    replacement: dict[str, Any]


def _state(aws: Clients, instance_id: str) -> str:
    instance = aws.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    return str(instance["State"]["Name"])


def _nuke(
    aws: Clients, ledger: IncidentLedger, ready: Remediated, action: PostEvidenceAction
) -> dict[str, Any]:
    return nuke_instance(
        aws,
        ledger,
        nuke_settings(action),
        ready.incident_id,
        ready.instance_id,
        ready.snapshot_ids,
        ready.replacement,
    )


@pytest.fixture
def ready(
    aws: Clients,
    ledger: IncidentLedger,
    golden_group: str,
    make_contained: MakeContained,
    evidence_bucket: str,
) -> Remediated:
    """A detached group member with completed evidence, a stored manifest and a healthy replacement."""
    member = group_members(aws, golden_group)[0]
    contained = make_contained(member, auto_scaling_group=golden_group)
    detach_from_group(aws, golden_group, member)
    snapshot_ids = start_snapshots(aws, ledger, contained.incident_id, member)["snapshot_ids"]
    manifest = write_manifest(aws, ledger, evidence_bucket, contained.incident_id, member, snapshot_ids)
    started = start_replacement(aws, ledger, contained.incident_id, member)
    replacement = check_replacement(aws, ledger, contained.incident_id, member, started, max_polls=3)
    assert replacement["healthy"] is True
    return Remediated(contained.incident_id, member, snapshot_ids, manifest, replacement)


# ---------------------------------------------------------------- what it does when all is verified


def test_terminate_lifts_our_protection_then_terminates(
    aws: Clients, ledger: IncidentLedger, ready: Remediated
) -> None:
    # Given the Contain step protected the instance against termination
    protection = aws.ec2.describe_instance_attribute(
        InstanceId=ready.instance_id, Attribute="disableApiTermination"
    )
    assert protection["DisableApiTermination"]["Value"] is True
    # When the instance is nuked
    result = _nuke(aws, ledger, ready, PostEvidenceAction.TERMINATE)
    # Then it is terminated (EC2 refuses while protected), and the ledger says so
    assert _state(aws, ready.instance_id) in ("shutting-down", "terminated")
    assert result["action"] == "terminated" and result["already_done"] is False
    assert result["manifest_sha256"] == ready.manifest["sha256"]
    assert result["replacement_instance_ids"] == ready.replacement["replacement_instance_ids"]
    incident = ledger.get(ready.incident_id)
    assert "nuked" in incident.timeline
    assert incident.status is Status.REPLACED  # CLOSED is the notify step's to set


def test_stop_lifts_stop_protection_then_stops(
    aws: Clients, ledger: IncidentLedger, ready: Remediated
) -> None:
    # Given stop protection as well
    aws.ec2.modify_instance_attribute(InstanceId=ready.instance_id, DisableApiStop={"Value": True})
    # When the policy says stop
    result = _nuke(aws, ledger, ready, PostEvidenceAction.STOP)
    # Then it is stopped, not terminated
    assert _state(aws, ready.instance_id) in ("stopping", "stopped")
    assert result["action"] == "stopped"
    assert "stopped" in ledger.get(ready.incident_id).timeline


def test_keep_changes_nothing_but_the_ledger(aws: Clients, ledger: IncidentLedger, ready: Remediated) -> None:
    result = _nuke(aws, ledger, ready, PostEvidenceAction.KEEP)
    assert _state(aws, ready.instance_id) == "running"
    assert result["action"] == "kept"
    assert "kept" in ledger.get(ready.incident_id).timeline


@pytest.mark.parametrize("action", [PostEvidenceAction.TERMINATE, PostEvidenceAction.STOP])
def test_running_again_returns_the_same_result(
    aws: Clients, ledger: IncidentLedger, ready: Remediated, action: PostEvidenceAction
) -> None:
    # Given the instance was already nuked
    first = _nuke(aws, ledger, ready, action)
    # When the step runs again (a retry after a timeout)
    second = _nuke(aws, ledger, ready, action)
    # Then it reports the same action, already done
    assert second["action"] == first["action"]
    assert second["already_done"] is True


# ---------------------------------------------------------------- what it refuses


def test_refused_while_a_snapshot_is_pending(
    aws: Clients, ledger: IncidentLedger, ready: Remediated, set_snapshot_state: Callable[[str, str], None]
) -> None:
    set_snapshot_state(ready.snapshot_ids[0], "pending")
    with pytest.raises(EvidenceIncomplete, match=ready.snapshot_ids[0]):
        _nuke(aws, ledger, ready, PostEvidenceAction.TERMINATE)
    assert _state(aws, ready.instance_id) == "running"


def test_refused_when_a_snapshot_is_gone(aws: Clients, ledger: IncidentLedger, ready: Remediated) -> None:
    aws.ec2.delete_snapshot(SnapshotId=ready.snapshot_ids[0])
    with pytest.raises(EvidenceIncomplete):
        _nuke(aws, ledger, ready, PostEvidenceAction.TERMINATE)
    assert _state(aws, ready.instance_id) == "running"


def test_refused_when_an_attached_volume_has_no_snapshot(
    aws: Clients, ledger: IncidentLedger, ready: Remediated
) -> None:
    # Given a volume attached after the evidence was taken
    volume_id = aws.ec2.create_volume(Size=1, AvailabilityZone="us-east-1a")["VolumeId"]
    aws.ec2.attach_volume(VolumeId=volume_id, InstanceId=ready.instance_id, Device="/dev/sdg")
    # When nuked  Then refused, naming the volume
    with pytest.raises(EvidenceIncomplete, match=volume_id):
        _nuke(aws, ledger, ready, PostEvidenceAction.TERMINATE)
    assert _state(aws, ready.instance_id) == "running"


def test_refused_when_a_snapshot_is_not_this_incidents(
    aws: Clients, ledger: IncidentLedger, ready: Remediated
) -> None:
    aws.ec2.create_tags(
        Resources=[ready.snapshot_ids[0]],
        Tags=[{"Key": "immutable-guard:incident", "Value": "ig-someone-else"}],
    )
    with pytest.raises(NukeRefused, match="not evidence of incident"):
        _nuke(aws, ledger, ready, PostEvidenceAction.TERMINATE)


def test_refused_when_the_replacement_is_unhealthy(
    aws: Clients, ledger: IncidentLedger, ready: Remediated
) -> None:
    # Given the replacement turned unhealthy after the check (the input still says healthy)
    for instance_id in ready.replacement["replacement_instance_ids"]:
        aws.autoscaling.set_instance_health(InstanceId=instance_id, HealthStatus="Unhealthy")
    # When nuked  Then refused
    with pytest.raises(NukeRefused, match="not healthy"):
        _nuke(aws, ledger, ready, PostEvidenceAction.TERMINATE)
    assert _state(aws, ready.instance_id) == "running"


def test_refused_when_the_input_claims_a_manual_replacement(
    aws: Clients, ledger: IncidentLedger, ready: Remediated
) -> None:
    claimed = Remediated(
        ready.incident_id, ready.instance_id, ready.snapshot_ids, ready.manifest, {"strategy": "manual"}
    )
    with pytest.raises(NukeRefused, match="manual"):
        _nuke(aws, ledger, claimed, PostEvidenceAction.TERMINATE)


def test_refused_for_an_instance_nobody_replaces(
    aws: Clients, ledger: IncidentLedger, make_contained: MakeContained, evidence_bucket: str
) -> None:
    # Given complete evidence for a hand-launched instance, whose replacement is manual
    contained = make_contained()
    snapshot_ids = start_snapshots(aws, ledger, contained.incident_id, contained.instance_id)["snapshot_ids"]
    manifest = write_manifest(
        aws, ledger, evidence_bucket, contained.incident_id, contained.instance_id, snapshot_ids
    )
    replacement = start_replacement(aws, ledger, contained.incident_id, contained.instance_id)
    # When nuked, even if the input pretends the replacement is healthy
    claim = Remediated(
        contained.incident_id, contained.instance_id, snapshot_ids, manifest, {**replacement, "strategy": "x"}
    )
    # Then refused: a manual replacement is never nuked
    with pytest.raises(NukeRefused, match="manual"):
        _nuke(aws, ledger, claim, PostEvidenceAction.TERMINATE)
    assert _state(aws, contained.instance_id) == "running"


def test_refused_without_a_recorded_manifest(
    aws: Clients, ledger: IncidentLedger, golden_group: str, make_contained: MakeContained
) -> None:
    # Given completed snapshots and a healthy replacement, but no manifest in the ledger
    member = group_members(aws, golden_group)[0]
    contained = make_contained(member, auto_scaling_group=golden_group)
    detach_from_group(aws, golden_group, member)
    snapshot_ids = start_snapshots(aws, ledger, contained.incident_id, member)["snapshot_ids"]
    started = start_replacement(aws, ledger, contained.incident_id, member)
    replacement = check_replacement(aws, ledger, contained.incident_id, member, started, max_polls=3)
    ledger.record_stage(contained.incident_id, "contained", status=Status.CONTAINED)
    claim = Remediated(contained.incident_id, member, snapshot_ids, {"sha256": "f" * 64}, replacement)
    # When nuked  Then refused
    with pytest.raises(NukeRefused, match="CONTAINED"):
        _nuke(aws, ledger, claim, PostEvidenceAction.TERMINATE)
    assert _state(aws, member) == "running"


@pytest.mark.parametrize(
    ("key", "value"), [("immutable-guard:incident", "ig-other"), ("immutable-guard:state", "released")]
)
def test_refused_when_the_instance_is_not_tagged_as_quarantined_by_this_incident(
    aws: Clients, ledger: IncidentLedger, ready: Remediated, key: str, value: str
) -> None:
    aws.ec2.create_tags(Resources=[ready.instance_id], Tags=[{"Key": key, "Value": value}])
    with pytest.raises(NukeRefused, match="not tagged"):
        _nuke(aws, ledger, ready, PostEvidenceAction.TERMINATE)


def test_refused_when_given_other_snapshots_than_the_manifest_lists(
    aws: Clients, ledger: IncidentLedger, ready: Remediated
) -> None:
    fewer = Remediated(
        ready.incident_id, ready.instance_id, ready.snapshot_ids[:1], ready.manifest, ready.replacement
    )
    with pytest.raises((NukeRefused, EvidenceIncomplete)):
        _nuke(aws, ledger, fewer, PostEvidenceAction.TERMINATE)
    assert _state(aws, ready.instance_id) == "running"


# ---------------------------------------------------------------- the invariant, for any combination


@dataclass
class _FakeEc2:
    instance_id: str
    volumes: list[str]
    snapshots: list[dict[str, Any]]
    calls: list[str] = field(default_factory=list)

    def describe_instances(self, InstanceIds: list[str]) -> dict[str, Any]:
        mappings = [
            {"DeviceName": f"/dev/sd{chr(97 + i)}", "Ebs": {"VolumeId": v}}
            for i, v in enumerate(self.volumes)
        ]
        instance = {
            "InstanceId": self.instance_id,
            "State": {"Name": "running"},
            "Tags": [
                {"Key": "immutable-guard:incident", "Value": "ig-prop"},
                {"Key": "immutable-guard:state", "Value": "quarantined"},
            ],
            "BlockDeviceMappings": mappings,
        }
        return {"Reservations": [{"Instances": [instance]}]}

    def describe_snapshots(self, SnapshotIds: list[str]) -> dict[str, Any]:
        return {"Snapshots": [s for s in self.snapshots if s["SnapshotId"] in SnapshotIds]}

    def modify_instance_attribute(self, **kwargs: Any) -> None:
        self.calls.append("modify_instance_attribute")

    def terminate_instances(self, **kwargs: Any) -> None:
        self.calls.append("terminate_instances")

    def stop_instances(self, **kwargs: Any) -> None:
        self.calls.append("stop_instances")


@dataclass
class _FakeAutoScaling:
    healthy: bool

    def describe_auto_scaling_groups(self, AutoScalingGroupNames: list[str]) -> dict[str, Any]:
        member = {"InstanceId": "i-new", "LifecycleState": "InService", "HealthStatus": "Healthy"}
        if not self.healthy:
            member["HealthStatus"] = "Unhealthy"
        return {"AutoScalingGroups": [{"DesiredCapacity": 1, "Instances": [member]}]}


@dataclass
class _FakeClients:
    ec2: _FakeEc2
    autoscaling: _FakeAutoScaling


@dataclass
class _FakeLedger:
    incident: Incident
    stages: list[str] = field(default_factory=list)

    def get(self, incident_id: str) -> Incident:
        return self.incident

    def record_stage(self, incident_id: str, stage: str, **_: Any) -> None:
        self.stages.append(stage)


SNAPSHOT_STATES = st.sampled_from(["pending", "completed", "error", "recoverable", "recovering"])


@settings(max_examples=200, deadline=None)
@given(
    states=st.lists(SNAPSHOT_STATES, min_size=1, max_size=4),
    snapshot_missing_for_a_volume=st.booleans(),
    healthy=st.booleans(),
    strategy=st.sampled_from(["auto_scaling_group", "manual"]),
    status=st.sampled_from([Status.CONTAINED, Status.EVIDENCE_COMPLETE, Status.REPLACED]),
)
def test_terminate_is_called_exactly_when_evidence_is_complete_and_the_replacement_healthy(
    states: list[str], snapshot_missing_for_a_volume: bool, healthy: bool, strategy: str, status: Status
) -> None:
    # Given any combination of snapshot states, coverage, replacement health, owner and ledger status
    volumes = [f"vol-{i}" for i in range(len(states))]
    snapshots = [
        {
            "SnapshotId": f"snap-{i}",
            "VolumeId": volume,
            "State": state,
            "Tags": [
                {"Key": "immutable-guard:incident", "Value": "ig-prop"},
                {"Key": "immutable-guard:state", "Value": "quarantined"},
            ],
        }
        for i, (volume, state) in enumerate(zip(volumes, states, strict=True))
    ]
    if snapshot_missing_for_a_volume:
        volumes.append("vol-late")
    snapshot_ids = [s["SnapshotId"] for s in snapshots]
    replacement = {"strategy": strategy, "asg_name": "web"}
    ec2 = _FakeEc2("i-old", volumes, snapshots)
    ledger: Any = _FakeLedger(
        Incident(
            incident_id="ig-prop",
            instance_id="i-old",
            status=status,
            mode="enforce",
            decision="remediate",
            kind="port_opened",
            severity="critical",
            account="123456789012",
            region="us-east-1",
            created_at="2025-01-01T00:00:00Z",
            details={
                "evidence_complete": {"sha256": "a" * 64, "snapshot_ids": snapshot_ids},
                "replacement_started": replacement,
            },
        )
    )
    clients: Any = _FakeClients(ec2, _FakeAutoScaling(healthy))
    # When Nuke runs with terminate
    with contextlib.suppress(NukeRefused, EvidenceIncomplete):
        nuke_instance(
            clients,
            ledger,
            nuke_settings(PostEvidenceAction.TERMINATE),
            "ig-prop",
            "i-old",
            snapshot_ids,
            replacement,
        )
    # Then terminate was called if and only if every safety condition held
    safe = (
        all(state == "completed" for state in states)
        and not snapshot_missing_for_a_volume
        and healthy
        and strategy != "manual"
        and status in (Status.EVIDENCE_COMPLETE, Status.REPLACED)
    )
    assert ("terminate_instances" in ec2.calls) is safe
    assert ("nuked" in ledger.stages) is safe


# ---------------------------------------------------------------- handler and IAM


def test_handler_nukes_with_the_configured_action(
    aws: Clients, ready: Remediated, lambda_context: FakeLambdaContext, step_environment: pytest.MonkeyPatch
) -> None:
    step_environment.setenv("POST_EVIDENCE_ACTION", "stop")
    app = load_function("nuke")
    result = app.handler(
        {
            "incident_id": ready.incident_id,
            "instance_id": ready.instance_id,
            "snapshot_ids": ready.snapshot_ids,
            "manifest": ready.manifest,
            "replacement": ready.replacement,
        },
        lambda_context,
    )
    assert result["action"] == "stopped"
    assert _state(aws, ready.instance_id) in ("stopping", "stopped")


def test_template_lets_nuke_touch_only_quarantined_instances() -> None:
    # The destructive actions are conditioned on the tags the Contain step writes.
    from immutable_guard.template import find_template, function_policies, load_template

    policies = function_policies(load_template(find_template()), "NukeFunction")
    destructive = {"ec2:TerminateInstances", "ec2:StopInstances", "ec2:ModifyInstanceAttribute"}
    for statement in (s for policy in policies for s in policy["Statement"]):
        # (A statement granted under a condition, !If [...], is no destructive one.)
        if destructive & set(statement.get("Action", [])):
            assert statement["Condition"]["StringEquals"] == {
                "aws:ResourceTag/immutable-guard:state": "quarantined"
            }
            assert "aws:ResourceTag/immutable-guard:incident" in statement["Condition"]["StringLike"]
            assert "instance/*" in str(statement["Resource"])
