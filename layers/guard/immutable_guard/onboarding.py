"""Onboarding of organisation accounts (issue 14): a new account is registered in dry-run when AWS
Organizations reports it, and acts in its own mode only once every region of it is verified through its
Reader role: a trail logging its write management events, a Config recorder recording the types Detect
needs, the member-regional rules enabled and forwarding to the organisation bus, and the member roles
present and trusting the security account's central roles. The Onboard function (schedule) and
`immutable-guard doctor --organization` share this module.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import unquote

from botocore.exceptions import BotoCoreError, ClientError

from immutable_guard.accounts import AccountRegistry, MemberAccount
from immutable_guard.alerts import Alert
from immutable_guard.clients import _RETRY_CONFIG, Clients
from immutable_guard.doctor import REQUIRED_CONFIG_TYPES, _logs_write_management_events, _recorded_types
from immutable_guard.errors import AccountAlreadyRegistered, GuardError, MemberRoleUnavailable
from immutable_guard.members import FunctionPlace, MemberAccess
from immutable_guard.model import Mode

READER_ROLE: Final = "ImmutableGuard-Member-Reader"
ORGANIZATION_BUS: Final = "immutable-guard-organization"
FORWARDER_ROLE: Final = "ImmutableGuard-Member-EventForwarder"
# Each member role of organization/member-roles.yaml -> the central roles of the security account its trust
# policy must name (docs/organization.md, "Who can assume what"; a test holds the three equal).
MEMBER_ROLE_TRUSTS: Final[Mapping[str, tuple[str, ...]]] = {
    READER_ROLE: ("ImmutableGuard-Central-Detect", "ImmutableGuard-Central-Onboard"),
    "ImmutableGuard-Member-Quarantine": ("ImmutableGuard-Central-Quarantine",),
    "ImmutableGuard-Member-Evidence": ("ImmutableGuard-Central-Evidence",),
    "ImmutableGuard-Member-Replace": ("ImmutableGuard-Central-Replace",),
    "ImmutableGuard-Member-Nuke": ("ImmutableGuard-Central-Nuke",),
    "ImmutableGuard-Member-Release": ("ImmutableGuard-Central-Release",),
}
# The rules of organization/member-regional.yaml that forward what Detect's rules hear (one per rule of
# Detect; a test holds the number equal to the template's).
FORWARDING_RULES: Final = 20
CHECKS: Final = ("reader", "trail", "recorder", "rules", "roles")

# What the verification calls through the Reader role (organization/member-roles.yaml grants exactly
# these in its "Onboarding..." statements; tests/security/test_trust_model.py holds them equal).
VERIFY_PERMISSIONS: Final = frozenset(
    {
        "cloudtrail:DescribeTrails",
        "cloudtrail:GetTrailStatus",
        "cloudtrail:GetEventSelectors",
        "config:DescribeConfigurationRecorders",
        "config:DescribeConfigurationRecorderStatus",
        "events:ListRules",
        "events:ListTargetsByRule",
        "iam:GetRole",
    }
)

_ACCOUNT_ID: Final = re.compile(r"^\d{12}$")
ORGANIZATIONS_SOURCE: Final = "aws.organizations"
ORGANIZATIONS_EVENT_SOURCE: Final = "organizations.amazonaws.com"


# ---------------------------------------------------------------------------- Organizations events
class MalformedOrganizationsEvent(GuardError):
    """An Organizations event the Onboard function cannot read (logged and counted, never retried)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True)
class AccountJoined:
    """An account that joined the organisation, and how (``created`` or ``invited``)."""

    account: str
    how: str
    event_id: str
    region: str


