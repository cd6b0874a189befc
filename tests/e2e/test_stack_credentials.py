"""The local runtime authorizes a guard function's stack update as AWS does, where moto lets anyone update
anything: UpdateStack and the role it passes are checked against the function's role, and the update runs
as the stack's service role, or, when the stack has none, as the function, whose narrow role cannot
replace a server. A function holding the Replace function's exact role makes the calls here, the way the
Replace function did before it refused stacks without a service role.
(CloudFormation service role: https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/using-iam-servicerole.html;
UpdateStack RoleARN: https://docs.aws.amazon.com/AWSCloudFormation/latest/APIReference/API_UpdateStack.html)"""

from __future__ import annotations

import io
import json
import textwrap
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from immutable_guard.clients import Clients
from immutable_guard.drill.world import REPLACEABLE_STACK_TAG, deploy_workload_role
from immutable_guard.local import Deployment, LocalAws, LocalSession, lambda_runner

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
UPDATER = "stack-updater"
UPDATER_APP = '''
"""Bumps a stack's ReplacementGeneration, as the Replace function does, optionally passing a role."""
import boto3
from botocore.exceptions import ClientError


def handler(event, context):
    cloudformation = boto3.client("cloudformation")
    stack = cloudformation.describe_stacks(StackName=event["stack"])["Stacks"][0]
    parameters = [
        {"ParameterKey": p["ParameterKey"], "ParameterValue": str(int(p["ParameterValue"]) + 1)}
        if p["ParameterKey"] == "ReplacementGeneration"
        else {"ParameterKey": p["ParameterKey"], "UsePreviousValue": True}
        for p in stack["Parameters"]
    ]
    request = {"StackName": stack["StackId"], "UsePreviousTemplate": True, "Parameters": parameters}
    if event.get("role"):
        request["RoleARN"] = event["role"]
    try:
        return {"stack_id": cloudformation.update_stack(**request)["StackId"]}
    except ClientError as exc:
        return {"error": exc.response["Error"]}
'''

Invoke = Callable[[dict[str, Any]], dict[str, Any]]


@pytest.fixture
def clients(local_aws: LocalAws) -> Clients:
    return local_aws.clients()


@pytest.fixture
def workload_role(local_session: LocalSession, clients: Clients, deployment: Deployment) -> str:
    body = (EXAMPLES / "golden-workload-role.yaml").read_text("utf-8")
    return local_session.get(
        "credentials-workload-role", lambda: deploy_workload_role(clients, body, "creds-role")
    )


@pytest.fixture
def updater(
    local_session: LocalSession,
    clients: Clients,
    deployment: Deployment,
    tmp_path_factory: pytest.TempPathFactory,
) -> Invoke:
    """A function run with the deployed Replace function's own role."""

    def create() -> str:
        folder = tmp_path_factory.mktemp("updater")
        (folder / "app.py").write_text(textwrap.dedent(UPDATER_APP), encoding="utf-8")
        lambda_runner.register(UPDATER, folder)
        archive = io.BytesIO()
        with zipfile.ZipFile(archive, "w") as zipped:
            zipped.write(folder / "app.py", "app.py")
        clients.lambda_.create_function(
            FunctionName=UPDATER,
            Runtime="python3.12",
            Role=deployment.arn("ReplaceFunctionRole"),
            Handler="app.handler",
            Code={"ZipFile": archive.getvalue()},
        )
        return UPDATER

    name = local_session.get("stack-updater", create)

    def invoke(event: dict[str, Any]) -> dict[str, Any]:
        response = clients.lambda_.invoke(FunctionName=name, Payload=json.dumps(event).encode())
        payload: dict[str, Any] = json.loads(response["Payload"].read())
        assert "FunctionError" not in response, payload
        return payload

    return invoke


def _workload(clients: Clients, *, role_arn: str | None = None, tagged: bool = True) -> str:
    name = f"creds-{uuid.uuid4().hex[:8]}"
    clients.cloudformation.create_stack(
        StackName=name,
        TemplateBody=(EXAMPLES / "golden-workload.yaml").read_text("utf-8"),
        Tags=[{"Key": REPLACEABLE_STACK_TAG, "Value": "true"}] if tagged else [],
        **({"RoleARN": role_arn} if role_arn else {}),
    )
    return name


