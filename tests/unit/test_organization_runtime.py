"""Organisation mode's parts on moto (issue 14): its settings, the account registry and its CLI, the member
clients (session names, credentials kept and renewed, the regional STS endpoint), where a record says a
change happened, and Detect's refusals, counted by reason. The multi-account runs are in
tests/e2e/test_organization_local.py."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from aws_lambda_powertools import Metrics
from botocore.stub import Stubber
from immutable_guard.accounts import AccountRegistry, protection_of
from immutable_guard.cli import main
from immutable_guard.clients import Clients
from immutable_guard.detection.events import origin_mismatch, parse_event
from immutable_guard.detection.normalise import normalise
from immutable_guard.errors import (
    AccountAlreadyRegistered,
    AccountNotRegistered,
    InvalidEvent,
    MemberRoleUnavailable,
    SettingsError,
)
from immutable_guard.ledger import Incident, IncidentLedger, now_iso
from immutable_guard.members import FunctionPlace, MemberAccess, regional_sts, session_name
from immutable_guard.model import Mode
from immutable_guard.pipeline import process_event
from immutable_guard.remediation.nuke import NukeRequest
from immutable_guard.settings import DetectSettings, NukeSettings
from immutable_guard.step_input import checked_place

EVENTS = Path(__file__).resolve().parents[2] / "events"
HOME = "123456789012"  # moto's account: the security account here
MEMBER = "222233334444"
HERE = FunctionPlace("aws", HOME, "us-east-1")
STEP_ENV = {"LEDGER_TABLE": "t", "ALERT_TOPIC_ARN": "arn:aws:sns:us-east-1:123456789012:a"}


def _event(name: str, account: str, region: str = "us-east-1") -> dict[str, Any]:
    """A sample event as another account and region report it (record and envelope alike)."""
    text = (EVENTS / name).read_text("utf-8").replace("111122223333", account)
    event: dict[str, Any] = json.loads(text.replace('"us-east-1"', f'"{region}"'))
    return event


# ---------------------------------------------------------------------- settings


def test_without_an_organization_id_the_functions_run_in_single_account_mode() -> None:
    settings = NukeSettings.from_env({**STEP_ENV, "POST_EVIDENCE_ACTION": "terminate", "ORGANIZATION_ID": ""})
    assert not settings.organization_mode and settings.member_role_name is None


def test_organisation_mode_needs_a_member_role_and_a_well_formed_id() -> None:
    base = {**STEP_ENV, "POST_EVIDENCE_ACTION": "terminate"}
    with pytest.raises(SettingsError, match="MEMBER_ROLE_NAME: required"):
        NukeSettings.from_env({**base, "ORGANIZATION_ID": "o-exampleorg01"})
    with pytest.raises(SettingsError, match="ORGANIZATION_ID"):
        NukeSettings.from_env({**base, "ORGANIZATION_ID": "123456789012", "MEMBER_ROLE_NAME": "R"})
    settings = NukeSettings.from_env(
        {**base, "ORGANIZATION_ID": "o-exampleorg01", "MEMBER_ROLE_NAME": "ImmutableGuard-Member-Nuke"}
    )
    assert settings.organization_mode and settings.member_external_id is None


# ---------------------------------------------------------------------- the account registry


def test_an_added_account_acts_in_dry_run_until_verified(ledger: IncidentLedger, aws: Clients) -> None:
    registry = AccountRegistry(aws.dynamodb, "immutable-guard-ledger")
    # Given an account added in enforce
    added = registry.add(MEMBER, Mode.ENFORCE, ou="ou-exam-prod")
    assert (added.mode, added.effective_mode, added.verified_at) == (Mode.ENFORCE, Mode.DRY_RUN, None)
    protection = protection_of(MEMBER, HOME, Mode.ENFORCE, registry)
    assert protection is not None and protection.mode is Mode.DRY_RUN and "not verified" in protection.why
    # When it is verified
    registry.mark_verified(MEMBER)
    # Then it acts in its own mode, and a change of mode takes effect
    assert protection_of(MEMBER, HOME, Mode.DRY_RUN, registry).mode is Mode.ENFORCE  # type: ignore[union-attr]
    registry.set_mode(MEMBER, Mode.NOTIFY_ONLY)
    assert protection_of(MEMBER, HOME, Mode.ENFORCE, registry).mode is Mode.NOTIFY_ONLY  # type: ignore[union-attr]
    # And the security account needs no item; any other unregistered account is not protected
    assert protection_of(HOME, HOME, Mode.ENFORCE, registry).mode is Mode.ENFORCE  # type: ignore[union-attr]
    assert protection_of("999988887777", HOME, Mode.ENFORCE, registry) is None
    assert [a.account_id for a in registry.list()] == [MEMBER]


def test_the_registry_refuses_duplicates_unknown_accounts_and_malformed_ids(
    ledger: IncidentLedger, aws: Clients
) -> None:
    registry = AccountRegistry(aws.dynamodb, "immutable-guard-ledger")
    registry.add(MEMBER)
    with pytest.raises(AccountAlreadyRegistered):
        registry.add(MEMBER, Mode.ENFORCE)
    with pytest.raises(AccountNotRegistered, match="accounts add"):
        registry.mark_verified("999988887777")
    with pytest.raises(ValueError, match="12 digits"):
        registry.add("1234")


def test_the_accounts_command_adds_lists_sets_the_mode_and_verifies(
    deployed_ledger: IncidentLedger, capsys: pytest.CaptureFixture[str]
) -> None:
    stack_args = ["--stack", "immutable-guard", "--region", "us-east-1", "--json"]
    assert main(["accounts", "add", MEMBER, "--mode", "enforce", "--ou", "ou-exam-prod", *stack_args]) == 0
    [added] = json.loads(capsys.readouterr().out)
    assert (added["mode"], added["effective_mode"], added["ou"]) == ("enforce", "dry-run", "ou-exam-prod")
    assert main(["accounts", "verify", MEMBER, *stack_args]) == 0
    assert json.loads(capsys.readouterr().out)[0]["effective_mode"] == "enforce"
    assert main(["accounts", "set-mode", MEMBER, "--mode", "notify-only", *stack_args]) == 0
    capsys.readouterr()
    assert main(["accounts", "list", *stack_args]) == 0
    [listed] = json.loads(capsys.readouterr().out)
    assert (listed["account_id"], listed["effective_mode"]) == (MEMBER, "notify-only")
    # A mistake is one line, not a traceback
    assert main(["accounts", "verify", "999988887777", *stack_args]) == 1
    assert "is not registered" in capsys.readouterr().err
    assert main(["accounts", "add", "42", *stack_args]) == 2


def test_accounts_help_says_verify_only_records_a_persons_check(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["accounts", "verify", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "only records that a person verified it" in text and "doctor --organization" in text


# ---------------------------------------------------------------------- member clients


def test_a_session_name_is_what_sts_accepts() -> None:
    # RoleSessionName: 2-64 of [\w+=,.@-] (https://docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRole.html)
    assert session_name("ig-i-0abc1234def567890-5f2c9a1b7d3e") == "ig-i-0abc1234def567890-5f2c9a1b7d3e"
    assert session_name("a b/c") == "a-b-c"
    assert session_name("x") == "x-"
    long_a, long_b = "ig-" + "a" * 80, "ig-" + "a" * 79 + "b"
    assert len(session_name(long_a)) == 64 and session_name(long_a) != session_name(long_b)


class _Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


def _member_role(account: str, name: str) -> None:
    """The role as the member-roles stack makes it (through moto's backend: the test has no admin session
    in that account). Needed where the local runtime's AssumeRole check is in force in this process."""
    from moto.iam.models import iam_backends

    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{HOME}:root"}, "Action": "sts:AssumeRole"}
        ],
    }
    iam_backends[account]["global"].create_role(
        role_name=name,
        assume_role_policy_document=json.dumps(trust),
        path="/",
        permissions_boundary=None,
        description="",
        tags=[],
        max_session_duration="3600",
    )


