"""Canary preflight: validate the rollout's input and refuse what cannot be rolled out or rolled back."""

from __future__ import annotations

from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from immutable_guard.canary.errors import CanaryRefused
from immutable_guard.canary.lock import RolloutLock
from immutable_guard.canary.plan import parse_request
from immutable_guard.canary.settings import CanaryLockSettings
from immutable_guard.canary.steps import PreflightRequest, correlation
from immutable_guard.canary.traffic import preflight
from immutable_guard.clients import Clients
from immutable_guard.errors import retry_transient_aws_errors
from immutable_guard.step_input import parse_step_input

logger = Logger()
tracer = Tracer()
metrics = Metrics()


@cache
def clients() -> Clients:
    return Clients()


@cache
def lock() -> RolloutLock:
    return RolloutLock(clients().dynamodb, CanaryLockSettings.from_env().ledger_table)


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
@retry_transient_aws_errors
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    step = parse_step_input(PreflightRequest, event, metrics)
    try:
        request = parse_request(step.request)
        logger.append_keys(canary=f"{request.function_name}:{request.alias}")
        # The lock is taken first and released on a refusal: one rollout per alias.
        plan = preflight(clients().lambda_, clients().cloudwatch, request, lock(), step.execution)
    except CanaryRefused as exc:
        metrics.add_metric(name="CanaryRefused", unit=MetricUnit.Count, value=1)
        logger.warning("canary refused", extra={"reason": str(exc)})
        raise
    logger.append_keys(**correlation(plan))
    metrics.add_metric(name="CanaryStarted", unit=MetricUnit.Count, value=1)
    logger.info("canary accepted", extra={"plan": plan})
    return plan
