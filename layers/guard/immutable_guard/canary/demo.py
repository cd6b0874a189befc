"""The canary demonstration on the embedded local AWS: the sample target of examples/canary-target, new
versions published from it, and simulated traffic. moto runs no Lambda traffic, emits no Lambda metrics and
evaluates no alarms, so the simulator invokes the alias's versions by weight, publishes the metrics Lambda
would (by ExecutedVersion), and plays CloudWatch for the alias's alarm."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from immutable_guard.canary.history import Entry, follow
from immutable_guard.canary.plan import execution_name, parse_request

if TYPE_CHECKING:
    from mypy_boto3_cloudwatch import CloudWatchClient
    from mypy_boto3_lambda import LambdaClient
    from mypy_boto3_stepfunctions import SFNClient

    from immutable_guard.clients import Clients
    from immutable_guard.local import LocalAws

EXAMPLE = Path("examples") / "canary-target" / "template.yaml"


@dataclass(frozen=True)
class DemoTarget:
    function: str
    alias: str
    alarm: str
    smoke_test_hook: str


def deploy_target(aws: LocalAws, stack_name: str = "canary-demo") -> DemoTarget:
    """Deploy the sample target (version 1 behind `live`, its alarm, the smoke-test hook)."""
    deployment = aws.deploy(stack_name=stack_name, template_path=aws.repo_root / EXAMPLE)
    outputs = deployment.outputs
    return DemoTarget(
        function=str(outputs["FunctionName"]),
        alias=str(outputs["AliasName"]),
        alarm=str(outputs["AlarmName"]),
        smoke_test_hook=str(outputs["SmokeTestHookName"]),
    )


def publish_version(lambda_: LambdaClient, function: str, behaviour: str) -> str:
    """Publish a new version of the sample target that behaves as ``behaviour`` (stable, improved, buggy)."""
    configuration = lambda_.get_function_configuration(FunctionName=function)
    variables = dict((configuration.get("Environment") or {}).get("Variables") or {})
    lambda_.update_function_configuration(
        FunctionName=function,
        Environment={"Variables": {**variables, "BEHAVIOUR": behaviour}},
        Description=f"order pricing, {behaviour}",
    )
    lambda_.get_waiter("function_updated_v2").wait(FunctionName=function)
    return str(lambda_.publish_version(FunctionName=function, Description=behaviour)["Version"])


class TrafficSimulator:
    """Live traffic on an alias, in a background thread, for as long as the rollout runs.

    Parameters
    ----------
    requests_per_tick:
        Requests per tick, split between the alias's versions by its current routing weights.
    alarm:
        An alarm on the alias's errors that the simulator evaluates (moto does not): ALARM when a tick saw
        errors, OK again after ``clear_after`` clean ticks.
    trip_alarm_at_percent:
        Set ``alarm`` to ALARM once the new version's share reaches this percent, whatever the errors
        (an alarm tripping at a chosen step).
    """

    def __init__(
        self,
        lambda_: LambdaClient,
        cloudwatch: CloudWatchClient,
        function: str,
        alias: str,
        *,
        requests_per_tick: int = 20,
        interval: float = 0.1,
        alarm: str | None = None,
        trip_alarm_at_percent: float | None = None,
        clear_after: int = 50,
        seed: int = 7,
    ) -> None:
        self.lambda_, self.cloudwatch = lambda_, cloudwatch
        self.function, self.alias = function, alias
        self.requests_per_tick, self.interval = requests_per_tick, interval
        self.alarm, self.trip_alarm_at_percent, self.clear_after = alarm, trip_alarm_at_percent, clear_after
        self._random = random.Random(seed)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="canary-traffic", daemon=True)
        self._share = 0.0
        self._clean_ticks = 0
        self.served: dict[str, list[int]] = {}  # version -> [invocations, errors]
        self.failures: list[str] = []

    def __enter__(self) -> TrafficSimulator:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception as exc:  # the demo reports it; one bad tick must not end the traffic
                self.failures.append(repr(exc))
            self._stop.wait(self.interval)

    def tick(self) -> None:
        alias = self.lambda_.get_alias(FunctionName=self.function, Name=self.alias)
        stable = str(alias["FunctionVersion"])
        routing = (alias.get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {}
        counts: dict[str, list[int]] = {}
        for _ in range(self.requests_per_tick):
            version = stable
            for candidate, share in routing.items():
                # Error diffusion: each version gets exactly its share over time, spread evenly.
                self._share += float(share)
                if self._share >= 1:
                    self._share -= 1
                    version = str(candidate)
            errored = self._invoke(version)
            served = counts.setdefault(version, [0, 0])
            served[0] += 1
            served[1] += int(errored)
        self._publish(counts)
        new_share = max((float(s) * 100 for s in routing.values()), default=0.0)
        self._evaluate_alarm(counts, new_share)

    def _invoke(self, version: str) -> bool:
        quantity = self._random.randint(1, 10)
        # The version goes in the name: moto's Invoke ignores the Qualifier parameter (AWS accepts both).
        response = self.lambda_.invoke(
            FunctionName=f"{self.function}:{version}", Payload=json.dumps({"quantity": quantity}).encode()
        )
        response["Payload"].read()
        return bool(response.get("FunctionError"))

    def _publish(self, counts: dict[str, list[int]]) -> None:
        data: list[Any] = []
        resource = f"{self.function}:{self.alias}"
        for version, (invocations, errors) in counts.items():
            total = self.served.setdefault(version, [0, 0])
            total[0] += invocations
            total[1] += errors
            dimensions = [
                {"Name": "FunctionName", "Value": self.function},
                {"Name": "Resource", "Value": resource},
                {"Name": "ExecutedVersion", "Value": version},
            ]
            for metric, value in (("Invocations", invocations), ("Errors", errors), ("Throttles", 0)):
                data.append({"MetricName": metric, "Dimensions": dimensions, "Value": value, "Unit": "Count"})
        errors = sum(e for _, e in counts.values())
        alias_dimensions = [
            {"Name": "FunctionName", "Value": self.function},
            {"Name": "Resource", "Value": resource},
        ]
        data.append(
            {"MetricName": "Errors", "Dimensions": alias_dimensions, "Value": errors, "Unit": "Count"}
        )
        self.cloudwatch.put_metric_data(Namespace="AWS/Lambda", MetricData=data)

    def _evaluate_alarm(self, counts: dict[str, list[int]], new_share: float) -> None:
        if not self.alarm:
            return
        tripped = self.trip_alarm_at_percent is not None and new_share >= self.trip_alarm_at_percent
        errors = sum(e for _, e in counts.values())
        if tripped or errors:
            self._clean_ticks = 0
            reason = (
                f"simulated: {new_share:g} % reached"
                if tripped
                else f"simulated: {errors} errors in one tick"
            )
            self._set_alarm("ALARM", reason)
        else:
            self._clean_ticks += 1
            if self._clean_ticks == self.clear_after:
                self._set_alarm("OK", "simulated: no errors")

    def _set_alarm(self, state: str, reason: str) -> None:
        assert self.alarm is not None
        current = self.cloudwatch.describe_alarms(AlarmNames=[self.alarm])["MetricAlarms"]
        if current and current[0]["StateValue"] != state:
            self.cloudwatch.set_alarm_state(AlarmName=self.alarm, StateValue=state, StateReason=reason)  # type: ignore[arg-type]


def start_rollout(sfn: SFNClient, state_machine_arn: str, document: dict[str, Any]) -> str:
    """Start one rollout (validated here first, so a bad input fails before any call); its execution ARN."""
    request = parse_request(document)
    name = execution_name(request.function, request.alias, request.target_version)
    response = sfn.start_execution(stateMachineArn=state_machine_arn, name=name, input=json.dumps(document))
    return str(response["executionArn"])


def run_demo(print_line: Callable[[str], None] = print, bake_seconds: int = 1) -> int:
    """Five rollouts, each told from its execution history: one promoted, one rolled back by a tripped
    alarm, one superseded by an operator's hotfix (left as the operator set it), one aborted mid-way
    (rolled back by the recovery function on Step Functions' status-change event), and one that waits for a
    person's confirmation before its promotion, given with `immutable-guard canary promote`."""
    from immutable_guard.canary.cli import EXIT_ENDED_OTHERWISE, EXIT_PROMOTED, EXIT_ROLLED_BACK, exit_code
    from immutable_guard.local import LocalAws
    from immutable_guard.local.router import EventRouter

    with LocalAws() as aws:
        deployment = aws.deploy(
            {"SnapshotPollSeconds": "0", "ReplacementPollSeconds": "0"}, allow_missing_code=True
        )
        state_machine = str(deployment.physical_ids["CanaryStateMachine"])
        target = deploy_target(aws)
        clients: Clients = aws.clients()
        lambda_ = clients.lambda_
        stop_hearing = EventRouter(deployment, aws.session()).hear_executions()

        def hotfix(arn: str) -> None:
            fixed = publish_version(lambda_, target.function, "stable")
            print_line(f"   (an operator points {target.alias} at hotfix version {fixed} mid-rollout)")
            lambda_.update_alias(
                FunctionName=target.function,
                Name=target.alias,
                FunctionVersion=fixed,
                RoutingConfig={"AdditionalVersionWeights": {}},
            )

        def abort(arn: str) -> None:
            print_line("   (an operator stops the execution mid-rollout: StopExecution)")
            clients.stepfunctions.stop_execution(executionArn=arn, error="Operator", cause="wrong build")

        def confirm(arn: str) -> None:
            from immutable_guard.canary.lock import RolloutLock
            from immutable_guard.canary.operator import Operator

            ledger = RolloutLock(clients.dynamodb, str(deployment.physical_ids["IncidentLedger"]))
            person = Operator(clients.stepfunctions, lambda_, clients.sts, ledger, state_machine)
            for _ in range(100):  # the wait function keeps the token on the lock as the task starts
                if (ledger.get(target.function, target.alias) or {}).get("task_token"):
                    break
                time.sleep(0.1)
            print_line(f"   ($ immutable-guard canary promote {target.function} --alias {target.alias})")
            print_line("   " + person.steer(target.function, target.alias, "promote"))

        scenarios: list[tuple[str, str, bool, Callable[[str], None] | None]] = [
            ("1. an improved version, with smoke-test hooks", "improved", True, None),
            ("2. a buggy version: bulk orders fail, the alias's alarm trips", "buggy", False, None),
            ("3. an improved version, superseded by an operator's hotfix", "improved", False, hotfix),
            ("4. an improved version, aborted by an operator", "improved", False, abort),
            ("5. an improved version that waits for a person's confirmation", "improved", False, confirm),
        ]
        codes = []
        try:
            for title, behaviour, hooks, interfere in scenarios:
                aborted = interfere is abort
                # The previous rollout's alarm is cleared, as it would clear once its data ages out.
                clients.cloudwatch.set_alarm_state(
                    AlarmName=target.alarm, StateValue="OK", StateReason="demo"
                )
                version = publish_version(lambda_, target.function, behaviour)
                print_line(f"\n== {title}: {target.function}:{target.alias} -> version {version}")
                document: dict[str, Any] = {
                    "function": target.function,
                    "alias": target.alias,
                    "target_version": version,
                    "bake_seconds": bake_seconds if interfere in (None, confirm) else max(bake_seconds, 5),
                    "check_interval_seconds": 1,
                    "metric_delay_seconds": 0,  # the embedded CloudWatch has no delay
                    "alarms": [target.alarm],
                    "min_invocations": 5,
                    "hold_seconds": 1,
                    "max_holds": 10,
                }
                if interfere is confirm:
                    document["confirm_promotion"] = True
                if hooks:
                    document["pre_traffic_hook"] = target.smoke_test_hook
                    document["post_traffic_hook"] = target.smoke_test_hook
                with TrafficSimulator(
                    lambda_, clients.cloudwatch, target.function, target.alias, alarm=target.alarm
                ):
                    arn = start_rollout(clients.stepfunctions, state_machine, document)
                    final: Entry | None = None
                    for entry in follow(clients.stepfunctions, arn, poll_seconds=0.2):
                        print_line(entry.text)
                        final = entry if entry.kind in {"succeeded", "failed"} else final
                        if interfere is not None and entry.kind == (
                            "waiting" if interfere is confirm else "shift"
                        ):
                            interfere(arn)
                            interfere = None
                    if aborted:
                        _wait_for_recovery(lambda_, target, print_line)
                alias = lambda_.get_alias(FunctionName=target.function, Name=target.alias)
                print_line(f"alias {target.alias} now serves version {alias['FunctionVersion']}")
                codes.append(exit_code(final))
        finally:
            stop_hearing()
        expected = [
            EXIT_PROMOTED,
            EXIT_ROLLED_BACK,
            EXIT_ENDED_OTHERWISE,
            EXIT_ENDED_OTHERWISE,
            EXIT_PROMOTED,
        ]
        return 0 if codes == expected else 1


def _wait_for_recovery(lambda_: LambdaClient, target: DemoTarget, print_line: Callable[[str], None]) -> None:
    """The recovery function runs on the status-change event, after the execution has ended."""
    for _ in range(100):
        alias = lambda_.get_alias(FunctionName=target.function, Name=target.alias)
        if not (alias.get("RoutingConfig") or {}).get("AdditionalVersionWeights"):
            print_line(
                "recovery: the aborted rollout's traffic is back on the stable version (canary_aborted alert)"
            )
            return
        time.sleep(0.2)
    print_line("recovery: the alias is still split: check the canary_aborted alert")
