"""Organisation mode on the local AWS with several accounts (issue 14): an event from a member account and
region is judged with that account's own EC2 API (its reader role), remediated there through its member
roles with the incident id as session name, and every effect is read back from that account's API; events
whose record disagrees with the envelope, from an unregistered account, or from an unverified one are
refused or kept in dry-run.

moto keeps each account's resources apart and scopes the credentials of an assumed role to the role's
account; the runtime refuses AssumeRole into a role that does not exist or does not trust the caller
(local/moto_fixes.py, section k), as AWS does. The steps run as the deployed functions' handlers would,
called in this process with the security account's function ARN (not through the state machine: the
template's function roles get their sts:AssumeRole grants with the member-role templates)."""

from __future__ import annotations

import importlib.util
import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest
from aws_lambda_powertools import Metrics
from botocore.exceptions import ClientError
from immutable_guard.accounts import AccountRegistry
from immutable_guard.clients import Clients
from immutable_guard.drill.organization_world import golden_group, member_roles_stack
from immutable_guard.errors import EvidenceIncomplete, MemberRoleUnavailable, SnapshotFailed
from immutable_guard.ledger import IncidentLedger, Status
from immutable_guard.local import LocalAws, LocalSession
from immutable_guard.local.runtime import HOME_ACCOUNT
from immutable_guard.members import FunctionPlace, MemberAccess
from immutable_guard.model import Mode, PostEvidenceAction
from immutable_guard.pipeline import process_event
from immutable_guard.settings import DetectSettings

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
EVENTS = REPO / "events"
ORGANIZATION = "o-exampleorg01"
HOME_REGION = "us-east-1"
MEMBER = "222233334444"  # registered and verified, enforce
MEMBER_REGION = "eu-west-1"  # not the security account's region
UNVERIFIED = "333344445555"  # registered, enforce, not verified yet
NO_ROLES = "555566667777"  # registered and verified, but its member-roles stack was never deployed
OUTSIDER = "999988887777"  # not registered
SAMPLE_ACCOUNT = "111122223333"  # the account of the samples in events/
SAMPLE_INSTANCE = "i-0abc1234def567890"
HERE = FunctionPlace("aws", HOME_ACCOUNT, HOME_REGION)
FUNCTION_ARN = f"arn:aws:lambda:{HOME_REGION}:{HOME_ACCOUNT}:function:immutable-guard-step"
PASS_MACHINE = json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}})


@dataclass
class Member:
    """An account of the organisation and one region in it, seen through its administrator."""

    account: str
    region: str
    clients: Clients
    group_name: str = ""
    instances: list[str] = field(default_factory=list)


@dataclass
class Organization:
    home: Clients
    ledger_table: str
    topic_arn: str
    dead_letter_url: str
    bucket: str
    machine_arn: str
    members: dict[str, Member]
    custody_key_arn: str = ""

    def settings(self) -> DetectSettings:
        return DetectSettings(
            ledger_table=self.ledger_table,
            alert_topic_arn=self.topic_arn,
            mode=Mode.ENFORCE,
            scope_tag_key="immutable",
            scope_tag_value="true",
            max_incidents_per_hour=50,
            post_evidence_action=PostEvidenceAction.TERMINATE,
            remediation_state_machine_arn=self.machine_arn,
            dead_letter_queue_url=self.dead_letter_url,
            organization_id=ORGANIZATION,
            member_role_name="ImmutableGuard-Member-Reader",
        )

    def detect(self, event: dict[str, Any], **overrides: Any) -> dict[str, Any]:
        metrics = Metrics(namespace="ImmutableGuardTest")
        settings = self.settings().model_copy(update=overrides)
        result = process_event(event, settings, self.home, metrics, expected_account=HOME_ACCOUNT, here=HERE)
        return result.model_dump(mode="json")

    @property
    def ledger(self) -> IncidentLedger:
        return IncidentLedger(self.home.dynamodb, self.ledger_table)


def _member_roles(admin: boto3.Session) -> None:
    """What the member-roles StackSet gives an account: organization/member-roles.yaml, created through
    CloudFormation in that account (each ImmutableGuard-Member-<X> trusting the security account's central
    role of the same function; permissions are not evaluated by moto)."""
    member_roles_stack(admin, REPO, ORGANIZATION, HOME_ACCOUNT, HOME_REGION)


def _golden_group(member: Member) -> None:
    """An Auto Scaling group of immutable servers in the member's region (so Replace can rebuild one)."""
    member.group_name, member.instances = golden_group(member.clients)


