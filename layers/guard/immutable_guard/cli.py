"""The `immutable-guard` command: explain an event offline, run the drill, list and release incidents."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from immutable_guard.errors import GuardError, InvalidEvent

if TYPE_CHECKING:
    from immutable_guard.detection.memory import SessionMemory

EXIT_USAGE = 2
EXIT_REFUSED = 4  # nothing was changed: a rollout refused (the canary's other codes are in canary/cli.py)
NOT_DELIVERED = "not_delivered"


def explain_event(
    raw: object,
    template: dict[str, Any],
    *,
    mode: str | None = None,
    scope_tag: tuple[str, str] | None = None,
    allowed_principals: tuple[str, ...] | None = None,
    account: str | None = None,
    memory: SessionMemory | None = None,
    declared_stack: str | None = None,
) -> dict[str, Any]:
    """Evaluate one event against the template's EventBridge rules and the detector's policy, offline.

    Policy options default to the template's parameter defaults, as a fresh `sam deploy` would set them.
    With `memory`, the event is judged after the events explained before it with the same memory, and
    what Detect would write down about it is kept there (Config's echo of an allow-listed call, a server
    seen in scope before its tag was stripped). With `declared_stack`, that stack is declared in
    ScopeStackNames and the instances the event reaches are taken to be its members (offline nothing
    says which stack a server belongs to): how a change made through the operator's own stack is judged.
    """
    # Imported here so `immutable-guard --help` stays fast.
    from immutable_guard.detection.events import parse_event
    from immutable_guard.detection.normalise import normalise
    from immutable_guard.detection.policy import Policy, judge, remember_judgement, scope_observations
    from immutable_guard.detection.scope import (
        STACK_TAG,
        InstanceInfo,
        OfflineInstanceDirectory,
        ScopeRule,
    )
    from immutable_guard.model import ACCOUNT_LEVEL_KINDS, Mode
    from immutable_guard.patterns import matches
    from immutable_guard.template import event_rules, parameter_defaults

    if not isinstance(raw, dict) or "detail-type" not in raw or "detail" not in raw:
        raise InvalidEvent("not an EventBridge event: expected an object with 'detail-type' and 'detail'")
    defaults = parameter_defaults(template)
    matched = [rule.logical_id for rule in event_rules(template) if matches(rule.pattern, raw)]
    if not matched:
        # No rule delivers it, so Detect never sees it: a valid answer, not an input error.
        return {
            "matched_rules": [],
            "finding": None,
            "decision": "ignore",
            "reason": NOT_DELIVERED,
            "detail": f"No rule of the template delivers {_event_label(raw)} to Detect.",
        }
    finding = normalise(parse_event(raw))
    tag_key, tag_value = scope_tag or (
        defaults.get("ScopeTagKey", "immutable"),
        defaults.get("ScopeTagValue", "true"),
    )
    policy = Policy(
        mode=Mode(mode or defaults.get("Mode", "dry-run")),
        scope=ScopeRule(
            tag_key=tag_key,
            tag_value=tag_value,
            stack_names=_csv(defaults.get("ScopeStackNames", ""))
            + ((declared_stack,) if declared_stack else ()),
            asg_names=_csv(defaults.get("ScopeAutoScalingGroupNames", "")),
        ),
        allowed_principal_arns=(
            allowed_principals
            if allowed_principals is not None
            else _csv(defaults.get("AllowedPrincipalArns", ""))
        ),
        own_role_arns=(),
        expected_account=account,
    )
    instances = OfflineInstanceDirectory().resolve(finding)
    assumed = None
    if not instances and finding.resource_ids and finding.kind not in ACCOUNT_LEVEL_KINDS:
        # Offline nothing says which instances use a group, an ACL or an interface: assume an immutable
        # one does, and say so, rather than answer "out of scope" for what is unknown.
        instances = [InstanceInfo(instance_id=f"instances-using-{rid}") for rid in finding.resource_ids]
        assumed = "offline: assumed an immutable instance uses " + ", ".join(finding.resource_ids)
    if declared_stack:
        instances = [
            info.model_copy(update={"tags": {**(info.tags or {}), STACK_TAG: declared_stack}})
            for info in instances
        ]
        membership = f"assumed the instances belong to stack {declared_stack}"
        assumed = f"{assumed}; {membership}" if assumed else f"offline: {membership}"
    judgement = scope_observations(judge(finding, instances, policy, memory), instances, policy)
    if memory is not None:
        remember_judgement(memory, judgement, policy)
    return {
        "matched_rules": matched,
        "finding": finding.model_dump(mode="json"),
        "decision": judgement.decision.value,
        "reason": judgement.reason,
        "detail": judgement.detail,
        "mode": policy.mode.value,
        "instances": [i.instance_id for i in judgement.instances_in_scope],
        **({"assumption": assumed} if assumed else {}),
    }


def _event_label(raw: dict[str, Any]) -> str:
    """A short name for an event no rule delivers (nothing in it is trusted or required)."""
    from immutable_guard.detection.events import quote

    detail = raw["detail"]
    if not isinstance(detail, dict):
        raise InvalidEvent("not an EventBridge event: 'detail' is not an object")
    if "eventName" in detail:
        failed = f" (failed: {quote(detail['errorCode'])})" if detail.get("errorCode") else ""
        return f"{quote(detail.get('eventSource'))} {quote(detail['eventName'])}{failed}"
    return f"a {quote(raw['detail-type'])} event from {quote(raw.get('source'))}"


def _csv(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _cmd_explain(args: argparse.Namespace) -> int:
    from immutable_guard.detection.memory import SessionMemory
    from immutable_guard.template import find_template, load_template

    events = []
    for name in args.event_files:
        path = Path(name)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            print(f"immutable-guard explain: cannot read {path}: {exc.strerror}", file=sys.stderr)
            return EXIT_USAGE
        try:
            events.append((path, json.loads(text)))
        except ValueError as exc:
            print(f"immutable-guard explain: {path} is not JSON: {exc}", file=sys.stderr)
            return EXIT_USAGE
    template = load_template(Path(args.template) if args.template else find_template())
    scope_tag = None
    if args.scope_tag:
        key, _, value = args.scope_tag.partition("=")
        scope_tag = (key, value)
    # Several files are one sequence of events, judged in order with what Detect remembers between them.
    memory = SessionMemory() if len(events) > 1 else None
    results = []
    for path, raw in events:
        try:
            results.append(
                explain_event(
                    raw,
                    template,
                    mode=args.mode,
                    scope_tag=scope_tag,
                    allowed_principals=tuple(args.allow) if args.allow else None,
                    account=args.account,
                    memory=memory,
                    declared_stack=args.declared_stack,
                )
            )
        except InvalidEvent as exc:
            print(f"immutable-guard explain: {path}: {exc}", file=sys.stderr)
            return EXIT_USAGE
    print(json.dumps(results[0] if len(results) == 1 else results, indent=2))
    return 0


def _cmd_drill(args: argparse.Namespace) -> int:
    from immutable_guard.drill.command import run_drill_command

    return run_drill_command(args)


def _stack_outputs(stack: str, region: str | None) -> tuple[dict[str, str], Any]:
    from immutable_guard.clients import Clients
    from immutable_guard.stack import read_stack

    clients = Clients(region_name=region)
    return read_stack(clients.cloudformation, stack, clients.region).outputs, clients


def _cmd_incidents(args: argparse.Namespace) -> int:
    from immutable_guard.ledger import IncidentLedger

    outputs, clients = _stack_outputs(args.stack, args.region)
    ledger = IncidentLedger(clients.dynamodb, outputs["IncidentLedgerName"])
    if args.account:
        # The limit applies to the account's incidents, not to the organisation's newest.
        incidents = [i for i in ledger.list_incidents(limit=10**9) if i.account == args.account][: args.limit]
    else:
        incidents = ledger.list_incidents(args.limit)
    if args.json:
        print(json.dumps([i.model_dump(mode="json") for i in incidents], indent=2))
        return 0
    print(f"{'incident':<44} {'status':<28} {'kind':<20} {'mode':<12} stages")
    for incident in incidents:
        stages = " > ".join(s for s, _ in sorted(incident.timeline.items(), key=lambda kv: kv[1]))
        print(
            f"{incident.incident_id:<44} {incident.status.value:<28} {incident.kind:<20} "
            f"{incident.mode:<12} {stages}"
        )
    return 0


ACCOUNTS_HELP = (
    "the accounts an organisation deployment protects (ledger items ACCOUNT#<id>): an account added is "
    "unverified and acts in dry-run whatever its mode, until verified. `verify` only records that a person "
    "verified it (trail logging, recorder, rules, member roles); the checks by `doctor --organization` come "
    "later. The security account itself needs no entry: it acts in the stack's Mode."
)


STORM_HELP = (
    "the organisation storm: remediable changes in OrgStormAccounts accounts within OrgStormWindowMinutes "
    "switch the whole organisation to notify-only for an hour (ledger item STORM#CURRENT). `show` says "
    "whether one is in force; `clear` ends it now and forgets the accounts watched (allow-list the change "
    "that caused it first, or the next such change opens a new storm)."
)


def _cmd_storm(args: argparse.Namespace) -> int:
    from immutable_guard.ledger import IncidentLedger

    outputs, clients = _stack_outputs(args.stack, args.region)
    ledger = IncidentLedger(clients.dynamodb, outputs["IncidentLedgerName"])
    storm = ledger.clear_storm() if args.storm_command == "clear" else ledger.storm()
    if args.json:
        state = "cleared" if args.storm_command == "clear" and storm else "open" if storm else "none"
        print(json.dumps({"storm": state, **(storm.model_dump() if storm else {})}, indent=2))
        return 0
    if storm is None:
        print("no organisation storm in force: remediation follows each account's mode")
    elif args.storm_command == "clear":
        accounts = ", ".join(storm.accounts)
        print(f"storm cleared (opened {storm.opened_at}, accounts {accounts}): remediation resumes")
    else:
        print(
            f"organisation storm OPEN since {storm.opened_at} until {storm.until} "
            f"(accounts {', '.join(storm.accounts)}): new incidents are alerted, not remediated"
        )
    return 0


def _cmd_accounts(args: argparse.Namespace) -> int:
    from immutable_guard.accounts import AccountRegistry, MemberAccount
    from immutable_guard.model import Mode

    outputs, clients = _stack_outputs(args.stack, args.region)
    registry = AccountRegistry(clients.dynamodb, outputs["IncidentLedgerName"])
    try:
        if args.accounts_command == "list":
            accounts = registry.list()
        elif args.accounts_command == "add":
            accounts = [registry.add(args.account_id, Mode(args.mode), args.ou)]
        elif args.accounts_command == "set-mode":
            accounts = [registry.set_mode(args.account_id, Mode(args.mode))]
        else:
            accounts = [registry.mark_verified(args.account_id)]
    except ValueError as exc:  # not an account id
        print(f"immutable-guard accounts: {exc}", file=sys.stderr)
        return EXIT_USAGE

    def row(account: MemberAccount) -> dict[str, Any]:
        return {**account.model_dump(mode="json"), "effective_mode": account.effective_mode.value}

    if args.json:
        print(json.dumps([row(a) for a in accounts], indent=2))
        return 0
    print(f"{'account':<14} {'mode':<12} {'acts in':<12} {'verified at':<26} {'ou':<20} joined at")
    for account in accounts:
        print(
            f"{account.account_id:<14} {account.mode.value:<12} {account.effective_mode.value:<12} "
            f"{account.verified_at or 'not verified':<26} {account.ou or '-':<20} {account.joined_at}"
        )
    return 0


def _cmd_release(args: argparse.Namespace) -> int:
    outputs, clients = _stack_outputs(args.stack, args.region)
    response = clients.lambda_.invoke(
        FunctionName=outputs["ReleaseFunctionName"],
        Payload=json.dumps({"incident_id": args.incident_id}).encode(),
    )
    payload = json.loads(response["Payload"].read() or b"{}")
    print(json.dumps(payload, indent=2))
    return 1 if response.get("FunctionError") else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="immutable-guard",
        description="Detect. Nuke. Replace. for immutable EC2 servers.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    explain = sub.add_parser(
        "explain", help="evaluate an event file offline against the rules and the policy"
    )
    explain.add_argument(
        "event_files",
        nargs="+",
        metavar="EVENT_FILE",
        help="an EventBridge event as JSON; several files are judged in order, as one sequence of events "
        "(e.g. an allow-listed call, then Config's report of it), and printed as a list",
    )
    explain.add_argument("--template", help="template.yaml to read (default: the project's)")
    explain.add_argument("--mode", choices=["enforce", "dry-run", "notify-only"])
    explain.add_argument("--scope-tag", metavar="KEY=VALUE", help="the tag that marks immutable instances")
    explain.add_argument(
        "--allow", action="append", metavar="PRINCIPAL_ARN", help="an allow-listed principal"
    )
    explain.add_argument("--account", help="refuse events from other accounts")
    explain.add_argument(
        "--declared-stack",
        metavar="STACK_NAME",
        help="declare this stack in ScopeStackNames and take the instances the event reaches to be its "
        "members: how a change your own stack made through CloudFormation is judged",
    )
    explain.set_defaults(func=_cmd_explain)

    from immutable_guard.drill.command import ORGANIZATION_SCENARIO_NAMES, SCENARIO_NAMES

    drill = sub.add_parser(
        "drill", help="run the Detect. Nuke. Replace. drill (default: on the embedded local AWS)"
    )
    drill.add_argument(
        "--stack",
        help="run against this deployed stack in a sandbox account instead: the drill creates its own "
        "disposable workload there, attacks it with your credentials and deletes what it created",
    )
    drill.add_argument("--region")
    drill.add_argument(
        "--pipeline-role",
        metavar="ROLE_ARN",
        help="with --stack: an allow-listed role to assume for the allow-listed scenario",
    )
    drill.add_argument(
        "--organization",
        action="store_true",
        help="run the organisation drill on the embedded local AWS instead: an AWS Organizations "
        "organisation (management, security and two member accounts, two regions) with the member stacks "
        "deployed in each account as the StackSets would; attacks in each member account and region are "
        "remediated through the member roles with evidence copied into the security account, an account "
        "outside the organisation is refused, benign twins do nothing, the organisation-storm breaker trips "
        "and a new account joins",
    )
    drill.add_argument("--json", action="store_true", help="print the report as JSON")
    drill.add_argument(
        "--scenario",
        action="append",
        choices=SCENARIO_NAMES + ORGANIZATION_SCENARIO_NAMES,
        help="run only these scenarios (repeatable; those of --organization with it)",
    )
    drill.set_defaults(func=_cmd_drill)

    incidents = sub.add_parser("incidents", help="list incidents and their stages")
    incidents.add_argument("--stack", required=True)
    incidents.add_argument("--region")
    incidents.add_argument("--limit", type=int, default=50)
    incidents.add_argument("--json", action="store_true")
    incidents.add_argument("--account", metavar="ACCOUNT_ID", help="only the incidents of this account")
    incidents.set_defaults(func=_cmd_incidents)

    accounts = sub.add_parser(
        "accounts", help="the accounts an organisation deployment protects", description=ACCOUNTS_HELP
    )
    accounts_sub = accounts.add_subparsers(dest="accounts_command", required=True)
    modes = ["enforce", "dry-run", "notify-only"]
    for name, text in (
        ("list", "list the registered accounts, their mode and the mode they act in"),
        ("add", "register an account (unverified: it acts in dry-run until verified)"),
        ("set-mode", "change a registered account's mode"),
        ("verify", "record that a person verified the account (doctor will check it later)"),
    ):
        command = accounts_sub.add_parser(name, help=text, description=f"{text}. {ACCOUNTS_HELP}")
        if name != "list":
            command.add_argument("account_id")
        if name == "add":
            command.add_argument("--mode", choices=modes, default="dry-run")
            command.add_argument("--ou", help="the organisational unit it belongs to (recorded)")
        if name == "set-mode":
            command.add_argument("--mode", choices=modes, required=True)
        command.add_argument("--stack", required=True)
        command.add_argument("--region")
        command.add_argument("--json", action="store_true")
        command.set_defaults(func=_cmd_accounts)
    storm = accounts_sub.add_parser(
        "storm", help="show or clear the organisation storm", description=STORM_HELP
    )
    storm_sub = storm.add_subparsers(dest="storm_command", required=True)
    for name, text in (
        ("show", "say whether an organisation storm is in force"),
        ("clear", "end the organisation storm now: remediation resumes"),
    ):
        command = storm_sub.add_parser(name, help=text, description=f"{text}. {STORM_HELP}")
        command.add_argument("--stack", required=True)
        command.add_argument("--region")
        command.add_argument("--json", action="store_true")
        command.set_defaults(func=_cmd_storm)

    release = sub.add_parser("release", help="undo a false positive while the instance still exists")
    release.add_argument("incident_id")
    release.add_argument("--stack", required=True)
    release.add_argument("--region")
    release.set_defaults(func=_cmd_release)

    from immutable_guard.canary.cli import add_canary_parser
    from immutable_guard.doctor import add_doctor_parser

    add_canary_parser(sub)
    add_doctor_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from botocore.exceptions import BotoCoreError, ClientError

    from immutable_guard.canary.cli import with_start
    from immutable_guard.canary.errors import CanaryRefused

    args = build_parser().parse_args(with_start(list(sys.argv[1:] if argv is None else argv)))
    try:
        return int(args.func(args))
    except CanaryRefused as exc:
        print(f"immutable-guard {args.command}: refused: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except GuardError as exc:
        print(f"immutable-guard {args.command}: {exc}", file=sys.stderr)
        return 1
    except ClientError as exc:
        # One line a person can act on (unknown stack, access denied), not a botocore traceback.
        error = exc.response.get("Error", {})
        operation = getattr(exc, "operation_name", "an AWS call")
        print(
            f"immutable-guard {args.command}: AWS refused {operation}: "
            f"{error.get('Code', 'Error')}: {error.get('Message', exc)}",
            file=sys.stderr,
        )
        return 1
    except BotoCoreError as exc:  # no credentials, no region, endpoint unreachable
        print(f"immutable-guard {args.command}: cannot reach AWS: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
