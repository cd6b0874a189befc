"""`immutable-guard doctor` on moto: a healthy guard passes every check, and each way of going blind
(a stopped trail, a recorder missing a type, a disabled rule, an unconfirmed subscription, a full
dead-letter queue, a failed remediation, an open breaker, a firing alarm) fails or warns with a fix."""

from __future__ import annotations

import argparse
import io
import json
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from immutable_guard.doctor import (
    CHECKS,
    OPTIONAL_CONFIG_TYPES,
    REQUIRED_CONFIG_TYPES,
    DoctorClients,
    StackView,
    Verdict,
    add_doctor_parser,
    exit_code,
    render,
    report,
    run_checks,
    stack_view_from_cloudformation,
)
from immutable_guard.ledger import IncidentLedger
from moto import mock_aws
from moto.sns.models import sns_backends

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account
FAILING_MACHINE = json.dumps({"StartAt": "Boom", "States": {"Boom": {"Type": "Fail", "Error": "Boom"}}})
PASSING_MACHINE = json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}})


@dataclass
class Guard:
    """A guard deployed by hand on moto, in the shape doctor expects from template.yaml."""

    clients: DoctorClients
    stack: StackView

    def check(self, name: str) -> Any:
        (result,) = run_checks(self.clients, self.stack, only=[name])
        return result


def _function_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("app.py", "def handler(event, context):\n    return {}\n")
    return buffer.getvalue()


def _deploy(clients: DoctorClients) -> StackView:
    """The template's resources doctor reads, with the physical ids CloudFormation would report."""
    s3, cloudtrail, config = clients.s3, clients.cloudtrail, clients.config
    s3.create_bucket(Bucket="guard-trail")
    cloudtrail.create_trail(Name="guard-trail", S3BucketName="guard-trail", IsMultiRegionTrail=True)
    cloudtrail.start_logging(Name="guard-trail")

    role = boto3.client("iam", region_name=REGION).create_role(
        RoleName="guard-role",
        AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}),
    )["Role"]["Arn"]
    config.put_configuration_recorder(
        ConfigurationRecorder={
            "name": "guard-recorder",
            "roleARN": role,
            "recordingGroup": {
                "allSupported": False,
                "includeGlobalResourceTypes": False,
                "resourceTypes": [*REQUIRED_CONFIG_TYPES, *OPTIONAL_CONFIG_TYPES],
            },
        }
    )
    s3.create_bucket(Bucket="guard-config")
    config.put_delivery_channel(DeliveryChannel={"name": "guard-channel", "s3BucketName": "guard-config"})
    config.start_configuration_recorder(ConfigurationRecorderName="guard-recorder")

    function = clients.lambda_.create_function(
        FunctionName="guard-detect",
        Runtime="python3.12",
        Role=role,
        Handler="app.handler",
        Code={"ZipFile": _function_zip()},
        Environment={"Variables": {"MODE": "enforce", "MAX_INCIDENTS_PER_HOUR": "5"}},
    )
    rules = {}
    for logical in ("DetectFunctionNetworkOpened", "DetectFunctionShellOpened"):
        name = f"guard-{logical}"
        arn = clients.events.put_rule(Name=name, EventPattern=json.dumps({"source": ["aws.ec2"]}))["RuleArn"]
        clients.events.put_targets(Rule=name, Targets=[{"Id": "detect", "Arn": function["FunctionArn"]}])
        clients.lambda_.add_permission(
            FunctionName="guard-detect",
            StatementId=logical,
            Action="lambda:InvokeFunction",
            Principal="events.amazonaws.com",
            SourceArn=arn,
        )
        rules[logical] = name

    topic = clients.sns.create_topic(Name="guard-alerts")["TopicArn"]
    inbox = clients.sqs.create_queue(QueueName="team-inbox")["QueueUrl"]
    inbox_arn = clients.sqs.get_queue_attributes(QueueUrl=inbox, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    clients.sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=inbox_arn)
    dead_letters = clients.sqs.create_queue(QueueName="guard-dlq")["QueueUrl"]

    machine = clients.stepfunctions.create_state_machine(
        name="guard-remediation", definition=PASSING_MACHINE, roleArn=role
    )["stateMachineArn"]
    clients.dynamodb.create_table(
        TableName="guard-ledger",
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    for alarm in ("guard-dlq-alarm", "guard-failures-alarm"):
        clients.cloudwatch.put_metric_alarm(
            AlarmName=alarm,
            AlarmDescription=f"{alarm} description",
            Namespace="AWS/SQS",
            MetricName="ApproximateNumberOfMessagesVisible",
            Statistic="Maximum",
            Period=300,
            EvaluationPeriods=1,
            Threshold=0,
            ComparisonOperator="GreaterThanThreshold",
            AlarmActions=[topic],
        )

    physical = {
        "Trail": "guard-trail",
        "ConfigRecorder": "guard-recorder",
        "DetectFunction": "guard-detect",
        "AlertTopic": topic,
        "DetectDeadLetterQueue": dead_letters,
        "RemediationStateMachine": machine,
        "IncidentLedger": "guard-ledger",
        "DetectDeadLetterAlarm": "guard-dlq-alarm",
        "RemediationFailuresAlarm": "guard-failures-alarm",
        **rules,
    }
    types = {
        "Trail": "AWS::CloudTrail::Trail",
        "ConfigRecorder": "AWS::Config::ConfigurationRecorder",
        "DetectFunction": "AWS::Lambda::Function",
        "AlertTopic": "AWS::SNS::Topic",
        "DetectDeadLetterQueue": "AWS::SQS::Queue",
        "RemediationStateMachine": "AWS::StepFunctions::StateMachine",
        "IncidentLedger": "AWS::DynamoDB::Table",
        "DetectDeadLetterAlarm": "AWS::CloudWatch::Alarm",
        "RemediationFailuresAlarm": "AWS::CloudWatch::Alarm",
        **dict.fromkeys(rules, "AWS::Events::Rule"),
    }
    return StackView(
        name="guard",
        region=REGION,
        physical_ids=physical,
        resource_types=types,
        parameters={"Mode": "enforce", "ScopeTagKey": "immutable", "ScopeTagValue": "true"},
    )


@pytest.fixture
def guard() -> Iterator[Guard]:
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        clients = DoctorClients(boto3.Session(region_name=REGION), region_name=REGION)
        yield Guard(clients, _deploy(clients))


def _run_instance(clients: DoctorClients) -> str:
    image = clients.ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    return str(
        clients.ec2.run_instances(
            ImageId=image,
            MinCount=1,
            MaxCount=1,
            TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "immutable", "Value": "true"}]}],
        )["Instances"][0]["InstanceId"]
    )