def account_joined(event: Mapping[str, Any]) -> AccountJoined | None:
    """The account an Organizations event says joined, or None for an event that says no account joined
    (a failed or not yet finished creation, a handshake other than an invitation).

    Two records (CloudTrail, us-east-1; "Logging API calls with AWS CloudTrail for AWS Organizations",
    https://docs.aws.amazon.com/organizations/latest/userguide/orgs_cloudtrail-integration.html):

    - ``CreateAccountResult``, an ``AwsServiceEvent`` in the management account ("AWS Service Event via
      CloudTrail"): ``serviceEventDetails.createAccountStatus`` holds ``state`` (SUCCEEDED or FAILED) and,
      when it succeeded, the new ``accountId``.
    - ``AcceptHandshake``, an API call made by the invited account itself ("AWS API Call via CloudTrail"):
      the account that accepted is the caller, the record's ``recipientAccountId``; the handshake in
      ``responseElements`` says it was an invitation (``action`` INVITE, ``state`` ACCEPTED).

    Raises
    ------
    MalformedOrganizationsEvent
        Not an Organizations event of those two, or a field missing or malformed; ``reason`` names which.
    """
    if not isinstance(event, Mapping) or event.get("source") != ORGANIZATIONS_SOURCE:
        raise MalformedOrganizationsEvent("not_organizations", f"source {_get(event, 'source')!r}")
    detail = event.get("detail")
    if not isinstance(detail, Mapping):
        raise MalformedOrganizationsEvent("no_detail", "the event has no CloudTrail record")
    if detail.get("eventSource") != ORGANIZATIONS_EVENT_SOURCE:
        raise MalformedOrganizationsEvent("not_organizations", f"eventSource {detail.get('eventSource')!r}")
    envelope_account = str(event.get("account", ""))
    recipient = str(detail.get("recipientAccountId", ""))
    if not _ACCOUNT_ID.match(recipient) or recipient != envelope_account:
        # The record must have happened in the account that forwarded it, as for Detect's events.
        raise MalformedOrganizationsEvent(
            "account_mismatch", f"record account {recipient!r}, envelope account {envelope_account!r}"
        )
    event_id = str(detail.get("eventID") or event.get("id") or "")
    region = str(detail.get("awsRegion") or event.get("region") or "")
    name = detail.get("eventName")
    if detail.get("errorCode"):
        return None  # a failed call changed nothing
    if name == "CreateAccountResult":
        details = detail.get("serviceEventDetails")
        if isinstance(details, str):  # some CloudTrail consumers carry it as a JSON string
            details = _json_object(details)
        status = details.get("createAccountStatus") if isinstance(details, Mapping) else None
        if not isinstance(status, Mapping) or not isinstance(status.get("state"), str):
            raise MalformedOrganizationsEvent("no_create_account_status", f"event {event_id}")
        if status["state"] != "SUCCEEDED":
            return None
        account = str(status.get("accountId", ""))
        if not _ACCOUNT_ID.match(account):
            raise MalformedOrganizationsEvent("no_account_id", f"event {event_id}: accountId {account!r}")
        return AccountJoined(account, "created", event_id, region)
    if name == "AcceptHandshake":
        response = detail.get("responseElements")
        handshake = response.get("handshake") if isinstance(response, Mapping) else None
        if not isinstance(handshake, Mapping):
            raise MalformedOrganizationsEvent("no_handshake", f"event {event_id}")
        action = str(handshake.get("action", "")).upper()
        state = str(handshake.get("state", "")).upper()
        if action != "INVITE" or state not in ("ACCEPTED", ""):
            return None  # e.g. ENABLE_ALL_FEATURES: the account was a member already
        return AccountJoined(recipient, "invited", event_id, region)
    raise MalformedOrganizationsEvent("unexpected_event", f"eventName {name!r}")


def _get(event: Any, key: str) -> Any:
    return event.get(key) if isinstance(event, Mapping) else None


