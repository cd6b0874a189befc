"""Blast radius across an organisation on the local AWS with several accounts (issue 14): Detect judges each
member's change through that account's reader role, and the breakers decide what is remediated:
- the organisation storm: changes in OrgStormAccounts accounts within OrgStormWindowMinutes switch the
  organisation to notify-only with one alert; nothing more is started, every server stays as it is in its
  own account; changes spread over more than the window (the benign twin) trip nothing;
- the per-account and per-account-region caps stop the next remediation there, not in another account or
  region.

The organisation (accounts, member roles, servers) is built once; each test gets a ledger of its own, so
the hourly counters and the storm of one test do not reach another. The storm's window is minutes long: the
ledger's clock is moved instead of waiting (only the ledger's; the local AWS keeps real time)."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, replace
from types import SimpleNamespace
from typing import Any

import pytest
from immutable_guard import ledger as ledger_module
from immutable_guard.accounts import AccountRegistry
from immutable_guard.clients import Clients
from immutable_guard.drill.world import drain_alerts
from immutable_guard.local import LocalAws, LocalSession
from immutable_guard.local.runtime import HOME_ACCOUNT
from immutable_guard.model import Mode
from test_organization_local import (
    PASS_MACHINE,
    Member,
    Organization,
    _instance,
    _member_roles,
    ssh_key_pushed,
)

pytestmark = pytest.mark.slow

# Accounts of their own: the other organisation tests share the local AWS and own 222233334444 and others.
MEMBERS = ("610000000001", "610000000002", "610000000003", "610000000004")
REGIONS = ("eu-west-1", "eu-central-1")
STORM = {"org_storm_accounts": 3, "org_storm_window_minutes": 10}


@dataclass
class Breakers:
    org: Organization
    subscriber: str

    def detect(self, account: str, region: str, instance_id: str, **overrides: Any) -> dict[str, Any]:
        return self.org.detect(ssh_key_pushed(account, region, instance_id), **overrides)

    def server(self, account: str, region: str, n: int) -> str:
        return self.org.members[f"{account}:{region}"].instances[n]

    def alerts(self) -> list[dict[str, Any]]:
        return drain_alerts(self.org.home.sqs, self.subscriber)

    def started(self) -> list[dict[str, Any]]:
        """The remediation inputs started, each naming its account and region."""
        sfn = self.org.home.stepfunctions
        executions = sfn.list_executions(stateMachineArn=self.org.machine_arn)["executions"]
        return [
            json.loads(sfn.describe_execution(executionArn=e["executionArn"])["input"]) for e in executions
        ]

    def running(self, account: str, region: str, instance_id: str) -> bool:
        """Read from the member account's own EC2 API: untouched (running, its own groups)."""
        instance = _instance(self.org.members[f"{account}:{region}"], instance_id)
        groups = {g["GroupName"] for g in instance["SecurityGroups"]}
        return instance["State"]["Name"] == "running" and "immutable-guard-isolation" not in groups


def _servers(member: Member, count: int = 4) -> None:
    ec2 = member.clients.ec2
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    reservation = ec2.run_instances(
        ImageId=image,
        MinCount=count,
        MaxCount=count,
        InstanceType="t3.micro",
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "immutable", "Value": "true"}]}],
    )
    member.instances = [i["InstanceId"] for i in reservation["Instances"]]


def _build(local_aws: LocalAws) -> Organization:
    home = local_aws.clients()
    suffix = uuid.uuid4().hex[:8]
    machine = home.stepfunctions.create_state_machine(
        name=f"breakers-remediation-{suffix}",
        definition=PASS_MACHINE,
        roleArn=f"arn:aws:iam::{HOME_ACCOUNT}:role/sfn",
    )["stateMachineArn"]
    members: dict[str, Member] = {}
    for account in MEMBERS:
        _member_roles(local_aws.account_session(account, REGIONS[0]))
        for region in REGIONS:
            member = Member(
                account, region, Clients(local_aws.account_session(account, region), region_name=region)
            )
            _servers(member)
            members[f"{account}:{region}"] = member
    return Organization(
        home=home,
        ledger_table="",
        topic_arn=home.sns.create_topic(Name=f"breakers-alerts-{suffix}")["TopicArn"],
        dead_letter_url=home.sqs.create_queue(QueueName=f"breakers-dlq-{suffix}")["QueueUrl"],
        bucket="",
        machine_arn=machine,
        members=members,
    )


@pytest.fixture
def breakers(local_aws: LocalAws, local_session: LocalSession) -> Breakers:
    """The shared organisation with a ledger, a state machine and an alert subscriber of this test's own;
    every member registered, verified and in enforce."""
    org = local_session.get("organization-breakers", lambda: _build(local_aws))
    home = org.home
    suffix = uuid.uuid4().hex[:8]
    table = f"breakers-ledger-{suffix}"
    home.dynamodb.create_table(
        TableName=table,
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    registry = AccountRegistry(home.dynamodb, table)
    for account in MEMBERS:
        registry.add(account, Mode.ENFORCE)
        registry.mark_verified(account)
    machine = home.stepfunctions.create_state_machine(
        name=f"breakers-remediation-{suffix}",
        definition=PASS_MACHINE,
        roleArn=f"arn:aws:iam::{HOME_ACCOUNT}:role/sfn",
    )["stateMachineArn"]
    topic = home.sns.create_topic(Name=f"breakers-alerts-{suffix}")["TopicArn"]
    subscriber = home.sqs.create_queue(QueueName=f"breakers-subscriber-{suffix}")["QueueUrl"]
    queue_arn = home.sqs.get_queue_attributes(QueueUrl=subscriber, AttributeNames=["QueueArn"])
    home.sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn["Attributes"]["QueueArn"])
    return Breakers(replace(org, ledger_table=table, machine_arn=machine, topic_arn=topic), subscriber)


