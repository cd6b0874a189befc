"""How often the canary's health gate rolls back a version exactly as good as the stable one (noise), and
how fast it rolls back a worse one. Simulated rollouts through the gate's own decision code
(`immutable_guard.canary.gate.judge`), looked at as the state machine does: first look one check interval
after each shift, then as long as the gate says to wait. Requests arrive as a Poisson process split by the
step's weight; each fails independently at its version's error rate.

The previous gate (one look at the end of each bake, the step's own requests only, failing as soon as the
observed rate exceeded the stable rate plus the tolerance) is simulated beside it for comparison.

    .venv/bin/python benchmarks/canary_noise.py [--rollouts 400] [--seed 1]
"""

from __future__ import annotations

import argparse
import math
import random
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "layers" / "guard"))

from immutable_guard.canary.gate import HEALTHY, HOLD, Check, VersionTraffic, judge
from immutable_guard.canary.plan import CanaryRequest


def poisson(rng: random.Random, mean: float) -> int:
    """Poisson draw (Knuth for small means, a rounded normal above 50: the gate only sees sums)."""
    if mean <= 0:
        return 0
    if mean > 50:
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, k, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        k += 1
        product *= rng.random()
    return k


def binomial(rng: random.Random, n: int, p: float) -> int:
    if n > 200:
        return max(0, min(n, round(rng.gauss(n * p, math.sqrt(n * p * (1 - p))))))
    return sum(rng.random() < p for _ in range(n))


@dataclass
class Outcome:
    promoted: bool
    seconds: int
    reason: str


def _plan(**overrides: object) -> dict[str, object]:
    request = CanaryRequest(function="orders", alias="live", target_version="2", **overrides)  # type: ignore[arg-type]
    plan: dict[str, object] = {**request.model_dump(mode="json"), "stable_version": "1"}
    plan["first_check_seconds"] = min(request.check_interval_seconds, request.bake_seconds)
    return plan


class Traffic:
    def __init__(self, rng: random.Random, rate: float, p_stable: float, p_new: float) -> None:
        self.rng, self.rate, self.p_stable, self.p_new = rng, rate, p_stable, p_new
        self.new = [0, 0]
        self.stable = [0, 0]

    def run(self, seconds: int, share: float) -> None:
        requests = poisson(self.rng, self.rate * seconds)
        to_new = binomial(self.rng, requests, share)
        self.new[0] += to_new
        self.new[1] += binomial(self.rng, to_new, self.p_new)
        self.stable[0] += requests - to_new
        self.stable[1] += binomial(self.rng, requests - to_new, self.p_stable)


def rollout(
    rng: random.Random, rate: float, p_stable: float, p_new: float, plan: dict[str, object]
) -> Outcome:
    """One rollout through the current gate, as canary.asl.json drives it."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    clock = 0
    traffic = Traffic(rng, rate, p_stable, p_new)
    for index, percent in enumerate(plan["steps"]):  # type: ignore[arg-type]
        shifted, checks, failures = clock, 0, 0
        wait = int(plan["first_check_seconds"])  # type: ignore[call-overload]
        while True:
            traffic.run(wait, float(percent) / 100)
            clock += wait
            check = Check(
                new=VersionTraffic("2", traffic.new[0], traffic.new[1], 0),
                stable=VersionTraffic("1", traffic.stable[0], traffic.stable[1], 0),
                alarms={},
                now=start + timedelta(seconds=clock),
                shifted_at=start + timedelta(seconds=shifted),
            )
            result = judge(plan, {"index": index, "percent": percent}, check, checks, failures)
            checks, failures = result["checks"], result["failures"]
            if result["verdict"] == HEALTHY:
                break
            if result["verdict"] != HOLD:
                return Outcome(False, clock, result["reason"])
            wait = max(1, int(result["wait_seconds"]))
    return Outcome(True, clock, "promoted")


def previous_gate(
    rng: random.Random, rate: float, p_stable: float, p_new: float, plan: dict[str, object]
) -> Outcome:
    """The gate before this change: one look per bake, this step's requests only, no statistics."""
    clock, minimum = 0, int(plan["min_invocations"])  # type: ignore[call-overload]
    tolerance = float(plan["error_rate_tolerance"]) / 100  # type: ignore[arg-type]
    for percent in plan["steps"]:  # type: ignore[attr-defined]
        traffic = Traffic(rng, rate, p_stable, p_new)
        wait, holds = int(plan["bake_seconds"]), 0  # type: ignore[call-overload]
        while True:
            traffic.run(wait, float(percent) / 100)
            clock += wait
            new_rate = traffic.new[1] / max(traffic.new[0], minimum) if traffic.new[0] or minimum else 0.0
            old_rate = traffic.stable[1] / traffic.stable[0] if traffic.stable[0] else 0.0
            if traffic.new[1] and new_rate > old_rate + tolerance:
                return Outcome(False, clock, "error rate")
            if traffic.new[0] >= minimum:
                break
            holds += 1
            if holds > int(plan["max_holds"]):  # type: ignore[call-overload]
                return Outcome(False, clock, "not enough data")
            wait = int(plan["hold_seconds"])  # type: ignore[call-overload]
    return Outcome(True, clock, "promoted")


SCENARIOS = [
    # (label, requests/s, stable error rate, new error rate)
    ("equal, 0.5 % errors, 4 req/s", 4.0, 0.005, 0.005),
    ("equal, 2 % errors, 4 req/s", 4.0, 0.02, 0.02),
    ("equal, 2 % errors, 40 req/s", 40.0, 0.02, 0.02),
    ("equal, 0.5 % errors, 1 req/s", 1.0, 0.005, 0.005),
    ("equal, 0.5 % errors, 0.2 req/s", 0.2, 0.005, 0.005),
    ("worse, 2 % -> 6 %, 4 req/s", 4.0, 0.02, 0.06),
    ("broken, 2 % -> 50 %, 4 req/s", 4.0, 0.02, 0.5),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rollouts", type=int, default=400, help="rollouts per scenario and gate")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    plan = _plan()
    print(
        f"defaults: bake {plan['bake_seconds']} s, check every {plan['check_interval_seconds']} s, "
        f"metric delay {plan['metric_delay_seconds']} s, min_invocations {plan['min_invocations']}, "
        f"tolerance {plan['error_rate_tolerance']} pt, failure_limit {plan['failure_limit']}, confidence "
        f"{plan['confidence']}; {args.rollouts} simulated rollouts per row\n"
    )
    print(
        f"{'scenario':<34} {'gate':<9} {'promoted':>9} {'rolled back':>12} {'for lack of data':>17} "
        f"{'median s to rollback':>21}"
    )
    for label, rate, p_stable, p_new in SCENARIOS:
        for name, run in (("current", rollout), ("previous", previous_gate)):
            rng = random.Random(args.seed)
            outcomes = [run(rng, rate, p_stable, p_new, plan) for _ in range(args.rollouts)]
            rolled = [o for o in outcomes if not o.promoted]
            lack = sum("not enough data" in o.reason for o in rolled)
            median = sorted(o.seconds for o in rolled)[len(rolled) // 2] if rolled else None
            share = len(rolled) / len(outcomes)
            print(
                f"{label:<34} {name:<9} {1 - share:>9.1%} {share:>12.1%} "
                f"{lack / len(outcomes):>17.1%} {median if median is not None else '-':>21}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
