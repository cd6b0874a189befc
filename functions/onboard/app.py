"""Onboard (organisation mode): registers in dry-run each account AWS Organizations reports as joined, and
on its schedule verifies every registered account and region, marking verified those that pass and sending
back to dry-run (with an alert) a verified one that fails. `immutable-guard doctor --organization` invokes
it with {"doctor": {...}}. The logic is immutable_guard.onboarding."""

from __future__ import annotations

from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from immutable_guard.accounts import AccountRegistry
from immutable_guard.alerts import Alert, publish_alert
from immutable_guard.clients import Clients
from immutable_guard.members import FunctionPlace, MemberAccess
from immutable_guard.onboarding import (
    ORGANIZATIONS_SOURCE,
    MalformedOrganizationsEvent,
    account_joined,
    joined_alert,
    register_joined_account,
    settle,
    verify_accounts,
)
from immutable_guard.settings import OnboardSettings

logger = Logger()
tracer = Tracer()
metrics = Metrics()


@cache
def dependencies() -> tuple[OnboardSettings, Clients, MemberAccess]:
    """Read at the first invocation, not at import: tests and moto must be in place first."""
    settings = OnboardSettings.from_env()
    clients = Clients()
    return settings, clients, MemberAccess(clients, settings.member_role_name, settings.member_external_id)


@logger.inject_lambda_context(correlation_id_path="id")
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    settings, clients, members = dependencies()
    registry = AccountRegistry(clients.dynamodb, settings.ledger_table)
    here = FunctionPlace.of_arn(context.invoked_function_arn)
    if isinstance(event, dict) and event.get("source") == ORGANIZATIONS_SOURCE:
        return _joined(event, registry, clients, settings)
    doctor = event.get("doctor") if isinstance(event, dict) else None
    scheduled = isinstance(event, dict) and event.get("detail-type") == "Scheduled Event"
    if not scheduled and not isinstance(doctor, dict):
        detail = f"neither an Organizations event nor the schedule: {str(event)[:200]}"
        return _rejected("unexpected_event", detail)
    options = doctor or {}
    regions = options.get("regions") or settings.verify_regions or (here.region,)
    mark = bool(options.get("mark_verified", True)) if doctor is not None else True
    accounts = [a.account_id for a in registry.list()]
    verification = verify_accounts(members, here, accounts, regions)
    outcome = settle(registry, verification, lambda alert: _alert(clients, settings, alert), mark=mark)
    metrics.add_metric(name="AccountsVerified", unit=MetricUnit.Count, value=len(outcome.newly_verified))
    metrics.add_metric(name="AccountsUnverified", unit=MetricUnit.Count, value=len(outcome.unverified))
    logger.info(
        "accounts verified",
        extra={"failing": outcome.failing, "newly_verified": outcome.newly_verified, "marked": mark},
    )
    return {
        "registered": accounts,
        "verified": outcome.verified,
        "newly_verified": outcome.newly_verified,
        "unverified": outcome.unverified,
        "failing": outcome.failing,
        "marked": mark,
        "rows": [row.as_dict() for row in verification.rows],
    }


def _joined(
    event: dict[str, Any], registry: AccountRegistry, clients: Clients, settings: OnboardSettings
) -> dict[str, Any]:
    try:
        joined = account_joined(event)
    except MalformedOrganizationsEvent as exc:
        return _rejected(exc.reason, str(exc))
    if joined is None:
        logger.info("Organizations event names no joined account", extra={"event_id": event.get("id")})
        return {"registered": [], "verified": [], "failing": {}}
    member, new = register_joined_account(registry, joined, settings.mode)
    if not new:
        # A repeated or retried event, or an account a person registered: left as it is (not reset).
        logger.info("account registered already", extra={"account": joined.account})
    if member.joined_alert_at is None:
        # Told once: a delivery whose alert failed is retried by EventBridge and alerts then.
        _alert(clients, settings, joined_alert(joined, member))
        registry.mark_joined_alert_sent(joined.account)
    if not new:
        return {"registered": [], "already_registered": [joined.account], "verified": [], "failing": {}}
    metrics.add_metric(name="AccountsJoined", unit=MetricUnit.Count, value=1)
    logger.info("account registered in dry-run", extra={"account": joined.account, "how": joined.how})
    return {"registered": [joined.account], "verified": [], "failing": {}}


def _alert(clients: Clients, settings: OnboardSettings, alert: Alert) -> None:
    publish_alert(clients.sns, settings.alert_topic_arn, alert)


def _rejected(reason: str, detail: str) -> dict[str, Any]:
    """Logged and counted, never raised: a retry would not make the event readable."""
    logger.warning("event rejected", extra={"reason": reason, "detail": detail})
    metrics.add_metric(name="OnboardEventsRejected", unit=MetricUnit.Count, value=1)
    return {"registered": [], "verified": [], "failing": {}, "rejected": reason}
