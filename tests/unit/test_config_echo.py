"""Config's echo of a change already judged from CloudTrail takes that judgement, through the ledger: the
Detect function remembers the CloudTrail events (and changes) it judged exempt, and the Config item that
names the event in `relatedEvents`, or reports the same change shortly after, is ignored for that reason.

Samples: events/benign-allow-listed-principal.json (CloudTrail), events/config-echo-of-pipeline-change.json
and events/config-instance-changed.json (Config items; shapes and sources in
tests/unit/detection/test_config_items.py)."""

from __future__ import annotations

import time

import test_pipeline
from immutable_guard.ledger import IncidentLedger
from test_pipeline import World

world = test_pipeline.world  # the Detect world on moto, shared with the pipeline tests

PIPELINE_EVENT = "b1c2d3e4-f5a6-4b7c-8d9e-000000000017"
OWN_ROLE = "arn:aws:iam::111122223333:role/immutable-guard-QuarantineFunctionRole-ABC"


def test_the_echo_of_an_allow_listed_change_naming_its_event_opens_nothing(world: World) -> None:
    # Given the pipeline's change, judged allow-listed from CloudTrail
    assert (
        world.process(world.event("benign-allow-listed-principal.json"))["reason"] == "allow_listed_principal"
    )
    # When Config reports the change, naming the CloudTrail event
    result = world.process(world.event("config-echo-of-pipeline-change.json"))
    # Then the item takes the same judgement: nothing is opened
    assert (result["decision"], result["reason"]) == ("ignore", "allow_listed_principal")
    assert world.executions() == [] and world.alerts() == []


def test_the_echo_without_related_events_is_matched_by_the_same_change(world: World) -> None:
    world.process(world.event("benign-allow-listed-principal.json"))
    echo = world.event("config-echo-of-pipeline-change.json")
    echo["detail"]["configurationItem"]["relatedEvents"] = []
    assert world.process(echo)["reason"] == "allow_listed_principal"
    assert world.executions() == []


def test_the_same_item_with_no_exempt_change_before_it_is_remediated(world: World) -> None:
    # The benign twin's opposite: nobody exempt made the change, so Config's item is judged alone.
    result = world.process(world.event("config-echo-of-pipeline-change.json"))
    assert (result["decision"], result["reason"]) == ("remediate", "mutation_of_immutable_instance")
    assert len(world.executions()) == 1


def test_the_echo_of_the_guards_own_group_swap_opens_nothing(world: World) -> None:
    # Given the guard's own ModifyInstanceAttribute (groupSet) on the server, recorded by CloudTrail
    own = world.event("cloudtrail-modify-instance-attribute-groupset.json")
    own["detail"]["userIdentity"]["arn"] = OWN_ROLE
    own["detail"]["userIdentity"].get("sessionContext", {}).get("sessionIssuer", {})["arn"] = OWN_ROLE
    assert world.process(own)["reason"] == "own_change"
    # When Config reports the instance's groups changed, without naming the event
    result = world.process(world.event("config-instance-changed.json"))
    # Then it is the guard's own change
    assert (result["decision"], result["reason"]) == ("ignore", "own_change")
    assert world.executions() == []


def test_an_exempt_change_is_remembered_only_for_the_echo_window(world: World) -> None:
    ledger: IncidentLedger = world.ledger
    ledger.remember_exempt("evt-1", "port_opened:i-0abc", "own_change")
    assert ledger.exempt_reason_of_event("evt-1") == "own_change"
    assert ledger.exempt_reason_of_change("port_opened:i-0abc") == "own_change"
    # A record past its window counts as absent, whether or not TTL has deleted it yet.
    world.aws.dynamodb.update_item(
        TableName=world.settings.ledger_table,
        Key={"pk": {"S": "EXEMPT#CHANGE#111122223333:us-east-1:port_opened:i-0abc"}},
        UpdateExpression="SET expires_at = :past",
        ExpressionAttributeValues={":past": {"N": str(int(time.time()) - 1)}},
    )
    assert ledger.exempt_reason_of_change("port_opened:i-0abc") is None
    assert ledger.exempt_reason_of_event("evt-never-seen") is None


def test_a_release_is_remembered_only_for_the_echo_window(world: World) -> None:
    ledger: IncidentLedger = world.ledger
    assert ledger.released_recently("i-0abc") is None
    ledger.remember_released("i-0abc", "ig-i-0abc-1")
    assert ledger.released_recently("i-0abc") == "ig-i-0abc-1"
    world.aws.dynamodb.update_item(
        TableName=world.settings.ledger_table,
        Key={"pk": {"S": "RELEASED#111122223333:us-east-1:i-0abc"}},
        UpdateExpression="SET expires_at = :past",
        ExpressionAttributeValues={":past": {"N": str(int(time.time()) - 1)}},
    )
    assert ledger.released_recently("i-0abc") is None
