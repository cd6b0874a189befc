"""The forwarding hop of organisation mode on the local AWS (issue 14): an account's default-bus rules put
what they match on the security account's organisation bus, whose policy admits the organisation's
accounts only (aws:PrincipalOrgID), as EventBridge does
(https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-event-bus-perms.html). moto evaluates no bus
policy and looked another account's bus up in the caller's own account (moto_fixes.py section m)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from immutable_guard.drill.organization_world import admin_session
from immutable_guard.local import LocalAws, LocalSession
from immutable_guard.local.forwarding import AccountBus

pytestmark = pytest.mark.slow

MANAGEMENT = "100000000042"  # this file's own organisation
OUTSIDER = "999900000042"
REGION = "eu-west-1"
BUS = "immutable-guard-organization"


class Forwarding:
    def __init__(self, local_aws: LocalAws) -> None:
        self.management = local_aws.account_session(MANAGEMENT, REGION)
        organizations = self.management.client("organizations")
        self.organization_id = organizations.create_organization(FeatureSet="ALL")["Organization"]["Id"]
        created = [
            organizations.create_account(Email=f"{n}-{uuid.uuid4().hex[:6]}@example.com", AccountName=n)[
                "CreateAccountStatus"
            ]["AccountId"]
            for n in ("security", "member")
        ]
        self.security, self.member = created
        self.security_admin = admin_session(self.management, self.security, REGION)
        self.member_admin = admin_session(self.management, self.member, REGION)
        self.outsider_admin = local_aws.account_session(OUTSIDER, REGION)
        events = self.security_admin.client("events")
        self.bus_arn = events.create_event_bus(Name=BUS)["EventBusArn"]
        # template.yaml's OrganizationEventBus policy
        events.put_permission(
            EventBusName=BUS,
            Policy=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Sid": "TheOrganizationForwardsItsEvents",
                            "Effect": "Allow",
                            "Principal": "*",
                            "Action": "events:PutEvents",
                            "Resource": self.bus_arn,
                            "Condition": {"StringEquals": {"aws:PrincipalOrgID": self.organization_id}},
                        }
                    ],
                }
            ),
        )

    def rule(self, admin: boto3.Session, name: str) -> str:
        """A forwarding rule of member-regional.yaml's shape on the account's default bus; its DLQ's URL."""
        sqs, events = admin.client("sqs"), admin.client("events")
        url = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        account = admin.client("sts").get_caller_identity()["Account"]
        events.put_rule(
            Name=name,
            EventPattern=json.dumps(
                {"source": [{"prefix": "aws."}], "detail": {"eventName": ["SendSSHPublicKey"]}}
            ),
            State="ENABLED",
        )
        events.put_targets(
            Rule=name,
            Targets=[
                {
                    "Id": "OrganizationBus",
                    "Arn": self.bus_arn,
                    "RoleArn": f"arn:aws:iam::{account}:role/ImmutableGuard-Member-EventForwarder",
                    "DeadLetterConfig": {"Arn": arn},
                }
            ],
        )
        return str(url)


@pytest.fixture
def forwarding(local_aws: LocalAws, local_session: LocalSession) -> Forwarding:
    return local_session.get("organization-forwarding", lambda: Forwarding(local_aws))


def _entry(bus_arn: str) -> dict[str, Any]:
    return {
        "Source": "aws.ec2-instance-connect",
        "DetailType": "AWS API Call via CloudTrail",
        "Detail": json.dumps({"eventName": "SendSSHPublicKey"}),
        "EventBusName": bus_arn,
    }


def _event(account: str, name: str = "SendSSHPublicKey") -> dict[str, Any]:
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "AWS API Call via CloudTrail",
        "source": "aws.ec2-instance-connect",
        "account": account,
        "time": "2026-11-29T12:00:00Z",
        "region": REGION,
        "resources": [],
        "detail": {"eventName": name, "recipientAccountId": account, "awsRegion": REGION},
    }


def test_the_organisation_bus_admits_its_accounts_and_refuses_any_other(forwarding: Forwarding) -> None:
    # When a member of the organisation puts an event on the security account's bus
    answer = forwarding.member_admin.client("events").put_events(Entries=[_entry(forwarding.bus_arn)])
    # Then it is admitted (moto looked the bus up in the member's own account: "does not exist")
    assert answer["FailedEntryCount"] == 0 and answer["Entries"][0]["EventId"]
    # But an account outside the organisation is refused by the bus policy
    with pytest.raises(ClientError) as refused:
        forwarding.outsider_admin.client("events").put_events(Entries=[_entry(forwarding.bus_arn)])
    assert refused.value.response["Error"]["Code"] == "AccessDeniedException"
    assert forwarding.bus_arn in refused.value.response["Error"]["Message"]


def test_an_accounts_own_rules_forward_to_the_bus_and_a_refusal_is_dead_lettered(
    forwarding: Forwarding,
) -> None:
    heard: list[dict[str, Any]] = []
    receivers = {forwarding.bus_arn: heard.append}
    forwarding.rule(forwarding.member_admin, "forward-ssh-member")
    parked_url = forwarding.rule(forwarding.outsider_admin, "forward-ssh-outsider")
    member = AccountBus(forwarding.member_admin, REGION, receivers)
    outsider = AccountBus(forwarding.outsider_admin, REGION, receivers)
    # When the member's CloudTrail reports a matching call: its rule forwards it, the bus admits it,
    # and the organisation bus's router hears it with the member's envelope
    event = _event(forwarding.member)
    outcome = member.put(event)
    assert outcome.rules == ["forward-ssh-member"] and outcome.delivered == [forwarding.bus_arn]
    assert heard == [event]
    # And a call no rule matches goes nowhere
    assert member.put(_event(forwarding.member, "DescribeInstances")).rules == []
    # When the outsider's rule forwards the same: refused, parked in its dead-letter queue, not heard
    refused = outsider.put(_event(OUTSIDER))
    assert refused.refused == [forwarding.bus_arn] and not refused.delivered and len(heard) == 1
    [parked] = forwarding.outsider_admin.client("sqs").receive_message(
        QueueUrl=parked_url, MessageAttributeNames=["All"]
    )["Messages"]
    attributes = {k: v["StringValue"] for k, v in parked["MessageAttributes"].items()}
    assert attributes["ERROR_CODE"] == "NO_PERMISSIONS" and attributes["TARGET_ARN"] == forwarding.bus_arn
    # When the member disables its rule, nothing is forwarded any more (the rules are read from its API)
    forwarding.member_admin.client("events").disable_rule(Name="forward-ssh-member")
    assert member.put(_event(forwarding.member)).rules == [] and len(heard) == 1
