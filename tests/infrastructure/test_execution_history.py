"""An execution stays under Step Functions' 25,000-event history: a remediation whatever MaxPolls
allows, a canary rollout whatever its plan.

Step Functions fails an execution whose history reaches 25,000 events ("Maximum execution history size",
https://docs.aws.amazon.com/step-functions/latest/dg/service-quotas.html#service-limits-state-machine-executions).
The remediation polls twice (snapshots, then the replacement), each loop at most MaxPolls times, so
MaxPolls' MaxValue in template.yaml is computed here from statemachines/remediation.asl.json: a change to
the loops, their retries or the states around them changes the bound, and this test says by how much.

Events per state visit, from the HistoryEvent types of the Step Functions API
(https://docs.aws.amazon.com/step-functions/latest/apireference/API_HistoryEvent.html):
- Pass, Wait, Choice, Succeed: <Type>StateEntered and <Type>StateExited;
- Fail: FailStateEntered (then ExecutionFailed, counted with the execution);
- Task: TaskStateEntered, TaskStateExited, and per attempt TaskScheduled, TaskStarted and one of
  TaskSucceeded / TaskFailed / TaskTimedOut. The worst case is every retrier spent: 1 + the sum of their
  MaxAttempts (3 when omitted, as the States language defines) attempts. A callback task
  (`.waitForTaskToken`) also writes TaskSubmitted per attempt.
- the execution itself: ExecutionStarted and one of ExecutionSucceeded / ExecutionFailed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import boto3
import pytest
from immutable_guard.canary.errors import InvalidCanaryInput
from immutable_guard.canary.plan import MAX_GATE_CHECKS, MAX_PERSON_WAITS, parse_request
from immutable_guard.local.deploy import Deployer
from immutable_guard.template import load_template

REPO = Path(__file__).resolve().parents[2]
HISTORY_QUOTA = 25_000
DEFAULT_MAX_ATTEMPTS = 3  # States language: a retrier without MaxAttempts retries 3 times
CANARY = {"function": "orders", "alias": "live", "target_version": "2"}
# The canary's detour to wait for a person and come back to the gate.
PERSON_WAIT_STATES = frozenset({"WaitForPerson", "PersonAnswered?", "Resumed"})


def _states(name: str) -> dict[str, Any]:
    text = (REPO / "statemachines" / name).read_text()
    return dict(json.loads(re.sub(r"\$\{\w+\}", "1", text))["States"])


def events_per_visit(state: dict[str, Any]) -> int:
    """The most history events one visit of ``state`` can write."""
    kind = state["Type"]
    if kind in ("Pass", "Wait", "Choice", "Succeed"):
        return 2
    if kind == "Fail":
        return 1
    if kind == "Task":
        retries = sum(rule.get("MaxAttempts", DEFAULT_MAX_ATTEMPTS) for rule in state.get("Retry", []))
        per_attempt = 4 if str(state.get("Resource", "")).endswith(".waitForTaskToken") else 3
        return 2 + per_attempt * (1 + retries)
    raise AssertionError(f"no event count for a {kind} state: add it before using one")


def successors(state: dict[str, Any]) -> set[str]:
    found = {state[key] for key in ("Next", "Default") if key in state}
    found |= {choice["Next"] for choice in state.get("Choices", [])}
    found |= {catch["Next"] for catch in state.get("Catch", [])}
    return found


def loops(states: dict[str, Any]) -> list[set[str]]:
    """The cycles of the state graph (strongly connected components with more than one state)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(name: str) -> None:
        index[name] = low[name] = len(index)
        stack.append(name)
        for following in successors(states[name]):
            if following not in index:
                visit(following)
                low[name] = min(low[name], low[following])
            elif following in stack:
                low[name] = min(low[name], index[following])
        if low[name] == index[name]:
            component = set()
            while True:
                member = stack.pop()
                component.add(member)
                if member == name:
                    break
            if len(component) > 1 or name in successors(states[name]):
                found.append(component)

    for name in states:
        if name not in index:
            visit(name)
    return found


def worst_case_history(
    states: dict[str, Any], iterations: int, side: frozenset[str] = frozenset(), side_turns: int = 0
) -> int:
    """Events of the longest possible execution: every state outside a loop once (an over-count: no run
    takes every branch), each loop ``iterations`` times, every retry spent, plus the execution's own. The
    ``side`` states of a loop (a detour it takes a bounded number of times) count ``side_turns`` times."""
    in_loops = set().union(*loops(states))
    once = sum(events_per_visit(state) for name, state in states.items() if name not in in_loops)
    per_turn = sum(events_per_visit(states[name]) for name in in_loops - side)
    per_side_turn = sum(events_per_visit(states[name]) for name in side)
    return 2 + once + iterations * per_turn + side_turns * per_side_turn


def largest_safe_iterations(
    states: dict[str, Any], side: frozenset[str] = frozenset(), side_turns: int = 0
) -> int:
    in_loops = set().union(*loops(states))
    once = 2 + sum(events_per_visit(state) for name, state in states.items() if name not in in_loops)
    per_turn = sum(events_per_visit(states[name]) for name in in_loops - side)
    once += side_turns * sum(events_per_visit(states[name]) for name in side)
    return (HISTORY_QUOTA - 1 - once) // per_turn


@pytest.fixture(scope="module")
def remediation() -> dict[str, Any]:
    return _states("remediation.asl.json")


