"""The rollout's story read from its execution history, including a step that failed before its first
result (the first shift throttled past every retry)."""

from __future__ import annotations

import json
from typing import Any

from immutable_guard.canary.history import timeline


def exited(name: str, output: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "TaskStateExited",
        "stateExitedEventDetails": {"name": name, "output": json.dumps(output)},
    }


def test_a_first_shift_that_failed_is_told_by_its_failure_not_as_a_shift() -> None:
    # Given the history of a rollout whose first shift failed (its Catch put the error in $.error)
    error = {"Error": "AwsCallFailed", "Cause": json.dumps({"errorMessage": "cannot update it"})}
    events = [
        exited("Shift", {"plan": {"result": {}}, "error": error}),
        {
            "type": "PassStateExited",
            "stateExitedEventDetails": {
                "name": "ShiftFailed",
                "output": json.dumps({"failure": {"state": "Shift", "error": error}}),
            },
        },
    ]
    # When its timeline is read, Then the failure is told once, by the failure state
    entries = timeline(events)
    assert [entry.kind for entry in entries] == ["failure"]
    assert "AwsCallFailed" in entries[0].text


def test_a_shift_that_succeeded_is_told_with_its_share() -> None:
    step = {"step": 1, "percent": 10.0, "target_version": "2"}
    (entry,) = timeline([exited("Shift", {"step": {"result": step}})])
    assert entry.text == "step 1: 10 % of traffic on version 2"
