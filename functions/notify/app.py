"""Notify: the remediation workflow's voice (contained, manual replacement, closed, failed)."""

from __future__ import annotations

from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext
from immutable_guard.clients import Clients
from immutable_guard.errors import retry_transient_aws_errors
from immutable_guard.notify import StageEvent, notify_stage
from immutable_guard.settings import StepSettings
from immutable_guard.step_input import parse_step_input

logger = Logger()
tracer = Tracer()
metrics = Metrics()


@cache
def dependencies() -> tuple[StepSettings, Clients]:
    return StepSettings.from_env(), Clients()


@logger.inject_lambda_context(correlation_id_path="incident_id")
@tracer.capture_lambda_handler
@metrics.log_metrics
@retry_transient_aws_errors
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    settings, clients = dependencies()
    return notify_stage(parse_step_input(StageEvent, event, metrics), settings, clients, metrics)
