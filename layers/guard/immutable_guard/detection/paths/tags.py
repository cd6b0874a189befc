"""Tags set on or removed from instances (EC2 CreateTags, DeleteTags). A tag change is no mutation in
itself; the policy finds scope tampering among them: the scope tag removed from an immutable server, or
the guard's own `immutable-guard:*` tags set or removed by anyone but the guard."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from immutable_guard.detection.readers import (
    GUARD_TAG_PREFIX,
    MAX_ITEMS,
    TAG_CHANGES_EVIDENCE_KEY,
    TAGS_ONLY_EVIDENCE_KEY,
    Facts,
    Handler,
    as_dict,
    items_of,
    text_of,
)
from immutable_guard.detection.scope_resolvers import Resolver
from immutable_guard.model import Kind, Severity

if TYPE_CHECKING:
    from immutable_guard.detection.events import CloudTrailDetail

"""The guard's own tags (quarantine marker, incident, evidence): only the guard may set or remove them."""

EVERY_USER_TAG: Final = "*"
"""A tag-changes key for "every user-defined tag": DeleteTags without tags deletes them all, and a request
naming more tags than evidence keeps may hide the scope tag among them. EC2 tag keys cannot contain '*'."""


@dataclass(frozen=True)
class TagChange:
    """One tag's change on an instance. `previous_known` is False when the record cannot say what the
    tag was before (CloudTrail records the request, not the resource); None means absent."""

    key: str
    previous: str | None
    updated: str | None
    previous_known: bool


def tag_changes_of(evidence: dict[str, Any]) -> list[TagChange]:
    """The tag changes a finding's evidence holds ({key: {"previous"?, "updated"}}); a missing "previous"
    means unknown. A surprising shape yields no change, never a crash."""
    changes = []
    for key, raw in as_dict(evidence.get(TAG_CHANGES_EVIDENCE_KEY)).items():
        change = as_dict(raw)
        previous, updated = change.get("previous"), change.get("updated")
        changes.append(
            TagChange(
                key=str(key),
                previous=previous if isinstance(previous, str) else None,
                updated=updated if isinstance(updated, str) else None,
                previous_known="previous" in change,
            )
        )
    return changes


def tags_before(tags: dict[str, str], changes: list[TagChange]) -> dict[str, str] | None:
    """The tags an instance had before `changes` (its current tags undone), or None when a changed tag's
    previous value is unknown."""
    before = dict(tags)
    for change in changes:
        if not change.previous_known or change.key == EVERY_USER_TAG:
            return None
        if change.previous is None:
            before.pop(change.key, None)
        else:
            before[change.key] = change.previous
    return before


def _tag_set(detail: CloudTrailDetail) -> tuple[list[str], list[dict[str, Any]]]:
    request = detail.request_parameters or {}
    # CloudTrail records both calls in EC2's query shape: resourcesSet.items[].resourceId and
    # tagSet.items[].{key, value}.
    resources = [text_of(as_dict(r).get("resourceId")) for r in items_of(request.get("resourcesSet"))]
    return [r for r in resources if r], [as_dict(t) for t in items_of(request.get("tagSet"))]


def _changes(tags: list[dict[str, Any]], deleting: bool) -> dict[str, dict[str, str | None]]:
    changes: dict[str, dict[str, str | None]] = {}
    if deleting and not tags:
        # "If you omit this parameter, we delete all user-defined tags" (EC2 API Reference, DeleteTags).
        return {EVERY_USER_TAG: {"updated": None}}
    if len(tags) >= MAX_ITEMS:
        # Evidence keeps MAX_ITEMS entries: a padded request must not hide the scope tag beyond them.
        changes[EVERY_USER_TAG] = {"updated": None} if deleting else {"updated": ""}
    ordered = sorted(tags, key=lambda t: not str(t.get("key", "")).startswith(GUARD_TAG_PREFIX))
    for tag in ordered:
        key, value = text_of(tag.get("key")), tag.get("value")
        if key is None:
            continue
        if not deleting:
            changes[key] = {"updated": value if isinstance(value, str) else ""}
        elif isinstance(value, str):
            # Deleted only if it had this value: had it been deleted, this was its previous value.
            changes[key] = {"previous": value, "updated": None}
        else:
            changes[key] = {"updated": None}
    return changes


def _tags_changed(detail: CloudTrailDetail, deleting: bool) -> Facts:
    resources, tags = _tag_set(detail)
    instances = [r for r in resources if r.startswith("i-")]
    changes = _changes(tags, deleting)
    shown = ", ".join(
        key if deleting else f"{key}={change['updated']}" for key, change in list(changes.items())[:5]
    )
    where = ", ".join(instances[:5]) or "no instance"
    what = "removed from" if deleting else "set on"
    # Not scope_tampered here: whether the change tampers depends on the operator's scope tag and on
    # the instance, which only the policy knows; it turns the finding into scope_tampered when it does.
    return Facts(
        Kind.INSTANCE_MODIFIED,
        Severity.MEDIUM,
        f"Tags {what} {where}: {'every user tag' if shown == EVERY_USER_TAG else shown or 'none'}.",
        resource_ids=instances,
        instance_ids=instances,
        evidence={
            TAG_CHANGES_EVIDENCE_KEY: changes,
            TAGS_ONLY_EVIDENCE_KEY: True,
            "other_resources": [r for r in resources if not r.startswith("i-")][:MAX_ITEMS],
        },
    )


def _create_tags(detail: CloudTrailDetail) -> Facts:
    return _tags_changed(detail, deleting=False)


def _delete_tags(detail: CloudTrailDetail) -> Facts:
    return _tags_changed(detail, deleting=True)


HANDLERS: Final[dict[tuple[str, str], Handler]] = {
    ("ec2.amazonaws.com", "CreateTags"): _create_tags,
    ("ec2.amazonaws.com", "DeleteTags"): _delete_tags,
}
"""(eventSource, eventName) -> handler, for the CloudTrail records of this path."""

RESOLVERS: Final[tuple[Resolver, ...]] = ()
"""Tag calls name their instances: nothing to resolve."""
