"""`immutable-guard canary`: start a rollout of a Lambda version to an alias and follow it, printing each
step's weight and gate verdict from the execution history; `--demo` runs it on the embedded local AWS."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from immutable_guard.canary.errors import CanaryRefused
from immutable_guard.canary.plan import execution_name, parse_request

if TYPE_CHECKING:
    from immutable_guard.canary.history import Entry


def _steps(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--steps takes comma-separated percentages, not {text!r}") from exc


def add_canary_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `canary` subcommand to the `immutable-guard` parser."""
    canary = subparsers.add_parser(
        "canary",
        help="roll a new Lambda version out to an alias in checked steps of at most 10 %%",
        description="Start a canary rollout and follow it until it is promoted or rolled back.",
    )
    canary.add_argument("function", nargs="?", help="function name or ARN")
    canary.add_argument("--alias", help="the alias whose traffic moves")
    canary.add_argument("--to-version", dest="target_version", help="the published version to roll out")
    canary.add_argument(
        "--steps", type=_steps, help="cumulative percentages, e.g. 10,20,...,90 (the default)"
    )
    canary.add_argument(
        "--bake-seconds", type=int, help="how long each step bakes before it can pass (default 300)"
    )
    canary.add_argument(
        "--check-interval-seconds", type=int, help="how often the bake is checked for failures (default 60)"
    )
    canary.add_argument(
        "--metric-delay-seconds", type=int, help="how late CloudWatch metrics may arrive (default 120)"
    )
    canary.add_argument(
        "--alarm", dest="alarms", action="append", metavar="NAME", help="alarm to watch (repeatable)"
    )
    canary.add_argument(
        "--min-invocations",
        type=int,
        help="invocations of the new version needed over the rollout (default 100; 0 = alarms only)",
    )
    canary.add_argument(
        "--error-rate-tolerance", type=float, help="percentage points above the stable version"
    )
    canary.add_argument(
        "--failure-limit", type=int, help="consecutive checks finding the version worse before rollback (2)"
    )
    canary.add_argument(
        "--confidence", type=float, help="confidence with which 'worse' must be shown (default 0.99)"
    )
    canary.add_argument("--hold-seconds", type=int, help="wait before re-checking a step short of data")
    canary.add_argument("--max-holds", type=int, help="re-checks of a step short of data before it fails")
    canary.add_argument("--pre-hook", dest="pre_traffic_hook", metavar="FUNCTION", help="pre-traffic hook")
    canary.add_argument("--post-hook", dest="post_traffic_hook", metavar="FUNCTION", help="post-traffic hook")
    canary.add_argument("--hook-timeout", dest="hook_timeout_seconds", type=int, help="seconds (default 300)")
    canary.add_argument("--stack", default="immutable-guard", help="the deployed Immutable Guard stack")
    canary.add_argument("--region")
    canary.add_argument("--state-machine-arn", help="use this canary state machine instead of the stack's")
    canary.add_argument("--poll-seconds", type=float, default=2.0, help="how often to read the history")
    canary.add_argument("--demo", action="store_true", help="run the demonstration on the embedded local AWS")
    canary.set_defaults(func=run_canary_command)
    parser: argparse.ArgumentParser = canary
    return parser


_OPTIONS = (
    "steps",
    "bake_seconds",
    "check_interval_seconds",
    "metric_delay_seconds",
    "alarms",
    "min_invocations",
    "error_rate_tolerance",
    "failure_limit",
    "confidence",
    "hold_seconds",
    "max_holds",
    "pre_traffic_hook",
    "post_traffic_hook",
    "hook_timeout_seconds",
)


def request_document(args: argparse.Namespace) -> dict[str, Any]:
    """The execution input from the command line; options not given keep the schema's defaults."""
    document: dict[str, Any] = {
        "function": args.function,
        "alias": args.alias,
        "target_version": args.target_version,
    }
    document.update({name: getattr(args, name) for name in _OPTIONS if getattr(args, name) is not None})
    return {key: value for key, value in document.items() if value is not None}


# Exit codes: a script or pipeline step can tell the outcomes apart.
EXIT_PROMOTED = 0
EXIT_ERROR = 1  # the command could not run (AWS unreachable or refused a call)
EXIT_USAGE = 2
EXIT_ROLLED_BACK = 3
EXIT_REFUSED = 4  # nothing changed: bad input, busy alias, missing version or alarm
EXIT_ROLLBACK_FAILED = 5  # the alias may still be split: a person must act
EXIT_ENDED_OTHERWISE = 6  # superseded (alias left as found), aborted, timed out

_EXIT_BY_ERROR = {
    "CanaryRolledBack": EXIT_ROLLED_BACK,
    "CanaryRefused": EXIT_REFUSED,
    "InvalidCanaryInput": EXIT_REFUSED,
    "RollbackFailed": EXIT_ROLLBACK_FAILED,
}


def exit_code(final: Entry | None) -> int:
    """The exit code for how a rollout ended (its last story line)."""
    if final is None:
        return EXIT_ENDED_OTHERWISE
    if final.kind == "succeeded":
        return EXIT_PROMOTED
    return _EXIT_BY_ERROR.get(str(final.data.get("error", "")), EXIT_ENDED_OTHERWISE)


def run_canary_command(args: argparse.Namespace) -> int:
    from immutable_guard.canary.history import follow
    from immutable_guard.clients import Clients

    if args.demo:
        import logging

        from immutable_guard.canary.demo import run_demo

        # moto's ASL interpreter logs every IsPresent test of a missing path, and every Fail state, as an
        # ERROR; the demo's story is read from the execution history instead.
        logging.getLogger("moto.stepfunctions.parser.asl").setLevel(logging.CRITICAL)
        from immutable_guard.local.lambda_logs import lambda_logs_to_file

        with lambda_logs_to_file("canary-demo") as (terminal, log_path):
            code = run_demo(print_line=lambda line: print(line, file=terminal, flush=True))
        print(f"Lambda logs: {log_path}")
        return code
    missing = [
        flag
        for flag, value in (
            ("FUNCTION", args.function),
            ("--alias", args.alias),
            ("--to-version", args.target_version),
        )
        if not value
    ]
    if missing:
        print(f"immutable-guard canary: {', '.join(missing)} required (or --demo)", file=sys.stderr)
        return EXIT_USAGE
    document = request_document(args)
    request = parse_request(document)  # a bad input fails here, before any AWS call
    clients = Clients(region_name=args.region)
    state_machine = args.state_machine_arn or _state_machine_from_stack(clients, args.stack)
    # One rollout per alias is held by the lock that preflight takes: a second rollout of a busy alias is
    # refused by the execution itself ("another rollout ... holds it"), whoever started it.
    name = execution_name(request.function, request.alias, request.target_version)
    arn = clients.stepfunctions.start_execution(
        stateMachineArn=state_machine, name=name, input=json.dumps(document)
    )["executionArn"]
    print(f"rollout {name} started: {arn}")
    final = None
    for entry in follow(clients.stepfunctions, arn, poll_seconds=args.poll_seconds):
        print(entry.text, flush=True)
        final = entry if entry.kind in {"succeeded", "failed"} else final
    return exit_code(final)


def _state_machine_from_stack(clients: Any, stack: str) -> str:
    stacks = clients.cloudformation.describe_stacks(StackName=stack)["Stacks"]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}
    if "CanaryStateMachineArn" not in outputs:
        raise CanaryRefused(
            f"stack {stack} has no CanaryStateMachineArn output; deploy a version with canaries"
        )
    return str(outputs["CanaryStateMachineArn"])