def _build(local_aws: LocalAws) -> Organization:
    home = local_aws.clients()
    suffix = uuid.uuid4().hex[:8]
    table = f"org-ledger-{suffix}"
    home.dynamodb.create_table(
        TableName=table,
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    bucket = f"org-evidence-{suffix}"
    home.s3.create_bucket(Bucket=bucket)
    home.s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    machine = home.stepfunctions.create_state_machine(
        name=f"org-remediation-{suffix}",
        definition=PASS_MACHINE,
        roleArn=f"arn:aws:iam::{HOME_ACCOUNT}:role/sfn",
    )["stateMachineArn"]
    members: dict[str, Member] = {}
    for account in (MEMBER, UNVERIFIED, NO_ROLES):
        admin = local_aws.account_session(account, MEMBER_REGION)
        if account != NO_ROLES:
            _member_roles(admin)
        member = Member(account, MEMBER_REGION, Clients(admin, region_name=MEMBER_REGION))
        _golden_group(member)
        members[account] = member
    registry = AccountRegistry(home.dynamodb, table)
    for account in (MEMBER, UNVERIFIED, NO_ROLES):
        registry.add(account, Mode.ENFORCE, ou="ou-exam-workloads")
    registry.mark_verified(MEMBER)
    registry.mark_verified(NO_ROLES)
    return Organization(
        home=home,
        ledger_table=table,
        topic_arn=home.sns.create_topic(Name=f"org-alerts-{suffix}")["TopicArn"],
        dead_letter_url=home.sqs.create_queue(QueueName=f"org-dlq-{suffix}")["QueueUrl"],
        bucket=bucket,
        machine_arn=machine,
        members=members,
        # The security account's custody key, in its home region (template.yaml's EvidenceCustodyKey).
        custody_key_arn=_custody_key(home),
    )


def _custody_key(home: Clients) -> str:
    kms = home.session.client("kms", region_name=HOME_REGION)
    return str(kms.create_key(Description="custody of member evidence")["KeyMetadata"]["Arn"])


@pytest.fixture
def org(local_aws: LocalAws, local_session: LocalSession) -> Organization:
    return local_session.get("organization", lambda: _build(local_aws))


def ssh_key_pushed(
    account: str, region: str, instance_id: str, envelope: dict[str, str] | None = None
) -> dict[str, Any]:
    """events/cloudtrail-send-ssh-public-key.json as the member's CloudTrail records it: its account and
    region in the record (recipientAccountId, awsRegion, the principal's ARNs) and in the envelope."""
    text = (EVENTS / "cloudtrail-send-ssh-public-key.json").read_text("utf-8")
    text = text.replace(SAMPLE_ACCOUNT, account).replace(SAMPLE_INSTANCE, instance_id)
    text = text.replace('"us-east-1"', f'"{region}"').replace(
        "ec2-instance-connect.us-east-1", f"ec2-instance-connect.{region}"
    )
    event: dict[str, Any] = json.loads(text)
    event["id"] = str(uuid.uuid4())
    event["detail"]["eventID"] = str(uuid.uuid4())
    event.update(envelope or {})
    return event


def _instance(member: Member, instance_id: str) -> dict[str, Any]:
    reservations = member.clients.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    return dict(reservations[0]["Instances"][0])


# ---------------------------------------------------------------------- the steps, as their handlers


@dataclass
class _Context:
    function_name: str = "immutable-guard-step"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = FUNCTION_ARN
    aws_request_id: str = "00000000-0000-0000-0000-000000000000"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        f"org_{name}_{uuid.uuid4().hex[:6]}", REPO / "functions" / name / "app.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def steps(org: Organization, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The remediation handlers, each with its function's environment in organisation mode."""
    common = {
        "LEDGER_TABLE": org.ledger_table,
        "ALERT_TOPIC_ARN": org.topic_arn,
        "ORGANIZATION_ID": ORGANIZATION,
        "EVIDENCE_BUCKET": org.bucket,
        "MAX_POLLS": "30",
        "POST_EVIDENCE_ACTION": "terminate",
        "REMEDIATION_STATE_MACHINE_ARN": org.machine_arn,
        "CUSTODY_KEY_ARN": org.custody_key_arn,
    }
    for name, value in common.items():
        monkeypatch.setenv(name, value)
    handlers = {}
    for name in ("quarantine", "evidence", "replace", "nuke", "release"):
        module = _load(name)
        role = f"ImmutableGuard-Member-{name.capitalize()}"

        def call(event: dict[str, Any], module: ModuleType = module, role: str = role) -> dict[str, Any]:
            monkeypatch.setenv("MEMBER_ROLE_NAME", role)
            module.dependencies.cache_clear()
            result: dict[str, Any] = module.handler(event, _Context())
            return result

        handlers[name] = call
    return handlers


# ---------------------------------------------------------------------- scenarios


def test_the_member_role_is_assumed_in_the_member_account_with_the_incident_as_session_name(
    org: Organization,
) -> None:
    # Given the security account's Quarantine function
    access = MemberAccess(org.home, "ImmutableGuard-Member-Quarantine")
    # When it needs clients for an instance in the member account and another region
    clients = access.clients_for(HERE, MEMBER, MEMBER_REGION, "ig-i-0abc-5f2c9a1b7d3e")
    # Then they act as the member role, in the member account, under the incident's name
    identity = clients.sts.get_caller_identity()
    assert identity["Account"] == MEMBER
    assert identity["Arn"] == (
        f"arn:aws:sts::{MEMBER}:assumed-role/ImmutableGuard-Member-Quarantine/ig-i-0abc-5f2c9a1b7d3e"
    )
    # And they see the member's servers, not the security account's
    seen = {i["InstanceId"] for r in clients.ec2.describe_instances()["Reservations"] for i in r["Instances"]}
    assert set(org.members[MEMBER].instances) <= seen
    home_seen = {
        i["InstanceId"]
        for r in org.home.session.client("ec2", region_name=MEMBER_REGION).describe_instances()[
            "Reservations"
        ]
        for i in r["Instances"]
    }
    assert not set(org.members[MEMBER].instances) & home_seen
    # And the guard's own resources are still the security account's
    assert clients.dynamodb is org.home.dynamodb and clients.s3 is org.home.s3
    # And the same account, region and incident reuse the credentials; the function's own place needs none
    assert access.clients_for(HERE, MEMBER, MEMBER_REGION, "ig-i-0abc-5f2c9a1b7d3e") is clients
    assert access.clients_for(HERE, HOME_ACCOUNT, HOME_REGION, "ig-x") is org.home


def test_an_account_without_the_member_roles_fails_with_one_line_naming_the_role(org: Organization) -> None:
    access = MemberAccess(org.home, "ImmutableGuard-Member-Quarantine")
    with pytest.raises(MemberRoleUnavailable) as raised:
        access.clients_for(HERE, NO_ROLES, MEMBER_REGION, "ig-i-0abc-1")
    message = str(raised.value)
    assert message.startswith(
        f"cannot assume arn:aws:iam::{NO_ROLES}:role/ImmutableGuard-Member-Quarantine: "
    )
    assert message.endswith(f"is the member-roles stack deployed in {NO_ROLES}?")
    assert "\n" not in message


def test_an_attack_in_a_member_account_is_contained_preserved_replaced_and_nuked_there(
    org: Organization, steps: dict[str, Any]
) -> None:
    member = org.members[MEMBER]
    instance_id = member.instances[0]
    # When the member's CloudTrail reports an SSH key pushed to one of its immutable servers
    result = org.detect(ssh_key_pushed(MEMBER, MEMBER_REGION, instance_id))
    # Then Detect read the server through the member's reader role and opened an enforce incident there
    assert (result["decision"], result["reason"]) == ("remediate", "mutation_of_immutable_instance"), result
    [opened] = result["instances"]
    assert (opened["instance_id"], opened["outcome"], opened["mode"]) == (instance_id, "opened", "enforce")
    incident_id = opened["incident_id"]
    incident = org.ledger.get(incident_id)
    assert (incident.account, incident.region) == (MEMBER, MEMBER_REGION)
    # And the remediation was started with the place in its input
    execution = org.home.stepfunctions.list_executions(stateMachineArn=org.machine_arn)["executions"]
    [started] = [e for e in execution if e["name"] == incident_id]
    given = json.loads(
        org.home.stepfunctions.describe_execution(executionArn=started["executionArn"])["input"]
    )
    assert (given["account"], given["region"]) == (MEMBER, MEMBER_REGION)

    # When every step runs with that input
    place = {
        "incident_id": incident_id,
        "instance_id": instance_id,
        "account": MEMBER,
        "region": MEMBER_REGION,
    }
    contained = steps["quarantine"]({**place, "finding": given["finding"]})
    evidence = steps["evidence"]({**place, "action": "start"})
    while not evidence["all_completed"]:
        evidence = steps["evidence"]({**place, "action": "check", "snapshot_ids": evidence["snapshot_ids"]})
    # (custody in the security account: the member's instance is nuked only once a locked copy is there)
    assert evidence["custody"] is True
    evidence = _take_into_custody(steps, place, evidence)
    manifest = steps["evidence"](
        {**place, "action": "manifest", "snapshot_ids": evidence["snapshot_ids"], "finding": given["finding"]}
    )
    replacement = steps["replace"]({**place, "action": "start"})
    while not replacement.get("healthy"):
        replacement = steps["replace"]({**place, "action": "check", "replacement": replacement})
    nuked = steps["nuke"](
        {**place, "snapshot_ids": evidence["snapshot_ids"], "manifest": manifest, "replacement": replacement}
    )

    # Then the member account's own EC2 API shows each effect: isolated, snapshotted, terminated
    assert contained["isolation_group_ids"]
    groups = member.clients.ec2.describe_security_groups(GroupIds=contained["isolation_group_ids"])
    assert {g["GroupName"] for g in groups["SecurityGroups"]} == {"immutable-guard-isolation"}
    snapshots = member.clients.ec2.describe_snapshots(SnapshotIds=evidence["snapshot_ids"])["Snapshots"]
    assert snapshots and {s["OwnerId"] for s in snapshots} == {MEMBER}
    assert {s["State"] for s in snapshots} == {"completed"}
    assert nuked["action"] == "terminated"
    assert _instance(member, instance_id)["State"]["Name"] == "terminated"
    # And the group rebuilt it in the member account
    group = member.clients.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[member.group_name])
    in_service = [i["InstanceId"] for i in group["AutoScalingGroups"][0]["Instances"]]
    assert len(in_service) == 2 and instance_id not in in_service
    # And the evidence manifest and the incident are the security account's, the manifest filed under the
    # member's account, region and incident, naming both snapshots and the copy's lock
    assert manifest["key"] == f"{MEMBER}/{MEMBER_REGION}/{incident_id}/manifest.json"
    stored = json.loads(org.home.s3.get_object(Bucket=org.bucket, Key=manifest["key"])["Body"].read())
    assert stored["instance_id"] == instance_id
    custody = stored["custody"]
    assert (custody["member_account"], custody["member_region"]) == (MEMBER, MEMBER_REGION)
    assert (custody["account"], custody["region"]) == (HOME_ACCOUNT, HOME_REGION)
    assert sorted(c["member_snapshot_id"] for c in custody["copies"]) == evidence["snapshot_ids"]
    assert {c["lock_state"] for c in custody["copies"]} == {"governance"}
    assert nuked["custody_snapshot_ids"] == sorted(c["custody_snapshot_id"] for c in custody["copies"])
    # And the security account's own EC2 API shows the copies: its own, completed, encrypted with its key,
    # locked; its administrator cannot delete them
    home_ec2 = org.home.session.client("ec2", region_name=HOME_REGION)
    held = home_ec2.describe_snapshots(SnapshotIds=nuked["custody_snapshot_ids"])["Snapshots"]
    assert {(s["OwnerId"], s["State"], s["Encrypted"]) for s in held} == {(HOME_ACCOUNT, "completed", True)}
    assert {s["KmsKeyId"] for s in held} == {org.custody_key_arn}
    locks = home_ec2.describe_locked_snapshots(SnapshotIds=nuked["custody_snapshot_ids"])["Snapshots"]
    assert {lock["LockState"] for lock in locks} == {"governance"} and len(locks) == len(held)
    with pytest.raises(ClientError) as refused:
        home_ec2.delete_snapshot(SnapshotId=nuked["custody_snapshot_ids"][0])
    assert refused.value.response["Error"]["Code"] == "SnapshotLocked"
    # And the member's copy made for the transfer is shared with nobody any more
    member_home = org.members[MEMBER].clients.session.client("ec2", region_name=HOME_REGION)
    for copy in custody["copies"]:
        shared = member_home.describe_snapshot_attribute(
            SnapshotId=copy["transfer_snapshot_id"], Attribute="createVolumePermission"
        )
        assert shared["CreateVolumePermissions"] == []
    final = org.ledger.get(incident_id)
    assert final.status is Status.REPLACED and {"contained", "evidence_complete", "nuked"} <= set(
        final.timeline
    )


