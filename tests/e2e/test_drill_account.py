"""`drill --stack`: the drill against a deployed stack, with its own disposable workload, deleted at the end.

No account is reachable here, so the "account" is the embedded local AWS: template.yaml deployed on it,
described by a CloudFormation stack of the same name (what `sam deploy` leaves behind: outputs and
parameters), and an attacker whose calls reach that deployment's rules as CloudTrail would carry them.
What differs in a real account is only the pace (minutes) and the attacks moto cannot serve."""

from __future__ import annotations

import base64
import json
import struct
import sys

import boto3
import pytest
import yaml
from botocore.exceptions import ClientError
from immutable_guard.clients import Clients
from immutable_guard.drill.account import (
    account_drill,
    preflight,
    read_guard_stack,
    throwaway_public_key,
)
from immutable_guard.drill.command import SCENARIO_NAMES
from immutable_guard.drill.report import Progress, ScenarioReport, drill_passed
from immutable_guard.drill.scenarios import Drill
from immutable_guard.drill.world import LOCAL_PACE
from immutable_guard.errors import GuardError
from immutable_guard.ledger import Incident, IncidentLedger, Status, now_iso
from immutable_guard.local import Deployment, EventRouter, LocalAws, LocalSession
from immutable_guard.local.trail import Actor, CloudTrailEmitter
from immutable_guard.stack import GuardStack

pytestmark = pytest.mark.slow

ATTACKER = "arn:aws:sts::123456789012:assumed-role/attacker/stolen-session"
# Second guard stacks in the region rely on the first one's recorder and association (one per region);
# each makes its own trail, as a region allows several.
SHARED_REGIONAL = {"CreateConfigRecorder": "false", "CreateInventoryAssociation": "false"}
FAST = {
    "SnapshotPollSeconds": "0",
    "ReplacementPollSeconds": "1",
    "MaxPolls": "30",
    "MaxIncidentsPerHour": "20",
}


def register_stack(aws: LocalAws, deployment: Deployment) -> None:
    """The stack record `sam deploy` would leave: the deployment's parameters and outputs."""
    template = {
        "Parameters": {name: {"Type": "String"} for name in deployment.parameters},
        "Resources": {
            "Marker": {
                "Type": "AWS::SSM::Parameter",
                "Properties": {"Name": f"/{deployment.stack_name}/stack", "Type": "String", "Value": "guard"},
            }
        },
        "Outputs": {key: {"Value": str(value)} for key, value in deployment.outputs.items()},
    }
    aws.clients().cloudformation.create_stack(
        StackName=deployment.stack_name,
        TemplateBody=yaml.safe_dump(template),
        Parameters=[{"ParameterKey": k, "ParameterValue": str(v)} for k, v in deployment.parameters.items()],
    )


def deployed(aws: LocalAws, session: LocalSession, name: str, parameters: dict[str, str]) -> Deployment:
    def build() -> Deployment:
        deployment = aws.deploy({**SHARED_REGIONAL, **FAST, **parameters}, stack_name=name)
        register_stack(aws, deployment)
        return deployment

    return session.get(name, build)


def heard_attacker(aws: LocalAws, deployment: Deployment) -> boto3.Session:
    """An attacker whose calls reach the deployment's rules, as CloudTrail and EventBridge carry them."""
    return CloudTrailEmitter(EventRouter(deployment, aws.session()).put).session(Actor(arn=ATTACKER))


def run_account_drill(
    aws: LocalAws, deployment: Deployment, attacker: boto3.Session, only: list[str] | None = None
) -> tuple[list[ScenarioReport], Drill]:
    with account_drill(
        deployment.stack_name, Progress(sys.stdout), aws.session(), attacker=attacker, pace=LOCAL_PACE
    ) as drill:
        return drill.run(only), drill


def stack_gone(clients: Clients, name: str) -> bool:
    try:
        stacks = clients.cloudformation.describe_stacks(StackName=name)["Stacks"]
    except ClientError as exc:
        return "does not exist" in str(exc)
    return all(s["StackStatus"] == "DELETE_COMPLETE" for s in stacks)


def by_key(reports: list[ScenarioReport]) -> dict[str, ScenarioReport]:
    return {r.key: r for r in reports}


def explain(reports: list[ScenarioReport]) -> str:
    return json.dumps([r.as_dict() for r in reports if not r.passed and not r.skipped], indent=1)


@pytest.fixture
def enforcing(local_aws: LocalAws, local_session: LocalSession) -> Deployment:
    return deployed(local_aws, local_session, "drilled-enforce", {"Mode": "enforce"})


@pytest.fixture
def dry_run(local_aws: LocalAws, local_session: LocalSession) -> Deployment:
    return deployed(local_aws, local_session, "drilled-dry-run", {"Mode": "dry-run"})


