"""Canary shift: set one step's weight on the alias, or promote the new version, conditional on the
alias being exactly as this rollout left it."""

from __future__ import annotations

from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from immutable_guard.canary.steps import ShiftRequest, correlation
from immutable_guard.canary.traffic import promote, shift
from immutable_guard.clients import Clients
from immutable_guard.errors import retry_transient_aws_errors
from immutable_guard.step_input import parse_step_input

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
    request = parse_step_input(ShiftRequest, event, metrics)
    logger.append_keys(**correlation(request.plan), action=request.action)
    if request.action == "shift":
        result = shift(clients().lambda_, request.plan, request.index, request.revision_id)
        metrics.add_metric(name="CanaryShifts", unit=MetricUnit.Count, value=1)
    else:
        result = promote(clients().lambda_, request.plan, request.revision_id)
        metrics.add_metric(name="CanaryPromotions", unit=MetricUnit.Count, value=1)
    logger.info("alias updated", extra={"result": result})
    return result
