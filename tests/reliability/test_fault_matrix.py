"""The remediation state machine under AWS faults: a passing fault (throttling, a 500, a timeout) is
absorbed by the state machine's Retry, a lasting one ends in the failure path, and in every cell nothing is
terminated without completed evidence, no incident is lost, every failure is alerted and a contained
instance stays isolated. A sample of the matrix; benchmarks/fault_matrix.py runs all of it."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
from fault_world import FAULTS, CellResult, FaultPlan, FaultWorld

TRANSIENT = ("throttling", "internal_error", "timeout")
# One call per step that changes or records something, where a fault hurts most.
SAMPLED_CALLS = [
    ("QuarantineFunction", "auto-scaling.DetachInstances"),
    ("QuarantineFunction", "ec2.ModifyInstanceAttribute"),
    ("NotifyFunction", "sns.Publish"),
    ("EvidenceFunction", "ec2.CreateSnapshots"),
    ("EvidenceFunction", "s3.PutObject"),
    ("ReplaceFunction", "auto-scaling.DescribeAutoScalingGroups"),
    ("NukeFunction", "ec2.TerminateInstances"),
]


@pytest.fixture(scope="module")
def world() -> Iterator[FaultWorld]:
    with FaultWorld() as built:
        yield built


def _assert_invariants(result: CellResult) -> None:
    broken = {name: verdict for name, verdict in result.invariants.items() if verdict.startswith("BROKEN")}
    assert not broken, f"{result.plan and result.plan.label}: {broken}"


def test_without_faults_the_remediation_succeeds_and_every_invariant_holds(world: FaultWorld) -> None:
    # Given no fault; When a server's group is opened to the world
    result = world.run(None)
    # Then it is isolated, snapshotted, replaced and terminated, and the team heard each stage
    assert result.execution_status == "SUCCEEDED", result.as_dict()
    assert result.instance_state == "terminated"
    assert result.alerts == ["detected", "contained", "closed"]
    assert result.terminate_checks and all(check.safe for check in result.terminate_checks)
    _assert_invariants(result)


# Each sampled call refused (the failure path, where the invariants matter most) and failed once by one of
# the passing faults in turn: every fault kind meets two or more calls. The whole grid (every call of a
# clean run with every fault) is benchmarks/fault_matrix.py.
SAMPLED_CELLS = [
    (function, operation, fault)
    for (function, operation), passing in zip(SAMPLED_CALLS, itertools.cycle(TRANSIENT))
    for fault in (passing, "access_denied")
]


@pytest.mark.parametrize(("function", "operation", "fault"), SAMPLED_CELLS)
def test_a_fault_once_is_retried_or_ends_in_the_failure_path(
    world: FaultWorld, function: str, operation: str, fault: str
) -> None:
    # Given one call of a step failing once, after the SDK's own retries
    plan = FaultPlan(function, operation, fault)
    # When the remediation runs
    result = world.run(plan)
    # Then a passing fault is retried to success, a refusal is caught, and no invariant breaks
    assert result.outcome in ("recovered", "unaffected", "failure_path"), result.as_dict()
    if fault in TRANSIENT:
        assert result.outcome == "recovered", result.as_dict()
        assert result.instance_state == "terminated"
    elif result.outcome == "failure_path":
        assert "failed" in result.alerts, result.as_dict()
        assert result.ledger_status == "FAILED"
    _assert_invariants(result)


@pytest.mark.parametrize(
    ("function", "operation"),
    [
        ("EvidenceFunction", "ec2.DescribeSnapshots"),
        ("ReplaceFunction", "auto-scaling.DescribeAutoScalingGroups"),
        ("NukeFunction", "ec2.DescribeSnapshots"),
    ],
)
def test_throttling_that_never_ends_keeps_the_server_quarantined_and_alerts(
    world: FaultWorld, function: str, operation: str
) -> None:
    # Given a call throttled for good
    result = world.run(FaultPlan(function, operation, "throttling", always=True))
    # Then the state machine retried it with back-off, gave up, alerted, and terminated nothing
    assert result.outcome == "failure_path", result.as_dict()
    assert len(result.retry_waits) >= 5
    assert result.instance_state == "running" and result.isolated
    assert "failed" in result.alerts and result.ledger_status == "FAILED"
    _assert_invariants(result)


@pytest.mark.parametrize(
    "operation",
    ["ec2.ModifyNetworkInterfaceAttribute", "ec2.CreateSecurityGroup", "ec2.DescribeNetworkInterfaces"],
)
def test_a_throttled_isolation_call_is_retried(world: FaultWorld, operation: str) -> None:
    result = world.run(FaultPlan("QuarantineFunction", operation, "throttling"))
    assert result.outcome == "recovered", result.as_dict()


@pytest.mark.parametrize("fault", ["throttling", "access_denied", "timeout"])
def test_a_failed_second_isolation_step_never_leaves_the_server_open_to_the_world(
    world: FaultWorld, fault: str
) -> None:
    result = world.run(FaultPlan("QuarantineFunction", "ec2.ModifyNetworkInterfaceAttribute", fault, nth=2))
    # Contain tries the isolation group once more at once, then the step is retried (throttling): it
    # recovers. Whatever happens, the interface never stays on the all-traffic group.
    assert result.outcome == "recovered", result.as_dict()
    assert result.invariants["never_left_open_to_world"] == "held", result.as_dict()


def test_reads_that_lag_behind_writes_do_not_fail_the_containment(
    world: FaultWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given EC2 shows an interface's old groups for two reads after each change (eventual consistency)
    from immutable_guard.local import moto_fixes

    moto_fixes.ec2_reads_lag_behind_writes(
        lambda target, name, value: monkeypatch.setattr(target, name, value, raising=False), stale_reads=2
    )
    # When a server is remediated, Then verification reads again instead of failing an isolated server
    result = world.run(None)
    assert result.execution_status == "SUCCEEDED", result.as_dict()
    assert result.instance_state == "terminated"
    _assert_invariants(result)


def test_a_ledger_failure_after_termination_is_not_reported_as_nothing_terminated(world: FaultWorld) -> None:
    result = world.run(FaultPlan("NukeFunction", "dynamodb.UpdateItem", "access_denied"))
    assert result.invariants["no_terminate_on_failure"] == "held", result.as_dict()


# The standalone server's path: the stack replaces it (UpdateStack with a new generation).
STACK_PATH_CALLS = [
    ("ReplaceFunction", "cloudformation.UpdateStack"),
    ("ReplaceFunction", "cloudformation.DescribeStacks"),
]


def test_without_faults_the_stack_replaces_its_server_and_every_invariant_holds(world: FaultWorld) -> None:
    result = world.run(None, target="stack")
    assert result.execution_status == "SUCCEEDED", result.as_dict()
    assert result.instance_state == "terminated"
    assert result.terminate_checks and all(check.safe for check in result.terminate_checks)
    assert {(c.function, c.operation) for c in result.calls} >= set(STACK_PATH_CALLS)
    _assert_invariants(result)


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize(("function", "operation"), STACK_PATH_CALLS)
def test_a_fault_once_on_the_stack_path_is_retried_or_ends_in_the_failure_path(
    world: FaultWorld, function: str, operation: str, fault: str
) -> None:
    result = world.run(FaultPlan(function, operation, fault), target="stack")
    assert result.outcome in ("recovered", "unaffected", "failure_path"), result.as_dict()
    if fault in TRANSIENT:
        assert result.outcome == "recovered", result.as_dict()
    _assert_invariants(result)