def test_an_enforcing_stack_is_drilled_on_its_own_workload_and_everything_made_is_deleted(
    local_aws: LocalAws, enforcing: Deployment
) -> None:
    clients = local_aws.clients()
    queues_before = set(clients.sqs.list_queues().get("QueueUrls", []))
    # When
    reports, drill = run_account_drill(local_aws, enforcing, heard_attacker(local_aws, enforcing))
    # Then the attacks moto can carry were detected, contained, preserved, replaced and nuked
    results = by_key(reports)
    for key in ("port-opened", "ssh-key-pushed", "delivered-twice"):
        assert results[key].passed, explain(reports)
    assert drill_passed(reports)
    # ...and what cannot be staged here says why instead of passing
    assert results["file-changed"].skipped and "Inventory" in results["file-changed"].skipped
    assert results["allow-listed"].skipped and "--pipeline-role" in results["allow-listed"].skipped
    assert results["dry-run"].skipped and "Mode=dry-run" in results["dry-run"].skipped
    assert results["shell-opened"].skipped and "SSM agent" in results["shell-opened"].skipped
    assert results["trail-stopped"].skipped and "audit record" in results["trail-stopped"].skipped
    # The redelivered event reached the deployed Detect twice and opened no second incident
    assert [c.name for c in results["delivered-twice"].checks if c.name.startswith(("exactly", "still"))] == [
        "exactly one incident",
        "exactly one remediation",
        "still one incident at the end",
    ]
    # The stack declares no replaceable tag: the standalone server is rightly left to a person, saying why
    standalone = {c.name: c for c in results["port-opened"].checks if c.name.startswith("standalone: ")}
    check = standalone["standalone: left to a person, saying why, the stack untouched"]
    assert check.passed and "not declared replaceable" in check.detail
    # Cleanup: the workload stack and its service role's stack, its instances, the guard's groups, volumes,
    # snapshots and queue are gone
    stack_name = drill.workload.stack_name
    assert stack_name.startswith("immutable-guard-drill-")
    assert stack_gone(clients, stack_name) and stack_gone(clients, f"{stack_name}-role")
    live = clients.ec2.describe_instances(
        InstanceIds=sorted(drill.touched),
        Filters=[{"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]}],
    )["Reservations"]
    assert live == []
    assert not clients.ec2.describe_volumes(
        Filters=[
            {"Name": "volume-id", "Values": sorted(drill.volumes_seen)},
            {"Name": "status", "Values": ["available"]},
        ]
    )["Volumes"]
    assert not clients.ec2.describe_snapshots(
        OwnerIds=["self"], Filters=[{"Name": "volume-id", "Values": sorted(drill.volumes_seen)}]
    )["Snapshots"]
    assert set(clients.sqs.list_queues().get("QueueUrls", [])) == queues_before
    subscriptions = clients.sns.list_subscriptions_by_topic(TopicArn=enforcing.outputs["AlertTopicArn"])
    assert not [s for s in subscriptions["Subscriptions"] if "immutable-guard-drill" in s["Endpoint"]]


def test_a_dry_run_stack_is_drilled_for_dry_run_only(local_aws: LocalAws, dry_run: Deployment) -> None:
    reports, _ = run_account_drill(local_aws, dry_run, heard_attacker(local_aws, dry_run))
    results = by_key(reports)
    assert results["dry-run"].passed, explain(reports)
    assert set(results) == set(SCENARIO_NAMES)
    for key in set(SCENARIO_NAMES) - {"dry-run"}:
        assert "dry-run mode" in (results[key].skipped or "")


def test_an_attack_the_stack_never_hears_of_fails_the_drill_and_it_still_cleans_up(
    local_aws: LocalAws, enforcing: Deployment
) -> None:
    # Given an attacker whose calls reach no rule (as if the account's trail were off)
    unheard = local_aws.session()
    # When
    reports, drill = run_account_drill(local_aws, enforcing, unheard, only=["port-opened"])
    # Then
    [report] = reports
    assert not drill_passed(reports)
    assert next(c for c in report.checks if not c.passed).name == (
        "the group change reaches every immutable instance using it"
    )
    assert stack_gone(local_aws.clients(), drill.workload.stack_name)


def test_an_allow_listed_caller_is_refused_before_anything_is_created() -> None:
    stack = _stack({"Mode": "enforce", "AllowedPrincipalArns": "arn:aws:iam::123456789012:role/attacker"})
    with pytest.raises(GuardError, match="allow-listed"):
        preflight(stack, ATTACKER)


def test_a_notify_only_stack_or_a_foreign_scope_tag_is_refused() -> None:
    with pytest.raises(GuardError, match="notify-only"):
        preflight(_stack({"Mode": "notify-only"}), ATTACKER)
    with pytest.raises(GuardError, match="tagged golden=yes"):
        preflight(_stack({"Mode": "enforce", "ScopeTagKey": "golden", "ScopeTagValue": "yes"}), ATTACKER)


def test_a_stack_that_is_not_a_guard_is_named_in_the_error(local_aws: LocalAws) -> None:
    clients = local_aws.clients()
    with pytest.raises(GuardError, match="no-such-stack"):
        read_guard_stack(clients, "no-such-stack")


def test_the_pushed_key_is_a_well_formed_openssh_ed25519_key_nobody_holds() -> None:
    first, second = throwaway_public_key(), throwaway_public_key()
    kind, blob, comment = first.split(" ")
    raw = base64.b64decode(blob)
    (length,) = struct.unpack(">I", raw[:4])
    assert (kind, raw[4 : 4 + length], comment) == ("ssh-ed25519", b"ssh-ed25519", "immutable-guard-drill")
    assert struct.unpack(">I", raw[4 + length : 8 + length]) == (32,) and len(raw) == 8 + length + 32
    assert first != second


def _stack(parameters: dict[str, str]) -> GuardStack:
    return GuardStack("guard", {}, parameters)


def _incident(incident_id: str, instance_id: str) -> Incident:
    return Incident(
        incident_id=incident_id,
        instance_id=instance_id,
        mode="enforce",
        decision="remediate",
        kind="port_opened",
        severity="critical",
        account="123456789012",
        region="us-east-1",
        created_at=now_iso(),
    )


def test_cleanup_takes_a_protected_server_down_without_the_guard_mistaking_it_for_an_attack(
    local_aws: LocalAws, enforcing: Deployment
) -> None:
    # Given a drill whose own calls the guard hears too (as CloudTrail would), and a standalone server left
    # protected by a Contain that failed half-way (its incident open, protection set, no quarantine tag yet)
    heard = heard_attacker(local_aws, enforcing)
    clients = local_aws.clients()
    ledger = IncidentLedger(clients.dynamodb, enforcing.outputs["IncidentLedgerName"])
    with account_drill(
        enforcing.stack_name,
        Progress(None),
        heard,
        attacker=heard_attacker(local_aws, enforcing),
        pace=LOCAL_PACE,
    ) as drill:
        standalone = drill.workload.standalone_instance_id
        ledger.open_incident(_incident("ig-contain-failed-half-way", standalone))
        clients.ec2.modify_instance_attribute(InstanceId=standalone, DisableApiTermination={"Value": True})
    # When the drill is over, Then the server is gone with the stack, and no other incident was opened for it
    # (the cleanup marks nothing by hand: a quarantine marker with no open incident is a forgery)
    assert stack_gone(clients, drill.workload.stack_name)
    state = clients.ec2.describe_instances(InstanceIds=[standalone])["Reservations"][0]["Instances"][0][
        "State"
    ]
    assert state["Name"] == "terminated"
    # moto's stack deletion ignores the protection; AWS's fails on it, so the cleanup must have lifted it
    protection = clients.ec2.describe_instance_attribute(
        InstanceId=standalone, Attribute="disableApiTermination"
    )
    assert protection["DisableApiTermination"]["Value"] is False
    incidents = [i.incident_id for i in ledger.list_incidents(limit=1000) if i.instance_id == standalone]
    assert incidents == ["ig-contain-failed-half-way"]


def test_cleanup_has_the_guard_release_a_server_kept_after_its_incident_closed(
    local_aws: LocalAws, enforcing: Deployment
) -> None:
    # Given a server kept for forensics (PostEvidenceAction=keep): protected, its incident closed and its
    # lock released, so nothing vouches for its quarantine marker any more
    heard = heard_attacker(local_aws, enforcing)
    clients = local_aws.clients()
    ledger = IncidentLedger(clients.dynamodb, enforcing.outputs["IncidentLedgerName"])
    with account_drill(
        enforcing.stack_name,
        Progress(None),
        heard,
        attacker=heard_attacker(local_aws, enforcing),
        pace=LOCAL_PACE,
    ) as drill:
        standalone = drill.workload.standalone_instance_id
        ledger.open_incident(_incident("ig-kept", standalone))
        ledger.record_prior_state(
            "ig-kept",
            {"disable_api_termination": False, "network_interfaces": [], "volumes": [], "target_groups": []},
        )
        clients.ec2.modify_instance_attribute(InstanceId=standalone, DisableApiTermination={"Value": True})
        clients.ec2.create_tags(
            Resources=[standalone],
            Tags=[
                {"Key": "immutable-guard:incident", "Value": "ig-kept"},
                {"Key": "immutable-guard:state", "Value": "quarantined"},
            ],
        )
        ledger.record_stage("ig-kept", "closed", Status.CLOSED)
        kept = ledger.get("ig-kept")
        ledger.at(kept.account, kept.region).release_lock(standalone, "ig-kept")
    # When the drill is over, Then the guard's own Release lifted the protection, and no incident was opened
    assert ledger.get("ig-kept").status is Status.RELEASED
    state = clients.ec2.describe_instances(InstanceIds=[standalone])["Reservations"][0]["Instances"][0][
        "State"
    ]
    assert state["Name"] == "terminated"
    incidents = [i.incident_id for i in ledger.list_incidents(limit=1000) if i.instance_id == standalone]
    assert incidents == ["ig-kept"]
