"""What the canary's e2e tests share: the timing a rollout takes on the local AWS, a rollout of the sample
target and the waits for it (a module of its own: test modules cannot import `conftest` beside other test
folders; the fixtures that build a `Rollout` are in this folder's conftest)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from immutable_guard.canary.demo import DemoTarget, TrafficSimulator, start_rollout
from immutable_guard.canary.history import Entry, history_events, timeline
from immutable_guard.canary.lock import RolloutLock
from immutable_guard.clients import Clients

if TYPE_CHECKING:
    from mypy_boto3_stepfunctions import SFNClient

# The local CloudWatch has no metric delay; the bake is checked every second.
FAST: dict[str, Any] = {
    "bake_seconds": 1,
    "check_interval_seconds": 1,
    "metric_delay_seconds": 0,
    "min_invocations": 2,
    "hold_seconds": 1,
    "max_holds": 10,
}


def finish(sfn: SFNClient, arn: str) -> tuple[str, list[Entry]]:
    """The execution's final status and story, once it has ended."""
    for _ in range(1200):  # bounded wait for moto's executor thread; never an assertion on time
        status = sfn.describe_execution(executionArn=arn)["status"]
        if status != "RUNNING":
            return status, timeline(history_events(sfn, arn))
        time.sleep(0.1)
    raise AssertionError(f"{arn} still running")


@dataclass
class Rollout:
    """The sample target deployed for one test, the canary's state machine, and where its alerts land."""

    target: DemoTarget
    stable: str
    new: str
    clients: Clients
    state_machine: str
    alert_queue: str
    ledger_table: str

    def start(self, **options: Any) -> str:
        document = {"function": self.target.function, "alias": self.target.alias, "target_version": self.new}
        return start_rollout(self.clients.stepfunctions, self.state_machine, {**document, **FAST, **options})

    def finish(self, arn: str) -> tuple[str, list[Entry]]:
        return finish(self.clients.stepfunctions, arn)

    def alias(self) -> dict[str, Any]:
        return dict(self.clients.lambda_.get_alias(FunctionName=self.target.function, Name=self.target.alias))

    def traffic(self, **options: Any) -> TrafficSimulator:
        return TrafficSimulator(
            self.clients.lambda_, self.clients.cloudwatch, self.target.function, self.target.alias, **options
        )

    def alerts(self) -> list[dict[str, Any]]:
        sqs = self.clients.sqs
        found = []
        while True:
            messages = sqs.receive_message(QueueUrl=self.alert_queue, MaxNumberOfMessages=10).get(
                "Messages", []
            )
            if not messages:
                return found
            for message in messages:
                body = json.loads(message["Body"])
                alert = json.loads(body["Message"]) if "Message" in body else body
                if alert.get("kind") == "canary" and alert["rollout"]["function"] == self.target.function:
                    found.append(alert)


def routing(alias: dict[str, Any]) -> dict[str, float]:
    return dict((alias.get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {})


def wait_for(condition: Any, what: str) -> None:
    for _ in range(600):  # bounded wait for another thread; never an assertion on time
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


def lock_holder(rollout: Rollout) -> str | None:
    lock = RolloutLock(rollout.clients.dynamodb, rollout.ledger_table)
    held = lock.get(rollout.target.function, rollout.target.alias)
    return held["execution"] if held else None
