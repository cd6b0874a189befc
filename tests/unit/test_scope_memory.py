"""The ledger remembers which servers Detect saw in scope, so a server stays in scope after an attacker
strips its tag; an allow-listed pipeline taking a server out of scope makes it forget."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aws_lambda_powertools import Metrics
from immutable_guard.clients import Clients
from immutable_guard.ledger import IncidentLedger
from immutable_guard.model import Mode
from immutable_guard.pipeline import process_event
from immutable_guard.settings import DetectSettings

EVENTS = Path(__file__).resolve().parents[2] / "events"
ACCOUNT = "111122223333"
SAMPLE_INSTANCE = "i-0abc1234def567890"
PIPELINE = "arn:aws:iam::111122223333:role/deploy-pipeline"
PASS_MACHINE = json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}})


def test_the_ledger_remembers_a_server_under_its_scope_tag_until_told_to_forget(
    ledger: IncidentLedger,
) -> None:
    # Given / When
    ledger.remember_in_scope("i-1", "immutable=true", "event-1")
    # Then
    assert ledger.was_in_scope("i-1", "immutable=true")
    assert not ledger.was_in_scope("i-1", "golden=yes")  # the operator changed the scope tag
    assert not ledger.was_in_scope("i-2", "immutable=true")
    ledger.forget_scope("i-1")
    assert not ledger.was_in_scope("i-1", "immutable=true")
    ledger.forget_scope("i-1")  # forgetting twice is fine


def test_the_scope_record_says_once_that_the_isolation_groups_were_asked_for(ledger: IncidentLedger) -> None:
    # A record written in dry-run or notify-only asks for nothing
    assert ledger.remember_in_scope("i-1", "immutable=true", "event-1") is False
    # The first record in enforce is the one that asks (issue 15: Contain makes the groups ahead)
    assert ledger.remember_in_scope("i-1", "immutable=true", "event-2", groups_wanted=True) is True
    assert ledger.remember_in_scope("i-1", "immutable=true", "event-3", groups_wanted=True) is False
    # Back to dry-run and then enforce again: asked once more (harmless: Contain's preparation is idempotent)
    assert ledger.remember_in_scope("i-1", "immutable=true", "event-4") is False
    assert ledger.remember_in_scope("i-1", "immutable=true", "event-5", groups_wanted=True) is True
    assert ledger.was_in_scope("i-1", "immutable=true")
    # A forgotten server seen again asks again
    ledger.forget_scope("i-1")
    assert ledger.remember_in_scope("i-1", "immutable=true", "event-6", groups_wanted=True) is True


class Detect:
    def __init__(self, aws: Clients, ledger: IncidentLedger) -> None:
        ec2 = aws.ec2
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
        image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
        self.instance = ec2.run_instances(
            ImageId=image,
            MinCount=1,
            MaxCount=1,
            SubnetId=subnet,
            TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "immutable", "Value": "true"}]}],
        )["Instances"][0]["InstanceId"]
        role = aws._session.client("iam").create_role(RoleName="sfn", AssumeRolePolicyDocument="{}")
        machine = aws.stepfunctions.create_state_machine(
            name="remediation", definition=PASS_MACHINE, roleArn=role["Role"]["Arn"]
        )
        self.aws = aws
        self.ledger = ledger
        self.settings = DetectSettings(
            ledger_table="immutable-guard-ledger",
            alert_topic_arn=aws.sns.create_topic(Name="alerts")["TopicArn"],
            mode=Mode.ENFORCE,
            scope_tag_key="immutable",
            scope_tag_value="true",
            allowed_principal_arns=(PIPELINE,),
            own_role_arns=(),
            max_incidents_per_hour=5,
            post_evidence_action="terminate",
            remediation_state_machine_arn=machine["stateMachineArn"],
            dead_letter_queue_url=aws.sqs.create_queue(QueueName="detect-dlq")["QueueUrl"],
        )

    def event(self, name: str, by: str | None = None) -> dict[str, Any]:
        event: dict[str, Any] = json.loads(
            (EVENTS / name).read_text().replace(SAMPLE_INSTANCE, self.instance)
        )
        if by is not None:
            identity = event["detail"]["userIdentity"]
            identity["arn"] = f"arn:aws:sts::{ACCOUNT}:assumed-role/{by.rsplit('/', 1)[-1]}/build-7"
            identity["sessionContext"]["sessionIssuer"]["arn"] = by
        return event

    def process(self, event: dict[str, Any]) -> dict[str, Any]:
        metrics = Metrics(namespace="ImmutableGuardTest")
        result = process_event(event, self.settings, self.aws, metrics, expected_account=ACCOUNT)
        return result.model_dump(mode="json")

    def strip_scope_tag(self) -> None:
        self.aws.ec2.delete_tags(Resources=[self.instance], Tags=[{"Key": "immutable"}])


@pytest.fixture
def detect(aws: Clients, ledger: IncidentLedger) -> Detect:
    return Detect(aws, ledger)


def test_a_server_seen_in_scope_and_then_stripped_of_its_tag_is_remediated(detect: Detect) -> None:
    # Given Detect saw the server with its scope tag (here: a harmless Name tag on it)
    seen = detect.process(detect.event("benign-create-tags-unrelated.json"))
    assert (seen["decision"], seen["reason"]) == ("ignore", "tags_only")
    assert detect.ledger.was_in_scope(detect.instance, "immutable=true")
    # When the attacker strips the tag, and the DeleteTags record arrives once it is gone
    detect.strip_scope_tag()
    result = detect.process(detect.event("cloudtrail-delete-tags-scope.json"))
    # Then
    assert (result["decision"], result["reason"], result["kind"]) == (
        "remediate",
        "scope_tampered",
        "scope_tampered",
    )
    [opened] = result["instances"]
    assert (opened["instance_id"], opened["outcome"]) == (detect.instance, "opened")
    assert detect.ledger.get(opened["incident_id"]).kind == "scope_tampered"
    # ...and the ledger still remembers the server in scope
    assert detect.ledger.was_in_scope(detect.instance, "immutable=true")


def test_a_server_the_pipeline_took_out_of_scope_is_forgotten(detect: Detect) -> None:
    # Given the server seen in scope, then its tag removed by the allow-listed pipeline
    detect.process(detect.event("benign-create-tags-unrelated.json"))
    detect.strip_scope_tag()
    released = detect.process(detect.event("cloudtrail-delete-tags-scope.json", by=PIPELINE))
    assert (released["decision"], released["reason"]) == ("ignore", "allow_listed_principal")
    # Then it is no longer in scope, and a later change to it is none of the guard's business
    assert not detect.ledger.was_in_scope(detect.instance, "immutable=true")
    later = detect.process(detect.event("cloudtrail-send-ssh-public-key.json"))
    assert (later["decision"], later["reason"]) == ("ignore", "out_of_scope")


def test_a_server_never_seen_in_scope_losing_the_tag_is_ignored(detect: Detect) -> None:
    # Without Config's discovery or an earlier sighting, CloudTrail alone cannot say it was in scope
    detect.strip_scope_tag()
    result = detect.process(detect.event("cloudtrail-delete-tags-scope.json"))
    assert (result["decision"], result["reason"]) == ("ignore", "tags_only")
