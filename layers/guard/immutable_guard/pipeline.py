"""The Detect function's one entry point: judge an event, then triage it. Malformed events are logged,
counted and parked in the dead-letter queue; they never crash the function into a retry loop."""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit, single_metric

from immutable_guard.clients import Clients
from immutable_guard.dead_letter import send_to_dead_letter
from immutable_guard.detection.policy import Policy, judge_event, remember_judgement
from immutable_guard.detection.scope import Ec2InstanceDirectory, ScopeRule
from immutable_guard.errors import InvalidEvent
from immutable_guard.ledger import IncidentLedger
from immutable_guard.settings import DetectSettings
from immutable_guard.triage import Triage, TriageResult

logger = Logger(child=True)


def policy_from_settings(settings: DetectSettings, expected_account: str | None = None) -> Policy:
    return Policy(
        mode=settings.mode,
        scope=ScopeRule(
            tag_key=settings.scope_tag_key,
            tag_value=settings.scope_tag_value,
            stack_names=settings.scope_stack_names,
            asg_names=settings.scope_asg_names,
        ),
        allowed_principal_arns=settings.allowed_principal_arns,
        own_role_arns=settings.own_role_arns,
        expected_account=settings.expected_account or expected_account,
    )


def count_by_reason(metrics: Metrics, name: str, reason: str) -> None:
    """One more datapoint of ``name`` with a ``reason`` dimension, beside the per-service total that the
    alarms use: a dimension added to ``metrics`` would apply to every metric of the invocation."""
    service = {"service": metrics.service} if metrics.service else {}
    dimensions = {**service, **metrics.default_dimensions, "reason": reason}
    with single_metric(
        name=name, unit=MetricUnit.Count, value=1, namespace=metrics.namespace, default_dimensions=dimensions
    ):
        pass


def process_event(
    raw_event: object,
    settings: DetectSettings,
    clients: Clients,
    metrics: Metrics,
    expected_account: str | None = None,
) -> TriageResult:
    """Judge one EventBridge event and act on the judgement.

    Parameters
    ----------
    raw_event:
        The event as Lambda received it.
    expected_account:
        The account this function runs in; events from another account are refused.
    """
    metrics.add_metric(name="EventsReceived", unit=MetricUnit.Count, value=1)
    policy = policy_from_settings(settings, expected_account)
    ledger = IncidentLedger(clients.dynamodb, settings.ledger_table)
    try:
        judgement = judge_event(raw_event, policy, Ec2InstanceDirectory(clients.ec2, clients), ledger)
    except InvalidEvent as exc:
        logger.error("event rejected", extra={"reason": "invalid_event", "error": str(exc)})
        metrics.add_metric(name="EventsRejected", unit=MetricUnit.Count, value=1)
        count_by_reason(metrics, "EventsRejected", "invalid_event")
        send_to_dead_letter(clients.sqs, settings.dead_letter_queue_url, raw_event, "invalid_event", str(exc))
        return TriageResult(decision="reject", reason="invalid_event", detail=str(exc))

    remember_judgement(ledger, judgement, policy)
    result = Triage(settings, ledger, clients.sns, clients.stepfunctions).handle(judgement)
    metric = {"ignore": "EventsIgnored", "alert": "AlertsSent", "remediate": "MutationsDetected"}[
        result.decision
    ]
    metrics.add_metric(name=metric, unit=MetricUnit.Count, value=1)
    if result.decision == "ignore":
        count_by_reason(metrics, "EventsIgnored", result.reason)
    opened = sum(1 for i in result.instances if i.outcome == "opened")
    if opened:
        metrics.add_metric(name="IncidentsOpened", unit=MetricUnit.Count, value=opened)
    if result.breaker_open:
        metrics.add_metric(name="BreakerOpen", unit=MetricUnit.Count, value=1)
    return result
