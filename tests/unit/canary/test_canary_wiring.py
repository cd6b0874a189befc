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
    "CanaryHookFunction",
    "CanaryWaitFunction",
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


def test_the_state_machine_invokes_only_its_functions_and_hooks_only_through_the_wrapper(
    template: dict[str, Any], states: dict[str, Any]
) -> None:
    machine = template["Resources"]["CanaryStateMachine"]["Properties"]
    policies = machine["Policies"]
    invoked = {p["LambdaInvokePolicy"]["FunctionName"]["Ref"] for p in policies if "LambdaInvokePolicy" in p}
    substituted = {
        value["Fn::GetAtt"][0]
        for value in machine["DefinitionSubstitutions"].values()
        if "Fn::GetAtt" in value
    }
    assert invoked == substituted == CANARY_FUNCTIONS and all("LambdaInvokePolicy" in p for p in policies)
    # A direct lambda:invoke of a hook would put its raw answer in the state: an oversized one fails the
    # execution with States.DataLimitExceeded, which no States.ALL catcher catches.
    for hook in ("PreTrafficHook", "PostTrafficHook"):
        assert states[hook]["Parameters"]["FunctionName"] == "1"  # ${CanaryHookFunctionArn}
        assert "hook.$" in states[hook]["Parameters"]["Payload"]
    (hooks,) = template["Resources"]["CanaryHookFunction"]["Properties"]["Policies"][0]["Statement"]
    assert hooks["Action"] == "lambda:InvokeFunction"
    assert hooks["Condition"] == {"StringEquals": {"aws:ResourceTag/immutable-guard:canary": "allowed"}}


def test_lock_grants_reach_only_the_rollout_lock_items(template: dict[str, Any]) -> None:
    for logical_id in CANARY_FUNCTIONS | {"CanaryRecoverFunction"}:
        for policy in template["Resources"][logical_id]["Properties"]["Policies"]:
            for statement in policy["Statement"]:
                actions = statement["Action"]
                if any(
                    str(a).startswith("dynamodb:")
                    for a in ([actions] if isinstance(actions, str) else actions)
                ):
                    assert statement["Resource"] == {"Fn::GetAtt": ["IncidentLedger", "Arn"]}, logical_id
                    assert statement["Condition"] == {
                        "ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["CANARY#*"]}
                    }, logical_id


def test_every_end_releases_the_lock_and_superseded_is_its_own_end(states: dict[str, Any]) -> None:
    for alert in ("AlertPromoted", "AlertRolledBack", "AlertSuperseded", "AlertRollbackFailed"):
        assert states[alert]["Next"] == "ReleaseLock" and states[alert]["Catch"][0]["Next"] == "ReleaseLock"
    assert states["Rollback"]["Next"] == "RolledBackOrSuperseded?"
    assert states["RolledBackOrSuperseded?"]["Choices"][0]["Next"] == "AlertSuperseded"
    assert states["AlertSuperseded"]["Parameters"]["Payload"]["stage"] == "canary_superseded"
    assert states["ReleaseLock"]["Parameters"]["Payload"]["action"] == "release"
    assert states["ReleaseLock"]["Catch"][0]["Next"] == "HowItEnded?"
    ends = {c["Next"] for c in states["HowItEnded?"]["Choices"]} | {states["HowItEnded?"]["Default"]}
    assert ends == {"Promoted", "RolledBack", "Superseded", "RollbackFailed"}
    assert states["Superseded"] == {
        "Comment": states["Superseded"]["Comment"],
        "Type": "Fail",
        "Error": "CanarySuperseded",
        "CausePath": "$.rollback.result.reason",
    }
    assert states["Preflight"]["Parameters"]["Payload"] == {
        "request.$": "$",
        "execution.$": "$$.Execution.Id",
    }


