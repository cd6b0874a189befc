"""Detect: every EventBridge rule of template.yaml targets this handler.

No Powertools Tracer here: creating one imports the X-Ray SDK, the largest part of this function's cold
start, and Detect is the first step between an event and the isolated instance (issue 15). Lambda's active
tracing (template.yaml: Tracing: Active) still records each invocation without the SDK; what is lost is a
subsegment per AWS call (docs/performance.md)."""

from __future__ import annotations

from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.utilities.typing import LambdaContext
from immutable_guard.clients import Clients
from immutable_guard.members import FunctionPlace, MemberAccess
from immutable_guard.pipeline import process_event
from immutable_guard.settings import DetectSettings

logger = Logger()
metrics = Metrics()


@cache
def dependencies() -> tuple[DetectSettings, Clients, MemberAccess]:
    """Read once per container; a bad setting fails the cold start, naming the variable. The member
    access keeps its reader-role credentials per account and region between invocations."""
    settings = DetectSettings.from_env()
    clients = Clients()
    return settings, clients, MemberAccess(clients, settings.member_role_name, settings.member_external_id)


@logger.inject_lambda_context(correlation_id_path="id", log_event=False)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    settings, clients, members = dependencies()
    # arn:aws:lambda:REGION:ACCOUNT:function:NAME — the account we protect (in an organisation: the
    # security account).
    here = FunctionPlace.of_arn(context.invoked_function_arn)
    result = process_event(
        event, settings, clients, metrics, expected_account=here.account, here=here, members=members
    )
    return result.model_dump(mode="json")
