"""`doctor` against the template deployed on the embedded local AWS: it reports every check, and catches a
disabled rule, a stopped trail, a waiting dead letter and a failed remediation."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import pytest
from immutable_guard.doctor import (
    CHECKS,
    CheckResult,
    DoctorClients,
    StackView,
    Verdict,
    run_checks,
    stack_view_from_deployment,
)
from immutable_guard.ledger import Incident, IncidentLedger, now_iso
from immutable_guard.local import Deployment, LocalAws

pytestmark = pytest.mark.slow


@pytest.fixture
def clients(local_aws: LocalAws) -> DoctorClients:
    return DoctorClients(local_aws.session(), region_name=local_aws.region)


@pytest.fixture
def stack(deployment: Deployment) -> StackView:
    return stack_view_from_deployment(deployment)


def only(clients: DoctorClients, stack: StackView, name: str) -> CheckResult:
    (result,) = run_checks(clients, stack, only=[name])
    return result


def test_doctor_reports_every_check_on_the_local_runtime(clients: DoctorClients, stack: StackView) -> None:
    # Given the template deployed locally
    # When doctor runs
    results = {r.check: r for r in run_checks(clients, stack)}
    # Then every check reports a verdict and a sentence
    assert list(results) == [name for name, _ in CHECKS]
    assert all(r.summary for r in results.values())
    # And the rules are judged honestly: enabled, and routed to Detect by the runtime, as the template says
    assert results["rules"].verdict is Verdict.PASS, results["rules"].summary
    assert "local runtime routes their events to Detect itself" in results["rules"].summary
    detection_rules = [r for r in stack.of_type("AWS::Events::Rule") if r.startswith("DetectFunction")]
    assert len(results["rules"].details["rules"]) == len(detection_rules) > 0
    # And what moto cannot show is a warning that says so, not a pass
    assert results["inventory"].verdict is Verdict.WARN
    # And the mode is the deployed one
    assert results["mode"].details["mode"] == stack.parameters["Mode"]
    assert results["alarms"].verdict is Verdict.PASS, results["alarms"].summary


def test_a_disabled_rule_is_caught(clients: DoctorClients, stack: StackView) -> None:
    # Given one rule of the deployed stack is disabled
    name = stack.physical_ids["DetectFunctionShellOpened"]
    clients.events.disable_rule(Name=name)
    try:
        # When doctor checks the rules
        result = only(clients, stack, "rules")
    finally:
        clients.events.enable_rule(Name=name)
    # Then it fails, naming the rule and how to enable it
    assert result.verdict is Verdict.FAIL
    assert result.details["disabled"] == [name]
    assert f"aws events enable-rule --name {name}" in result.fix
    assert only(clients, stack, "rules").verdict is Verdict.PASS


@pytest.fixture
def trail(clients: DoctorClients, stack: StackView) -> Iterator[str]:
    """The stack's trail when the runtime deployed it, else one the operator made (CreateTrail=false)."""
    own = stack.physical("Trail")
    if own:
        yield own
        clients.cloudtrail.start_logging(Name=own)
        return
    name = f"doctor-e2e-{uuid.uuid4().hex[:8]}"
    clients.s3.create_bucket(Bucket=name)
    clients.cloudtrail.create_trail(Name=name, S3BucketName=name, IsMultiRegionTrail=True)
    clients.cloudtrail.start_logging(Name=name)
    yield name
    clients.cloudtrail.delete_trail(Name=name)


def test_a_stopped_trail_is_caught(clients: DoctorClients, stack: StackView, trail: str) -> None:
    # Given a multi-region trail that logs
    assert only(clients, stack, "trail").verdict is Verdict.PASS
    # When someone stops it
    clients.cloudtrail.stop_logging(Name=trail)
    result = only(clients, stack, "trail")
    # Then doctor fails the trail check and says how to restart logging
    assert result.verdict is Verdict.FAIL
    assert "start-logging" in result.fix


def test_a_waiting_dead_letter_is_caught(clients: DoctorClients, stack: StackView) -> None:
    url = stack.physical_ids["DetectDeadLetterQueue"]
    clients.sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"detail-type": "unreadable"}))
    try:
        result = only(clients, stack, "dead_letter_queue")
    finally:
        clients.sqs.purge_queue(QueueUrl=url)
    assert result.verdict is Verdict.FAIL
    assert result.details["messages"] >= 1


def test_a_subscribed_team_makes_the_alert_check_pass(clients: DoctorClients, stack: StackView) -> None:
    queue = clients.sqs.create_queue(QueueName=f"doctor-team-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    arn = clients.sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    subscription = clients.sns.subscribe(
        TopicArn=stack.physical_ids["AlertTopic"], Protocol="sqs", Endpoint=arn, ReturnSubscriptionArn=True
    )["SubscriptionArn"]
    try:
        result = only(clients, stack, "alerts")
    finally:
        clients.sns.unsubscribe(SubscriptionArn=subscription)
    assert result.verdict is Verdict.PASS
    assert any(arn in label for label in result.details["confirmed"])


def test_a_failed_remediation_is_caught(clients: DoctorClients, stack: StackView) -> None:
    # Given an incident whose instance does not exist: Contain fails and the workflow ends in the failure
    # alert
    incident = f"ig-i-0doesnotexist-{uuid.uuid4().hex[:8]}"
    IncidentLedger(clients.dynamodb, stack.physical_ids["IncidentLedger"]).open_incident(
        Incident(
            incident_id=incident,
            instance_id="i-0doesnotexist",
            mode="enforce",
            decision="remediate",
            kind="shell_access",
            severity="high",
            account="123456789012",
            region=stack.region,
            created_at=now_iso(),
            timeline={"detected": now_iso()},
        ),
        lock_seconds=60,
    )
    machine = stack.physical_ids["RemediationStateMachine"]
    document = {
        "incident_id": incident,
        "instance_id": "i-0doesnotexist",
        "account": "123456789012",
        "region": stack.region,
        "finding": {},
    }
    arn = clients.stepfunctions.start_execution(
        stateMachineArn=machine, name=incident, input=json.dumps(document)
    )["executionArn"]
    for _ in range(600):  # bounded wait for moto's executor thread; never an assertion on time
        status = clients.stepfunctions.describe_execution(executionArn=arn)["status"]
        if status != "RUNNING":
            break
        time.sleep(0.05)
    assert status == "FAILED", clients.stepfunctions.describe_execution(executionArn=arn)
    # When doctor checks for failures
    result = only(clients, stack, "remediation_failures")
    # Then it fails, naming the incident
    assert result.verdict is Verdict.FAIL
    assert incident in result.summary
