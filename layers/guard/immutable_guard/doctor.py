"""`immutable-guard doctor`: proves the guard is not blind. Detection rests on things outside our functions
(a logging trail, a Config recorder, SSM Inventory, enabled rules, someone reading the alerts); each check
says pass, warn or fail, and how to fix it."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import cached_property
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from immutable_guard.clients import Clients
from immutable_guard.errors import AwsCallFailed
from immutable_guard.ledger import IncidentLedger
from immutable_guard.stack import read_stack

if TYPE_CHECKING:
    from immutable_guard.local.deploy import Deployment

# The Config types the ConfigItemChanged rules listen to; without them those rules never fire.
REQUIRED_CONFIG_TYPES = (
    "AWS::EC2::SecurityGroup",
    "AWS::EC2::Instance",
    "AWS::SSM::ManagedInstanceInventory",
)
# Without these some changes are seen from CloudTrail only: file changes reported as FileData, and the
# interface, network ACL, volume and Elastic IP items that report a change with no actor.
OPTIONAL_CONFIG_TYPES = (
    "AWS::SSM::FileData",
    "AWS::EC2::NetworkInterface",
    "AWS::EC2::NetworkAcl",
    "AWS::EC2::Volume",
    "AWS::EC2::EIP",
)
INVENTORY_DOCUMENT = "AWS-GatherSoftwareInventory"
# IAM is global: its CloudTrail events reach EventBridge in this region only.
IAM_EVENTS_REGION = "us-east-1"
FORWARDER_TEMPLATE = "iam-events-forwarder.yaml"
FAILED_EXECUTION_WINDOW = timedelta(days=1)
# Per-instance SSM calls stop here; the summary says when the fleet was larger.
MAX_INSTANCES_INSPECTED = 100
DOCS = "docs/operations.md"

# What doctor calls, for the IAM policy of whoever runs it (docs/operations.md lists it).
DOCTOR_PERMISSIONS = frozenset(
    {
        "cloudformation:DescribeStacks",
        "cloudformation:ListStackResources",
        "cloudtrail:DescribeTrails",
        "cloudtrail:GetTrailStatus",
        "cloudtrail:GetEventSelectors",
        "config:DescribeConfigurationRecorders",
        "config:DescribeConfigurationRecorderStatus",
        "config:DescribeDeliveryChannels",
        "ec2:DescribeInstances",
        "ssm:DescribeInstanceInformation",
        "ssm:DescribeInstanceAssociationsStatus",
        "ssm:ListAssociations",
        "events:DescribeRule",
        "events:ListTargetsByRule",
        "events:ListRuleNamesByTarget",
        "sts:GetCallerIdentity",
        "lambda:GetFunctionConfiguration",
        "lambda:GetPolicy",
        "sns:ListSubscriptionsByTopic",
        "sns:GetSubscriptionAttributes",
        "sqs:GetQueueAttributes",
        "states:ListExecutions",
        "dynamodb:GetItem",
        "cloudwatch:DescribeAlarms",
    }
)


class Verdict(StrEnum):
    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check: what was found, and what to do about it."""

    check: str
    verdict: Verdict
    summary: str
    fix: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "verdict": self.verdict.value,
            "summary": self.summary,
            "fix": self.fix,
            "details": self.details,
        }


@dataclass(frozen=True)
class StackView:
    """One deployment of template.yaml as doctor sees it, whichever way it was found.

    Attributes
    ----------
    physical_ids:
        Logical id (of the SAM-translated template) -> physical id, as ``Ref`` returns it.
    resource_types:
        Logical id -> CloudFormation type.
    parameters:
        Template parameters in force.
    routed_by_runtime:
        Rule logical id -> logical ids of the functions the template makes it target. Set only where
        the rules carry no Lambda targets because the runtime delivers events itself (the local runtime:
        moto's EventBridge cannot invoke Lambda); ``None`` for a real stack, whose targets are read.
    not_deployed:
        Logical id -> why the runtime did not create it (the local runtime skips unsupported types).
    """

    name: str
    region: str
    physical_ids: Mapping[str, str]
    resource_types: Mapping[str, str]
    parameters: Mapping[str, str]
    routed_by_runtime: Mapping[str, tuple[str, ...]] | None = None
    not_deployed: Mapping[str, str] = field(default_factory=dict)

    @property
    def local(self) -> bool:
        return self.routed_by_runtime is not None

    def physical(self, logical_id: str) -> str | None:
        return self.physical_ids.get(logical_id)

    def of_type(self, resource_type: str) -> dict[str, str]:
        return {
            logical: self.physical_ids[logical]
            for logical, kind in sorted(self.resource_types.items())
            if kind == resource_type and logical in self.physical_ids
        }

    def required(self, logical_id: str) -> str:
        physical = self.physical(logical_id)
        if physical is None:
            reason = self.not_deployed.get(logical_id, "not in the stack")
            raise MissingResource(f"{logical_id} of stack {self.name}: {reason}")
        return physical


class MissingResource(Exception):
    """A resource a check needs is not in the stack (never deployed, or deleted)."""


