"""The health gate after each shift. A step is healthy only on positive confirmation: every listed alarm
OK, enough invocations of the new version, and its error rate within tolerance of the stable version's,
measured on the alias by ExecutedVersion so alarms on the whole function cannot block a fix."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from immutable_guard.canary.traffic import alarm_states
from immutable_guard.errors import AwsCallFailed

if TYPE_CHECKING:
    from mypy_boto3_cloudwatch import CloudWatchClient

HEALTHY = "healthy"
HOLD = "hold"
UNHEALTHY = "unhealthy"
_METRICS = ("Invocations", "Errors", "Throttles")


@dataclass(frozen=True)
class VersionTraffic:
    """What one version of the alias served in the window."""

    version: str
    invocations: float
    errors: float
    throttles: float

    @property
    def failed(self) -> float:
        return self.errors + self.throttles

    @property
    def requests(self) -> float:
        return self.invocations + self.throttles  # a throttled request is not an invocation

    def error_rate(self, at_least: float = 0) -> float:
        """Failed share of requests; with ``at_least`` the share if the missing requests all succeed."""
        denominator = max(self.requests, at_least)
        return self.failed / denominator if denominator else 0.0


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def version_traffic(
    cloudwatch: CloudWatchClient,
    function: str,
    alias: str,
    versions: tuple[str, str],
    start: datetime,
    end: datetime,
) -> dict[str, VersionTraffic]:
    """Sum of Invocations, Errors and Throttles per executed version of ``function:alias``."""
    queries: list[Any] = []
    for number, version in enumerate(versions):
        for metric in _METRICS:
            dimensions = [
                {"Name": "FunctionName", "Value": function},
                {"Name": "Resource", "Value": f"{function}:{alias}"},
                {"Name": "ExecutedVersion", "Value": version},
            ]
            queries.append(
                {
                    "Id": f"v{number}_{metric.lower()}",
                    "MetricStat": {
                        "Metric": {"Namespace": "AWS/Lambda", "MetricName": metric, "Dimensions": dimensions},
                        "Period": 60,
                        "Stat": "Sum",
                    },
                    "ReturnData": True,
                }
            )
    sums: dict[str, float] = {}
    try:
        paginator = cloudwatch.get_paginator("get_metric_data")
        for page in paginator.paginate(MetricDataQueries=queries, StartTime=start, EndTime=end):
            for result in page.get("MetricDataResults", []):
                sums[result["Id"]] = sums.get(result["Id"], 0.0) + float(sum(result.get("Values", [])))
    except ClientError as exc:
        raise AwsCallFailed(f"metrics of {function}:{alias}: cannot read them: {exc}") from exc
    return {
        version: VersionTraffic(
            version=version,
            invocations=sums.get(f"v{number}_invocations", 0.0),
            errors=sums.get(f"v{number}_errors", 0.0),
            throttles=sums.get(f"v{number}_throttles", 0.0),
        )
        for number, version in enumerate(versions)
    }


def evaluate(
    cloudwatch: CloudWatchClient,
    plan: dict[str, Any],
    step: dict[str, Any],
    checks: int,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Judge the step that ``step`` (the shift's result) started.

    Returns
    -------
    dict
        ``verdict`` (healthy / hold / unhealthy), ``reason`` and the evidence (alarm states, traffic per
        version, ``checks`` done so far). Hold becomes unhealthy once ``max_holds`` re-checks are spent.
    """
    now = now or datetime.now(UTC)
    checks_done = checks + 1
    target, stable = str(plan["target_version"]), str(plan["stable_version"])
    states = alarm_states(cloudwatch, list(plan.get("alarms") or []))
    # The window opens when this step's weight was set: earlier traffic was judged by earlier steps.
    start = _parse_time(str(step["shifted_at"])) - timedelta(seconds=1)
    traffic = version_traffic(
        cloudwatch, plan["function"], plan["alias"], (target, stable), start, now + timedelta(minutes=1)
    )
    new, old = traffic[target], traffic[stable]
    tolerance = float(plan["error_rate_tolerance"]) / 100
    allowed = old.error_rate() + tolerance
    minimum = int(plan["min_invocations"])

    problems, pending = [], []
    missing = sorted(name for name, state in states.items() if state is None)
    if missing:
        problems.append(f"alarm {', '.join(missing)} no longer exists")
    firing = sorted(name for name, state in states.items() if state == "ALARM")
    if firing:
        problems.append(f"alarm {', '.join(firing)} in ALARM")
    # Errors already above tolerance even if every missing request succeeded: no need to wait for more.
    if new.failed and new.error_rate(at_least=minimum) > allowed:
        problems.append(
            f"version {target} failed {new.failed:g} of {new.requests:g} requests "
            f"({new.error_rate():.1%}), above stable version {stable}'s {old.error_rate():.1%} "
            f"+ {plan['error_rate_tolerance']:g} pt tolerance"
        )
    unsure = sorted(name for name, state in states.items() if state == "INSUFFICIENT_DATA")
    if unsure:
        pending.append(f"alarm {', '.join(unsure)} has insufficient data")
    if new.invocations < minimum:
        pending.append(f"version {target} served {new.invocations:g} of the {minimum} invocations needed")

    if problems:
        verdict, reason = UNHEALTHY, "; ".join(problems)
    elif pending and checks_done > int(plan["max_holds"]):
        verdict = UNHEALTHY
        reason = f"not enough data after {checks_done} checks: " + "; ".join(pending)
    elif pending:
        verdict, reason = HOLD, "; ".join(pending)
    else:
        verdict = HEALTHY
        reason = (
            f"version {target}: {new.failed:g} failed of {new.requests:g} requests ({new.error_rate():.1%}); "
            f"stable version {stable}: {old.error_rate():.1%}; alarms OK"
        )
    return {
        "verdict": verdict,
        "reason": reason,
        "checks": checks_done,
        "step": int(step["index"]) + 1,
        "percent": step["percent"],
        "alarms": states,
        "new": asdict(new),
        "stable": asdict(old),
        "checked_at": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
    }
