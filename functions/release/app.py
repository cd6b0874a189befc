"""Release: a person undoes a false-positive quarantine (`immutable-guard release INCIDENT_ID`).
The logic is immutable_guard.remediation.release."""

from __future__ import annotations

from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from immutable_guard.clients import Clients
from immutable_guard.ledger import IncidentLedger
from immutable_guard.members import FunctionPlace, MemberAccess
from immutable_guard.remediation.release import ReleaseRequest, release_incident
from immutable_guard.settings import ReleaseSettings
from immutable_guard.step_input import parse_step_input

logger = Logger()
tracer = Tracer()
metrics = Metrics()


@cache
def dependencies() -> tuple[ReleaseSettings, Clients, MemberAccess]:
    """Read at the first invocation, not at import: tests and moto must be in place first."""
    settings = ReleaseSettings.from_env()
    clients = Clients()
    return settings, clients, MemberAccess(clients, settings.member_role_name, settings.member_external_id)


@logger.inject_lambda_context(correlation_id_path="incident_id")
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = parse_step_input(ReleaseRequest, event, metrics)
    settings, clients, members = dependencies()
    ledger = IncidentLedger(clients.dynamodb, settings.ledger_table)
    # The incident says where its instance is; a person's request names only the incident.
    incident = ledger.get(request.incident_id)
    here = FunctionPlace.of_arn(context.invoked_function_arn)
    result = release_incident(
        members.clients_for(here, incident.account, incident.region, request.incident_id),
        ledger,
        request.incident_id,
        alert_topic_arn=settings.alert_topic_arn,
        state_machine_arn=settings.remediation_state_machine_arn,
    )
    metrics.add_metric(name="IncidentsReleased", unit=MetricUnit.Count, value=1)
    logger.info("incident released", extra={"actions": result["actions"]})
    return result
