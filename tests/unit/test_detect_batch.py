"""Detect reading its buffer queue (organisation mode): an SQS batch whose bodies are EventBridge events.
Each record is judged as a directly delivered event is; a record whose judgement fails is reported in
batchItemFailures (the queue retries it, then parks it); a body that is not JSON is parked at once with its
reason and never fails the batch.

The batch shape is AWS's ("Using Lambda with Amazon SQS", https://docs.aws.amazon.com/lambda/latest/dg/with-sqs.html),
as in the sample events/sqs/detect-queue-batch.json; the response is the partial batch response ("Handling
errors for an SQS event source in Lambda",
https://docs.aws.amazon.com/lambda/latest/dg/services-sqs-errorhandling.html)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from aws_lambda_powertools import Metrics
from immutable_guard.detect_batch import MALFORMED_MESSAGE, is_sqs_batch, process_batch
from immutable_guard.errors import AwsCallFailed
from immutable_guard.ledger import Status
from immutable_guard.pipeline import process_event
from immutable_guard.triage import TriageResult
from test_pipeline import ACCOUNT, SAMPLE_GROUP, SAMPLE_INSTANCE, World, sns_down

# The fixture: a world of immutable servers on moto (re-exported, so pytest finds it here).
from test_pipeline import world as world

EVENTS = Path(__file__).resolve().parents[2] / "events"
SAMPLE_BATCH = EVENTS / "sqs" / "detect-queue-batch.json"


def _record(body: str, message_id: str | None = None) -> dict[str, Any]:
    """A record as Lambda's SQS event source mapping delivers it (the sample's first record, re-bodied)."""
    template = json.loads(SAMPLE_BATCH.read_text())["Records"][0]
    return {**template, "messageId": message_id or str(uuid.uuid4()), "body": body}


def _batch(*records: dict[str, Any]) -> dict[str, Any]:
    return {"Records": list(records)}


def _run(world: World, batch: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    settings = world.settings.model_copy(update=overrides)
    metrics = Metrics(namespace="ImmutableGuardTest")

    def judge(event: object) -> TriageResult:
        return process_event(event, settings, world.aws, metrics, expected_account=ACCOUNT)

    return process_batch(batch, judge, settings, world.aws, metrics)


def _localised(world: World, text: str) -> str:
    return text.replace(SAMPLE_INSTANCE, world.immutable_ids[0]).replace(SAMPLE_GROUP, world.group_id)


def test_the_sample_batch_is_an_sqs_batch_and_a_bare_event_is_not() -> None:
    batch = json.loads(SAMPLE_BATCH.read_text())
    assert is_sqs_batch(batch)
    assert not is_sqs_batch(json.loads(batch["Records"][0]["body"]))
    assert not is_sqs_batch({"Records": []})
    assert not is_sqs_batch({"Records": [{"eventSource": "aws:s3"}]})
    assert not is_sqs_batch("garbage")


def test_the_aws_sample_batch_judges_the_event_and_parks_the_malformed_body(world: World) -> None:
    # Given AWS's batch shape: a port opened to the world on our group, and a body cut short
    batch = json.loads(_localised(world, SAMPLE_BATCH.read_text()))
    event_record, malformed_record = batch["Records"]
    # When Detect reads the batch
    response = _run(world, batch)
    # Then nothing is reported failed: the event was judged, the malformed body parked with its reason
    assert response == {"batchItemFailures": []}
    executions = world.executions()
    assert len(executions) == 2  # one incident per immutable instance behind the group
    assert all(world.ledger.get(name).status is Status.OPEN for name in executions)
    [parked] = world.dead_letters()
    assert parked["reason"] == MALFORMED_MESSAGE
    assert malformed_record["messageId"] in parked["error"]
    assert json.loads(parked["event"])["body"] == malformed_record["body"]
    assert event_record["messageId"] not in json.dumps(parked)


def test_a_record_whose_judgement_fails_is_reported_and_the_others_are_judged(world: World) -> None:
    # Given a batch whose first event cannot be alerted (SNS down) and whose second is benign
    failing = _record(json.dumps(world.event("cloudtrail-send-ssh-public-key.json")))
    benign = _record(json.dumps(world.event("benign-failed-call.json")))
    # When
    with sns_down(world):
        response = _run(world, _batch(failing, benign))
    # Then only the failed record goes back to the queue
    assert response == {"batchItemFailures": [{"itemIdentifier": failing["messageId"]}]}
    assert world.dead_letters() == []
    # When the queue delivers it again, SNS being back
    retried = _run(
        world, _batch({**failing, "attributes": {**failing["attributes"], "ApproximateReceiveCount": "2"}})
    )
    # Then it is judged: the incident opened by the first try is resumed and the team gets its alert
    assert retried == {"batchItemFailures": []}
    assert [a["stage"] for a in world.alerts()] == ["detected"]
    assert len(world.executions()) == 1


def test_a_malformed_body_that_cannot_be_parked_is_reported_for_the_queue_to_redrive(world: World) -> None:
    # Given the dead-letter queue is unreachable
    malformed = _record("not json", "m-1")
    gone = world.settings.dead_letter_queue_url + "-deleted"
    # When
    response = _run(world, _batch(malformed), dead_letter_queue_url=gone)
    # Then the record is not lost: the queue keeps it (its redrive parks it after maxReceiveCount)
    assert response == {"batchItemFailures": [{"itemIdentifier": "m-1"}]}


def test_a_bare_eventbridge_event_is_judged_as_before(world: World) -> None:
    # The direct path (single-account mode) is unchanged: an exception still reaches Lambda.
    event = world.event("cloudtrail-send-ssh-public-key.json")
    metrics = Metrics(namespace="ImmutableGuardTest")
    with sns_down(world):
        try:
            process_event(event, world.settings, world.aws, metrics, expected_account=ACCOUNT)
        except AwsCallFailed:
            pass
        else:  # pragma: no cover - the assertion below says what went wrong
            raise AssertionError("the direct path swallowed the failure")
