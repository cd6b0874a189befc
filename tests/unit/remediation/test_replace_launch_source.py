"""Replace refuses a golden image that changed after the incident opened: Contain records what the
owner would launch (the launch template, the version its $Latest / $Default resolves to, or the launch
configuration), and Replace compares it with what the owner would launch now, before any launch. The
state machine catches the typed error on StartReplacement and takes the failure path: the server stays
quarantined and the team is alerted."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from immutable_guard.clients import Clients
from immutable_guard.errors import LaunchTemplateChanged
from immutable_guard.ledger import IncidentLedger
from immutable_guard.remediation.launch_source import PRIOR_STATE_KEY
from immutable_guard.remediation.quarantine import quarantine_instance
from immutable_guard.remediation.replace import STAGE_REPLACEMENT_STARTED, start_replacement
from remediation_world import GOLDEN_AMI, make_finding

ASL = Path(__file__).resolve().parents[3] / "statemachines" / "remediation.asl.json"
OpenIncident = Callable[[str, dict[str, object]], str]


def _contain_a_member(
    aws: Clients, ledger: IncidentLedger, group: str, open_incident: OpenIncident
) -> tuple[str, str]:
    """Open an incident on a member of the group and run the real Contain step on it."""
    groups = aws.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[group])["AutoScalingGroups"]
    member = groups[0]["Instances"][0]["InstanceId"]
    finding = make_finding()
    incident_id = open_incident(member, finding)
    quarantine_instance(aws, ledger, incident_id, member, finding)
    return incident_id, member


def _new_version(aws: Clients) -> int:
    version = aws.ec2.create_launch_template_version(
        LaunchTemplateName="web-golden", SourceVersion="1", LaunchTemplateData={"ImageId": GOLDEN_AMI}
    )
    return int(version["LaunchTemplateVersion"]["VersionNumber"])


def test_contain_records_the_version_the_group_would_launch(
    aws: Clients, ledger: IncidentLedger, golden_group: str, open_incident: OpenIncident
) -> None:
    # Given a group launching its template without a version ($Default, version 1)
    # When one of its members is contained
    incident_id, _ = _contain_a_member(aws, ledger, golden_group, open_incident)
    # Then the prior state holds the group's template and what $Default resolved to
    recorded = (ledger.get(incident_id).prior_state or {})[PRIOR_STATE_KEY]
    assert recorded["auto_scaling_group"] == golden_group
    assert [(t["name"], t["version"], t["resolved"]) for t in recorded["launch_templates"]] == [
        ("web-golden", "$Default", 1)
    ]


def test_an_unchanged_template_is_replaced_from(
    aws: Clients, ledger: IncidentLedger, golden_group: str, open_incident: OpenIncident
) -> None:
    incident_id, member = _contain_a_member(aws, ledger, golden_group, open_incident)
    started = start_replacement(aws, ledger, incident_id, member)
    assert started["strategy"] == "auto_scaling_group"


def test_a_new_default_version_after_the_incident_opened_is_refused(
    aws: Clients, ledger: IncidentLedger, golden_group: str, open_incident: OpenIncident
) -> None:
    # Given a contained member, and then the template's default version changed
    incident_id, member = _contain_a_member(aws, ledger, golden_group, open_incident)
    aws.ec2.modify_launch_template(LaunchTemplateName="web-golden", DefaultVersion=str(_new_version(aws)))
    # When the replacement starts / Then it is refused, naming what changed, and nothing is started
    with pytest.raises(LaunchTemplateChanged, match=r"\$Default=1.*\$Default=2"):
        start_replacement(aws, ledger, incident_id, member)
    assert STAGE_REPLACEMENT_STARTED not in ledger.get(incident_id).timeline


def test_a_new_latest_version_refuses_a_group_that_launches_latest(
    aws: Clients, ledger: IncidentLedger, golden_group: str, open_incident: OpenIncident
) -> None:
    aws.autoscaling.update_auto_scaling_group(
        AutoScalingGroupName=golden_group,
        LaunchTemplate={"LaunchTemplateName": "web-golden", "Version": "$Latest"},
    )
    incident_id, member = _contain_a_member(aws, ledger, golden_group, open_incident)
    _new_version(aws)
    with pytest.raises(LaunchTemplateChanged):
        start_replacement(aws, ledger, incident_id, member)


def test_a_new_version_no_one_launches_is_no_reason_to_refuse(
    aws: Clients, ledger: IncidentLedger, golden_group: str, open_incident: OpenIncident
) -> None:
    # The group launches $Default; a new, non-default version changes nothing it would launch.
    incident_id, member = _contain_a_member(aws, ledger, golden_group, open_incident)
    _new_version(aws)
    assert start_replacement(aws, ledger, incident_id, member)["strategy"] == "auto_scaling_group"


def test_a_group_pointed_at_another_template_is_refused(
    aws: Clients, ledger: IncidentLedger, golden_group: str, open_incident: OpenIncident
) -> None:
    incident_id, member = _contain_a_member(aws, ledger, golden_group, open_incident)
    aws.ec2.create_launch_template(LaunchTemplateName="evil", LaunchTemplateData={"ImageId": GOLDEN_AMI})
    aws.autoscaling.update_auto_scaling_group(
        AutoScalingGroupName=golden_group, LaunchTemplate={"LaunchTemplateName": "evil", "Version": "1"}
    )
    with pytest.raises(LaunchTemplateChanged, match="evil"):
        start_replacement(aws, ledger, incident_id, member)


def test_an_incident_without_a_record_is_replaced_as_before(
    aws: Clients, ledger: IncidentLedger, golden_group: str, open_incident: OpenIncident
) -> None:
    # Given an incident contained before the launch source was recorded (its prior state lacks it)
    groups = aws.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[golden_group])
    member = groups["AutoScalingGroups"][0]["Instances"][0]["InstanceId"]
    incident_id = open_incident(member, make_finding())
    ledger.record_prior_state(incident_id, {"auto_scaling_group": golden_group})
    _new_version(aws)
    # Then nothing proves a change: the replacement starts
    assert start_replacement(aws, ledger, incident_id, member)["strategy"] == "auto_scaling_group"


def test_the_state_machine_sends_the_refusal_to_the_failure_path() -> None:
    # The refusal is not retried (it is no passing failure) and StartReplacement's catch-all leads to
    # the failure alert, leaving the server quarantined.
    definition = json.loads(
        ASL.read_text()
        .replace("${ReplacementPollSeconds}", "1")
        .replace("${SnapshotPollSeconds}", "1")
        .replace("${MaxPolls}", "1")
    )
    start = definition["States"]["StartReplacement"]
    retried = {name for retry in start["Retry"] for name in retry["ErrorEquals"]}
    assert "LaunchTemplateChanged" not in retried and "States.ALL" not in retried
    (catch,) = start["Catch"]
    assert catch["ErrorEquals"] == ["States.ALL"]
    assert definition["States"][catch["Next"]]["Next"] == "AlertFailed"


def test_a_stack_instance_is_not_updated_when_its_template_changed_since(
    aws: Clients, ledger: IncidentLedger, open_incident: OpenIncident
) -> None:
    # Given a stack's instance launched from a launch template, contained with its launch source recorded
    template_id = aws.ec2.create_launch_template(
        LaunchTemplateName="web-golden", LaunchTemplateData={"ImageId": GOLDEN_AMI}
    )["LaunchTemplate"]["LaunchTemplateId"]
    server = aws.ec2.run_instances(
        LaunchTemplate={"LaunchTemplateId": template_id},
        MinCount=1,
        MaxCount=1,
        TagSpecifications=[
            {
                "ResourceType": "instance",
                "Tags": [
                    {"Key": "aws:cloudformation:stack-name", "Value": "web"},
                    {"Key": "aws:cloudformation:logical-id", "Value": "Web"},
                ],
            }
        ],
    )["Instances"][0]["InstanceId"]
    finding = make_finding()
    incident_id = open_incident(server, finding)
    quarantine_instance(aws, ledger, incident_id, server, finding)
    recorded = (ledger.get(incident_id).prior_state or {})[PRIOR_STATE_KEY]
    assert {t["version"]: t["resolved"] for t in recorded["launch_templates"]} == {
        "$Latest": 1,
        "$Default": 1,
    }
    # When a new version appears before Replace / Then the stack is never asked to update (no stack exists
    # here: any CloudFormation call would fail with another error)
    _new_version(aws)
    with pytest.raises(LaunchTemplateChanged, match=r"\$Latest=1"):
        start_replacement(aws, ledger, incident_id, server)
