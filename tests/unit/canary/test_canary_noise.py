"""The noise simulation of benchmarks/canary_noise.py, small and seeded: the gate's own decision code does
not roll back a version as good as the stable one, and still rolls back a worse one. The benchmark prints
the rates over many rollouts; here a fixed sample keeps the suite fast and repeatable."""

from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARK = Path(__file__).resolve().parents[3] / "benchmarks" / "canary_noise.py"


@pytest.fixture(scope="module")
def noise() -> ModuleType:
    spec = importlib.util.spec_from_file_location("canary_noise", BENCHMARK)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["canary_noise"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("rate", [0.005, 0.02])
def test_equal_versions_are_promoted_where_the_previous_gate_rolled_most_back(
    noise: ModuleType, rate: float
) -> None:
    plan = noise._plan()
    current = [noise.rollout(random.Random(seed), 4.0, rate, rate, plan) for seed in range(30)]
    previous = [noise.previous_gate(random.Random(seed), 4.0, rate, rate, plan) for seed in range(30)]
    assert sum(o.promoted for o in current) == 30
    assert sum(not o.promoted for o in previous) >= 3  # the comparison is against a real failure


def test_a_worse_version_is_still_rolled_back_and_a_broken_one_within_two_checks(noise: ModuleType) -> None:
    plan = noise._plan()
    worse = [noise.rollout(random.Random(seed), 4.0, 0.02, 0.06, plan) for seed in range(20)]
    assert not any(o.promoted for o in worse)
    broken = noise.rollout(random.Random(1), 4.0, 0.02, 0.5, plan)
    assert not broken.promoted and broken.seconds <= 2 * plan["check_interval_seconds"]


def test_a_quiet_function_is_judged_on_what_its_steps_can_serve(noise: ModuleType) -> None:
    # 1 request/s: 0.1 request/s on the new version at step 1; the previous gate failed it for lack of data
    plan = noise._plan()
    quiet = [noise.rollout(random.Random(seed), 1.0, 0.005, 0.005, plan) for seed in range(10)]
    assert all(o.promoted for o in quiet)
