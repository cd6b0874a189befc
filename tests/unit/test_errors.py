"""Passing AWS failures are retried by the state machine; lasting ones go to the failure path. The
error's class name is that contract."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from immutable_guard.errors import AwsCallFailed, AwsCallThrottled, retry_transient_aws_errors

ASL = Path(__file__).resolve().parents[2] / "statemachines" / "remediation.asl.json"


def client_error(code: str, status: int = 400) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "Op"
    )


def failing_step(error: BaseException) -> object:
    @retry_transient_aws_errors
    def step() -> None:
        try:
            raise error
        except ClientError as exc:
            raise AwsCallFailed(f"instance i-1: {exc}") from exc

    return step


@pytest.mark.parametrize(
    "error",
    [client_error("Throttling"), client_error("RequestLimitExceeded"), client_error("Whatever", 503)],
)
def test_passing_failures_become_aws_call_throttled(error: ClientError) -> None:
    with pytest.raises(AwsCallThrottled, match="i-1"):
        failing_step(error)()  # type: ignore[operator]


@pytest.mark.parametrize("code", ["AccessDenied", "UnauthorizedOperation", "InvalidInstanceID.NotFound"])
def test_lasting_failures_stay_aws_call_failed(code: str) -> None:
    with pytest.raises(AwsCallFailed) as caught:
        failing_step(client_error(code))()  # type: ignore[operator]
    assert type(caught.value) is AwsCallFailed


def test_an_escaped_connection_error_is_transient() -> None:
    @retry_transient_aws_errors
    def step() -> None:
        raise EndpointConnectionError(endpoint_url="https://ec2.us-east-1.amazonaws.com")

    with pytest.raises(AwsCallThrottled):
        step()


def test_every_remediation_task_retries_throttling_and_nothing_lasting() -> None:
    states = json.loads(re.sub(r"\$\{\w+\}", "1", ASL.read_text()))["States"]
    for name, state in states.items():
        if state["Type"] != "Task" or name == "AlertFailed":
            continue
        retried = {error for rule in state["Retry"] for error in rule["ErrorEquals"]}
        assert "AwsCallThrottled" in retried, name
        assert not retried & {"AwsCallFailed", "States.ALL", "NukeRefused", "EvidenceIncomplete"}, name