# ---------------------------------------------------------------------------- the healthy guard
def test_a_healthy_guard_passes_every_check_it_can_verify_on_moto(guard: Guard) -> None:
    # Given a guard with a logging trail, a recorder, enabled rules, a confirmed subscriber, no failures
    # When doctor runs every check
    results = {r.check: r for r in run_checks(guard.clients, guard.stack)}
    # Then every check ran, and all pass except inventory: no instance is in scope yet
    assert set(results) == {name for name, _ in CHECKS}
    failing = {n: r.summary for n, r in results.items() if r.verdict is not Verdict.PASS}
    assert failing.keys() == {"inventory"}, failing
    assert "nothing is protected yet" in results["inventory"].summary
    assert exit_code(results.values()) == 0


# ---------------------------------------------------------------------------- trail
def test_a_stopped_trail_fails_and_says_how_to_restart_it(guard: Guard) -> None:
    # Given the stack's trail was stopped (the first thing an attacker who wants to go unseen does)
    guard.clients.cloudtrail.stop_logging(Name="guard-trail")
    # When the trail is checked
    result = guard.check("trail")
    # Then it fails, naming the trail and the command that restarts it
    assert result.verdict is Verdict.FAIL
    assert "guard-trail is STOPPED" in result.summary
    assert "aws cloudtrail start-logging --name guard-trail" in result.fix


def test_no_trail_at_all_fails(guard: Guard) -> None:
    guard.clients.cloudtrail.delete_trail(Name="guard-trail")
    result = guard.check("trail")
    assert result.verdict is Verdict.FAIL
    assert "CreateTrail=true" in result.fix


def test_a_single_region_trail_of_the_account_only_warns(guard: Guard) -> None:
    # Given the stack has no trail of its own, and the account's trail logs one region only
    guard.clients.cloudtrail.delete_trail(Name="guard-trail")
    guard.clients.cloudtrail.create_trail(Name="team-trail", S3BucketName="guard-trail")
    guard.clients.cloudtrail.start_logging(Name="team-trail")
    stack = replace(
        guard.stack, physical_ids={k: v for k, v in guard.stack.physical_ids.items() if k != "Trail"}
    )
    # When the trail is checked
    (result,) = run_checks(guard.clients, stack, only=["trail"])
    # Then detection works in this region, with a warning to make it multi-region
    assert result.verdict is Verdict.WARN
    assert "--is-multi-region-trail" in result.fix


