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
from immutable_guard.members import FunctionPlace, MemberAccess
from immutable_guard.remediation.contain_again import contain_again, contain_again_request
from immutable_guard.remediation.quarantine import (
    ContainRequest,
    prepare_isolation_groups,
    prepare_request_vpcs,
    quarantine_instance,
)
from immutable_guard.settings import QuarantineSettings
from immutable_guard.step_input import checked_place, parse_step_input

logger = Logger()
tracer = Tracer()
metrics = Metrics()


@cache
def dependencies() -> tuple[QuarantineSettings, Clients, MemberAccess]:
    """Read at the first invocation, not at import: tests and moto must be in place first."""
    settings = QuarantineSettings.from_env()
    clients = Clients()
    return settings, clients, MemberAccess(clients, settings.member_role_name, settings.member_external_id)


@logger.inject_lambda_context(correlation_id_path="incident_id")
@tracer.capture_lambda_handler
@metrics.log_metrics
@retry_transient_aws_errors
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    vpc_ids = prepare_request_vpcs(event)
    if vpc_ids is not None:
        # Detect's asynchronous request (single-account mode): the isolation groups of VPCs where it first
        # saw an in-scope instance, made before the first incident there. No incident, no instance touched.
        _, clients, _ = dependencies()
        actions = prepare_isolation_groups(clients.ec2, vpc_ids)
        metrics.add_metric(name="IsolationGroupsPrepared", unit=MetricUnit.Count, value=len(vpc_ids))
        logger.info("isolation groups prepared", extra={"vpc_ids": vpc_ids, "actions": actions})
        return {"prepared": vpc_ids, "actions": actions}
    again = contain_again_request(event)
    if again is not None:
        return _contain_again(again, context)
    request = parse_step_input(ContainRequest, event, metrics)
    logger.append_keys(instance_id=request.instance_id)
    settings = dependencies()[0]
    clients, ledger = _where_the_incident_is(request, context)
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


def _where_the_incident_is(request: ContainRequest, context: LambdaContext) -> tuple[Clients, IncidentLedger]:
    """Clients in the incident's account and region (through the member role when that is not where this
    runs), checked against the ledger, and the ledger."""
    settings, clients, members = dependencies()
    ledger = IncidentLedger(clients.dynamodb, settings.ledger_table)
    account, region = checked_place(request, request.incident_id, ledger)
    here = FunctionPlace.of_arn(context.invoked_function_arn)
    return members.clients_for(here, account, region, request.incident_id), ledger


def _contain_again(request: ContainRequest, context: LambdaContext) -> dict[str, Any]:
    """Detect's asynchronous request when someone else changed a server the guard holds in quarantine:
    its containment done again (remediation/contain_again.py), nothing else."""
    logger.append_keys(incident_id=request.incident_id, instance_id=request.instance_id)
    clients, ledger = _where_the_incident_is(request, context)
    result = contain_again(
        clients, ledger, request.incident_id, request.instance_id, request.finding.model_dump(mode="json")
    )
    if "skipped" not in result:
        metrics.add_metric(name="InstancesContainedAgain", unit=MetricUnit.Count, value=1)
    logger.warning("containment done again", extra={"result": result})
    return result
