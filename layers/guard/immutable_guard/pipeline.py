"""The Detect function's one entry point: judge an event, then triage it. Malformed events are logged,
counted and parked in the dead-letter queue; they never crash the function into a retry loop."""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit, single_metric

from immutable_guard.accounts import AccountRegistry, protection_of
from immutable_guard.clients import Clients, at_first_use
from immutable_guard.dead_letter import send_to_dead_letter
from immutable_guard.detection.events import origin_mismatch, parse_event
from immutable_guard.detection.normalise import normalise
from immutable_guard.detection.policy import Policy, Reason, judge_finding, remember_judgement
from immutable_guard.detection.scope import Ec2InstanceDirectory, ScopeRule
from immutable_guard.errors import InvalidEvent
from immutable_guard.ledger import IncidentLedger
from immutable_guard.members import FunctionPlace, MemberAccess
from immutable_guard.model import Decision, Mode
from immutable_guard.remediation.first_response import Responder, prepare_ahead, vpcs_of
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


def count_by_reason(metrics: Metrics, name: str, reason: str, dimension: str = "reason") -> None:
    """One more datapoint of ``name`` with a ``reason`` dimension (or another ``dimension``), beside the
    per-service total that the alarms use: a dimension added to ``metrics`` would apply to every metric of
    the invocation."""
    service = {"service": metrics.service} if metrics.service else {}
    dimensions = {**service, **metrics.default_dimensions, dimension: reason}
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
    *,
    here: FunctionPlace | None = None,
    members: MemberAccess | None = None,
) -> TriageResult:
    """Judge one EventBridge event and act on the judgement.

    Parameters
    ----------
    raw_event:
        The event as Lambda received it.
    expected_account:
        The account this function runs in. Single-account mode: events from another account are
        ignored. Organisation mode: the security account, protected with the stack's Mode.
    here:
        Where this function runs (its partition, account and region); from ``expected_account`` and the
        clients' region when omitted.
    members:
        Clients for other accounts and regions (organisation mode: the reader role); made from
        ``clients`` and the settings when omitted.
    """
    metrics.add_metric(name="EventsReceived", unit=MetricUnit.Count, value=1)
    policy = policy_from_settings(settings, expected_account)
    # Each client is made when first used (a cold start pays for a client only when the event needs it).
    ledger = IncidentLedger(at_first_use(lambda: clients.dynamodb), settings.ledger_table)
    mode = settings.mode
    directory_clients = clients
    try:
        event = parse_event(raw_event)
        finding = normalise(event)
        if settings.organization_mode:
            here = here or FunctionPlace("aws", expected_account or "", clients.region)
            mismatch = origin_mismatch(event)
            if mismatch is not None:
                return _refuse(
                    Reason.ACCOUNT_MISMATCH, f"Refused: {mismatch}.", raw_event, settings, clients, metrics
                )
            registry = AccountRegistry(clients.dynamodb, settings.ledger_table)
            protection = protection_of(finding.account, here.account, settings.mode, registry)
            if protection is None:
                detail = (
                    f"Refused: account {finding.account} is not in the organisation's protected set "
                    "(`immutable-guard accounts add` registers it)."
                )
                return _refuse(Reason.UNPROTECTED_ACCOUNT, detail, raw_event, settings, clients, metrics)
            mode = protection.mode
            logger.info(
                "account protected", extra={"account": finding.account, "mode": mode, "why": protection.why}
            )
            # The account's servers are read through its reader role; the guard's own roles, in the
            # event's account or the security account, are the guard.
            members = members or MemberAccess(clients, settings.member_role_name, settings.member_external_id)
            directory_clients = members.clients_for(here, finding.account, finding.region, DETECT_SESSION)
            policy = policy.model_copy(
                update={
                    "expected_account": None,
                    "guard_accounts": frozenset({finding.account, here.account}),
                }
            )
        memory = ledger.at(finding.account, finding.region)
        directory = Ec2InstanceDirectory(at_first_use(lambda: directory_clients.ec2), directory_clients)
        judgement = judge_finding(finding, policy, directory, memory)
    except InvalidEvent as exc:
        logger.error("event rejected", extra={"reason": "invalid_event", "error": str(exc)})
        metrics.add_metric(name="EventsRejected", unit=MetricUnit.Count, value=1)
        count_by_reason(metrics, "EventsRejected", "invalid_event")
        send_to_dead_letter(clients.sqs, settings.dead_letter_queue_url, raw_event, "invalid_event", str(exc))
        return TriageResult(decision="reject", reason="invalid_event", detail=str(exc))

    # Single-account mode: Detect isolates right after taking the lock (issue 15). Organisation mode keeps
    # isolation in the workflow: Detect reads member accounts through their Reader role only.
    responder = None if settings.organization_mode else Responder(clients, directory.described)
    if judgement.decision is Decision.REMEDIATE:
        # The ledger's client now, so that the lock's write and the first response's reads leave together.
        _ = clients.dynamodb
    triage = Triage(
        settings,
        memory,
        clients.sns,
        clients.stepfunctions,
        mode=mode,
        responder=responder,
        lambda_client=at_first_use(lambda: clients.lambda_),
    )
    # Single-account mode, enforce: the first record of an in-scope instance asks Contain for its VPCs'
    # isolation groups, so that the first incident there is isolated by Detect (issue 15). Dry-run and
    # notify-only change nothing in the account: their records ask for nothing, and the first record in
    # enforce after them asks.
    groups_wanted = bool(
        responder is not None and mode is Mode.ENFORCE and settings.isolation_groups_function
    )
    try:
        result = triage.handle(judgement)
    finally:
        # After the triage: the instance is isolated one write sooner; written whatever the triage did.
        first_seen = remember_judgement(memory, judgement, policy, groups_wanted=groups_wanted)
        if first_seen:
            # Raises nothing: without the groups, the first incident there is Contain's.
            vpc_ids = vpcs_of(first_seen, directory.described)
            prepare_ahead(clients.lambda_, settings.isolation_groups_function, vpc_ids)
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
        # Which breaker: organization, account, account_region or organization_storm.
        for breaker in result.breakers:
            count_by_reason(metrics, "BreakerOpen", breaker, dimension="breaker")
    return result


# The session name of Detect's reads in member accounts (there is no incident yet).
DETECT_SESSION = "immutable-guard-detect"


def _refuse(
    reason: str, detail: str, raw_event: object, settings: DetectSettings, clients: Clients, metrics: Metrics
) -> TriageResult:
    """Organisation mode refuses the event before judging it: logged and counted by reason."""
    logger.warning("event refused", extra={"reason": reason, "detail": detail})
    metrics.add_metric(name="EventsRejected", unit=MetricUnit.Count, value=1)
    count_by_reason(metrics, "EventsRejected", reason)
    if reason == Reason.ACCOUNT_MISMATCH:
        # Misrouted or hand-made: a person should look at it. An unregistered account's events are
        # expected until it is registered, and counted by reason.
        send_to_dead_letter(clients.sqs, settings.dead_letter_queue_url, raw_event, reason, detail)
    return TriageResult(decision="reject", reason=reason, detail=detail)
