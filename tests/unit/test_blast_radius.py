"""Blast radius (issue 14): hourly caps organisation-wide, per account and per account-region, counted in
the transaction that takes an incident's lock; the organisation storm (changes in K accounts within W
minutes switch the organisation to notify-only, one alert, until it expires or a person clears it). On moto's
DynamoDB; the multi-account run on the local AWS is tests/e2e/test_organization_breakers.py."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aws_lambda_powertools import Metrics
from immutable_guard import ledger as ledger_module
from immutable_guard.cli import main
from immutable_guard.clients import Clients
from immutable_guard.detection.events import parse_event
from immutable_guard.detection.normalise import normalise
from immutable_guard.detection.policy import Judgement
from immutable_guard.detection.scope import InstanceInfo
from immutable_guard.ledger import Breaker, Cap, Incident, IncidentLedger, Status, caps_for, now_iso
from immutable_guard.model import Decision, Mode, PostEvidenceAction
from immutable_guard.pipeline import count_by_reason
from immutable_guard.settings import DetectSettings
from immutable_guard.triage import Triage, TriageResult

EVENTS = Path(__file__).resolve().parents[2] / "events"
TABLE = "immutable-guard-ledger"
A, B, C, D = "222233334444", "333344445555", "444455556666", "555566667777"
PASS_MACHINE = json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}})


def _incident(instance_id: str, account: str = A, region: str = "eu-west-1") -> Incident:
    return Incident(
        incident_id=f"ig-{instance_id}-1",
        instance_id=instance_id,
        mode="enforce",
        decision="remediate",
        kind="shell_access",
        severity="high",
        account=account,
        region=region,
        created_at=now_iso(),
    )


def _item(aws: Clients, key: str) -> dict[str, Any] | None:
    return aws.dynamodb.get_item(TableName=TABLE, Key={"pk": {"S": key}}).get("Item")


def _hour() -> str:
    return ledger_module._hour()


class Clock:
    """The ledger's clock (and only the ledger's): the storm's window is minutes long."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import time

        self.now = time.time()
        monkeypatch.setattr(ledger_module, "time", SimpleNamespace(time=lambda: self.now))

    def advance(self, minutes: float) -> None:
        self.now += minutes * 60


# ---------------------------------------------------------------------- the ledger


def test_caps_are_counted_in_the_locks_transaction_and_a_full_one_writes_nothing(
    aws: Clients, ledger: IncidentLedger
) -> None:
    caps = caps_for(A, "eu-west-1", per_hour=10, per_account=5, per_account_region=2)
    # Given two incidents in account A, region eu-west-1 (its cap: 2)
    for n in (1, 2):
        assert ledger.open_incident(_incident(f"i-{n}"), caps=caps).opened
    # Then each counter holds both, with its breaker and cap recorded
    hour = _hour()
    counters = {
        key: _item(aws, key)
        for key in (f"BREAKER#{hour}", f"BREAKER#{hour}#{A}", f"BREAKER#{hour}#{A}:eu-west-1")
    }
    assert {k: (v or {})["incidents"]["N"] for k, v in counters.items()} == dict.fromkeys(counters, "2")
    assert (counters[f"BREAKER#{hour}#{A}:eu-west-1"] or {})["breaker"]["S"] == "account_region"
    # When a third comes in the same account and region
    result = ledger.open_incident(_incident("i-3"), caps=caps)
    # Then it is not opened, the full cap is named, and nothing of it was written: no lock, no incident,
    # no counter raised (not even the ones with room left)
    assert not result.opened
    assert [c.breaker for c in result.tripped] == [Breaker.ACCOUNT_REGION]
    assert ledger.open_incident_for("i-3") is None
    assert _item(aws, "INCIDENT#ig-i-3-1") is None
    assert (_item(aws, f"BREAKER#{hour}") or {})["incidents"]["N"] == "2"
    assert (_item(aws, f"BREAKER#{hour}#{A}") or {})["incidents"]["N"] == "2"
    # But the same account in another region still has room
    other = caps_for(A, "us-east-1", per_hour=10, per_account=5, per_account_region=2)
    assert ledger.open_incident(_incident("i-4", region="us-east-1"), caps=other).opened


