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
from immutable_guard.members import FunctionPlace, MemberAccess
from immutable_guard.remediation.nuke import NukeRequest, nuke_instance
from immutable_guard.settings import NukeSettings
from immutable_guard.step_input import checked_place, parse_step_input

logger = Logger()
tracer = Tracer()
metrics = Metrics()


@cache
def dependencies() -> tuple[NukeSettings, Clients, IncidentLedger, MemberAccess]:
    settings = NukeSettings.from_env()
    clients = Clients()
    members = MemberAccess(clients, settings.member_role_name, settings.member_external_id)
    return settings, clients, IncidentLedger(clients.dynamodb, settings.ledger_table), members


@logger.inject_lambda_context(correlation_id_path="incident_id")
@tracer.capture_lambda_handler
@metrics.log_metrics
@retry_transient_aws_errors
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = parse_step_input(NukeRequest, event, metrics)
    settings, _, ledger, members = dependencies()
    # In the incident's account and region: through the member role when that is not where this runs.
    account, region = checked_place(request, request.incident_id, ledger)
    here = FunctionPlace.of_arn(context.invoked_function_arn)
    clients = members.clients_for(here, account, region, request.incident_id)
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
