"""The canary's wiring in template.yaml and canary.asl.json: least privilege, every failure reaches the
rollback, the rollback cannot fail silently, and the alerts keep the shared schema."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

import pytest
from immutable_guard.alerts import Alert
from immutable_guard.canary.alerts import ROLLED_BACK, STAGES, CanaryStageEvent, build_alert
from immutable_guard.canary.cli import add_canary_parser, request_document
from immutable_guard.template import load_template

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template(REPO / "template.yaml")


@pytest.fixture(scope="module")
def states() -> dict[str, Any]:
    text = (REPO / "statemachines" / "canary.asl.json").read_text()
    return dict(json.loads(re.sub(r"\$\{\w+\}", "1", text))["States"])


# (What each canary function is granted is held to what it was seen calling: tests/security.)
CANARY_FUNCTIONS = {
    "CanaryPreflightFunction",
    "CanaryShiftFunction",
    "CanaryGateFunction",
    "CanaryRollbackFunction",
    "CanaryNotifyFunction",
}


@pytest.mark.parametrize("logical_id", ["CanaryShiftFunction", "CanaryRollbackFunction"])
def test_aliases_can_only_be_moved_on_functions_tagged_for_the_canary(
    template: dict[str, Any], logical_id: str
) -> None:
    for policy in template["Resources"][logical_id]["Properties"]["Policies"]:
        for statement in policy["Statement"]:
            if "lambda:UpdateAlias" in statement["Action"]:
                assert statement["Condition"] == {
                    "StringEquals": {"aws:ResourceTag/immutable-guard:canary": "allowed"}
                }


def test_the_state_machine_invokes_only_its_functions_and_tagged_hooks(template: dict[str, Any]) -> None:
    machine = template["Resources"]["CanaryStateMachine"]["Properties"]
    policies = machine["Policies"]
    invoked = {p["LambdaInvokePolicy"]["FunctionName"]["Ref"] for p in policies if "LambdaInvokePolicy" in p}
    substituted = {value["Fn::GetAtt"][0] for value in machine["DefinitionSubstitutions"].values()}
    assert invoked == substituted == CANARY_FUNCTIONS
    (hooks,) = [p["Statement"][0] for p in policies if "Statement" in p]
    assert hooks["Action"] == "lambda:InvokeFunction"
    assert hooks["Condition"] == {"StringEquals": {"aws:ResourceTag/immutable-guard:canary": "allowed"}}


def test_every_failure_after_preflight_reaches_the_rollback(states: dict[str, Any]) -> None:
    for name, state in states.items():
        if state["Type"] != "Task" or name in {"Preflight", "Rollback"} or name.startswith("Alert"):
            continue
        catch = state["Catch"][0]
        assert catch["ErrorEquals"] == ["States.ALL"], name
        assert states[catch["Next"]]["Next"] == "Rollback", name
    assert states["GateVerdict?"]["Default"] == "GateFailed" and states["GateFailed"]["Next"] == "Rollback"
    for verdict in ("PreTrafficHookVerdict?", "PostTrafficHookVerdict?"):
        assert states[states[verdict]["Default"]]["Next"] == "Rollback"


def test_hooks_have_a_timeout_and_the_rollback_retries_then_alerts(states: dict[str, Any]) -> None:
    for hook in ("PreTrafficHook", "PostTrafficHook"):
        assert states[hook]["TimeoutSecondsPath"] == "$.plan.result.hook_timeout_seconds"
        assert "waitForTaskToken" not in states[hook]["Resource"]
    retry = states["Rollback"]["Retry"][0]
    assert retry["ErrorEquals"] == ["States.ALL"] and retry["MaxAttempts"] >= 3
    assert states["Rollback"]["Catch"][0]["Next"] == "AlertRollbackFailed"
    assert states["AlertRollbackFailed"]["Next"] == "RollbackFailed"
    assert states["RollbackFailed"]["Type"] == "Fail" and states["RolledBack"]["Type"] == "Fail"


def test_the_only_way_to_promote_is_a_healthy_last_step(states: dict[str, Any]) -> None:
    into_promote = [n for n, s in states.items() if s.get("Next") == "Promote"]
    choices = [n for n, s in states.items() for c in s.get("Choices", []) if c.get("Next") == "Promote"]
    assert into_promote == [] and choices == ["GateVerdict?"]
    (rule,) = [c for c in states["GateVerdict?"]["Choices"] if c["Next"] == "Promote"]
    assert rule["And"] == [
        {"Variable": "$.gate.result.verdict", "StringEquals": "healthy"},
        {"Variable": "$.step.result.last", "BooleanEquals": True},
    ]
    assert states["Bake"]["SecondsPath"] == "$.plan.result.bake_seconds"


def test_canary_alerts_add_to_the_shared_schema_without_changing_it() -> None:
    plan = {
        "function": "orders",
        "alias": "live",
        "stable_version": "1",
        "target_version": "2",
        "steps": [10],
    }
    event = CanaryStageEvent(
        stage=ROLLED_BACK, plan=plan, detail={"reason": "alarm x in ALARM"}, execution="arn"
    )
    alert = build_alert(event, "123456789012", "us-east-1")
    body = alert.model_dump(mode="json")
    assert set(Alert.model_fields) < set(body) and body["rollout"]["function"] == "orders"
    assert (body["kind"], body["stage"], body["severity"], body["reason"]) == (
        "canary",
        "canary_rolled_back",
        "high",
        "alarm x in ALARM",
    )
    assert alert.subject() == "[Immutable Guard] HIGH canary_rolled_back: orders:live"
    assert alert.message_attributes()["function"]["StringValue"] == "orders"
    assert "Why:        alarm x in ALARM" in alert.text()
    assert set(STAGES) == {
        "canary_started",
        "canary_promoted",
        "canary_rolled_back",
        "canary_rollback_failed",
    }


def test_the_cli_builds_the_input_and_leaves_unset_options_to_the_schema() -> None:
    parser = argparse.ArgumentParser()
    add_canary_parser(parser.add_subparsers(dest="command"))
    command = "canary orders --alias live --to-version 3 --steps 5,10,20,30,40,50,60,70,80,90"
    args = parser.parse_args(
        [*command.split(), "--alarm", "a", "--alarm", "b", "--bake-seconds", "0", "--pre-hook", "smoke"]
    )
    assert request_document(args) == {
        "function": "orders",
        "alias": "live",
        "target_version": "3",
        "steps": [5, 10, 20, 30, 40, 50, 60, 70, 80, 90],
        "alarms": ["a", "b"],
        "bake_seconds": 0,
        "pre_traffic_hook": "smoke",
    }