def test_an_instance_already_locked_is_a_duplicate_even_when_a_cap_is_full(ledger: IncidentLedger) -> None:
    cap = [Cap(breaker=Breaker.ORGANIZATION, scope="", limit=1)]
    assert ledger.open_incident(_incident("i-1"), caps=cap).opened
    # A second report of the same instance: the lock decides, not the full cap
    second = _incident("i-1").model_copy(update={"incident_id": "ig-i-1-2"})
    result = ledger.open_incident(second, caps=cap)
    assert (result.opened, result.incident_id, result.tripped) == (False, "ig-i-1-1", [])


def test_the_first_demotion_of_each_breaker_alerts_and_every_one_is_counted(ledger: IncidentLedger) -> None:
    organization = Cap(breaker=Breaker.ORGANIZATION, scope="", limit=1)
    account = Cap(breaker=Breaker.ACCOUNT, scope=A, limit=1)
    assert ledger.open_incident(_incident("i-1"), caps=[organization]).opened
    assert [ledger.record_demotion(organization) for _ in range(3)] == [True, False, False]
    assert [ledger.record_demotion(account) for _ in range(2)] == [True, False]
    # The organisation's hour counts what it remediated and what it demoted (doctor reads it)
    assert ledger.incidents_this_hour() == 4


def test_the_storm_watch_is_a_sliding_window_of_distinct_accounts(
    ledger: IncidentLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock(monkeypatch)
    window = 10 * 60
    assert ledger.watch_account(A, window) == [A]
    clock.advance(4)
    assert ledger.watch_account(A, window) == [A]  # the same account again: still one
    clock.advance(4)
    assert ledger.watch_account(B, window) == [A, B]
    clock.advance(7)  # A's last change is 11 minutes old
    assert ledger.watch_account(C, window) == [B, C]


def test_a_storm_opens_once_expires_and_a_clear_forgets_the_watched_accounts(
    aws: Clients, ledger: IncidentLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock(monkeypatch)
    ledger.watch_account(A, 600)
    opened = ledger.open_storm([A, B, C], hold_seconds=3600)
    assert opened is not None and opened.accounts == [A, B, C]
    assert ledger.open_storm([A, B, C, D]) is None  # one storm, one opener (one alert)
    assert ledger.storm() == opened
    clock.advance(61)
    assert ledger.storm() is None  # expired (TTL deletion lags: the expiry decides)
    assert ledger.open_storm([B, C, D], hold_seconds=3600) is not None  # a new storm after expiry
    assert ledger.clear_storm() is not None
    assert ledger.storm() is None and _item(aws, "STORM#WATCH") is None
    assert ledger.clear_storm() is None


# ---------------------------------------------------------------------- triage


@dataclass
class Org:
    aws: Clients
    ledger: IncidentLedger
    settings: DetectSettings
    subscriber: str

    def change(
        self, account: str, instance: str, region: str = "eu-west-1", mode: Mode = Mode.ENFORCE
    ) -> Any:
        """A remediable change to one immutable instance of ``account`` (as Detect judges it)."""
        text = (EVENTS / "cloudtrail-send-ssh-public-key.json").read_text("utf-8")
        text = text.replace("111122223333", account).replace('"us-east-1"', f'"{region}"')
        text = text.replace("i-0abc1234def567890", instance)
        event = json.loads(text)
        event["id"] = event["detail"]["eventID"] = f"{account}-{region}-{instance}"
        finding = normalise(parse_event(event))
        judgement = Judgement(
            finding=finding,
            decision=Decision.REMEDIATE,
            reason="mutation_of_immutable_instance",
            detail="",
            instances_in_scope=(InstanceInfo(instance_id=instance),),
        )
        triage = Triage(
            self.settings, self.ledger.at(account, region), self.aws.sns, self.aws.stepfunctions, mode=mode
        )
        result = triage.handle(judgement)
        [outcome] = result.instances
        return result, outcome

    def alerts(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        while True:
            messages = self.aws.sqs.receive_message(QueueUrl=self.subscriber, MaxNumberOfMessages=10)
            if not messages.get("Messages"):
                return found
            for m in messages["Messages"]:
                found.append(json.loads(json.loads(m["Body"])["Message"]))
                self.aws.sqs.delete_message(QueueUrl=self.subscriber, ReceiptHandle=m["ReceiptHandle"])

    def executions(self) -> set[str]:
        arn = self.settings.remediation_state_machine_arn
        return {e["name"] for e in self.aws.stepfunctions.list_executions(stateMachineArn=arn)["executions"]}


@pytest.fixture
def org(aws: Clients, ledger: IncidentLedger) -> Org:
    topic = aws.sns.create_topic(Name="alerts")["TopicArn"]
    subscriber = aws.sqs.create_queue(QueueName="subscriber")["QueueUrl"]
    queue_arn = aws.sqs.get_queue_attributes(QueueUrl=subscriber, AttributeNames=["QueueArn"])
    aws.sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn["Attributes"]["QueueArn"])
    machine = aws.stepfunctions.create_state_machine(
        name="remediation", definition=PASS_MACHINE, roleArn="arn:aws:iam::123456789012:role/sfn"
    )["stateMachineArn"]
    settings = DetectSettings(
        ledger_table=TABLE,
        alert_topic_arn=topic,
        mode=Mode.ENFORCE,
        scope_tag_key="immutable",
        scope_tag_value="true",
        max_incidents_per_hour=50,
        max_incidents_per_account_hour=3,
        max_incidents_per_account_region_hour=2,
        org_storm_accounts=3,
        org_storm_window_minutes=10,
        post_evidence_action=PostEvidenceAction.TERMINATE,
        remediation_state_machine_arn=machine,
        dead_letter_queue_url=aws.sqs.create_queue(QueueName="dlq")["QueueUrl"],
        organization_id="o-exampleorg01",
        member_role_name="ImmutableGuard-Member-Reader",
    )
    return Org(aws, IncidentLedger(aws.dynamodb, TABLE), settings, subscriber)


def _breaker_alerts(alerts: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [
        (a["details"]["breaker"], a["details"].get("scope", ""))
        for a in alerts
        if a["stage"] == "breaker_open"
    ]


def test_the_account_region_and_account_caps_stop_only_their_own(org: Org) -> None:
    # Given account A at 2 per region and 3 per account
    modes = [org.change(A, f"i-a{n}")[1].mode for n in (1, 2, 3)]
    # Then its third change in eu-west-1 is only alerted
    assert modes == ["enforce", "enforce", "notify-only"]
    # But A's first change in another region is remediated (A's third), and the next one there is not:
    # the account is full, though that region has room
    second_region = [org.change(A, f"i-u{n}", region="us-east-1") for n in (1, 2)]
    assert [o.mode for _, o in second_region] == ["enforce", "notify-only"]
    assert second_region[1][0].breakers == ["account"]
    # And account B, same region, is untouched by A's breakers
    assert org.change(B, "i-b1")[1].mode == "enforce"
    # And each breaker said so once, naming where
    assert sorted(_breaker_alerts(org.alerts())) == [("account", A), ("account_region", f"{A}:eu-west-1")]
    assert len(org.executions()) == 4
    # And the demoted incidents are in the ledger, notified
    _, again = org.change(A, "i-a4")
    assert org.ledger.get(again.incident_id).status is Status.NOTIFIED


def test_changes_in_k_accounts_within_the_window_open_one_storm(
    org: Org, monkeypatch: pytest.MonkeyPatch
) -> None:
    Clock(monkeypatch)
    # Given changes in accounts A and B: remediated
    assert [org.change(acct, f"i-{acct}")[1].mode for acct in (A, B)] == ["enforce", "enforce"]
    # When a third account has one within the window
    result, outcome = org.change(C, "i-c")
    # Then the organisation is in notify-only from that change on, and one critical alert says so
    assert outcome.mode == "notify-only" and result.breakers == ["organization_storm"]
    alerts = org.alerts()
    [storm] = [a for a in alerts if a["stage"] == "breaker_open"]
    assert storm["severity"] == "critical" and storm["details"]["accounts"] == [A, B, C]
    assert "accounts storm clear" in " ".join(storm["actions"])
    # And every later change, in any account (a first one too), is alerted, not remediated, with no new alert
    later = [org.change(acct, f"i-{acct}-2")[1].mode for acct in (A, D)]
    assert later == ["notify-only", "notify-only"]
    assert _breaker_alerts(org.alerts()) == []
    assert len(org.executions()) == 2
    # When a person clears it (`immutable-guard accounts storm clear`)
    assert org.ledger.clear_storm() is not None
    # Then remediation resumes
    assert org.change(D, "i-d-3")[1].mode == "enforce"


def test_changes_spread_over_more_than_the_window_open_no_storm(
    org: Org, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock(monkeypatch)
    modes = []
    for account in (A, B, C, D):  # one account every 6 minutes: never three within 10 minutes
        modes.append(org.change(account, f"i-{account}")[1].mode)
        clock.advance(6)
    assert modes == ["enforce"] * 4
    assert org.ledger.storm() is None and _breaker_alerts(org.alerts()) == []


def test_accounts_not_in_enforce_do_not_count_towards_a_storm(org: Org) -> None:
    # Dry-run (not yet verified) and notify-only accounts remediate nothing: their changes are not a storm
    org.change(A, "i-a", mode=Mode.DRY_RUN)
    org.change(B, "i-b", mode=Mode.NOTIFY_ONLY)
    assert org.change(C, "i-c")[1].mode == "enforce"
    assert org.change(D, "i-d")[1].mode == "enforce"
    assert org.ledger.storm() is None


def test_single_account_mode_keeps_its_one_hourly_breaker(org: Org, aws: Clients) -> None:
    # Given the same settings without an organisation: the account and region caps and the storm are not
    # applied (one account in one region: the hourly cap is already per account and region)
    org.settings = org.settings.model_copy(
        update={"organization_id": None, "member_role_name": None, "max_incidents_per_hour": 3}
    )
    modes = [org.change(A, f"i-{n}")[1].mode for n in range(4)]
    assert modes == ["enforce", "enforce", "enforce", "notify-only"]
    assert _breaker_alerts(org.alerts()) == [("organization", "organization")]
    # And no storm is watched, no per-account counter written
    assert _item(aws, "STORM#WATCH") is None and _item(aws, f"BREAKER#{_hour()}#{A}") is None


def test_breaker_open_is_counted_by_breaker(capsys: pytest.CaptureFixture[str]) -> None:
    metrics = Metrics(namespace="ImmutableGuardTest", service="immutable-guard")
    result = TriageResult(decision="remediate", reason="x", breaker_open=True, breakers=["account_region"])
    for breaker in result.breakers:
        count_by_reason(metrics, "BreakerOpen", breaker, dimension="breaker")
    documents = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [(d["breaker"], d["BreakerOpen"]) for d in documents if "BreakerOpen" in d] == [
        ("account_region", [1.0])
    ]


def test_the_storm_cli_shows_and_clears(
    deployed_ledger: IncidentLedger, capsys: pytest.CaptureFixture[str]
) -> None:
    deployed_ledger.open_storm([A, B, C])
    args = ["--stack", "immutable-guard", "--region", "us-east-1", "--json"]
    assert main(["accounts", "storm", "show", *args]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["storm"], shown["accounts"]) == ("open", [A, B, C])
    assert main(["accounts", "storm", "clear", *args]) == 0
    assert json.loads(capsys.readouterr().out)["storm"] == "cleared"
    assert main(["accounts", "storm", "show", *args]) == 0
    assert json.loads(capsys.readouterr().out)["storm"] == "none"
