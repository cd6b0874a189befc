"""Lambda's SQS event source mappings, driven synchronously by the local runtime (moto's own trigger is
switched off: moto_fixes.py, section p).

What Lambda does for a mapping on a standard queue, and what this poller does in one call:
- receive up to BatchSize messages (at most 10 per ReceiveMessage) and invoke the function once with them
  as ``{"Records": [...]}`` ("Using Lambda with Amazon SQS",
  https://docs.aws.amazon.com/lambda/latest/dg/with-sqs.html);
- a function error returns the whole batch to the queue; with ``ReportBatchItemFailures`` only the records
  named in ``batchItemFailures`` return, an empty or absent list means all succeeded, and an identifier
  that is empty or names no record of the batch fails the whole batch; the other records are deleted
  ("Handling errors for an SQS event source in Lambda",
  https://docs.aws.amazon.com/lambda/latest/dg/services-sqs-errorhandling.html);
- a returned record is received again, and after ``maxReceiveCount`` receives SQS moves it to the queue's
  dead-letter queue (moto does that on the next receive, as SQS does).

The local world stays synchronous: where Lambda waits for the visibility timeout before a record comes
back, the poller makes it visible again at once and polls until the queue is empty, so that when
``EventRouter.put`` returns every event has been judged, retried or parked.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

import boto3

logger = logging.getLogger(__name__)

# ReceiveMessage returns at most 10 messages.
_RECEIVE_LIMIT = 10
# A queue without a redrive policy would hand a failing record back forever; the poller gives up after
# this many batches in one drain and leaves what remains in the queue.
MAX_BATCHES_PER_DRAIN = 200


@dataclass
class Drained:
    """What one drain of a queue did: message ids judged (deleted), returned for another try, and the
    batches the function was invoked with (each a list of message ids)."""

    succeeded: list[str] = field(default_factory=list)
    returned: list[str] = field(default_factory=list)
    batches: list[list[str]] = field(default_factory=list)


class SqsEventSourceMappings:
    """Polls queues for the enabled SQS event source mappings of the local Lambda.

    Parameters
    ----------
    session:
        boto3 session of the local AWS (the account and region the queues and functions are in).
    region:
        The region of the clients.
    """

    def __init__(self, session: boto3.Session, region: str) -> None:
        self._lambda: Any = session.client("lambda", region_name=region)
        self._sqs: Any = session.client("sqs", region_name=region)

    def mappings(self, queue_arn: str) -> list[dict[str, Any]]:
        """The enabled mappings reading ``queue_arn``."""
        found = self._lambda.list_event_source_mappings(EventSourceArn=queue_arn)["EventSourceMappings"]
        return [m for m in found if m.get("State") == "Enabled"]

    def drain(self, queue_arn: str) -> Drained:
        """Hand every message of the queue to its mapping's function, as Lambda would, until none is left."""
        drained = Drained()
        mappings = self.mappings(queue_arn)
        if not mappings:
            logger.warning("no enabled event source mapping reads %s: its messages wait", queue_arn)
            return drained
        # One mapping per queue is what the template declares; with several, Lambda spreads the batches.
        mapping = mappings[0]
        url = self._queue_url(queue_arn)
        for _ in range(MAX_BATCHES_PER_DRAIN):
            messages = self._sqs.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=min(int(mapping.get("BatchSize") or _RECEIVE_LIMIT), _RECEIVE_LIMIT),
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
            ).get("Messages", [])
            if not messages:
                return drained
            ids = [m["MessageId"] for m in messages]
            drained.batches.append(ids)
            failed = self._invoke(mapping, queue_arn, messages)
            for message in messages:
                if message["MessageId"] in failed:
                    drained.returned.append(message["MessageId"])
                    # Visible again now: the local world does not wait for the visibility timeout.
                    self._sqs.change_message_visibility(
                        QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
                    )
                else:
                    drained.succeeded.append(message["MessageId"])
                    self._sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        logger.warning("%s still holds messages after %d batches", queue_arn, MAX_BATCHES_PER_DRAIN)
        return drained

    def _queue_url(self, queue_arn: str) -> str:
        _, _, _, _, account, name = queue_arn.split(":", 5)
        return str(self._sqs.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"])

    def _invoke(self, mapping: dict[str, Any], queue_arn: str, messages: list[dict[str, Any]]) -> set[str]:
        """Invoke the mapping's function with the batch; return the ids of the records that failed."""
        ids = {m["MessageId"] for m in messages}
        region = queue_arn.split(":")[3]
        event = {"Records": [_record(m, queue_arn, region) for m in messages]}
        response = self._lambda.invoke(
            FunctionName=mapping["FunctionArn"],
            InvocationType="RequestResponse",
            Payload=json.dumps(event).encode(),
        )
        text = response["Payload"].read().decode() or "null"
        if "FunctionError" in response:
            logger.warning("%s failed on a batch of %d: %s", mapping["FunctionArn"], len(ids), text[:500])
            return ids
        if "ReportBatchItemFailures" not in (mapping.get("FunctionResponseTypes") or []):
            return set()
        return _reported_failures(json.loads(text), ids)


def _reported_failures(payload: Any, ids: set[str]) -> set[str]:
    """The records a partial batch response names, by AWS's rules (module docstring)."""
    if not isinstance(payload, dict) or not payload.get("batchItemFailures"):
        return set()
    failures = payload["batchItemFailures"]
    named = {str(f.get("itemIdentifier") or "") if isinstance(f, dict) else "" for f in failures}
    if not isinstance(failures, list) or "" in named or not named <= ids:
        return ids  # a malformed response fails the whole batch
    return named


def _record(message: dict[str, Any], queue_arn: str, region: str) -> dict[str, Any]:
    """A received message as Lambda's SQS event record (with-sqs.html, "Example standard queue message
    event")."""
    attributes = {
        name: value
        for name, value in (message.get("Attributes") or {}).items()
        if name
        in (
            "ApproximateReceiveCount",
            "SentTimestamp",
            "SenderId",
            "ApproximateFirstReceiveTimestamp",
            "AWSTraceHeader",
        )
    }
    message_attributes = {
        name: {
            "stringValue": value.get("StringValue"),
            "binaryValue": value.get("BinaryValue"),
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": value.get("DataType"),
        }
        for name, value in (message.get("MessageAttributes") or {}).items()
    }
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": attributes,
        "messageAttributes": message_attributes,
        "md5OfBody": message.get("MD5OfBody", ""),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    }
