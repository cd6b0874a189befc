"""`immutable-guard canary`: start a rollout of a Lambda version to an alias and follow it, printing each
step's weight and gate verdict from the execution history; see (`status`, `watch`) and steer (`pause`,
`resume`, `promote`, `abort`) a running one; `revert` an alias in one step; `--demo` runs it on the embedded
local AWS."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from immutable_guard.canary.errors import CanaryRefused
from immutable_guard.canary.plan import execution_name, function_name, parse_request

if TYPE_CHECKING:
    from immutable_guard.canary.history import Entry
    from immutable_guard.canary.operator import Operator


def _steps(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--steps takes comma-separated percentages, not {text!r}") from exc


SUBCOMMANDS = ("start", "status", "watch", "pause", "resume", "promote", "abort", "revert")
_STEERING = {
    "pause": "pause the running rollout at its next health check (it waits for a person, alias split kept)",
    "resume": "resume a rollout waiting for a person (or withdraw a pause not yet taken)",
    "promote": "promote the running rollout to 100 %% now (the post-traffic hook still runs)",
    "abort": "abort the running rollout: roll it back to the stable version",
}


def with_start(argv: list[str]) -> list[str]:
    """``canary FUNCTION --alias ...`` (the form before subcommands) as ``canary start FUNCTION ...``."""
    if "canary" not in argv:
        return argv
    at = argv.index("canary") + 1
    following = argv[at] if at < len(argv) else None
    if following is None or following in SUBCOMMANDS or following in {"-h", "--help", "--demo"}:
        return argv
    return [*argv[:at], "start", *argv[at:]]


def _where(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stack", default="immutable-guard", help="the deployed Immutable Guard stack")
    parser.add_argument("--region")
    parser.add_argument("--state-machine-arn", help="use this canary state machine instead of the stack's")
    parser.add_argument("--ledger-table", help="use this lock table (the ledger) instead of the stack's")


def _target(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("function", help="function name")
    parser.add_argument("--alias", required=True, help="the alias the rollout moves")
    _where(parser)


def add_canary_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `canary` subcommand and its own subcommands to the `immutable-guard` parser."""
    canary = subparsers.add_parser(
        "canary",
        help="roll a new Lambda version out to an alias in checked steps of at most 10 %%, and steer it",
        description="Start a canary rollout and follow it, see and steer a running one, or revert an alias. "
        "`canary FUNCTION --alias A --to-version N` is `canary start ...`.",
    )
    canary.add_argument("--demo", action="store_true", help="run the demonstration on the embedded local AWS")
    canary.set_defaults(func=run_canary_command, canary_command=None)
    commands = canary.add_subparsers(dest="canary_command", metavar="{" + ",".join(SUBCOMMANDS) + "}")
    start = commands.add_parser(
        "start",
        help="start a rollout and follow it until it is promoted or rolled back",
        description="Start a canary rollout and follow it until it is promoted or rolled back.",
    )
    start.add_argument("function", nargs="?", help="function name or ARN")
    start.add_argument("--alias", help="the alias whose traffic moves")
    start.add_argument("--to-version", dest="target_version", help="the published version to roll out")
    start.add_argument("--steps", type=_steps, help="cumulative percentages, e.g. 10,20,...,90 (the default)")
    start.add_argument(
        "--bake-seconds", type=int, help="how long each step bakes before it can pass (default 300)"
    )
    start.add_argument(
        "--check-interval-seconds", type=int, help="how often the bake is checked for failures (default 60)"
    )
    start.add_argument(
        "--metric-delay-seconds", type=int, help="how late CloudWatch metrics may arrive (default 120)"
    )
    start.add_argument(
        "--alarm", dest="alarms", action="append", metavar="NAME", help="alarm to watch (repeatable)"
    )
    start.add_argument(
        "--min-invocations",
        type=int,
        help="invocations of the new version needed over the rollout (default 100; 0 = alarms only)",
    )
    start.add_argument(
        "--error-rate-tolerance", type=float, help="percentage points above the stable version"
    )
    start.add_argument(
        "--failure-limit", type=int, help="consecutive checks finding the version worse before rollback (2)"
    )
    start.add_argument(
        "--confidence", type=float, help="confidence with which 'worse' must be shown (default 0.99)"
    )
    start.add_argument("--hold-seconds", type=int, help="wait before re-checking a step short of data")
    start.add_argument("--max-holds", type=int, help="re-checks of a step short of data before it fails")
    start.add_argument("--pre-hook", dest="pre_traffic_hook", metavar="FUNCTION", help="pre-traffic hook")
    start.add_argument("--post-hook", dest="post_traffic_hook", metavar="FUNCTION", help="post-traffic hook")
    start.add_argument("--hook-timeout", dest="hook_timeout_seconds", type=int, help="seconds (default 300)")
    start.add_argument(
        "--confirm-promotion",
        dest="confirm_promotion",
        action="store_const",
        const=True,
        help="wait for a person (`canary promote`) before the promotion to 100 %%",
    )
    start.add_argument(
        "--on-inconclusive",
        choices=["rollback", "wait"],
        help="a step still short of data after its re-checks: roll back (default) or wait for a person",
    )
    start.add_argument(
        "--max-wait-seconds", type=int, help="how long a wait for a person lasts before it rolls back (86400)"
    )
    _where(start)
    start.add_argument("--poll-seconds", type=float, default=2.0, help="how often to read the history")
    start.set_defaults(func=run_canary_command)

    status = commands.add_parser(
        "status",
        help="the alias's routing, and the running rollout (step, last check, waiting) or the last one",
        description="Where the alias routes now, and the running rollout's step, last check, a pending "
        "request "
        "and whether it waits for a person; or how the last rollout ended.",
    )
    _target(status)
    status.set_defaults(func=run_status)
    watch = commands.add_parser(
        "watch",
        help="re-attach to the running rollout and follow it to its end (same exit codes as start)",
        description="Print the running rollout's story so far and follow it until it ends; the exit code is "
        "the outcome's, as for `canary start`.",
    )
    _target(watch)
    watch.add_argument("--poll-seconds", type=float, default=2.0, help="how often to read the history")
    watch.set_defaults(func=run_watch)
    for action, text in _STEERING.items():
        steer = commands.add_parser(action, help=text, description=text[0].upper() + text[1:] + ".")
        _target(steer)
        steer.set_defaults(func=run_steer, action=action)
    revert = commands.add_parser(
        "revert",
        help="emergency: the alias back on the previous stable version in one step; stops the rollout",
        description="Point the alias at the previous stable version with no routing, in one call conditional "
        "on its revision: the running rollout's stable version, else the version the last promoted rollout "
        "replaced, or --to-version. Then stop the running rollout.",
    )
    _target(revert)
    revert.add_argument("--to-version", dest="to_version", help="revert to this version instead")
    revert.set_defaults(func=run_revert)
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
    "confirm_promotion",
    "on_inconclusive",
    "max_wait_seconds",
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
    if args.canary_command is None:
        print(
            "immutable-guard canary: a subcommand is required ("
            + ", ".join(SUBCOMMANDS)
            + "), or --demo; see `immutable-guard canary --help`",
            file=sys.stderr,
        )
        return EXIT_USAGE
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


