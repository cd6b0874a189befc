"""Fixtures for unit tests of the shared package: moto-backed clients and the ledger table."""

from __future__ import annotations

import json
from collections.abc import Iterator

import boto3
import pytest
from immutable_guard.clients import Clients
from immutable_guard.ledger import IncidentLedger
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
