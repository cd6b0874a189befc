"""The canary command's edges: one clear line for every error, an exit code per outcome, and a story that
does not crash or say "None" when a shift or the rollback itself failed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from immutable_guard.canary.cli import (
    EXIT_ENDED_OTHERWISE,
    EXIT_PROMOTED,
    EXIT_REFUSED,
    EXIT_ROLLBACK_FAILED,
    EXIT_ROLLED_BACK,
    EXIT_USAGE,
    exit_code,
)
from immutable_guard.canary.history import Entry, entry_for
from immutable_guard.cli import main
from moto import mock_aws

ROLLOUT = ["canary", "orders", "--alias", "live", "--to-version", "2"]


def _exited(name: str, output: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "TaskStateExited",
        "stateExitedEventDetails": {"name": name, "output": json.dumps(output)},
    }


def test_a_failed_first_shift_is_no_story_line_and_no_crash() -> None:
    # The Shift state's output when its task failed and was caught carries no step result
    assert entry_for(_exited("Shift", {"error": {"Error": "AliasChanged"}})) is None
    odd = entry_for(_exited("Shift", {"step": {"result": {"step": 1, "percent": None}}}))
    assert odd is not None and "an unknown share" in odd.text


def test_a_failed_rollback_says_so_instead_of_rolled_back_to_none() -> None:
    rolled = entry_for(
        _exited("AlertRollbackFailed", {"rollback_error": {"Error": "RollbackFailed", "Cause": "denied"}})
    )
    assert rolled is not None and rolled.kind == "rollback_failed"
    assert rolled.text == "ROLLBACK FAILED: denied: a person must act"
    assert entry_for(_exited("Rollback", {"rollback_error": {"Error": "RollbackFailed"}})) is None


def test_a_superseded_rollout_says_the_alias_was_left_as_found() -> None:
    result = {"outcome": "superseded", "found": "version 3", "rolled_back_to": None, "reason": "changed"}
    line = entry_for(_exited("Rollback", {"rollback": {"result": result}}))
    assert line is not None and line.kind == "rollback"
    assert line.text == "SUPERSEDED: alias left as found (version 3): changed"


@pytest.mark.parametrize(
    ("final", "code"),
    [
        (Entry("succeeded", "rollout PROMOTED"), EXIT_PROMOTED),
        (Entry("failed", "", {"error": "CanaryRolledBack"}), EXIT_ROLLED_BACK),
        (Entry("failed", "", {"error": "CanaryRefused"}), EXIT_REFUSED),
        (Entry("failed", "", {"error": "InvalidCanaryInput"}), EXIT_REFUSED),
        (Entry("failed", "", {"error": "RollbackFailed"}), EXIT_ROLLBACK_FAILED),
        (Entry("failed", "", {"error": "ExecutionAborted"}), EXIT_ENDED_OTHERWISE),
        (None, EXIT_ENDED_OTHERWISE),
    ],
)
def test_each_outcome_has_its_exit_code(final: Entry | None, code: int) -> None:
    assert exit_code(final) == code
    assert len({EXIT_PROMOTED, EXIT_ROLLED_BACK, EXIT_REFUSED, EXIT_ROLLBACK_FAILED, EXIT_USAGE}) == 5


def test_missing_arguments_are_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["canary", "orders"]) == EXIT_USAGE
    assert "--alias, --to-version required" in capsys.readouterr().err


def test_a_bad_input_is_refused_before_any_aws_call(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*ROLLOUT, "--steps", "10,50"]) == EXIT_REFUSED
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no single step may exceed 10 %" in err


def test_an_unknown_stack_is_one_line_not_a_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    with mock_aws():
        code = main([*ROLLOUT, "--stack", "no-such-stack", "--region", "us-east-1"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1
    assert "AWS refused DescribeStacks: ValidationError" in err and "no-such-stack" in err


def test_missing_credentials_are_one_line_not_a_traceback(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    code = main([*ROLLOUT, "--stack", "immutable-guard", "--region", "us-east-1"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1
    assert "cannot reach AWS: Unable to locate credentials" in err
