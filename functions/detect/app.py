"""Detect: every EventBridge rule of template.yaml targets this handler, directly (single-account mode) or
through the queue DetectQueue and its event source mapping (organisation mode: an SQS batch).

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
from immutable_guard.detect_batch import is_sqs_batch, process_batch
from immutable_guard.members import FunctionPlace, MemberAccess
from immutable_guard.pipeline import process_event
from immutable_guard.settings import DetectSettings
from immutable_guard.triage import TriageResult

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

    def judge(one: object) -> TriageResult:
        return process_event(
            one, settings, clients, metrics, expected_account=here.account, here=here, members=members
        )

    if is_sqs_batch(event):
        return process_batch(event, judge, settings, clients, metrics)
    return judge(event).model_dump(mode="json")