class DoctorClients(Clients):
    """`Clients` plus the services only doctor reads."""

    @cached_property
    def cloudtrail(self) -> Any:
        return self._client("cloudtrail")

    @cached_property
    def config(self) -> Any:
        return self._client("config")

    @cached_property
    def ssm(self) -> Any:
        return self._client("ssm")

    @cached_property
    def events(self) -> Any:
        return self._client("events")

    @cached_property
    def events_of_iam_region(self) -> Any:
        """EventBridge where IAM's CloudTrail events arrive (IAM is global: us-east-1 only)."""
        return self._session.client("events", region_name=IAM_EVENTS_REGION)


# ---------------------------------------------------------------------------- finding the stack
def stack_view_from_cloudformation(cloudformation: Any, stack_name: str, region: str) -> StackView:
    """Read a deployed stack's parameters and resources from CloudFormation."""
    parameters = read_stack(cloudformation, stack_name, region).parameters
    try:
        pages = cloudformation.get_paginator("list_stack_resources").paginate(StackName=stack_name)
        summaries = [s for page in pages for s in page["StackResourceSummaries"]]
    except ClientError as exc:
        raise AwsCallFailed(f"cannot list the resources of stack {stack_name} in {region}: {exc}") from exc
    live = [s for s in summaries if s.get("PhysicalResourceId") and s["ResourceStatus"] != "DELETE_COMPLETE"]
    return StackView(
        name=stack_name,
        region=region,
        physical_ids={s["LogicalResourceId"]: s["PhysicalResourceId"] for s in live},
        resource_types={s["LogicalResourceId"]: s["ResourceType"] for s in summaries},
        parameters=parameters,
    )


def stack_view_from_deployment(deployment: Deployment) -> StackView:
    """The local runtime's deployment: rules there carry no Lambda targets, the runtime routes events."""
    routed = {
        logical: _template_targets(resource)
        for logical, resource in deployment.resources.items()
        if resource.get("Type") == "AWS::Events::Rule"
    }
    return StackView(
        name=deployment.stack_name,
        region=deployment.region,
        physical_ids={k: str(v) for k, v in deployment.physical_ids.items()},
        resource_types=dict(deployment.resource_types),
        parameters=dict(deployment.parameters),
        routed_by_runtime=routed,
        not_deployed={s.logical_id: f"not deployed: {s.reason}" for s in deployment.skipped},
    )


def _template_targets(rule: Mapping[str, Any]) -> tuple[str, ...]:
    targets = []
    for target in (rule.get("Properties") or {}).get("Targets") or []:
        arn = target.get("Arn")
        if isinstance(arn, dict) and "Fn::GetAtt" in arn:
            targets.append(str(arn["Fn::GetAtt"][0]))
        elif isinstance(arn, dict) and "Ref" in arn:
            targets.append(str(arn["Ref"]))
    return tuple(targets)


# ---------------------------------------------------------------------------- checks
def check_trail(clients: DoctorClients, stack: StackView) -> CheckResult:
    """A trail logs this region's write management events, ideally from every region."""
    cloudtrail = clients.cloudtrail
    own = stack.physical("Trail")
    trails = cloudtrail.describe_trails(includeShadowTrails=True).get("trailList", [])
    seen: list[dict[str, Any]] = []
    for trail in trails:
        status = cloudtrail.get_trail_status(Name=trail["TrailARN"])
        seen.append(
            {
                "name": trail["Name"],
                "arn": trail["TrailARN"],
                "logging": bool(status.get("IsLogging")),
                "multi_region": bool(trail.get("IsMultiRegionTrail")),
                "covers_region": bool(trail.get("IsMultiRegionTrail"))
                or trail.get("HomeRegion") == stack.region,
                "write_management_events": _logs_write_management_events(cloudtrail, trail),
                "log_file_validation": bool(trail.get("LogFileValidationEnabled")),
                "ours": own is not None and own in (trail["Name"], trail["TrailARN"]),
            }
        )
    details = {"trails": seen}
    ours = [t for t in seen if t["ours"]]
    if ours and not ours[0]["logging"]:
        name = ours[0]["name"]
        return CheckResult(
            "trail",
            Verdict.FAIL,
            f"this stack's trail {name} is STOPPED: someone stopped it, and detection may be blind",
            f"aws cloudtrail start-logging --name {name}; find who stopped it: aws cloudtrail lookup-events "
            "--lookup-attributes AttributeKey=EventName,AttributeValue=StopLogging",
            details,
        )
    useful = [t for t in seen if t["logging"] and t["covers_region"] and t["write_management_events"]]
    if not useful:
        missing = stack.not_deployed.get("Trail")
        return CheckResult(
            "trail",
            Verdict.FAIL,
            f"no trail logs write management events of {stack.region}: EventBridge sees no API call and "
            "nothing is detected" + (f" (the template's Trail: {missing})" if missing else ""),
            "deploy with CreateTrail=true, or start your trail: aws cloudtrail start-logging --name NAME",
            details,
        )
    multi = [t for t in useful if t["multi_region"]]
    if not multi:
        name = useful[0]["name"]
        return CheckResult(
            "trail",
            Verdict.WARN,
            f"trail {name} logs, but only in its home region",
            f"aws cloudtrail update-trail --name {name} --is-multi-region-trail",
            details,
        )
    return CheckResult(
        "trail",
        Verdict.PASS,
        f"trail {multi[0]['name']} is logging, multi-region, with write management events",
        details=details,
    )


