"""Canary recovery: a rollout's execution was aborted, timed out or crashed (an EventBridge "Step Functions
Execution Status Change" event). Roll the alias back if it is exactly as the rollout left it, else leave it
(superseded); release the lock; alert."""

from __future__ import annotations

from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from immutable_guard.canary.lock import RolloutLock
from immutable_guard.canary.recovery import recover
from immutable_guard.canary.settings import CanaryRecoverSettings
from immutable_guard.clients import Clients

logger = Logger()
tracer = Tracer()
metrics = Metrics()


@cache
def dependencies() -> tuple[CanaryRecoverSettings, Clients]:
    return CanaryRecoverSettings.from_env(), Clients()


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    settings, clients = dependencies()
    detail = event.get("detail") or {}
    logger.append_keys(execution=detail.get("executionArn"), status=detail.get("status"))
    lock = RolloutLock(clients.dynamodb, settings.ledger_table)
    result = recover(
        clients.lambda_, lock, clients.sns, settings.alert_topic_arn, event, settings.canary_state_machine_arn
    )
    if result["stage"] != "none":
        metrics.add_metric(name="CanaryRecovered", unit=MetricUnit.Count, value=1)
        logger.warning("unfinished rollout recovered", extra={"result": result})
    return result
