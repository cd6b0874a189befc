"""The metrics the dashboard and alarms read, as Powertools writes them (CloudWatch embedded metric format
on stdout): their names, dimensions and values; and the incident id as correlation id in step logs."""

from __future__ import annotations

import importlib.util
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aws_lambda_powertools import Metrics
from immutable_guard.clients import Clients
from immutable_guard.ledger import Incident, IncidentLedger, Status, now_iso
from immutable_guard.notify import StageEvent, notify_stage
from immutable_guard.pipeline import process_event
from immutable_guard.settings import DetectSettings, StepSettings

REPO = Path(__file__).resolve().parents[2]
EVENTS = REPO / "events"
NAMESPACE = "ImmutableGuardTest"  # tests/conftest.py
SERVICE = "immutable-guard"
INCIDENT = "ig-i-0abc-5f2c9a1b7d3e"


@pytest.fixture(autouse=True)
def no_metrics_left_by_other_tests() -> None:
    # Powertools keeps the metrics not yet flushed in state every Metrics instance shares: a test elsewhere
    # that processed events without flushing would add its counts to the ones these tests read.
    Metrics().clear_metrics()


def emitted(text: str) -> list[dict[str, Any]]:
    """Every metric datapoint in the EMF documents of ``text``: name, value, dimensions, namespace."""
    points = []
    for line in text.splitlines():
        try:
            document = json.loads(line)
        except ValueError:
            continue
        if not isinstance(document, dict) or "_aws" not in document:
            continue
        for directive in document["_aws"]["CloudWatchMetrics"]:
            dimension_names = [name for group in directive["Dimensions"] for name in group]
            for metric in directive["Metrics"]:
                points.append(
                    {
                        "name": metric["Name"],
                        "unit": metric["Unit"],
                        "value": _total(document[metric["Name"]]),
                        "namespace": directive["Namespace"],
                        "dimensions": {name: document[name] for name in dimension_names},
                    }
                )
    return points


def _total(value: float | list[float]) -> float:
    # EMF allows a list of values per metric; Powertools writes one for single metrics.
    return sum(value) if isinstance(value, list) else value