def _logs_write_management_events(cloudtrail: Any, trail: Mapping[str, Any]) -> bool:
    try:
        selectors = cloudtrail.get_event_selectors(TrailName=trail["TrailARN"])
    except ClientError:
        return True  # an organization trail's selectors may be unreadable from a member account
    advanced = selectors.get("AdvancedEventSelectors") or []
    if advanced:
        for selector in advanced:
            fields = {f["Field"]: f for f in selector.get("FieldSelectors", [])}
            category = fields.get("eventCategory", {}).get("Equals", [])
            read_only = fields.get("readOnly", {}).get("Equals", [])
            if "Management" in category and "true" not in read_only:
                return True
        return False
    basic = selectors.get("EventSelectors")
    if not basic:  # a trail created without selectors logs all management events
        return True
    return any(
        s.get("IncludeManagementEvents", True) and s.get("ReadWriteType", "All") in ("All", "WriteOnly")
        for s in basic
    )


def check_config(clients: DoctorClients, stack: StackView) -> CheckResult:
    """A Config recorder is recording the types the Config rules listen to, with a delivery channel."""
    config = clients.config
    recorders = config.describe_configuration_recorders().get("ConfigurationRecorders", [])
    statuses = {
        s["name"]: s
        for s in config.describe_configuration_recorder_status().get("ConfigurationRecordersStatus", [])
    }
    channels = config.describe_delivery_channels().get("DeliveryChannels", [])
    if not recorders:
        missing = stack.not_deployed.get("ConfigRecorder")
        return CheckResult(
            "config",
            Verdict.FAIL,
            f"no AWS Config recorder in {stack.region}: security-group, instance and file changes are "
            "not reported" + (f" (the template's ConfigRecorder: {missing})" if missing else ""),
            "deploy with CreateConfigRecorder=true (a region allows one recorder), or create one recording "
            + ", ".join(REQUIRED_CONFIG_TYPES),
        )
    seen = []
    for recorder in recorders:
        recorded = _recorded_types(recorder.get("recordingGroup") or {})
        status = statuses.get(recorder["name"], {})
        seen.append(
            {
                "name": recorder["name"],
                "recording": bool(status.get("recording")),
                "last_status": status.get("lastStatus"),
                "last_error": status.get("lastErrorMessage"),
                "missing_types": [
                    t for t in REQUIRED_CONFIG_TYPES if recorded is not None and t not in recorded
                ],
                "missing_optional_types": [
                    t for t in OPTIONAL_CONFIG_TYPES if recorded is not None and t not in recorded
                ],
            }
        )
    details = {"recorders": seen, "delivery_channels": [c["name"] for c in channels]}
    best = sorted(seen, key=lambda r: (not r["recording"], len(r["missing_types"])))[0]
    name = best["name"]
    if not channels:
        return CheckResult(
            "config",
            Verdict.FAIL,
            f"recorder {name} has no delivery channel, so it cannot record",
            "deploy with CreateConfigRecorder=true, or: aws configservice put-delivery-channel ...",
            details,
        )
    if not best["recording"]:
        return CheckResult(
            "config",
            Verdict.FAIL,
            f"Config recorder {name} is STOPPED: configuration changes are not reported",
            f"aws configservice start-configuration-recorder --configuration-recorder-name {name}",
            details,
        )
    if best["missing_types"]:
        return CheckResult(
            "config",
            Verdict.FAIL,
            f"Config recorder {name} does not record {', '.join(best['missing_types'])}",
            f"add them to recorder {name}'s recording group (or record all supported types)",
            details,
        )
    if best["last_status"] == "Failure":
        return CheckResult(
            "config",
            Verdict.WARN,
            f"Config recorder {name} records, but its last delivery failed: {best['last_error']}",
            "check the delivery channel's bucket policy and the recorder's role",
            details,
        )
    if best["missing_optional_types"]:
        return CheckResult(
            "config",
            Verdict.WARN,
            f"Config recorder {name} records the required types but not "
            f"{', '.join(best['missing_optional_types'])}; changes reported under them are seen from "
            "CloudTrail only",
            f"add {', '.join(best['missing_optional_types'])} to recorder {name}'s recording group",
            details,
        )
    return CheckResult(
        "config",
        Verdict.PASS,
        f"Config recorder {name} is recording every type the rules need",
        details=details,
    )


def _recorded_types(group: Mapping[str, Any]) -> set[str] | None:
    """The types a recording group records; None when it records every supported type."""
    strategy = (group.get("recordingStrategy") or {}).get("useOnly")
    if strategy == "EXCLUSION_BY_RESOURCE_TYPES":
        excluded = set((group.get("exclusionByResourceTypes") or {}).get("resourceTypes", []))
        return {t for t in (*REQUIRED_CONFIG_TYPES, *OPTIONAL_CONFIG_TYPES) if t not in excluded}
    if group.get("allSupported"):
        return None
    return set(group.get("resourceTypes", []))


