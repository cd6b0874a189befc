"""Canary rollback: the alias back on the stable version with no routing, only if it is exactly as the
rollout left it (else left as found: superseded); the new version is kept."""

from __future__ import annotations

from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from immutable_guard.canary.lock import RolloutLock
from immutable_guard.canary.settings import CanaryLockSettings
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
    lock = RolloutLock(clients().dynamodb, CanaryLockSettings.from_env().ledger_table)
    result = rollback(clients().lambda_, lock, request.plan, request.failure)
    superseded = result["outcome"] == "superseded"
    metrics.add_metric(
        name="CanarySuperseded" if superseded else "CanaryRollbacks", unit=MetricUnit.Count, value=1
    )
    logger.warning(
        "superseded: alias left as found" if superseded else "rolled back", extra={"result": result}
    )
    return result