def test_member_credentials_are_kept_until_five_minutes_before_they_expire(aws: Clients) -> None:
    _member_role(MEMBER, "ImmutableGuard-Member-Nuke")
    clock = _Clock()
    access = MemberAccess(aws, "ImmutableGuard-Member-Nuke", clock=clock)
    calls: list[dict[str, Any]] = []
    original = boto3.Session.client

    def counting_client(session: boto3.Session, name: str, *args: Any, **kwargs: Any) -> Any:
        client = original(session, name, *args, **kwargs)
        if name == "sts" and session is aws.session:
            client.meta.events.register(
                "before-call.sts.AssumeRole", lambda params, **_: calls.append(params["body"])
            )
        return client

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(boto3.Session, "client", counting_client)
        first = access.clients_for(HERE, MEMBER, "eu-west-1", "ig-1")
        # The same incident's next step: kept
        assert access.clients_for(HERE, MEMBER, "eu-west-1", "ig-1") is first
        # Another incident: its own session, so the member's CloudTrail names it
        assert access.clients_for(HERE, MEMBER, "eu-west-1", "ig-2") is not first
        # 56 minutes later (moto's credentials last an hour): renewed
        clock.now += timedelta(minutes=56)
        renewed = access.clients_for(HERE, MEMBER, "eu-west-1", "ig-1")
    assert renewed is not first
    assert len(calls) == 3
    assert [str(body["DurationSeconds"]) for body in calls] == ["3600"] * 3
    assert first.sts.get_caller_identity()["Arn"].endswith(":assumed-role/ImmutableGuard-Member-Nuke/ig-1")


