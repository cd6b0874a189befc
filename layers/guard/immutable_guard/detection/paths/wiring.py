"""The guard's own wiring: its EventBridge rules, its functions, the Config recorder and the trail it
listens through, and its alert topic. Changing one by hand can blind the guard: `detection_disabled`."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Final

from immutable_guard.detection.events import quote
from immutable_guard.detection.readers import (
    GUARD_WIRING_EVIDENCE_KEY,
    Facts,
    Handler,
    as_dict,
    clip,
    first_of,
    int_of,
    items_of,
    strings_of,
    text_of,
)
from immutable_guard.detection.scope_resolvers import Resolver
from immutable_guard.model import Kind, Severity
from immutable_guard.settings import GuardIdentity

if TYPE_CHECKING:
    from immutable_guard.detection.events import CloudTrailDetail

_EVENTS: Final = "events.amazonaws.com"
_LAMBDA: Final = "lambda.amazonaws.com"
_CONFIG: Final = "config.amazonaws.com"
_CLOUDTRAIL: Final = "cloudtrail.amazonaws.com"
_SNS: Final = "sns.amazonaws.com"

# The Config item types Detect judges; a recorder that stops recording one hides those changes.
WATCHED_CONFIG_TYPES: Final = (
    "AWS::EC2::Instance",
    "AWS::EC2::SecurityGroup",
    "AWS::EC2::NetworkInterface",
    "AWS::EC2::Volume",
    "AWS::EC2::EIP",
    "AWS::SSM::ManagedInstanceInventory",
)

# arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER] and the partial ACCOUNT:function:NAME.
_FUNCTION_IN_ARN: Final = re.compile(r"(?:^|:)function:(?P<name>[^:]+)")


def guard_identity() -> GuardIdentity:
    """The guard's own names, as the Detect function's environment gives them."""
    return GuardIdentity.from_env()


def is_guard_resource(name: str | None, identity: GuardIdentity) -> bool:
    """Whether a rule or function name is one CloudFormation generated for the guard's stack.

    CloudFormation names them "<stack name>-<LogicalId>-<suffix>" (SAM's rules of DetectFunction are
    "<stack name>-DetectFunction<Event>-<suffix>"); the local runtime names them the same way.
    """
    return bool(name) and str(name).startswith(f"{identity.guard_stack_name}-")


def function_name(value: object) -> str | None:
    """A Lambda function's name from a name, a name with a qualifier, a full ARN or a partial ARN."""
    text = text_of(value)
    if text is None:
        return None
    match = _FUNCTION_IN_ARN.search(text)
    return match["name"] if match else text.split(":", 1)[0] or None


def _on_default_bus(request: dict[str, Any]) -> bool:
    bus = text_of(first_of(request, "eventBusName", "EventBusName"))
    return bus is None or bus == "default" or bus.endswith(":event-bus/default")


def _wiring(
    touched: bool, severity: Severity, summary: str, resource: str | None, evidence: dict[str, Any]
) -> Facts:
    """A detection_disabled finding; `touched` False says the call left the guard's wiring alone."""
    return Facts(
        Kind.DETECTION_DISABLED,
        severity if touched else Severity.LOW,
        summary,
        resource_ids=[resource],
        evidence={**evidence, GUARD_WIRING_EVIDENCE_KEY: touched},
    )


# ---------------------------------------------------------------- EventBridge rules

_RULE_VERBS: Final = {
    "DisableRule": "disabled",
    "DeleteRule": "deleted",
    "PutRule": "changed (pattern or state)",
    "PutTargets": "retargeted",
    "RemoveTargets": "stripped of targets",
}


def _event_rule(detail: CloudTrailDetail) -> Facts:
    request = detail.request_parameters or {}
    name = detail.event_name
    # PutTargets and RemoveTargets name the rule "rule"; the others "name".
    rule = text_of(first_of(request, "rule", "Rule", "name", "Name"))
    ours = _on_default_bus(request) and is_guard_resource(rule, guard_identity())
    evidence: dict[str, Any] = {"sensor": "EventBridge rule", "target": clip(rule)}
    if name == "PutRule":
        evidence["state"] = clip(text_of(first_of(request, "state", "State")))
        evidence["event_pattern"] = clip(text_of(first_of(request, "eventPattern", "EventPattern")))
    elif name == "PutTargets":
        evidence["targets"] = clip(
            [
                text_of(first_of(as_dict(t), "arn", "Arn"))
                for t in items_of(first_of(request, "targets", "Targets"))
            ]
        )
    elif name == "RemoveTargets":
        evidence["target_ids"] = clip(strings_of(first_of(request, "ids", "Ids")))
    outcome = (
        "the events it delivers to Detect may no longer arrive."
        if ours
        else "it is not one of Immutable Guard's rules."
    )
    return _wiring(
        ours,
        Severity.CRITICAL,
        f"EventBridge rule {quote(rule or '?')} {_RULE_VERBS[name]}: {outcome}",
        rule,
        evidence,
    )