class LedgerClock:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import time

        self.now = time.time()
        monkeypatch.setattr(ledger_module, "time", SimpleNamespace(time=lambda: self.now))

    def advance(self, minutes: float) -> None:
        self.now += minutes * 60


def _mode(result: dict[str, Any]) -> str:
    [outcome] = result["instances"]
    return str(outcome["mode"])


def test_changes_in_k_accounts_within_minutes_switch_the_organisation_to_notify_only_once(
    breakers: Breakers,
) -> None:
    region = REGIONS[0]
    first, second, third, fourth = MEMBERS
    # Given a change in each of two accounts: each is remediated in its own account
    for account in (first, second):
        assert (
            _mode(breakers.detect(account, region, breakers.server(account, region, 0), **STORM)) == "enforce"
        )
    # When a third account has one within the window
    result = breakers.detect(third, region, breakers.server(third, region, 0), **STORM)
    # Then it is alerted, not remediated, and the organisation is notify-only
    assert _mode(result) == "notify-only" and result["breakers"] == ["organization_storm"]
    # And every later change, in an account already seen or a new one, is alerted only
    for account, n in ((first, 1), (fourth, 0), (second, 1)):
        assert (
            _mode(breakers.detect(account, region, breakers.server(account, region, n), **STORM))
            == "notify-only"
        )
    # And exactly one critical alert said so, naming the accounts
    storms = [a for a in breakers.alerts() if a["stage"] == "breaker_open"]
    assert [(a["severity"], a["details"]["breaker"], a["details"]["accounts"]) for a in storms] == [
        ("critical", "organization_storm", [first, second, third])
    ]
    # And only the first two were started, each in its own account and region
    assert sorted((s["account"], s["region"]) for s in breakers.started()) == [
        (first, region),
        (second, region),
    ]
    # And the member accounts' own EC2 APIs show the others untouched
    for account, n in ((third, 0), (first, 1), (fourth, 0), (second, 1)):
        assert breakers.running(account, region, breakers.server(account, region, n))
    # When a person clears the storm (`immutable-guard accounts storm clear`), remediation resumes
    assert breakers.org.ledger.clear_storm() is not None
    assert _mode(breakers.detect(fourth, region, breakers.server(fourth, region, 1), **STORM)) == "enforce"


def test_changes_spread_over_more_than_the_window_trip_nothing(
    breakers: Breakers, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = LedgerClock(monkeypatch)
    region = REGIONS[1]
    # Given one account changed every six minutes: never three within ten
    modes = []
    for account in MEMBERS:
        modes.append(_mode(breakers.detect(account, region, breakers.server(account, region, 0), **STORM)))
        clock.advance(6)
    # Then every one is remediated, and no breaker spoke
    assert modes == ["enforce"] * len(MEMBERS)
    assert len(breakers.started()) == len(MEMBERS)
    assert [a for a in breakers.alerts() if a["stage"] == "breaker_open"] == []
    assert breakers.org.ledger.storm() is None


def test_the_account_and_account_region_caps_stop_only_their_own(breakers: Breakers) -> None:
    caps = {"max_incidents_per_account_hour": 3, "max_incidents_per_account_region_hour": 2, **STORM}
    account, other = MEMBERS[0], MEMBERS[1]
    west, central = REGIONS

    def change(acct: str, region: str, n: int) -> str:
        return _mode(breakers.detect(acct, region, breakers.server(acct, region, n), **caps))

    # Given two remediations in the account's first region (its account-region cap)
    assert [change(account, west, n) for n in (0, 1)] == ["enforce", "enforce"]
    # Then the next one there is alerted only
    assert change(account, west, 2) == "notify-only"
    # But the same account in another region is remediated (its third: the account's cap)
    assert change(account, central, 0) == "enforce"
    # And then the account is full, even in a region with room
    assert change(account, central, 1) == "notify-only"
    # While another account, in the same regions, is remediated
    assert [change(other, west, 0), change(other, central, 0)] == ["enforce", "enforce"]
    # And each full cap alerted once, naming where
    said = sorted(
        (a["details"]["breaker"], a["details"]["scope"])
        for a in breakers.alerts()
        if a["stage"] == "breaker_open"
    )
    assert said == [("account", account), ("account_region", f"{account}:{west}")]
    # And the servers the caps held back are untouched in the member's own EC2 API
    assert breakers.running(account, west, breakers.server(account, west, 2))
    assert breakers.running(account, central, breakers.server(account, central, 1))
    assert len(breakers.started()) == 5
