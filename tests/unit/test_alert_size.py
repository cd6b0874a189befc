"""An alert always fits SNS's 256 KB message: SNS counts the whole JSON message structure (every
protocol's body) and the message attributes, in bytes, and refuses anything larger with InvalidParameter
(https://docs.aws.amazon.com/sns/latest/dg/large-message-payloads.html). The local SNS is made to count
the same way (local/moto_fixes.py), so a message that fits here fits in AWS."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from botocore.exceptions import ClientError
from immutable_guard.alerts import (
    SNS_MAX_MESSAGE_BYTES,
    Alert,
    fit_for_sns,
    publish_alert,
    sns_message_bytes,
    sns_request,
)
from immutable_guard.canary.alerts import ROLLED_BACK, CanaryStageEvent, build_alert
from immutable_guard.clients import Clients
from immutable_guard.local.moto_fixes import sns_message_size_in_bytes

# Multi-byte on purpose: 2 bytes in UTF-8, 6 once JSON escapes it, 7 once the message structure escapes
# that again; an attacker chooses such text (a user agent, a tag) as easily as ASCII.
WIDE = "é"


@pytest.fixture
def topic(aws: Clients, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """An alert topic on the local SNS that counts bytes as AWS does, with a queue subscribed."""
    sns_message_size_in_bytes(monkeypatch.setattr)
    topic_arn = aws.sns.create_topic(Name="alerts")["TopicArn"]
    url = aws.sqs.create_queue(QueueName="subscriber")["QueueUrl"]
    arn = aws.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    aws.sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=arn)
    return topic_arn, url


def oversized_alert() -> tuple[Alert, dict[str, Any]]:
    evidence = {
        "console_output": WIDE * 400_000,
        "volumes": [{"id": f"vol-{n:017x}", "note": WIDE * 50} for n in range(2_000)],
    }
    alert = Alert(
        stage="detected",
        incident_id="ig-i-0abc-1",
        kind="port_opened",
        severity="critical",
        decision="remediate",
        mode="enforce",
        account="111122223333",
        region="us-east-1",
        instance_ids=[f"i-{n:017x}" for n in range(3_000)],
        actor={"principal_arn": "arn:aws:sts::111122223333:assumed-role/a/s", "user_agent": WIDE * 150_000},
        event={
            "source": "ec2.amazonaws.com",
            "name": "AuthorizeSecurityGroupIngress",
            "id": "e1",
            "time": "t",
        },
        evidence=evidence,
        summary=WIDE * 50_000,
        actions=[f"isolate {WIDE * 30} {n}" for n in range(5_000)],
        details={"resolved": [WIDE * 100 for _ in range(2_000)]},
    )
    return alert, evidence


def received(aws: Clients, queue: str) -> dict[str, Any]:
    (message,) = aws.sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
    return dict(json.loads(json.loads(message["Body"])["Message"]))


def test_an_alert_with_oversized_evidence_is_delivered_cut_with_a_marker(
    aws: Clients, topic: tuple[str, str]
) -> None:
    topic_arn, queue = topic
    # Given an alert whose evidence, actor, summary, actions and instance list are each far over 256 KB
    alert, evidence = oversized_alert()
    assert sns_message_bytes(sns_request(alert)) > SNS_MAX_MESSAGE_BYTES
    # When it is published
    publish_alert(aws.sns, topic_arn, alert)
    # Then SNS accepted it, and what was sent is within its limit, counted as SNS counts
    assert sns_message_bytes(sns_request(fit_for_sns(alert))) <= SNS_MAX_MESSAGE_BYTES
    body = received(aws, queue)
    # And the evidence is a marker that says it was cut and matches the full record by its hash
    marker = body["evidence"]
    assert marker["truncated"] is True
    full = json.dumps(evidence, default=str).encode()
    assert (marker["bytes"], marker["sha256"]) == (len(full), hashlib.sha256(full).hexdigest())
    assert marker["prefix"] and full.decode().startswith(marker["prefix"])
    # And the alert names every field it cut
    cut = {note.split(":")[0] for note in body["truncated"]}
    assert {"evidence", "details", "actor", "summary", "actions", "instance_ids"} <= cut
    # And what identifies the alert is whole
    assert (body["incident_id"], body["kind"], body["severity"], body["stage"]) == (
        "ig-i-0abc-1",
        "port_opened",
        "critical",
        "detected",
    )
    assert body["instance_ids"][0] == "i-00000000000000000"


def test_the_text_for_people_says_it_was_truncated() -> None:
    alert, _ = oversized_alert()
    message = json.loads(sns_request(fit_for_sns(alert))["Message"])
    assert "TRUNCATED to fit SNS's 256 KB" in message["email"]
    assert message["email"] == message["default"]
    assert len(message["sms"]) <= 100


def test_a_canary_alert_with_oversized_details_fits_too(aws: Clients, topic: tuple[str, str]) -> None:
    topic_arn, queue = topic
    plan = {
        "function": "orders",
        "alias": "live",
        "stable_version": "1",
        "target_version": "2",
        "steps": [10],
    }
    detail = {"reason": WIDE * 200_000, "failure": {"verdict": WIDE * 200_000}}
    alert = build_alert(
        CanaryStageEvent(stage=ROLLED_BACK, plan=plan, detail=detail), "111122223333", "eu-west-1"
    )
    publish_alert(aws.sns, topic_arn, alert)
    body = received(aws, queue)
    assert body["rollout"]["function"] == "orders" and body["details"]["truncated"] is True
    assert any(note.startswith("reason:") for note in body["truncated"])


def test_an_alert_that_fits_is_sent_whole() -> None:
    alert, _ = oversized_alert()
    small = alert.model_copy(
        update={"evidence": {"snapshot_ids": ["snap-1"]}, "instance_ids": ["i-1"], "actions": ["isolate"]}
    )
    small = small.model_copy(update={"actor": {}, "summary": "s", "details": {}})
    assert fit_for_sns(small) is small
    assert small.truncated == [] and "TRUNCATED" not in small.text()


@pytest.mark.parametrize(
    ("body", "attributes", "accepted"),
    [
        ("a" * SNS_MAX_MESSAGE_BYTES, {}, True),
        # 100,000 characters, 300,000 bytes: moto alone counted characters and let it through
        ("€" * 100_000, {}, False),
        # the attribute's name, type and value count as well: 4 + 6 + 1 bytes, then one more
        ("a" * (SNS_MAX_MESSAGE_BYTES - 11), {"kind": {"DataType": "String", "StringValue": "x"}}, True),
        ("a" * (SNS_MAX_MESSAGE_BYTES - 11), {"kind": {"DataType": "String", "StringValue": "xx"}}, False),
    ],
)
def test_the_local_sns_counts_bytes_and_attributes_as_aws_does(
    aws: Clients, topic: tuple[str, str], body: str, attributes: dict[str, Any], accepted: bool
) -> None:
    topic_arn, _ = topic
    if accepted:
        aws.sns.publish(TopicArn=topic_arn, Message=body, MessageAttributes=attributes)  # type: ignore[arg-type]
        return
    with pytest.raises(ClientError) as refused:
        aws.sns.publish(TopicArn=topic_arn, Message=body, MessageAttributes=attributes)  # type: ignore[arg-type]
    assert refused.value.response["Error"]["Code"] == "InvalidParameter"
    assert "Message too long" in refused.value.response["Error"]["Message"]