# ---------------------------------------------------------------- Lambda functions

# CloudTrail names Lambda calls with their API version (Lambda developer guide, "Logging AWS Lambda API
# calls using AWS CloudTrail").
_FUNCTION_VERBS: Final = {
    "UpdateFunctionConfiguration20150331v2": "reconfigured (its environment, role or layers)",
    "UpdateFunctionCode20150331v2": "given new code",
    "PutFunctionConcurrency20171031": "throttled",
    "DeleteFunction20150331": "deleted",
    "RemovePermission20150331v2": "stripped of an invoke permission",
}


def _function_change(detail: CloudTrailDetail) -> Facts:
    request = detail.request_parameters or {}
    response = detail.response_elements or {}
    name = function_name(first_of(request, "functionName", "FunctionName")) or function_name(
        first_of(response, "functionName", "functionArn")
    )
    ours = is_guard_resource(name, guard_identity())
    verb = _FUNCTION_VERBS[detail.event_name]
    severity = Severity.CRITICAL
    evidence: dict[str, Any] = {"sensor": "Lambda function", "target": clip(name)}
    if detail.event_name.startswith("PutFunctionConcurrency"):
        reserved = int_of(first_of(request, "reservedConcurrentExecutions", "ReservedConcurrentExecutions"))
        evidence["reserved_concurrency"] = reserved
        # Zero switches the function off; a small number only throttles it.
        if reserved == 0:
            verb = "switched off (reserved concurrency 0)"
        else:
            severity = Severity.HIGH
            verb = f"throttled to {reserved if reserved is not None else '?'} concurrent runs"
    elif detail.event_name.startswith("UpdateFunctionConfiguration"):
        # CloudTrail omits the environment; the keys present say what else was set.
        evidence["changed"] = clip(sorted(key for key in request if key.lower() != "functionname"))
    elif detail.event_name.startswith("RemovePermission"):
        evidence["statement_id"] = clip(text_of(first_of(request, "statementId", "StatementId")))
    outcome = "detection or remediation may stop." if ours else "it is not one of Immutable Guard's."
    return _wiring(
        ours,
        severity,
        f"Lambda function {quote(name or '?')} {verb}: {outcome}",
        name,
        evidence,
    )


# ---------------------------------------------------------------- Config recorder and trail


def _missing_types(group: dict[str, Any]) -> list[str]:
    """The watched types a recording group leaves out."""
    excluded = set(
        strings_of(first_of(as_dict(first_of(group, "exclusionByResourceTypes")), "resourceTypes"))
    )
    strategy = text_of(first_of(as_dict(first_of(group, "recordingStrategy")), "useOnly")) or ""
    if first_of(group, "allSupported", "AllSupported") is True or strategy == "EXCLUSION_BY_RESOURCE_TYPES":
        return [t for t in WATCHED_CONFIG_TYPES if t in excluded]
    recorded = set(strings_of(first_of(group, "resourceTypes", "ResourceTypes")))
    return [t for t in WATCHED_CONFIG_TYPES if t not in recorded or t in excluded]