def test_an_access_denied_names_the_role_and_the_stack_to_check() -> None:
    home = Clients(boto3.Session(region_name="us-east-1", aws_access_key_id="a", aws_secret_access_key="b"))
    access = MemberAccess(home, "ImmutableGuard-Member-Evidence", external_id="shared-secret")
    sts = regional_sts(home.session, "eu-west-1")
    message = "User: arn:aws:sts::123456789012:assumed-role/x/y is not authorized to perform: sts:AssumeRole"
    with Stubber(sts) as stub, pytest.MonkeyPatch.context() as patch:
        stub.add_client_error(
            "assume_role",
            "AccessDenied",
            message,
            403,
            expected_params={
                "RoleArn": f"arn:aws:iam::{MEMBER}:role/ImmutableGuard-Member-Evidence",
                "RoleSessionName": "ig-9",
                "DurationSeconds": 3600,
                "ExternalId": "shared-secret",
            },
        )
        patch.setattr("immutable_guard.members.regional_sts", lambda session, region: sts)
        with pytest.raises(MemberRoleUnavailable) as raised:
            access.clients_for(HERE, MEMBER, "eu-west-1", "ig-9")
    assert str(raised.value) == (
        f"cannot assume arn:aws:iam::{MEMBER}:role/ImmutableGuard-Member-Evidence: {message}; "
        f"is the member-roles stack deployed in {MEMBER}?"
    )


def test_sts_is_called_in_the_member_region(monkeypatch: pytest.MonkeyPatch) -> None:
    # Older SDKs used the global endpoint for the older regions unless told otherwise; its tokens are
    # refused by opt-in regions (https://docs.aws.amazon.com/IAM/latest/UserGuide/id_credentials_temp_region-endpoints.html).
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("AWS_STS_REGIONAL_ENDPOINTS", "legacy")
    session = boto3.Session(aws_access_key_id="a", aws_secret_access_key="b")
    for region in ("us-east-1", "eu-west-1", "af-south-1"):
        assert regional_sts(session, region).meta.endpoint_url == f"https://sts.{region}.amazonaws.com"


def test_in_single_account_mode_another_place_is_refused_not_assumed(aws: Clients) -> None:
    access = MemberAccess(aws, role_name=None)
    assert access.clients_for(HERE, None, None, "ig-1") is aws
    with pytest.raises(MemberRoleUnavailable, match="acts only in its own account"):
        access.clients_for(HERE, HOME, "eu-west-1", "ig-1")


# ---------------------------------------------------------------------- where a change happened


