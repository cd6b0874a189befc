"""The decision for one finding: ignore it, alert on it, or remediate the instances it reaches. The
rules that keep Immutable Guard from fighting its own operators live here, where they are tested."""

from __future__ import annotations

import re
from typing import Final

from pydantic import BaseModel, ConfigDict

from immutable_guard.detection.config import NOT_A_CHANGE_EVIDENCE_KEY, RELATED_EVENTS_EVIDENCE_KEY
from immutable_guard.detection.events import parse_event
from immutable_guard.detection.memory import DetectionMemory, NoMemory
from immutable_guard.detection.normalise import normalise
from immutable_guard.detection.scope import InstanceDirectory, InstanceInfo, ScopeRule
from immutable_guard.model import ACCOUNT_LEVEL_KINDS, Actor, Decision, Finding, Kind, Mode, Source

_CLOUDFORMATION: Final = "cloudformation.amazonaws.com"
QUARANTINE_TAG: Final = "immutable-guard:state"

# arn:PARTITION:sts::ACCOUNT:assumed-role/NAME/SESSION and arn:PARTITION:iam::ACCOUNT:role/PATH/NAME
_ASSUMED_ROLE: Final = re.compile(
    r"^arn:(?P<partition>[^:]+):sts::(?P<account>\d{12}):assumed-role/(?P<name>[^/]+)/"
)
_ROLE: Final = re.compile(r"^arn:(?P<partition>[^:]+):iam::(?P<account>\d{12}):role/(?:.*/)?(?P<name>[^/]+)$")


class Reason:
    """Stable, machine-readable reason codes (alert subscribers may filter on them)."""

    FAILED_CALL: Final = "failed_call"
    ALLOW_LISTED_PRINCIPAL: Final = "allow_listed_principal"
    CLOUDFORMATION_CHANGE: Final = "cloudformation_change"
    OWN_CHANGE: Final = "own_change"
    WRONG_ACCOUNT: Final = "wrong_account"
    ACCOUNT_LEVEL_ALERT_ONLY: Final = "account_level_alert_only"
    OUT_OF_SCOPE: Final = "out_of_scope"
    ALREADY_QUARANTINED: Final = "already_quarantined"
    MUTATION_OF_IMMUTABLE_INSTANCE: Final = "mutation_of_immutable_instance"
    UNRESOLVED_TARGET: Final = "unresolved_target"
    CONFIG_NOT_A_CHANGE: Final = "config_not_a_change"


class Policy(BaseModel):
    """What the operator configured.

    `mode` is carried for the caller: `judge` decides what the finding deserves, and the caller
    then applies the mode (and the blast-radius breaker) to decide what is actually done.
    """

    model_config = ConfigDict(frozen=True)

    mode: Mode = Mode.DRY_RUN
    scope: ScopeRule = ScopeRule()
    allowed_principal_arns: tuple[str, ...] = ()
    own_role_arns: tuple[str, ...] = ()
    expected_account: str | None = None


class Judgement(BaseModel):
    """The decision on one finding, with a reason code and a sentence for people."""

    model_config = ConfigDict(frozen=True)

    finding: Finding
    decision: Decision
    reason: str
    detail: str
    instances_in_scope: tuple[InstanceInfo, ...] = ()


def principal_key(arn: str) -> str:
    """A comparable identity: an assumed-role session and its role (with or without a path) are the same."""
    arn = arn.strip()
    match = _ASSUMED_ROLE.match(arn) or _ROLE.match(arn)
    if match is None:
        return arn
    return f"role:{match['partition']}:{match['account']}:{match['name']}"


def _actor_matches(actor: Actor, arns: tuple[str, ...]) -> str | None:
    """The configured ARN the actor matches (by principal or session issuer), if any."""
    keys = {principal_key(arn): arn for arn in arns if arn.strip()}
    for candidate in (actor.principal_arn, actor.session_issuer_arn):
        if candidate and principal_key(candidate) in keys:
            return keys[principal_key(candidate)]
    return None


def made_through_cloudformation(actor: Actor) -> bool:
    """True when AWS itself says CloudFormation made the call.

    `invokedBy` and `sourceIPAddress` are written by AWS; `userAgent` is chosen by the caller, so a
    user agent alone (anyone can send "cloudformation.amazonaws.com") is not trusted.
    """
    if (actor.invoked_by or "").lower() == _CLOUDFORMATION:
        return True
    return (actor.user_agent or "").lower() == _CLOUDFORMATION and (
        actor.source_ip or ""
    ).lower() == _CLOUDFORMATION


_ACCOUNT_LEVEL_DETAIL: Final = {
    Kind.KEY_PAIR_ADDED: "A key pair belongs to the account, not to a running instance: alert only.",
    Kind.DETECTION_DISABLED: (
        "A sensor Immutable Guard relies on was stopped or changed: changes to your servers may go "
        "unseen until it is restored. Alert only: no instance was changed by this call."
    ),
}


def _who(actor: Actor) -> str:
    return actor.principal_arn or actor.session_issuer_arn or "an unknown principal"


# ---------------------------------------------------------------- Config items

EXEMPT_REASONS: Final = frozenset(
    {Reason.ALLOW_LISTED_PRINCIPAL, Reason.CLOUDFORMATION_CHANGE, Reason.OWN_CHANGE}
)
"""Judgements of a CloudTrail event that Config's later echo of the same change takes over."""


