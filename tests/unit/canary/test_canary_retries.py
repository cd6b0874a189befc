"""The canary's steps retry passing AWS failures as the remediation steps do: a throttled or failing AWS
call surfaces as AwsCallThrottled (the error class name is the contract with the state machine), and
canary.asl.json retries that with the remediation's back-off instead of rolling the release back."""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from botocore.exceptions import ClientError
from canary_names import EXECUTION, LEDGER_TABLE
from immutable_guard.canary.lock import RolloutLock
from immutable_guard.clients import Clients
from immutable_guard.errors import AwsCallThrottled

REPO = Path(__file__).resolve().parents[3]
# The canary functions' tasks; the hooks are the operator's functions, Rollback and its alert retry all.
OWN_STEPS = (
    "Preflight",
    "AlertStarted",
    "Shift",
    "HealthGate",
    "Promote",
    "AlertPromoted",
    "AlertRolledBack",
    "AlertSuperseded",
    "ReleaseLock",
    "WaitForPerson",
)


def _states(name: str) -> dict[str, Any]:
    text = (REPO / "statemachines" / name).read_text()
    return dict(json.loads(re.sub(r"\$\{\w+\}", "1", text))["States"])


def _retry_of(state: dict[str, Any], error: str) -> dict[str, Any]:
    (rule,) = [rule for rule in state["Retry"] if error in rule["ErrorEquals"]]
    return rule


def test_every_canary_step_retries_passing_aws_failures_like_the_remediation() -> None:
    canary, remediation = _states("canary.asl.json"), _states("remediation.asl.json")
    tasks = {name for name, state in canary.items() if state["Type"] == "Task"}
    assert set(OWN_STEPS) | {"PreTrafficHook", "PostTrafficHook", "Rollback", "AlertRollbackFailed"} == tasks
    # The remediation's retry of a passing failure, from the step that contains a server
    reference = _retry_of(remediation["Contain"], "AwsCallThrottled")
    for name in OWN_STEPS:
        rule = _retry_of(canary[name], "AwsCallThrottled")
        assert rule == reference, name
        retried = {error for r in canary[name]["Retry"] for error in r["ErrorEquals"]}
        # A lasting failure or a refusal is not retried: it rolls back (or fails the execution) at once
        assert not retried & {"AwsCallFailed", "States.ALL", "CanaryRefused", "AliasChanged"}, name
    # Invoking an operator's hook retries Lambda's own passing failures with the same back-off
    for hook in ("PreTrafficHook", "PostTrafficHook"):
        rule = _retry_of(canary[hook], "Lambda.TooManyRequestsException")
        assert {k: v for k, v in rule.items() if k != "ErrorEquals"} == {
            k: v for k, v in reference.items() if k != "ErrorEquals"
        }
    # The rollback and its critical alert retry everything
    for name in ("Rollback", "AlertRollbackFailed"):
        assert canary[name]["Retry"][0]["ErrorEquals"] == ["States.ALL"]


# ------------------------------------------------------------------------- the handlers as Lambda runs them
@dataclass
class Context:
    function_name: str = "immutable-guard-canary"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:immutable-guard-canary"
    aws_request_id: str = "00000000-0000-0000-0000-000000000000"


def _handler(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"{name}_retry_test", REPO / "functions" / name / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def throttle(clients: Clients, service: str) -> None:
    """Every call of ``service`` fails as a throttled request does once boto3's own retries are spent."""
    code, status = {"lambda": ("TooManyRequestsException", 429)}.get(service, ("Throttling", 400))

    def refuse(model: Any, **_: Any) -> None:
        raise ClientError(
            {
                "Error": {"Code": code, "Message": "Rate exceeded"},
                "ResponseMetadata": {"HTTPStatusCode": status},
            },
            model.name,
        )

    client = {"lambda": clients.lambda_, "cloudwatch": clients.cloudwatch, "sns": clients.sns}[service]
    client.meta.events.register(f"before-call.{client.meta.service_model.service_id.hyphenize()}", refuse)


Request = Callable[[dict[str, Any]], dict[str, Any]]
CASES: dict[str, tuple[str, Request]] = {
    "canary_preflight": (
        "lambda",
        lambda plan: {
            "request": {"function": plan["function"], "alias": plan["alias"], "target_version": "2"},
            "execution": EXECUTION,
        },
    ),
    "canary_shift": ("lambda", lambda plan: {"action": "shift", "plan": plan, "index": 0}),
    # The gate's first call reads the alias (is it as the rollout left it?), before any metric
    "canary_gate": (
        "lambda",
        lambda plan: {
            "plan": plan,
            "step": {
                "index": 0,
                "step": 1,
                "percent": 10,
                "weight": 0.1,
                "shifted_at": "2026-01-01T00:00:00.000000Z",
            },
            "checks": 0,
        },
    ),
    "canary_rollback": ("lambda", lambda plan: {"plan": plan, "failure": {"state": "Shift"}}),
    "canary_notify": ("sns", lambda plan: {"stage": "canary_started", "plan": plan}),
}


@pytest.mark.filterwarnings("ignore:No application metrics")  # a failed step emits none
@pytest.mark.parametrize("function", sorted(CASES))
def test_a_throttled_aws_call_in_a_canary_step_is_retried_by_the_state_machine(
    aws: Clients, plan: dict[str, Any], monkeypatch: pytest.MonkeyPatch, function: str
) -> None:
    service, request = CASES[function]
    # Given a canary step whose AWS calls are throttled beyond boto3's own retries
    monkeypatch.setenv("ALERT_TOPIC_ARN", aws.sns.create_topic(Name="alerts")["TopicArn"])
    monkeypatch.setenv("LEDGER_TABLE", LEDGER_TABLE)
    app = _handler(function)
    throttle(aws, service)
    if hasattr(app, "lock"):
        monkeypatch.setattr(app, "lock", lambda: RolloutLock(aws.dynamodb, LEDGER_TABLE))
    if hasattr(app, "clients"):
        monkeypatch.setattr(app, "clients", lambda: aws)
    else:
        settings = app.dependencies()[0]
        monkeypatch.setattr(app, "dependencies", lambda: (settings, aws))
    # When Step Functions invokes it, Then it fails with the error the state machine retries
    with pytest.raises(AwsCallThrottled):
        app.handler(request(plan), Context())