def check_inventory(clients: DoctorClients, stack: StackView) -> CheckResult:
    """SSM Inventory runs on every in-scope instance; names the instances with no SSM agent reporting."""
    tag_key = stack.parameters.get("ScopeTagKey", "immutable")
    tag_value = stack.parameters.get("ScopeTagValue", "true")
    instances = _running_instances(clients.ec2, tag_key, tag_value)
    details: dict[str, Any] = {"scope_tag": f"{tag_key}={tag_value}", "in_scope": instances}
    if not instances:
        return CheckResult(
            "inventory",
            Verdict.WARN,
            f"no running instance carries the scope tag {tag_key}={tag_value}: nothing is protected yet",
            f"tag your golden-image instances {tag_key}={tag_value} (or set ScopeTagKey / ScopeTagValue)",
            details,
        )
    inspected = instances[:MAX_INSTANCES_INSPECTED]
    try:
        online = _ssm_online(clients.ssm, inspected)
    except (NotImplementedError, ClientError) as exc:
        if not stack.local and isinstance(exc, ClientError):
            raise
        return CheckResult(
            "inventory",
            Verdict.WARN,
            f"cannot verify SSM Inventory on {len(instances)} in-scope instance(s) here: the local runtime "
            "(moto) implements no SSM agent, association or inventory API",
            "run doctor against a deployed stack (--stack) to check the agents and the association",
            details,
        )
    no_agent = [i for i in inspected if i not in online]
    association = stack.physical("InventoryAssociation")
    statuses = {i: _association_status(clients.ssm, i, association) for i in inspected if i in online}
    failed = sorted(i for i, s in statuses.items() if s == "Failed")
    not_targeted = sorted(i for i, s in statuses.items() if s is None)
    details.update(no_ssm_agent=no_agent, association=association, association_status=statuses)
    truncated = (
        f" (first {MAX_INSTANCES_INSPECTED} of {len(instances)} inspected)"
        if len(instances) > MAX_INSTANCES_INSPECTED
        else ""
    )
    if association is None and not any(statuses.values()) and not _inventory_association_exists(clients.ssm):
        return CheckResult(
            "inventory",
            Verdict.FAIL,
            "no SSM Inventory association exists: file changes are never seen",
            "deploy with CreateInventoryAssociation=true, or add the watched files to your own association",
            details,
        )
    if failed:
        return CheckResult(
            "inventory",
            Verdict.FAIL,
            f"inventory failed on {len(failed)} in-scope instance(s): {', '.join(failed)}{truncated}",
            "read the association's output: aws ssm describe-instance-associations-status --instance-id ID",
            details,
        )
    if no_agent or not_targeted:
        parts = []
        if no_agent:
            parts.append(f"no SSM agent reporting on {', '.join(no_agent)}")
        if not_targeted:
            parts.append(f"no inventory association on {', '.join(not_targeted)}")
        return CheckResult(
            "inventory",
            Verdict.WARN,
            "file changes are not seen there: " + "; ".join(parts) + truncated,
            "install and start the SSM agent, and give the instance profile AmazonSSMManagedInstanceCore",
            details,
        )
    return CheckResult(
        "inventory",
        Verdict.PASS,
        f"SSM Inventory runs on all {len(inspected)} in-scope instance(s){truncated}",
        details=details,
    )


def _running_instances(ec2: Any, tag_key: str, tag_value: str) -> list[str]:
    pages = ec2.get_paginator("describe_instances").paginate(
        Filters=[
            {"Name": f"tag:{tag_key}", "Values": [tag_value]},
            {"Name": "instance-state-name", "Values": ["pending", "running"]},
        ]
    )
    return sorted(i["InstanceId"] for page in pages for r in page["Reservations"] for i in r["Instances"])


def _ssm_online(ssm: Any, instance_ids: list[str]) -> set[str]:
    online: set[str] = set()
    for start in range(0, len(instance_ids), 50):  # the filter takes at most 50 values
        pages = ssm.get_paginator("describe_instance_information").paginate(
            Filters=[{"Key": "InstanceIds", "Values": instance_ids[start : start + 50]}]
        )
        for page in pages:
            online.update(
                i["InstanceId"] for i in page["InstanceInformationList"] if i.get("PingStatus") == "Online"
            )
    return online


def _association_status(ssm: Any, instance_id: str, association_id: str | None) -> str | None:
    """Success / Failed / Pending of our association (or of any inventory association) on one instance."""
    response = ssm.describe_instance_associations_status(InstanceId=instance_id)
    for status in response.get("InstanceAssociationStatusInfos", []):
        if association_id:
            ours = status.get("AssociationId") == association_id
        else:
            ours = status.get("Name") == INVENTORY_DOCUMENT
        if ours:
            return str(status.get("Status"))
    return None


def _inventory_association_exists(ssm: Any) -> bool:
    response = ssm.list_associations(AssociationFilterList=[{"key": "Name", "value": INVENTORY_DOCUMENT}])
    return bool(response.get("Associations"))


