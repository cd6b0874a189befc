"""Canary preflight: validate the rollout's input and refuse what cannot be rolled out or rolled back."""

from __future__ import annotations

from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from immutable_guard.canary.errors import CanaryRefused
from immutable_guard.canary.plan import parse_request
from immutable_guard.canary.steps import correlation
from immutable_guard.canary.traffic import preflight
from immutable_guard.clients import Clients
from immutable_guard.errors import retry_transient_aws_errors

logger = Logger()
tracer = Tracer()
metrics = Metrics()


@cache
def clients() -> Clients:
    return Clients()


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
@retry_transient_aws_errors
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    try:
        request = parse_request(event)
        logger.append_keys(canary=f"{request.function_name}:{request.alias}")
        plan = preflight(clients().lambda_, clients().cloudwatch, request)
    except CanaryRefused as exc:
        metrics.add_metric(name="CanaryRefused", unit=MetricUnit.Count, value=1)
        logger.warning("canary refused", extra={"reason": str(exc)})
        raise
    logger.append_keys(**correlation(plan))
    metrics.add_metric(name="CanaryStarted", unit=MetricUnit.Count, value=1)
    logger.info("canary accepted", extra={"plan": plan})
    return plan
