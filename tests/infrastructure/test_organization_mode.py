"""template.yaml in organisation mode deploys on the local AWS as AWS would create it: the organisation bus
with its policy, Detect's rules on that bus and not on the default one, and the local router delivering
only what is put on a rule's own bus (docs/organization.md)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from immutable_guard.local.deploy import Deployer, Deployment
from immutable_guard.local.router import EventRouter
from immutable_guard.patterns import matches
from moto import mock_aws

REPO = Path(__file__).resolve().parents[2]
EVENT = REPO / "events" / "cloudtrail-authorize-sg-ingress-ssh-world.json"
ORGANIZATION = "o-exampleorg1"
BUS = "immutable-guard-organization"


@pytest.fixture(scope="module")
def aws() -> Iterator[boto3.Session]:
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
            patch.setenv(name, value)
        patch.delenv("AWS_ENDPOINT_URL", raising=False)
        with mock_aws():
            yield boto3.Session(region_name="us-east-1")


@pytest.fixture(scope="module")
def security_account(aws: boto3.Session) -> Deployment:
    return Deployer(aws, REPO / "template.yaml").deploy({"OrganizationId": ORGANIZATION})


def test_the_organisation_bus_admits_the_organisation(
    aws: boto3.Session, security_account: Deployment
) -> None:
    bus = aws.client("events").describe_event_bus(Name=BUS)
    (statement,) = json.loads(bus["Policy"])["Statement"]
    assert statement["Action"] == "events:PutEvents"
    assert statement["Condition"] == {"StringEquals": {"aws:PrincipalOrgID": ORGANIZATION}}
    assert security_account.outputs["OrganizationEventBusArn"] == bus["Arn"]


def test_detects_rules_are_on_the_organisation_bus_and_not_on_the_default_one(
    aws: boto3.Session, security_account: Deployment
) -> None:
    events = aws.client("events")
    detect_rules = {
        security_account.physical_ids[logical_id]
        for logical_id, kind in security_account.resource_types.items()
        if kind == "AWS::Events::Rule" and logical_id.startswith("DetectFunction")
    }
    on_the_bus = {rule["Name"] for rule in events.list_rules(EventBusName=BUS)["Rules"]}
    on_default = {rule["Name"] for rule in events.list_rules()["Rules"]}
    assert len(detect_rules) == 20
    assert detect_rules <= on_the_bus and not detect_rules & on_default


def test_the_router_delivers_to_detect_only_what_is_put_on_the_organisation_bus(
    aws: boto3.Session, security_account: Deployment
) -> None:
    # Given the router of the security account's deployment and a detection sample
    router = EventRouter(security_account, aws)
    event = json.loads(EVENT.read_text())
    detect = [rule for rule in router.rules if rule.function_logical_id == "DetectFunction"]
    # Then Detect's rules listen on the organisation bus, and one of them matches the sample
    assert {router.buses[rule.logical_id] for rule in detect} == {BUS}
    assert [rule.logical_id for rule in detect if matches(rule.pattern, router.envelope(event))] == [
        "DetectFunctionNetworkOpened"
    ]
    # When the event is put on the default bus, Detect hears nothing (the member-regional rules forward it)
    assert router.put(event) == []
    assert router.delivered == []