def _json_object(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def register_joined_account(
    registry: AccountRegistry, joined: AccountJoined, mode: Mode
) -> tuple[MemberAccount, bool]:
    """Register the account unverified, with ``mode`` (the stack's), so that it acts in dry-run until it is
    verified and in ``mode`` from then on. Returns the account's item and whether it was registered now;
    an account registered already (a repeated or retried event, or one a person added) keeps its mode and
    verification."""
    try:
        return registry.add(joined.account, mode), True
    except AccountAlreadyRegistered:
        member = registry.get(joined.account)
        if member is None:  # removed meanwhile: register it again
            return register_joined_account(registry, joined, mode)
        return member, False


def joined_alert(joined: AccountJoined, member: MemberAccount) -> Alert:
    return Alert(
        stage="account_joined",
        kind="account_joined",
        severity="medium",
        decision="dry-run",
        mode=Mode.DRY_RUN.value,
        account=joined.account,
        region=joined.region,
        summary=(
            f"Account {joined.account} joined the organisation ({joined.how}) and is registered in dry-run: "
            "its changes are detected and alerted, nothing is remediated there until every region of it "
            "is verified (trail, Config recorder, forwarding rules, member roles); then it acts in "
            f"{member.mode}."
        ),
        actions=[
            "registered in dry-run, unverified",
            "verified by the next scheduled check, or: immutable-guard doctor --organization --mark-verified",
        ],
        event={"source": ORGANIZATIONS_SOURCE, "id": joined.event_id},
        details={"joined": joined.how, "joined_at": member.joined_at},
    )


# ---------------------------------------------------------------------------- verification
@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"check": self.name, "ok": self.ok, "reason": self.reason}


@dataclass(frozen=True)
class RegionVerdict:
    """What the checks found in one account and region."""

    account: str
    region: str
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def reasons(self) -> list[str]:
        return [f"{self.region}: {c.name}: {c.reason}" for c in self.checks if not c.ok]

    def as_dict(self) -> dict[str, Any]:
        return {
            "account": self.account,
            "region": self.region,
            "ok": self.ok,
            "checks": [c.as_dict() for c in self.checks],
        }


@dataclass
class Verification:
    """Every row of a verification, and what it means for each account."""

    rows: list[RegionVerdict] = field(default_factory=list)

    def accounts(self) -> dict[str, list[RegionVerdict]]:
        found: dict[str, list[RegionVerdict]] = {}
        for row in self.rows:
            found.setdefault(row.account, []).append(row)
        return found

    def failing(self) -> dict[str, list[str]]:
        return {
            account: [reason for row in rows for reason in row.reasons]
            for account, rows in self.accounts().items()
            if not all(row.ok for row in rows)
        }

    def passing(self) -> list[str]:
        return [account for account, rows in self.accounts().items() if all(row.ok for row in rows)]


def organization_bus_arn(here: FunctionPlace) -> str:
    return f"arn:{here.partition}:events:{here.region}:{here.account}:event-bus/{ORGANIZATION_BUS}"


def check_trail(clients: Clients, region: str) -> Check:
    """A trail that is logging covers this region (multi-region, or homed here; an organisation trail
    counts) and logs write management events."""
    cloudtrail = clients.cloudtrail
    trails = cloudtrail.describe_trails(includeShadowTrails=True).get("trailList", [])
    stopped = []
    for trail in trails:
        if not (trail.get("IsMultiRegionTrail") or trail.get("HomeRegion") == region):
            continue
        if not cloudtrail.get_trail_status(Name=trail["TrailARN"]).get("IsLogging"):
            stopped.append(trail["Name"])
            continue
        if _logs_write_management_events(cloudtrail, trail):
            kind = "organisation trail" if trail.get("IsOrganizationTrail") else "trail"
            return Check("trail", True, f"{kind} {trail['Name']} logs write management events")
    if stopped:
        return Check("trail", False, f"trail {', '.join(stopped)} is STOPPED")
    return Check("trail", False, f"no trail logs the write management events of {region}")


