"""Canary hook wrapper: invoke a pre- or post-traffic hook and return its verdict, bounded and validated, so
an oversized or malformed answer is a failed hook rather than an uncatchable States.DataLimitExceeded."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

import boto3
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.config import Config
from immutable_guard.canary.hooks import SUCCEEDED, HookRequest, invoke_hook
from immutable_guard.step_input import parse_step_input

if TYPE_CHECKING:
    from mypy_boto3_lambda import LambdaClient

logger = Logger()
tracer = Tracer()
metrics = Metrics()


@cache
def hook_client(timeout_seconds: int) -> LambdaClient:
    # One attempt: a retried Invoke would run the hook twice. The read waits as long as the hook may take.
    config = Config(read_timeout=timeout_seconds + 5, retries={"total_max_attempts": 1})
    return boto3.client("lambda", config=config)


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = parse_step_input(HookRequest, event, metrics)
    logger.append_keys(hook=request.hook, phase=request.event.get("phase"))
    verdict = invoke_hook(hook_client(request.timeout_seconds), request)
    passed = verdict["status"] == SUCCEEDED
    metrics.add_metric(
        name="CanaryHookPassed" if passed else "CanaryHookFailed", unit=MetricUnit.Count, value=1
    )
    logger.info("hook verdict", extra={"verdict": verdict})
    return verdict
