"""`immutable-guard drill`: on the embedded local AWS by default, or against a deployed stack."""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import AbstractContextManager

from immutable_guard.drill.organization_scenarios import SCENARIO_NAMES as ORGANIZATION_SCENARIOS
from immutable_guard.drill.report import Progress, ScenarioReport, drill_passed, render_table
from immutable_guard.drill.scenarios import Drill

SCENARIO_NAMES = tuple(key for key, _, _ in Drill.SCENARIOS)
ORGANIZATION_SCENARIO_NAMES = ORGANIZATION_SCENARIOS


def run_drill_command(args: argparse.Namespace) -> int:
    organization = bool(getattr(args, "organization", False))
    if organization and (args.stack or args.region or args.pipeline_role):
        print("immutable-guard drill: --organization runs on the embedded local AWS only", file=sys.stderr)
        return 2
    if not args.stack and (args.region or args.pipeline_role):
        print("immutable-guard drill: --region and --pipeline-role go with --stack", file=sys.stderr)
        return 2
    known = ORGANIZATION_SCENARIO_NAMES if organization else SCENARIO_NAMES
    if stray := [name for name in args.scenario or [] if name not in known]:
        other = "without" if organization else "with"
        print(
            f"immutable-guard drill: {', '.join(stray)} run(s) {other} --organization only", file=sys.stderr
        )
        return 2
    began = time.monotonic()
    if organization:
        from immutable_guard.local.lambda_logs import lambda_logs_to_file

        with lambda_logs_to_file("drill-organization") as (terminal, log_path):
            progress = Progress(None if args.json else terminal)
            reports = _run_organization(progress, args.scenario)
        progress.say(f"Lambda logs: {log_path}")
    elif args.stack:
        progress = Progress(None if args.json else sys.stderr)
        reports = _run(_account_world(args, progress), args.scenario)
    else:
        from immutable_guard.local.lambda_logs import lambda_logs_to_file

        with lambda_logs_to_file("drill") as (terminal, log_path):
            progress = Progress(None if args.json else terminal)
            from immutable_guard.drill.local import local_drill

            reports = _run(local_drill(progress), args.scenario)
        progress.say(f"Lambda logs: {log_path}")
    if args.json:
        print(
            json.dumps(
                {
                    "passed": drill_passed(reports),
                    "seconds": round(time.monotonic() - began, 2),
                    "scenarios": [r.as_dict() for r in reports],
                },
                indent=2,
            )
        )
    else:
        print(render_table(reports))
    return 0 if drill_passed(reports) else 1


def _run(world: AbstractContextManager[Drill], only: list[str] | None) -> list[ScenarioReport]:
    with world as drill:
        return drill.run(only)


def _run_organization(progress: Progress, only: list[str] | None) -> list[ScenarioReport]:
    from immutable_guard.drill.organization_scenarios import OrganizationDrill
    from immutable_guard.drill.organization_world import organization_world

    with organization_world(progress) as world:
        return OrganizationDrill(world).run(only)


def _account_world(args: argparse.Namespace, progress: Progress) -> AbstractContextManager[Drill]:
    from immutable_guard.drill.account import account_drill, default_session

    return account_drill(args.stack, progress, default_session(args.region), pipeline_role=args.pipeline_role)
