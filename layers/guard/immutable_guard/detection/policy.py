"""The decision for one finding: ignore it, alert on it, or remediate the instances it reaches. The
rules that keep Immutable Guard from fighting its own operators live here, where they are tested."""

from __future__ import annotations

import re
from typing import Final

from pydantic import BaseModel, ConfigDict

from immutable_guard.detection.config import (
    NOT_A_CHANGE_EVIDENCE_KEY,
    RELATED_EVENTS_EVIDENCE_KEY,
    RELEASE_SHAPED_EVIDENCE_KEY,
)
from immutable_guard.detection.events import parse_event
from immutable_guard.detection.memory import DetectionMemory, MemoryWriter, NoMemory
from immutable_guard.detection.normalise import normalise
from immutable_guard.detection.paths.tags import (
    EVERY_USER_TAG,
    TagChange,
    tag_changes_of,
    tags_before,
)
from immutable_guard.detection.readers import (
    GUARD_TAG_PREFIX,
    GUARD_WIRING_EVIDENCE_KEY,
    TAGS_ONLY_EVIDENCE_KEY,
)
from immutable_guard.detection.scope import InstanceDirectory, InstanceInfo, ScopeRule
from immutable_guard.members import GUARD_ROLE_PREFIXES
from immutable_guard.model import (
    ACCOUNT_LEVEL_KINDS,
    ALERT_ONLY_KINDS,
    Actor,
    Decision,
    Finding,
    Kind,
    Mode,
    Severity,
    Source,
)

_CLOUDFORMATION: Final = "cloudformation.amazonaws.com"
QUARANTINE_TAG: Final = "immutable-guard:state"
QUARANTINED: Final = "quarantined"
INCIDENT_TAG: Final = "immutable-guard:incident"

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
    TAGS_ONLY: Final = "tags_only"
    SCOPE_TAMPERED: Final = "scope_tampered"
    FORGED_QUARANTINE_MARKER: Final = "forged_quarantine_marker"
    CONTAINMENT_TAMPERED: Final = "containment_tampered"
    NOT_GUARD_WIRING: Final = "not_guard_wiring"
    GOLDEN_IMAGE_AT_RISK: Final = "golden_image_at_risk"
    CONFIG_NOT_A_CHANGE: Final = "config_not_a_change"
    # Organisation mode: refused before judging (the event is counted, not judged).
    ACCOUNT_MISMATCH: Final = "account_mismatch"
    UNPROTECTED_ACCOUNT: Final = "unprotected_account"


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
    # Organisation mode: the accounts in which a role named like the guard's own roles
    # (ImmutableGuard-Member-*, ImmutableGuard-Central-*) is the guard: the event's account and the
    # security account. Empty in single-account mode, where own_role_arns names the guard's roles.
    guard_accounts: frozenset[str] = frozenset()


class Judgement(BaseModel):
    """The decision on one finding, with a reason code and a sentence for people."""

    model_config = ConfigDict(frozen=True)

    finding: Finding
    decision: Decision
    reason: str
    detail: str
    instances_in_scope: tuple[InstanceInfo, ...] = ()
    # What the ledger should remember (judge_event fills them): instances seen carrying the scope tag,
    # and instances an exempt principal took out of scope.
    seen_in_scope: tuple[str, ...] = ()
    left_scope: tuple[str, ...] = ()
    # Instances the guard holds in quarantine that someone else's change reached: contained again
    # (Reason.CONTAINMENT_TAMPERED; triage.Triage.contain_again).
    contain_again: tuple[str, ...] = ()


def principal_key(arn: str) -> str:
    """A comparable identity: an assumed-role session and its role (with or without a path) are the same."""
    arn = arn.strip()
    match = _ASSUMED_ROLE.match(arn) or _ROLE.match(arn)
    if match is None:
        return arn
    return f"role:{match['partition']}:{match['account']}:{match['name']}"


