"""People steer a running canary rollout on the embedded local AWS: pause and resume, promote and abort
mid-bake, confirm before promotion, waits that time out, inconclusive steps that wait, an emergency revert,
and `canary status` / `watch` with their exit codes. Every outcome is read from the execution's history, the
alias and the alerts."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from canary_rollouts import Rollout, lock_holder, routing, wait_for
from immutable_guard.canary.cli import EXIT_PROMOTED, EXIT_REFUSED, EXIT_ROLLED_BACK
from immutable_guard.canary.errors import CanaryRefused
from immutable_guard.canary.lock import RolloutLock
from immutable_guard.canary.operator import Operator
from immutable_guard.cli import main

pytestmark = pytest.mark.slow


def _person(rollout: Rollout) -> Operator:
    clients = rollout.clients
    return Operator(
        clients.stepfunctions,
        clients.lambda_,
        clients.sts,
        RolloutLock(clients.dynamodb, rollout.ledger_table),
        rollout.state_machine,
    )


def _held(rollout: Rollout) -> dict[str, Any]:
    return (
        RolloutLock(rollout.clients.dynamodb, rollout.ledger_table).get(
            rollout.target.function, rollout.target.alias
        )
        or {}
    )


def _waiting(rollout: Rollout) -> bool:
    return bool(_held(rollout).get("task_token"))


def _cli(rollout: Rollout, *words: str) -> list[str]:
    """`immutable-guard canary WORD FUNCTION --alias A` against the test's state machine and lock table."""
    command, *rest = words
    return [
        "canary",
        command,
        rollout.target.function,
        "--alias",
        rollout.target.alias,
        "--state-machine-arn",
        rollout.state_machine,
        "--ledger-table",
        rollout.ledger_table,
        *rest,
    ]


def _kinds(entries: list[Any]) -> list[str]:
    return [entry.kind for entry in entries]


def test_pause_then_resume_continues_and_promotes(rollout: Rollout) -> None:
    person = _person(rollout)
    function, alias = rollout.target.function, rollout.target.alias
    with rollout.traffic():
        arn = rollout.start(bake_seconds=2)
        wait_for(lambda: routing(rollout.alias()), "step 1")
        # When a person pauses it: the gate takes the request at its next check and waits for a person
        said = person.steer(function, alias, "pause")
        assert "acts on it at its next health check (within 1 s)" in said
        wait_for(lambda: _waiting(rollout), "the rollout waits")
        split = routing(rollout.alias())
        assert split and rollout.new in split  # the alias keeps its split while it waits
        waiting = _held(rollout)["waiting"]
        assert waiting["kind"] == "paused" and waiting["reason"].startswith("paused by arn:aws:")
        # And resumes it
        assert "it looks at the step's health again" in person.steer(function, alias, "resume")
        status, entries = rollout.finish(arn)

    # Then it went on to the promotion, and its history tells who paused and who resumed
    assert status == "SUCCEEDED", [e.text for e in entries]
    assert [e.data["percent"] for e in entries if e.kind == "shift"] == [10, 20, 30, 40, 50, 60, 70, 80, 90]
    waited = next(e for e in entries if e.kind == "waiting")
    assert (
        "paused by arn:aws:" in waited.text
        and f"resume|promote|abort {function} --alias {alias}" in waited.text
    )
    assert next(e for e in entries if e.kind == "answered").text.startswith("RESUMED by arn:aws:")
    assert rollout.alias()["FunctionVersion"] == rollout.new
    alerts = rollout.alerts()
    assert [a["stage"] for a in alerts] == ["canary_started", "canary_waiting", "canary_promoted"]
    assert f"immutable-guard canary resume|promote|abort {function} --alias {alias}" in alerts[1]["summary"]


def test_promote_mid_bake_goes_to_100_percent_and_runs_the_post_hook(rollout: Rollout) -> None:
    hook = rollout.target.smoke_test_hook
    with rollout.traffic():
        arn = rollout.start(bake_seconds=20, post_traffic_hook=hook)
        wait_for(lambda: routing(rollout.alias()), "step 1")
        _person(rollout).steer(rollout.target.function, rollout.target.alias, "promote")
        status, entries = rollout.finish(arn)

    assert status == "SUCCEEDED", [e.text for e in entries]
    assert [e.data["percent"] for e in entries if e.kind == "shift"] == [10]
    gate = [e.data for e in entries if e.kind == "gate"][-1]
    assert gate["verdict"] == "promote" and gate["reason"].startswith("promotion requested by arn:aws:")
    assert _kinds(entries)[-3:] == ["promote", "hook", "succeeded"]
    assert next(e.data for e in entries if e.kind == "hook")["status"] == "Succeeded"
    alias = rollout.alias()
    assert alias["FunctionVersion"] == rollout.new and not routing(alias)


