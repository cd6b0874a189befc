"""Events we cannot process are never dropped: they go to the dead-letter queue with the reason, where
the depth alarm makes a person look at them."""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from immutable_guard.errors import AwsCallFailed
from immutable_guard.ledger import now_iso

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

# SQS takes 256 KB; EventBridge events are at most 256 KB too, so leave room for the envelope.
MAX_EVENT_CHARS = 200_000


def send_to_dead_letter(sqs: SQSClient, queue_url: str, raw_event: Any, reason: str, error: str) -> str:
    """Park an unprocessable event with why; returns the SQS message id."""
    try:
        text = json.dumps(raw_event, default=repr)
    except (TypeError, ValueError):  # circular or otherwise unserialisable input
        text = repr(raw_event)
    body: dict[str, Any] = {
        "rejected_by": "immutable-guard-detect",
        "reason": reason,
        "error": error[:2000],
        "received_at": now_iso(),
        "event_sha256": hashlib.sha256(text.encode("utf-8", "replace")).hexdigest(),
    }
    if len(text) > MAX_EVENT_CHARS:
        body["event_truncated"] = True
        body["event"] = text[:MAX_EVENT_CHARS]
    else:
        body["event"] = text
    try:
        response = sqs.send_message(
            QueueUrl=queue_url,
            MessageBody=json.dumps(body),
            MessageAttributes={"reason": {"DataType": "String", "StringValue": reason}},
        )
    except ClientError as exc:
        raise AwsCallFailed(f"dead-letter queue {queue_url}: cannot park rejected event: {exc}") from exc
    return response["MessageId"]