def check_recorder(clients: Clients) -> Check:
    """A Config recorder is recording the types the ConfigItemChanged rules listen to."""
    config = clients.session.client("config", region_name=clients.region, config=_RETRY_CONFIG)
    recorders = config.describe_configuration_recorders().get("ConfigurationRecorders", [])
    if not recorders:
        return Check("recorder", False, "no AWS Config recorder")
    statuses = {
        s["name"]: bool(s.get("recording"))
        for s in config.describe_configuration_recorder_status().get("ConfigurationRecordersStatus", [])
    }
    problems = []
    for recorder in recorders:
        recorded = _recorded_types(recorder.get("recordingGroup") or {})
        missing = [t for t in REQUIRED_CONFIG_TYPES if recorded is not None and t not in recorded]
        if not statuses.get(recorder["name"]):
            problems.append(f"Config recorder {recorder['name']} is STOPPED")
        elif missing:
            problems.append(f"Config recorder {recorder['name']} does not record {', '.join(missing)}")
        else:
            return Check("recorder", True, f"Config recorder {recorder['name']} is recording")
    return Check("recorder", False, "; ".join(problems))


def check_forwarding_rules(clients: Clients, bus_arn: str) -> Check:
    """The member-regional rules exist, are enabled, and target the organisation bus."""
    events = clients.session.client("events", region_name=clients.region, config=_RETRY_CONFIG)
    forwarding: dict[str, str] = {}
    for rule in _all_rules(events):
        targets = events.list_targets_by_rule(Rule=rule["Name"]).get("Targets", [])
        if any(t.get("Arn") == bus_arn for t in targets):
            forwarding[rule["Name"]] = str(rule.get("State"))
    disabled = sorted(name for name, state in forwarding.items() if state != "ENABLED")
    problems = []
    if disabled:
        problems.append(f"DISABLED: {', '.join(disabled)}")
    if len(forwarding) < FORWARDING_RULES:
        problems.append(
            f"{len(forwarding)} of the {FORWARDING_RULES} forwarding rules target {bus_arn} "
            "(is member-regional.yaml deployed here?)"
        )
    if problems:
        return Check("rules", False, "; ".join(problems))
    return Check("rules", True, f"{len(forwarding)} rules enabled, forwarding to the organisation bus")


def _all_rules(events: Any) -> Iterable[dict[str, Any]]:
    token = None
    while True:
        page = events.list_rules(**({"NextToken": token} if token else {}))
        yield from page.get("Rules", [])
        token = page.get("NextToken")
        if not token:
            return


