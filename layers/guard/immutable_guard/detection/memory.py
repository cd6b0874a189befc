"""What detection remembers between events, read from the incident ledger: which instance has an open
incident (so a quarantine marker can be trusted), and which instances were seen carrying the scope tag
(so a server stays in scope after an attacker strips the tag, whatever order the events arrive in)."""

from __future__ import annotations

from typing import Protocol


class DetectionMemory(Protocol):
    """The ledger as detection sees it; the offline and unit-test implementation remembers nothing."""

    def open_incident_for(self, instance_id: str) -> str | None:
        """The id of the instance's open incident, if any."""
        ...

    def was_in_scope(self, instance_id: str, scope_tag: str) -> bool:
        """True when the instance was seen carrying the scope tag `scope_tag` ("key=value") and no
        exempt principal (allow-listed, CloudFormation, the guard) has removed it since."""
        ...

    def exempt_reason_of_event(self, event_id: str) -> str | None:
        """The reason a CloudTrail event was judged exempt (allow-listed, CloudFormation, the guard's
        own), if it was: Config's echo of that event takes the same judgement."""
        ...

    def exempt_reason_of_change(self, change_key: str) -> str | None:
        """The reason the same change (`Finding.change_key`) was judged exempt from CloudTrail a short
        while ago, if it was: Config names no related event since item version 1.3."""
        ...

    def released_recently(self, instance_id: str) -> str | None:
        """The incident that released the instance a short while ago, if one did."""
        ...


class NoMemory:
    """Remembers nothing: `explain` offline, and judgements that depend on the event alone."""

    def open_incident_for(self, instance_id: str) -> str | None:
        return None

    def was_in_scope(self, instance_id: str, scope_tag: str) -> bool:
        return False

    def exempt_reason_of_event(self, event_id: str) -> str | None:
        return None

    def exempt_reason_of_change(self, change_key: str) -> str | None:
        return None

    def released_recently(self, instance_id: str) -> str | None:
        return None


class MemoryWriter(Protocol):
    """What detection writes down after judging an event, for the events that come after it."""

    def remember_in_scope(
        self, instance_id: str, scope_tag: str, event_id: str, *, groups_wanted: bool = False
    ) -> bool:
        """With `groups_wanted`: True when this is the first record of the instance to ask for its VPCs'
        isolation groups (IncidentLedger.remember_in_scope)."""
        ...

    def forget_scope(self, instance_id: str) -> None: ...

    def remember_exempt(self, event_id: str, change_key: str, reason: str) -> None: ...


class SessionMemory(NoMemory):
    """The ledger's memory kept in this process, for `explain` over several events in order: Config's
    echo of an allow-listed call explained after that call is judged as Detect would judge it."""

    def __init__(self) -> None:
        self._in_scope: dict[str, str] = {}
        self._exempt_events: dict[str, str] = {}
        self._exempt_changes: dict[str, str] = {}

    def was_in_scope(self, instance_id: str, scope_tag: str) -> bool:
        return self._in_scope.get(instance_id) == scope_tag

    def exempt_reason_of_event(self, event_id: str) -> str | None:
        return self._exempt_events.get(event_id)

    def exempt_reason_of_change(self, change_key: str) -> str | None:
        return self._exempt_changes.get(change_key)

    def remember_in_scope(
        self, instance_id: str, scope_tag: str, event_id: str, *, groups_wanted: bool = False
    ) -> bool:
        self._in_scope[instance_id] = scope_tag
        return False

    def forget_scope(self, instance_id: str) -> None:
        self._in_scope.pop(instance_id, None)

    def remember_exempt(self, event_id: str, change_key: str, reason: str) -> None:
        self._exempt_events[event_id] = reason
        self._exempt_changes[change_key] = reason
