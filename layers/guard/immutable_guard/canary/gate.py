"""The health gate during and after each step's bake. Fail fast, pass slow: every check during the bake can
fail the step (an alarm in ALARM, or the new version's error rate shown to be worse than the stable
version's); a step passes only once its bake is over, its metrics have settled, and the new version has
served enough requests over the rollout with alarms OK. Error rates are measured on the alias by
ExecutedVersion, so alarms on the whole function cannot block a fix.

Noise must not roll a good version back: "worse" is a statistical statement (the lower bound of a
confidence interval on the difference of error rates above the tolerance), it must hold for
``failure_limit`` consecutive checks, and requests are counted over the whole rollout, not one step."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from statistics import NormalDist
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
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


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


def _wilson(failed: float, requests: float, z: float) -> tuple[float, float]:
    """Wilson score interval of a failure rate: honest at small counts and near 0, unlike the normal one."""
    if requests <= 0:
        return 0.0, 1.0
    rate = failed / requests
    denominator = 1 + z * z / requests
    centre = (rate + z * z / (2 * requests)) / denominator
    half = z * math.sqrt(rate * (1 - rate) / requests + z * z / (4 * requests * requests)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def excess_error_rate_bound(new: VersionTraffic, stable: VersionTraffic, confidence: float) -> float:
    """Lower confidence bound of (new error rate - stable error rate), by Newcombe's hybrid score method
    (Newcombe 1998, method 10): a one-sided bound at ``confidence``. Above the tolerance means the new
    version is worse with that confidence, not merely unlucky."""
    z = NormalDist().inv_cdf(confidence)
    new_rate = new.error_rate()
    stable_rate = stable.error_rate()
    new_low, _ = _wilson(new.failed, new.requests, z)
    _, stable_high = _wilson(stable.failed, stable.requests, z)
    return new_rate - stable_rate - math.sqrt((new_rate - new_low) ** 2 + (stable_high - stable_rate) ** 2)


def required_invocations(plan: dict[str, Any], step_index: int) -> int:
    """Invocations of the new version needed, over the rollout so far, to pass step ``step_index``:
    ``min_invocations`` by the last step, in proportion to the share of traffic before it. A function with
    little traffic is judged on what its small first steps can serve, and must still reach the full count
    before the last step passes."""
    minimum = int(plan["min_invocations"])
    steps = [float(p) for p in plan["steps"]]
    if minimum == 0 or not steps:
        return 0
    share = steps[min(step_index, len(steps) - 1)] / steps[-1]
    return math.ceil(minimum * share)


@dataclass(frozen=True)
class Check:
    """Everything one check of the gate looks at, read from AWS (or made up by the noise simulation)."""

    new: VersionTraffic
    stable: VersionTraffic
    alarms: dict[str, str | None]
    now: datetime
    shifted_at: datetime


def judge(
    plan: dict[str, Any], step: dict[str, Any], check: Check, checks: int, failures: int
) -> dict[str, Any]:
    """The verdict on one check, from its data alone (no AWS call): what `evaluate` and the noise
    simulation in benchmarks/ both run.

    ``checks`` counts the re-checks already spent on a step short of data after its bake; ``failures`` the
    consecutive checks that found the new version worse. Both come back updated for the next check.
    """
    target, stable = str(plan["target_version"]), str(plan["stable_version"])
    new, old = check.new, check.stable
    tolerance = float(plan["error_rate_tolerance"]) / 100
    confidence = float(plan.get("confidence", 0.99))
    limit = int(plan.get("failure_limit", 2))
    judged_on_errors = int(plan["min_invocations"]) > 0
    index = int(step["index"])
    needed = required_invocations(plan, index)
    passes_at = check.shifted_at + timedelta(
        seconds=int(plan["bake_seconds"]) + int(plan.get("metric_delay_seconds", 0))
    )

    problems: list[str] = []
    missing = sorted(name for name, state in check.alarms.items() if state is None)
    if missing:
        problems.append(f"alarm {', '.join(missing)} no longer exists")
    firing = sorted(name for name, state in check.alarms.items() if state == "ALARM")
    if firing:
        problems.append(f"alarm {', '.join(firing)} in ALARM")
    bound = excess_error_rate_bound(new, old, confidence) if judged_on_errors else None
    worse = bound is not None and new.failed > 0 and bound > tolerance
    failures = failures + 1 if worse else 0
    comparison = (
        f"version {target}: {new.failed:g} failed of {new.requests:g} requests ({new.error_rate():.1%}); "
        f"stable version {stable}: {old.failed:g} of {old.requests:g} ({old.error_rate():.1%})"
    )
    if worse and failures >= limit:
        problems.append(
            f"{comparison}: worse by at least {bound:.2%} with {confidence:.0%} confidence, above the "
            f"{plan['error_rate_tolerance']:g} pt tolerance, on {failures} consecutive checks"
        )

    record = {
        "checks": checks,
        "failures": failures,
        "step": index + 1,
        "percent": step["percent"],
        "alarms": check.alarms,
        "new": asdict(new),
        "stable": asdict(old),
        "required_invocations": needed,
        "excess_error_rate_bound": bound,
        "confidence": confidence,
        "checked_at": check.now.strftime(_TIME_FORMAT),
        "wait_seconds": 0,
    }
    if problems:
        return {**record, "verdict": UNHEALTHY, "reason": "; ".join(problems)}
    interval = max(1, int(plan.get("check_interval_seconds", 60)))
    if worse:
        record.update(wait_seconds=interval)
        return {
            **record,
            "verdict": HOLD,
            "reason": f"suspect, check {failures} of {limit}: {comparison}; looking again",
        }
    if check.now < passes_at:
        # Pass slow: only a failure can end the bake early.
        left = math.ceil((passes_at - check.now).total_seconds())
        record.update(wait_seconds=max(1, min(interval, left)))
        return {
            **record,
            "verdict": HOLD,
            "reason": f"baking: {left} s until the step can pass; {comparison}",
        }
    pending = []
    unsure = sorted(name for name, state in check.alarms.items() if state == "INSUFFICIENT_DATA")
    if unsure:
        pending.append(f"alarm {', '.join(unsure)} has insufficient data")
    if new.invocations < needed:
        pending.append(
            f"version {target} served {new.invocations:g} of the {needed} invocations needed by step "
            f"{index + 1} ({plan['min_invocations']} by the last)"
        )
    if pending:
        record["checks"] = checks + 1
        if record["checks"] > int(plan["max_holds"]):
            return {
                **record,
                "verdict": UNHEALTHY,
                # Short of data, not shown worse: a plan with on_inconclusive "wait" asks a person instead.
                "inconclusive": True,
                "reason": f"not enough data after {record['checks']} checks: " + "; ".join(pending),
            }
        record.update(wait_seconds=int(plan["hold_seconds"]))
        return {**record, "verdict": HOLD, "reason": "; ".join(pending)}
    verdict_reason = f"{comparison}; alarms OK" if judged_on_errors else "alarms OK (alarm-only gating)"
    return {**record, "verdict": HEALTHY, "reason": verdict_reason}


def evaluate(
    cloudwatch: CloudWatchClient,
    plan: dict[str, Any],
    step: dict[str, Any],
    checks: int = 0,
    failures: int = 0,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Check the step that ``step`` (the shift's result) started: read alarms and the traffic per version
    since the rollout started, then `judge`.

    Returns
    -------
    dict
        ``verdict`` (healthy / hold / unhealthy), ``reason``, ``wait_seconds`` before the next look on hold,
        the updated ``checks`` and ``failures``, and the evidence (alarm states, requests and failures per
        version, the confidence bound) as the decision record.
    """
    now = now or datetime.now(UTC)
    target, stable = str(plan["target_version"]), str(plan["stable_version"])
    shifted_at = _parse_time(str(step["shifted_at"]))
    # Requests are counted over the whole rollout: a step of a quiet function adds to what earlier ones saw.
    since = _parse_time(str(plan.get("started_at") or step["shifted_at"])) - timedelta(seconds=1)
    states = alarm_states(cloudwatch, list(plan.get("alarms") or []))
    traffic = version_traffic(
        cloudwatch, plan["function"], plan["alias"], (target, stable), since, now + timedelta(minutes=1)
    )
    check = Check(new=traffic[target], stable=traffic[stable], alarms=states, now=now, shifted_at=shifted_at)
    return judge(plan, step, check, checks, failures)