def check_member_roles(clients: Clients, security_account: str, partition: str) -> Check:
    """Every member role exists and trusts exactly the security account's matching central role(s);
    the forwarder role exists and trusts EventBridge."""
    iam = clients.iam
    problems = []
    for role_name, central in {**MEMBER_ROLE_TRUSTS, FORWARDER_ROLE: ()}.items():
        try:
            role = iam.get_role(RoleName=role_name)["Role"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "NoSuchEntity":
                problems.append(f"{role_name} missing")
                continue
            raise
        document = role.get("AssumeRolePolicyDocument")
        if isinstance(document, str):
            document = json.loads(unquote(document))
        trusted = _trusted_principals(document or {})
        if role_name == FORWARDER_ROLE:
            if "events.amazonaws.com" not in trusted:
                problems.append(f"{role_name} does not trust events.amazonaws.com")
            continue
        expected = {f"arn:{partition}:iam::{security_account}:role/{name}" for name in central}
        if not expected <= trusted:
            problems.append(f"{role_name} does not trust {', '.join(sorted(expected - trusted))}")
    if problems:
        return Check("roles", False, "; ".join(problems))
    return Check("roles", True, "member roles present, each trusting its central role")


def _trusted_principals(document: Mapping[str, Any]) -> set[str]:
    """The principals a trust policy admits: principal ARNs and services, and the role ARNs its
    ``aws:PrincipalArn`` conditions name (member-roles.yaml names the account as principal and the role
    in the condition)."""
    found: set[str] = set()
    raw = document.get("Statement", [])
    for statement in raw if isinstance(raw, list) else [raw]:
        if statement.get("Effect") != "Allow":
            continue
        principal = statement.get("Principal", {})
        for key in ("AWS", "Service"):
            values = principal.get(key, []) if isinstance(principal, Mapping) else []
            found.update(values if isinstance(values, list) else [values])
        for block in (statement.get("Condition") or {}).values():
            values = block.get("aws:PrincipalArn", []) if isinstance(block, Mapping) else []
            found.update(values if isinstance(values, list) else [values])
    return {str(v) for v in found}


def verify_accounts(
    access: MemberAccess,
    here: FunctionPlace,
    accounts: Iterable[str],
    regions: Iterable[str],
    session: str = "immutable-guard-onboarding",
) -> Verification:
    """Every check in every account and region, through the account's Reader role (``access``).

    A check that cannot run (a call refused, the role not assumable) fails, saying why; the roles are
    checked once per account (IAM is global) and reported in each of its regions."""
    regions = list(regions)
    bus_arn = organization_bus_arn(here)
    verification = Verification()
    for account in accounts:
        roles: Check | None = None
        for region in regions:
            try:
                clients = access.clients_for(here, account, region, session)
            except MemberRoleUnavailable as exc:
                checks = [Check("reader", False, str(exc))]
                checks += [Check(name, False, "not checked: no Reader role") for name in CHECKS[1:]]
                verification.rows.append(RegionVerdict(account, region, tuple(checks)))
                continue
            if roles is None:
                roles = _guarded("roles", check_member_roles, clients, here.account, here.partition)
            checks = [
                Check("reader", True, f"assumed {READER_ROLE}"),
                _guarded("trail", check_trail, clients, region),
                _guarded("recorder", check_recorder, clients),
                _guarded("rules", check_forwarding_rules, clients, bus_arn),
                roles,
            ]
            verification.rows.append(RegionVerdict(account, region, tuple(checks)))
    return verification


def _guarded(name: str, check: Callable[..., Check], *args: Any) -> Check:
    try:
        return check(*args)
    except ClientError as exc:
        error = exc.response.get("Error", {})
        return Check(name, False, f"cannot check: {error.get('Code')}: {str(error.get('Message', ''))[:200]}")
    except BotoCoreError as exc:
        return Check(name, False, f"cannot check: {exc}")


# ---------------------------------------------------------------------------- what it changes
@dataclass
class Settlement:
    """What a verification changed in the registry (the Onboard function's invoke result)."""

    verified: list[str] = field(default_factory=list)
    newly_verified: list[str] = field(default_factory=list)
    unverified: list[str] = field(default_factory=list)
    failing: dict[str, list[str]] = field(default_factory=dict)


def settle(
    registry: AccountRegistry,
    verification: Verification,
    alert: Callable[[Alert], None],
    mark: bool = True,
) -> Settlement:
    """Mark verified the accounts that passed in every region; send back to dry-run (and alert once) a
    verified account that now fails. With ``mark`` False nothing is changed: the result says what would be."""
    outcome = Settlement(failing=verification.failing())
    for account in verification.passing():
        member = registry.get(account)
        if member is None:
            continue  # removed from the registry meanwhile
        if not member.verified and mark:
            registry.mark_verified(account)
            outcome.newly_verified.append(account)
        if member.verified or mark:
            outcome.verified.append(account)
    for account, reasons in outcome.failing.items():
        member = registry.get(account)
        if member is None or not member.verified or not mark:
            continue
        if registry.mark_unverified(account):
            outcome.unverified.append(account)
            alert(unverified_alert(member, reasons))
    return outcome


def unverified_alert(member: MemberAccount, reasons: list[str]) -> Alert:
    return Alert(
        stage="account_unverified",
        kind="account_unverified",
        severity="high",
        decision="dry-run",
        mode=Mode.DRY_RUN.value,
        reason="verification_failed",
        account=member.account_id,
        region=reasons[0].split(":", 1)[0] if reasons else "",
        summary=(
            f"Account {member.account_id} failed its verification and is back in dry-run (its mode "
            f"{member.mode} applies again once it passes): {'; '.join(reasons)}"
        ),
        actions=["account back in dry-run: its changes are alerted, not remediated"],
        details={"reasons": reasons},
    )
