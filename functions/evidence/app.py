"""Evidence: snapshot every volume of the quarantined instance, poll the snapshots, store the manifest."""

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
from immutable_guard.remediation.evidence import (
    EvidenceRequest,
    check_snapshots,
    start_snapshots,
    write_manifest,
)
from immutable_guard.settings import EvidenceSettings
from immutable_guard.step_input import checked_place, parse_step_input

logger = Logger()
tracer = Tracer()
metrics = Metrics()


@cache
def dependencies() -> tuple[EvidenceSettings, Clients, IncidentLedger, MemberAccess]:
    settings = EvidenceSettings.from_env()
    clients = Clients()
    members = MemberAccess(clients, settings.member_role_name, settings.member_external_id)
    return settings, clients, IncidentLedger(clients.dynamodb, settings.ledger_table), members


@logger.inject_lambda_context(correlation_id_path="incident_id")
@tracer.capture_lambda_handler
@metrics.log_metrics
@retry_transient_aws_errors
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = parse_step_input(EvidenceRequest, event, metrics)
    settings, _, ledger, members = dependencies()
    # In the incident's account and region: through the member role when that is not where this runs.
    account, region = checked_place(request, request.incident_id, ledger)
    here = FunctionPlace.of_arn(context.invoked_function_arn)
    clients = members.clients_for(here, account, region, request.incident_id)
    logger.append_keys(instance_id=request.instance_id, action=request.action)
    if request.action == "start":
        result = start_snapshots(clients, ledger, request.incident_id, request.instance_id)
        metrics.add_metric(name="SnapshotsStarted", unit=MetricUnit.Count, value=len(result["snapshot_ids"]))
    elif request.action == "check":
        max_polls = request.max_polls or settings.max_polls
        result = check_snapshots(clients, request.snapshot_ids, request.polls, max_polls)
        metrics.add_metric(name="SnapshotPolls", unit=MetricUnit.Count, value=1)
    else:
        result = write_manifest(
            clients,
            ledger,
            settings.evidence_bucket,
            request.incident_id,
            request.instance_id,
            request.snapshot_ids,
            request.finding,
        )
        metrics.add_metric(name="EvidenceManifestsStored", unit=MetricUnit.Count, value=1)
    logger.info("evidence step done", extra={"result": result})
    return result
