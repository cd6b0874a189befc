"""CloudTrail and Config events built by the local runtime match the template's rules as AWS's would."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from immutable_guard.local import Deployment, EventRouter, LocalAws
from immutable_guard.local.config_items import file_changed, ingress_rule_added
from immutable_guard.local.trail import Actor, CloudTrailEmitter

pytestmark = pytest.mark.slow


@pytest.fixture
def router(local_aws: LocalAws, deployment: Deployment) -> EventRouter:
    return EventRouter(deployment, local_aws.session())


def test_an_ssm_session_is_emitted_without_calling_moto_and_matches_shell_opened(router: EventRouter) -> None:
    # Given an actor and an emitter that only records
    trail = CloudTrailEmitter(deliver=lambda event: None)
    actor = Actor(arn="arn:aws:sts::123456789012:assumed-role/ops/alice", source_ip="198.51.100.9")
    # When a StartSession call is emitted explicitly
    event = trail.emit(actor, "ssm.amazonaws.com", "StartSession", {"target": "i-0abc"})
    # Then it is CloudTrail-shaped and matches the ShellOpened rule only
    identity = event["detail"]["userIdentity"]
    assert identity["type"] == "AssumedRole"
    assert identity["sessionContext"]["sessionIssuer"]["arn"] == "arn:aws:iam::123456789012:role/ops"
    assert event["detail"]["sourceIPAddress"] == "198.51.100.9"
    assert [r for r in router.rules if r.logical_id == "DetectFunctionShellOpened"]
    assert _matching(router, event) == ["DetectFunctionShellOpened"]


def test_a_failed_call_carries_its_error_code_and_matches_no_rule(router: EventRouter) -> None:
    trail = CloudTrailEmitter(deliver=lambda event: None)
    event = trail.record(
        Actor(),
        "ec2-instance-connect.amazonaws.com",
        "SendSSHPublicKey",
        {"instanceId": "i-1", "instanceOSUser": "root"},
        error_code="AccessDenied",
    )
    assert event["detail"]["errorCode"] == "AccessDenied"
    assert _matching(router, event) == []


def test_a_failed_boto3_call_of_the_actor_is_recorded_with_its_error(local_aws: LocalAws) -> None:
    # Given an actor session
    trail = CloudTrailEmitter(deliver=lambda event: None)
    ec2 = trail.session(Actor()).client("ec2", endpoint_url=local_aws.endpoint_url)
    # When a call fails
    with pytest.raises(ec2.exceptions.ClientError):
        ec2.authorize_security_group_ingress(
            GroupId="sg-00000000000000000", IpProtocol="tcp", FromPort=22, ToPort=22, CidrIp="0.0.0.0/0"
        )
    # Then CloudTrail still records it, with the error code
    assert trail.events[-1]["detail"]["eventName"] == "AuthorizeSecurityGroupIngress"
    assert trail.events[-1]["detail"]["errorCode"]


def test_config_items_for_files_and_security_groups_match_the_config_rule(router: EventRouter) -> None:
    group = {"GroupId": "sg-1", "GroupName": "web", "VpcId": "vpc-1", "IpPermissions": [], "Tags": []}
    rule = {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
    file_event = file_changed("i-0abc", "/etc/ssh/sshd_config", size=3301)
    assert file_event["detail"]["configurationItem"]["resourceId"] == "i-0abc"
    assert _matching(router, file_event) == ["DetectFunctionConfigItemChanged"]
    assert _matching(router, ingress_rule_added(group, rule)) == ["DetectFunctionConfigItemChanged"]


def test_the_lambda_runner_also_works_under_mock_aws_in_process(tmp_path: Path) -> None:
    # Given a function zip with a handler that raises a typed error, run under mock_aws in a fresh
    # interpreter (mock_aws resets every moto backend, which would wipe the session's local AWS)
    script = tmp_path / "probe.py"
    script.write_text(
        textwrap.dedent(
            """
            import io, json, zipfile, boto3
            from moto import mock_aws
            from immutable_guard.local import lambda_runner

            code = io.BytesIO()
            with zipfile.ZipFile(code, "w") as archive:
                archive.writestr("app.py", "import os\\n"
                    "class InstanceNotFound(Exception): pass\\n"
                    "def handler(event, context):\\n"
                    "    if event.get('fail'): raise InstanceNotFound(event['fail'])\\n"
                    "    left = context.get_remaining_time_in_millis() > 0\\n"
                    "    return {'mode': os.environ['MODE'], 'left': left}\\n")
            with mock_aws():
                lambda_runner.install()
                iam = boto3.client("iam", region_name="us-east-1")
                role = iam.create_role(RoleName="r", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
                client = boto3.client("lambda", region_name="us-east-1")
                client.create_function(FunctionName="f", Runtime="python3.12", Role=role,
                    Handler="app.handler", Code={"ZipFile": code.getvalue()},
                    Environment={"Variables": {"MODE": "dry-run"}})
                ok = client.invoke(FunctionName="f", Payload=b"{}")
                bad = client.invoke(FunctionName="f", Payload=json.dumps({"fail": "i-9"}).encode())
                answers = [json.load(ok["Payload"]), bad.get("FunctionError"), json.load(bad["Payload"])]
                print(json.dumps(answers))
                lambda_runner.uninstall()
            """
        ),
        encoding="utf-8",
    )
    # When it runs
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=False
    )
    # Then the handler ran in-process with its environment, and its error is typed
    assert result.returncode == 0, result.stderr
    ok, function_error, error = __import__("json").loads(result.stdout.strip().splitlines()[-1])
    assert ok == {"mode": "dry-run", "left": True}
    assert function_error == "Handled"
    assert (error["errorType"], error["errorMessage"]) == ("InstanceNotFound", "i-9")


def _matching(router: EventRouter, event: dict[str, object]) -> list[str]:
    from immutable_guard.patterns import matches

    return [rule.logical_id for rule in router.rules if matches(rule.pattern, event)]


def test_stopping_the_guards_own_trail_is_alerted_through_the_template_rules(
    local_aws: LocalAws, deployment: Deployment
) -> None:
    # Given the security team's queue on the alert topic and the trail the stack created
    clients = local_aws.clients()
    queue = clients.sqs.create_queue(QueueName="team-trail-watch")["QueueUrl"]
    queue_arn = clients.sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    clients.sns.subscribe(TopicArn=deployment.outputs["AlertTopicArn"], Protocol="sqs", Endpoint=queue_arn)
    cloudtrail = local_aws.session().client("cloudtrail")
    trail = deployment.outputs["TrailName"]
    router = EventRouter(deployment, local_aws.session())
    attacker = CloudTrailEmitter(router.put).session(Actor())
    try:
        # When an attacker stops it, with a real call
        attacker.client("cloudtrail").stop_logging(Name=trail)
        # Then the DetectionDisabled rule delivered it to Detect, which alerted (and remediated nothing)
        assert [rule for rule, _ in router.delivered] == ["DetectFunctionDetectionDisabled"]
        assert cloudtrail.get_trail_status(Name=trail)["IsLogging"] is False
        messages = clients.sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
        alerts = [json.loads(json.loads(m["Body"])["Message"]) for m in messages]
        assert [(a["kind"], a["severity"], a["decision"]) for a in alerts] == [
            ("detection_disabled", "critical", "alert")
        ]
        assert trail in alerts[0]["summary"]
    finally:
        cloudtrail.start_logging(Name=trail)
