"""Canary health gate: first the alias is still as the shift left it and a person's request (abort, promote,
pause) on the rollout's lock, then alarms, and the new version's own errors against the stable version's."""

from __future__ import annotations

from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from immutable_guard.canary.lock import RolloutLock
from immutable_guard.canary.settings import CanaryLockSettings
from immutable_guard.canary.steering import check
from immutable_guard.canary.steps import GateRequest, correlation
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
    request = parse_step_input(GateRequest, event, metrics)
    logger.append_keys(**correlation(request.plan))
    # Someone else's change makes the metrics meaningless for this rollout: AliasChanged, then the rollback
    # finds the alias changed and leaves it (superseded).
    result = check(
        clients().lambda_,
        clients().cloudwatch,
        lock(),
        request.plan,
        request.step,
        request.checks,
        request.failures,
    )
    metrics.add_metric(name=f"CanaryGate{result['verdict'].capitalize()}", unit=MetricUnit.Count, value=1)
    logger.info("health gate", extra={"result": result})
    return result
