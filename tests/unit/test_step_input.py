"""Every step handler validates its input the same way: a malformed request is counted and fails with
InvalidEvent naming the model and the fields, which the state machine's Catch reports."""

from __future__ import annotations

from typing import Any

import pytest
from immutable_guard.errors import InvalidEvent
from immutable_guard.remediation.evidence import EvidenceRequest
from immutable_guard.step_input import parse_step_input


class Counter:
    def __init__(self) -> None:
        self.counted: list[tuple[str, Any, float]] = []

    def add_metric(self, name: str, unit: Any, value: float) -> None:
        self.counted.append((name, unit, value))


def test_a_well_formed_request_is_returned_and_not_counted() -> None:
    counter = Counter()
    request = parse_step_input(
        EvidenceRequest, {"action": "start", "incident_id": "inc-1", "instance_id": "i-0abc"}, counter
    )
    assert (request.action, request.instance_id) == ("start", "i-0abc")
    assert counter.counted == []


def test_a_malformed_request_names_the_model_and_fields_and_is_counted() -> None:
    counter = Counter()
    with pytest.raises(InvalidEvent) as raised:
        parse_step_input(EvidenceRequest, {"action": "start"}, counter)
    message = str(raised.value)
    assert message.startswith("EvidenceRequest is malformed: ")
    assert "incident_id: required field is missing" in message
    assert counter.counted == [("InvalidRequests", "Count", 1)]


def test_a_request_that_is_not_an_object_is_an_invalid_event_too() -> None:
    with pytest.raises(InvalidEvent, match="EvidenceRequest is malformed"):
        parse_step_input(EvidenceRequest, ["not", "an", "object"])