def test_a_trail_that_logs_no_write_management_events_does_not_count(guard: Guard) -> None:
    guard.clients.cloudtrail.put_event_selectors(
        TrailName="guard-trail",
        EventSelectors=[{"ReadWriteType": "ReadOnly", "IncludeManagementEvents": True}],
    )
    result = guard.check("trail")
    assert result.verdict is Verdict.FAIL
    assert result.details["trails"][0]["write_management_events"] is False


# ---------------------------------------------------------------------------- config
def test_a_recorder_missing_a_needed_type_fails_naming_it(guard: Guard) -> None:
    # Given the recorder records security groups only
    recorder = guard.clients.config.describe_configuration_recorders()["ConfigurationRecorders"][0]
    recorder["recordingGroup"] = {
        "allSupported": False,
        "includeGlobalResourceTypes": False,
        "resourceTypes": ["AWS::EC2::SecurityGroup"],
    }
    guard.clients.config.put_configuration_recorder(ConfigurationRecorder=recorder)
    # When Config is checked
    result = guard.check("config")
    # Then it fails, naming what is not recorded
    assert result.verdict is Verdict.FAIL
    assert "AWS::EC2::Instance" in result.summary
    assert "AWS::SSM::ManagedInstanceInventory" in result.summary


def test_a_stopped_recorder_fails(guard: Guard) -> None:
    guard.clients.config.stop_configuration_recorder(ConfigurationRecorderName="guard-recorder")
    result = guard.check("config")
    assert result.verdict is Verdict.FAIL
    assert "start-configuration-recorder --configuration-recorder-name guard-recorder" in result.fix


def test_a_recorder_of_all_supported_types_passes(guard: Guard) -> None:
    recorder = guard.clients.config.describe_configuration_recorders()["ConfigurationRecorders"][0]
    recorder["recordingGroup"] = {"allSupported": True, "includeGlobalResourceTypes": False}
    guard.clients.config.put_configuration_recorder(ConfigurationRecorder=recorder)
    assert guard.check("config").verdict is Verdict.PASS


def test_no_recorder_fails_and_says_a_region_has_one(guard: Guard) -> None:
    guard.clients.config.stop_configuration_recorder(ConfigurationRecorderName="guard-recorder")
    guard.clients.config.delete_delivery_channel(DeliveryChannelName="guard-channel")
    guard.clients.config.delete_configuration_recorder(ConfigurationRecorderName="guard-recorder")
    result = guard.check("config")
    assert result.verdict is Verdict.FAIL
    assert "one recorder" in result.fix


# ---------------------------------------------------------------------------- inventory
def test_inventory_degrades_to_a_warning_where_ssm_has_no_inventory_api(guard: Guard) -> None:
    # Given an in-scope instance, on moto, which implements no DescribeInstanceInformation
    instance = _run_instance(guard.clients)
    local = replace(guard.stack, routed_by_runtime={})
    # When inventory is checked as on the local runtime
    (result,) = run_checks(guard.clients, local, only=["inventory"])
    # Then it warns that it cannot verify, and still names the instances in scope
    assert result.verdict is Verdict.WARN
    assert "cannot verify" in result.summary
    assert result.details["in_scope"] == [instance]


