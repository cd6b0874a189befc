"""What happens after the detector has judged an event: mode and blast-radius breaker, the ledger's
one-incident-per-instance rule, the "detected" alert, and the start of the remediation workflow."""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger
from botocore.exceptions import ClientError
from pydantic import BaseModel, Field

from immutable_guard.alerts import Alert, console_links, publish_alert
from immutable_guard.errors import AwsCallFailed
from immutable_guard.ledger import Incident, IncidentLedger, Status, now_iso
from immutable_guard.model import Decision, Finding, Mode

if TYPE_CHECKING:
    from mypy_boto3_sns import SNSClient
    from mypy_boto3_stepfunctions import SFNClient

    from immutable_guard.detection.policy import Judgement
    from immutable_guard.settings import DetectSettings

logger = Logger(child=True)

# A dry-run or notify-only incident only groups repeated reports of one change.
SHORT_LOCK_SECONDS = 3600

PLANNED_ACTIONS = [
    "isolate every network interface (all-traffic group, then the empty isolation group)",
    "revoke the offending rule when a port was opened",
    "protect evidence: termination protection, stop on shutdown, keep volumes on termination",
    "leave its Auto Scaling group (which launches a fresh instance) and every target group",
    "detach its IAM instance profile",
    "snapshot every EBS volume and store an evidence manifest under Object Lock",
    "have its Auto Scaling group or CloudFormation stack replace it from the golden image",
]


class InstanceOutcome(BaseModel):
    instance_id: str
    incident_id: str
    outcome: str  # opened | duplicate | resumed
    mode: str
    execution_arn: str | None = None


class TriageResult(BaseModel):
    """What the Detect function did with one event; returned by the handler and printed by `explain`."""

    decision: str
    reason: str
    detail: str = ""
    kind: str | None = None
    severity: str | None = None
    event_id: str | None = None
    instances: list[InstanceOutcome] = Field(default_factory=list)
    alerted: bool = False
    breaker_open: bool = False


def incident_id_for(instance_id: str, event_id: str) -> str:
    """Deterministic, so a retried delivery finds its own incident instead of opening another.
    It is also the execution name: at most 80 characters of [A-Za-z0-9-_]."""
    digest = hashlib.sha256(event_id.encode()).hexdigest()[:12]
    return f"ig-{instance_id}-{digest}"[:80]


