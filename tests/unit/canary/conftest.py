"""A canary target in moto: a tagged function with versions 1 and 2, the alias `live` on version 1, and an
alarm; plus helpers that feed the Lambda metrics the gate reads (moto emits none)."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from canary_names import EXECUTION, LEDGER_TABLE, Target
from immutable_guard.canary.lock import RolloutLock
from immutable_guard.canary.plan import parse_request
from immutable_guard.canary.traffic import CANARY_TAG_KEY, CANARY_TAG_VALUE, preflight
from immutable_guard.clients import Clients
from immutable_guard.ledger import IncidentLedger


def _zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("app.py", "def handler(event, context):\n    return event\n")
    return buffer.getvalue()


def create_function(aws: Clients, name: str, tagged: bool = True) -> str:
    iam = aws._session.client("iam", region_name="us-east-1")
    role = iam.create_role(RoleName=f"{name}-role", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    tags = {CANARY_TAG_KEY: CANARY_TAG_VALUE} if tagged else {}
    aws.lambda_.create_function(
        FunctionName=name,
        Role=role,
        Runtime="python3.12",
        Handler="app.handler",
        Code={"ZipFile": _zip()},
        Tags=tags,
    )
    return name


@pytest.fixture
def make_function(aws: Clients) -> Callable[..., str]:
    return lambda name, tagged=True: create_function(aws, name, tagged)


@pytest.fixture
def target(aws: Clients) -> Target:
    function = create_function(aws, "orders")
    aws.lambda_.publish_version(FunctionName=function)
    aws.lambda_.update_function_configuration(FunctionName=function, Environment={"Variables": {"V": "2"}})
    aws.lambda_.publish_version(FunctionName=function)
    aws.lambda_.create_alias(FunctionName=function, Name="live", FunctionVersion="1")
    aws.cloudwatch.put_metric_alarm(
        AlarmName="orders-live-errors",
        Namespace="AWS/Lambda",
        MetricName="Errors",
        Dimensions=[
            {"Name": "FunctionName", "Value": function},
            {"Name": "Resource", "Value": f"{function}:live"},
        ],
        Statistic="Sum",
        Period=60,
        EvaluationPeriods=1,
        Threshold=0,
        ComparisonOperator="GreaterThanThreshold",
    )
    aws.cloudwatch.set_alarm_state(AlarmName="orders-live-errors", StateValue="OK", StateReason="test")
    return Target(function, "live", "orders-live-errors")


@pytest.fixture
def lock(aws: Clients, ledger: IncidentLedger) -> RolloutLock:
    return RolloutLock(aws.dynamodb, LEDGER_TABLE)


@pytest.fixture
def plan(aws: Clients, target: Target, lock: RolloutLock) -> dict[str, object]:
    request = parse_request(
        {
            "function": target.function,
            "alias": target.alias,
            "target_version": "2",
            "alarms": [target.alarm],
            "min_invocations": 10,
            "max_holds": 2,
            # Judged as at the end of a settled bake unless a test says otherwise.
            "bake_seconds": 0,
            "metric_delay_seconds": 0,
        }
    )
    return preflight(aws.lambda_, aws.cloudwatch, request, lock, EXECUTION)


Served = Callable[[str, int, int], None]


@pytest.fixture
def served(aws: Clients, target: Target) -> Served:
    """Record that a version of the alias served ``invocations`` with ``errors``, as Lambda would."""

    def record(version: str, invocations: int, errors: int = 0) -> None:
        dimensions = [
            {"Name": "FunctionName", "Value": target.function},
            {"Name": "Resource", "Value": f"{target.function}:{target.alias}"},
            {"Name": "ExecutedVersion", "Value": version},
        ]
        aws.cloudwatch.put_metric_data(
            Namespace="AWS/Lambda",
            MetricData=[
                {
                    "MetricName": "Invocations",
                    "Dimensions": dimensions,
                    "Value": invocations,
                    "Unit": "Count",
                    "Timestamp": datetime.now(UTC),
                },
                {
                    "MetricName": "Errors",
                    "Dimensions": dimensions,
                    "Value": errors,
                    "Unit": "Count",
                    "Timestamp": datetime.now(UTC),
                },
            ],
        )

    return record