def _put_configuration_recorder(detail: CloudTrailDetail) -> Facts:
    request = detail.request_parameters or {}
    recorder = as_dict(first_of(request, "configurationRecorder", "ConfigurationRecorder"))
    name = text_of(first_of(recorder, "name", "Name"))
    group = as_dict(first_of(recorder, "recordingGroup", "RecordingGroup"))
    mode = as_dict(first_of(recorder, "recordingMode", "RecordingMode"))
    frequency = text_of(first_of(mode, "recordingFrequency", "RecordingFrequency"))
    # A request without a recording group records everything (Config's default).
    missing = _missing_types(group) if group else []
    daily = (frequency or "").upper() == "DAILY"
    evidence = {
        "sensor": "Config recorder",
        "target": clip(name),
        "unrecorded_types": missing,
        "recording_frequency": clip(frequency),
    }
    if missing:
        return _wiring(
            True,
            Severity.CRITICAL,
            f"Config recorder {quote(name or '?')} no longer records {', '.join(missing)}: changes to "
            "them no longer reach Immutable Guard.",
            name,
            evidence,
        )
    if daily:
        return _wiring(
            True,
            Severity.HIGH,
            f"Config recorder {quote(name or '?')} set to record once a day: changes reach Immutable "
            "Guard up to a day late.",
            name,
            evidence,
        )
    return _wiring(
        False,
        Severity.MEDIUM,
        f"Config recorder {quote(name or '?')} updated; it still records every type Immutable Guard "
        "watches, continuously.",
        name,
        evidence,
    )


def _is_false(value: object) -> bool:
    return value is False or (isinstance(value, str) and value.lower() == "false")


def _update_trail(detail: CloudTrailDetail) -> Facts:
    request = detail.request_parameters or {}
    name = text_of(first_of(request, "name", "Name"))
    # A single-region trail leaves the other regions' calls unrecorded; without global service events
    # the IAM calls (recorded in us-east-1) are lost.
    blinding = [
        setting
        for setting in ("isMultiRegionTrail", "includeGlobalServiceEvents")
        if _is_false(first_of(request, setting, setting[:1].upper() + setting[1:]))
    ]
    evidence = {"sensor": "trail", "target": clip(name), "switched_off": blinding}
    if blinding:
        return _wiring(
            True,
            Severity.CRITICAL,
            f"Trail {quote(name or '?')} updated with {', '.join(f'{s}=false' for s in blinding)}: "
            "calls Immutable Guard watches may no longer be recorded.",
            name,
            evidence,
        )
    return _wiring(
        False,
        Severity.MEDIUM,
        f"Trail {quote(name or '?')} updated without narrowing what it records.",
        name,
        evidence,
    )


# ---------------------------------------------------------------- the alert topic

# What each call does to the alert topic (or one of its subscriptions), and how bad that is: without
# the topic nobody hears of an incident; a subscription gone or filtered silences one reader.
_TOPIC_CALLS: Final = {
    "DeleteTopic": ("deleted", Severity.CRITICAL),
    "SetTopicAttributes": ("changed", Severity.HIGH),
    "Unsubscribe": ("lost a subscription", Severity.HIGH),
    "SetSubscriptionAttributes": ("had a subscription changed", Severity.HIGH),
}


def _topic_name(arn: str | None) -> str | None:
    """The topic of a topic ARN (…:TOPIC) or a subscription ARN (…:TOPIC:SUBSCRIPTION-ID)."""
    parts = (arn or "").split(":")
    return parts[5] if len(parts) > 5 and parts[0] == "arn" and parts[2] == "sns" else None


def _alert_topic_change(detail: CloudTrailDetail) -> Facts:
    request = detail.request_parameters or {}
    arn = text_of(first_of(request, "topicArn", "TopicArn", "subscriptionArn", "SubscriptionArn"))
    topic = _topic_name(arn)
    ours = is_guard_resource(topic, guard_identity())
    verb, severity = _TOPIC_CALLS[detail.event_name]
    attribute = text_of(first_of(request, "attributeName", "AttributeName"))
    outcome = "its alerts may no longer reach anyone." if ours else "it is not Immutable Guard's alert topic."
    return _wiring(
        ours,
        severity,
        f"Topic {quote(topic or '?')} {verb}{f' ({attribute})' if attribute else ''}: {outcome}",
        arn,
        {"sensor": "alert topic", "target": clip(topic), "attribute": clip(attribute)},
    )


HANDLERS: Final[dict[tuple[str, str], Handler]] = {
    **{(_EVENTS, name): _event_rule for name in _RULE_VERBS},
    **{(_LAMBDA, name): _function_change for name in _FUNCTION_VERBS},
    (_CONFIG, "PutConfigurationRecorder"): _put_configuration_recorder,
    (_CLOUDTRAIL, "UpdateTrail"): _update_trail,
    **{(_SNS, name): _alert_topic_change for name in _TOPIC_CALLS},
}
"""(eventSource, eventName) -> handler, for the CloudTrail records of this path."""

RESOLVERS: Final[tuple[Resolver, ...]] = ()
"""The guard's wiring reaches no instance: these findings are alerts about the account."""