def test_abort_mid_bake_rolls_back_and_names_who_asked(rollout: Rollout) -> None:
    with rollout.traffic():
        arn = rollout.start(bake_seconds=20)
        wait_for(lambda: routing(rollout.alias()), "step 1")
        _person(rollout).steer(rollout.target.function, rollout.target.alias, "abort")
        status, entries = rollout.finish(arn)

    assert status == "FAILED" and entries[-1].data["error"] == "CanaryRolledBack"
    rolled = next(e.data for e in entries if e.kind == "rollback")
    assert (
        rolled["reason"].startswith("aborted by arn:aws:sts::") and rolled["rolled_back_to"] == rollout.stable
    )
    assert rollout.alias()["FunctionVersion"] == rollout.stable and not routing(rollout.alias())
    assert lock_holder(rollout) is None
    assert "aborted by arn:aws:" in rollout.alerts()[-1]["reason"]


def test_confirm_promotion_waits_and_promote_answers_it_once(rollout: Rollout) -> None:
    clients = rollout.clients
    with rollout.traffic():
        arn = rollout.start(confirm_promotion=True)
        wait_for(lambda: _waiting(rollout), "the rollout waits for confirmation")
        held = _held(rollout)
        assert held["waiting"]["kind"] == "confirm_promotion"
        assert "promote|abort" in held["waiting"]["commands"]
        assert routing(rollout.alias()) == {rollout.new: 0.9}  # every step passed, not promoted yet
        said = _person(rollout).steer(rollout.target.function, rollout.target.alias, "promote")
        assert "it promotes the new version now" in said
        status, entries = rollout.finish(arn)

    assert status == "SUCCEEDED", [e.text for e in entries]
    assert next(e for e in entries if e.kind == "answered").text.startswith("PROMOTION confirmed by arn:aws:")
    assert rollout.alias()["FunctionVersion"] == rollout.new
    # A task token answers its task once, as in Step Functions (local runtime: moto_fixes (j))
    with pytest.raises(clients.stepfunctions.exceptions.TaskTimedOut):
        clients.stepfunctions.send_task_success(taskToken=held["task_token"], output='{"decision": "abort"}')


def test_a_wait_nobody_answers_rolls_back_and_a_late_answer_is_refused(
    rollout: Rollout, capsys: pytest.CaptureFixture[str]
) -> None:
    with rollout.traffic():
        arn = rollout.start(confirm_promotion=True, max_wait_seconds=1)
        wait_for(lambda: _waiting(rollout), "the rollout waits")
        token = _held(rollout)["task_token"]
        status, entries = rollout.finish(arn)

    assert status == "FAILED" and entries[-1].data["error"] == "CanaryRolledBack"
    failure = next(e for e in entries if e.kind == "failure")
    assert failure.text == "NobodyAnswered: nobody answered within 1 s: rolled back (the safe default)"
    assert rollout.alias()["FunctionVersion"] == rollout.stable
    # The late answer: the rollout has ended, the command says so and exits 4 (refused); its token is closed
    assert main(_cli(rollout, "promote")) == EXIT_REFUSED
    assert (
        f"no rollout of {rollout.target.function}:{rollout.target.alias} is running"
        in capsys.readouterr().err
    )
    with pytest.raises(rollout.clients.stepfunctions.exceptions.TaskTimedOut):
        rollout.clients.stepfunctions.send_task_success(taskToken=token, output='{"decision": "promote"}')


def test_an_inconclusive_step_waits_for_a_person_then_resume_looks_again_and_abort_rolls_back(
    rollout: Rollout,
) -> None:
    person = _person(rollout)
    function, alias = rollout.target.function, rollout.target.alias
    # No traffic at all: the step stays short of data
    arn = rollout.start(bake_seconds=0, hold_seconds=0, max_holds=1, on_inconclusive="wait")
    wait_for(lambda: _waiting(rollout), "the inconclusive step waits")
    first = _held(rollout)["waiting"]
    assert first["kind"] == "inconclusive" and "not enough data after 2 checks" in first["reason"]
    person.steer(function, alias, "resume")
    # Its re-checks start over, still without data: it waits again rather than rolling back
    wait_for(lambda: _waiting(rollout) and _held(rollout)["waits"] == 2, "the second wait")
    person.steer(function, alias, "abort")
    status, entries = rollout.finish(arn)

    assert status == "FAILED" and entries[-1].data["error"] == "CanaryRolledBack"
    gates = [e.data["verdict"] for e in entries if e.kind == "gate"]
    assert gates == ["hold", "wait", "hold", "wait"]
    assert [e.text.split(" by ")[0] for e in entries if e.kind == "answered"] == ["RESUMED", "ABORTED"]
    rolled = next(e.data for e in entries if e.kind == "rollback")
    assert rolled["reason"].startswith("aborted by arn:aws:") and rolled["failed_state"] == "WaitForPerson"
    assert rollout.alias()["FunctionVersion"] == rollout.stable