def named(points: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [p for p in points if p["name"] == name]


def test_a_rejected_event_is_counted_in_total_and_by_reason(
    aws: Clients, detect_settings: DetectSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given the Detect pipeline and an event that is not an EventBridge event
    metrics = Metrics(namespace=NAMESPACE, service=SERVICE)
    # When it is processed and the invocation's metrics are flushed
    process_event({"hello": "world"}, detect_settings, aws, metrics)
    metrics.flush_metrics()
    points = emitted(capsys.readouterr().out)
    # Then EventsRejected is counted per service (for alarms) and per service and reason (dashboard)
    rejected = named(points, "EventsRejected")
    assert {json.dumps(p["dimensions"], sort_keys=True) for p in rejected} == {
        json.dumps({"service": SERVICE}),
        json.dumps({"reason": "invalid_event", "service": SERVICE}, sort_keys=True),
    }
    assert all(p["value"] == 1 and p["unit"] == "Count" and p["namespace"] == NAMESPACE for p in rejected)
    assert named(points, "EventsReceived")[0]["dimensions"] == {"service": SERVICE}


def test_an_ignored_event_is_counted_by_its_reason(
    aws: Clients, detect_settings: DetectSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a call that failed (AWS recorded an errorCode): nothing changed, so it is ignored
    event = json.loads((EVENTS / "benign-failed-call.json").read_text())
    metrics = Metrics(namespace=NAMESPACE, service=SERVICE)
    # When it is processed
    result = process_event(event, detect_settings, aws, metrics, expected_account=event["account"])
    metrics.flush_metrics()
    points = emitted(capsys.readouterr().out)
    # Then EventsIgnored carries the reason the detector gave
    assert result.decision == "ignore"
    by_reason = [p for p in named(points, "EventsIgnored") if "reason" in p["dimensions"]]
    assert [p["dimensions"] for p in by_reason] == [{"service": SERVICE, "reason": result.reason}]
    assert result.reason == "failed_call"


@dataclass
class Team:
    settings: StepSettings
    ledger: IncidentLedger


@pytest.fixture
def team(aws: Clients, ledger: IncidentLedger) -> Team:
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
            finding={"event_name": "StartSession"},
            timeline={"detected": "2026-01-01T00:00:00Z"},
        )
    )
    topic = aws.sns.create_topic(Name="alerts")["TopicArn"]
    return Team(StepSettings(ledger_table="immutable-guard-ledger", alert_topic_arn=topic), ledger)


def test_closing_an_incident_emits_time_to_contain_and_replace_in_milliseconds(
    aws: Clients, team: Team, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given an incident detected at midnight, contained and replaced since
    team.ledger.record_stage(INCIDENT, "contained", Status.CONTAINED)
    team.ledger.record_stage(INCIDENT, "replaced", Status.REPLACED)
    metrics = Metrics(namespace=NAMESPACE, service=SERVICE)
    # When the workflow closes it
    event = StageEvent(incident_id=INCIDENT, instance_id="i-0abc", stage="closed")
    notify_stage(event, team.settings, aws, metrics)
    metrics.flush_metrics()
    points = emitted(capsys.readouterr().out)
    # Then both durations are emitted, per service, in milliseconds since detection
    for name in ("TimeToContain", "TimeToReplace"):
        (point,) = named(points, name)
        assert point["dimensions"] == {"service": SERVICE}
        assert point["unit"] == "Milliseconds"
        assert point["value"] > 0


def test_a_failed_remediation_is_counted(
    aws: Clients, team: Team, capsys: pytest.CaptureFixture[str]
) -> None:
    metrics = Metrics(namespace=NAMESPACE, service=SERVICE)
    event = StageEvent(
        incident_id=INCIDENT,
        instance_id="i-0abc",
        stage="failed",
        failed_step="Contain",
        error={"Error": "IsolationFailed", "Cause": "{}"},
    )
    notify_stage(event, team.settings, aws, metrics)
    metrics.flush_metrics()
    (point,) = named(emitted(capsys.readouterr().out), "RemediationFailures")
    assert point["dimensions"] == {"service": SERVICE}
    assert point["value"] == 1


class _Context:
    function_name = "immutable-guard-NotifyFunction"
    memory_limit_in_mb = 256
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:immutable-guard-NotifyFunction"
    aws_request_id = "5f2c9a1b-0000-4000-8000-000000000000"


def _load_handler(function: str) -> Any:
    path = REPO / "functions" / function / "app.py"
    spec = importlib.util.spec_from_file_location(f"{function}_handler_under_test", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.filterwarnings("ignore:No application metrics")  # the contained stage emits none
def test_every_step_log_line_carries_the_incident_id_as_correlation_id(
    aws: Clients, team: Team, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the Notify step handler as Lambda runs it
    monkeypatch.setenv("LEDGER_TABLE", team.settings.ledger_table)
    monkeypatch.setenv("ALERT_TOPIC_ARN", team.settings.alert_topic_arn)
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", SERVICE)
    app = _load_handler("notify")
    # (Powertools keeps one handler per service, bound to the stdout of whoever created it first)
    buffer = io.StringIO()
    previous = app.logger.registered_handler.setStream(buffer)
    # When the workflow invokes it for an incident
    try:
        app.handler({"incident_id": INCIDENT, "instance_id": "i-0abc", "stage": "contained"}, _Context())
    finally:
        app.logger.registered_handler.setStream(previous)
    out = buffer.getvalue()
    # Then every log line is correlated by the incident id
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{") and '"level"' in line]
    assert lines, out
    assert {line.get("correlation_id") for line in lines} == {INCIDENT}


STEP_HANDLERS = ("quarantine", "evidence", "replace", "nuke", "notify", "release")


@pytest.mark.parametrize("function", STEP_HANDLERS)
def test_every_remediation_step_correlates_its_logs_by_incident_id(function: str) -> None:
    source = (REPO / "functions" / function / "app.py").read_text()
    assert '@logger.inject_lambda_context(correlation_id_path="incident_id")' in source
    assert "@metrics.log_metrics" in source
