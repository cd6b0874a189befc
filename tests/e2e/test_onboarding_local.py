"""Onboarding on the local AWS with several accounts (issue 14): an account AWS Organizations reports as
joined is registered and acts in dry-run; the Onboard function's schedule verifies every registered account
and region through its Reader role, from that account's own APIs (trail, Config recorder, the
member-regional rules, the member roles), marks it verified (it then acts in its mode), names each check
that fails, and sends back to dry-run, with one alert, a verified account that later fails.

Each member account gets what the StackSets would give it: organization/member-roles.yaml once and
organization/member-regional.yaml in each region, deployed by the local runtime into that account, and a
trail of its own. The Onboard handler runs in this process with the security account's function ARN, as
the steps of test_organization_local.py do."""

from __future__ import annotations

import importlib.util
import json
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest
from immutable_guard import organization_doctor
from immutable_guard.accounts import AccountRegistry, protection_of
from immutable_guard.clients import Clients
from immutable_guard.drill.world import drain_alerts
from immutable_guard.errors import AwsCallFailed
from immutable_guard.local import LocalAws, LocalSession, call_log, lambda_runner
from immutable_guard.local.runtime import HOME_ACCOUNT
from immutable_guard.members import FunctionPlace, MemberAccess
from immutable_guard.model import Mode
from immutable_guard.onboarding import READER_ROLE, VERIFY_PERMISSIONS, verify_accounts
from test_organization_local import (
    ORGANIZATION,
    PASS_MACHINE,
    Member,
    Organization,
    _golden_group,
    ssh_key_pushed,
)

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "events" / "organization"
HOME_REGION = "us-east-1"
REGIONS = ("eu-west-1", "us-east-1")
MANAGEMENT = "111122223333"  # the management account of the samples
NEW = "720000000001"  # joins by CreateAccountResult; watched in both regions
INVITED = "720000000002"  # joins by AcceptHandshake; watched in both regions
LATER_FAILS = "720000000003"  # watched, verified, then its trail is stopped
NO_TRAIL = "720000000004"  # no trail logs its events
RECORDER_STOPPED = "720000000005"  # its recorder in eu-west-1 is stopped
RULE_DISABLED = "720000000006"  # one forwarding rule in eu-west-1 is disabled
ROLE_MISSING = "720000000007"  # its ImmutableGuard-Member-Nuke role was deleted
NO_STACKS = "720000000008"  # the StackSets never reached it: no member role at all
WATCHED = (NEW, INVITED, LATER_FAILS)
BROKEN = (NO_TRAIL, RECORDER_STOPPED, RULE_DISABLED, ROLE_MISSING, NO_STACKS)
FUNCTION_ARN = f"arn:aws:lambda:{HOME_REGION}:{HOME_ACCOUNT}:function:immutable-guard-onboard"
HERE = FunctionPlace("aws", HOME_ACCOUNT, HOME_REGION)
# The handler's calls count as OnboardFunction's (the suite's call log, tests/security/observed_calls.json);
# those it makes through a member's Reader role are that role's (local/lambda_runner.py).
ONBOARD = "immutable-guard-onboard-local"
call_log.name_principal(ONBOARD, REPO / "template.yaml", "OnboardFunction")


@dataclass
class _Context:
    function_name: str = "immutable-guard-onboard"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = FUNCTION_ARN
    aws_request_id: str = "00000000-0000-0000-0000-000000000000"


@dataclass
class World:
    """The member accounts (built once); each test brings its own ledger, topic and alert subscriber."""

    home: Clients
    admins: dict[str, boto3.Session]
    org: Organization


def _watched_account(local_aws: LocalAws, account: str, trail: bool = True) -> boto3.Session:
    """An account as the StackSets leave it: the member roles once, the member-regional stack (forwarding
    rules, Config recorder) in every region, and a multi-region trail that is logging."""
    admin = local_aws.account_session(account, HOME_REGION)
    common = {"SecurityAccountId": HOME_ACCOUNT, "SecurityRegion": HOME_REGION}
    local_aws.deploy(
        {**common, "OrganizationId": ORGANIZATION},
        stack_name="immutable-guard-member-roles",
        template_path=REPO / "organization" / "member-roles.yaml",
        session=admin,
    )
    for region in REGIONS:
        local_aws.deploy(
            {**common, "CreateInventoryAssociation": "false"},
            stack_name="immutable-guard-member-regional",
            template_path=REPO / "organization" / "member-regional.yaml",
            session=boto3.Session(
                aws_access_key_id=admin.get_credentials().access_key,
                aws_secret_access_key=admin.get_credentials().secret_key,
                aws_session_token=admin.get_credentials().token,
                region_name=region,
            ),
        )
    if trail:
        s3 = admin.client("s3", region_name=HOME_REGION)
        bucket = f"trail-{account}-{uuid.uuid4().hex[:6]}"
        s3.create_bucket(Bucket=bucket)
        cloudtrail = admin.client("cloudtrail", region_name=HOME_REGION)
        cloudtrail.create_trail(Name="organization-audit", S3BucketName=bucket, IsMultiRegionTrail=True)
        cloudtrail.start_logging(Name="organization-audit")
    return admin


