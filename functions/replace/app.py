"""Replace: the instance's Auto Scaling group or CloudFormation stack rebuilds it; poll until healthy."""

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
from immutable_guard.remediation.replace import (
    ReplaceRequest,
    StackReplacement,
    check_replacement,
    start_replacement,
)
from immutable_guard.settings import ReplaceSettings
from immutable_guard.step_input import checked_place, parse_step_input

logger = Logger()
tracer = Tracer()
metrics = Metrics()


@cache
def dependencies() -> tuple[ReplaceSettings, Clients, IncidentLedger, MemberAccess]:
    settings = ReplaceSettings.from_env()
    clients = Clients()
    members = MemberAccess(clients, settings.member_role_name, settings.member_external_id)
    return settings, clients, IncidentLedger(clients.dynamodb, settings.ledger_table), members


@logger.inject_lambda_context(correlation_id_path="incident_id")
@tracer.capture_lambda_handler
@metrics.log_metrics
@retry_transient_aws_errors
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = parse_step_input(ReplaceRequest, event, metrics)
    settings, _, ledger, members = dependencies()
    # In the incident's account and region: through the member role when that is not where this runs.
    account, region = checked_place(request, request.incident_id, ledger)
    here = FunctionPlace.of_arn(context.invoked_function_arn)
    clients = members.clients_for(here, account, region, request.incident_id)
    logger.append_keys(instance_id=request.instance_id, action=request.action)
    if request.action == "start":
        result = start_replacement(
            clients, ledger, request.incident_id, request.instance_id, StackReplacement.of(settings)
        )
        metrics.add_dimension(name="strategy", value=str(result["strategy"]))
        metrics.add_metric(name="ReplacementsStarted", unit=MetricUnit.Count, value=1)
    else:
        max_polls = request.max_polls or settings.max_polls
        result = check_replacement(
            clients, ledger, request.incident_id, request.instance_id, request.replacement, max_polls
        )
        metrics.add_metric(name="ReplacementPolls", unit=MetricUnit.Count, value=1)
    logger.info("replace step done", extra={"result": result})
    return result
