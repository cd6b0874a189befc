"""The README's main command: the drill passes on a fresh runtime, and it fails when the remediation is
broken. Each run is its own process: the drill owns its embedded AWS from start to finish."""

from __future__ import annotations

import json
from typing import Any

import pytest
from drill_runs import run_drill

pytestmark = pytest.mark.slow

SCENARIOS = {
    "port-opened",
    "ssh-key-pushed",
    "spot-behind-nlb",
    "shell-opened",
    "file-changed",
    "allow-listed",
    "delivered-twice",
    "trail-stopped",
    "dry-run",
    "scope-tag-removed",
    "forged-quarantine-tag",
    "scale-out",
    "released",
    "quarantine-undone",
    "pipeline-via-config",
}


def test_every_scenario_passes_on_the_embedded_local_aws(every_scenario: tuple[int, dict[str, Any]]) -> None:
    # When (one run of every scenario, shared with test_local_config's reading of its Config scenarios)
    code, report = every_scenario
    # Then
    assert code == 0, json.dumps([s for s in report["scenarios"] if not s["passed"]], indent=1)
    assert report["passed"] is True
    assert {s["scenario"] for s in report["scenarios"]} == SCENARIOS
    remediated = [s for s in report["scenarios"] if s["timeline_ms"].get("nuked") is not None]
    assert len(remediated) == 8
    for scenario in remediated:
        times = [
            scenario["timeline_ms"][stage]
            for stage in ("detected", "contained", "evidence_complete", "nuked")
        ]
        assert times == sorted(times), f"{scenario['scenario']}: stages out of order {times}"


def test_a_quarantine_that_does_nothing_fails_the_drill() -> None:
    # Given a remediation that isolates nothing and verifies nothing: Contain's step, and Detect's first
    # response (issue 15: once Contain made the groups when Detect first saw the server, Detect isolates)
    sabotage = """
        from immutable_guard import triage
        from immutable_guard.remediation import first_response, quarantine
        quarantine.isolate_network_interfaces = lambda ec2, observed, actions: {}
        quarantine.verify_isolated = lambda *args, **kwargs: None
        triage.isolate = lambda *args, **kwargs: first_response.FirstResponse()
    """
    # When
    code, report = run_drill("--scenario", "ssh-key-pushed", prelude=sabotage)
    # Then the drill notices from EC2 itself, not from our ledger
    assert code == 1
    [scenario] = report["scenarios"]
    failed = {c["name"] for c in scenario["checks"] if not c["passed"]}
    assert "isolated (every ENI read from EC2 while quarantined)" in failed


def test_a_nuke_that_never_happens_fails_the_drill() -> None:
    sabotage = """
        from immutable_guard.remediation import nuke
        original = nuke.nuke_instance
        def keep_everything(clients, ledger, settings, *args, **kwargs):
            keep = settings.model_copy(update={"post_evidence_action": "keep"})
            return original(clients, ledger, keep, *args, **kwargs)
        nuke.nuke_instance = keep_everything
    """
    code, report = run_drill("--scenario", "shell-opened", prelude=sabotage)
    assert code == 1
    failed = {c["name"] for c in report["scenarios"][0]["checks"] if not c["passed"]}
    assert failed == {"old instance terminated"}
