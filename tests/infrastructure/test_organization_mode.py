"""template.yaml in organisation mode deploys on the local AWS as AWS would create it: the organisation bus
with its policy, Detect's rules on that bus and not on the default one, and the local router delivering
only what is put on a rule's own bus (docs/organization.md)."""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from immutable_guard.local.deploy import Deployer, Deployment
from immutable_guard.local.router import EventRouter
from immutable_guard.patterns import matches
from moto import mock_aws

REPO = Path(__file__).resolve().parents[2]
EVENT = REPO / "events" / "cloudtrail-authorize-sg-ingress-ssh-world.json"
ORGANIZATION = "o-exampleorg1"
BUS = "immutable-guard-organization"


@pytest.fixture(scope="module")
def aws() -> Iterator[boto3.Session]:
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
            patch.setenv(name, value)
        patch.delenv("AWS_ENDPOINT_URL", raising=False)
        with mock_aws():
            yield boto3.Session(region_name="us-east-1")


@pytest.fixture(scope="module")
def security_account(aws: boto3.Session) -> Deployment:
    return Deployer(aws, REPO / "template.yaml").deploy({"OrganizationId": ORGANIZATION})


def test_the_organisation_bus_admits_the_organisation(
    aws: boto3.Session, security_account: Deployment
) -> None:
    bus = aws.client("events").describe_event_bus(Name=BUS)
    (statement,) = json.loads(bus["Policy"])["Statement"]
    assert statement["Action"] == "events:PutEvents"
    assert statement["Condition"] == {"StringEquals": {"aws:PrincipalOrgID": ORGANIZATION}}
    assert security_account.outputs["OrganizationEventBusArn"] == bus["Arn"]


def test_detects_rules_are_on_the_organisation_bus_and_not_on_the_default_one(
    aws: boto3.Session, security_account: Deployment
) -> None:
    events = aws.client("events")
    detect_rules = {
        security_account.physical_ids[logical_id]
        for logical_id, kind in security_account.resource_types.items()
        if kind == "AWS::Events::Rule" and logical_id.startswith("DetectFunction")
    }
    on_the_bus = {rule["Name"] for rule in events.list_rules(EventBusName=BUS)["Rules"]}
    on_default = {rule["Name"] for rule in events.list_rules()["Rules"]}
    assert len(detect_rules) == 20
    assert detect_rules <= on_the_bus and not detect_rules & on_default


def test_the_router_delivers_to_detect_only_what_is_put_on_the_organisation_bus(
    aws: boto3.Session, security_account: Deployment
) -> None:
    # Given the router of the security account's deployment and a detection sample
    router = EventRouter(security_account, aws)
    event = json.loads(EVENT.read_text())
    detect = [rule for rule in router.rules if rule.function_logical_id == "DetectFunction"]
    # Then Detect's rules listen on the organisation bus, and one of them matches the sample
    assert {router.buses[rule.logical_id] for rule in detect} == {BUS}
    assert [rule.logical_id for rule in detect if matches(rule.pattern, router.envelope(event))] == [
        "DetectFunctionNetworkOpened"
    ]
    # When the event is put on the default bus, Detect hears nothing (the member-regional rules forward it)
    assert router.put(event) == []
    assert router.delivered == []


# ------------------------------------------------------------------ the buffer in front of Detect (issue 14)
BUFFER = ("DetectQueue", "DetectQueuePolicy", "DetectQueueMapping", "DetectQueueAgeAlarm")


@pytest.fixture(scope="module")
def single_account(aws: boto3.Session, security_account: Deployment) -> Deployment:
    # Beside the security account's stack, whose Config recorder is the region's one.
    return Deployer(aws, REPO / "template.yaml", stack_name="single-guard").deploy(
        {"CreateConfigRecorder": "false"}
    )


def _detect_rules(deployment: Deployment) -> list[str]:
    return [
        logical_id
        for logical_id, kind in deployment.resource_types.items()
        if kind == "AWS::Events::Rule" and logical_id.startswith("DetectFunction")
    ]


def test_only_organisation_mode_has_the_buffer_and_only_single_account_mode_lets_rules_invoke_detect(
    security_account: Deployment, single_account: Deployment
) -> None:
    assert set(BUFFER) <= set(security_account.physical_ids)
    assert set(BUFFER) <= set(single_account.disabled_by_condition)
    permissions = {f"{rule}Permission" for rule in _detect_rules(single_account)}
    assert len(permissions) == 20
    assert permissions <= set(single_account.physical_ids)
    assert permissions <= set(security_account.disabled_by_condition)
    # Single-account mode: each rule targets Detect itself, on the default bus, as SAM's events did
    for rule in _detect_rules(single_account):
        (target,) = single_account.properties[rule]["Targets"]
        assert target["Arn"] == single_account.arn("DetectFunction")
        assert target["Id"] == f"{rule}LambdaTarget"
        assert "EventBusName" not in single_account.properties[rule]


def test_detects_rules_target_the_queue_with_the_same_retry_and_dead_letter_queue(
    security_account: Deployment,
) -> None:
    for rule in _detect_rules(security_account):
        (target,) = security_account.properties[rule]["Targets"]
        assert target["Arn"] == security_account.arn("DetectQueue")
        assert target["DeadLetterConfig"] == {"Arn": security_account.arn("DetectDeadLetterQueue")}
        assert target["RetryPolicy"] == {"MaximumRetryAttempts": 185, "MaximumEventAgeInSeconds": 86400}


