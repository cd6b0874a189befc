"""Canary notify: alerts on the shared topic when a rollout starts, is promoted or is rolled back."""

from __future__ import annotations

from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext
from immutable_guard.canary.alerts import CanaryStageEvent, notify
from immutable_guard.canary.settings import CanaryNotifySettings
from immutable_guard.canary.steps import correlation
from immutable_guard.clients import Clients
from immutable_guard.errors import retry_transient_aws_errors
from immutable_guard.step_input import parse_step_input

logger = Logger()
tracer = Tracer()
metrics = Metrics()


@cache
def dependencies() -> tuple[CanaryNotifySettings, Clients]:
    return CanaryNotifySettings.from_env(), Clients()


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
@retry_transient_aws_errors
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = parse_step_input(CanaryStageEvent, event, metrics)
    logger.append_keys(**correlation(request.plan), stage=request.stage)
    settings, clients = dependencies()
    # arn:aws:lambda:REGION:ACCOUNT:function:NAME — the alert names the account without an STS call.
    _, _, _, region, account, *_ = context.invoked_function_arn.split(":")
    result = notify(clients.sns, settings.alert_topic_arn, request, account, region)
    logger.info("canary alert sent", extra={"result": result})
    return result
