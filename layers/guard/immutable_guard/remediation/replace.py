"""Replace: have the instance's owner rebuild it from its known-good definition (the Auto Scaling group
launches a fresh instance, or the CloudFormation stack is updated), and tell when the new one is healthy.

A stack is updated only when the operator declared it (``ScopeStackNames`` or the stack tag
``immutable-guard-replaceable``), only as a service role (the stack's own, or the one the operator named),
and only by bumping the parameter the operator configured. Anything else is left to a person
(``manual``, with the reason in the alert): the instance stays quarantined."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import ConfigDict, Field

from immutable_guard.errors import AwsCallFailed, InstanceNotFound, ReplacementFailed
from immutable_guard.ledger import Incident, IncidentLedger, Status
from immutable_guard.remediation.evidence import describe_instance
from immutable_guard.remediation.launch_source import PRIOR_STATE_KEY as LAUNCH_SOURCE_KEY
from immutable_guard.remediation.launch_source import verify_launch_source
from immutable_guard.step_input import InstancePlace

if TYPE_CHECKING:
    from mypy_boto3_cloudformation.type_defs import ParameterTypeDef

    from immutable_guard.clients import Clients
    from immutable_guard.settings import ReplaceSettings

ASG_NAME_TAG = "aws:autoscaling:groupName"
STACK_NAME_TAG = "aws:cloudformation:stack-name"
LOGICAL_ID_TAG = "aws:cloudformation:logical-id"
# Once read to choose the parameter to bump; now refused: whoever can tag the server would choose what the
# stack update changes.
REPLACEMENT_PARAMETER_TAG = "immutable-guard:replacement-parameter"
DEFAULT_REPLACEMENT_PARAMETER = "ReplacementGeneration"
# The stack tag that declares a stack replaceable (its value is the template's ReplaceableStackTagValue).
# Outside the guard's own `immutable-guard:` instance tags: CloudFormation copies stack tags to instances.
REPLACEABLE_STACK_TAG = "immutable-guard-replaceable"

STRATEGY_ASG = "auto_scaling_group"
STRATEGY_STACK = "cloudformation"
STRATEGY_MANUAL = "manual"

STAGE_REPLACEMENT_STARTED = "replacement_started"
STAGE_REPLACED = "replaced"

_NO_UPDATES = "No updates are to be performed"
# Keys under which the Contain step may have remembered the group it took the instance out of.
_ASG_KEYS = ("left_auto_scaling_group", "auto_scaling_group", "auto_scaling_group_name", "asg_name")


@dataclass(frozen=True)
class StackReplacement:
    """Which stacks Replace may update, as whom, and which parameter it bumps: the operator's configuration
    (template parameters), never the instance's tags. The default declares nothing: every stack is left
    to a person.

    Attributes
    ----------
    declared_stacks:
        Stack names the operator declared (``ScopeStackNames``).
    replaceable_tag_value:
        Stacks tagged ``immutable-guard-replaceable`` with this value are declared too; None: none is.
    operator_role_arn:
        A service role the operator named (``ReplacementStackRoleArn``) for stacks without their own.
    parameter:
        The stack parameter bumped to rebuild the instance (``ReplacementParameter``).
    """

    declared_stacks: frozenset[str] = frozenset()
    replaceable_tag_value: str | None = None
    operator_role_arn: str | None = None
    parameter: str = DEFAULT_REPLACEMENT_PARAMETER

    @classmethod
    def of(cls, settings: ReplaceSettings) -> StackReplacement:
        return cls(
            declared_stacks=frozenset(settings.scope_stack_names),
            replaceable_tag_value=settings.replaceable_stack_tag_value,
            operator_role_arn=settings.replacement_stack_role_arn,
            parameter=settings.replacement_parameter,
        )


class ReplaceRequest(InstancePlace):
    """What the state machine passes to the Replace function."""

    model_config = ConfigDict(extra="ignore")

    action: Literal["start", "check"]
    incident_id: str = Field(min_length=1)
    instance_id: str = Field(min_length=1)
    replacement: dict[str, Any] = Field(default_factory=dict)
    max_polls: int | None = None


@dataclass(frozen=True)
class ReplacementHealth:
    """What the owner reports now; reading it changes nothing (Nuke re-checks with it)."""

    healthy: bool
    replacement_instance_ids: list[str] = field(default_factory=list)
    reason: str = ""


def _tags(resource: Mapping[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in resource.get("Tags", []) if "Key" in t}


def _remembered_asg(incident: Incident) -> str | None:
    # The Contain step detached the instance, and EC2 drops the group tag on detach: the ledger
    # is where the membership survives.
    sources: list[Any] = [incident.prior_state or {}, incident.details.get("contained") or {}]
    for source in sources:
        if not isinstance(source, dict):
            continue
        for key in _ASG_KEYS:
            value = source.get(key)
            if isinstance(value, str) and value:
                return value
            if isinstance(value, dict) and isinstance(value.get("name"), str):
                return str(value["name"])
    return None


def _current_asg(clients: Clients, instance_id: str) -> str | None:
    try:
        response = clients.autoscaling.describe_auto_scaling_instances(InstanceIds=[instance_id])
    except ClientError as exc:
        raise AwsCallFailed(f"cannot read Auto Scaling membership of {instance_id}: {exc}") from exc
    for member in response.get("AutoScalingInstances", []):
        return member["AutoScalingGroupName"]
    return None


def _describe_group(clients: Clients, asg_name: str) -> dict[str, Any]:
    try:
        groups = clients.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[asg_name])
    except ClientError as exc:
        raise AwsCallFailed(f"cannot describe Auto Scaling group {asg_name}: {exc}") from exc
    for group in groups.get("AutoScalingGroups", []):
        return dict(group)
    raise ReplacementFailed(f"Auto Scaling group {asg_name} does not exist; it cannot replace the instance")


def _describe_stack(clients: Clients, stack_name: str) -> dict[str, Any]:
    try:
        stacks = clients.cloudformation.describe_stacks(StackName=stack_name)["Stacks"]
    except ClientError as exc:
        if "does not exist" in str(exc):
            raise ReplacementFailed(
                f"stack {stack_name} does not exist; it cannot replace the instance"
            ) from exc
        raise AwsCallFailed(f"cannot describe stack {stack_name}: {exc}") from exc
    if not stacks:
        raise ReplacementFailed(f"stack {stack_name} does not exist; it cannot replace the instance")
    return dict(stacks[0])


def _physical_id(clients: Clients, stack: str, logical_id: str) -> str:
    try:
        detail = clients.cloudformation.describe_stack_resource(StackName=stack, LogicalResourceId=logical_id)
    except ClientError as exc:
        raise AwsCallFailed(f"cannot read resource {logical_id} of stack {stack}: {exc}") from exc
    return str(detail["StackResourceDetail"].get("PhysicalResourceId", ""))


def _instance_running(clients: Clients, instance_id: str) -> bool:
    try:
        instance = describe_instance(clients.ec2, instance_id)
    except InstanceNotFound:
        return False
    return bool(instance.get("State", {}).get("Name") == "running")


def _start_asg(clients: Clients, asg_name: str) -> dict[str, Any]:
    group = _describe_group(clients, asg_name)
    return {
        "strategy": STRATEGY_ASG,
        "asg_name": asg_name,
        "desired_capacity": int(group.get("DesiredCapacity", 0)),
        "polls": 0,
        "healthy": False,
        "replacement_instance_ids": [],
    }


def _bumped_parameters(stack: Mapping[str, Any], parameter: str) -> tuple[list[ParameterTypeDef], str, str]:
    parameters = list(stack.get("Parameters", []))
    current = next((p for p in parameters if p.get("ParameterKey") == parameter), None)
    if current is None:
        raise ReplacementFailed(
            f"stack {stack['StackName']} has no parameter {parameter}: add it to the instance's definition, "
            "feeding a property whose change replaces the instance (or name another one in the guard's "
            "ReplacementParameter)"
        )
    old_value = str(current.get("ParameterValue", ""))
    try:
        new_value = str(int(old_value or "0") + 1)
    except ValueError as exc:
        raise ReplacementFailed(
            f"parameter {parameter} of stack {stack['StackName']} is {old_value!r}, not an integer"
        ) from exc
    request: list[ParameterTypeDef] = [
        {"ParameterKey": parameter, "ParameterValue": new_value}
        if p.get("ParameterKey") == parameter
        else {"ParameterKey": p["ParameterKey"], "UsePreviousValue": True}
        for p in parameters
    ]
    return request, old_value, new_value


def _declared(stack: Mapping[str, Any], config: StackReplacement) -> bool:
    if stack.get("StackName") in config.declared_stacks:
        return True
    value = config.replaceable_tag_value
    return value is not None and _tags(stack).get(REPLACEABLE_STACK_TAG) == value


def stack_refusal(
    stack: Mapping[str, Any], instance_tags: Mapping[str, str], config: StackReplacement
) -> str:
    """Why Replace must not update this stack ("" when it may): the reason the alert gives a person."""
    name = stack.get("StackName")
    asked = instance_tags.get(REPLACEMENT_PARAMETER_TAG)
    if asked is not None and asked != config.parameter:
        return (
            f"the instance's tag {REPLACEMENT_PARAMETER_TAG}={asked!r} names another parameter than the "
            f"configured {config.parameter}: refused, since whoever can tag a server would choose what the "
            f"update of stack {name} changes"
        )
    if not _declared(stack, config):
        tagged = (
            f"tag it {REPLACEABLE_STACK_TAG}={config.replaceable_tag_value}"
            if config.replaceable_tag_value
            else f"set ReplaceableStackTagValue and tag it {REPLACEABLE_STACK_TAG}"
        )
        return f"stack {name} is not declared replaceable: list it in ScopeStackNames, or {tagged}"
    if not stack.get("RoleARN") and not config.operator_role_arn:
        return (
            f"stack {name} has no service role; Replace's own credentials cannot update it: give the stack "
            "a service role (update it once with a role), or name one in ReplacementStackRoleArn"
        )
    return ""


def _start_stack(
    clients: Clients,
    ledger: IncidentLedger,
    incident: Incident,
    instance_id: str,
    stack: Mapping[str, Any],
    logical_id: str,
    config: StackReplacement,
) -> dict[str, Any]:
    stack_name = str(stack.get("StackName"))
    stack_id = str(stack.get("StackId", stack_name))
    parameter = config.parameter
    current_values = {
        p.get("ParameterKey"): str(p.get("ParameterValue", "")) for p in stack.get("Parameters", [])
    }
    previous = incident.details.get(STAGE_REPLACEMENT_STARTED)
    if (
        isinstance(previous, dict)
        and previous.get("strategy") == STRATEGY_STACK
        and previous.get("stack_id") == stack_id
        and current_values.get(parameter) == previous.get("generation")
    ):
        # A retried start: our update was already accepted; a second bump would replace twice.
        return {**previous, "polls": 0, "healthy": False}

    request, old_value, new_value = _bumped_parameters(stack, parameter)
    # The stack's own service role is used by leaving RoleARN out: CloudFormation then uses the role
    # associated with the stack, and nothing is passed, so no iam:PassRole is needed ("If you don't
    # specify a value, CloudFormation uses the role that was previously associated with the stack",
    # https://docs.aws.amazon.com/AWSCloudFormation/latest/APIReference/API_UpdateStack.html). Only a
    # stack without one gets the operator's role, passed explicitly; it becomes the stack's role.
    own_role = stack.get("RoleARN")
    passed_role = None if own_role else config.operator_role_arn
    result: dict[str, Any] = {
        "strategy": STRATEGY_STACK,
        "stack_name": stack_name,
        "stack_id": stack_id,
        "logical_id": logical_id,
        "parameter": parameter,
        "previous_generation": old_value,
        "generation": new_value,
        "service_role": own_role or passed_role,
        "service_role_source": "stack" if own_role else "operator",
        "polls": 0,
        "healthy": False,
        "replacement_instance_ids": [],
    }
    # Intent first: if we die after UpdateStack, the retry sees the bumped value and does not bump again.
    ledger.record_stage(incident.incident_id, STAGE_REPLACEMENT_STARTED, details=result)
    role: dict[str, Any] = {"RoleARN": passed_role} if passed_role else {}
    try:
        clients.cloudformation.update_stack(
            StackName=stack_id,
            UsePreviousTemplate=True,
            Parameters=request,
            Capabilities=list(stack.get("Capabilities", [])),
            ClientRequestToken=f"immutable-guard-{incident.incident_id}-{new_value}"[:128],
            **role,
        )
    except ClientError as exc:
        if _NO_UPDATES in str(exc) and _physical_id(clients, stack_id, logical_id) not in ("", instance_id):
            result["already_replaced"] = True
            return result
        if _NO_UPDATES in str(exc):
            raise ReplacementFailed(
                f"updating parameter {parameter} of stack {stack_name} changes nothing: "
                f"{logical_id} must depend on it to be replaced"
            ) from exc
        raise ReplacementFailed(f"cannot update stack {stack_name} to replace {instance_id}: {exc}") from exc
    return result


def _manual(reason: str, **owner: Any) -> dict[str, Any]:
    return {
        "strategy": STRATEGY_MANUAL,
        "reason": reason,
        **owner,
        "polls": 0,
        "healthy": False,
        "replacement_instance_ids": [],
    }


def _verify_launch_source(
    clients: Clients, incident: Incident, asg_name: str | None, tags: Mapping[str, str]
) -> None:
    recorded = (incident.prior_state or {}).get(LAUNCH_SOURCE_KEY)
    try:
        verify_launch_source(clients, incident.incident_id, recorded, asg_name, tags)
    except (ClientError, BotoCoreError) as exc:
        raise AwsCallFailed(
            f"cannot read the launch source of incident {incident.incident_id}: {exc}"
        ) from exc


def start_replacement(
    clients: Clients,
    ledger: IncidentLedger,
    incident_id: str,
    instance_id: str,
    stacks: StackReplacement | None = None,
) -> dict[str, Any]:
    """Ask the instance's owner for a fresh instance.

    The owner is, in order: the Auto Scaling group the Contain step took it out of (from the ledger,
    the group tag, or current membership); the CloudFormation stack that created it (tags
    ``aws:cloudformation:stack-name`` and ``aws:cloudformation:logical-id``, which only CloudFormation
    can set: the stack is updated with its previous template and the configured parameter bumped);
    otherwise nobody (``manual``). A stack that cannot be updated safely (see `stack_refusal`) is
    ``manual`` too, with the reason.

    Parameters
    ----------
    stacks:
        Which stacks may be updated, as whom, bumping what; nothing is declared when omitted.

    Returns
    -------
    dict
        ``{"strategy", "polls": 0, "healthy": False, ...owner fields}``; ``"reason"`` when manual.

    Raises
    ------
    ReplacementFailed
        The owner cannot replace it (group or stack gone, replacement parameter missing, update refused).
    LaunchTemplateChanged
        What the owner would launch (launch template, the version $Latest / $Default resolve to, launch
        configuration) differs from what Contain recorded when the incident opened.
    """
    config = stacks or StackReplacement()
    incident = ledger.get(incident_id)
    instance = describe_instance(clients.ec2, instance_id)
    tags = _tags(instance)
    asg_name = _remembered_asg(incident) or tags.get(ASG_NAME_TAG) or _current_asg(clients, instance_id)
    if asg_name or (tags.get(STACK_NAME_TAG) and tags.get(LOGICAL_ID_TAG)):
        # Before the owner launches anything: not from a golden image changed since the incident opened.
        _verify_launch_source(clients, incident, asg_name, tags)
    if asg_name:
        result = _start_asg(clients, asg_name)
    elif tags.get(STACK_NAME_TAG) and tags.get(LOGICAL_ID_TAG):
        stack = _describe_stack(clients, tags[STACK_NAME_TAG])
        refusal = stack_refusal(stack, tags, config)
        if refusal:
            result = _manual(refusal, stack_name=stack.get("StackName"), logical_id=tags[LOGICAL_ID_TAG])
        else:
            result = _start_stack(clients, ledger, incident, instance_id, stack, tags[LOGICAL_ID_TAG], config)
    else:
        result = _manual("no Auto Scaling group or CloudFormation stack owns this server")
    ledger.record_stage(incident_id, STAGE_REPLACEMENT_STARTED, details=result)
    return result


def replacement_health(
    clients: Clients, instance_id: str, replacement: Mapping[str, Any]
) -> ReplacementHealth:
    """Read the replacement's health now, without side effects.

    Raises
    ------
    ReplacementFailed
        The stack rolled back or failed.
    """
    strategy = replacement.get("strategy")
    if strategy == STRATEGY_ASG:
        group = _describe_group(clients, str(replacement["asg_name"]))
        healthy_ids = sorted(
            member["InstanceId"]
            for member in group.get("Instances", [])
            if member.get("LifecycleState") == "InService"
            and member.get("HealthStatus") == "Healthy"
            and member["InstanceId"] != instance_id
        )
        # A group scaled to zero replaces nothing: require at least one fresh instance.
        wanted = max(int(group.get("DesiredCapacity", 0)), 1)
        return ReplacementHealth(
            healthy=len(healthy_ids) >= wanted,
            replacement_instance_ids=healthy_ids,
            reason=f"{len(healthy_ids)} of {wanted} instances in service and healthy",
        )
    if strategy == STRATEGY_STACK:
        stack_id = str(replacement.get("stack_id") or replacement["stack_name"])
        status = str(_describe_stack(clients, stack_id).get("StackStatus", ""))
        if "ROLLBACK" in status or "FAILED" in status:
            hint = "" if replacement.get("service_role") else " (the stack has no service role)"
            raise ReplacementFailed(f"stack {replacement.get('stack_name')} is {status}{hint}")
        if status != "UPDATE_COMPLETE":
            return ReplacementHealth(healthy=False, reason=f"stack is {status}")
        physical = _physical_id(clients, stack_id, str(replacement["logical_id"]))
        if physical in ("", instance_id):
            return ReplacementHealth(
                healthy=False, reason=f"{replacement['logical_id']} is still {instance_id}"
            )
        if not _instance_running(clients, physical):
            return ReplacementHealth(healthy=False, reason=f"replacement {physical} is not running")
        return ReplacementHealth(
            healthy=True, replacement_instance_ids=[physical], reason=f"replaced by {physical}"
        )
    why = str(replacement.get("reason") or "nobody owns the instance")
    return ReplacementHealth(healthy=False, reason=f"{why}: a person must replace it")


def check_replacement(
    clients: Clients,
    ledger: IncidentLedger,
    incident_id: str,
    instance_id: str,
    replacement: Mapping[str, Any],
    max_polls: int,
) -> dict[str, Any]:
    """Poll the replacement once.

    Returns
    -------
    dict
        The start result with ``healthy``, ``replacement_instance_ids`` and ``polls`` + 1.

    Raises
    ------
    ReplacementFailed
        The stack rolled back or failed, or this was poll number ``max_polls`` and it is still unhealthy.
    """
    health = replacement_health(clients, instance_id, replacement)
    result = {
        **replacement,
        "polls": int(replacement.get("polls", 0)) + 1,
        "healthy": health.healthy,
        "replacement_instance_ids": health.replacement_instance_ids,
        "reason": health.reason,
    }
    if health.healthy:
        ledger.record_stage(incident_id, STAGE_REPLACED, status=Status.REPLACED, details=result)
        return result
    if result["polls"] >= max_polls:
        raise ReplacementFailed(
            f"replacement of {instance_id} ({replacement.get('strategy')}) not healthy after "
            f"{result['polls']} polls: {health.reason}"
        )
    return result