def _stack(clients: Clients, name: str) -> dict[str, Any]:
    return dict(clients.cloudformation.describe_stacks(StackName=name)["Stacks"][0])


def _standalone(clients: Clients, name: str) -> str:
    return str(
        clients.cloudformation.describe_stack_resource(StackName=name, LogicalResourceId="StandaloneServer")[
            "StackResourceDetail"
        ]["PhysicalResourceId"]
    )


def _generation(stack: dict[str, Any]) -> str:
    return next(
        p["ParameterValue"] for p in stack["Parameters"] if p["ParameterKey"] == "ReplacementGeneration"
    )


def test_an_update_of_a_stack_without_a_service_role_runs_as_the_function_and_rolls_back(
    clients: Clients, updater: Invoke
) -> None:
    # Given a declared stack created without a service role
    name = _workload(clients)
    server = _standalone(clients, name)
    # When a function with Replace's role bumps its generation
    result = updater({"stack": name})
    # Then CloudFormation accepts the call, acts with the function's credentials, and cannot replace the
    # server: the resource fails naming the permission, and the stack rolls back
    assert "stack_id" in result, result
    stack = _stack(clients, name)
    assert stack["StackStatus"] == "UPDATE_ROLLBACK_COMPLETE"
    events = clients.cloudformation.describe_stack_events(StackName=name)["StackEvents"]
    failed = [e for e in events if e["ResourceStatus"] == "UPDATE_FAILED"]
    assert len(failed) == 1
    assert "ReplaceFunctionRole" in failed[0]["ResourceStatusReason"]
    assert (
        "is not authorized to perform: ec2:CreateLaunchTemplateVersion" in failed[0]["ResourceStatusReason"]
    )
    # And nothing changed
    assert _generation(stack) == "1" and _standalone(clients, name) == server


def test_an_update_of_a_stack_with_a_service_role_runs_as_that_role_which_it_keeps(
    clients: Clients, updater: Invoke, workload_role: str
) -> None:
    # Given a declared stack run by the golden workload's service role
    name = _workload(clients, role_arn=workload_role)
    server = _standalone(clients, name)
    # When the same function bumps its generation, naming no role
    result = updater({"stack": name})
    # Then the update runs as the stack's role and replaces the server
    assert "stack_id" in result, result
    stack = _stack(clients, name)
    assert stack["StackStatus"] == "UPDATE_COMPLETE" and _generation(stack) == "2"
    assert _standalone(clients, name) != server
    # And the stack keeps its role (moto forgets it; CloudFormation does not)
    assert stack["RoleARN"] == workload_role


def test_a_stack_the_functions_policy_does_not_cover_is_refused(clients: Clients, updater: Invoke) -> None:
    # Given a stack nobody declared (not tagged, not listed)
    name = _workload(clients, tagged=False)
    # When the function tries to update it
    result = updater({"stack": name})
    # Then the call is refused as IAM refuses it, and the stack is untouched
    assert result["error"]["Code"] == "AccessDenied"
    assert "is not authorized to perform: cloudformation:UpdateStack" in result["error"]["Message"]
    assert _stack(clients, name)["StackStatus"] == "CREATE_COMPLETE"


def test_passing_a_role_the_function_may_not_pass_is_refused(
    clients: Clients, updater: Invoke, workload_role: str
) -> None:
    # Given a declared stack without a service role, and a guard that names no role for Replace to pass
    name = _workload(clients)
    # When the function passes a role anyway
    result = updater({"stack": name, "role": workload_role})
    # Then the call is refused: no wildcard iam:PassRole to CloudFormation any more
    assert result["error"]["Code"] == "AccessDenied"
    assert f"iam:PassRole on resource: {workload_role}" in result["error"]["Message"]
    assert _stack(clients, name)["StackStatus"] == "CREATE_COMPLETE"