def _build(local_aws: LocalAws) -> World:
    home = local_aws.clients()
    admins = {account: _watched_account(local_aws, account) for account in (*WATCHED, *BROKEN[:-1])}
    admins[NO_STACKS] = local_aws.account_session(NO_STACKS, HOME_REGION)
    # Break each of its own kind
    trail_of = admins[NO_TRAIL].client("cloudtrail", region_name=HOME_REGION)
    trail_of.delete_trail(Name="organization-audit")
    config = admins[RECORDER_STOPPED].client("config", region_name="eu-west-1")
    (recorder,) = config.describe_configuration_recorders()["ConfigurationRecorders"]
    config.stop_configuration_recorder(ConfigurationRecorderName=recorder["name"])
    events = admins[RULE_DISABLED].client("events", region_name="eu-west-1")
    first = sorted(r["Name"] for r in events.list_rules()["Rules"])[0]
    events.disable_rule(Name=first)
    iam = admins[ROLE_MISSING].client("iam")
    for name in iam.list_role_policies(RoleName="ImmutableGuard-Member-Nuke")["PolicyNames"]:
        iam.delete_role_policy(RoleName="ImmutableGuard-Member-Nuke", PolicyName=name)
    iam.delete_role(RoleName="ImmutableGuard-Member-Nuke")
    # A server of the immutable fleet in the new account, for an attack there
    member = Member(NEW, "eu-west-1", Clients(_in(admins[NEW], "eu-west-1"), region_name="eu-west-1"))
    _golden_group(member)
    machine = home.stepfunctions.create_state_machine(
        name=f"onboard-remediation-{uuid.uuid4().hex[:8]}",
        definition=PASS_MACHINE,
        roleArn=f"arn:aws:iam::{HOME_ACCOUNT}:role/sfn",
    )["stateMachineArn"]
    org = Organization(
        home=home,
        ledger_table="",
        topic_arn="",
        dead_letter_url=home.sqs.create_queue(QueueName=f"onboard-dlq-{uuid.uuid4().hex[:8]}")["QueueUrl"],
        bucket="",
        machine_arn=machine,
        members={NEW: member},
    )
    return World(home, admins, org)


def _in(session: boto3.Session, region: str) -> boto3.Session:
    credentials = session.get_credentials()
    return boto3.Session(
        aws_access_key_id=credentials.access_key,
        aws_secret_access_key=credentials.secret_key,
        aws_session_token=credentials.token,
        region_name=region,
    )


@dataclass
class Onboarding:
    world: World
    org: Organization
    registry: AccountRegistry
    subscriber: str
    module: ModuleType

    def invoke(self, event: Any) -> dict[str, Any]:
        self.module.dependencies.cache_clear()
        with lambda_runner.acting_as(ONBOARD):
            result: dict[str, Any] = self.module.handler(event, _Context())
        return result

    def schedule(self) -> dict[str, Any]:
        return self.invoke(json.loads((SAMPLES / "scheduled-verify-accounts.json").read_text("utf-8")))

    def alerts(self) -> list[dict[str, Any]]:
        return drain_alerts(self.org.home.sqs, self.subscriber)


