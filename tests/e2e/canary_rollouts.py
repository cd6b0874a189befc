"""What the canary's e2e tests share: the timing a rollout takes on the local AWS, and the wait for an
execution to end (a module of its own: test modules cannot import `conftest` beside other test folders)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from immutable_guard.canary.history import Entry, history_events, timeline

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
