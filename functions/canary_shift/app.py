"""Canary shift: set one step's weight on the alias, or promote the new version, conditional on the
alias being exactly as this rollout left it; and release the rollout's lock when it ends."""

from __future__ import annotations

from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from immutable_guard.canary.lock import RolloutLock
from immutable_guard.canary.settings import CanaryLockSettings
from immutable_guard.canary.steps import ShiftRequest, correlation
from immutable_guard.canary.traffic import promote, release, shift
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
    request = parse_step_input(ShiftRequest, event, metrics)
    logger.append_keys(**correlation(request.plan), action=request.action)
    if request.action == "release":
        result = release(lock(), request.plan)
        logger.info("rollout lock released", extra={"result": result})
        return result
    if request.action == "shift":
        result = shift(clients().lambda_, lock(), request.plan, request.index, request.revision_id)
        metrics.add_metric(name="CanaryShifts", unit=MetricUnit.Count, value=1)
    else:
        result = promote(clients().lambda_, lock(), request.plan, request.revision_id, request.step)
        metrics.add_metric(name="CanaryPromotions", unit=MetricUnit.Count, value=1)
    logger.info("alias updated", extra={"result": result})
    return result