def test_the_place_comes_from_the_record_and_must_agree_with_the_envelope() -> None:
    # CloudTrail: recipientAccountId and awsRegion; Config: the item's awsAccountId and awsRegion
    for name in ("cloudtrail-send-ssh-public-key.json", "config-instance-changed.json"):
        event = _event(name, MEMBER, "eu-west-1")
        finding = normalise(parse_event(event))
        assert (finding.account, finding.region) == (MEMBER, "eu-west-1")
        assert origin_mismatch(parse_event(event)) is None
        assert "account" in str(origin_mismatch(parse_event({**event, "account": HOME})))
        assert "region" in str(origin_mismatch(parse_event({**event, "region": "us-east-1"})))


# ---------------------------------------------------------------------- Detect's refusals


@pytest.fixture
def detect(detect_settings: DetectSettings) -> DetectSettings:
    """Detect in organisation mode: the security account's, reading members through their Reader role."""
    return detect_settings.model_copy(
        update={"organization_id": "o-exampleorg01", "member_role_name": "ImmutableGuard-Member-Reader"}
    )


def _rejected_by_reason(text: str) -> list[str]:
    reasons = []
    for line in text.splitlines():
        try:
            document = json.loads(line)
        except ValueError:
            continue
        if isinstance(document, dict) and "EventsRejected" in document and "reason" in document:
            reasons.append(document["reason"])
    return reasons


def test_refused_events_are_counted_by_reason(
    aws: Clients, detect: DetectSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    metrics = Metrics(namespace="ImmutableGuardTest", service="immutable-guard")
    mismatched = {**_event("cloudtrail-send-ssh-public-key.json", MEMBER, "eu-west-1"), "account": HOME}
    unregistered = _event("cloudtrail-send-ssh-public-key.json", MEMBER, "eu-west-1")
    results = [
        process_event(raw, detect, aws, metrics, expected_account=HOME, here=HERE)
        for raw in (mismatched, unregistered)
    ]
    metrics.flush_metrics()
    assert [(r.decision, r.reason) for r in results] == [
        ("reject", "account_mismatch"),
        ("reject", "unprotected_account"),
    ]
    assert _rejected_by_reason(capsys.readouterr().out) == ["account_mismatch", "unprotected_account"]


def test_single_account_mode_keeps_todays_account_check(aws: Clients, detect: DetectSettings) -> None:
    # Given the same settings without an organisation
    single = detect.model_copy(update={"organization_id": None, "member_role_name": None})
    metrics = Metrics(namespace="ImmutableGuardTest")
    # When another account's event arrives, even one whose envelope disagrees with its record
    for raw in (
        _event("cloudtrail-send-ssh-public-key.json", MEMBER),
        {**_event("cloudtrail-send-ssh-public-key.json", MEMBER), "account": HOME},
    ):
        result = process_event(raw, single, aws, metrics, expected_account=HOME)
        # Then it is ignored as from another account, as before organisation mode
        assert (result.decision, result.reason) == ("ignore", "wrong_account")


def test_a_step_acts_only_where_the_ledger_says_the_incident_is(ledger: IncidentLedger) -> None:
    # Given an incident Detect opened in a member account and region
    ledger.open_incident(
        Incident(
            incident_id="ig-i-1-a",
            instance_id="i-1",
            mode="enforce",
            decision="remediate",
            kind="ssh_key_pushed",
            severity="high",
            account=MEMBER,
            region="eu-west-1",
            created_at=now_iso(),
        )
    )
    # When a step's input agrees, or names no place (an execution started before organisation mode)
    agreeing = NukeRequest(incident_id="ig-i-1-a", instance_id="i-1", account=MEMBER, region="eu-west-1")
    assert checked_place(agreeing, "ig-i-1-a", ledger) == (MEMBER, "eu-west-1")
    assert checked_place(NukeRequest(incident_id="ig-i-1-a", instance_id="i-1"), "ig-i-1-a", ledger) == (
        MEMBER,
        "eu-west-1",
    )
    # Then it acts there; an input naming another account or region is refused
    for other in ({"account": HOME}, {"region": "us-east-1"}):
        request = NukeRequest.model_validate({"incident_id": "ig-i-1-a", "instance_id": "i-1", **other})
        with pytest.raises(InvalidEvent, match="but the step's input says"):
            checked_place(request, "ig-i-1-a", ledger)
