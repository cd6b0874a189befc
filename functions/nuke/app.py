"""Nuke: terminate, stop or keep the quarantined instance, only after re-checking evidence and replacement."""

from __future__ import annotations

from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from immutable_guard.clients import Clients
from immutable_guard.errors import retry_transient_aws_errors
from immutable_guard.ledger import IncidentLedger
from immutable_guard.remediation.nuke import NukeRequest, nuke_instance
from immutable_guard.settings import NukeSettings
from immutable_guard.step_input import parse_step_input

logger = Logger()
tracer = Tracer()
metrics = Metrics()


@cache
def dependencies() -> tuple[NukeSettings, Clients, IncidentLedger]:
    settings = NukeSettings.from_env()
    clients = Clients()
    return settings, clients, IncidentLedger(clients.dynamodb, settings.ledger_table)


@logger.inject_lambda_context(correlation_id_path="incident_id")
@tracer.capture_lambda_handler
@metrics.log_metrics
@retry_transient_aws_errors
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = parse_step_input(NukeRequest, event, metrics)
    settings, clients, ledger = dependencies()
    logger.append_keys(instance_id=request.instance_id)
    result = nuke_instance(
        clients,
        ledger,
        settings,
        request.incident_id,
        request.instance_id,
        request.snapshot_ids,
        request.replacement,
    )
    name = "NukeAlreadyDone" if result["already_done"] else f"Instances{result['action'].capitalize()}"
    metrics.add_metric(name=name, unit=MetricUnit.Count, value=1)
    logger.info("nuke step done", extra={"result": result})
    return result
