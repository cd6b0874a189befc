"""Starts a rollout on its own when a deploy publishes a version: `sam deploy` with AutoPublishAlias moves
the function's *published* alias (CloudTrail ``CreateAlias20150331`` / ``UpdateAlias20150331``), and the
rollout plan stored for the function says which serving alias the canary moves to that version.

The plan is an SSM parameter ``/immutable-guard/canary/<function name>`` holding the canary's input without
``function`` and ``target_version``, plus ``published_alias``::

    {"published_alias": "published", "alias": "live", "alarms": ["orders-live-errors"], ...}

A function without a plan, or an alias other than its published alias (the canary's own moves of the
serving alias included), starts nothing.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from immutable_guard.canary.errors import InvalidCanaryInput
from immutable_guard.canary.plan import execution_name, function_name, parse_request

if TYPE_CHECKING:
    from mypy_boto3_lambda import LambdaClient
    from mypy_boto3_stepfunctions import SFNClient

PLAN_PARAMETER_PREFIX = "/immutable-guard/canary/"
# Lambda's CloudTrail event names carry the API version
# (https://docs.aws.amazon.com/lambda/latest/dg/logging-using-cloudtrail.html).
PUBLISHING_EVENTS = frozenset({"CreateAlias20150331", "UpdateAlias20150331"})
LAMBDA_EVENT_SOURCE = "lambda.amazonaws.com"

STARTED = "started"
IGNORED = "ignored"  # not a publication this starter serves
SKIPPED = "skipped"  # a publication, but nothing to roll out
REFUSED = "refused"  # the plan is broken: a person must fix it


@dataclass(frozen=True)
class Publication:
    """A version published to an alias, read from a CloudTrail record."""

    function: str
    alias: str
    version: str
    event_id: str
    event_time: str


def publication(event: dict[str, Any]) -> Publication | None:
    """The alias move an EventBridge "AWS API Call via CloudTrail" event records, or None."""
    detail = event.get("detail")
    if not isinstance(detail, dict):
        return None
    if detail.get("eventSource") != LAMBDA_EVENT_SOURCE or detail.get("eventName") not in PUBLISHING_EVENTS:
        return None
    if detail.get("errorCode"):
        return None
    request = detail.get("requestParameters")
    if not isinstance(request, dict):
        return None
    # functionName is whatever the caller passed: a name, or a full or partial ARN.
    raw_function = str(request.get("functionName") or "")
    function = function_name(raw_function.split(":function:")[-1].split(":")[0] if raw_function else "")
    alias = request.get("name")
    version = request.get("functionVersion")  # absent when only the description changed
    if not function or not isinstance(alias, str) or not isinstance(version, str) or not version:
        return None
    return Publication(
        function=function,
        alias=alias,
        version=version,
        event_id=str(detail.get("eventID") or event.get("id") or ""),
        event_time=str(detail.get("eventTime") or event.get("time") or ""),
    )


def _unique(found: Publication) -> str:
    """The same for every delivery of one CloudTrail record (EventBridge delivers at least once)."""
    moment = re.sub(r"\D", "", found.event_time)[:14]
    digest = hashlib.sha256(f"{found.event_id}|{found.event_time}".encode()).hexdigest()[:8]
    return f"{moment}-{digest}" if moment else digest


def read_plan(ssm: Any, function: str) -> dict[str, Any] | None:
    """The function's rollout plan, or None when it has none."""
    try:
        value = ssm.get_parameter(Name=f"{PLAN_PARAMETER_PREFIX}{function}")["Parameter"]["Value"]
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ParameterNotFound":
            return None
        raise
    try:
        plan = json.loads(value)
    except json.JSONDecodeError as exc:
        raise InvalidCanaryInput(f"rollout plan of {function} is not JSON: {exc}") from exc
    if not isinstance(plan, dict):
        raise InvalidCanaryInput(f"rollout plan of {function} must be a JSON object")
    return plan


def start_on_publication(
    event: dict[str, Any],
    lambda_: LambdaClient,
    ssm: Any,
    sfn: SFNClient,
    state_machine_arn: str,
) -> dict[str, Any]:
    """Start the rollout a publication asks for; say what was done and why.

    Returns
    -------
    dict
        ``action`` (started, ignored, skipped, refused), ``reason``, and for a started rollout its
        ``execution_arn`` and ``input``.
    """
    found = publication(event)
    if found is None:
        return {"action": IGNORED, "reason": "not a version published to a Lambda alias"}
    where = f"{found.function}:{found.alias} -> version {found.version}"
    try:
        plan = read_plan(ssm, found.function)
    except InvalidCanaryInput as exc:
        return {"action": REFUSED, "reason": str(exc)}
    if plan is None:
        return {"action": IGNORED, "reason": f"{where}: {found.function} has no rollout plan"}
    plan = dict(plan)
    published_alias = plan.pop("published_alias", None)
    if published_alias != found.alias:
        return {"action": IGNORED, "reason": f"{where}: not the published alias ({published_alias})"}
    document = {**plan, "function": found.function, "target_version": found.version}
    try:
        request = parse_request(document)
    except InvalidCanaryInput as exc:
        return {"action": REFUSED, "reason": f"rollout plan of {found.function}: {exc}"}
    if request.alias == found.alias:
        return {
            "action": REFUSED,
            "reason": f"rollout plan of {found.function}: alias and published_alias are the same",
        }
    try:
        serving = lambda_.get_alias(FunctionName=found.function, Name=request.alias)
    except lambda_.exceptions.ResourceNotFoundException:
        # The first deploy publishes before the template creates the serving alias on that version.
        return {"action": SKIPPED, "reason": f"{where}: serving alias {request.alias} does not exist yet"}
    routing = (serving.get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {}
    if serving["FunctionVersion"] == found.version and not routing:
        return {
            "action": SKIPPED,
            "reason": f"{where}: {request.alias} already serves version {found.version}",
        }
    name = execution_name(found.function, request.alias, found.version, unique=_unique(found))
    try:
        arn = sfn.start_execution(stateMachineArn=state_machine_arn, name=name, input=json.dumps(document))[
            "executionArn"
        ]
    except sfn.exceptions.ExecutionAlreadyExists:
        return {
            "action": SKIPPED,
            "reason": f"{where}: this publication's rollout {name} was already started",
        }
    return {
        "action": STARTED,
        "reason": f"{where}: rolling out to {request.alias}",
        "execution_arn": arn,
        "input": document,
    }