def check_rules(clients: DoctorClients, stack: StackView) -> CheckResult:
    """Every detection rule of the stack is enabled and delivers to the Detect function."""
    # SAM names an event source's rule after its function (DetectFunction<Event>); the canary's recovery
    # rule delivers to its own function and is not a detection rule.
    rules = {
        logical: name
        for logical, name in stack.of_type("AWS::Events::Rule").items()
        if logical.startswith("DetectFunction")
    }
    if not rules:
        return CheckResult(
            "rules", Verdict.FAIL, f"stack {stack.name} has no EventBridge rule", "redeploy the stack"
        )
    function_name = stack.required("DetectFunction")
    function_arn = clients.lambda_.get_function_configuration(FunctionName=function_name)["FunctionArn"]
    invokers = _allowed_event_sources(clients.lambda_, function_name)
    disabled: list[str] = []
    untargeted: list[str] = []
    unpermitted: list[str] = []
    missing: list[str] = []
    for logical, name in rules.items():
        try:
            rule = clients.events.describe_rule(Name=name)
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ResourceNotFoundException":
                missing.append(name)
                continue
            raise
        if rule.get("State") != "ENABLED":
            disabled.append(name)
        if stack.routed_by_runtime is not None:
            if "DetectFunction" not in stack.routed_by_runtime.get(logical, ()):
                untargeted.append(name)
            continue
        targets = clients.events.list_targets_by_rule(Rule=name).get("Targets", [])
        if not any(t["Arn"] == function_arn or t["Arn"].startswith(f"{function_arn}:") for t in targets):
            untargeted.append(name)
        if rule["Arn"] not in invokers:
            unpermitted.append(name)
    details = {
        "rules": list(rules.values()),
        "disabled": disabled,
        "not_targeting_detect": untargeted,
        "detect_does_not_allow": unpermitted,
        "missing": missing,
    }
    routing = (
        "; the local runtime routes their events to Detect itself (moto's EventBridge cannot invoke Lambda), "
        "and the template makes every one target DetectFunction"
        if stack.local and not untargeted
        else ""
    )
    problems: list[str] = []
    fixes: list[str] = []
    if disabled:
        problems.append(f"DISABLED: {', '.join(disabled)}")
        fixes.extend(f"aws events enable-rule --name {name}" for name in disabled)
    if missing:
        problems.append(f"deleted: {', '.join(missing)}")
    if untargeted:
        problems.append(f"not targeting {function_name}: {', '.join(untargeted)}")
    if unpermitted:
        problems.append(f"{function_name} does not allow invocation by: {', '.join(unpermitted)}")
    if missing or untargeted or unpermitted:
        fixes.append("redeploy the stack (sam deploy) to restore the rules, their targets and permissions")
    if problems:
        return CheckResult(
            "rules",
            Verdict.FAIL,
            "events are not delivered: " + "; ".join(problems),
            "; ".join(fixes),
            details,
        )
    return CheckResult(
        "rules",
        Verdict.PASS,
        f"all {len(rules)} rules are enabled and deliver to {function_name}{routing}",
        details=details,
    )


def _allowed_event_sources(lambda_: Any, function_name: str) -> set[str]:
    """Rule ARNs the function's resource policy lets EventBridge invoke it for."""
    try:
        policy = json.loads(lambda_.get_policy(FunctionName=function_name)["Policy"])
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "ResourceNotFoundException":
            return set()
        raise
    allowed: set[str] = set()
    for statement in policy.get("Statement", []):
        principal = statement.get("Principal", {})
        service = principal.get("Service") if isinstance(principal, dict) else principal
        if statement.get("Effect") != "Allow" or service != "events.amazonaws.com":
            continue
        for operator in ("ArnLike", "ArnEquals", "StringEquals"):
            source = (statement.get("Condition") or {}).get(operator, {}).get("AWS:SourceArn")
            if source:
                allowed.add(str(source))
    return allowed


def check_alert_subscriptions(clients: DoctorClients, stack: StackView) -> CheckResult:
    """Someone receives the alerts: the topic has at least one confirmed subscription."""
    topic = stack.required("AlertTopic")
    pages = clients.sns.get_paginator("list_subscriptions_by_topic").paginate(TopicArn=topic)
    confirmed, pending = [], []
    for page in pages:
        for subscription in page["Subscriptions"]:
            label = f"{subscription['Protocol']}:{subscription['Endpoint']}"
            arn = subscription["SubscriptionArn"]
            if arn == "PendingConfirmation" or _pending(clients.sns, arn):
                pending.append(label)
            else:
                confirmed.append(label)
    details = {"topic": topic, "confirmed": confirmed, "pending_confirmation": pending}
    if not confirmed:
        return CheckResult(
            "alerts",
            Verdict.FAIL,
            "the alert topic has no confirmed subscription: alerts reach nobody"
            + (f" ({', '.join(pending)} never confirmed)" if pending else ""),
            "confirm the subscription mail (it expires after 3 days), or: aws sns subscribe "
            f"--topic-arn {topic} --protocol email --notification-endpoint security-team@example.com",
            details,
        )
    if pending:
        return CheckResult(
            "alerts",
            Verdict.WARN,
            f"{len(confirmed)} confirmed subscription(s); still pending: {', '.join(pending)}",
            "confirm the pending subscription mails, or unsubscribe them",
            details,
        )
    return CheckResult(
        "alerts",
        Verdict.PASS,
        f"{len(confirmed)} confirmed subscription(s) to the alert topic",
        details=details,
    )


def _pending(sns: Any, subscription_arn: str) -> bool:
    attributes = sns.get_subscription_attributes(SubscriptionArn=subscription_arn)["Attributes"]
    return str(attributes.get("PendingConfirmation", "false")).lower() == "true"