def test_the_only_loops_are_the_polls_max_polls_bounds(remediation: dict[str, Any]) -> None:
    # Given the remediation state machine, Then its only cycles are the snapshot and replacement polls, and
    # (organisation mode) the poll of the security account's custody copies
    assert sorted(sorted(loop) for loop in loops(remediation)) == [
        ["CheckReplacement", "ReplacementHealthy?", "WaitForReplacement"],
        ["CheckSnapshots", "SnapshotsCompleted?", "WaitForSnapshots"],
        ["CustodyComplete?", "TakeIntoCustody", "WaitForCustody"],
    ]
    # And each poll hands max_polls to the step that stops the loop once it is spent
    for check in ("CheckSnapshots", "CheckReplacement", "TakeIntoCustody"):
        assert remediation[check]["Parameters"]["Payload"]["max_polls.$"] == "$.settings.max_polls"
    assert remediation["LoadSettings"]["Result"]["max_polls"] == 1  # ${MaxPolls}, substituted


def test_max_polls_cannot_exceed_what_the_execution_history_holds(remediation: dict[str, Any]) -> None:
    # Given MaxPolls as the template lets an operator set it
    spec = load_template(REPO / "template.yaml")["Parameters"]["MaxPolls"]
    limit = largest_safe_iterations(remediation)
    # Then its maximum is the largest value whose longest execution stays under the quota
    assert spec["MaxValue"] == limit, f"MaxPolls MaxValue should be {limit} for the state machine as it is"
    assert worst_case_history(remediation, limit) < HISTORY_QUOTA
    assert worst_case_history(remediation, limit + 1) >= HISTORY_QUOTA
    # And the default is allowed
    assert spec["MinValue"] <= spec["Default"] <= spec["MaxValue"]


def test_a_task_with_spent_retries_counts_every_attempt() -> None:
    # A task retried 5 times for one error and 3 (the default) for another makes 9 attempts of 3 events,
    # plus entered and exited
    task = {"Type": "Task", "Retry": [{"ErrorEquals": ["A"], "MaxAttempts": 5}, {"ErrorEquals": ["B"]}]}
    assert events_per_visit(task) == 2 + 3 * (1 + 5 + DEFAULT_MAX_ATTEMPTS)
    assert events_per_visit({"Type": "Task"}) == 5
    assert events_per_visit({"Type": "Wait"}) == 2 and events_per_visit({"Type": "Fail"}) == 1


def test_the_local_runtime_refuses_max_polls_above_its_maximum_as_cloudformation_does() -> None:
    # CloudFormation refuses a Number parameter outside MinValue..MaxValue before creating anything
    deployer = Deployer(boto3.Session(region_name="us-east-1"), REPO / "template.yaml")
    spec = load_template(REPO / "template.yaml")["Parameters"]["MaxPolls"]
    with pytest.raises(ValueError, match="above its MaxValue"):
        deployer.deploy({"MaxPolls": str(spec["MaxValue"] + 1)})
    with pytest.raises(ValueError, match="below its MinValue"):
        deployer.deploy({"MaxPolls": "0"})


def test_a_canary_rollout_cannot_plan_more_checks_than_one_execution_holds() -> None:
    # Given the canary state machine, whose one loop turns once per health check (a step's first check,
    # then each re-check while it holds)
    canary = _states("canary.asl.json")
    (loop,) = loops(canary)
    assert {"Shift", "HealthGate", "Hold"} <= loop
    # And whose waits for a person are a detour of that loop, taken at most MAX_PERSON_WAITS times (each
    # wait's own looks afterwards are counted among the gate's: CanaryRequest.person_waits)
    assert loop >= PERSON_WAIT_STATES
    # Then the plan's limit on its gate's looks is the most the history holds beside those waits
    limit = largest_safe_iterations(canary, PERSON_WAIT_STATES, MAX_PERSON_WAITS)
    assert limit == MAX_GATE_CHECKS
    assert worst_case_history(canary, limit, PERSON_WAIT_STATES, MAX_PERSON_WAITS) < HISTORY_QUOTA
    assert worst_case_history(canary, limit + 1, PERSON_WAIT_STATES, MAX_PERSON_WAITS) >= HISTORY_QUOTA
    # And a plan past it is refused before anything moves, naming the fields: 90 one-point steps, looked at
    # once each (no bake), with max_holds re-checks and one suspect check
    one_percent_steps = list(range(1, 91))
    quick = {**CANARY, "steps": one_percent_steps, "bake_seconds": 0, "metric_delay_seconds": 0}
    assert parse_request({**quick, "failure_limit": 1, "max_holds": 2}).most_gate_looks() == 90 * 4
    with pytest.raises(InvalidCanaryInput, match="steps and max_holds: 90 steps x 6 looks"):
        parse_request({**quick, "failure_limit": 1, "max_holds": 4})


def test_a_rollout_waits_for_a_person_only_as_often_as_its_history_holds() -> None:
    # Given the default plan: its looks leave room for every wait
    assert parse_request(CANARY).person_waits() == MAX_PERSON_WAITS
    # And plans whose looks nearly fill the history: each wait takes the looks that can follow it
    # (max_holds re-checks, the suspect checks and one), 5 here, as each of their steps does
    quick = {**CANARY, "bake_seconds": 0, "metric_delay_seconds": 0, "failure_limit": 1, "max_holds": 3}
    assert (
        parse_request({**quick, "steps": list(range(1, 91))}).person_waits() == (MAX_GATE_CHECKS - 450) // 5
    )
    crowded = {**quick, "steps": list(range(1, 98))}  # 97 steps x 5 looks = 485
    assert parse_request(crowded).person_waits() == 0
    # Then confirm-before-promotion is refused where no wait fits, before anything moves
    with pytest.raises(InvalidCanaryInput, match="confirm_promotion: the plan's health checks leave no room"):
        parse_request({**crowded, "confirm_promotion": True})
