"""The workflow's milestones: the ledger's status and timeline, and what the team is told."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_lambda_powertools import Metrics
from immutable_guard.clients import Clients
from immutable_guard.errors import InvalidEvent
from immutable_guard.ledger import Incident, IncidentLedger, Status, now_iso
from immutable_guard.notify import StageEvent, notify_stage
from immutable_guard.settings import StepSettings

INCIDENT = "ig-i-0abc-1234"


@pytest.fixture
def team(aws: Clients, ledger: IncidentLedger) -> tuple[StepSettings, str]:
    topic = aws.sns.create_topic(Name="alerts")["TopicArn"]
    queue = aws.sqs.create_queue(QueueName="team")["QueueUrl"]
    arn = aws.sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    aws.sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)
    ledger.open_incident(
        Incident(
            incident_id=INCIDENT,
            instance_id="i-0abc",
            mode="enforce",
            decision="remediate",
            kind="shell_access",
            severity="high",
            account="111122223333",
            region="us-east-1",
            created_at=now_iso(),
            finding={"event_name": "StartSession", "actor": {"principal_arn": "arn:attacker"}},
            timeline={"detected": now_iso()},
        )
    )
    return StepSettings(ledger_table="immutable-guard-ledger", alert_topic_arn=topic), queue


def notify(aws: Clients, settings: StepSettings, **event: Any) -> dict[str, Any]:
    stage_event = StageEvent.model_validate({"incident_id": INCIDENT, "instance_id": "i-0abc", **event})
    return notify_stage(stage_event, settings, aws, Metrics(namespace="ImmutableGuardTest"))


def received(aws: Clients, queue: str) -> list[dict[str, Any]]:
    messages = aws.sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])
    return [json.loads(json.loads(m["Body"])["Message"]) for m in messages]


def test_contained_alert_lists_what_was_done(
    aws: Clients, ledger: IncidentLedger, team: tuple[StepSettings, str]
) -> None:
    settings, queue = team
    notify(aws, settings, stage="contained", detail={"actions": ["isolated eni-1", "detached profile"]})
    [alert] = received(aws, queue)
    assert alert["stage"] == "contained"
    assert alert["actions"] == ["isolated eni-1", "detached profile"]
    assert alert["actor"] == {"principal_arn": "arn:attacker"}


def test_closing_records_the_timeline_and_frees_the_instance(
    aws: Clients, ledger: IncidentLedger, team: tuple[StepSettings, str]
) -> None:
    settings, queue = team
    ledger.record_stage(INCIDENT, "contained", Status.CONTAINED)
    result = notify(aws, settings, stage="closed", detail={"action": "terminated"})
    assert result["status"] == Status.CLOSED
    incident = ledger.get(INCIDENT)
    assert {"detected", "contained", "closed"} <= set(incident.timeline)
    assert ledger.open_incident_for("i-0abc") is None
    [alert] = received(aws, queue)
    assert alert["stage"] == "closed"
    assert "contained" in alert["details"]["milliseconds_since_detected"]
    assert "Time to contain" in alert["summary"]


def test_a_failure_names_the_step_keeps_the_instance_locked_and_says_it_is_quarantined(
    aws: Clients, ledger: IncidentLedger, team: tuple[StepSettings, str]
) -> None:
    settings, queue = team
    ledger.record_stage(INCIDENT, "contained", Status.CONTAINED)
    cause = json.dumps({"errorType": "SnapshotFailed", "errorMessage": "snap-1 is in state error"})
    notify(
        aws,
        settings,
        stage="failed",
        failed_step="CheckSnapshots",
        error={"Error": "SnapshotFailed", "Cause": cause},
    )
    incident = ledger.get(INCIDENT)
    assert incident.status is Status.FAILED
    assert ledger.open_incident_for("i-0abc") == INCIDENT  # later reports join this incident
    [alert] = received(aws, queue)
    assert (alert["stage"], alert["severity"]) == ("failed", "critical")
    assert "CheckSnapshots" in alert["summary"] and "snap-1 is in state error" in alert["summary"]
    assert "stays isolated" in alert["summary"] and "Nothing was terminated" in alert["summary"]


def test_a_failure_before_containment_says_isolation_is_not_confirmed(
    aws: Clients, ledger: IncidentLedger, team: tuple[StepSettings, str]
) -> None:
    settings, queue = team
    notify(
        aws, settings, stage="failed", failed_step="Contain", error={"Error": "IsolationFailed", "Cause": "x"}
    )
    [alert] = received(aws, queue)
    assert "NOT confirmed" in alert["summary"]


def test_manual_replacement_is_awaited_not_nuked(
    aws: Clients, ledger: IncidentLedger, team: tuple[StepSettings, str]
) -> None:
    settings, queue = team
    notify(aws, settings, stage="manual_replacement", detail={"strategy": "manual"})
    assert ledger.get(INCIDENT).status is Status.AWAITING_MANUAL_REPLACEMENT
    assert "NOT terminated" in received(aws, queue)[0]["summary"]


def test_manual_replacement_alert_says_why_the_guard_cannot_replace_it(
    aws: Clients, ledger: IncidentLedger, team: tuple[StepSettings, str]
) -> None:
    # Given Replace left the server to a person because its stack has no service role
    settings, queue = team
    why = "stack web has no service role; Replace's own credentials cannot update it"
    notify(aws, settings, stage="manual_replacement", detail={"strategy": "manual", "reason": why})
    # Then the team reads the reason in the summary and in the details
    [alert] = received(aws, queue)
    assert why in alert["summary"] and alert["details"]["reason"] == why
    assert "NOT terminated" in alert["summary"]


def test_an_unknown_stage_is_refused(aws: Clients, team: tuple[StepSettings, str]) -> None:
    settings, _ = team
    with pytest.raises(InvalidEvent, match="unknown remediation stage"):
        notify(aws, settings, stage="partying")
