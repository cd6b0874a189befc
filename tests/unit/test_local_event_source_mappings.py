"""The local runtime's SQS event source mappings: moto no longer consumes a mapped queue's messages inside
SendMessage (moto_fixes.py section p), and a partial batch response is read by AWS's rules ("Handling errors
for an SQS event source in Lambda", https://docs.aws.amazon.com/lambda/latest/dg/services-sqs-errorhandling.html):
an empty or absent list means success, the named records fail, an identifier that is empty or names no
record of the batch fails the whole batch."""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import boto3
import pytest
from immutable_guard.local.event_source_mappings import _reported_failures
from immutable_guard.local.moto_fixes import sqs_event_source_mappings_poll_as_in_aws
from moto import mock_aws

BATCH = {"m-1", "m-2", "m-3"}


@pytest.mark.parametrize(
    ("payload", "failed"),
    [
        (None, set()),
        ({}, set()),
        ({"batchItemFailures": None}, set()),
        ({"batchItemFailures": []}, set()),
        ({"batchItemFailures": [{"itemIdentifier": "m-2"}]}, {"m-2"}),
        ({"batchItemFailures": [{"itemIdentifier": "m-1"}, {"itemIdentifier": "m-3"}]}, {"m-1", "m-3"}),
        # Malformed: the whole batch fails
        ({"batchItemFailures": [{"itemIdentifier": ""}]}, BATCH),
        ({"batchItemFailures": [{"itemIdentifier": None}]}, BATCH),
        ({"batchItemFailures": [{"itemIdentifier": "not-in-the-batch"}]}, BATCH),
        ({"batchItemFailures": [{"id": "m-1"}]}, BATCH),
    ],
)
def test_a_partial_batch_response_is_read_by_awss_rules(payload: Any, failed: set[str]) -> None:
    assert _reported_failures(payload, BATCH) == failed


def _zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("app.py", "def handler(event, context):\n    return {}\n")
    return buffer.getvalue()


def test_a_message_sent_to_a_mapped_queue_waits_for_the_poller(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        sqs_event_source_mappings_poll_as_in_aws(monkeypatch.setattr)
        session = boto3.Session(region_name="us-east-1")
        sqs, lambda_ = session.client("sqs"), session.client("lambda")
        role = session.client("iam").create_role(RoleName="fn", AssumeRolePolicyDocument=json.dumps({}))
        function = lambda_.create_function(
            FunctionName="reader",
            Runtime="python3.12",
            Role=role["Role"]["Arn"],
            Handler="app.handler",
            Code={"ZipFile": _zip()},
        )
        url = sqs.create_queue(QueueName="buffer")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        lambda_.create_event_source_mapping(
            EventSourceArn=arn,
            FunctionName=function["FunctionArn"],
            FunctionResponseTypes=["ReportBatchItemFailures"],
        )
        # When a message is sent (moto would invoke the function here and delete the message)
        sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"id": "e-1"}))
        # Then it is still in the queue, for the runtime's poller to hand over as Lambda does
        (message,) = sqs.receive_message(QueueUrl=url, AttributeNames=["All"])["Messages"]
        assert json.loads(message["Body"]) == {"id": "e-1"}
        assert message["Attributes"]["ApproximateReceiveCount"] == "1"