@pytest.fixture
def onboarding(
    local_aws: LocalAws, local_session: LocalSession, monkeypatch: pytest.MonkeyPatch
) -> Onboarding:
    """The shared member accounts, with a ledger, an alert topic and a subscriber of this test's own, and
    the Onboard handler with its function's environment (the stack's Mode: enforce)."""
    world = local_session.get("onboarding", lambda: _build(local_aws))
    home = world.home
    suffix = uuid.uuid4().hex[:8]
    table = f"onboard-ledger-{suffix}"
    home.dynamodb.create_table(
        TableName=table,
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    # Encrypted with a key of its own, as the stack's AlertTopic is (AlertKey)
    key = home.session.client("kms", region_name=HOME_REGION).create_key()["KeyMetadata"]["Arn"]
    topic = home.sns.create_topic(Name=f"onboard-alerts-{suffix}", Attributes={"KmsMasterKeyId": key})[
        "TopicArn"
    ]
    subscriber = home.sqs.create_queue(QueueName=f"onboard-subscriber-{suffix}")["QueueUrl"]
    queue_arn = home.sqs.get_queue_attributes(QueueUrl=subscriber, AttributeNames=["QueueArn"])
    home.sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn["Attributes"]["QueueArn"])
    environment = {
        "LEDGER_TABLE": table,
        "ALERT_TOPIC_ARN": topic,
        "ORGANIZATION_ID": ORGANIZATION,
        "MEMBER_ROLE_NAME": READER_ROLE,
        "MODE": "enforce",
        "VERIFY_REGIONS": ",".join(REGIONS),
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    spec = importlib.util.spec_from_file_location(
        f"onboard_{suffix}", REPO / "functions" / "onboard" / "app.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    org = replace(world.org, ledger_table=table, topic_arn=topic)
    return Onboarding(world, org, AccountRegistry(home.dynamodb, table), subscriber, module)


def created(account: str) -> dict[str, Any]:
    """events/organization/create-account-result.json, the management account reporting ``account``."""
    event = json.loads((SAMPLES / "create-account-result.json").read_text("utf-8"))
    event["detail"]["serviceEventDetails"]["createAccountStatus"]["accountId"] = account
    return dict(event)


def invited(account: str) -> dict[str, Any]:
    """events/organization/accept-handshake.json, made by ``account`` (forwarded from its us-east-1)."""
    text = (SAMPLES / "accept-handshake.json").read_text("utf-8").replace("222233334444", account)
    return dict(json.loads(text))


def _mode_of_an_attack(onboarding: Onboarding, server: int) -> str:
    """The mode the incident of an attack on the new account's ``server`` (0 or 1) is opened in."""
    member = onboarding.org.members[NEW]
    result = onboarding.org.detect(ssh_key_pushed(NEW, "eu-west-1", member.instances[server]))
    [opened] = result["instances"]
    return str(opened["mode"])


# ---------------------------------------------------------------------------------------- scenarios
def test_a_created_account_acts_in_dry_run_until_verified_then_in_the_stacks_mode(
    onboarding: Onboarding,
) -> None:
    # When the management account reports a new account
    result = onboarding.invoke(created(NEW))
    # Then it is registered, unverified, with the stack's mode, and the team is told
    assert result["registered"] == [NEW]
    member = onboarding.registry.get(NEW)
    assert member is not None and (member.mode, member.verified) == (Mode.ENFORCE, False)
    [alert] = onboarding.alerts()
    assert (alert["stage"], alert["account"], alert["mode"]) == ("account_joined", NEW, "dry-run")
    # And an attack there is handled in dry-run
    assert _mode_of_an_attack(onboarding, 0) == "dry-run"
    # When the schedule verifies it (only NEW is registered in this test's ledger)
    verified = onboarding.schedule()
    # Then every region passed, it is verified, and an attack there is remediated (enforce)
    assert verified["failing"] == {}, verified["failing"]
    assert verified["newly_verified"] == [NEW] and verified["verified"] == [NEW]
    assert {(r["account"], r["region"], r["ok"]) for r in verified["rows"]} == {
        (NEW, region, True) for region in REGIONS
    }
    assert onboarding.registry.get(NEW).verified  # type: ignore[union-attr]
    assert _mode_of_an_attack(onboarding, 1) == "enforce"


def test_an_invited_account_is_registered_from_its_own_accept_handshake(onboarding: Onboarding) -> None:
    result = onboarding.invoke(invited(INVITED))
    assert result["registered"] == [INVITED]
    protection = protection_of(INVITED, HOME_ACCOUNT, Mode.ENFORCE, onboarding.registry)
    assert protection is not None and protection.mode is Mode.DRY_RUN


def test_a_repeated_join_event_does_not_reset_a_verified_account(onboarding: Onboarding) -> None:
    # Given an account that joined and was verified
    onboarding.invoke(created(NEW))
    onboarding.schedule()
    before = onboarding.registry.get(NEW)
    assert before is not None and before.verified
    onboarding.alerts()
    # When the same event is delivered again (EventBridge retries), and its handshake too
    again = onboarding.invoke(created(NEW))
    handshake = onboarding.invoke(invited(NEW))
    # Then nothing is registered again, the account stays verified in its mode, and nobody is told twice
    assert again["registered"] == [] and again["already_registered"] == [NEW]
    assert handshake["already_registered"] == [NEW]
    assert onboarding.registry.get(NEW) == before
    assert onboarding.alerts() == []


def test_a_join_whose_alert_failed_alerts_on_the_retry_and_registers_once(
    onboarding: Onboarding, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the alert topic refusing the first publish
    publish = onboarding.module.publish_alert
    failures = iter([True])

    def flaky(sns: Any, topic: str, alert: Any) -> str:
        if next(failures, False):
            raise AwsCallFailed("alert topic: throttled")
        return str(publish(sns, topic, alert))

    monkeypatch.setattr(onboarding.module, "publish_alert", flaky)
    # When the join is delivered, fails, and is delivered again (EventBridge retries a failed invocation)
    with pytest.raises(AwsCallFailed):
        onboarding.invoke(created(NEW))
    retried = onboarding.invoke(created(NEW))
    # Then the account is registered once, and the team told once
    assert retried["already_registered"] == [NEW]
    assert [a["stage"] for a in onboarding.alerts()] == ["account_joined"]
    assert onboarding.registry.get(NEW).joined_alert_at is not None  # type: ignore[union-attr]
    assert onboarding.invoke(created(NEW))["already_registered"] == [NEW]
    assert onboarding.alerts() == []


def test_a_failed_creation_registers_nothing(onboarding: Onboarding) -> None:
    event = json.loads((SAMPLES / "create-account-failed.json").read_text("utf-8"))
    assert onboarding.invoke(event)["registered"] == []
    assert onboarding.registry.list() == []


EXPECTED_FAILURES = {
    NO_TRAIL: {(region, "trail", "no trail logs the write management events") for region in REGIONS},
    RECORDER_STOPPED: {("eu-west-1", "recorder", "is STOPPED")},
    RULE_DISABLED: {("eu-west-1", "rules", "DISABLED: immutable-guard-member-regional-Forward")},
    ROLE_MISSING: {(region, "roles", "ImmutableGuard-Member-Nuke missing") for region in REGIONS},
    NO_STACKS: {(region, "reader", "cannot assume") for region in REGIONS},
}


def test_each_failing_check_is_named_and_only_that_one(onboarding: Onboarding) -> None:
    # When the accounts are verified through their Reader roles
    access = MemberAccess(onboarding.org.home, READER_ROLE)
    verification = verify_accounts(access, HERE, [*BROKEN, NEW], REGIONS)
    # Then each failure names the region, the check and why; the other checks of those rows pass
    for account, expected in EXPECTED_FAILURES.items():
        failing = {
            (row.region, check.name, check.reason)
            for row in verification.rows
            if row.account == account
            for check in row.checks
            if not check.ok
        }
        found = {(region, name) for region, name, _ in failing}
        if account == NO_STACKS:  # nothing can be checked without the Reader role
            assert {name for _, name in found} == {"reader", "trail", "recorder", "rules", "roles"}
        else:
            assert found == {(region, name) for region, name, _ in expected}, (account, failing)
        for region, name, words in expected:
            assert any(r == region and n == name and words in why for r, n, why in failing), (
                account,
                failing,
            )
    assert set(verification.failing()) == set(BROKEN)
    assert verification.passing() == [NEW]


def test_broken_accounts_are_not_verified_and_the_schedule_says_why(onboarding: Onboarding) -> None:
    for account in BROKEN:
        onboarding.registry.add(account, Mode.ENFORCE)
    result = onboarding.schedule()
    assert set(result["failing"]) == set(BROKEN) and result["verified"] == []
    assert any("trail" in reason for reason in result["failing"][NO_TRAIL])
    assert all(not m.verified for m in onboarding.registry.list())


def test_a_verified_account_that_fails_goes_back_to_dry_run_with_one_alert(onboarding: Onboarding) -> None:
    # Given a verified account in enforce
    onboarding.registry.add(LATER_FAILS, Mode.ENFORCE)
    assert onboarding.schedule()["newly_verified"] == [LATER_FAILS]
    cloudtrail = onboarding.world.admins[LATER_FAILS].client("cloudtrail", region_name=HOME_REGION)
    # When its trail is stopped
    cloudtrail.stop_logging(Name="organization-audit")
    try:
        result = onboarding.schedule()
        again = onboarding.schedule()
        # Then it is back in dry-run, and the team is told once, with the reason
        assert result["unverified"] == [LATER_FAILS] and again["unverified"] == []
        member = onboarding.registry.get(LATER_FAILS)
        assert member is not None and not member.verified and member.mode is Mode.ENFORCE
        [alert] = [a for a in onboarding.alerts() if a["stage"] == "account_unverified"]
        assert alert["account"] == LATER_FAILS and "STOPPED" in alert["summary"]
        protection = protection_of(LATER_FAILS, HOME_ACCOUNT, Mode.ENFORCE, onboarding.registry)
        assert protection is not None and protection.mode is Mode.DRY_RUN
    finally:
        cloudtrail.start_logging(Name="organization-audit")
    # And once it passes again, it is verified again
    assert onboarding.schedule()["newly_verified"] == [LATER_FAILS]


@pytest.mark.parametrize(
    "event",
    [
        {"source": "aws.organizations", "account": MANAGEMENT},
        {**created(NEW), "account": "999988887777"},
        {"version": "0", "detail-type": "Something Else", "source": "aws.ec2"},
        ["not", "an", "event"],
    ],
    ids=["no_detail", "account_mismatch", "unexpected_event", "garbage"],
)
def test_a_malformed_event_is_counted_not_crashed_on(
    onboarding: Onboarding, event: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    result = onboarding.invoke(event)
    assert result["rejected"] and result["registered"] == []
    assert onboarding.registry.list() == []
    # The metric is in the function's embedded-metric output
    assert '"OnboardEventsRejected"' in capsys.readouterr().out


def test_doctor_organization_prints_one_row_per_account_region_and_fails_on_any(
    onboarding: Onboarding,
) -> None:
    for account in (NEW, NO_TRAIL):
        onboarding.registry.add(account, Mode.ENFORCE)
    text, code = organization_doctor.run(onboarding.invoke, list(REGIONS), mark_verified=False, as_json=False)
    rows = [
        line.split() for line in text.splitlines() if line.startswith("  PASS") or line.startswith("  FAIL")
    ]
    assert {(r[0], r[1], r[2]) for r in rows} == {
        ("PASS", NEW, "eu-west-1"),
        ("PASS", NEW, "us-east-1"),
        ("FAIL", NO_TRAIL, "eu-west-1"),
        ("FAIL", NO_TRAIL, "us-east-1"),
    }
    assert "trail: no trail logs" in text and code == 1
    # Without --mark-verified nothing changed
    assert not any(m.verified for m in onboarding.registry.list())
    # With it, the passing account is marked; JSON gives the same rows
    report, code = organization_doctor.run(onboarding.invoke, list(REGIONS), mark_verified=True, as_json=True)
    assert code == 1 and json.loads(report)["newly_verified"] == [NEW]
    assert onboarding.registry.get(NEW).verified  # type: ignore[union-attr]


def test_doctor_organization_passes_when_every_account_region_passes(onboarding: Onboarding) -> None:
    onboarding.registry.add(NEW, Mode.ENFORCE)
    text, code = organization_doctor.run(onboarding.invoke, None, mark_verified=False, as_json=False)
    assert code == 0 and "0 account-region(s) failed, 2 passed" in text


def test_the_reader_role_is_asked_exactly_what_member_roles_yaml_grants_it_for_onboarding(
    onboarding: Onboarding,
) -> None:
    # Given the calls the Onboard handler makes through the Reader role of a member account
    heard: set[str] = set()

    def listen(principal: str, model: Any, params: dict[str, Any]) -> None:
        if principal == f"{ONBOARD}@{READER_ROLE}":
            heard.update(call_log.iam_actions(model.service_model.signing_name, model.name, params))

    onboarding.registry.add(NEW, Mode.ENFORCE)
    stop = lambda_runner.listen_to_calls(listen)
    try:
        # When it verifies the account
        assert onboarding.schedule()["newly_verified"] == [NEW]
    finally:
        stop()
    # Then the Reader role was asked exactly the describe calls its Onboarding statements grant
    assert heard == VERIFY_PERMISSIONS
