"""Canary rollback: the alias back on the stable version with no routing; the new version is kept."""

from __future__ import annotations

from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from immutable_guard.canary.steps import RollbackRequest, correlation
from immutable_guard.canary.traffic import rollback
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
    request = parse_step_input(RollbackRequest, event, metrics)
    logger.append_keys(**correlation(request.plan))
    result = rollback(clients().lambda_, request.plan, request.failure)
    metrics.add_metric(name="CanaryRollbacks", unit=MetricUnit.Count, value=1)
    logger.warning("rolled back", extra={"result": result})
    return result