def _take_into_custody(
    steps: dict[str, Any], place: dict[str, Any], evidence: dict[str, Any]
) -> dict[str, Any]:
    """The state machine's custody loop: poll until the security account's copies are locked."""
    polls = 0
    while not evidence.get("custody_complete"):
        evidence = steps["evidence"](
            {**place, "action": "custody", "snapshot_ids": evidence["snapshot_ids"], "polls": polls}
        )
        polls = evidence["custody_polls"]
    return evidence


def _server_with_evidence(org: Organization, steps: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A fresh immutable server of the member, attacked, contained and snapshotted (completed)."""
    member = org.members[MEMBER]
    ec2 = member.clients.ec2
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    instance_id = ec2.run_instances(
        ImageId=image,
        InstanceType="t3.micro",
        MinCount=1,
        MaxCount=1,
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "immutable", "Value": "true"}]}],
    )["Instances"][0]["InstanceId"]
    [opened] = org.detect(ssh_key_pushed(MEMBER, MEMBER_REGION, instance_id))["instances"]
    place = {
        "incident_id": opened["incident_id"],
        "instance_id": instance_id,
        "account": MEMBER,
        "region": MEMBER_REGION,
    }
    steps["quarantine"]({**place, "finding": org.ledger.get(opened["incident_id"]).finding})
    evidence = steps["evidence"]({**place, "action": "start"})
    while not evidence["all_completed"]:
        evidence = steps["evidence"]({**place, "action": "check", "snapshot_ids": evidence["snapshot_ids"]})
    evidence = steps["evidence"]({**place, "action": "check", "snapshot_ids": evidence["snapshot_ids"]})
    return place, evidence


def _nuke_refused_and_quarantined(
    org: Organization, steps: dict[str, Any], place: dict[str, Any], evidence: dict[str, Any]
) -> None:
    with pytest.raises(EvidenceIncomplete):
        steps["nuke"]({**place, "snapshot_ids": evidence["snapshot_ids"], "manifest": {}, "replacement": {}})
    instance = _instance(org.members[MEMBER], place["instance_id"])
    tags = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
    assert instance["State"]["Name"] == "running"
    assert tags["immutable-guard:state"] == "quarantined"
    assert "nuked" not in org.ledger.get(place["incident_id"]).timeline


def test_a_member_snapshot_deleted_before_the_security_account_copied_it_is_never_nuked(
    org: Organization, steps: dict[str, Any]
) -> None:
    place, evidence = _server_with_evidence(org, steps)
    # When the member's administrator deletes a snapshot before it reached the security account
    member_ec2 = org.members[MEMBER].clients.ec2
    member_ec2.delete_snapshot(SnapshotId=evidence["snapshot_ids"][0])
    # Then the custody step fails (the state machine's Catch alerts the team: test_remediation_custody_wiring)
    with pytest.raises(EvidenceIncomplete, match="before its transfer copy was made"):
        _take_into_custody(steps, place, evidence)
    # And the server is not nuked: it stays quarantined
    _nuke_refused_and_quarantined(org, steps, place, evidence)


def test_a_copy_that_fails_in_the_security_account_leaves_the_server_quarantined(
    org: Organization, steps: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    place, evidence = _server_with_evidence(org, steps)
    # Given a custody key that is disabled: the copies encrypted with it fail (the ``error`` state)
    kms = org.home.session.client("kms", region_name=HOME_REGION)
    key = kms.create_key(Description="disabled custody key")["KeyMetadata"]
    kms.disable_key(KeyId=key["KeyId"])
    disabled = key["Arn"]
    monkeypatch.setenv("CUSTODY_KEY_ARN", disabled)
    # When custody is attempted
    with pytest.raises(SnapshotFailed, match="error state"):
        _take_into_custody(steps, place, evidence)
    # Then no manifest is written without the security account's locked copies
    monkeypatch.setenv("CUSTODY_KEY_ARN", org.custody_key_arn)
    with pytest.raises(EvidenceIncomplete, match="no copy in the security account"):
        steps["evidence"]({**place, "action": "manifest", "snapshot_ids": evidence["snapshot_ids"]})
    # And the member's own snapshots, complete as they are, do not let the server be nuked
    _nuke_refused_and_quarantined(org, steps, place, evidence)


def test_an_event_whose_record_disagrees_with_its_envelope_is_refused(org: Organization) -> None:
    member = org.members[MEMBER]
    instance_id = member.instances[-1]
    before = {i.incident_id for i in org.ledger.list_incidents(1000)}
    # Given the member's record, delivered with another account (or region) in its envelope
    for envelope in ({"account": UNVERIFIED}, {"region": HOME_REGION}):
        result = org.detect(ssh_key_pushed(MEMBER, MEMBER_REGION, instance_id, envelope))
        # Then it is refused, naming both, and parked for a person
        assert (result["decision"], result["reason"]) == ("reject", "account_mismatch"), result
        assert result["instances"] == [] and "envelope" in result["detail"]
    parked = org.home.sqs.receive_message(QueueUrl=org.dead_letter_url, MaxNumberOfMessages=10)["Messages"]
    assert len(parked) >= 2
    # And nothing was opened
    assert {i.incident_id for i in org.ledger.list_incidents(1000)} == before


def test_an_event_from_an_account_outside_the_protected_set_is_refused(org: Organization) -> None:
    result = org.detect(ssh_key_pushed(OUTSIDER, MEMBER_REGION, "i-0123456789abcdef0"))
    assert (result["decision"], result["reason"]) == ("reject", "unprotected_account")
    assert OUTSIDER in result["detail"]


def test_an_unverified_account_is_handled_in_dry_run(org: Organization) -> None:
    member = org.members[UNVERIFIED]
    instance_id = member.instances[0]
    # When an attack is reported in an account registered in enforce but not verified yet
    result = org.detect(ssh_key_pushed(UNVERIFIED, MEMBER_REGION, instance_id))
    # Then the incident is a dry run: alerted, nothing started, the server untouched
    [opened] = result["instances"]
    assert (opened["outcome"], opened["mode"]) == ("opened", "dry-run")
    assert org.ledger.get(opened["incident_id"]).status is Status.DRY_RUN
    executions = org.home.stepfunctions.list_executions(stateMachineArn=org.machine_arn)["executions"]
    assert opened["incident_id"] not in {e["name"] for e in executions}
    assert _instance(member, instance_id)["State"]["Name"] == "running"


def _acting_as(event: dict[str, Any], role_arn: str, session: str) -> dict[str, Any]:
    """The event as made by a session of ``role_arn`` (CloudTrail's AssumedRole identity)."""
    account, name = role_arn.split(":")[4], role_arn.rsplit("/", 1)[-1]
    identity = event["detail"]["userIdentity"]
    identity["arn"] = f"arn:aws:sts::{account}:assumed-role/{name}/{session}"
    identity["accountId"] = account
    identity["sessionContext"]["sessionIssuer"].update(
        {"arn": role_arn, "accountId": account, "userName": name}
    )
    return event


def test_the_guards_member_roles_are_its_own_changes_in_every_protected_account(org: Organization) -> None:
    instance_id = org.members[MEMBER].instances[-1]
    own_role = f"arn:aws:iam::{MEMBER}:role/ImmutableGuard-Member-Quarantine"
    # When the member's own Quarantine role changes one of its servers
    result = org.detect(
        _acting_as(ssh_key_pushed(MEMBER, MEMBER_REGION, instance_id), own_role, "ig-i-1-abc")
    )
    # Then it is the guard's own change
    assert (result["decision"], result["reason"]) == ("ignore", "own_change"), result
    # But a role of that name in an account outside the organisation is not the guard
    stranger = f"arn:aws:iam::{OUTSIDER}:role/ImmutableGuard-Member-Quarantine"
    result = org.detect(_acting_as(ssh_key_pushed(MEMBER, MEMBER_REGION, instance_id), stranger, "x"))
    assert result["decision"] == "remediate" and result["instances"][0]["mode"] == "enforce"


def test_an_allow_listed_role_of_a_member_account_is_exempt_there(org: Organization) -> None:
    instance_id = org.members[UNVERIFIED].instances[-1]
    deployer = f"arn:aws:iam::{UNVERIFIED}:role/platform/Deployer"
    event = _acting_as(ssh_key_pushed(UNVERIFIED, MEMBER_REGION, instance_id), deployer, "pipeline-42")
    # When the allow-list names a role of the member account (not of the security account)
    result = org.detect(event, allowed_principal_arns=(deployer,))
    # Then its sessions are exempt in that account, as the security account's own roles are at home
    assert (result["decision"], result["reason"]) == ("ignore", "allow_listed_principal"), result
    # And without the entry the same change is handled
    assert (
        org.detect(_acting_as(ssh_key_pushed(UNVERIFIED, MEMBER_REGION, instance_id), deployer, "x"))[
            "decision"
        ]
        == "remediate"
    )