def check_dead_letter_queue(clients: DoctorClients, stack: StackView) -> CheckResult:
    """No event is waiting unprocessed in the Detect dead-letter queue."""
    url = stack.required("DetectDeadLetterQueue")
    attributes = clients.sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    waiting = sum(int(v) for v in attributes.values())
    details = {"queue_url": url, "messages": waiting}
    if waiting:
        return CheckResult(
            "dead_letter_queue",
            Verdict.FAIL,
            f"{waiting} event(s) wait in the dead-letter queue: they were never judged",
            f"read them (aws sqs receive-message --queue-url {url} --attribute-names All "
            "--message-attribute-names All), fix the cause named in ErrorMessage, then delete them",
            details,
        )
    return CheckResult("dead_letter_queue", Verdict.PASS, "the dead-letter queue is empty", details=details)


def check_remediation_failures(
    clients: DoctorClients, stack: StackView, now: datetime | None = None
) -> CheckResult:
    """No remediation failed or timed out in the last day (each leaves an instance waiting for a person)."""
    machine = stack.required("RemediationStateMachine")
    since = (now or datetime.now(UTC)) - FAILED_EXECUTION_WINDOW
    failed = []
    for status in ("FAILED", "TIMED_OUT"):
        pages = clients.stepfunctions.get_paginator("list_executions").paginate(
            stateMachineArn=machine, statusFilter=status
        )
        for page in pages:
            for execution in page["executions"]:
                ended = execution.get("stopDate") or execution["startDate"]
                if ended >= since:
                    failed.append(
                        {"incident_id": execution["name"], "status": status, "at": ended.isoformat()}
                    )
    details = {"state_machine": machine, "failed": failed}
    if failed:
        names = ", ".join(f["incident_id"] for f in failed)
        return CheckResult(
            "remediation_failures",
            Verdict.FAIL,
            f"{len(failed)} remediation(s) failed in the last day: {names}; those instances stay quarantined",
            f"immutable-guard incidents --stack {stack.name}; read each failure alert and finish by hand "
            f"({DOCS}, 'A remediation failed')",
            details,
        )
    return CheckResult(
        "remediation_failures", Verdict.PASS, "no remediation failed in the last day", details=details
    )


def check_mode_and_breaker(clients: DoctorClients, stack: StackView) -> CheckResult:
    """The mode actually running, and whether the blast-radius breaker is open this hour."""
    function_name = stack.required("DetectFunction")
    configuration = clients.lambda_.get_function_configuration(FunctionName=function_name)
    variables = (configuration.get("Environment") or {}).get("Variables") or {}
    mode = variables.get("MODE", "unknown")
    cap = int(variables.get("MAX_INCIDENTS_PER_HOUR", "0") or 0)
    declared = stack.parameters.get("Mode")
    ledger = IncidentLedger(clients.dynamodb, stack.required("IncidentLedger"))
    # Remediated and demoted together: the cap stops the first, the breaker counts the second.
    incidents = ledger.incidents_this_hour()
    breaker_open = cap > 0 and incidents > cap
    details: dict[str, Any] = {
        "mode": mode,
        "stack_mode": declared,
        "incidents_this_hour": incidents,
        "cap": cap,
        "breaker": "open" if breaker_open else "closed",
    }
    storm = ledger.storm()
    if storm is not None:
        details["organization_storm"] = storm.model_dump()
    if declared and mode != declared:
        return CheckResult(
            "mode",
            Verdict.FAIL,
            f"{function_name} runs in {mode} but the stack says {declared}: changed outside CloudFormation",
            "find who changed it (CloudTrail UpdateFunctionConfiguration), then redeploy the stack",
            details,
        )
    breaker = (
        f"breaker OPEN: {incidents} incidents this hour, over the cap of {cap}; new incidents are alerted, "
        "not remediated, until the hour ends"
        if breaker_open
        else f"breaker closed ({incidents} of {cap} incidents this hour)"
    )
    if storm is not None:
        return CheckResult(
            "mode",
            Verdict.WARN,
            f"mode {mode}; organisation storm OPEN until {storm.until} (changes in accounts "
            f"{', '.join(storm.accounts)}): new incidents are alerted, not remediated; {breaker}",
            "read the storm's breaker_open alert; allow-list the change if it is legitimate, then "
            f"immutable-guard accounts storm clear --stack {stack.name}",
            details,
        )
    if breaker_open:
        return CheckResult(
            "mode",
            Verdict.WARN,
            f"mode {mode}; {breaker}",
            "read the breaker_open alert: an attack on many servers, or changes that should be allow-listed",
            details,
        )
    if mode != "enforce":
        return CheckResult(
            "mode",
            Verdict.WARN,
            f"mode {mode}: incidents are alerted and recorded, nothing is remediated; {breaker}",
            "once the alerts show only what you expect: sam deploy --parameter-overrides Mode=enforce",
            details,
        )
    return CheckResult("mode", Verdict.PASS, f"mode enforce; {breaker}", details=details)


