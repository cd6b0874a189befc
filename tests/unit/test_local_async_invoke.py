"""The local runtime's asynchronous Lambda invocations (moto_fixes section q): `Invoke` with
`InvocationType: Event` answers 202 before the function runs, as Lambda queues the event
(https://docs.aws.amazon.com/lambda/latest/dg/invocation-async.html); moto ran it inside the call."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from immutable_guard.clients import Clients
from immutable_guard.local import lambda_runner, moto_fixes

# Waits for the test to open a barrier (a file), then writes what it saw. Run inside the Invoke call, as
# moto did, it would find the barrier closed: the test opens it only after Invoke answered.
BARRIER_APP = """
import json, os, time
from pathlib import Path


def handler(event, context):
    barrier, out = Path(event["barrier"]), Path(event["out"])
    for _ in range(300):
        if barrier.exists():
            out.write_text("ran after the caller was answered")
            return {}
        time.sleep(0.05)
    out.write_text("ran inside the call: the barrier never opened")
    return {}
"""


@pytest.fixture
def barrier_function(aws: Clients, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    moto_fixes.async_invocations_as_in_aws(
        lambda target, name, value: monkeypatch.setattr(target, name, value, raising=False)
    )
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("app.py", BARRIER_APP)
    role = aws._session.client("iam").create_role(RoleName="barrier", AssumeRolePolicyDocument="{}")
    aws.lambda_.create_function(
        FunctionName="barrier",
        Role=role["Role"]["Arn"],
        Runtime="python3.12",
        Handler="app.handler",
        Code={"ZipFile": archive.getvalue()},
    )
    lambda_runner.install()
    try:
        yield "barrier"
    finally:
        moto_fixes.wait_for_async_invocations()
        lambda_runner.uninstall()


def test_an_asynchronous_invocation_is_answered_before_the_function_runs(
    aws: Clients, barrier_function: str, tmp_path: Path
) -> None:
    barrier, out = tmp_path / "barrier", tmp_path / "out"
    # When a caller invokes the function asynchronously
    answer = aws.lambda_.invoke(
        FunctionName=barrier_function,
        InvocationType="Event",
        Payload=json.dumps({"barrier": str(barrier), "out": str(out)}).encode(),
    )
    # Then Lambda answers 202 with no payload, before the function has done anything
    assert answer["StatusCode"] == 202
    assert answer["Payload"].read() == b""
    assert not out.exists()
    # and the function runs afterwards
    barrier.touch()
    moto_fixes.wait_for_async_invocations()
    assert out.read_text() == "ran after the caller was answered"


def test_an_asynchronous_invocation_of_an_unknown_function_is_refused_at_once(
    aws: Clients, barrier_function: str
) -> None:
    with pytest.raises(ClientError) as refused:
        aws.lambda_.invoke(FunctionName="no-such-function", InvocationType="Event", Payload=b"{}")
    assert refused.value.response["Error"]["Code"] == "ResourceNotFoundException"
