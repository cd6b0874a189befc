"""Organisation mode's buffer in front of Detect, on the embedded local AWS (issue 14): an event put on the
organisation bus goes to DetectQueue, and Lambda's event source mapping (driven by the local runtime right
after delivery, as moto_fixes.py section p and local/event_source_mappings.py describe) hands it to Detect;
a record Detect cannot judge returns to the queue and, after the queue's maxReceiveCount, waits in the
dead-letter queue; the mapping bounds Detect's concurrency with DetectMaxConcurrency."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from immutable_guard.doctor import DoctorClients, Verdict, check_rules, stack_view_from_deployment
from immutable_guard.drill.world import server_in_new_vpc
from immutable_guard.ledger import IncidentLedger
from immutable_guard.local import Deployment, EventRouter, LocalAws, LocalSession
from immutable_guard.local.runtime import HOME_ACCOUNT

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "events" / "cloudtrail-authorize-sg-ingress-ssh-world.json"
SSH_KEY_SAMPLE = REPO / "events" / "cloudtrail-send-ssh-public-key.json"
SAMPLE_INSTANCE = "i-0abc1234def567890"
SAMPLE_ACCOUNT = "111122223333"
SAMPLE_GROUP = "sg-0a1b2c3d4e5f67890"
ORGANIZATION = "o-examplebuf01"
BUS = "immutable-guard-organization"
MAX_CONCURRENCY = "4"


@dataclass
class Buffered:
    deployment: Deployment
    session: boto3.Session
    group_id: str
    subnet_id: str
    image_id: str
    instance_id: str

    def client(self, name: str) -> Any:
        return self.session.client(name)  # type: ignore[call-overload]

    def queue_url(self, logical_id: str) -> str:
        return str(self.deployment.physical_ids[logical_id])

    def messages(self, logical_id: str) -> list[dict[str, Any]]:
        response = self.client("sqs").receive_message(
            QueueUrl=self.queue_url(logical_id), MaxNumberOfMessages=10, VisibilityTimeout=0
        )
        return list(response.get("Messages", []))

    def launch(self) -> str:
        """One more immutable server of the security account."""
        return str(
            self.client("ec2").run_instances(
                ImageId=self.image_id,
                MinCount=1,
                MaxCount=1,
                SubnetId=self.subnet_id,
                TagSpecifications=[
                    {"ResourceType": "instance", "Tags": [{"Key": "immutable", "Value": "true"}]}
                ],
            )["Instances"][0]["InstanceId"]
        )

    def event(self, account: str) -> dict[str, Any]:
        text = SAMPLE.read_text().replace(SAMPLE_ACCOUNT, account).replace(SAMPLE_GROUP, self.group_id)
        event: dict[str, Any] = json.loads(text)
        return event


@pytest.fixture
def buffered(local_aws: LocalAws, local_session: LocalSession) -> Buffered:
    def build() -> Buffered:
        deployment = local_aws.deploy(
            {
                "OrganizationId": ORGANIZATION,
                "Mode": "dry-run",  # judged and recorded, nothing started: the ledger shows the judgement
                "DetectMaxConcurrency": MAX_CONCURRENCY,
                "CreateTrail": "false",
                "CreateConfigRecorder": "false",
                "CreateInventoryAssociation": "false",
            },
            stack_name="guard-org",
            allow_missing_code=True,
        )
        session = local_aws.session()
        ec2 = session.client("ec2")
        server = server_in_new_vpc(ec2, "10.9.0.0/16", ("buffered-web",))
        return Buffered(
            deployment,
            session,
            server.groups["buffered-web"],
            server.subnet_id,
            server.image_id,
            server.instance_id,
        )

    return local_session.get("organization-buffer", build)


def test_detects_rules_target_the_queue_and_the_mapping_bounds_detects_concurrency(
    buffered: Buffered,
) -> None:
    deployment = buffered.deployment
    queue_arn = deployment.arn("DetectQueue")
    # Every rule of Detect on the organisation bus targets the queue, and no rule may invoke Detect itself
    events = buffered.client("events")
    rules = [r for r in deployment.resource_types if r.startswith("DetectFunction") and r.endswith("Opened")]
    assert rules
    for logical_id in rules:
        name = deployment.physical_ids[logical_id]
        targets = events.list_targets_by_rule(Rule=name, EventBusName=BUS)["Targets"]
        assert [t["Arn"] for t in targets] == [queue_arn]
    assert not [
        r for r in deployment.physical_ids if r.endswith("Permission") and r.startswith("DetectFunction")
    ]
    # The mapping: enabled, partial batch responses, at most DetectMaxConcurrency Detects at once
    (mapping,) = buffered.client("lambda").list_event_source_mappings(EventSourceArn=queue_arn)[
        "EventSourceMappings"
    ]
    assert mapping["FunctionArn"].endswith(f":function:{deployment.function_names['DetectFunction']}")
    assert mapping["State"] == "Enabled"
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["ScalingConfig"] == {"MaximumConcurrency": int(MAX_CONCURRENCY)}
    # The queue: six times Detect's timeout, and its failures redriven to Detect's dead-letter queue
    attributes = buffered.client("sqs").get_queue_attributes(
        QueueUrl=buffered.queue_url("DetectQueue"), AttributeNames=["All"]
    )["Attributes"]
    assert int(attributes["VisibilityTimeout"]) >= 6 * 60
    redrive = json.loads(attributes["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"] == deployment.arn("DetectDeadLetterQueue")
    assert int(redrive["maxReceiveCount"]) == 5


def test_an_event_on_the_organisation_bus_reaches_detect_through_the_queue(
    local_aws: LocalAws, buffered: Buffered
) -> None:
    # Given the security account's own immutable server opened to the world (its stack Mode: dry-run)
    router = EventRouter(buffered.deployment, local_aws.session())
    event = buffered.event(HOME_ACCOUNT)
    # When the event is put on the organisation bus
    matched = router.put(event, bus=BUS)
    # Then, by the time put returns, Detect has judged it from the queue: the incident is recorded
    assert matched == ["DetectFunctionNetworkOpened"]
    assert [rule for rule, _ in router.delivered] == matched and router.failures == []
    ledger = IncidentLedger(buffered.client("dynamodb"), buffered.deployment.physical_ids["IncidentLedger"])
    [incident] = [i for i in ledger.list_incidents() if i.instance_id == buffered.instance_id]
    assert incident.account == HOME_ACCOUNT
    # And the queue is empty: the mapping deleted the judged message
    assert buffered.messages("DetectQueue") == []


def test_a_record_detect_cannot_judge_is_retried_then_parked_in_the_dead_letter_queue(
    local_aws: LocalAws, buffered: Buffered
) -> None:
    # Given an SSH key pushed to another immutable server of the security account, while the alert topic
    # is gone (Detect cannot publish the detected alert, so it cannot finish judging the event)
    router = EventRouter(buffered.deployment, local_aws.session())
    instance_id = buffered.launch()
    event = json.loads(
        SSH_KEY_SAMPLE.read_text().replace(SAMPLE_ACCOUNT, HOME_ACCOUNT).replace(SAMPLE_INSTANCE, instance_id)
    )
    sns = buffered.client("sns")
    topic = buffered.deployment.physical_ids["AlertTopic"]
    attributes = sns.get_topic_attributes(TopicArn=topic)["Attributes"]
    sns.delete_topic(TopicArn=topic)
    try:
        # When it is put on the organisation bus
        router.put(event, bus=BUS)
    finally:  # the topic back, under the same ARN
        sns.create_topic(
            Name=topic.rsplit(":", 1)[1], Attributes={"KmsMasterKeyId": attributes["KmsMasterKeyId"]}
        )
    # Then Detect reported it failed on each of the queue's 5 receives, and SQS moved it to the
    # dead-letter queue: the event is there, whole, and no longer in the queue
    assert router.delivered == []
    [(rule, failed, error)] = router.failures
    assert rule == "DetectFunctionSshKeyPushed" and failed["id"] == event["id"]
    assert error["errorMessage"].endswith(" 5 times")
    parked = [json.loads(m["Body"]) for m in buffered.messages("DetectDeadLetterQueue")]
    assert [p for p in parked if p.get("id") == event["id"]] == [failed]
    assert buffered.messages("DetectQueue") == []


def test_doctor_follows_each_rule_through_the_queue_to_detect(
    local_aws: LocalAws, buffered: Buffered
) -> None:
    clients = DoctorClients(local_aws.session(), region_name=local_aws.region)
    stack = stack_view_from_deployment(buffered.deployment)
    # Given the deployment as made: rule -> DetectQueue -> enabled mapping -> Detect
    passed = check_rules(clients, stack)
    assert passed.verdict is Verdict.PASS, passed.summary
    assert "through DetectQueue (at most 4 at once; 0 waiting" in passed.summary
    assert passed.details["queue"]["maximum_concurrency"] == int(MAX_CONCURRENCY)
    assert passed.details["not_targeting_detect"] == [] and passed.details["detect_does_not_allow"] == []
    # When someone disables the mapping, the rules still deliver to the queue but Detect reads nothing
    lambda_ = buffered.client("lambda")
    (mapping,) = lambda_.list_event_source_mappings(EventSourceArn=buffered.deployment.arn("DetectQueue"))[
        "EventSourceMappings"
    ]
    lambda_.update_event_source_mapping(UUID=mapping["UUID"], Enabled=False)
    try:
        failed = check_rules(clients, stack)
    finally:
        lambda_.update_event_source_mapping(UUID=mapping["UUID"], Enabled=True)
    # Then doctor says so, and how to fix it
    assert failed.verdict is Verdict.FAIL
    assert (
        f"DetectQueue is not read by {buffered.deployment.function_names['DetectFunction']}" in failed.summary
    )
    assert "update-event-source-mapping" in failed.fix


def test_a_new_detect_max_concurrency_updates_the_mapping_in_place(
    local_aws: LocalAws, buffered: Buffered
) -> None:
    # Given the deployed organisation-mode stack, when it is redeployed with another DetectMaxConcurrency
    parameters = dict(buffered.deployment.parameters)
    updated = local_aws.deploy(
        {**parameters, "DetectMaxConcurrency": "20"},
        stack_name="guard-org",
        allow_missing_code=True,
        previous=buffered.deployment,
    )
    try:
        # Then the same mapping now allows 20 Detects at once
        assert "DetectQueueMapping" in updated.updated
        (mapping,) = buffered.client("lambda").list_event_source_mappings(
            EventSourceArn=updated.arn("DetectQueue")
        )["EventSourceMappings"]
        assert mapping["UUID"] == buffered.deployment.physical_ids["DetectQueueMapping"]
        assert mapping["ScalingConfig"] == {"MaximumConcurrency": 20}
    finally:
        local_aws.deploy(parameters, stack_name="guard-org", allow_missing_code=True, previous=updated)
