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


class NoMemory:
    """Remembers nothing: `explain` offline, and judgements that depend on the event alone."""

    def open_incident_for(self, instance_id: str) -> str | None:
        return None
