"""`immutable-guard incidents` and `release` find the deployed stack's ledger and function by its outputs."""

from __future__ import annotations

import json

import pytest
from immutable_guard.cli import main
from immutable_guard.clients import Clients
from immutable_guard.ledger import Incident, IncidentLedger, Status, now_iso


@pytest.fixture
def deployed(deployed_ledger: IncidentLedger) -> IncidentLedger:
    return deployed_ledger


def incident(incident_id: str, instance_id: str, account: str = "123456789012") -> Incident:
    return Incident(
        incident_id=incident_id,
        instance_id=instance_id,
        mode="enforce",
        decision="remediate",
        kind="ssh_key_pushed",
        severity="high",
        account=account,
        region="us-east-1",
        created_at=now_iso(),
        timeline={"detected": now_iso()},
    )


def test_incidents_lists_each_incident_with_its_stages(
    deployed: IncidentLedger, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given one incident contained and one just detected
    deployed.open_incident(incident("ig-i-1-a", "i-1"))
    deployed.record_stage("ig-i-1-a", "contained", Status.CONTAINED)
    deployed.open_incident(incident("ig-i-2-b", "i-2"))
    # When
    code = main(["incidents", "--stack", "immutable-guard", "--region", "us-east-1", "--json"])
    # Then
    listed = {i["incident_id"]: i for i in json.loads(capsys.readouterr().out)}
    assert code == 0
    assert listed["ig-i-1-a"]["status"] == "CONTAINED"
    assert set(listed["ig-i-1-a"]["timeline"]) == {"detected", "contained"}
    assert listed["ig-i-2-b"]["status"] == "OPEN"


def test_incidents_table_is_readable(deployed: IncidentLedger, capsys: pytest.CaptureFixture[str]) -> None:
    deployed.open_incident(incident("ig-i-1-a", "i-1"))
    deployed.record_stage("ig-i-1-a", "contained", Status.CONTAINED)
    assert main(["incidents", "--stack", "immutable-guard", "--region", "us-east-1"]) == 0
    out = capsys.readouterr().out
    assert "ig-i-1-a" in out and "CONTAINED" in out and "detected > contained" in out


def test_incidents_of_one_account(deployed: IncidentLedger, capsys: pytest.CaptureFixture[str]) -> None:
    # Given incidents in the security account and in a member account
    deployed.open_incident(incident("ig-i-1-a", "i-1"))
    deployed.open_incident(incident("ig-i-2-b", "i-2", account="222233334444"))
    # When the member account's are asked for
    code = main(
        [
            "incidents",
            "--stack",
            "immutable-guard",
            "--region",
            "us-east-1",
            "--account",
            "222233334444",
            "--json",
        ]
    )
    # Then only they are listed
    assert code == 0
    assert [i["incident_id"] for i in json.loads(capsys.readouterr().out)] == ["ig-i-2-b"]


def test_an_unknown_stack_is_a_clear_error(aws: Clients, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["incidents", "--stack", "nope", "--region", "us-east-1"])
    assert code == 1
    assert "nope" in capsys.readouterr().err
