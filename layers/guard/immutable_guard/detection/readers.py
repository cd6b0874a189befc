"""The vocabulary every detection handler shares: defensive readers for request shapes that differ per
API (EC2's query shape, wrapped requests, JSON services), bounded copies of untrusted data, and `Facts`,
what one handler found. A surprising shape yields less evidence, never a crash."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Final

from immutable_guard.model import Kind, Severity

if TYPE_CHECKING:
    from immutable_guard.detection.events import CloudTrailDetail

# Evidence travels in alerts and the ledger; a hostile request must not make it unbounded.
MAX_TEXT: Final = 1024
MAX_ITEMS: Final = 50
_MAX_DEPTH: Final = 6
_MAX_ID: Final = 256

INSTANCE_TAGS_EVIDENCE_KEY: Final = "instance_tags"
"""Evidence key holding the tags of an instance when a Config item carried them."""

SSM_TAG_TARGETS_EVIDENCE_KEY: Final = "tag_targets"
"""Evidence key holding SSM `tag:` targets ({"key": "tag:Name", "values": [...]}) to resolve."""

GUARD_TAG_PREFIX: Final = "immutable-guard:"
"""The prefix of the tags the guard sets on what it acts on (quarantine marker, incident, role)."""

TAG_CHANGES_EVIDENCE_KEY: Final = "tag_changes"
"""Evidence key holding tag changes of an instance: {key: {"previous": str | None, "updated": str | None}}
(None = absent). The policy decides whether a change touches the scope or the guard's own tags."""

TAGS_ONLY_EVIDENCE_KEY: Final = "tags_only"
"""Evidence key, True when the only thing that changed was tags: no mutation, unless the policy finds
the scope or the guard's own tags among them (scope tampering)."""

GUARD_WIRING_EVIDENCE_KEY: Final = "guard_wiring"
"""Evidence key of a detection_disabled finding: False when the call touched a rule, function, trail
setting or association Immutable Guard does not rely on (someone else's), so it blinds nothing."""


# ---------------------------------------------------------------- defensive readers


def as_dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def items_of(value: object) -> list[Any]:
    """EC2 records lists as {"items": [...]} (or {} when empty); other services use plain lists."""
    if isinstance(value, dict):
        value = value.get("items")
    return list(value) if isinstance(value, list) else []


def text_of(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def int_of(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def first_of(mapping: dict[str, Any], *names: str) -> Any:
    """The first present key among spellings (SSM records are camelCase, hand-written ones are not)."""
    for name in names:
        if name in mapping:
            return mapping[name]
    return None


def strings_of(value: object) -> list[str]:
    if isinstance(value, str):
        return [value] if value else []
    return [item for item in items_of(value) if isinstance(item, str) and item]


def unique(values: Iterable[str | None]) -> tuple[str, ...]:
    # Real ids are short; a giant "id" is hostile input and is cut to keep change keys bounded.
    return tuple(dict.fromkeys(value[:_MAX_ID] for value in values if value))


def clip(value: object, depth: int = 0) -> Any:
    """A JSON-able copy of untrusted data, bounded in depth, length and item count."""
    if isinstance(value, str):
        return value if len(value) <= MAX_TEXT else value[:MAX_TEXT] + "...[truncated]"
    if value is None or isinstance(value, bool | int | float):
        return value
    if depth >= _MAX_DEPTH:
        return "...[truncated]"
    if isinstance(value, dict):
        return {str(key)[:MAX_TEXT]: clip(item, depth + 1) for key, item in list(value.items())[:MAX_ITEMS]}
    if isinstance(value, list | tuple):
        return [clip(item, depth + 1) for item in list(value)[:MAX_ITEMS]]
    return str(value)[:MAX_TEXT]


def is_world(cidr: str | None) -> bool:
    if not cidr:
        return False
    try:
        return ipaddress.ip_network(cidr.strip(), strict=False).prefixlen == 0
    except ValueError:
        return False


def describe_ports(from_port: int | None, to_port: int | None) -> str:
    if (from_port is None and to_port is None) or from_port == -1:
        return "all ports"
    if from_port == to_port or to_port is None:
        return f"port {from_port}"
    return f"ports {from_port}-{to_port}"


# ---------------------------------------------------------------- the result of one handler


class Facts:
    """What a handler found; `normalise` adds the envelope and actor."""

    def __init__(
        self,
        kind: Kind,
        severity: Severity,
        summary: str,
        *,
        resource_ids: Iterable[str | None] = (),
        instance_ids: Iterable[str | None] = (),
        evidence: dict[str, Any] | None = None,
        alert_if_unresolved: bool = False,
    ) -> None:
        self.kind = kind
        self.alert_if_unresolved = alert_if_unresolved
        self.severity = severity
        self.summary = " ".join(summary.split())[:MAX_TEXT]
        self.resource_ids = unique(resource_ids)
        self.instance_ids = unique(i for i in instance_ids if i and i.startswith("i-"))
        self.evidence: dict[str, Any] = clip(evidence or {})


# ---------------------------------------------------------------- permissions (ports, CIDRs)


def protocol_of(value: object) -> str:
    """EC2 takes names ("tcp") or numbers ("6", 6); "-1" means every protocol."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return (text_of(value) or "-1")[:32]


def permission(protocol: object, from_port: object, to_port: object, direction: str) -> dict[str, Any]:
    return {
        "direction": direction,
        "protocol": protocol_of(protocol),
        "from_port": int_of(from_port),
        "to_port": int_of(to_port),
        "cidr": None,
    }


def describe_permissions(permissions: list[dict[str, Any]]) -> str:
    parts = []
    for perm in permissions[:3]:
        source = perm.get("cidr") or perm.get("source_group_id") or perm.get("prefix_list_id") or "?"
        protocol = "all protocols" if perm["protocol"] == "-1" else perm["protocol"]
        preposition = {"ingress": "from", "egress": "to"}.get(perm["direction"], "with")
        parts.append(
            f"{protocol} {describe_ports(perm['from_port'], perm['to_port'])} {preposition} {source}"
        )
    more = f" and {len(permissions) - 3} more" if len(permissions) > 3 else ""
    return ", ".join(parts) + more if parts else "no readable rule"


def port_severity(permissions: list[dict[str, Any]]) -> Severity:
    # A rule whose direction the record does not say (ModifySecurityGroupRules) counts as ingress:
    # treating a world-open rule as the less severe case would be the wrong way to be wrong.
    for perm in permissions:
        if perm["direction"] in ("ingress", "unknown") and is_world(perm.get("cidr")):
            return Severity.CRITICAL
    return Severity.HIGH


Handler = Callable[["CloudTrailDetail"], "Facts"]
"""Turns one CloudTrail record (its request, response, resources and additional data) into Facts."""
