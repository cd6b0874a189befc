"""Detect: every EventBridge rule of template.yaml targets this handler."""

from __future__ import annotations

from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext
from immutable_guard.clients import Clients
from immutable_guard.pipeline import process_event
from immutable_guard.settings import DetectSettings

logger = Logger()
tracer = Tracer()
metrics = Metrics()


@cache
def dependencies() -> tuple[DetectSettings, Clients]:
    """Read once per container; a bad setting fails the cold start, naming the variable."""
    return DetectSettings.from_env(), Clients()


@logger.inject_lambda_context(correlation_id_path="id", log_event=False)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    settings, clients = dependencies()
    # arn:aws:lambda:REGION:ACCOUNT:function:NAME — the account we protect.
    account = context.invoked_function_arn.split(":")[4]
    return process_event(event, settings, clients, metrics, expected_account=account).model_dump(mode="json")