def _config_verdict(finding: Finding, memory: DetectionMemory) -> tuple[str, str] | None:
    """(reason, detail) when a Config item is to be ignored: it records no mutation, or it is the echo of
    a change already judged exempt from CloudTrail (named in `relatedEvents`, or the same change in the
    ledger). None when the item is judged alone, like any finding."""
    why = finding.evidence.get(NOT_A_CHANGE_EVIDENCE_KEY)
    if isinstance(why, str):
        return Reason.CONFIG_NOT_A_CHANGE, f"Not a mutation: {why}"
    for event_id in finding.evidence.get(RELATED_EVENTS_EVIDENCE_KEY) or []:
        reason = memory.exempt_reason_of_event(str(event_id))
        if reason in EXEMPT_REASONS:
            return reason, f"Config's echo of CloudTrail event {event_id}, already judged {reason}."
    reason = memory.exempt_reason_of_change(finding.change_key)
    if reason in EXEMPT_REASONS:
        return (
            reason,
            f"Config's echo of a change ({finding.change_key}) already judged {reason} from CloudTrail.",
        )
    return None


def judge(
    finding: Finding,
    instances: list[InstanceInfo] | tuple[InstanceInfo, ...],
    policy: Policy,
    memory: DetectionMemory | None = None,
) -> Judgement:
    """Decide what a finding deserves, before mode and breaker are applied.

    Parameters
    ----------
    finding:
        The normalised mutation.
    instances:
        The instances it reaches (from an instance directory).
    policy:
        The operator's configuration.
    memory:
        What the ledger remembers (open incidents); nothing when omitted.

    Returns
    -------
    Judgement
        `ignore` for failed calls, known changers, another account or no in-scope instance; `alert`
        for account-level findings (a key pair reaches no instance yet); otherwise `remediate`.
    """

    def verdict(
        decision: Decision, reason: str, detail: str, in_scope: tuple[InstanceInfo, ...] = ()
    ) -> Judgement:
        return Judgement(
            finding=finding, decision=decision, reason=reason, detail=detail, instances_in_scope=in_scope
        )

    memory = memory or NoMemory()
    if finding.source is Source.CONFIG:
        config_verdict = _config_verdict(finding, memory)
        if config_verdict is not None:
            return verdict(Decision.IGNORE, *config_verdict)
    actor = finding.actor
    if finding.error_code:
        return verdict(
            Decision.IGNORE, Reason.FAILED_CALL, f"The call failed ({finding.error_code}); nothing changed."
        )
    allowed = _actor_matches(actor, policy.allowed_principal_arns)
    if allowed is not None:
        return verdict(
            Decision.IGNORE,
            Reason.ALLOW_LISTED_PRINCIPAL,
            f"Made by {_who(actor)}, allow-listed as {allowed}.",
        )
    if made_through_cloudformation(actor):
        return verdict(
            Decision.IGNORE,
            Reason.CLOUDFORMATION_CHANGE,
            f"Made through CloudFormation on behalf of {_who(actor)}.",
        )
    own = _actor_matches(actor, policy.own_role_arns)
    if own is not None:
        return verdict(Decision.IGNORE, Reason.OWN_CHANGE, f"Made by Immutable Guard itself ({own}).")
    if policy.expected_account is not None and finding.account != policy.expected_account:
        return verdict(
            Decision.IGNORE,
            Reason.WRONG_ACCOUNT,
            f"Reported for account {finding.account}, not the protected account {policy.expected_account}.",
        )
    if finding.kind in ACCOUNT_LEVEL_KINDS:
        return verdict(Decision.ALERT, Reason.ACCOUNT_LEVEL_ALERT_ONLY, _ACCOUNT_LEVEL_DETAIL[finding.kind])
    if not instances and finding.alert_if_unresolved:
        return verdict(
            Decision.ALERT,
            Reason.UNRESOLVED_TARGET,
            f"{finding.summary} The instance it reaches could not be determined: a person must check.",
        )
    in_scope = tuple(info for info in instances if policy.scope.in_scope(info))
    # Our own quarantine comes back from Config as an instance change with no actor; an instance we
    # quarantined (and tagged) is already handled by its incident, whatever reports it later.
    quarantined = tuple(info for info in in_scope if (info.tags or {}).get(QUARANTINE_TAG) == "quarantined")
    if in_scope and len(quarantined) == len(in_scope):
        ids = ", ".join(info.instance_id for info in quarantined)
        return verdict(
            Decision.IGNORE, Reason.ALREADY_QUARANTINED, f"{ids} is already quarantined by Immutable Guard."
        )
    in_scope = tuple(info for info in in_scope if info not in quarantined)
    if not in_scope:
        reached = ", ".join(info.instance_id for info in instances) or "no live instance"
        return verdict(
            Decision.IGNORE, Reason.OUT_OF_SCOPE, f"The change reaches {reached}; none is declared immutable."
        )
    ids = ", ".join(info.instance_id for info in in_scope)
    return verdict(
        Decision.REMEDIATE,
        Reason.MUTATION_OF_IMMUTABLE_INSTANCE,
        f"{finding.summary} It reaches immutable instance(s) {ids}.",
        in_scope,
    )


def judge_event(
    raw: object, policy: Policy, directory: InstanceDirectory, memory: DetectionMemory | None = None
) -> Judgement:
    """Parse, normalise, resolve and judge one raw EventBridge event.

    Raises
    ------
    InvalidEvent
        For input that is not a supported event.
    ScopeResolutionFailed
        When the directory cannot resolve the instances.
    """
    finding = normalise(parse_event(raw))
    return judge(finding, directory.resolve(finding), policy, memory)