def test_aborted_and_timed_out_rollouts_are_recovered_and_alarmed(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    rule = resources["CanaryRecoverFunction"]["Properties"]["Events"]["ExecutionEndedUnfinished"]
    assert rule["Properties"]["Pattern"] == {
        "source": ["aws.states"],
        "detail-type": ["Step Functions Execution Status Change"],
        "detail": {"status": ["ABORTED", "TIMED_OUT", "FAILED"]},
    }
    variables = resources["CanaryRecoverFunction"]["Properties"]["Environment"]["Variables"]
    assert variables["CANARY_STATE_MACHINE_ARN"] == {"Ref": "CanaryStateMachine"}
    metrics = {
        resources[name]["Properties"]["MetricName"] for name in ("CanaryAbortedAlarm", "CanaryTimedOutAlarm")
    }
    assert metrics == {"ExecutionsAborted", "ExecutionsTimedOut"}


def test_every_failure_after_preflight_reaches_the_rollback(states: dict[str, Any]) -> None:
    for name, state in states.items():
        if (
            state["Type"] != "Task"
            or name in {"Preflight", "Rollback", "ReleaseLock"}
            or name.startswith("Alert")
        ):
            continue
        # Every catcher leads to the rollback, and the last one catches everything
        assert state["Catch"][-1]["ErrorEquals"] == ["States.ALL"], name
        for catch in state["Catch"]:
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
    assert states["AlertRollbackFailed"]["Next"] == "ReleaseLock"
    assert {"Variable": "$.rollback_error", "IsPresent": True, "Next": "RollbackFailed"} in states[
        "HowItEnded?"
    ]["Choices"]
    assert states["RollbackFailed"]["Type"] == "Fail" and states["RolledBack"]["Type"] == "Fail"


def test_only_a_healthy_last_step_or_a_person_promotes(states: dict[str, Any]) -> None:
    into_promote = [n for n, s in states.items() if s.get("Next") == "Promote"]
    choices = [n for n, s in states.items() for c in s.get("Choices", []) if c.get("Next") == "Promote"]
    assert into_promote == [] and choices == [
        "GateVerdict?",
        "GateVerdict?",
        "PersonAnswered?",
        "PersonAnswered?",
    ]
    healthy_last, requested = [c for c in states["GateVerdict?"]["Choices"] if c["Next"] == "Promote"]
    assert healthy_last["And"] == [
        {"Variable": "$.gate.result.verdict", "StringEquals": "healthy"},
        {"Variable": "$.step.result.last", "BooleanEquals": True},
    ]
    # The gate answers "promote" only for a person's request (steering.steer); a person's answer to a wait
    # is promote, or resume of a confirmation
    assert requested == {"Variable": "$.gate.result.verdict", "StringEquals": "promote", "Next": "Promote"}
    promote, resume_confirmed = [c for c in states["PersonAnswered?"]["Choices"] if c["Next"] == "Promote"]
    assert promote == {"Variable": "$.person.decision", "StringEquals": "promote", "Next": "Promote"}
    assert resume_confirmed["And"][1] == {
        "Variable": "$.gate.result.wait.kind",
        "StringEquals": "confirm_promotion",
    }
    # Promotion starts from the step the alias is on, which a person may promote before the last
    assert states["Promote"]["Parameters"]["Payload"]["step.$"] == "$.step.result"
    # The bake is watched, not slept through: the first look comes one check interval after the shift,
    # and the gate alone decides how long to wait before the next (it passes nothing before the bake is over)
    assert states["Bake"]["SecondsPath"] == "$.plan.result.first_check_seconds"
    assert states["Hold"]["SecondsPath"] == "$.gate.result.wait_seconds"
    assert states["CountCheck"]["Parameters"]["failures.$"] == "$.gate.result.failures"
    assert states["NextStep"]["Parameters"]["failures"] == 0


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
        "canary_superseded",
        "canary_aborted",
        "canary_waiting",
    }


def test_the_cli_builds_the_input_and_leaves_unset_options_to_the_schema() -> None:
    parser = argparse.ArgumentParser()
    add_canary_parser(parser.add_subparsers(dest="command"))
    command = "canary start orders --alias live --to-version 3 --steps 5,10,20,30,40,50,60,70,80,90"
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


def test_the_form_before_subcommands_still_starts_a_rollout() -> None:
    from immutable_guard.canary.cli import with_start
    from immutable_guard.cli import build_parser

    old = ["canary", "orders", "--alias", "live", "--to-version", "3", "--confirm-promotion"]
    args = build_parser().parse_args(with_start(old))
    assert args.canary_command == "start"
    assert request_document(args) == {
        "function": "orders",
        "alias": "live",
        "target_version": "3",
        "confirm_promotion": True,
    }
    assert with_start(["canary", "--demo"]) == ["canary", "--demo"]
    assert with_start(["canary", "status", "orders"]) == ["canary", "status", "orders"]


def test_a_wait_for_a_person_is_a_bounded_callback_that_rolls_back_when_nobody_answers(
    template: dict[str, Any], states: dict[str, Any]
) -> None:
    wait = states["WaitForPerson"]
    # A callback task (https://docs.aws.amazon.com/step-functions/latest/dg/connect-to-resource.html
    # #connect-wait-token): the wait function gets the token and keeps it on the rollout's lock item
    assert wait["Resource"].endswith(":states:::lambda:invoke.waitForTaskToken")
    assert wait["Parameters"]["Payload"]["token.$"] == "$$.Task.Token"
    assert wait["TimeoutSecondsPath"] == "$.plan.result.max_wait_seconds"
    timeout, anything = wait["Catch"]
    assert timeout["ErrorEquals"] == ["States.Timeout"] and timeout["Next"] == "NobodyAnswered"
    assert anything["ErrorEquals"] == ["States.ALL"]
    # An answer that is not understood rolls back; resume goes back to the gate, which looks again
    assert states[states["PersonAnswered?"]["Default"]]["Next"] == "Rollback"
    assert states["Resumed"]["Next"] == "HealthGate" and states["Resumed"]["Parameters"]["checks"] == 0
    env = template["Resources"]["CanaryWaitFunction"]["Properties"]
    assert env["CodeUri"] == "functions/canary_wait/"
