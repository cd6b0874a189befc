"""The canary state machine of template.yaml, executed on the embedded local AWS with our handlers and the
sample target's hooks in-process: every outcome is read from the execution's own history."""

from __future__ import annotations

import io
import json
import random
import threading
import uuid
import zipfile
from typing import Any

import pytest
from canary_rollouts import FAST, Rollout, lock_holder, routing, wait_for
from immutable_guard.canary.demo import (
    publish_version,
)
from immutable_guard.canary.history import Entry, history_events
from immutable_guard.canary.traffic import CANARY_TAG_KEY, CANARY_TAG_VALUE
from immutable_guard.clients import Clients

pytestmark = pytest.mark.slow


def _hook(clients: Clients, source: str) -> str:
    """A tagged hook function with this handler source."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("hook.py", source)
    role = clients._session.client("iam").create_role(
        RoleName=f"hook-{uuid.uuid4().hex[:8]}", AssumeRolePolicyDocument="{}"
    )["Role"]["Arn"]
    name = f"hook-{uuid.uuid4().hex[:8]}"
    clients.lambda_.create_function(
        FunctionName=name,
        Role=role,
        Runtime="python3.12",
        Handler="hook.handler",
        Code={"ZipFile": buffer.getvalue()},
        Timeout=30,
        Tags={CANARY_TAG_KEY: CANARY_TAG_VALUE},
    )
    return name


def _kinds(entries: list[Entry]) -> list[str]:
    return [entry.kind for entry in entries]


def test_a_healthy_version_is_promoted_step_by_step_with_hooks_and_alerts(rollout: Rollout) -> None:
    hook = rollout.target.smoke_test_hook
    with rollout.traffic(alarm=rollout.target.alarm):
        status, entries = rollout.finish(
            rollout.start(alarms=[rollout.target.alarm], pre_traffic_hook=hook, post_traffic_hook=hook)
        )

    assert status == "SUCCEEDED", [e.text for e in entries]
    shifts = [e.data["percent"] for e in entries if e.kind == "shift"]
    assert shifts == [10, 20, 30, 40, 50, 60, 70, 80, 90]
    passed = [e.data for e in entries if e.kind == "gate" and e.data["verdict"] == "healthy"]
    assert [g["step"] for g in passed] == list(range(1, 10))
    # Requests are counted from the rollout's start, and each step needs its share of min_invocations (2):
    # every step was judged on requests the new version served, and the whole rollout on at least 2.
    served = [g["new"]["invocations"] for g in passed]
    assert served == sorted(served) and served[0] >= 1 and served[-1] >= 2, served
    assert all(g["alarms"] == {rollout.target.alarm: "OK"} for g in passed)
    hooks = [e.data["status"] for e in entries if e.kind == "hook"]
    assert hooks == ["Succeeded", "Succeeded"]
    assert _kinds(entries)[-3:] == ["promote", "hook", "succeeded"]
    alias = rollout.alias()
    assert alias["FunctionVersion"] == rollout.new
    assert not (alias.get("RoutingConfig") or {}).get("AdditionalVersionWeights")
    assert [a["stage"] for a in rollout.alerts()] == ["canary_started", "canary_promoted"]


def test_an_alarm_tripping_at_step_three_rolls_back_to_the_stable_version(rollout: Rollout) -> None:
    alarm = rollout.target.alarm
    with rollout.traffic(alarm=alarm, trip_alarm_at_percent=30):
        status, entries = rollout.finish(rollout.start(alarms=[alarm]))

    assert status == "FAILED"
    gates = [
        (e.data["step"], e.data["verdict"])
        for e in entries
        if e.kind == "gate" and e.data["verdict"] != "hold"
    ]
    assert gates == [(1, "healthy"), (2, "healthy"), (3, "unhealthy")]
    rolled = next(e.data for e in entries if e.kind == "rollback")
    assert rolled["rolled_back_to"] == rollout.stable and f"alarm {alarm} in ALARM" in rolled["reason"]
    assert rolled["found"] == f"version 1 with 30 % on version {rollout.new}"
    alias = rollout.alias()
    assert alias["FunctionVersion"] == rollout.stable
    assert not (alias.get("RoutingConfig") or {}).get("AdditionalVersionWeights")
    versions = rollout.clients.lambda_.list_versions_by_function(FunctionName=rollout.target.function)[
        "Versions"
    ]
    assert rollout.new in {v["Version"] for v in versions}, "the new version must never be deleted"
    alerts = rollout.alerts()
    assert [a["stage"] for a in alerts] == ["canary_started", "canary_rolled_back"]
    assert alarm in alerts[-1]["reason"] and alerts[-1]["severity"] == "high"


def test_a_buggy_version_is_rolled_back_by_its_own_error_rate(rollout: Rollout) -> None:
    buggy = publish_version(rollout.clients.lambda_, rollout.target.function, "buggy")
    rollout.new = buggy
    with rollout.traffic():
        status, entries = rollout.finish(rollout.start())

    assert status == "FAILED"
    gate = next(e.data for e in entries if e.kind == "gate" and e.data["verdict"] == "unhealthy")
    assert gate["new"]["version"] == buggy and gate["new"]["errors"] > 0
    assert gate["stable"]["errors"] == 0
    assert "stable version 1: 0 of" in gate["reason"] and "consecutive checks" in gate["reason"]
    assert gate["excess_error_rate_bound"] > 0.01  # the decision record says how sure it was
    assert rollout.alias()["FunctionVersion"] == rollout.stable


class _NoisyTraffic:
    """Requests on the alias split by its routing, every version failing 2 % of them at random (seeded):
    as Lambda would report them to CloudWatch. Nothing is invoked: only the gate's input matters here."""

    def __init__(self, rollout: Rollout, error_rate: float = 0.02, per_tick: int = 25) -> None:
        self.rollout, self.error_rate, self.per_tick = rollout, error_rate, per_tick
        self.random = random.Random(20261129)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.served: dict[str, list[int]] = {}

    def __enter__(self) -> _NoisyTraffic:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)

    def run(self) -> None:
        function, alias = self.rollout.target.function, self.rollout.target.alias
        while not self.stop.wait(0.1):
            current = self.rollout.alias()
            weights = (current.get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {}
            data: list[Any] = []
            for version in {str(current["FunctionVersion"]), *weights}:
                share = float(weights.get(version, 1 - sum(float(w) for w in weights.values())))
                requests = sum(self.random.random() < share for _ in range(self.per_tick))
                errors = sum(self.random.random() < self.error_rate for _ in range(requests))
                total = self.served.setdefault(version, [0, 0])
                total[0], total[1] = total[0] + requests, total[1] + errors
                dimensions = [
                    {"Name": "FunctionName", "Value": function},
                    {"Name": "Resource", "Value": f"{function}:{alias}"},
                    {"Name": "ExecutedVersion", "Value": version},
                ]
                for metric, value in (("Invocations", requests), ("Errors", errors), ("Throttles", 0)):
                    data.append({"MetricName": metric, "Dimensions": dimensions, "Value": value})
            self.rollout.clients.cloudwatch.put_metric_data(Namespace="AWS/Lambda", MetricData=data)


def test_a_version_exactly_as_good_as_the_stable_one_at_2_percent_errors_is_promoted(
    rollout: Rollout,
) -> None:
    # Given both versions failing 2 % of requests at random: the previous gate rolled such a version back
    # about 80 % of the time at 4 requests/s (benchmarks/canary_noise.py)
    with _NoisyTraffic(rollout) as traffic:
        status, entries = rollout.finish(rollout.start(min_invocations=50, bake_seconds=2))
    # Then noise is not a regression: promoted, and the new version did fail some requests on the way
    assert status == "SUCCEEDED", [e.data.get("reason") for e in entries if e.kind == "gate"]
    assert traffic.served[rollout.new][1] > 0
    assert rollout.alias()["FunctionVersion"] == rollout.new


def test_a_quiet_function_is_promoted_on_what_its_small_steps_can_serve(rollout: Rollout) -> None:
    # Given about 2 requests/s on the alias: 0.2/s reach the new version at step 1. The previous gate
    # needed min_invocations (10) in every step, about 50 s at step 1, and failed it after its re-checks
    # (about 30 s here); each step now needs its share, counted over the rollout (step 1: 2 of 10).
    with rollout.traffic(requests_per_tick=1, interval=0.5):
        status, entries = rollout.finish(rollout.start(min_invocations=10, hold_seconds=2, max_holds=15))
    assert status == "SUCCEEDED", [e.data.get("reason") for e in entries if e.kind == "gate"]
    last_gate = [e.data for e in entries if e.kind == "gate"][-1]
    assert last_gate["required_invocations"] == 10 and last_gate["new"]["invocations"] >= 10


def test_no_data_never_passes_the_gate(rollout: Rollout) -> None:
    # No traffic at all: the gate holds, re-checks a bounded number of times, then fails the step.
    status, entries = rollout.finish(rollout.start(bake_seconds=0, hold_seconds=0, max_holds=2))

    assert status == "FAILED"
    verdicts = [e.data["verdict"] for e in entries if e.kind == "gate"]
    assert verdicts == ["hold", "hold", "unhealthy"]
    assert "promote" not in _kinds(entries)
    rolled = next(e.data for e in entries if e.kind == "rollback")
    assert rolled["reason"].startswith("not enough data after 3 checks")
    assert rollout.alias()["FunctionVersion"] == rollout.stable


def test_a_failing_pre_traffic_hook_moves_no_traffic(rollout: Rollout) -> None:
    hook = _hook(
        rollout.clients, "def handler(event, context):\n    return {'status': 'Failed', 'reason': 'db'}\n"
    )
    status, entries = rollout.finish(rollout.start(pre_traffic_hook=hook))

    assert status == "FAILED"
    assert "shift" not in _kinds(entries)
    failure = next(e for e in entries if e.kind == "failure")
    assert failure.text.startswith("PreTrafficHookRejected: the pre-traffic hook did not return")
    assert '"reason": "db"' in failure.text
    assert next(e.data for e in entries if e.kind == "rollback")["action"] == "already on the stable version"
    assert rollout.alias()["FunctionVersion"] == rollout.stable


def test_a_hook_that_hangs_times_out_and_rolls_back(rollout: Rollout) -> None:
    hook = _hook(
        rollout.clients,
        "import time\ndef handler(event, context):\n    time.sleep(4)\n    return {'status': 'Succeeded'}\n",
    )
    status, entries = rollout.finish(rollout.start(pre_traffic_hook=hook, hook_timeout_seconds=1))

    assert status == "FAILED"
    failure = next(e for e in entries if e.kind == "failure")
    assert failure.text.startswith("PreTrafficHookFailed: PreTrafficHook: States.Timeout")
    assert rollout.alias()["FunctionVersion"] == rollout.stable


def test_a_failing_post_traffic_hook_rolls_back_a_promoted_version(rollout: Rollout) -> None:
    hook = _hook(
        rollout.clients,
        "def handler(event, context):\n"
        "    if event['phase'] == 'PostTraffic':\n"
        "        raise RuntimeError('checkout smoke test failed through the alias')\n"
        "    return {'status': 'Succeeded'}\n",
    )
    with rollout.traffic():
        status, entries = rollout.finish(rollout.start(pre_traffic_hook=hook, post_traffic_hook=hook))

    assert status == "FAILED"
    kinds = _kinds(entries)
    assert kinds.index("promote") < kinds.index("rollback")
    rolled = next(e.data for e in entries if e.kind == "rollback")
    assert rolled["action"] == f"moved from version {rollout.new} with no routing to version 1"
    assert "RuntimeError: checkout smoke test failed" in rolled["reason"]
    assert rollout.alias()["FunctionVersion"] == rollout.stable


def test_a_concurrent_alias_change_stops_the_rollout_and_leaves_the_alias_as_found(rollout: Rollout) -> None:
    lambda_ = rollout.clients.lambda_
    with rollout.traffic():
        arn = rollout.start(bake_seconds=3)
        wait_for(lambda: routing(rollout.alias()), "step 1")
        lambda_.update_alias(
            FunctionName=rollout.target.function,
            Name=rollout.target.alias,
            RoutingConfig={"AdditionalVersionWeights": {rollout.new: 0.5}},
        )
        status, entries = rollout.finish(arn)

    assert status == "FAILED" and entries[-1].data["error"] == "CanarySuperseded"
    rolled = next(e.data for e in entries if e.kind == "rollback")
    assert rolled["outcome"] == "superseded" and "was changed outside this rollout" in rolled["reason"]
    assert routing(rollout.alias()) == {rollout.new: 0.5}  # left exactly as the other writer set it
    assert [a["stage"] for a in rollout.alerts()] == ["canary_started", "canary_superseded"]


def test_an_operator_hotfix_mid_rollout_is_not_reverted(rollout: Rollout) -> None:
    lambda_ = rollout.clients.lambda_
    hotfix = publish_version(lambda_, rollout.target.function, "stable")
    with rollout.traffic():
        arn = rollout.start(bake_seconds=3)
        wait_for(lambda: routing(rollout.alias()), "step 1")
        # The operator points the alias at a hotfix, as `sam deploy` with AutoPublishAlias would.
        lambda_.update_alias(
            FunctionName=rollout.target.function,
            Name=rollout.target.alias,
            FunctionVersion=hotfix,
            RoutingConfig={"AdditionalVersionWeights": {}},
        )
        status, entries = rollout.finish(arn)

    assert status == "FAILED" and entries[-1].data["error"] == "CanarySuperseded"
    alias = rollout.alias()
    assert alias["FunctionVersion"] == hotfix and not routing(alias)
    alerts = rollout.alerts()
    assert [a["stage"] for a in alerts] == ["canary_started", "canary_superseded"]
    assert f"found version {hotfix} with no routing" in alerts[-1]["reason"]


def test_a_stale_rollout_does_not_revert_a_later_promotion(rollout: Rollout) -> None:
    lambda_ = rollout.clients.lambda_
    later = publish_version(lambda_, rollout.target.function, "stable")
    # The rollout waits in its pre-traffic hook until version `later` is promoted, then the hook fails.
    hook = _hook(
        rollout.clients,
        "import time\n"
        "import boto3\n"
        "def handler(event, context):\n"
        "    lambda_ = boto3.client('lambda')\n"
        "    for _ in range(600):\n"
        "        alias = lambda_.get_alias(FunctionName=event['function'], Name=event['alias'])\n"
        "        if alias['FunctionVersion'] != event['stable_version']:\n"
        "            break\n"
        "        time.sleep(0.1)\n"
        "    return {'status': 'Failed', 'reason': 'smoke test failed'}\n",
    )
    arn = rollout.start(pre_traffic_hook=hook)
    # Once in the hook: preflight has recorded the alias as it found it (the lock comes before that read).
    wait_for(lambda: _entered(rollout, arn, "PreTrafficHook"), "the rollout waits in its hook")
    lambda_.update_alias(
        FunctionName=rollout.target.function, Name=rollout.target.alias, FunctionVersion=later
    )
    status, entries = rollout.finish(arn)

    assert status == "FAILED" and entries[-1].data["error"] == "CanarySuperseded"
    assert rollout.alias()["FunctionVersion"] == later  # not rolled "back" to version 1
    assert lock_holder(rollout) is None


def _entered(rollout: Rollout, arn: str, state: str) -> bool:
    return any(
        (e.get("stateEnteredEventDetails") or {}).get("name") == state
        for e in history_events(rollout.clients.stepfunctions, arn)
    )


def test_two_rollouts_at_once_one_is_refused_by_the_lock_and_names_never_collide(rollout: Rollout) -> None:
    first, second = rollout.start(max_holds=0), rollout.start(max_holds=0)
    assert first != second
    (first_status, first_entries), (second_status, second_entries) = (
        rollout.finish(first),
        rollout.finish(second),
    )

    errors = sorted([first_entries[-1].data["error"], second_entries[-1].data["error"]])
    assert (first_status, second_status) == ("FAILED", "FAILED")  # no traffic: the winner rolls back
    assert errors == ["CanaryRefused", "CanaryRolledBack"]
    refused = first_entries if first_entries[-1].data["error"] == "CanaryRefused" else second_entries
    assert "holds it" in refused[-1].text and _kinds(refused) == ["failed"]
    assert rollout.alias()["FunctionVersion"] == rollout.stable and lock_holder(rollout) is None


def test_stop_execution_mid_rollout_rolls_back_and_alerts(rollout: Rollout) -> None:
    with rollout.traffic():
        arn = rollout.start(bake_seconds=30)
        wait_for(lambda: routing(rollout.alias()), "step 1")
        rollout.clients.stepfunctions.stop_execution(executionArn=arn, error="Operator", cause="wrong build")
        status, _ = rollout.finish(arn)
        wait_for(lambda: not routing(rollout.alias()) and lock_holder(rollout) is None, "recovery")

    assert status == "ABORTED"
    assert rollout.alias()["FunctionVersion"] == rollout.stable
    alerts = rollout.alerts()
    assert [a["stage"] for a in alerts] == ["canary_started", "canary_aborted"]
    assert "ended ABORTED" in alerts[-1]["reason"] and alerts[-1]["severity"] == "high"


def test_an_oversized_hook_answer_is_a_failed_hook_and_rolls_back(rollout: Rollout) -> None:
    hook = _hook(
        rollout.clients,
        "def handler(event, context):\n    return {'status': 'Succeeded', 'log': 'x' * 300000}\n",
    )
    status, entries = rollout.finish(rollout.start(pre_traffic_hook=hook))

    assert status == "FAILED" and entries[-1].data["error"] == "CanaryRolledBack"
    verdict = next(e.data for e in entries if e.kind == "hook")
    assert verdict["status"] == "Failed" and "more than 32768 bytes" in verdict["reason"]
    assert rollout.alias()["FunctionVersion"] == rollout.stable and lock_holder(rollout) is None


def test_the_local_runtime_enforces_the_payload_quota_and_alias_revisions_like_aws(rollout: Rollout) -> None:
    # A direct lambda:invoke task returning 300 KB: States.DataLimitExceeded, not caught by States.ALL.
    clients = rollout.clients
    hook = _hook(clients, "def handler(event, context):\n    return {'log': 'x' * 300000}\n")
    definition = {
        "StartAt": "Call",
        "States": {
            "Call": {
                "Type": "Task",
                "Resource": "arn:aws:states:::lambda:invoke",
                "Parameters": {"FunctionName": hook, "Payload": {}},
                "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "Caught"}],
                "End": True,
            },
            "Caught": {"Type": "Pass", "End": True},
        },
    }
    machine = clients.stepfunctions.create_state_machine(
        name=f"quota-{uuid.uuid4().hex[:6]}",
        definition=json.dumps(definition),
        roleArn="arn:aws:iam::123456789012:role/sfn",
    )["stateMachineArn"]
    arn = clients.stepfunctions.start_execution(stateMachineArn=machine)["executionArn"]
    status, _ = rollout.finish(arn)
    assert status == "FAILED"
    assert clients.stepfunctions.describe_execution(executionArn=arn)["error"] == "States.DataLimitExceeded"
    # UpdateAlias with a stale RevisionId: PreconditionFailedException, as in Lambda.
    stale = rollout.alias()["RevisionId"]
    clients.lambda_.update_alias(
        FunctionName=rollout.target.function, Name=rollout.target.alias, Description="x"
    )
    with pytest.raises(clients.lambda_.exceptions.PreconditionFailedException):
        clients.lambda_.update_alias(
            FunctionName=rollout.target.function, Name=rollout.target.alias, Description="y", RevisionId=stale
        )


def test_a_missing_alarm_is_refused_before_any_traffic_moves(rollout: Rollout) -> None:
    status, entries = rollout.finish(rollout.start(alarms=[rollout.target.alarm, "no-such-alarm"]))

    assert status == "FAILED"
    assert entries[-1].data["error"] == "CanaryRefused"
    assert "alarms: no-such-alarm does not exist" in entries[-1].text
    assert _kinds(entries) == ["failed"]
    assert rollout.alias()["FunctionVersion"] == rollout.stable


def test_a_step_above_ten_percent_is_refused_with_the_field_named(rollout: Rollout) -> None:
    document = {
        "function": rollout.target.function,
        "alias": rollout.target.alias,
        "target_version": rollout.new,
        "steps": [10, 30, 40, 50, 60, 70, 80, 90],
    }
    # Straight to the state machine, past the client-side validation of start_rollout.
    arn = rollout.clients.stepfunctions.start_execution(
        stateMachineArn=rollout.state_machine, input=json.dumps(document)
    )["executionArn"]
    status, entries = rollout.finish(arn)

    assert status == "FAILED"
    assert entries[-1].data["error"] == "InvalidCanaryInput"
    assert "steps: step 2 raises traffic from 10 % to 30 % (+20)" in entries[-1].text
    assert rollout.alias()["FunctionVersion"] == rollout.stable


def test_a_second_rollout_of_a_busy_alias_is_refused(rollout: Rollout) -> None:
    lambda_ = rollout.clients.lambda_
    lambda_.update_alias(
        FunctionName=rollout.target.function,
        Name=rollout.target.alias,
        RoutingConfig={"AdditionalVersionWeights": {rollout.new: 0.2}},
    )
    status, entries = rollout.finish(rollout.start())

    assert status == "FAILED"
    assert "already routes traffic (version 1 with 20 % on version" in entries[-1].text
    assert rollout.alias()["RoutingConfig"]["AdditionalVersionWeights"] == {rollout.new: 0.2}


def test_the_cli_tells_a_failed_first_shift_and_a_failed_rollback_apart_from_a_rollback(
    rollout: Rollout, capsys: pytest.CaptureFixture[str]
) -> None:
    from immutable_guard.canary.cli import EXIT_ROLLBACK_FAILED
    from immutable_guard.cli import main

    # Given a pre-traffic hook that deletes the alias: the first shift fails, and so does the rollback
    hook = _hook(
        rollout.clients,
        "import boto3\n"
        "def handler(event, context):\n"
        "    boto3.client('lambda').delete_alias(FunctionName=event['function'], Name=event['alias'])\n"
        "    return {'status': 'Succeeded'}\n",
    )
    # When the rollout is run from the command line
    code = main(
        [
            "canary",
            rollout.target.function,
            "--alias",
            rollout.target.alias,
            "--to-version",
            rollout.new,
            "--pre-hook",
            hook,
            "--state-machine-arn",
            rollout.state_machine,
            "--poll-seconds",
            "0.2",
            *[f"--{k.replace('_', '-')}={v}" for k, v in FAST.items()],
        ]
    )
    out = capsys.readouterr().out
    # Then it says what happened, line by line, without a traceback or "rolled back to None"
    assert "ShiftFailed" in out and "no longer exists" in out, out
    assert "ROLLBACK FAILED" in out and "a person must act" in out, out
    assert "Traceback" not in out and "None" not in out, out
    assert code == EXIT_ROLLBACK_FAILED


def test_a_throttled_shift_is_retried_not_rolled_back(
    rollout: Rollout, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given Lambda throttling the rollout's first UpdateAlias calls (TooManyRequestsException, HTTP 429, as
    # Lambda answers a burst), as many as one step's boto3 client attempts: its retries do not absorb them
    from moto.awslambda.exceptions import LambdaClientError
    from moto.awslambda.models import LambdaBackend

    # Clients() configures every client alike, the steps' included
    attempts = int(rollout.clients.lambda_.meta.config.retries["total_max_attempts"])

    class Throttled(LambdaClientError):
        code = 429

        def __init__(self) -> None:
            super().__init__("TooManyRequestsException", "Rate exceeded")

    update_alias = LambdaBackend.update_alias
    refused: list[str] = []

    def throttled(self: Any, name: str, function_name: str, *args: Any, **kwargs: Any) -> Any:
        if function_name.endswith(rollout.target.function) and len(refused) < attempts:
            refused.append(function_name)
            raise Throttled()
        return update_alias(self, name, function_name, *args, **kwargs)

    monkeypatch.setattr(LambdaBackend, "update_alias", throttled)
    # When the rollout runs
    with rollout.traffic(alarm=rollout.target.alarm):
        status, entries = rollout.finish(rollout.start(alarms=[rollout.target.alarm]))
    # Then the state machine retried the step and the healthy version was promoted
    assert len(refused) == attempts
    assert status == "SUCCEEDED", [e.text for e in entries]
    assert [e.data["percent"] for e in entries if e.kind == "shift"] == [10, 20, 30, 40, 50, 60, 70, 80, 90]
    assert rollout.alias()["FunctionVersion"] == rollout.new