def test_inventory_on_a_real_stack_reports_what_ssm_says(
    guard: Guard, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given two in-scope instances: one whose agent reports and whose inventory failed, one with no agent
    reporting, silent = _run_instance(guard.clients), _run_instance(guard.clients)

    class FakeSsm:
        """SSM's answers for an account (moto has no SSM agent or association API)."""

        def get_paginator(self, name: str) -> Any:
            assert name == "describe_instance_information"
            page = {"InstanceInformationList": [{"InstanceId": reporting, "PingStatus": "Online"}]}
            return type("P", (), {"paginate": lambda self, **kwargs: [page]})()

        def describe_instance_associations_status(self, InstanceId: str) -> dict[str, Any]:
            return {"InstanceAssociationStatusInfos": [{"AssociationId": "assoc-1", "Status": "Failed"}]}

    monkeypatch.setitem(guard.clients.__dict__, "ssm", FakeSsm())
    stack = replace(
        guard.stack,
        physical_ids={**guard.stack.physical_ids, "InventoryAssociation": "assoc-1"},
    )
    # When inventory is checked
    (result,) = run_checks(guard.clients, stack, only=["inventory"])
    # Then the failed association fails the check, and the silent instance is named
    assert result.verdict is Verdict.FAIL
    assert reporting in result.summary
    assert result.details["no_ssm_agent"] == [silent]


# ---------------------------------------------------------------------------- rules
def test_a_disabled_rule_fails_with_the_command_that_enables_it(guard: Guard) -> None:
    # Given one of the stack's rules was disabled
    guard.clients.events.disable_rule(Name="guard-DetectFunctionShellOpened")
    # When the rules are checked
    result = guard.check("rules")
    # Then it fails, naming the rule
    assert result.verdict is Verdict.FAIL
    assert result.details["disabled"] == ["guard-DetectFunctionShellOpened"]
    assert "aws events enable-rule --name guard-DetectFunctionShellOpened" in result.fix


def test_a_rule_whose_target_was_removed_fails(guard: Guard) -> None:
    guard.clients.events.remove_targets(Rule="guard-DetectFunctionNetworkOpened", Ids=["detect"])
    result = guard.check("rules")
    assert result.verdict is Verdict.FAIL
    assert result.details["not_targeting_detect"] == ["guard-DetectFunctionNetworkOpened"]


def test_a_rule_detect_no_longer_allows_fails(guard: Guard) -> None:
    guard.clients.lambda_.remove_permission(
        FunctionName="guard-detect", StatementId="DetectFunctionShellOpened"
    )
    result = guard.check("rules")
    assert result.verdict is Verdict.FAIL
    assert result.details["detect_does_not_allow"] == ["guard-DetectFunctionShellOpened"]


def test_rules_routed_by_the_local_runtime_are_judged_by_the_template_targets(guard: Guard) -> None:
    # Given the local runtime's rules: no Lambda target on the rule, the runtime routes events itself
    for name in ("guard-DetectFunctionNetworkOpened", "guard-DetectFunctionShellOpened"):
        guard.clients.events.remove_targets(Rule=name, Ids=["detect"])
    local = replace(
        guard.stack,
        routed_by_runtime={
            "DetectFunctionNetworkOpened": ("DetectFunction",),
            "DetectFunctionShellOpened": (),
        },
    )
    # When the rules are checked
    (result,) = run_checks(guard.clients, local, only=["rules"])
    # Then the rule the template does not aim at Detect fails; the other is judged by its template target
    assert result.verdict is Verdict.FAIL
    assert result.details["not_targeting_detect"] == ["guard-DetectFunctionShellOpened"]


# ---------------------------------------------------------------------------- alerts
def test_an_unconfirmed_subscription_does_not_count(guard: Guard) -> None:
    # Given the only subscriber never confirmed (moto confirms everything: mark it as AWS would show it)
    topic = guard.stack.physical_ids["AlertTopic"]
    (subscription,) = guard.clients.sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]
    backend = sns_backends[ACCOUNT][REGION]
    backend.subscriptions[subscription["SubscriptionArn"]].attributes["PendingConfirmation"] = "true"
    # When the alert topic is checked
    result = guard.check("alerts")
    # Then alerts reach nobody, and doctor says so
    assert result.verdict is Verdict.FAIL
    assert "reach nobody" in result.summary
    assert result.details["pending_confirmation"] == [f"sqs:{subscription['Endpoint']}"]


def test_a_topic_without_subscribers_fails(guard: Guard) -> None:
    topic = guard.stack.physical_ids["AlertTopic"]
    for subscription in guard.clients.sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]:
        guard.clients.sns.unsubscribe(SubscriptionArn=subscription["SubscriptionArn"])
    result = guard.check("alerts")
    assert result.verdict is Verdict.FAIL
    assert "aws sns subscribe" in result.fix


# ---------------------------------------------------------------------------- dead letters, failures
def test_a_non_empty_dead_letter_queue_fails(guard: Guard) -> None:
    url = guard.stack.physical_ids["DetectDeadLetterQueue"]
    guard.clients.sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"detail-type": "x"}))
    result = guard.check("dead_letter_queue")
    assert result.verdict is Verdict.FAIL
    assert result.details["messages"] == 1
    assert url in result.fix


