"""Canary wait: the rollout waits for a person (a pause, an inconclusive step, confirm-before-promotion).
Invoked by a lambda:invoke.waitForTaskToken task: keep the task token on the rollout's lock item, where
`immutable-guard canary resume|promote|abort` finds it, and alert. The task ends when a person answers
(SendTaskSuccess) or when the wait runs out (the rollout is then rolled back)."""

from __future__ import annotations

from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from immutable_guard.canary.lock import RolloutLock
from immutable_guard.canary.settings import CanaryWaitSettings
from immutable_guard.canary.steering import begin_wait
from immutable_guard.canary.steps import WaitRequest, correlation
from immutable_guard.clients import Clients
from immutable_guard.errors import retry_transient_aws_errors
from immutable_guard.step_input import parse_step_input

logger = Logger()
tracer = Tracer()
metrics = Metrics()


@cache
def dependencies() -> tuple[CanaryWaitSettings, Clients]:
    return CanaryWaitSettings.from_env(), Clients()


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
@retry_transient_aws_errors
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = parse_step_input(WaitRequest, event, metrics)
    logger.append_keys(**correlation(request.plan))
    settings, clients = dependencies()
    # arn:aws:lambda:REGION:ACCOUNT:function:NAME — the alert names the account without an STS call.
    _, _, _, region, account, *_ = context.invoked_function_arn.split(":")
    lock = RolloutLock(clients.dynamodb, settings.ledger_table)
    result = begin_wait(
        lock,
        clients.sns,
        settings.alert_topic_arn,
        request.plan,
        request.gate,
        request.step,
        request.token,
        account,
        region,
    )
    metrics.add_metric(name="CanaryWaitingForPerson", unit=MetricUnit.Count, value=1)
    logger.warning("rollout waits for a person", extra={"result": result})
    return result
