"""The embedded local AWS runs the same template.yaml: every resource deploys, intrinsics resolve, events
reach functions by the template's rules, failures land in the dead-letter queue, and Step Functions
calls our in-process Lambda handlers."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
from immutable_guard.local import Deployment, EventRouter, LocalAws
from immutable_guard.local.deploy import supported_resource_types
from immutable_guard.local.trail import Actor, CloudTrailEmitter

pytestmark = pytest.mark.slow


def _receive_all(local_aws: LocalAws, queue_url: str) -> list[dict[str, Any]]:
    sqs = local_aws.session().client("sqs")
    response = sqs.receive_message(
        QueueUrl=queue_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], WaitTimeSeconds=0
    )
    return [dict(message) for message in response.get("Messages", [])]


def _finished_execution(local_aws: LocalAws, arn: str, document: dict[str, Any]) -> dict[str, Any]:
    sfn = local_aws.clients().stepfunctions
    # A name of its own: moto names an unnamed execution "None", so a second one would collide.
    execution = sfn.start_execution(stateMachineArn=arn, name=uuid.uuid4().hex, input=json.dumps(document))
    for _ in range(600):  # bounded wait for the executor thread; never an assertion on time
        described = sfn.describe_execution(executionArn=execution["executionArn"])
        if described["status"] != "RUNNING":
            return dict(described)
        time.sleep(0.05)
    raise AssertionError(f"execution {execution['executionArn']} still running")


def test_every_resource_of_the_template_is_deployed_or_reported(deployment: Deployment) -> None:
    # Given template.yaml translated from SAM
    # When it was deployed
    accounted = set(deployment.physical_ids) | set(deployment.disabled_by_condition)
    accounted |= {skipped.logical_id for skipped in deployment.skipped}
    # Then every resource is created, switched off by its condition, or reported as skipped
    assert accounted == set(deployment.resources)
    # And nothing of our template needs skipping
    assert deployment.skipped == []
    assert {deployment.resource_types[i] for i in deployment.physical_ids} == {
        r["Type"] for name, r in deployment.resources.items() if name not in deployment.disabled_by_condition
    }
    assert {r["Type"] for r in deployment.resources.values()} <= supported_resource_types()


def test_parameters_used_are_reported_with_overrides_applied(deployment: Deployment) -> None:
    assert deployment.parameters["Mode"] == "enforce"
    assert deployment.parameters["SnapshotPollSeconds"] == "0"
    assert deployment.parameters["PostEvidenceAction"] == "terminate"  # the template's default


def test_the_alert_email_subscription_follows_its_condition(deployment: Deployment) -> None:
    # Given no AlertEmail, Then HasAlertEmail is false and the subscription is not created
    assert "AlertEmailSubscription" in deployment.disabled_by_condition


def test_function_environment_variables_are_resolved(local_aws: LocalAws, deployment: Deployment) -> None:
    # Given the deployed Detect function
    lambda_ = local_aws.clients().lambda_
    configuration = lambda_.get_function_configuration(
        FunctionName=deployment.function_names["DetectFunction"]
    )
    variables = configuration["Environment"]["Variables"]
    # Then Ref / GetAtt / Join became physical ids
    assert variables["MODE"] == "enforce"
    assert variables["LEDGER_TABLE"] == deployment.physical_ids["IncidentLedger"]
    assert variables["REMEDIATION_STATE_MACHINE_ARN"] == deployment.outputs["RemediationStateMachineArn"]
    own_roles = variables["OWN_ROLE_ARNS"].split(",")
    assert deployment.arn("QuarantineFunctionRole") in own_roles
    assert all(role.startswith("arn:aws:iam::123456789012:role/") for role in own_roles)
    assert not any("Fn::" in value or "Ref" in value for value in variables.values())


def test_resources_carry_the_template_properties(local_aws: LocalAws, deployment: Deployment) -> None:
    clients = local_aws.clients()
    table = deployment.physical_ids["IncidentLedger"]
    ttl = clients.dynamodb.describe_time_to_live(TableName=table)["TimeToLiveDescription"]
    assert ttl["AttributeName"] == "expires_at"
    bucket = deployment.physical_ids["EvidenceBucket"]
    lock = clients.s3.get_object_lock_configuration(Bucket=bucket)["ObjectLockConfiguration"]
    retention = lock["Rule"]["DefaultRetention"]
    assert (retention["Mode"], retention["Days"]) == ("GOVERNANCE", 90)
    assert clients.s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    alarms = clients.cloudwatch.describe_alarms()["MetricAlarms"]
    assert {deployment.physical_ids[a] for a in ("DetectDeadLetterAlarm", "DetectErrorsAlarm")} <= {
        alarm["AlarmName"] for alarm in alarms
    }


def test_the_state_machine_definition_has_every_substitution_applied(
    local_aws: LocalAws, deployment: Deployment
) -> None:
    sfn = local_aws.clients().stepfunctions
    definition = sfn.describe_state_machine(stateMachineArn=deployment.outputs["RemediationStateMachineArn"])[
        "definition"
    ]
    assert "${" not in definition
    states = json.loads(definition)["States"]
    assert states["LoadSettings"]["Result"]["snapshot_poll_seconds"] == 0
    assert states["Contain"]["Parameters"]["FunctionName"] == deployment.arn("QuarantineFunction")


def test_a_cloudtrail_event_from_an_actor_is_routed_to_the_rules_function(
    local_aws: LocalAws, deployment: Deployment
) -> None:
    # Given the template's rules and an attacker's session whose calls CloudTrail records
    router = EventRouter(deployment, local_aws.session())
    trail = CloudTrailEmitter(router.put)
    ec2 = trail.session(Actor()).client("ec2")
    group = ec2.create_security_group(GroupName="web", Description="web")["GroupId"]
    # When the attacker opens SSH to the world
    ec2.authorize_security_group_ingress(
        GroupId=group,
        IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
        ],
    )
    # Then the CloudTrail-shaped event matched the NetworkOpened rule and Detect was invoked with it
    opened = trail.events[-1]
    assert opened["detail"]["requestParameters"]["ipPermissions"]["items"][0]["ipRanges"]["items"] == [
        {"cidrIp": "0.0.0.0/0"}
    ]
    ran = [rule for rule, event in router.delivered if event["detail"] == opened["detail"]]
    failed = [rule for rule, event, _ in router.failures if event["detail"] == opened["detail"]]
    assert ran + failed == ["DetectFunctionNetworkOpened"]


def test_an_event_reaches_the_function_whose_rule_matches_inside_a_list(
    local_aws: LocalAws, probe: Deployment, probe_router: EventRouter
) -> None:
    # Given an event whose matching field sits in a list of objects
    event = {
        "source": "probe.echo",
        "detail-type": "probe",
        "detail": {"items": [{"kind": "x"}, {"kind": "wanted"}]},
    }
    # When it is put
    matched = probe_router.put(event)
    # Then the echo function ran with its resolved environment and sent the event on
    assert matched == ["EchoFunctionEchoed"]
    messages = _receive_all(local_aws, probe.outputs["InboxUrl"])
    bodies = [json.loads(m["Body"]) for m in messages]
    assert [b["event"]["detail"] for b in bodies] == [event["detail"]]
    assert bodies[0]["greeting"] == "hello from us-east-1"
    assert bodies[0]["function_name"] == probe.function_names["EchoFunction"]


def test_an_event_that_matches_no_rule_invokes_nothing(probe_router: EventRouter) -> None:
    assert probe_router.put({"source": "probe.echo", "detail": {"items": [{"kind": "unwanted"}]}}) == []
    assert probe_router.delivered == [] and probe_router.failures == []


def test_a_raising_handler_sends_the_event_and_error_to_the_dead_letter_queue(
    local_aws: LocalAws, probe: Deployment, probe_router: EventRouter
) -> None:
    # When the boom function's rule matches
    matched = probe_router.put(
        {"source": "probe.boom", "detail-type": "probe", "detail": {"instance_id": "i-1"}}
    )
    # Then the event and the error land in its dead-letter queue, as Lambda sends them
    assert matched == ["BoomFunctionExploded"]
    messages = _receive_all(local_aws, probe.outputs["DeadLetterQueueUrl"])
    assert len(messages) == 1
    assert json.loads(messages[0]["Body"])["detail"] == {"instance_id": "i-1"}
    error = messages[0]["MessageAttributes"]["ErrorMessage"]["StringValue"]
    assert error == "SnapshotNotReady: still pending for nothing"


def test_step_functions_runs_in_process_lambdas_and_catches_their_typed_errors(
    local_aws: LocalAws, probe: Deployment
) -> None:
    # Given the probe state machine: Echo, then Boom whose SnapshotNotReady is caught
    definition = local_aws.clients().stepfunctions.describe_state_machine(
        stateMachineArn=probe.outputs["StateMachineArn"]
    )["definition"]
    assert "${" not in definition
    # When it runs
    execution = _finished_execution(local_aws, probe.outputs["StateMachineArn"], {"instance_id": "i-42"})
    # Then the echo result came back and the error was caught by its class name
    assert execution["status"] == "SUCCEEDED", execution
    output = json.loads(execution["output"])
    assert output["echo"]["result"]["echo"] == {"instance_id": "i-42"}
    assert output["error"]["Error"] == "SnapshotNotReady"
    assert json.loads(output["error"]["Cause"])["errorMessage"] == "still pending for i-42"


def test_each_call_is_heard_as_the_function_or_state_machine_that_made_it(
    local_aws: LocalAws, probe: Deployment
) -> None:
    # Given a listener of the calls made with a role
    from immutable_guard.local import lambda_runner

    heard: list[tuple[str, str]] = []
    stop = lambda_runner.listen_to_calls(lambda who, model, params: heard.append((who, model.name)))
    try:
        # When the probe state machine runs Echo (which sends to the inbox queue), then Boom
        execution = _finished_execution(local_aws, probe.outputs["StateMachineArn"], {"instance_id": "i-7"})
    finally:
        stop()
    assert execution["status"] == "SUCCEEDED", execution
    # Then Echo's SendMessage is Echo's, the state machine's Invoke of each function its own, and none of
    # the calls this test made (start, describe) is anybody's
    machine = probe.outputs["StateMachineArn"]
    assert (probe.function_names["EchoFunction"], "SendMessage") in heard
    assert [call for call in heard if call[0] == machine] == [(machine, "Invoke"), (machine, "Invoke")]
    assert {who for who, _ in heard} == {machine, probe.function_names["EchoFunction"]}


def test_reads_a_handler_spreads_over_threads_are_still_its_own(local_aws: LocalAws) -> None:
    # Given a client created while a function runs, and a thread of its own using it (Contain's read pool)
    import threading

    from immutable_guard.local import lambda_runner

    heard: list[tuple[str, str]] = []
    stop = lambda_runner.listen_to_calls(lambda who, model, params: heard.append((who, model.name)))
    try:
        with lambda_runner.acting_as("SomeFunction"):
            sqs = local_aws.session().client("sqs")
        worker = threading.Thread(target=sqs.list_queues)
        worker.start()
        worker.join()
        # When the runtime itself calls while a function runs (delivering an event, say)
        with lambda_runner.acting_as("SomeFunction"), lambda_runner.acting_as(None):
            sqs.list_queues()
    finally:
        stop()
    # Then the pool's read is the function's, the runtime's call nobody's
    assert heard == [("SomeFunction", "ListQueues")]
