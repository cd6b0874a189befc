"""The containment path, counted: every AWS call between the Detect function receiving a mutation event
and the instance's last network interface moved to the isolation group, with the round trips they cost
(concurrent reads count as one), on the drill's golden workload in in-process moto.

    .venv/bin/python benchmarks/containment_calls.py
"""

from __future__ import annotations

import logging
import os
import sys
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
os.environ.pop("AWS_ENDPOINT_URL", None)

from fault_world import FaultWorld  # noqa: E402

ISOLATING = "ec2.ModifyNetworkInterfaceAttribute"


def main() -> int:
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    with FaultWorld() as world:
        world.run(None)  # warm: handlers imported, isolation groups exist, as in a running account
        result = world.run(None)
    calls = [c for c in result.calls if c.function in ("DetectFunction", "QuarantineFunction")]
    swaps = [i for i, c in enumerate(calls) if c.operation == ISOLATING]
    until = swaps[-1] + 1 if swaps else len(calls)
    path = calls[:until]
    rounds = 0
    previous_pooled = False
    for call in path:
        if not (call.pooled and previous_pooled):
            rounds += 1
        previous_pooled = call.pooled
    print(f"{'#':>3} {'step':<20} {'call':<48} concurrent")
    for index, call in enumerate(path, 1):
        print(f"{index:>3} {call.function:<20} {call.operation:<48} {'yes' if call.pooled else ''}")
    detect = sum(1 for c in path if c.function == "DetectFunction")
    contain = len(path) - detect
    print(
        f"AWS calls until isolated: {len(path)} (Detect {detect}, Contain {contain}); round trips: {rounds}"
    )
    print(f"time from event to isolated (in-process moto): {(path[-1].at - path[0].at) * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
