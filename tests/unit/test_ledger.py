"""The ledger's promises: one open incident per instance, idempotent stamps, the hourly counter."""

from __future__ import annotations

import time

import pytest
from immutable_guard.errors import IncidentNotFound
from immutable_guard.ledger import Incident, IncidentLedger, Status, now_iso


def make_incident(incident_id: str = "ig-i-1-aaa", instance_id: str = "i-1") -> Incident:
    return Incident(
        incident_id=incident_id,
        instance_id=instance_id,
        mode="enforce",
        decision="remediate",
        kind="port_opened",
        severity="critical",
        account="111122223333",
        region="us-east-1",
        created_at=now_iso(),
        finding={"event_id": "e-1"},
        timeline={"detected": now_iso()},
    )


def test_first_incident_for_an_instance_opens(ledger: IncidentLedger) -> None:
    # When
    result = ledger.open_incident(make_incident())
    # Then
    assert result.opened and result.incident_id == "ig-i-1-aaa"
    assert ledger.get("ig-i-1-aaa").status is Status.OPEN
    assert ledger.open_incident_for("i-1") == "ig-i-1-aaa"


def test_second_incident_for_the_same_instance_points_to_the_first(ledger: IncidentLedger) -> None:
    # Given
    ledger.open_incident(make_incident("ig-i-1-aaa"))
    # When
    result = ledger.open_incident(make_incident("ig-i-1-bbb"))
    # Then
    assert not result.opened
    assert result.incident_id == "ig-i-1-aaa"
    with pytest.raises(IncidentNotFound):
        ledger.get("ig-i-1-bbb")


def test_the_same_incident_opened_twice_is_not_opened_again(ledger: IncidentLedger) -> None:
    ledger.open_incident(make_incident())
    again = ledger.open_incident(make_incident())
    assert (again.opened, again.incident_id) == (False, "ig-i-1-aaa")


def test_an_expired_lock_does_not_block_a_new_incident(ledger: IncidentLedger) -> None:
    # Given a lock whose TTL has passed but that DynamoDB has not deleted yet
    ledger.open_incident(make_incident("ig-i-1-old"), lock_seconds=-10)
    # When
    result = ledger.open_incident(make_incident("ig-i-1-new"))
    # Then
    assert result.opened
    assert ledger.open_incident_for("i-1") == "ig-i-1-new"


def test_other_instances_are_independent(ledger: IncidentLedger) -> None:
    assert ledger.open_incident(make_incident("ig-i-1-a", "i-1")).opened
    assert ledger.open_incident(make_incident("ig-i-2-a", "i-2")).opened


def test_an_event_is_seen_once(ledger: IncidentLedger) -> None:
    assert ledger.first_sighting("event-1") is True
    assert ledger.first_sighting("event-1") is False
    assert ledger.first_sighting("event-2") is True


def test_a_stage_keeps_its_first_time_when_a_step_is_retried(ledger: IncidentLedger) -> None:
    # Given
    ledger.open_incident(make_incident())
    ledger.record_stage("ig-i-1-aaa", "contained", Status.CONTAINED, {"groups": ["sg-1"]})
    first = ledger.get("ig-i-1-aaa").timeline["contained"]
    time.sleep(0.01)
    # When the step runs again
    ledger.record_stage("ig-i-1-aaa", "contained", Status.CONTAINED, {"groups": ["sg-1"]})
    # Then
    incident = ledger.get("ig-i-1-aaa")
    assert incident.timeline["contained"] == first
    assert incident.status is Status.CONTAINED
    assert incident.details["contained"] == {"groups": ["sg-1"]}


def test_prior_state_is_never_overwritten(ledger: IncidentLedger) -> None:
    # Given the state before quarantine was recorded
    ledger.open_incident(make_incident())
    ledger.record_prior_state("ig-i-1-aaa", {"groups": ["sg-web"]})
    # When a retried step records the (now quarantined) state again
    ledger.record_prior_state("ig-i-1-aaa", {"groups": ["sg-isolation"]})
    # Then the original survives, so release can undo the quarantine
    assert ledger.get("ig-i-1-aaa").prior_state == {"groups": ["sg-web"]}


def test_updating_an_unknown_incident_says_so(ledger: IncidentLedger) -> None:
    with pytest.raises(IncidentNotFound, match="ig-missing"):
        ledger.record_stage("ig-missing", "contained")


def test_release_lock_only_frees_the_holder(ledger: IncidentLedger) -> None:
    ledger.open_incident(make_incident("ig-i-1-aaa"))
    ledger.release_lock("i-1", "ig-someone-else")
    assert ledger.open_incident_for("i-1") == "ig-i-1-aaa"
    ledger.release_lock("i-1", "ig-i-1-aaa")
    assert ledger.open_incident_for("i-1") is None


def test_hourly_counter_and_single_breaker_alert(ledger: IncidentLedger) -> None:
    assert [ledger.count_incident_this_hour() for _ in range(3)] == [1, 2, 3]
    assert ledger.incidents_this_hour() == 3
    assert ledger.mark_breaker_alerted() is True
    assert ledger.mark_breaker_alerted() is False


def test_related_events_accumulate(ledger: IncidentLedger) -> None:
    ledger.open_incident(make_incident())
    ledger.add_related_event("ig-i-1-aaa", "config-1")
    ledger.add_related_event("ig-i-1-aaa", "cloudtrail-2")
    assert ledger.get("ig-i-1-aaa").related_event_ids == ["config-1", "cloudtrail-2"]


def test_list_incidents_newest_first(ledger: IncidentLedger) -> None:
    ledger.open_incident(make_incident("ig-i-1-a", "i-1"))
    time.sleep(0.01)
    ledger.open_incident(make_incident("ig-i-2-a", "i-2"))
    assert [i.incident_id for i in ledger.list_incidents()] == ["ig-i-2-a", "ig-i-1-a"]
