"""Load on the Detect path: >= 10,000 labelled CloudTrail-shaped events through
immutable_guard.pipeline.process_event on moto, a share of them from 8 threads at once. Prints events per
second, latency percentiles and the accounting (nothing lost, one incident per mutated server), plus the
detector's own cost per event without AWS (parse, normalise, judge against an in-memory directory).

    .venv/bin/python benchmarks/load_detect.py [--events 10000] [--threads 8] [--concurrent 0.3]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "reliability"))
os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_LOG_LEVEL": "CRITICAL",
        "POWERTOOLS_METRICS_NAMESPACE": "ImmutableGuardBench",
    }
)
for variable in ("AWS_PROFILE", "AWS_ENDPOINT_URL"):
    os.environ.pop(variable, None)

from detect_load import TrafficGenerator, account_for, detect_world, percentile  # noqa: E402


def detector_only(traffic: list, repeat: int = 1) -> tuple[float, int]:
    """Seconds per event of parse + normalise + judge, with instances resolved from memory."""
    from immutable_guard.detection.events import parse_event
    from immutable_guard.detection.normalise import normalise
    from immutable_guard.detection.policy import Policy, judge
    from immutable_guard.detection.scope import InstanceInfo
    from immutable_guard.errors import GuardError

    policy = Policy(expected_account="111122223333")
    count = 0
    started = time.perf_counter()
    for _ in range(repeat):
        for labelled in traffic:
            try:
                finding = normalise(parse_event(labelled.event))
            except GuardError:
                count += 1
                continue
            instances = [
                InstanceInfo(instance_id=i, tags={"immutable": "true"}) for i in finding.instance_ids
            ]
            judge(finding, instances, policy)
            count += 1
    return (time.perf_counter() - started) / max(count, 1), count


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--concurrent", type=float, default=0.3, help="share delivered by the threads")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    with detect_world(immutable=20, mutable=20) as world:
        generator = TrafficGenerator(world.immutable_ids, world.mutable_ids, world.mutable_group)
        traffic = generator.traffic(args.events)
        report = world.run(traffic, threads=args.threads, concurrent_share=args.concurrent)
        accounts = account_for(world, report, generator)
    latencies = report.latencies_ms()
    per_event, _ = detector_only(traffic)
    # Most events are benign: rejecting them cheaply is what keeps Detect's cost down.
    benign_per_event, benign_count = detector_only([t for t in traffic if t.expected == "ignore"], repeat=3)
    incidents = accounts["incidents_per_instance"]
    figures = {
        "events": accounts["events"],
        "seconds": round(report.seconds, 1),
        "events_per_second": round(accounts["events"] / report.seconds, 1),
        "latency_ms": {
            p: round(percentile(latencies, q), 1) for p, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))
        },
        "decisions": accounts["decisions"],
        "lost": len(accounts["mismatches"]),
        "raised_then_retried": len(accounts["retried_after_exception"]),
        "rejected": accounts["rejected"],
        "dead_letters": accounts["dead_letters"],
        "mutated_instances": len(accounts["mutated_instances"]),
        "instances_with_exactly_one_incident": sum(1 for n in incidents.values() if n == 1),
        "instances_with_more_than_one": sum(1 for n in incidents.values() if n > 1),
        "executions": len(accounts["executions"]),
        "detector_only_us_per_event": round(per_event * 1e6, 1),
        "detector_only_events_per_second": round(1 / per_event) if per_event else None,
        "benign_rejected_events": benign_count,
        "benign_rejected_events_per_second": round(1 / benign_per_event) if benign_per_event else None,
    }
    print(json.dumps(figures, indent=1))
    if accounts["mismatches"]:
        print("mismatches:", accounts["mismatches"][:10], file=sys.stderr)
    ok = not accounts["mismatches"] and figures["instances_with_more_than_one"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
