"""The alert schema as subscribers see it: JSON for programs, text for people, attributes for filters."""

from __future__ import annotations

import json

from immutable_guard.alerts import SCHEMA_VERSION, Alert, publish_alert
from immutable_guard.clients import Clients


def sample_alert(**overrides: object) -> Alert:
    values: dict[str, object] = {
        "stage": "detected",
        "incident_id": "ig-i-0abc-123",
        "kind": "port_opened",
        "severity": "critical",
        "decision": "remediate",
        "mode": "enforce",
        "account": "111122223333",
        "region": "us-east-1",
        "instance_ids": ["i-0abc"],
        "actor": {
            "principal_arn": "arn:aws:sts::111122223333:assumed-role/attacker/s",
            "source_ip": "203.0.113.7",
        },
        "event": {
            "source": "ec2.amazonaws.com",
            "name": "AuthorizeSecurityGroupIngress",
            "id": "e1",
            "time": "t",
        },
        "summary": "Port 22 opened to 0.0.0.0/0 on sg-1.",
        "actions": ["isolate"],
    }
    values.update(overrides)
    return Alert.model_validate(values)


def subscribe_queue(aws: Clients, topic_arn: str, filter_policy: dict[str, list[str]] | None = None) -> str:
    url = aws.sqs.create_queue(QueueName="subscriber")["QueueUrl"]
    arn = aws.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    attributes = {"FilterPolicy": json.dumps(filter_policy)} if filter_policy else {}
    aws.sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=arn, Attributes=attributes)
    return url


def test_a_queue_subscriber_receives_the_versioned_json_body(aws: Clients) -> None:
    # Given
    topic = aws.sns.create_topic(Name="alerts")["TopicArn"]
    queue = subscribe_queue(aws, topic)
    # When
    publish_alert(aws.sns, topic, sample_alert())
    # Then
    envelope = json.loads(aws.sqs.receive_message(QueueUrl=queue)["Messages"][0]["Body"])
    body = json.loads(envelope["Message"])
    assert body["schema_version"] == SCHEMA_VERSION
    assert (body["kind"], body["severity"], body["decision"], body["stage"]) == (
        "port_opened",
        "critical",
        "remediate",
        "detected",
    )
    assert body["instance_ids"] == ["i-0abc"]
    assert envelope["MessageAttributes"]["severity"]["Value"] == "critical"
    assert envelope["MessageAttributes"]["instance_id"]["Value"] == "i-0abc"


def test_filter_policies_on_attributes_select_alerts(aws: Clients) -> None:
    # Given a subscriber that only wants critical alerts
    topic = aws.sns.create_topic(Name="alerts")["TopicArn"]
    queue = subscribe_queue(aws, topic, {"severity": ["critical"]})
    # When a medium and a critical alert are published
    publish_alert(aws.sns, topic, sample_alert(severity="medium", kind="key_pair_added"))
    publish_alert(aws.sns, topic, sample_alert())
    # Then only the critical one arrives
    messages = aws.sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
    assert [json.loads(json.loads(m["Body"])["Message"])["severity"] for m in messages] == ["critical"]


def test_the_text_says_what_who_where_and_what_we_do() -> None:
    text = sample_alert().text()
    assert "Mutation detected" in text
    assert "arn:aws:sts::111122223333:assumed-role/attacker/s" in text
    assert "203.0.113.7" in text
    assert "i-0abc" in text
    assert "- isolate" in text
    assert "console.aws.amazon.com" not in text  # no links were given to this alert


def test_account_level_alerts_have_a_non_empty_instance_attribute() -> None:
    # SNS rejects empty attribute values
    attributes = sample_alert(instance_ids=[], kind="key_pair_added", decision="alert").message_attributes()
    assert attributes["instance_id"]["StringValue"] == "none"
    assert all(value["StringValue"] for value in attributes.values())


def test_subject_fits_sns_limit() -> None:
    assert len(sample_alert(instance_ids=[f"i-{n:017x}" for n in range(20)]).subject()) <= 100
