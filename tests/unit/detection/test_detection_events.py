"""parse_event: every sample parses into its model; anything else is InvalidEvent with one clear line."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from detection_samples import load_sample, sample_names
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from immutable_guard.detection import CloudTrailEvent, ConfigEvent, normalise, parse_event
from immutable_guard.errors import InvalidEvent
from immutable_guard.model import Finding

CONFIG_SAMPLES = [
    name for name in sample_names() if load_sample(name)["detail-type"] == "Config Configuration Item Change"
]
CLOUDTRAIL_SAMPLES = [name for name in sample_names() if name not in CONFIG_SAMPLES]


@pytest.mark.parametrize("name", CLOUDTRAIL_SAMPLES)
def test_cloudtrail_samples_parse_as_cloudtrail_events(name: str) -> None:
    # Given a CloudTrail sample
    raw = load_sample(name)
    # When it is parsed
    event = parse_event(raw)
    # Then it is a CloudTrail event carrying the record's own names
    assert isinstance(event, CloudTrailEvent)
    assert event.detail.event_name == raw["detail"]["eventName"]
    assert event.account == "111122223333"


@pytest.mark.parametrize("name", CONFIG_SAMPLES)
def test_config_samples_parse_as_config_events(name: str) -> None:
    raw = load_sample(name)
    event = parse_event(raw)
    assert isinstance(event, ConfigEvent)
    assert event.detail.resource_id.startswith(("i-", "sg-", "acl-", "eni-", "vol-", "eipalloc-"))


def test_json_text_is_accepted_like_the_dict() -> None:
    raw = load_sample("cloudtrail-send-ssh-public-key.json")
    assert parse_event(json.dumps(raw)) == parse_event(raw)


def test_the_session_issuer_of_an_assumed_role_is_read() -> None:
    event = parse_event(load_sample("cloudtrail-ssm-start-session.json"))
    assert isinstance(event, CloudTrailEvent)
    assert event.detail.user_identity.session_issuer_arn == "arn:aws:iam::111122223333:role/AdminRole"


def test_an_oversized_config_notification_has_a_summary_but_no_item() -> None:
    event = parse_event(load_sample("config-oversized-item-changed.json"))
    assert isinstance(event, ConfigEvent)
    assert event.detail.is_oversized
    assert event.detail.resource_type == "AWS::EC2::Instance"


def _ssh() -> dict[str, Any]:
    return load_sample("cloudtrail-authorize-sg-ingress-ssh-world.json")


def _with(path: list[str], value: Any, base: dict[str, Any] | None = None) -> dict[str, Any]:
    event = copy.deepcopy(base or _ssh())
    target = event
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return event


_DELETE = object()

MALFORMED = [
    pytest.param([], "expected a JSON object, got list", id="a-list"),
    pytest.param(None, "expected a JSON object, got NoneType", id="null"),
    pytest.param("{not json", "not JSON", id="bad-json-text"),
    pytest.param({}, "missing 'detail-type'", id="empty-object"),
    pytest.param(_with(["detail"], _DELETE), "missing 'detail'", id="no-detail"),
    pytest.param(_with(["detail-type"], 7), "'detail-type' is a int", id="detail-type-not-text"),
    pytest.param(
        _with(["detail-type"], "EC2 Instance State-change Notification"),
        "unsupported detail-type 'EC2 Instance State-change Notification'",
        id="other-detail-type",
    ),
    pytest.param(_with(["detail"], ["x"]), "'detail' is not an object", id="detail-a-list"),
    pytest.param(_with(["account"], _DELETE), "account", id="no-account"),
    pytest.param(_with(["detail", "eventName"], 42), "detail.eventName", id="event-name-a-number"),
    pytest.param(_with(["detail", "eventSource"], _DELETE), "detail.eventSource", id="no-event-source"),
    pytest.param(
        _with(["detail", "requestParameters"], ["a"]), "detail.requestParameters", id="params-a-list"
    ),
    pytest.param(_with(["detail", "userIdentity"], "root"), "detail.userIdentity", id="identity-a-string"),
    pytest.param(
        _with(["detail", "configurationItem"], _DELETE, load_sample("config-instance-changed.json")),
        "neither configurationItem nor configurationItemSummary",
        id="config-without-item",
    ),
    pytest.param(
        _with(
            ["detail", "configurationItem", "tags"],
            ["immutable"],
            load_sample("config-instance-changed.json"),
        ),
        "detail.configurationItem.tags",
        id="config-tags-a-list",
    ),
]


@pytest.mark.parametrize(("raw", "expected"), MALFORMED)
def test_malformed_input_is_an_invalid_event_with_a_one_line_message(raw: object, expected: str) -> None:
    # Given input that is not a supported event / When it is parsed
    with pytest.raises(InvalidEvent) as caught:
        parse_event(raw)
    # Then the message names the problem on a single line
    message = str(caught.value)
    assert expected in message
    assert "\n" not in message


def test_a_huge_unicode_detail_type_is_quoted_short() -> None:
    raw = _with(["detail-type"], "détail\n☃" * 100_000)
    with pytest.raises(InvalidEvent) as caught:
        parse_event(raw)
    message = str(caught.value)
    assert message.startswith("unsupported detail-type 'détail ☃")
    assert len(message) < 200
    assert "\n" not in message


def test_huge_unicode_values_parse_and_normalise_within_bounds() -> None:
    # Given a record whose strings are enormous and not ASCII
    huge = "ж☃\u202e" * 200_000
    raw = _with(["detail", "userAgent"], huge)
    raw["detail"]["requestParameters"]["ipPermissions"]["items"][0]["ipRanges"]["items"][0]["cidrIp"] = huge
    # When it is parsed and normalised
    finding = normalise(parse_event(raw))
    # Then nothing crashes and the evidence stays bounded
    assert finding.actor.user_agent == huge
    assert len(json.dumps(finding.evidence)) < 10_000
    assert len(finding.summary) <= 1024


def test_null_request_parameters_are_accepted() -> None:
    raw = _with(["detail", "requestParameters"], None)
    event = parse_event(raw)
    assert isinstance(event, CloudTrailEvent)
    assert event.detail.request_parameters is None


# ---------------------------------------------------------------- properties

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)


# No deadline: a test never asserts wall-clock time, and a loaded machine is slower per example.
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=json_values)
def test_any_json_value_is_parsed_or_rejected_as_invalid(raw: object) -> None:
    try:
        parse_event(raw)
    except InvalidEvent as exc:
        assert "\n" not in str(exc)


SAMPLES = {name: load_sample(name) for name in sample_names()}
DETAIL_KEYS = sorted({key for raw in SAMPLES.values() for key in raw["detail"]})


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(sorted(SAMPLES)),
    key=st.sampled_from([*DETAIL_KEYS, "requestParameters"]),
    value=json_values,
    nested=st.booleans(),
)
def test_any_sample_with_any_field_replaced_becomes_a_finding_or_an_invalid_event(
    name: str, key: str, value: object, nested: bool
) -> None:
    # Given a real sample where one field (or one request parameter) holds arbitrary JSON
    raw = copy.deepcopy(SAMPLES[name])
    params = raw["detail"].get("requestParameters")
    if nested and isinstance(params, dict) and params:
        params[sorted(params)[0]] = value
    else:
        raw["detail"][key] = value
    # When it goes through parse and normalise
    try:
        finding = normalise(parse_event(raw))
    except InvalidEvent as exc:
        # Then it is either rejected with one line...
        assert "\n" not in str(exc)
        return
    # ...or it is a well-formed, JSON-able finding
    assert isinstance(finding, Finding)
    json.dumps(finding.model_dump(mode="json"))