def test_the_queue_outlasts_detects_timeout_and_parks_what_detect_keeps_failing(
    security_account: Deployment,
) -> None:
    template = security_account.template
    queue = security_account.properties["DetectQueue"]
    timeout = template["Resources"]["DetectFunction"]["Properties"].get(
        "Timeout", template["Globals"]["Function"]["Timeout"]
    )
    # "at least six times the configuration timeout on your function"
    # (https://docs.aws.amazon.com/lambda/latest/dg/services-sqs-configure.html)
    assert int(queue["VisibilityTimeout"]) >= 6 * int(timeout)
    assert queue["RedrivePolicy"] == {
        "deadLetterTargetArn": security_account.arn("DetectDeadLetterQueue"),
        "maxReceiveCount": 5,
    }
    assert queue["KmsMasterKeyId"] == security_account.physical_ids["AlertKey"]
    # The dead-letter queue keeps a message longer than the queue, its age counting from the first enqueue
    # (https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-dead-letter-queues.html)
    dead_letter = security_account.properties["DetectDeadLetterQueue"]
    assert int(dead_letter["MessageRetentionPeriod"]) > int(queue["MessageRetentionPeriod"])
    assert template["Resources"]["DetectDeadLetterQueue"]["DeletionPolicy"] == "Retain"


def test_only_the_rules_on_the_organisation_bus_may_send_to_the_queue(
    aws: boto3.Session, security_account: Deployment
) -> None:
    (statement,) = security_account.properties["DetectQueuePolicy"]["PolicyDocument"]["Statement"]
    assert statement["Principal"] == {"Service": "events.amazonaws.com"}
    assert statement["Action"] == "sqs:SendMessage"
    assert statement["Resource"] == security_account.arn("DetectQueue")
    (pattern,) = statement["Condition"]["ArnLike"].values()
    assert list(statement["Condition"]["ArnLike"]) == ["aws:SourceArn"]
    events = aws.client("events")
    arns = [
        events.describe_rule(Name=security_account.physical_ids[rule], EventBusName=BUS)["Arn"]
        for rule in _detect_rules(security_account)
    ]
    assert all(fnmatch.fnmatchcase(arn, pattern) for arn in arns)
    # A rule on the default bus (arn:...:rule/<name>) does not match
    assert not fnmatch.fnmatchcase(arns[0].replace(f"rule/{BUS}/", "rule/"), pattern)


def test_the_mapping_bounds_detects_concurrency_and_reports_each_record(
    aws: boto3.Session, security_account: Deployment
) -> None:
    mapping = security_account.properties["DetectQueueMapping"]
    parameter = security_account.template["Parameters"]["DetectMaxConcurrency"]
    # MaximumConcurrency takes 2 to 1000 (https://docs.aws.amazon.com/lambda/latest/dg/API_ScalingConfig.html)
    assert (parameter["MinValue"], parameter["MaxValue"]) == (2, 1000)
    assert mapping["ScalingConfig"] == {
        "MaximumConcurrency": security_account.parameters["DetectMaxConcurrency"]
    }
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["EventSourceArn"] == security_account.arn("DetectQueue")
    assert int(mapping["BatchSize"]) <= 10 and "MaximumBatchingWindowInSeconds" in mapping
    (deployed,) = aws.client("lambda").list_event_source_mappings(
        EventSourceArn=security_account.arn("DetectQueue")
    )["EventSourceMappings"]
    assert deployed["ScalingConfig"] == {"MaximumConcurrency": int(parameter["Default"])}


def test_detect_reads_only_its_own_queue(security_account: Deployment, single_account: Deployment) -> None:
    reading = {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"}

    def grants(deployment: Deployment) -> list[tuple[set[str], Any]]:
        found = []
        for policy in deployment.properties["DetectFunctionRole"]["Policies"]:
            for statement in policy["PolicyDocument"]["Statement"]:
                actions = (
                    statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
                )
                if reading & set(actions):
                    found.append((set(actions), statement["Resource"]))
        return found

    assert grants(security_account) == [(reading, security_account.arn("DetectQueue"))]
    assert grants(single_account) == []


def test_an_alarm_calls_a_person_when_events_wait_in_the_queue(security_account: Deployment) -> None:
    alarm = security_account.properties["DetectQueueAgeAlarm"]
    assert (alarm["Namespace"], alarm["MetricName"]) == ("AWS/SQS", "ApproximateAgeOfOldestMessage")
    assert alarm["Dimensions"] == [
        {"Name": "QueueName", "Value": security_account.attributes["DetectQueue"]["QueueName"]}
    ]
    assert alarm["AlarmActions"] == [security_account.physical_ids["AlertTopic"]]


def test_the_dashboards_alarm_widget_shows_the_queue_alarm_in_organisation_mode_only(
    security_account: Deployment, single_account: Deployment
) -> None:
    def alarms(deployment: Deployment) -> list[str]:
        body = json.loads(deployment.properties["OperationsDashboard"]["DashboardBody"])
        (widget,) = [w for w in body["widgets"] if w["type"] == "alarm"]
        return list(widget["properties"]["alarms"])

    organisation, single = alarms(security_account), alarms(single_account)
    assert security_account.arn("DetectQueueAgeAlarm") in organisation
    assert len(organisation) == len(single) + 1 and all(
        arn.startswith("arn:aws:cloudwatch:") for arn in single
    )
