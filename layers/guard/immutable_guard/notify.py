"""The remediation workflow's alerts and ledger bookkeeping for its milestones: contained, manual
replacement needed, closed (with the timeline), failed (naming the step; the instance stays quarantined)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from pydantic import BaseModel

from immutable_guard.alerts import Alert, console_links, publish_alert
from immutable_guard.clients import Clients
from immutable_guard.errors import InvalidEvent
from immutable_guard.ledger import Incident, IncidentLedger, Status
from immutable_guard.settings import StepSettings

logger = Logger(child=True)

STAGES = ("contained", "manual_replacement", "closed", "failed")


class StageEvent(BaseModel):
    incident_id: str
    instance_id: str
    stage: str
    detail: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    failed_step: str | None = None


def notify_stage(
    event: StageEvent, settings: StepSettings, clients: Clients, metrics: Metrics
) -> dict[str, Any]:
    """Record the milestone and tell the team; returns what was recorded."""
    if event.stage not in STAGES:
        raise InvalidEvent(f"unknown remediation stage {event.stage!r}; expected one of {', '.join(STAGES)}")
    ledger = IncidentLedger(clients.dynamodb, settings.ledger_table)
    detail = event.detail or {}
    actions: list[str] = []
    summary = ""

    if event.stage == "contained":
        actions = list(detail.get("actions", []))
        summary = "The server is cut off from the network, its evidence protected, and it is out of service."
    elif event.stage == "manual_replacement":
        ledger.record_stage(
            event.incident_id, "manual_replacement", Status.AWAITING_MANUAL_REPLACEMENT, detail
        )
        # Replace says why (no owner, a stack not declared or without a service role, a refused tag).
        why = str(detail.get("reason") or "no Auto Scaling group or CloudFormation stack owns this server")
        summary = (
            f"Immutable Guard cannot rebuild this server from its golden image: {why}. "
            "It stays isolated and is NOT terminated: replace it, then terminate it by hand."
        )
        actions = ["evidence preserved (snapshots completed, manifest stored)", "instance left isolated"]
    elif event.stage == "closed":
        ledger.record_stage(event.incident_id, "closed", Status.CLOSED, detail)
        incident = ledger.get(event.incident_id)
        ledger.at(incident.account, incident.region).release_lock(event.instance_id, event.incident_id)
        durations = _durations(incident)
        for stage, metric in (("contained", "TimeToContain"), ("replaced", "TimeToReplace")):
            if stage in durations:
                metrics.add_metric(name=metric, unit=MetricUnit.Milliseconds, value=durations[stage])
        detail = {**detail, "timeline": incident.timeline, "milliseconds_since_detected": durations}
        took = durations.get("contained")
        summary = "Detect. Nuke. Replace. complete." + (
            f" Time to contain: {took / 1000:.1f} s." if took else ""
        )
        actions = [f"{stage}: {at}" for stage, at in sorted(incident.timeline.items(), key=lambda kv: kv[1])]
    else:  # failed
        error = event.error or {}
        incident = ledger.get(event.incident_id)
        contained = "contained" in incident.timeline
        detail = {
            **detail,
            "failed_step": event.failed_step,
            "error": error.get("Error"),
            "cause": _cause(error),
        }
        ledger.record_stage(event.incident_id, "failed", Status.FAILED, detail)
        metrics.add_metric(name="RemediationFailures", unit=MetricUnit.Count, value=1)
        # Nuke may have acted before it failed (e.g. its ledger write after terminating); say so.
        after_nuke = event.failed_step in ("Nuke", "Close")
        terminated = (
            "The instance may already be terminated or stopped: check it. "
            if after_nuke
            else "Nothing was terminated. "
        )
        summary = (
            f"Step {event.failed_step or 'unknown'} failed with {error.get('Error', 'an unknown error')}: "
            f"{_cause(error)}. {terminated}"
            + (
                "The server stays isolated; a person must finish the remediation."
                if contained
                else "Isolation was NOT confirmed: isolate the server by hand now."
            )
        )
        actions = [
            "termination state unknown: check the instance" if after_nuke else "nothing terminated",
            "instance stays quarantined" if contained else "isolation NOT confirmed",
        ]

    incident = ledger.get(event.incident_id)
    alert = _alert_for(incident, event.stage, summary, actions, detail)
    message_id = publish_alert(clients.sns, settings.alert_topic_arn, alert)
    logger.info("stage alert sent", extra={"stage": event.stage, "message_id": message_id})
    return {
        "stage": event.stage,
        "incident_id": event.incident_id,
        "message_id": message_id,
        "status": incident.status,
    }


def _alert_for(
    incident: Incident, stage: str, summary: str, actions: list[str], detail: dict[str, Any]
) -> Alert:
    finding = incident.finding
    return Alert(
        stage=stage,
        incident_id=incident.incident_id,
        kind=incident.kind,
        severity="critical" if stage == "failed" else incident.severity,
        decision=incident.decision,
        mode=incident.mode,
        account=incident.account,
        region=incident.region,
        instance_ids=[incident.instance_id],
        actor=finding.get("actor", {}),
        event={
            "source": finding.get("event_source"),
            "name": finding.get("event_name"),
            "id": finding.get("event_id"),
            "time": finding.get("event_time"),
        },
        summary=summary,
        actions=actions,
        details=detail,
        console_links=console_links(incident.region, [incident.instance_id], incident.incident_id),
    )


def _durations(incident: Incident) -> dict[str, int]:
    """Milliseconds from detection to each later stage."""
    start = incident.timeline.get("detected")
    if not start:
        return {}
    t0 = datetime.fromisoformat(start.replace("Z", "+00:00"))
    return {
        stage: int((datetime.fromisoformat(at.replace("Z", "+00:00")) - t0).total_seconds() * 1000)
        for stage, at in incident.timeline.items()
        if stage != "detected"
    }


def _cause(error: dict[str, Any]) -> str:
    """Step Functions puts a Lambda error's JSON in Cause; keep only its message."""
    cause = error.get("Cause")
    if not isinstance(cause, str):
        return "no cause given"
    try:
        parsed = json.loads(cause)
    except ValueError:
        return cause[:500]
    if isinstance(parsed, dict):
        return str(parsed.get("errorMessage", cause))[:500]
    return cause[:500]
