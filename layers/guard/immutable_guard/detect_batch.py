"""Detect's SQS entry point (organisation mode): Lambda's event source mapping hands Detect a batch of the
buffer queue's messages, each body one EventBridge event as the rule delivered it. Each event is judged as
a directly delivered one is; the answer is Lambda's partial batch response.

Shapes from AWS's documentation:
- the batch: ``{"Records": [{"messageId", "receiptHandle", "body", "attributes", "messageAttributes",
  "md5OfBody", "eventSource": "aws:sqs", "eventSourceARN", "awsRegion"}, ...]}``
  ("Using Lambda with Amazon SQS", https://docs.aws.amazon.com/lambda/latest/dg/with-sqs.html);
- the response: ``{"batchItemFailures": [{"itemIdentifier": "<messageId>"}, ...]}``; an empty list means
  every record succeeded; only the listed messages return to the queue, the others are deleted; an
  exception fails the whole batch ("Handling errors for an SQS event source in Lambda",
  https://docs.aws.amazon.com/lambda/latest/dg/services-sqs-errorhandling.html).

A record whose judgement fails (an AWS call failed, a timeout of a dependency) is reported: the queue
makes it visible again after its visibility timeout, and after ``maxReceiveCount`` receives moves it to
the dead-letter queue (template.yaml, DetectQueue). A record whose body is not JSON can never succeed:
it is logged, counted (EventsRejected, reason ``malformed_message``) and parked in the dead-letter queue
at once with the reason, like any event Detect cannot read; reported as failed only when even parking it
fails, so the queue's redrive parks it later. Nothing is lost and one bad record never fails the batch.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from immutable_guard.clients import Clients
from immutable_guard.dead_letter import send_to_dead_letter
from immutable_guard.pipeline import count_by_reason
from immutable_guard.settings import DetectSettings
from immutable_guard.triage import TriageResult

logger = Logger(child=True)

MALFORMED_MESSAGE = "malformed_message"


def is_sqs_batch(event: object) -> bool:
    """Whether Lambda's SQS event source mapping sent ``event`` (every record comes from ``aws:sqs``)."""
    if not isinstance(event, dict):
        return False
    records = event.get("Records")
    return (
        isinstance(records, list)
        and bool(records)
        and all(isinstance(record, dict) and record.get("eventSource") == "aws:sqs" for record in records)
    )


def process_batch(
    batch: dict[str, Any],
    judge: Callable[[object], TriageResult],
    settings: DetectSettings,
    clients: Clients,
    metrics: Metrics,
) -> dict[str, list[dict[str, str]]]:
    """Judge every record of an SQS batch with ``judge``; return the partial batch response.

    Parameters
    ----------
    batch:
        The event Lambda's SQS event source mapping invoked Detect with.
    judge:
        Judges one EventBridge event (``process_event`` with the handler's settings and clients).
    """
    failures: list[dict[str, str]] = []
    for record in batch["Records"]:
        message_id = str(record.get("messageId") or "")
        receives = (record.get("attributes") or {}).get("ApproximateReceiveCount")
        try:
            event = json.loads(record["body"])
        except (KeyError, TypeError, ValueError) as exc:
            if not _park_malformed(record, exc, settings, clients, metrics):
                failures.append({"itemIdentifier": message_id})
            continue
        event_id = event.get("id") if isinstance(event, dict) else None
        try:
            result = judge(event)
        except Exception as exc:  # every failure to judge: the queue retries it, then parks it
            logger.exception(
                "record not judged; it returns to the queue",
                extra={
                    "message_id": message_id,
                    "event_id": event_id,
                    "receive_count": receives,
                    "error": str(exc),
                },
            )
            metrics.add_metric(name="EventsRetried", unit=MetricUnit.Count, value=1)
            failures.append({"itemIdentifier": message_id})
            continue
        logger.info(
            "record judged",
            extra={
                "message_id": message_id,
                "event_id": event_id,
                "decision": result.decision,
                "reason": result.reason,
            },
        )
    return {"batchItemFailures": failures}


def _park_malformed(
    record: dict[str, Any], error: Exception, settings: DetectSettings, clients: Clients, metrics: Metrics
) -> bool:
    """Log, count and park a record whose body is not JSON; False when it could not be parked."""
    message_id = str(record.get("messageId") or "")
    detail = f"SQS message {message_id} from {record.get('eventSourceARN')}: body is not JSON: {error}"
    logger.error("record rejected", extra={"reason": MALFORMED_MESSAGE, "message_id": message_id})
    metrics.add_metric(name="EventsRejected", unit=MetricUnit.Count, value=1)
    count_by_reason(metrics, "EventsRejected", MALFORMED_MESSAGE)
    try:
        send_to_dead_letter(clients.sqs, settings.dead_letter_queue_url, record, MALFORMED_MESSAGE, detail)
    except Exception:
        logger.exception(
            "malformed record not parked; it returns to the queue", extra={"message_id": message_id}
        )
        return False
    return True
