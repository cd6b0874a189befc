"""What detection remembers between events, read from the incident ledger: which instance has an open
incident (so a quarantine marker can be trusted), and what the pure policy needs to judge an event
that carries no actor or arrives after the tags it relies on were changed."""

from __future__ import annotations

from typing import Protocol


class DetectionMemory(Protocol):
    """The ledger as detection sees it; the offline and unit-test implementation remembers nothing."""

    def open_incident_for(self, instance_id: str) -> str | None:
        """The id of the instance's open incident, if any."""
        ...

    def exempt_reason_of_event(self, event_id: str) -> str | None:
        """The reason a CloudTrail event was judged exempt (allow-listed, CloudFormation, the guard's
        own), if it was: Config's echo of that event takes the same judgement."""
        ...

    def exempt_reason_of_change(self, change_key: str) -> str | None:
        """The reason the same change (`Finding.change_key`) was judged exempt from CloudTrail a short
        while ago, if it was: Config names no related event since item version 1.3."""
        ...


class NoMemory:
    """Remembers nothing: `explain` offline, and judgements that depend on the event alone."""

    def open_incident_for(self, instance_id: str) -> str | None:
        return None

    def exempt_reason_of_event(self, event_id: str) -> str | None:
        return None

    def exempt_reason_of_change(self, change_key: str) -> str | None:
        return None
