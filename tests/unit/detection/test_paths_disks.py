"""Disks and metadata options (paths/disks.py): volumes attached or detached, a root volume replaced and
the metadata service loosened or tightened are mutations of the named server; a detach that names no
server is alerted."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from detection_samples import SAMPLE_INSTANCE, World, load_sample
from immutable_guard.detection import Ec2InstanceDirectory, Policy, judge_event, normalise, parse_event
from immutable_guard.model import Decision, Finding, Kind, Severity
from immutable_guard.patterns import matches
from immutable_guard.template import event_rules, load_template

TEMPLATE = load_template(Path(__file__).resolve().parents[3] / "template.yaml")
PIPELINE = "arn:aws:iam::111122223333:role/deploy-pipeline"
SAMPLE_VOLUME = "vol-0e89d6e0cceb33115"


def finding_of(raw: dict[str, Any]) -> Finding:
    return normalise(parse_event(raw))


def metadata_request(**options: Any) -> dict[str, Any]:
    raw = load_sample("cloudtrail-modify-instance-metadata-options.json")
    raw["detail"]["requestParameters"] = {
        "ModifyInstanceMetadataOptionsRequest": {"InstanceId": SAMPLE_INSTANCE, **options}
    }
    return raw


SAMPLES = [
    ("cloudtrail-attach-volume.json", Kind.DISK_CHANGED, Severity.HIGH),
    ("cloudtrail-detach-volume.json", Kind.DISK_CHANGED, Severity.HIGH),
    ("cloudtrail-create-replace-root-volume-task.json", Kind.DISK_CHANGED, Severity.HIGH),
    ("cloudtrail-modify-instance-metadata-options.json", Kind.INSTANCE_MODIFIED, Severity.HIGH),
    ("benign-modify-instance-metadata-options-allow-listed.json", Kind.INSTANCE_MODIFIED, Severity.MEDIUM),
]


@pytest.mark.parametrize(("name", "kind", "severity"), SAMPLES)
def test_each_disk_sample_names_its_server_and_is_delivered_by_one_rule(
    name: str, kind: Kind, severity: Severity
) -> None:
    """Record shapes: AttachVolume request {volumeId, instanceId, device, deleteOnTermination} and
    response {volumeId, instanceId, device, status, attachTime} from a published record (EC2 API query
    shape; DetachVolume answers the same VolumeAttachment); CreateReplaceRootVolumeTask wrapped as
    CreateReplaceRootVolumeTaskRequest.InstanceId (a public audit script that reads CloudTrail);
    ModifyInstanceMetadataOptions wrapped as ModifyInstanceMetadataOptionsRequest {InstanceId,
    HttpTokens, ...} (panther-labs/panther-analysis's CloudTrail translation tests)."""
    # Given a sample / When it is normalised
    raw = load_sample(name)
    finding = finding_of(raw)
    # Then it has its kind and severity, names the instance, and one rule delivers it
    assert (finding.kind, finding.severity) == (kind, severity)
    assert finding.instance_ids == (SAMPLE_INSTANCE,)
    assert len([rule for rule in event_rules(TEMPLATE) if matches(rule.pattern, raw)]) == 1


@pytest.mark.parametrize("name", [name for name, _, _ in SAMPLES])
def test_a_failed_call_is_delivered_by_no_rule_and_an_empty_record_does_not_crash(name: str) -> None:
    raw = load_sample(name)
    raw["detail"]["errorCode"] = "Client.IncorrectState"
    assert [rule for rule in event_rules(TEMPLATE) if matches(rule.pattern, raw)] == []
    raw["detail"]["requestParameters"] = None
    raw["detail"]["responseElements"] = None
    finding = finding_of(raw)
    assert finding.summary and finding.instance_ids == () and finding.alert_if_unresolved


# ---------------------------------------------------------------- volumes


def test_a_detach_names_the_instance_from_its_response() -> None:
    finding = finding_of(load_sample("cloudtrail-detach-volume.json"))
    assert "detached from" in finding.summary
    assert finding.evidence["volume_id"] == SAMPLE_VOLUME


def test_a_detach_that_names_no_instance_is_alerted_not_ignored(world: World) -> None:
    # Given a detach whose record names only the volume
    raw = world.event("cloudtrail-detach-volume.json")
    raw["detail"]["responseElements"] = {"volumeId": SAMPLE_VOLUME, "status": "detaching"}
    finding = finding_of(raw)
    assert finding.resource_ids == (SAMPLE_VOLUME,)
    # When it is judged against EC2
    judgement = judge_event(raw, Policy(), Ec2InstanceDirectory(world.ec2))
    # Then a person is asked to look
    assert (judgement.decision, judgement.reason) == (Decision.ALERT, "unresolved_target")


def test_a_forced_detach_says_so() -> None:
    raw = load_sample("cloudtrail-detach-volume.json")
    raw["detail"]["requestParameters"]["force"] = True
    finding = finding_of(raw)
    assert finding.evidence["forced"] is True and "(forced)" in finding.summary


@pytest.mark.parametrize(
    "name",
    [
        "cloudtrail-attach-volume.json",
        "cloudtrail-detach-volume.json",
        "cloudtrail-create-replace-root-volume-task.json",
    ],
)
def test_a_disk_change_is_remediated_on_an_immutable_server_and_ignored_on_a_mutable_one(
    world: World, name: str
) -> None:
    directory = Ec2InstanceDirectory(world.ec2)
    immutable = judge_event(world.event(name), Policy(), directory)
    assert immutable.decision is Decision.REMEDIATE
    assert [i.instance_id for i in immutable.instances_in_scope] == [world.immutable_id]
    mutable = judge_event(world.event(name, **{world.immutable_id: world.mutable_id}), Policy(), directory)
    assert (mutable.decision, mutable.reason) == (Decision.IGNORE, "out_of_scope")


def test_a_volume_attached_to_a_multi_attach_peer_reaches_only_the_named_server(world: World) -> None:
    # The volume id is not resolved: with Multi-Attach it may sit on other servers that did not change.
    assert finding_of(world.event("cloudtrail-attach-volume.json")).resource_ids == (world.immutable_id,)


def test_the_root_volume_source_is_read() -> None:
    finding = finding_of(load_sample("cloudtrail-create-replace-root-volume-task.json"))
    assert finding.evidence["source"] == "snap-0a1b2c3d4e5f60789"
    assert finding.evidence["task_id"] == "replacevol-0a1b2c3d4e5f60789"


# ---------------------------------------------------------------- metadata options


@pytest.mark.parametrize(
    ("options", "severity", "loosened"),
    [
        ({"HttpTokens": "optional"}, Severity.HIGH, ["IMDSv1 allowed (HttpTokens optional)"]),
        ({"HttpPutResponseHopLimit": 2}, Severity.HIGH, ["hop limit 2"]),
        ({"HttpEndpoint": "enabled"}, Severity.HIGH, ["metadata endpoint enabled without requiring tokens"]),
        ({"HttpTokens": "required", "HttpEndpoint": "enabled"}, Severity.MEDIUM, []),
        ({"HttpPutResponseHopLimit": 1}, Severity.MEDIUM, []),
        ({"HttpEndpoint": "disabled"}, Severity.MEDIUM, []),
        ({"InstanceMetadataTags": "enabled"}, Severity.MEDIUM, []),
    ],
)
def test_loosening_the_metadata_service_is_high_and_any_other_change_still_a_mutation(
    options: dict[str, Any], severity: Severity, loosened: list[str]
) -> None:
    finding = finding_of(metadata_request(**options))
    assert finding.kind is Kind.INSTANCE_MODIFIED
    assert (finding.severity, finding.evidence["loosened"]) == (severity, loosened)
    assert finding.instance_ids == (SAMPLE_INSTANCE,)


def test_lower_camel_metadata_fields_are_read_too() -> None:
    raw = load_sample("cloudtrail-modify-instance-metadata-options.json")
    raw["detail"]["requestParameters"] = {"instanceId": SAMPLE_INSTANCE, "httpTokens": "optional"}
    finding = finding_of(raw)
    assert finding.severity is Severity.HIGH and finding.instance_ids == (SAMPLE_INSTANCE,)


def test_tightening_metadata_on_an_immutable_server_is_still_remediated(world: World) -> None:
    # Any change to a running immutable server counts, even one that makes it stricter.
    raw = world.event("benign-modify-instance-metadata-options-allow-listed.json")
    raw["detail"]["userIdentity"] = copy.deepcopy(
        load_sample("cloudtrail-modify-instance-metadata-options.json")["detail"]["userIdentity"]
    )
    judgement = judge_event(raw, Policy(), Ec2InstanceDirectory(world.ec2))
    assert judgement.decision is Decision.REMEDIATE


def test_the_pipeline_hardening_metadata_is_ignored(world: World) -> None:
    raw = world.event("benign-modify-instance-metadata-options-allow-listed.json")
    judgement = judge_event(raw, Policy(allowed_principal_arns=(PIPELINE,)), Ec2InstanceDirectory(world.ec2))
    assert (judgement.decision, judgement.reason) == (Decision.IGNORE, "allow_listed_principal")