def guard_role_of(actor: Actor, accounts: frozenset[str]) -> str | None:
    """The guard's own role the actor acts as (by principal or session issuer), in one of ``accounts``:
    a role named ImmutableGuard-Member-* or ImmutableGuard-Central-*, whatever its path."""
    for candidate in (actor.principal_arn, actor.session_issuer_arn):
        match = candidate and (_ASSUMED_ROLE.match(candidate.strip()) or _ROLE.match(candidate.strip()))
        if match and match["account"] in accounts and match["name"].startswith(GUARD_ROLE_PREFIXES):
            return f"arn:{match['partition']}:iam::{match['account']}:role/{match['name']}"
    return None


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
    if finding.evidence.get(RELEASE_SHAPED_EVIDENCE_KEY) is True:
        # Release restores groups and profile and removes its own tags, through calls that often name
        # the interface, not the instance: the release itself is what the ledger knows.
        for instance_id in finding.instance_ids:
            incident_id = memory.released_recently(instance_id)
            if incident_id is not None:
                return Reason.OWN_CHANGE, (
                    f"Config's echo of Immutable Guard's release of {instance_id} (incident {incident_id}): "
                    "only what the release restores changed."
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
    through_cloudformation = made_through_cloudformation(actor)
    if through_cloudformation:
        stacks = _declared_stacks_reached(finding, instances, policy, memory)
        if stacks:
            return verdict(
                Decision.IGNORE,
                Reason.CLOUDFORMATION_CHANGE,
                f"Made through CloudFormation on behalf of {_who(actor)}, on instances of the declared "
                f"stack(s) {', '.join(stacks)}.",
            )
    own = _actor_matches(actor, policy.own_role_arns) or guard_role_of(actor, policy.guard_accounts)
    if own is not None:
        return verdict(Decision.IGNORE, Reason.OWN_CHANGE, f"Made by Immutable Guard itself ({own}).")
    if policy.expected_account is not None and finding.account != policy.expected_account:
        return verdict(
            Decision.IGNORE,
            Reason.WRONG_ACCOUNT,
            f"Reported for account {finding.account}, not the protected account {policy.expected_account}.",
        )
    if finding.kind is Kind.DETECTION_DISABLED and finding.evidence.get(GUARD_WIRING_EVIDENCE_KEY) is False:
        # A rule or function of someone else's, or a setting that does not blind the guard.
        return verdict(
            Decision.IGNORE,
            Reason.NOT_GUARD_WIRING,
            f"{finding.summary} Nothing Immutable Guard relies on was changed.",
        )
    if finding.kind in ACCOUNT_LEVEL_KINDS:
        return _through_cloudformation(
            verdict(Decision.ALERT, Reason.ACCOUNT_LEVEL_ALERT_ONLY, _ACCOUNT_LEVEL_DETAIL[finding.kind]),
            through_cloudformation,
        )
    if not instances and finding.alert_if_unresolved:
        return _through_cloudformation(
            verdict(
                Decision.ALERT,
                Reason.UNRESOLVED_TARGET,
                f"{finding.summary} It names no instance that could be resolved, so nothing is remediated "
                "automatically: alert only, a person must check which servers it reaches.",
            ),
            through_cloudformation,
        )
    return _through_cloudformation(_judge_scope(finding, instances, policy, memory), through_cloudformation)


def _through_cloudformation(judgement: Judgement, through_cloudformation: bool) -> Judgement:
    """Say why a change CloudFormation made was not exempt, on any verdict that acts or alerts."""
    if not through_cloudformation or judgement.decision is Decision.IGNORE:
        return judgement
    return judgement.model_copy(
        update={
            "detail": f"{judgement.detail} Made through CloudFormation on behalf of "
            f"{_who(judgement.finding.actor)}, neither an allow-listed principal nor a stack declared in "
            "ScopeStackNames: anyone allowed to create a stack could otherwise change servers or the "
            "guard's wiring unseen."
        }
    )


def _declared_stacks_reached(
    finding: Finding,
    instances: list[InstanceInfo] | tuple[InstanceInfo, ...],
    policy: Policy,
    memory: DetectionMemory,
) -> list[str]:
    """The declared stacks (ScopeStackNames) whose instances a CloudFormation-made change reaches, when
    every immutable instance it reaches belongs to one; otherwise none.

    CloudTrail does not name the stack behind a call CloudFormation makes, so the instances tell: the
    operator's own stack may change its own servers (that is how it rolls out a new image); an
    attacker's stack, or an undeclared one, may not."""
    changes = tag_changes_of(finding.evidence)
    in_scope = [
        info
        for info in instances
        if policy.scope.in_scope_at_change(
            info, tags_before(info.tags, changes) if changes and info.tags is not None else None, memory
        )
    ]
    if not in_scope or any(info.stack_name not in policy.scope.stack_names for info in in_scope):
        return []
    return sorted({info.stack_name for info in in_scope if info.stack_name is not None})


# ---------------------------------------------------------------- scope, as of the change


def _tampered_tags(
    info: InstanceInfo,
    changes: list[TagChange],
    scope: ScopeRule,
    memory: DetectionMemory,
    with_actor: bool,
) -> list[str]:
    """The tag changes on `info` that tamper with its scope: the scope tag removed or changed while the
    instance carried it, or any `immutable-guard:*` tag set or removed on an instance in scope.

    The guard changes its own tags all the time (Contain sets the marker, Release removes it), and a
    Config item carries no actor: only a record that names who changed them (CloudTrail) can say that
    someone else did. Config's echo of an attacker's change comes with that CloudTrail record."""
    tampered: list[str] = []
    had_scope_tag: bool | None = None  # read from the ledger at most once, and only if needed
    for change in changes:
        if change.key not in (scope.tag_key, EVERY_USER_TAG) or change.updated == scope.tag_value:
            continue
        if change.previous_known:
            stripped = change.previous == scope.tag_value
        else:
            if had_scope_tag is None:
                # Unknown tags (offline) count as in scope, as everywhere; otherwise the tag may still be
                # there, or the ledger saw it.
                had_scope_tag = (
                    info.tags is None
                    or scope.tagged(info.tags)
                    or memory.was_in_scope(info.instance_id, scope.scope_tag)
                )
            stripped = had_scope_tag
        if stripped:
            tampered.append(change.key)
    guard_tags = [
        c.key
        for c in changes
        if with_actor
        and c.key.startswith(GUARD_TAG_PREFIX)
        and not (c.previous_known and c.previous == c.updated)
    ]
    if guard_tags and (
        tampered or scope.in_scope_at_change(info, tags_before(info.tags or {}, changes), memory)
    ):
        tampered += guard_tags
    return tampered


def _held_in_quarantine(info: InstanceInfo, memory: DetectionMemory) -> bool:
    return (info.tags or {}).get(QUARANTINE_TAG) == QUARANTINED and _quarantine_trusted(info, memory)


def _quarantine_trusted(info: InstanceInfo, memory: DetectionMemory) -> bool:
    """A quarantine marker is the guard's own only while the ledger holds the matching open incident."""
    holder = memory.open_incident_for(info.instance_id)
    return holder is not None and (info.tags or {}).get(INCIDENT_TAG) in (None, holder)


def _judge_scope(
    finding: Finding,
    instances: list[InstanceInfo] | tuple[InstanceInfo, ...],
    policy: Policy,
    memory: DetectionMemory,
) -> Judgement:
    def verdict(
        decision: Decision,
        reason: str,
        detail: str,
        in_scope: tuple[InstanceInfo, ...] = (),
        judged: Finding = finding,
    ) -> Judgement:
        return Judgement(
            finding=judged, decision=decision, reason=reason, detail=detail, instances_in_scope=in_scope
        )

    changes = tag_changes_of(finding.evidence)
    if changes:
        tampered = {
            info.instance_id: keys
            for info in instances
            if (
                keys := _tampered_tags(
                    info, changes, policy.scope, memory, finding.source is Source.CLOUDTRAIL
                )
            )
        }
        if tampered:
            described = "; ".join(f"{i}: {', '.join(keys)}" for i, keys in tampered.items())
            if finding.evidence.get(TAGS_ONLY_EVIDENCE_KEY) is True:
                finding = finding.model_copy(
                    update={
                        "kind": Kind.SCOPE_TAMPERED,
                        "severity": Severity.CRITICAL,
                        "summary": f"Scope tampered with by {_who(finding.actor)}. {finding.summary}",
                    }
                )
            return verdict(
                Decision.REMEDIATE,
                Reason.SCOPE_TAMPERED,
                f"{finding.summary} The scope or the guard's own tags of immutable instance(s) changed "
                f"({described}): taking a server out of the guard's sight is itself a compromise.",
                tuple(info for info in instances if info.instance_id in tampered),
                finding,
            )
        if finding.evidence.get(TAGS_ONLY_EVIDENCE_KEY) is True:
            return verdict(
                Decision.IGNORE,
                Reason.TAGS_ONLY,
                f"{finding.summary} Only tags changed, neither the scope tag of an immutable instance nor "
                "the guard's own tags.",
            )
    in_scope = tuple(
        info
        for info in instances
        if policy.scope.in_scope_at_change(
            info, tags_before(info.tags, changes) if changes and info.tags is not None else None, memory
        )
        # A server the guard holds in quarantine stays its concern whatever its tags say now (the scope tag
        # removed by the attacker, and the scope memory cleared by a Config echo that also named one of
        # the guard's calls): a change to it must not pass as out of scope.
        or _held_in_quarantine(info, memory)
    )
    if finding.kind in ALERT_ONLY_KINDS and in_scope:
        return verdict(
            Decision.ALERT,
            Reason.GOLDEN_IMAGE_AT_RISK,
            f"{finding.summary} Immutable instance(s) {', '.join(i.instance_id for i in in_scope)} would be "
            "replaced from it. Alert only: the running servers are unchanged; check the launch template "
            "before any replacement.",
            in_scope,
        )
    # Our own quarantine comes back from Config as an instance change with no actor; an instance we
    # quarantined is already handled by its incident, whatever reports it later. Anyone can set the
    # marker tag, so it counts only while the ledger holds the instance's open incident.
    marked = tuple(info for info in in_scope if (info.tags or {}).get(QUARANTINE_TAG) == QUARANTINED)
    quarantined = tuple(info for info in marked if _quarantine_trusted(info, memory))
    forged = tuple(info for info in marked if info not in quarantined)
    # Someone changed a server the guard holds in quarantine: not the guard, an allow-listed principal or
    # CloudFormation (judged before this). A rule added to the isolation group, an interface moved back to
    # its groups or a profile attached again undoes the containment while the server waits for its
    # replacement or a person: it is contained again, and the team told. Config's report of the same
    # change names no actor: "already quarantined", as the guard's own echo is.
    contain_again = (
        tuple(info.instance_id for info in quarantined) if finding.source is Source.CLOUDTRAIL else ()
    )
    if in_scope and len(quarantined) == len(in_scope):
        ids = ", ".join(info.instance_id for info in quarantined)
        if contain_again:
            return verdict(
                Decision.REMEDIATE,
                Reason.CONTAINMENT_TAMPERED,
                f"{finding.summary} It reaches {ids}, quarantined by Immutable Guard: containment tampered "
                "with, contained again.",
            ).model_copy(update={"contain_again": contain_again})
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
    if forged:
        forgers = ", ".join(info.instance_id for info in forged)
        return verdict(
            Decision.REMEDIATE,
            Reason.FORGED_QUARANTINE_MARKER,
            f"{finding.summary} It reaches immutable instance(s) {ids}; {forgers} carries a quarantine "
            "marker that no open incident backs: a forged marker, judged as if it were absent.",
            in_scope,
        ).model_copy(update={"contain_again": contain_again})
    return verdict(
        Decision.REMEDIATE,
        Reason.MUTATION_OF_IMMUTABLE_INSTANCE,
        f"{finding.summary} It reaches immutable instance(s) {ids}.",
        in_scope,
    ).model_copy(update={"contain_again": contain_again})


def scope_observations(
    judgement: Judgement, instances: list[InstanceInfo] | tuple[InstanceInfo, ...], policy: Policy
) -> Judgement:
    """Add what the ledger should remember about scope: the instances the event names that carry the
    scope tag (Config reports every new instance and every tag change by name, so each server is seen
    early; the instances behind a group are not written, to keep a broad change cheap), and those an
    exempt principal (allow-listed, CloudFormation, the guard) took out of scope."""
    named = set(judgement.finding.instance_ids)
    seen = tuple(
        info.instance_id
        for info in instances
        if info.instance_id in named and info.tags is not None and policy.scope.tagged(info.tags)
    )
    left: tuple[str, ...] = ()
    exempt = (Reason.ALLOW_LISTED_PRINCIPAL, Reason.CLOUDFORMATION_CHANGE, Reason.OWN_CHANGE)
    if judgement.reason in exempt:
        scope_keys = (policy.scope.tag_key, EVERY_USER_TAG)
        if any(
            c.key in scope_keys and c.updated != policy.scope.tag_value
            for c in tag_changes_of(judgement.finding.evidence)
        ):
            left = tuple(
                info.instance_id
                for info in instances
                if info.tags is not None and not policy.scope.tagged(info.tags)
            )
    if not seen and not left:
        return judgement
    return judgement.model_copy(update={"seen_in_scope": seen, "left_scope": left})


def remember_judgement(
    memory: MemoryWriter, judgement: Judgement, policy: Policy, *, groups_wanted: bool = False
) -> tuple[str, ...]:
    """Write down what later events need from this one: servers seen in scope (a server stays in scope
    after an attacker strips the tag), servers an exempt principal took out of scope, and CloudTrail
    changes judged exempt (Config reports the same change minutes later, with no actor: it takes this
    judgement). With `groups_wanted`, returns the servers whose VPCs' isolation groups nobody asked for
    yet (the records now say they were)."""
    finding = judgement.finding
    first_seen = tuple(
        instance_id
        for instance_id in judgement.seen_in_scope
        if memory.remember_in_scope(
            instance_id, policy.scope.scope_tag, finding.event_id, groups_wanted=groups_wanted
        )
    )
    for instance_id in judgement.left_scope:
        memory.forget_scope(instance_id)
    if finding.source is Source.CLOUDTRAIL and judgement.reason in EXEMPT_REASONS:
        memory.remember_exempt(finding.event_id, finding.change_key, judgement.reason)
    return first_seen


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
    return judge_finding(normalise(parse_event(raw)), policy, directory, memory)


def judge_finding(
    finding: Finding, policy: Policy, directory: InstanceDirectory, memory: DetectionMemory | None = None
) -> Judgement:
    """Resolve the instances a normalised finding reaches and judge it (``judge_event`` after parsing)."""
    instances = directory.resolve(finding)
    return scope_observations(judge(finding, instances, policy, memory), instances, policy)
