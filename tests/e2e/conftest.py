"""One embedded local AWS per test session, with template.yaml deployed as in production (enforce mode,
short polling) and a small throwaway SAM app beside it for the runtime's own checks.

The server runs in this process and serves moto's in-process backends, so a unit test that starts
``mock_aws()`` resets them and every deployed resource is gone. Deployments are therefore not session
fixtures but entries of a `LocalSession`, which checks the runtime's marker before handing one out and,
after such a reset, resets the runtime and deploys again: the e2e tests pass in any order, interleaved
with unit tests or not (a subprocess per scenario would also isolate them, but would hide their
assertions and cost a deploy each).
"""

from __future__ import annotations

import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from canary_rollouts import Rollout
from drill_runs import every_scenario_once
from immutable_guard.canary.demo import deploy_target, publish_version
from immutable_guard.local import Deployment, EventRouter, LocalAws, LocalSession

ENFORCE_FAST = {
    "Mode": "enforce",
    "SnapshotPollSeconds": "0",
    "ReplacementPollSeconds": "1",
    "MaxPolls": "30",
    # Room for every incident the e2e tests open on this one deployment within the hour.
    "MaxIncidentsPerHour": "50",
    # Stacks tagged immutable-guard-replaceable=true may be updated to rebuild a standalone server.
    "ReplaceableStackTagValue": "true",
}

PROBE_TEMPLATE = """
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Globals:
  Function:
    Runtime: python3.12
    Handler: app.handler
    Timeout: 10
Resources:
  ProbeDeadLetterQueue:
    Type: AWS::SQS::Queue
  ProbeInbox:
    Type: AWS::SQS::Queue
  EchoFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: functions/echo/
      Environment:
        Variables:
          INBOX_URL: !Ref ProbeInbox
          GREETING: !Sub "hello from ${AWS::Region}"
      DeadLetterQueue: { Type: SQS, TargetArn: !GetAtt ProbeDeadLetterQueue.Arn }
      Events:
        Echoed:
          Type: EventBridgeRule
          Properties:
            Pattern:
              source: [probe.echo]
              detail: { items: { kind: [wanted] } }
  BoomFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: functions/boom/
      DeadLetterQueue: { Type: SQS, TargetArn: !GetAtt ProbeDeadLetterQueue.Arn }
      Events:
        Exploded:
          Type: EventBridgeRule
          Properties:
            Pattern: { source: [probe.boom] }
  ProbeStateMachine:
    Type: AWS::Serverless::StateMachine
    Properties:
      DefinitionUri: statemachines/probe.asl.json
      DefinitionSubstitutions:
        EchoFunctionArn: !GetAtt EchoFunction.Arn
        BoomFunctionArn: !GetAtt BoomFunction.Arn
      Policies:
        - LambdaInvokePolicy: { FunctionName: !Ref EchoFunction }
        - LambdaInvokePolicy: { FunctionName: !Ref BoomFunction }
Outputs:
  InboxUrl: { Value: !Ref ProbeInbox }
  DeadLetterQueueUrl: { Value: !Ref ProbeDeadLetterQueue }
  StateMachineArn: { Value: !Ref ProbeStateMachine }
"""

ECHO_APP = '''
"""Forwards what it receives to the inbox queue, proving env vars and in-handler AWS calls work."""
import json
import os

import boto3


def handler(event, context):
    body = {"event": event, "greeting": os.environ["GREETING"], "function_name": context.function_name}
    boto3.client("sqs").send_message(QueueUrl=os.environ["INBOX_URL"], MessageBody=json.dumps(body))
    return {"greeting": os.environ["GREETING"], "echo": event}
'''

BOOM_APP = '''
"""Always fails with a typed error, as a remediation step does when it must be retried or caught."""


class SnapshotNotReady(Exception):
    pass


def handler(event, context):
    raise SnapshotNotReady(f"still pending for {event.get('instance_id', 'nothing')}")
'''

PROBE_ASL = """{
  "StartAt": "Echo",
  "States": {
    "Echo": {
      "Type": "Task",
      "Resource": "arn:aws:states:::lambda:invoke",
      "Parameters": {"FunctionName": "${EchoFunctionArn}", "Payload": {"instance_id.$": "$.instance_id"}},
      "ResultSelector": {"result.$": "$.Payload"},
      "ResultPath": "$.echo",
      "Next": "Boom"
    },
    "Boom": {
      "Type": "Task",
      "Resource": "arn:aws:states:::lambda:invoke",
      "Parameters": {"FunctionName": "${BoomFunctionArn}", "Payload": {"instance_id.$": "$.instance_id"}},
      "Catch": [{"ErrorEquals": ["SnapshotNotReady"], "ResultPath": "$.error", "Next": "Caught"}],
      "End": true
    },
    "Caught": {"Type": "Pass", "End": true}
  }
}
"""