def _stack_output(clients: Any, stack: str, name: str) -> str:
    stacks = clients.cloudformation.describe_stacks(StackName=stack)["Stacks"]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}
    if name not in outputs:
        raise CanaryRefused(f"stack {stack} has no {name} output; deploy a version with canaries")
    return str(outputs[name])


def _state_machine_from_stack(clients: Any, stack: str) -> str:
    return _stack_output(clients, stack, "CanaryStateMachineArn")


def operator(args: argparse.Namespace) -> Operator:
    """The person's view of the canary, with their own credentials."""
    from immutable_guard.canary.lock import RolloutLock
    from immutable_guard.canary.operator import Operator
    from immutable_guard.clients import Clients

    clients = Clients(region_name=args.region)
    machine = args.state_machine_arn or _state_machine_from_stack(clients, args.stack)
    table = args.ledger_table or _stack_output(clients, args.stack, "IncidentLedgerName")
    return Operator(
        clients.stepfunctions, clients.lambda_, clients.sts, RolloutLock(clients.dynamodb, table), machine
    )


def run_status(args: argparse.Namespace) -> int:
    for line in operator(args).status(function_name(args.function), args.alias):
        print(line)
    return EXIT_PROMOTED


def run_watch(args: argparse.Namespace) -> int:
    """Re-attach to the running rollout: its story so far, then live, then its outcome's exit code."""
    from immutable_guard.canary.history import follow

    person = operator(args)
    held, _ = person.running(function_name(args.function), args.alias)
    print(f"watching rollout {held['execution']}")
    final = None
    for entry in follow(person.sfn, held["execution"], poll_seconds=args.poll_seconds):
        print(entry.text, flush=True)
        final = entry if entry.kind in {"succeeded", "failed"} else final
    return exit_code(final)


def run_steer(args: argparse.Namespace) -> int:
    print(operator(args).steer(function_name(args.function), args.alias, args.action))
    return EXIT_PROMOTED


def run_revert(args: argparse.Namespace) -> int:
    for line in operator(args).revert(function_name(args.function), args.alias, args.to_version):
        print(line)
    return EXIT_PROMOTED
