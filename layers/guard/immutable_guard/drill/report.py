"""What a drill tells: per scenario, the checks made against the AWS APIs and a timeline of stages."""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TextIO

from immutable_guard.ledger import Incident

STAGES = ("detected", "alerted", "contained", "evidence_complete", "replaced", "nuked")


@dataclass
class Check:
    name: str
    passed: bool
    detail: str = ""


class ScenarioSkipped(Exception):
    """The world the drill runs in cannot stage this scenario (said with the reason, never a pass)."""


@dataclass
class ScenarioReport:
    key: str
    title: str
    checks: list[Check] = field(default_factory=list)
    timeline_ms: dict[str, int | None] = field(default_factory=dict)
    incidents: list[str] = field(default_factory=list)
    error: str | None = None
    skipped: str | None = None
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return (
            self.skipped is None
            and self.error is None
            and bool(self.checks)
            and all(c.passed for c in self.checks)
        )

    @property
    def result(self) -> str:
        if self.skipped is not None:
            return "SKIP"
        return "PASS" if self.passed else "FAIL"

    def expect(self, name: str, passed: bool, detail: str = "") -> bool:
        self.checks.append(Check(name, bool(passed), detail))
        return bool(passed)

    def as_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.key,
            "title": self.title,
            "passed": self.passed,
            "skipped": self.skipped,
            "seconds": round(self.seconds, 2),
            "incidents": self.incidents,
            "timeline_ms": self.timeline_ms,
            "checks": [c.__dict__ for c in self.checks],
            "error": self.error,
        }


def drill_passed(reports: list[ScenarioReport]) -> bool:
    """Nothing failed and something was proven: skipped scenarios neither pass nor fail a drill."""
    ran = [r for r in reports if r.skipped is None]
    return bool(ran) and all(r.passed for r in ran)


class Progress:
    """Readable progress on a terminal; silent when the report is JSON."""

    def __init__(self, out: TextIO | None) -> None:
        self._out = out

    def say(self, text: str) -> None:
        if self._out is not None:
            print(text, file=self._out, flush=True)


def play(
    key: str, title: str, scenario: Callable[[ScenarioReport], None], progress: Progress
) -> ScenarioReport:
    """Run one scenario into its report: a skip is said with its reason, an error is the scenario's failure
    (never the drill's crash), and each check is shown as it was judged."""
    report = ScenarioReport(key, title)
    progress.say(f"▶ {key}: {title}")
    began = time.monotonic()
    try:
        scenario(report)
    except ScenarioSkipped as skipped:
        report.skipped = str(skipped)
    except Exception as exc:
        report.error = f"{type(exc).__name__}: {exc}"
        progress.say(traceback.format_exc())
    report.seconds = time.monotonic() - began
    for check in report.checks:
        progress.say(
            f"    {'✔' if check.passed else '✘'} {check.name}"
            + (f"  ({check.detail})" if check.detail else "")
        )
    detail = f": {report.skipped}" if report.skipped else f" in {report.seconds:.1f} s"
    progress.say(f"  {report.result}{detail}")
    return report


def timeline(
    incident: Incident, alerts: list[dict[str, Any]], attack_started: float
) -> dict[str, int | None]:
    """Milliseconds from the attack to each stage, from the ledger and the alerts received."""

    def ms(iso: str | None) -> int | None:
        if not iso:
            return None
        return int((datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() - attack_started) * 1000)

    sent = sorted(a.get("sent_at", "") for a in alerts if a.get("stage") == "detected")
    stamps = {
        "detected": incident.timeline.get("detected"),
        "alerted": sent[0] if sent else None,
        "contained": incident.timeline.get("contained"),
        "evidence_complete": incident.timeline.get("evidence_complete"),
        "replaced": incident.timeline.get("replaced"),
        "nuked": incident.timeline.get("nuked")
        or incident.timeline.get("stopped")
        or incident.timeline.get("kept"),
    }
    return {stage: ms(stamps[stage]) for stage in STAGES}


def render_table(reports: list[ScenarioReport]) -> str:
    header = f"{'scenario':<17} {'result':<6} " + " ".join(f"{s:>17}" for s in STAGES) + "   checks"
    lines = ["", "Timeline: milliseconds from the attack to each stage", header, "-" * len(header)]
    for r in reports:
        cells = " ".join(
            f"{r.timeline_ms.get(s):>17}" if r.timeline_ms.get(s) is not None else f"{'-':>17}"
            for s in STAGES
        )
        passed = sum(c.passed for c in r.checks)
        lines.append(f"{r.key:<17} {r.result:<6} {cells}   {passed}/{len(r.checks)}")
    failed = [r for r in reports if r.result == "FAIL"]
    skipped = [r for r in reports if r.skipped is not None]
    ran = len(reports) - len(skipped)
    lines.append("")
    summary = f"{ran - len(failed)} passed, {len(failed)} failed" if ran else "no scenario ran"
    lines.append(summary + (f", {len(skipped)} skipped" if skipped else ""))
    for r in failed:
        lines.append(
            f"  {r.key}: "
            + (r.error or "; ".join(f"{c.name} ({c.detail})" for c in r.checks if not c.passed))
        )
    for r in skipped:
        lines.append(f"  {r.key} skipped: {r.skipped}")
    return "\n".join(lines)