def _finished(guard: Guard, machine: str, name: str) -> dict[str, Any]:
    arn = guard.clients.stepfunctions.start_execution(stateMachineArn=machine, name=name)["executionArn"]
    for _ in range(200):  # bounded wait for moto's executor; never an assertion on time
        described = guard.clients.stepfunctions.describe_execution(executionArn=arn)
        if described["status"] != "RUNNING":
            return dict(described)
        time.sleep(0.02)
    raise AssertionError(f"{arn} still running")


def test_a_failed_remediation_in_the_last_day_fails_naming_the_incident(guard: Guard) -> None:
    # Given a remediation whose execution failed
    machine = guard.stack.physical_ids["RemediationStateMachine"]
    guard.clients.stepfunctions.update_state_machine(stateMachineArn=machine, definition=FAILING_MACHINE)
    assert _finished(guard, machine, "ig-i-0abc-123")["status"] == "FAILED"
    # When failures are checked
    result = guard.check("remediation_failures")
    # Then it fails, naming the incident (the execution is named by it)
    assert result.verdict is Verdict.FAIL
    assert "ig-i-0abc-123" in result.summary


def test_a_failure_older_than_a_day_is_not_reported(guard: Guard) -> None:
    from immutable_guard.doctor import check_remediation_failures

    machine = guard.stack.physical_ids["RemediationStateMachine"]
    guard.clients.stepfunctions.update_state_machine(stateMachineArn=machine, definition=FAILING_MACHINE)
    _finished(guard, machine, "ig-old")
    tomorrow = datetime.now(UTC) + timedelta(days=1, minutes=1)
    assert check_remediation_failures(guard.clients, guard.stack, now=tomorrow).verdict is Verdict.PASS


def test_a_succeeded_remediation_is_not_a_failure(guard: Guard) -> None:
    machine = guard.stack.physical_ids["RemediationStateMachine"]
    assert _finished(guard, machine, "ig-fine")["status"] == "SUCCEEDED"
    assert guard.check("remediation_failures").verdict is Verdict.PASS


# ---------------------------------------------------------------------------- mode and breaker
def test_an_open_breaker_warns_with_the_count(guard: Guard) -> None:
    # Given six enforce incidents this hour against a cap of five
    ledger = IncidentLedger(guard.clients.dynamodb, "guard-ledger")
    for _ in range(6):
        ledger.count_incident_this_hour()
    # When the mode is checked
    result = guard.check("mode")
    # Then the breaker is reported open
    assert result.verdict is Verdict.WARN
    assert "breaker OPEN: 6 incidents this hour" in result.summary


def test_an_organisation_storm_warns_with_the_way_to_clear_it(guard: Guard) -> None:
    # Given the organisation storm in force (issue 14)
    IncidentLedger(guard.clients.dynamodb, "guard-ledger").open_storm(["222233334444", "333344445555"])
    # When the mode is checked
    result = guard.check("mode")
    # Then it warns, naming the accounts and the command that ends it
    assert result.verdict is Verdict.WARN
    assert "organisation storm OPEN" in result.summary and "222233334444" in result.summary
    assert "accounts storm clear" in result.fix


def test_dry_run_warns_that_nothing_is_remediated(guard: Guard) -> None:
    guard.clients.lambda_.update_function_configuration(
        FunctionName="guard-detect",
        Environment={"Variables": {"MODE": "dry-run", "MAX_INCIDENTS_PER_HOUR": "5"}},
    )
    stack = replace(guard.stack, parameters={**guard.stack.parameters, "Mode": "dry-run"})
    (result,) = run_checks(guard.clients, stack, only=["mode"])
    assert result.verdict is Verdict.WARN
    assert "Mode=enforce" in result.fix


def test_a_mode_changed_outside_the_stack_fails(guard: Guard) -> None:
    # Given someone switched the running function to notify-only behind CloudFormation's back
    guard.clients.lambda_.update_function_configuration(
        FunctionName="guard-detect",
        Environment={"Variables": {"MODE": "notify-only", "MAX_INCIDENTS_PER_HOUR": "5"}},
    )
    result = guard.check("mode")
    assert result.verdict is Verdict.FAIL
    assert "notify-only but the stack says enforce" in result.summary


# ---------------------------------------------------------------------------- alarms
def test_a_firing_alarm_fails_with_its_description(guard: Guard) -> None:
    guard.clients.cloudwatch.set_alarm_state(
        AlarmName="guard-dlq-alarm", StateValue="ALARM", StateReason="test: messages are waiting"
    )
    result = guard.check("alarms")
    assert result.verdict is Verdict.FAIL
    assert "guard-dlq-alarm (guard-dlq-alarm description)" in result.summary


