"""Contain, the first step of every remediation: isolate the instance, keep its evidence, take it out of
service. The logic is immutable_guard.remediation.quarantine."""

from __future__ import annotations

from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from immutable_guard.clients import Clients
from immutable_guard.errors import retry_transient_aws_errors
from immutable_guard.ledger import IncidentLedger
from immutable_guard.remediation.quarantine import ContainRequest, quarantine_instance
from immutable_guard.settings import QuarantineSettings
from immutable_guard.step_input import parse_step_input

logger = Logger()
tracer = Tracer()
metrics = Metrics()


@cache
def dependencies() -> tuple[QuarantineSettings, Clients]:
    """Read at the first invocation, not at import: tests and moto must be in place first."""
    return QuarantineSettings.from_env(), Clients()


@logger.inject_lambda_context(correlation_id_path="incident_id")
@tracer.capture_lambda_handler
@metrics.log_metrics
@retry_transient_aws_errors
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = parse_step_input(ContainRequest, event, metrics)
    logger.append_keys(instance_id=request.instance_id)
    settings, clients = dependencies()
    ledger = IncidentLedger(clients.dynamodb, settings.ledger_table)
    result = quarantine_instance(
        clients,
        ledger,
        request.incident_id,
        request.instance_id,
        request.finding.model_dump(mode="json"),
        isolation_depth=settings.isolation_depth,
    )
    metrics.add_metric(name="InstancesContained", unit=MetricUnit.Count, value=1)
    logger.info("instance contained", extra={"actions": result["actions"]})
    return result