class Triage:
    """Applies the mode, the breaker and the ledger to a judgement, then alerts and starts remediation."""

    def __init__(
        self,
        settings: DetectSettings,
        ledger: IncidentLedger,
        sns: SNSClient,
        stepfunctions: SFNClient,
        mode: Mode | None = None,
    ) -> None:
        self._settings = settings
        self._ledger = ledger
        self._sns = sns
        self._sfn = stepfunctions
        # The mode of the event's account (organisation mode: the account registry's); the stack's Mode
        # otherwise.
        self._mode = mode or settings.mode

    def handle(self, judgement: Judgement) -> TriageResult:
        finding = judgement.finding
        result = TriageResult(
            decision=judgement.decision.value,
            reason=judgement.reason,
            detail=judgement.detail,
            kind=finding.kind.value,
            severity=finding.severity.value,
            event_id=finding.event_id,
        )
        if judgement.decision is Decision.IGNORE:
            logger.info("event ignored", extra={"reason": judgement.reason, "detail": judgement.detail})
            return result
        if judgement.decision is Decision.ALERT:
            return self._alert_only(finding, result)
        for instance in judgement.instances_in_scope:
            result.instances.append(self._open(finding, instance.instance_id, result))
        return result

    # ------------------------------------------------------------------ alert-only (account level)
    def _alert_only(self, finding: Finding, result: TriageResult) -> TriageResult:
        if not self._ledger.first_sighting(finding.event_id):
            logger.info("duplicate delivery of an alert-only event", extra={"event_id": finding.event_id})
            return result
        alert = self._alert(finding, "detected", None, [], Decision.ALERT.value, self._mode.value)
        alert.reason = result.reason
        alert.actions = ["alert only: this change is account-level and names no instance to remediate"]
        try:
            publish_alert(self._sns, self._settings.alert_topic_arn, alert)
        except Exception:
            self._ledger.forget_sighting(finding.event_id)  # the retried delivery must alert
            raise
        result.alerted = True
        return result

    # ------------------------------------------------------------------ one incident per instance
    def _open(self, finding: Finding, instance_id: str, result: TriageResult) -> InstanceOutcome:
        incident_id = incident_id_for(instance_id, finding.event_id)
        holder = self._ledger.open_incident_for(instance_id)
        if holder is not None and holder != incident_id:
            self._ledger.add_related_event(holder, finding.event_id)
            logger.info("instance already has an open incident", extra={"incident_id": holder})
            existing = self._ledger.get(holder)
            return InstanceOutcome(
                instance_id=instance_id, incident_id=holder, outcome="duplicate", mode=existing.mode
            )
        if holder == incident_id:  # a retried delivery: finish what the first one started
            existing = self._ledger.get(incident_id)
            outcome = InstanceOutcome(
                instance_id=instance_id, incident_id=incident_id, outcome="resumed", mode=existing.mode
            )
            if existing.mode == Mode.ENFORCE.value:
                outcome.execution_arn = self._start_remediation(finding, instance_id, incident_id)
            if "alerted" not in existing.timeline:
                result.alerted = self._detected_alert(
                    finding, incident_id, instance_id, Mode(existing.mode), result
                )
            return outcome

        mode = self._mode
        if mode is Mode.ENFORCE:
            count = self._ledger.count_incident_this_hour()
            if count > self._settings.max_incidents_per_hour:
                mode = Mode.NOTIFY_ONLY
                result.breaker_open = True
                if self._ledger.mark_breaker_alerted():
                    self._breaker_alert(finding, count)

        status = {Mode.ENFORCE: Status.OPEN, Mode.DRY_RUN: Status.DRY_RUN, Mode.NOTIFY_ONLY: Status.NOTIFIED}[
            mode
        ]
        incident = Incident(
            incident_id=incident_id,
            instance_id=instance_id,
            status=status,
            mode=mode.value,
            decision=Decision.REMEDIATE.value,
            kind=finding.kind.value,
            severity=finding.severity.value,
            account=finding.account,
            region=finding.region,
            created_at=now_iso(),
            finding=finding.model_dump(mode="json"),
            timeline={"detected": now_iso()},
            details={"would_do": PLANNED_ACTIONS} if mode is Mode.DRY_RUN else {},
        )
        lock_seconds = SHORT_LOCK_SECONDS if mode is not Mode.ENFORCE else 7 * 24 * 3600
        opened = self._ledger.open_incident(incident, lock_seconds=lock_seconds)
        if not opened.opened:  # lost a race with a concurrent delivery of the same change
            self._ledger.add_related_event(opened.incident_id, finding.event_id)
            return InstanceOutcome(
                instance_id=instance_id, incident_id=opened.incident_id, outcome="duplicate", mode=mode.value
            )

        outcome = InstanceOutcome(
            instance_id=instance_id, incident_id=incident_id, outcome="opened", mode=mode.value
        )
        # Remediation first, the alert after: the instance is isolated sooner, and a failed alert is
        # sent again by the retried delivery (the ledger knows whether it went out).
        if mode is Mode.ENFORCE:
            outcome.execution_arn = self._start_remediation(finding, instance_id, incident_id)
        result.alerted = self._detected_alert(finding, incident_id, instance_id, mode, result)
        return outcome

    def _detected_alert(
        self, finding: Finding, incident_id: str, instance_id: str, mode: Mode, result: TriageResult
    ) -> bool:
        alert = self._alert(
            finding, "detected", incident_id, [instance_id], Decision.REMEDIATE.value, mode.value
        )
        alert.reason = "breaker_open" if result.breaker_open else result.reason
        alert.actions = {
            Mode.ENFORCE: ["remediation started: " + "; ".join(PLANNED_ACTIONS)],
            Mode.DRY_RUN: ["DRY RUN, nothing was changed. Would: " + "; ".join(PLANNED_ACTIONS)],
            Mode.NOTIFY_ONLY: ["notify-only: nothing was changed; a person must investigate and replace it"],
        }[mode]
        publish_alert(self._sns, self._settings.alert_topic_arn, alert)
        self._ledger.record_stage(incident_id, "alerted")
        return True

    def _start_remediation(self, finding: Finding, instance_id: str, incident_id: str) -> str:
        payload = {
            "incident_id": incident_id,
            "instance_id": instance_id,
            # Where the instance is: every step acts in this account and region (issue 14).
            "account": finding.account,
            "region": finding.region,
            "finding": finding.model_dump(mode="json"),
        }
        arn = self._settings.remediation_state_machine_arn
        try:
            response = self._sfn.start_execution(
                stateMachineArn=arn, name=incident_id, input=json.dumps(payload)
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ExecutionAlreadyExists":
                return f"{arn.replace(':stateMachine:', ':execution:')}:{incident_id}"
            raise AwsCallFailed(f"cannot start remediation {incident_id} on {arn}: {exc}") from exc
        logger.info("remediation started", extra={"incident_id": incident_id})
        return response["executionArn"]

    # ------------------------------------------------------------------ alerts
    def _alert(
        self,
        finding: Finding,
        stage: str,
        incident_id: str | None,
        instance_ids: list[str],
        decision: str,
        mode: str,
    ) -> Alert:
        return Alert(
            stage=stage,
            incident_id=incident_id,
            kind=finding.kind.value,
            severity=finding.severity.value,
            decision=decision,
            mode=mode,
            account=finding.account,
            region=finding.region,
            instance_ids=instance_ids,
            actor=finding.actor.model_dump(mode="json", exclude_none=True),
            event={
                "source": finding.event_source,
                "name": finding.event_name,
                "id": finding.event_id,
                "time": finding.event_time,
            },
            evidence=_bounded(finding.evidence),
            summary=finding.summary,
            console_links=console_links(finding.region, instance_ids, incident_id),
        )

    def _breaker_alert(self, finding: Finding, count: int) -> None:
        alert = self._alert(finding, "breaker_open", None, [], Decision.ALERT.value, Mode.NOTIFY_ONLY.value)
        alert.severity = "critical"
        alert.reason = "breaker_open"
        alert.summary = (
            f"{count} incidents this hour, more than the cap of {self._settings.max_incidents_per_hour}. "
            "Until the hour ends, new incidents are alerted but not remediated. "
            "This can be an attack on many "
            "servers at once, or a change that Immutable Guard should not treat as a compromise."
        )
        alert.actions = ["nothing more is remediated automatically this hour"]
        publish_alert(self._sns, self._settings.alert_topic_arn, alert)


def _bounded(evidence: dict[str, Any], limit: int = 20_000) -> dict[str, Any]:
    """SNS messages stop at 256 KB; an attacker-sized request must not make the alert fail."""
    text = json.dumps(evidence, default=str)
    if len(text) <= limit:
        return evidence
    return {"truncated": True, "sha256": hashlib.sha256(text.encode()).hexdigest(), "prefix": text[:limit]}
