"""Canary start: a deploy published a version to a function's published alias (CloudTrail CreateAlias /
UpdateAlias via EventBridge); start the rollout its plan describes, to the serving alias."""

from __future__ import annotations

from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from immutable_guard.canary.autostart import REFUSED, STARTED, start_on_publication
from immutable_guard.canary.settings import CanaryStartSettings
from immutable_guard.clients import Clients

logger = Logger()
tracer = Tracer()
metrics = Metrics()


@cache
def dependencies() -> tuple[CanaryStartSettings, Clients]:
    return CanaryStartSettings.from_env(), Clients()


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    settings, clients = dependencies()
    logger.append_keys(event_id=(event.get("detail") or {}).get("eventID"))
    result = start_on_publication(
        event, clients.lambda_, clients.ssm, clients.stepfunctions, settings.canary_state_machine_arn
    )
    if result["action"] == STARTED:
        metrics.add_metric(name="CanaryAutoStarted", unit=MetricUnit.Count, value=1)
        logger.info("rollout started", extra={"result": result})
    elif result["action"] == REFUSED:
        # A broken plan: the deploy published a version that nothing will roll out.
        metrics.add_metric(name="CanaryAutoStartRefused", unit=MetricUnit.Count, value=1)
        logger.error("rollout not started", extra={"result": result})
    else:
        logger.info("nothing to roll out", extra={"result": result})
    return result