def test_an_alarm_with_actions_disabled_fails(guard: Guard) -> None:
    guard.clients.cloudwatch.disable_alarm_actions(AlarmNames=["guard-failures-alarm"])
    result = guard.check("alarms")
    assert result.verdict is Verdict.FAIL
    assert result.details["actions_disabled"] == ["guard-failures-alarm"]


# ---------------------------------------------------------------------------- robustness and output
def test_a_resource_missing_from_the_stack_fails_that_check_only(guard: Guard) -> None:
    stack = replace(
        guard.stack,
        physical_ids={k: v for k, v in guard.stack.physical_ids.items() if k != "DetectDeadLetterQueue"},
    )
    results = {r.check: r for r in run_checks(guard.clients, stack)}
    assert results["dead_letter_queue"].verdict is Verdict.FAIL
    assert "DetectDeadLetterQueue" in results["dead_letter_queue"].summary
    assert results["alerts"].verdict is Verdict.PASS


def test_a_refused_call_fails_the_check_and_names_the_permissions(guard: Guard) -> None:
    stack = replace(guard.stack, physical_ids={**guard.stack.physical_ids, "DetectDeadLetterQueue": "nope"})
    result = run_checks(guard.clients, stack, only=["dead_letter_queue"])[0]
    assert result.verdict is Verdict.FAIL
    assert result.summary.startswith("cannot check:")


def test_the_report_and_the_exit_code_follow_the_worst_verdict(guard: Guard) -> None:
    guard.clients.events.disable_rule(Name="guard-DetectFunctionShellOpened")
    results = run_checks(guard.clients, guard.stack)
    assert exit_code(results) == 1
    document = report(guard.stack, results)
    assert document["ok"] is False
    assert {c["check"] for c in document["checks"]} == {name for name, _ in CHECKS}
    text = render(guard.stack, results)
    assert "FAIL  rules" in text
    assert "fix: aws events enable-rule" in text


def test_a_real_stack_is_read_from_cloudformation() -> None:
    # Given a plain CloudFormation stack with a parameter and a queue
    with mock_aws():
        cloudformation = boto3.client("cloudformation", region_name=REGION)
        body = {
            "Parameters": {"Mode": {"Type": "String", "Default": "enforce"}},
            "Resources": {"DetectDeadLetterQueue": {"Type": "AWS::SQS::Queue"}},
        }
        cloudformation.create_stack(StackName="guard", TemplateBody=json.dumps(body))
        # When doctor reads it
        stack = stack_view_from_cloudformation(cloudformation, "guard", REGION)
        # Then the physical ids, types and parameters are those CloudFormation reports
        assert stack.parameters == {"Mode": "enforce"}
        assert stack.resource_types == {"DetectDeadLetterQueue": "AWS::SQS::Queue"}
        (queue_url,) = boto3.client("sqs", region_name=REGION).list_queues()["QueueUrls"]
        # (the host part of a queue URL depends on the endpoint; the name is the queue)
        assert stack.physical_ids.keys() == {"DetectDeadLetterQueue"}
        assert stack.physical_ids["DetectDeadLetterQueue"].rsplit("/", 1)[1] == queue_url.rsplit("/", 1)[1]
        assert not stack.local


def test_the_command_reads_a_stack_prints_json_and_exits_non_zero_on_a_fail(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given a stack that has an empty dead-letter queue and nothing else of the guard
    with mock_aws():
        body = {"Resources": {"DetectDeadLetterQueue": {"Type": "AWS::SQS::Queue"}}}
        boto3.client("cloudformation", region_name=REGION).create_stack(
            StackName="half-a-guard", TemplateBody=json.dumps(body)
        )
        parser = argparse.ArgumentParser(prog="immutable-guard")
        add_doctor_parser(parser.add_subparsers(dest="command", required=True))
        args = parser.parse_args(["doctor", "--stack", "half-a-guard", "--region", REGION, "--json"])
        # When `immutable-guard doctor --stack half-a-guard --json` runs
        code = args.func(args)
    document = json.loads(capsys.readouterr().out)
    verdicts = {c["check"]: c["verdict"] for c in document["checks"]}
    # Then it reports every check, fails what is missing, passes the queue, and exits 1
    assert code == 1
    assert document["ok"] is False
    assert document["stack"] == "half-a-guard"
    assert verdicts["dead_letter_queue"] == "pass"
    assert verdicts["rules"] == "fail"
    assert verdicts["trail"] == "fail"