def write_probe_app(root: Path) -> Path:
    """A minimal SAM repository: template.yaml, functions/<name>/app.py, statemachines/."""
    (root / "functions" / "echo").mkdir(parents=True)
    (root / "functions" / "boom").mkdir(parents=True)
    (root / "statemachines").mkdir()
    (root / "functions" / "echo" / "app.py").write_text(textwrap.dedent(ECHO_APP), encoding="utf-8")
    (root / "functions" / "boom" / "app.py").write_text(textwrap.dedent(BOOM_APP), encoding="utf-8")
    (root / "statemachines" / "probe.asl.json").write_text(PROBE_ASL, encoding="utf-8")
    template = root / "template.yaml"
    template.write_text(PROBE_TEMPLATE, encoding="utf-8")
    return template


@pytest.fixture(scope="session")
def local_aws() -> Iterator[LocalAws]:
    with LocalAws() as aws:
        yield aws


@pytest.fixture(scope="session")
def local_session(local_aws: LocalAws) -> LocalSession:
    return LocalSession(local_aws)


@pytest.fixture
def deployment(local_aws: LocalAws, local_session: LocalSession) -> Deployment:
    # Functions still being written are deployed without code and reported, not silently dropped.
    return local_session.get("guard", lambda: local_aws.deploy(ENFORCE_FAST, allow_missing_code=True))


@pytest.fixture(scope="session")
def probe_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_probe_app(tmp_path_factory.mktemp("probe-app"))


@pytest.fixture
def probe(local_aws: LocalAws, local_session: LocalSession, probe_template: Path) -> Deployment:
    return local_session.get(
        "probe", lambda: local_aws.deploy(stack_name="probe", template_path=probe_template)
    )


@pytest.fixture
def probe_router(local_aws: LocalAws, probe: Deployment) -> EventRouter:
    return EventRouter(probe, local_aws.session())


# ---------------------------------------------------------------------- canary rollouts (test_canary*.py)


@pytest.fixture
def canary_machine(deployment: Deployment) -> str:
    return str(deployment.physical_ids["CanaryStateMachine"])


@pytest.fixture
def alert_queue(local_aws: LocalAws, local_session: LocalSession, deployment: Deployment) -> str:
    def subscribe() -> str:
        clients = local_aws.clients()
        url = clients.sqs.create_queue(QueueName=f"canary-alerts-{uuid.uuid4().hex[:8]}")["QueueUrl"]
        attributes = clients.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        topic = str(deployment.physical_ids["AlertTopic"])
        clients.sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=attributes["Attributes"]["QueueArn"])
        return str(url)

    return local_session.get("canary-alerts", subscribe)


@pytest.fixture
def rollout(
    local_aws: LocalAws, deployment: Deployment, canary_machine: str, alert_queue: str
) -> Iterator[Rollout]:
    """A fresh sample target: version 1 behind `live`, version 2 published (improved). Execution status
    changes reach the template's rules, as Step Functions sends them to EventBridge."""
    target = deploy_target(local_aws, stack_name=f"canary-{uuid.uuid4().hex[:6]}")
    clients = local_aws.clients()
    new = publish_version(clients.lambda_, target.function, "improved")
    stop = EventRouter(deployment, local_aws.session()).hear_executions()
    try:
        ledger = str(deployment.physical_ids["IncidentLedger"])
        yield Rollout(target, "1", new, clients, canary_machine, alert_queue, ledger)
    finally:
        stop()


# ------------------------------------------------------------------ the drill (test_drill, test_local_config)


@pytest.fixture(scope="session")
def every_scenario(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[int, dict[str, Any]]:
    """The exit code and report of one `drill --json` with every scenario, shared by the tests that read it
    (across pytest-xdist's workers too: the run's temporary directory is the parent of each worker's)."""
    if not hasattr(request.config, "workerinput"):  # one process: the fixture's own cache shares it
        return every_scenario_once(None)
    return every_scenario_once(tmp_path_factory.getbasetemp().parent / "every-scenario.json")