def check_alarms(clients: DoctorClients, stack: StackView) -> CheckResult:
    """The stack's alarms exist, can notify, and none is firing."""
    names = list(stack.of_type("AWS::CloudWatch::Alarm").values())
    if not names:
        return CheckResult("alarms", Verdict.WARN, "the stack has no CloudWatch alarm", "redeploy the stack")
    found = {}
    for start in range(0, len(names), 100):
        response = clients.cloudwatch.describe_alarms(AlarmNames=names[start : start + 100])
        found.update({a["AlarmName"]: a for a in response.get("MetricAlarms", [])})
    firing = [n for n in names if found.get(n, {}).get("StateValue") == "ALARM"]
    muted = [n for n in names if n in found and not found[n].get("ActionsEnabled", True)]
    missing = [n for n in names if n not in found]
    details = {
        "alarms": {n: found.get(n, {}).get("StateValue", "missing") for n in names},
        "actions_disabled": muted,
    }
    problems = []
    if firing:
        problems.append(
            "in ALARM: " + "; ".join(f"{n} ({found[n].get('AlarmDescription', '')})" for n in firing)
        )
    if muted:
        problems.append(f"actions disabled (they alert nobody): {', '.join(muted)}")
    if missing:
        problems.append(f"deleted: {', '.join(missing)}")
    if problems:
        return CheckResult(
            "alarms",
            Verdict.FAIL,
            "; ".join(problems),
            "act on each firing alarm's description; aws cloudwatch enable-alarm-actions --alarm-names NAME; "
            "redeploy to restore deleted alarms",
            details,
        )
    return CheckResult("alarms", Verdict.PASS, f"{len(names)} alarms, none firing", details=details)


def check_iam_events(clients: DoctorClients, stack: StackView) -> CheckResult:
    """Changes to instance roles reach Detect: the stack runs in us-east-1, where IAM's events arrive, or
    an enabled rule there forwards IAM's events to this region's default bus (iam-events-forwarder.yaml)."""
    if stack.region == IAM_EVENTS_REGION:
        return CheckResult(
            "iam_events",
            Verdict.PASS,
            f"the stack runs in {IAM_EVENTS_REGION}, where IAM's events arrive: its own rule hears role "
            "changes",
        )
    caller = clients.sts.get_caller_identity()["Arn"]
    partition, account = caller.split(":")[1], caller.split(":")[4]
    bus = f"arn:{partition}:events:{stack.region}:{account}:event-bus/default"
    events = clients.events_of_iam_region
    names: list[str] = []
    token: str | None = None
    while True:
        page = events.list_rule_names_by_target(TargetArn=bus, **({"NextToken": token} if token else {}))
        names += page.get("RuleNames", [])
        token = page.get("NextToken")
        if not token:
            break
    forwarding: list[str] = []
    disabled: list[str] = []
    for name in names:
        rule = events.describe_rule(Name=name)
        if "iam.amazonaws.com" not in str(rule.get("EventPattern", "")):
            continue
        (forwarding if rule.get("State") == "ENABLED" else disabled).append(name)
    details = {"bus": bus, "forwarding_rules": forwarding, "disabled_forwarding_rules": disabled}
    if not forwarding:
        fix = (
            f"aws events enable-rule --region {IAM_EVENTS_REGION} --name {disabled[0]}"
            if disabled
            else f"deploy {FORWARDER_TEMPLATE} in {IAM_EVENTS_REGION}: aws cloudformation deploy --region "
            f"{IAM_EVENTS_REGION} --stack-name {stack.name}-iam-events --template-file {FORWARDER_TEMPLATE} "
            f"--capabilities CAPABILITY_IAM --parameter-overrides GuardRegion={stack.region}"
        )
        return CheckResult(
            "iam_events",
            Verdict.FAIL,
            f"the instance-role path is BLIND: IAM's events arrive in {IAM_EVENTS_REGION} only, and no "
            f"enabled rule there forwards them to {stack.region}: policies attached to an immutable "
            "server's role go unseen" + (f" (disabled: {', '.join(disabled)})" if disabled else ""),
            fix,
            details,
        )
    return CheckResult(
        "iam_events",
        Verdict.PASS,
        f"IAM's events are forwarded from {IAM_EVENTS_REGION} to {stack.region} by {', '.join(forwarding)}",
        details=details,
    )


Check = Callable[[DoctorClients, StackView], CheckResult]
CHECKS: tuple[tuple[str, Check], ...] = (
    ("trail", check_trail),
    ("config", check_config),
    ("inventory", check_inventory),
    ("rules", check_rules),
    ("iam_events", check_iam_events),
    ("alerts", check_alert_subscriptions),
    ("dead_letter_queue", check_dead_letter_queue),
    ("remediation_failures", check_remediation_failures),
    ("mode", check_mode_and_breaker),
    ("alarms", check_alarms),
)


def run_checks(
    clients: DoctorClients, stack: StackView, only: Iterable[str] | None = None
) -> list[CheckResult]:
    """Run every check (or those named in ``only``); a check that cannot run fails, saying why.

    Parameters
    ----------
    clients:
        Clients for the account and region of the stack (the local runtime's, in tests).
    stack:
        From `stack_view_from_cloudformation` or `stack_view_from_deployment`.
    """
    wanted = set(only) if only is not None else None
    results = []
    for name, check in CHECKS:
        if wanted is not None and name not in wanted:
            continue
        results.append(_guarded(name, check, clients, stack))
    return results


