"""What happens after the detector has judged an event: mode and blast-radius breakers, the ledger's
one-incident-per-instance rule, the "detected" alert, and the start of the remediation workflow.

Blast radius: an enforce incident must fit under hourly caps (organisation-wide; in organisation mode also
per account and per account-region), counted in the ledger transaction that takes its lock. In
organisation mode, remediable changes in OrgStormAccounts accounts within OrgStormWindowMinutes open the
organisation storm: every new incident is notify-only until it expires or a person clears it. A full cap or
the storm demotes the incident to notify-only; each breaker says so in one alert."""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, Field

from immutable_guard.alerts import Alert, console_links, publish_alert
from immutable_guard.detection.policy import Reason
from immutable_guard.errors import AwsCallFailed
from immutable_guard.ledger import Breaker, Cap, Incident, IncidentLedger, Status, Storm, caps_for, now_iso
from immutable_guard.model import Decision, Finding, Mode
from immutable_guard.remediation.first_response import (
    STAGE_ISOLATED,
    FirstResponse,
    Readings,
    Responder,
    isolate,
    read_for_isolation,
)
from immutable_guard.remediation.quarantine import CONTAIN_AGAIN

if TYPE_CHECKING:
    from mypy_boto3_lambda import LambdaClient
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
    # The interfaces Detect isolated itself before starting the workflow (single-account mode, enforce).
    isolated: list[str] = Field(default_factory=list)


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
    # Which breakers demoted an incident of this event (Breaker values), each once.
    breakers: list[str] = Field(default_factory=list)


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
        responder: Responder | None = None,
        lambda_client: LambdaClient | None = None,
    ) -> None:
        self._settings = settings
        # Asks Contain to contain a quarantined server again (settings.contain_function); None: alert only.
        self._lambda = lambda_client
        # Detect's first response (isolation right after the lock); None leaves isolation to the workflow.
        self._responder = responder
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
        if judgement.contain_again:
            self._contain_again(judgement, result)
        storm = self._storm(finding) if judgement.instances_in_scope else None
        for instance in judgement.instances_in_scope:
            result.instances.append(self._open(finding, instance.instance_id, result, storm))
        return result

    # ------------------------------------------------------------------ organisation storm
    def _storm(self, finding: Finding) -> Storm | None:
        """The organisation storm in force for this change, opening it when this change's account is the
        OrgStormAccounts-th with a remediable change within the window. Only in organisation mode and for an
        account in enforce (a storm stops remediations; dry-run and notify-only accounts have none)."""
        if not self._settings.organization_mode or self._mode is not Mode.ENFORCE:
            return None
        window = self._settings.org_storm_window_minutes * 60
        accounts = self._ledger.watch_account(finding.account, window)
        storm = self._ledger.storm()
        if storm is not None or len(accounts) < self._settings.org_storm_accounts:
            return storm
        opened = self._ledger.open_storm(accounts)
        if opened is None:  # another delivery opened it a moment ago, and sends the alert
            return self._ledger.storm()
        self._storm_alert(finding, opened)
        return opened

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

    # ------------------------------------------------------------------ containment tampered with
    def _contain_again(self, judgement: Judgement, result: TriageResult) -> None:
        """Someone other than the guard changed servers it holds in quarantine: each change joins the open
        incident's related events; in enforce, Contain is asked (asynchronously) to put each server back
        into containment; the team is told once per event, critical. No incident is opened, so no cap is
        counted: these servers are already within the blast radius of their incidents."""
        finding = judgement.finding
        sighting = f"{finding.event_id}#contain-again"
        if not self._ledger.first_sighting(sighting):
            logger.info("duplicate delivery of a change to a quarantined server", extra={"event": sighting})
            return
        try:
            held = {
                instance_id: incident_id
                for instance_id in judgement.contain_again
                # None: the incident ended since the judge read the lock (released or nuked).
                if (incident_id := self._ledger.open_incident_for(instance_id)) is not None
            }
            ask = bool(self._mode is Mode.ENFORCE and self._settings.contain_function and self._lambda)
            for instance_id, incident_id in held.items():
                self._ledger.add_related_event(incident_id, finding.event_id)
                if ask:
                    self._ask_contain_again(finding, instance_id, incident_id)
                result.instances.append(
                    InstanceOutcome(
                        instance_id=instance_id,
                        incident_id=incident_id,
                        outcome="contained_again" if ask else "tampered",
                        mode=self._mode.value,
                    )
                )
            if held:
                self._tampered_alert(finding, held, contained_again=ask)
                result.alerted = True
        except Exception:
            self._ledger.forget_sighting(sighting)  # the retried delivery must do it all again
            raise

    def _ask_contain_again(self, finding: Finding, instance_id: str, incident_id: str) -> None:
        # Asynchronous (InvocationType Event: Lambda queues it and retries a failed run twice,
        # https://docs.aws.amazon.com/lambda/latest/dg/invocation-async.html); a refused request raises, so
        # the event is delivered again.
        assert self._lambda is not None
        request = {
            CONTAIN_AGAIN: {
                "incident_id": incident_id,
                "instance_id": instance_id,
                "account": finding.account,
                "region": finding.region,
                "finding": finding.model_dump(mode="json"),
            }
        }
        try:
            self._lambda.invoke(
                FunctionName=self._settings.contain_function,
                InvocationType="Event",
                Payload=json.dumps(request).encode(),
            )
        except (ClientError, BotoCoreError) as exc:
            raise AwsCallFailed(f"cannot ask Contain to contain {instance_id} again: {exc}") from exc
        logger.warning("containment tampered with: contained again", extra={"incident_id": incident_id})

    def _tampered_alert(self, finding: Finding, held: dict[str, str], *, contained_again: bool) -> None:
        first_incident = next(iter(held.values()))
        alert = self._alert(
            finding, "tampered", first_incident, list(held), Decision.REMEDIATE.value, self._mode.value
        )
        alert.severity = "critical"
        alert.reason = Reason.CONTAINMENT_TAMPERED
        who = finding.actor.principal_arn or finding.actor.session_issuer_arn or "an unknown principal"
        alert.summary = (
            f"Containment tampered with by {who}: {finding.summary} It reaches "
            f"{', '.join(held)}, held in quarantine by Immutable Guard."
        )
        alert.details = {"incidents": held}
        alert.actions = (
            [
                "contained again: interfaces back on the isolation group (its rules repaired), the rule this "
                "change added revoked, an instance profile attached since detached"
            ]
            if contained_again
            else [
                f"{self._mode.value}: nothing was changed; the quarantine may be undone: a person must "
                "check the instance's groups and the isolation group's rules"
            ]
        )
        publish_alert(self._sns, self._settings.alert_topic_arn, alert)

    # ------------------------------------------------------------------ one incident per instance
    def _open(
        self, finding: Finding, instance_id: str, result: TriageResult, storm: Storm | None = None
    ) -> InstanceOutcome:
        incident_id = incident_id_for(instance_id, finding.event_id)
        mode = self._mode
        if mode is Mode.ENFORCE and storm is not None:
            mode = Mode.NOTIFY_ONLY
            self._note_breaker(result, Breaker.STORM)
        # The lock's transaction is tried first: when the instance already has an incident it fails and
        # names the holder (one round trip for a new incident instead of a read and then a write).
        prior = readings = None
        if mode is Mode.ENFORCE:
            # The caps are counted with the lock: a full one opens nothing, and the incident is opened
            # again below in notify-only. Detect's first response records the interfaces' prior groups in
            # the same write and reads what the swap needs meanwhile (issue 15).
            prior = self._responder.prior_state(instance_id) if self._responder else None
            incident = self._incident(finding, instance_id, incident_id, mode)
            incident.prior_state = prior
            with ThreadPoolExecutor(max_workers=1) as pool:
                if prior is not None and self._responder is not None:
                    ec2 = self._responder.ec2  # made here, in this thread, if not yet
                    readings = pool.submit(read_for_isolation, ec2, instance_id)
                opened = self._ledger.open_incident(
                    incident, lock_seconds=7 * 24 * 3600, caps=self._caps(finding)
                )
            if opened.tripped:
                mode = Mode.NOTIFY_ONLY
                for cap in opened.tripped:
                    self._note_breaker(result, cap.breaker)
                    if self._ledger.record_demotion(cap):
                        self._breaker_alert(finding, cap)
                opened = self._ledger.open_incident(
                    self._incident(finding, instance_id, incident_id, mode), lock_seconds=SHORT_LOCK_SECONDS
                )
        else:
            opened = self._ledger.open_incident(
                self._incident(finding, instance_id, incident_id, mode), lock_seconds=SHORT_LOCK_SECONDS
            )
        if not opened.opened:
            if opened.incident_id == incident_id:  # a retried delivery: finish what the first one started
                return self._resume(finding, instance_id, incident_id, result)
            # The instance already has an open incident (or a concurrent delivery won the race).
            self._ledger.add_related_event(opened.incident_id, finding.event_id)
            logger.info("instance already has an open incident", extra={"incident_id": opened.incident_id})
            existing = self._ledger.get(opened.incident_id)
            return InstanceOutcome(
                instance_id=instance_id,
                incident_id=opened.incident_id,
                outcome="duplicate",
                mode=existing.mode,
            )

        outcome = InstanceOutcome(
            instance_id=instance_id, incident_id=incident_id, outcome="opened", mode=mode.value
        )
        # Isolation first, then the remediation, the alert last: the instance is isolated sooner, and a
        # failed alert is sent again by the retried delivery (the ledger knows whether it went out).
        if mode is Mode.ENFORCE:
            response = None
            if prior is not None and readings is not None and self._responder is not None:
                response = self._first_response(self._responder, prior, readings)
                outcome.isolated = response.isolated if response else []
            outcome.execution_arn = self._start_remediation(finding, instance_id, incident_id)
            if response is not None and response.isolated:
                self._ledger.record_stage(incident_id, STAGE_ISOLATED, details=response.as_details())
        result.alerted = self._detected_alert(finding, incident_id, instance_id, mode, result)
        return outcome

    @staticmethod
    def _first_response(
        responder: Responder, prior: dict[str, Any], readings: Future[Readings]
    ) -> FirstResponse | None:
        """The two-step swap, unless its reads failed: then the workflow isolates (it starts next)."""
        try:
            return isolate(responder.ec2, prior, readings.result())
        except (ClientError, BotoCoreError) as exc:
            logger.warning("first response: reads failed, the workflow isolates", extra={"error": str(exc)})
            return None

    def _resume(
        self, finding: Finding, instance_id: str, incident_id: str, result: TriageResult
    ) -> InstanceOutcome:
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

    def _caps(self, finding: Finding) -> list[Cap]:
        """Organisation-wide always; per account and per account-region in organisation mode. With one
        account and one region those are the organisation-wide count, so single-account mode keeps its one
        hourly breaker."""
        settings = self._settings
        if not settings.organization_mode:
            return caps_for(finding.account, finding.region, settings.max_incidents_per_hour)
        return caps_for(
            finding.account,
            finding.region,
            settings.max_incidents_per_hour,
            settings.max_incidents_per_account_hour,
            settings.max_incidents_per_account_region_hour,
        )

    def _incident(self, finding: Finding, instance_id: str, incident_id: str, mode: Mode) -> Incident:
        status = {Mode.ENFORCE: Status.OPEN, Mode.DRY_RUN: Status.DRY_RUN, Mode.NOTIFY_ONLY: Status.NOTIFIED}[
            mode
        ]
        return Incident(
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

    @staticmethod
    def _note_breaker(result: TriageResult, breaker: Breaker) -> None:
        result.breaker_open = True
        if breaker.value not in result.breakers:
            result.breakers.append(breaker.value)

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

    def _breaker_alert(self, finding: Finding, cap: Cap) -> None:
        where = {
            Breaker.ORGANIZATION: "",
            Breaker.ACCOUNT: f" in account {finding.account}",
            Breaker.ACCOUNT_REGION: f" in account {finding.account}, region {finding.region}",
        }[cap.breaker]
        alert = self._alert(finding, "breaker_open", None, [], Decision.ALERT.value, Mode.NOTIFY_ONLY.value)
        alert.severity = "critical"
        alert.reason = "breaker_open"
        alert.details = {"breaker": cap.breaker.value, "scope": cap.scope or "organization", "cap": cap.limit}
        alert.summary = (
            f"{cap.limit} incidents this hour{where} reached the cap of {cap.limit}. "
            f"Until the hour ends, new incidents{where} are alerted but not remediated. "
            "This can be an attack on many "
            "servers at once, or a change that Immutable Guard should not treat as a compromise."
        )
        alert.actions = [f"nothing more{where} is remediated automatically this hour"]
        publish_alert(self._sns, self._settings.alert_topic_arn, alert)

    def _storm_alert(self, finding: Finding, storm: Storm) -> None:
        settings = self._settings
        alert = self._alert(finding, "breaker_open", None, [], Decision.ALERT.value, Mode.NOTIFY_ONLY.value)
        alert.severity = "critical"
        alert.reason = "breaker_open"
        alert.details = {
            "breaker": Breaker.STORM.value,
            "accounts": storm.accounts,
            "window_minutes": settings.org_storm_window_minutes,
            "until": storm.until,
        }
        accounts = ", ".join(storm.accounts)
        alert.summary = (
            f"Changes to immutable servers in {len(storm.accounts)} accounts within "
            f"{settings.org_storm_window_minutes} minutes ({accounts}): an organisation-wide change "
            "missing from the allow-list, or an attack across accounts. The whole organisation is "
            f"notify-only until {storm.until}: new incidents are alerted, not remediated; remediations "
            "already started continue."
        )
        alert.actions = [
            "find the change: if it is legitimate, allow-list its principal",
            "then `immutable-guard accounts storm clear` resumes remediation (or wait until it expires)",
        ]
        publish_alert(self._sns, settings.alert_topic_arn, alert)


def _bounded(evidence: dict[str, Any], limit: int = 20_000) -> dict[str, Any]:
    """SNS messages stop at 256 KB; an attacker-sized request must not make the alert fail."""
    text = json.dumps(evidence, default=str)
    if len(text) <= limit:
        return evidence
    return {"truncated": True, "sha256": hashlib.sha256(text.encode()).hexdigest(), "prefix": text[:limit]}