def test_revert_during_a_rollout_is_one_call_and_nothing_rolls_back_over_it(
    rollout: Rollout, capsys: pytest.CaptureFixture[str]
) -> None:
    with rollout.traffic():
        # The gate first looks 20 s after the shift: the revert lands between two checks, as it usually would
        # (a check that came first would find the alias changed and end the rollout superseded, also safe)
        arn = rollout.start(bake_seconds=20, check_interval_seconds=20)
        wait_for(lambda: routing(rollout.alias()), "step 1")
        revision = rollout.alias()["RevisionId"]
        assert main(_cli(rollout, "revert")) == EXIT_PROMOTED
        out = capsys.readouterr().out
        reverted = rollout.alias()
        status, _ = rollout.finish(arn)
        wait_for(lambda: lock_holder(rollout) is None, "the recovery releases the lock")

    assert (
        f"REVERTED {rollout.target.function}:{rollout.target.alias} from version 1 with 10 % on version"
        in out
    )
    assert reverted["FunctionVersion"] == rollout.stable and not routing(reverted)
    assert reverted["RevisionId"] != revision  # one write, conditional on the revision read
    assert status == "ABORTED"
    # The recovery found the alias not as the rollout left it: it left it alone, and said why
    assert rollout.alias()["RevisionId"] == reverted["RevisionId"]
    alerts = rollout.alerts()
    assert [a["stage"] for a in alerts] == ["canary_started", "canary_superseded"]
    assert "ended ABORTED" in alerts[-1]["reason"] and "; reverted by arn:aws:" in alerts[-1]["reason"]
    assert f"to version {rollout.stable}" in alerts[-1]["reason"]


def test_revert_after_a_promotion_goes_back_to_the_replaced_version(
    rollout: Rollout, capsys: pytest.CaptureFixture[str]
) -> None:
    with rollout.traffic():
        status, _ = rollout.finish(rollout.start())
    assert status == "SUCCEEDED" and rollout.alias()["FunctionVersion"] == rollout.new

    assert main(_cli(rollout, "revert")) == EXIT_PROMOTED
    out = capsys.readouterr().out
    assert f"replaced version {rollout.stable} with {rollout.new}" in out
    alias = rollout.alias()
    assert alias["FunctionVersion"] == rollout.stable and not routing(alias)
    # Once reverted, the alias no longer serves what the last promotion left: a second revert must be told
    with pytest.raises(CanaryRefused, match="name the version with --to-version"):
        _person(rollout).revert(rollout.target.function, rollout.target.alias)


def test_status_and_watch_tell_a_waiting_rollout_and_its_outcome(
    rollout: Rollout, capsys: pytest.CaptureFixture[str]
) -> None:
    function, alias = rollout.target.function, rollout.target.alias
    with rollout.traffic():
        arn = rollout.start(confirm_promotion=True)
        wait_for(lambda: _waiting(rollout), "the rollout waits for confirmation")
        # status: where the alias routes, the step, the last check, the wait and what to run
        assert main(_cli(rollout, "status")) == EXIT_PROMOTED
        out = capsys.readouterr().out
        assert f"alias {function}:{alias}: version 1 with 90 % on version {rollout.new}" in out
        assert f"rollout {arn}: RUNNING" in out and "now: step 9: 90 % of traffic" in out
        assert "last check: gate: wait - every step was healthy" in out
        assert (
            "WAITING for a person since" in out and f"`immutable-guard canary promote|abort {function}" in out
        )
        # watch re-attaches: the story so far, then live; a person promotes meanwhile
        answer = threading.Timer(1.0, lambda: _person(rollout).steer(function, alias, "promote"))
        answer.start()
        code = main(_cli(rollout, "watch", "--poll-seconds", "0.2"))
        answer.join()
    out = capsys.readouterr().out
    assert code == EXIT_PROMOTED
    assert out.startswith(f"watching rollout {arn}\npreflight OK:")
    assert "WAITING for a person" in out and "PROMOTION confirmed by" in out and "rollout PROMOTED" in out
    # Once it ended: status tells the last outcome; watch and steering have nothing to act on (exit 4)
    assert main(_cli(rollout, "status")) == EXIT_PROMOTED
    assert (
        f"no rollout is running; the last one, {arn}, ended SUCCEEDED: rollout PROMOTED"
        in capsys.readouterr().out
    )
    for command in ("watch", "pause", "resume", "promote", "abort"):
        assert main(_cli(rollout, command)) == EXIT_REFUSED, command
        assert f"refused: no rollout of {function}:{alias} is running" in capsys.readouterr().err


def test_watch_returns_the_outcomes_exit_code(rollout: Rollout, capsys: pytest.CaptureFixture[str]) -> None:
    # No traffic: the rollout rolls back for lack of data; watch exits as `canary start` would
    rollout.start(bake_seconds=0, hold_seconds=1, max_holds=2)
    wait_for(lambda: lock_holder(rollout) is not None, "the rollout holds the alias")
    assert main(_cli(rollout, "watch", "--poll-seconds", "0.2")) == EXIT_ROLLED_BACK
    assert "ROLLED BACK to version 1" in capsys.readouterr().out