def _guarded(name: str, check: Check, clients: DoctorClients, stack: StackView) -> CheckResult:
    try:
        return check(clients, stack)
    except MissingResource as exc:
        return CheckResult(name, Verdict.FAIL, f"cannot check: {exc}", "redeploy the stack")
    except NotImplementedError as exc:
        return CheckResult(name, Verdict.WARN, f"cannot check on this endpoint: {exc}")
    except ClientError as exc:
        error = exc.response.get("Error", {})
        return CheckResult(
            name,
            Verdict.FAIL,
            f"cannot check: {error.get('Code')}: {str(error.get('Message', ''))[:200]}",
            f"run doctor with the permissions listed in {DOCS}",
        )


def exit_code(results: Iterable[CheckResult]) -> int:
    return 1 if any(r.verdict is Verdict.FAIL for r in results) else 0


# ---------------------------------------------------------------------------- command
def render(stack: StackView, results: list[CheckResult]) -> str:
    lines = [
        f"immutable-guard doctor: stack {stack.name} in {stack.region}"
        + (" (local runtime)" if stack.local else "")
    ]
    width = max(len(r.check) for r in results) if results else 0
    for result in results:
        lines.append(f"  {result.verdict.value.upper():<4}  {result.check:<{width}}  {result.summary}")
        if result.fix and result.verdict is not Verdict.PASS:
            lines.append(f"        {'':<{width}}  fix: {result.fix}")
    counts = {v: sum(1 for r in results if r.verdict is v) for v in Verdict}
    lines.append(
        f"{counts[Verdict.FAIL]} failed, {counts[Verdict.WARN]} warning(s), {counts[Verdict.PASS]} passed"
    )
    return "\n".join(lines)


def report(stack: StackView, results: list[CheckResult]) -> dict[str, Any]:
    return {
        "stack": stack.name,
        "region": stack.region,
        "local_runtime": stack.local,
        "ok": exit_code(results) == 0,
        "checks": [r.as_dict() for r in results],
    }


def _print(stack: StackView, results: list[CheckResult], as_json: bool) -> int:
    if as_json:
        print(json.dumps(report(stack, results), indent=2, default=str))
    else:
        print(render(stack, results))
    return exit_code(results)


def run_doctor_command(args: argparse.Namespace) -> int:
    if getattr(args, "organization", False):
        return _run_organization_doctor(args)
    if args.stack:
        clients = DoctorClients(region_name=args.region)
        stack = stack_view_from_cloudformation(clients.cloudformation, args.stack, clients.region)
        return _print(stack, run_checks(clients, stack), args.json)
    # No account named: show the checks on the template deployed with its defaults on the embedded
    # local AWS, as `drill` does.
    import logging
    import warnings

    from immutable_guard.local import LocalAws

    logging.getLogger("immutable_guard.local").setLevel(logging.ERROR)
    with warnings.catch_warnings(), LocalAws() as aws:
        warnings.simplefilter("ignore")
        stack = stack_view_from_deployment(aws.deploy())
        local_clients = DoctorClients(aws.session(), region_name=aws.region)
        return _print(stack, run_checks(local_clients, stack), args.json)


def _run_organization_doctor(args: argparse.Namespace) -> int:
    from immutable_guard import organization_doctor

    if not args.stack:
        print("doctor --organization needs --stack: the security account's stack (OrganizationId set)")
        return 2
    clients = DoctorClients(region_name=args.region)
    stack = stack_view_from_cloudformation(clients.cloudformation, args.stack, clients.region)
    function = stack.physical("OnboardFunction")
    if function is None:
        print(f"stack {args.stack} has no OnboardFunction: deploy it with OrganizationId set")
        return 2
    regions = [r.strip() for r in args.regions.split(",") if r.strip()] if args.regions else None
    text, code = organization_doctor.run(
        organization_doctor.lambda_invoke(clients.lambda_, function), regions, args.mark_verified, args.json
    )
    print(text)
    return code


def add_doctor_parser(subparsers: Any) -> None:
    """Register `immutable-guard doctor` on the CLI's sub-command parsers."""
    doctor = subparsers.add_parser(
        "doctor",
        help="check that detection is not blind (trail, Config, inventory, rules, IAM events, alerts, "
        "failures)",
        description="Prints pass / warn / fail per check with the fix for each; exit code 1 on any fail. "
        "Without --stack, checks the template deployed on the embedded local AWS.",
    )
    doctor.add_argument("--stack", help="the deployed stack's name (default: the embedded local AWS)")
    doctor.add_argument("--region")
    doctor.add_argument("--json", action="store_true", help="print the report as JSON")
    doctor.add_argument(
        "--organization",
        action="store_true",
        help="check every registered account x region of the organisation (trail, Config recorder, "
        "forwarding rules, member roles) through the security stack's Onboard function; needs --stack",
    )
    doctor.add_argument(
        "--regions", help="with --organization: comma-separated regions (default: the stack's VerifyRegions)"
    )
    doctor.add_argument(
        "--mark-verified",
        action="store_true",
        help="with --organization: mark verified the accounts that pass, and send back to dry-run the "
        "verified ones that fail (without it nothing changes)",
    )
    doctor.set_defaults(func=run_doctor_command)
