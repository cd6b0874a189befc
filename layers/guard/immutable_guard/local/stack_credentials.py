"""Whose credentials CloudFormation acts with on a stack update, which moto ignores (it updates any stack
for anyone, and forgets a stack's service role on the next update that names none).

What AWS does, and this runtime models for the stack updates the guard's functions request:
- UpdateStack itself is authorized against the caller: cloudformation:UpdateStack on the stack, and
  iam:PassRole (to cloudformation.amazonaws.com) on a RoleARN it passes. A refusal is the call's error.
- The update then runs as the stack's service role, or, when the stack has none, "a temporary session
  that it generates from your user credentials"
  (https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/using-iam-servicerole.html). A
  resource that principal may not create or delete fails: the resource is UPDATE_FAILED with the
  service's AccessDenied message naming the permission, and the stack rolls back to
  UPDATE_ROLLBACK_COMPLETE; the UpdateStack call itself succeeded.
- The service role stays with the stack: "If you don't specify a value, CloudFormation uses the role
  that was previously associated with the stack", and passing it again is not needed
  (https://docs.aws.amazon.com/AWSCloudFormation/latest/APIReference/API_UpdateStack.html).

The model checks, for the acting principal, the actions an instance replacement needs
(`ACTIONS_BY_TYPE`, for the resource types the stack holds), not every handler permission of every
resource type. A caller it does not know (the runtime's own sessions: the operator, the tests) acts as an
administrator, as before.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from botocore.exceptions import ClientError

from immutable_guard.local.iam_policies import evaluate, role_policies, role_trusts_service

CLOUDFORMATION = "cloudformation.amazonaws.com"
# What CloudFormation calls to replace an instance: launch the new one (its launch template's new
# version first), terminate the old one in the cleanup phase.
ACTIONS_BY_TYPE: dict[str, tuple[str, ...]] = {
    "AWS::EC2::Instance": ("ec2:RunInstances", "ec2:TerminateInstances"),
    "AWS::EC2::LaunchTemplate": ("ec2:CreateLaunchTemplateVersion",),
}

_lock = threading.Lock()
# Stack id -> (role, session ARN) of the guard function whose UpdateStack is in flight: the server thread
# that applies the update learns who asked (moto's server knows no caller).
_callers: dict[str, tuple[str, str]] = {}


def _denied(operation: str, caller: str, action: str, resource: str) -> ClientError:
    message = (
        f"User: {caller} is not authorized to perform: {action} on resource: {resource} "
        f"because no identity-based policy allows the {action} action"
    )
    response: Any = {
        "Error": {"Code": "AccessDenied", "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": 403},
    }
    return ClientError(response, operation)


def _stack(account_id: str, region: str, name_or_id: str) -> Any:
    from moto.cloudformation.models import cloudformation_backends

    try:
        return cloudformation_backends[account_id][region].get_stack(name_or_id)
    except Exception:  # moto's ValidationError: the call itself will say the stack does not exist
        return None


def _session_arn(role_arn: str, function_name: str) -> str:
    account = role_arn.split(":")[4]
    return f"arn:aws:sts::{account}:assumed-role/{role_arn.rsplit('/', 1)[-1]}/{function_name}"


@contextmanager
def function_update_stack(function: Any, model: Any, params: dict[str, Any]) -> Iterator[None]:
    """Around a guard function's call (a lambda_runner call check): authorize UpdateStack against the
    function's role, and let the update know who asked while it is applied."""
    if model.service_model.service_name != "cloudformation" or model.name != "UpdateStack":
        yield
        return
    role_arn = str(function.role)
    account, region = role_arn.split(":")[4], str(function.region)
    stack = _stack(account, region, str(params.get("StackName", "")))
    if stack is None:
        yield
        return
    caller = _session_arn(role_arn, str(function.function_name))
    policies = role_policies(account, role_arn) or []
    context = {
        "aws:RequestedRegion": region,
        **{f"aws:ResourceTag/{key}": str(value) for key, value in (stack.tags or {}).items()},
    }
    if not evaluate(policies, "cloudformation:UpdateStack", stack.stack_id, context).allowed:
        raise _denied("UpdateStack", caller, "cloudformation:UpdateStack", stack.stack_id)
    passed = params.get("RoleARN")
    if (
        passed
        and not evaluate(policies, "iam:PassRole", passed, {"iam:PassedToService": CLOUDFORMATION}).allowed
    ):
        raise _denied("UpdateStack", caller, "iam:PassRole", passed)
    with _lock:
        _callers[stack.stack_id] = (role_arn, caller)
    try:
        yield
    finally:
        with _lock:
            _callers.pop(stack.stack_id, None)


def refusal_of_update(stack: Any, role_arn: str | None) -> tuple[str, str] | None:
    """(resource logical id, reason) when the principal the update runs as may not do it; None when it
    may, or when it would run as a caller this model does not know (an administrator)."""
    acting = role_arn or stack.role_arn
    with _lock:
        caller = _callers.get(stack.stack_id)
    if acting is None and caller is None:
        return None
    account = stack.account_id
    if acting is not None:
        if not role_trusts_service(account, acting, CLOUDFORMATION):
            return "", f"Role {acting} is invalid or cannot be assumed"
        policies, who = role_policies(account, acting) or [], acting
    else:
        assert caller is not None
        policies, who = role_policies(account, caller[0]) or [], caller[1]
    for logical_id, resource_type in _resource_types(stack):
        for action in ACTIONS_BY_TYPE.get(resource_type, ()):
            if not evaluate(policies, action, "*").allowed:
                return logical_id, (
                    'Resource handler returned message: "You are not authorized to perform this '
                    f"operation. User: {who} is not authorized to perform: {action} because no "
                    f'identity-based policy allows the {action} action (Service: Ec2, Status Code: 403)" '
                    "(HandlerErrorCode: AccessDenied)"
                )
    return None


def _resource_types(stack: Any) -> list[tuple[str, str]]:
    resources = (stack.resource_map._resource_json_map or {}).items()
    # Launch templates first: CloudFormation makes the new version before it replaces the instance.
    found = [(lid, str(r.get("Type"))) for lid, r in resources if isinstance(r, dict)]
    return sorted(found, key=lambda item: item[1] != "AWS::EC2::LaunchTemplate")
