"""Fixtures for unit tests of the shared package: moto-backed clients and the ledger table."""

from __future__ import annotations

import json
from collections.abc import Iterator

import boto3
import pytest
from immutable_guard.clients import Clients
from immutable_guard.ledger import IncidentLedger
from immutable_guard.model import Mode, PostEvidenceAction
from immutable_guard.settings import DetectSettings
from moto import mock_aws

LEDGER_TABLE = "immutable-guard-ledger"
EVENTS_ACCOUNT = "111122223333"  # the account of every sample event in events/


@pytest.fixture
def aws() -> Iterator[Clients]:
    with mock_aws():
        yield Clients(boto3.Session(region_name="us-east-1"))


@pytest.fixture
def ledger(aws: Clients) -> IncidentLedger:
    # The key schema of template.yaml's IncidentLedger.
    aws.dynamodb.create_table(
        TableName=LEDGER_TABLE,
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    # Bound to the account and region of the sample events: records that name an instance are kept per
    # account and region (issue 14).
    return IncidentLedger(aws.dynamodb, LEDGER_TABLE).at(EVENTS_ACCOUNT, "us-east-1")


# A stack named like the guard's default, with only what the CLI commands look up by output: the ledger
# table, and the release function's name.
GUARD_STACK = "immutable-guard"
_LEDGER_ONLY_STACK = {
    "Resources": {
        "IncidentLedger": {
            "Type": "AWS::DynamoDB::Table",
            "Properties": {
                "BillingMode": "PAY_PER_REQUEST",
                "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
                "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
            },
        }
    },
    "Outputs": {
        "IncidentLedgerName": {"Value": {"Ref": "IncidentLedger"}},
        "ReleaseFunctionName": {"Value": "immutable-guard-release"},
    },
}


@pytest.fixture
def deployed_ledger(aws: Clients) -> IncidentLedger:
    """The ledger of a deployed stack `immutable-guard`, found as the CLI finds it: by the stack's output."""
    aws.cloudformation.create_stack(StackName=GUARD_STACK, TemplateBody=json.dumps(_LEDGER_ONLY_STACK))
    outputs = aws.cloudformation.describe_stacks(StackName=GUARD_STACK)["Stacks"][0]["Outputs"]
    table = next(o["OutputValue"] for o in outputs if o["OutputKey"] == "IncidentLedgerName")
    return IncidentLedger(aws.dynamodb, table)


@pytest.fixture
def detect_settings(aws: Clients, ledger: IncidentLedger) -> DetectSettings:
    """Detect's settings as template.yaml sets them (single-account mode), on the moto ledger table."""
    return DetectSettings(
        ledger_table="immutable-guard-ledger",
        alert_topic_arn=aws.sns.create_topic(Name="alerts")["TopicArn"],
        mode=Mode.ENFORCE,
        scope_tag_key="immutable",
        scope_tag_value="true",
        max_incidents_per_hour=5,
        post_evidence_action=PostEvidenceAction.TERMINATE,
        remediation_state_machine_arn="arn:aws:states:us-east-1:123456789012:stateMachine:remediation",
        dead_letter_queue_url=aws.sqs.create_queue(QueueName="dlq")["QueueUrl"],
    )
