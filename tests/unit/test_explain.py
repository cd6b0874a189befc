"""`immutable-guard explain`: the decision for every sample in events/, offline, as security teams
would run it in their CI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from immutable_guard.cli import main

EVENTS = Path(__file__).resolve().parents[2] / "events"

# The decision each sample deserves under the template's defaults.
EXPECTED = {
    "benign-cloudformation-change.json": ("ignore", "cloudformation_change"),
    "benign-failed-call.json": ("ignore", "no_rule_matched"),
    "benign-out-of-scope-instance.json": ("ignore", "out_of_scope"),
    "cloudtrail-import-key-pair.json": ("alert", "account_level_alert_only"),
    "cloudtrail-stop-logging.json": ("alert", "account_level_alert_only"),
    "cloudtrail-stop-configuration-recorder.json": ("alert", "account_level_alert_only"),
    "benign-config-resource-discovered.json": ("ignore", "config_not_a_change"),
    "benign-config-instance-state-change.json": ("ignore", "config_not_a_change"),
    "benign-config-sg-rule-revoked.json": ("ignore", "config_not_a_change"),
    "benign-config-network-acl-deny-added.json": ("ignore", "config_not_a_change"),
    "benign-config-inventory-access-time-only.json": ("ignore", "config_not_a_change"),
}
REMEDIATE = ("remediate", "mutation_of_immutable_instance")


def explain(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["explain", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_every_sample_is_covered() -> None:
    assert len(list(EVENTS.glob("*.json"))) >= 20


@pytest.mark.parametrize("sample", sorted(p.name for p in EVENTS.glob("*.json")))
def test_explain_gives_the_right_decision_for_every_sample(
    capsys: pytest.CaptureFixture[str], sample: str
) -> None:
    # Given an allow-list naming the deployment pipeline, as an operator would configure it
    allow = ["--allow", "arn:aws:iam::111122223333:role/deploy-pipeline"]
    # When
    code, out, _ = explain(capsys, str(EVENTS / sample), *allow)
    # Then
    assert code == 0
    result = json.loads(out)
    expected = EXPECTED.get(
        sample, ("ignore", "allow_listed_principal") if "allow-listed" in sample else REMEDIATE
    )
    assert (result["decision"], result["reason"]) == expected
    assert set(result) >= {"matched_rules", "finding", "decision", "reason"}
    if expected[1] != "no_rule_matched":
        assert len(result["matched_rules"]) == 1


def test_the_allow_listed_sample_is_remediated_when_nobody_is_allow_listed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The template's default allow-list is empty.
    _, out, _ = explain(capsys, str(EVENTS / "benign-allow-listed-principal.json"))
    assert json.loads(out)["decision"] == "remediate"


def test_a_port_opened_to_the_world_is_critical(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = explain(capsys, str(EVENTS / "cloudtrail-authorize-sg-ingress-ssh-world.json"))
    result = json.loads(out)
    assert result["finding"]["kind"] == "port_opened"
    assert result["finding"]["severity"] == "critical"
    assert result["matched_rules"] == ["DetectFunctionNetworkOpened"]
    assert "assumed" in result["assumption"]  # offline, the group's users are unknown: said, not hidden


def test_a_scope_tag_option_changes_the_verdict(capsys: pytest.CaptureFixture[str]) -> None:
    # Given a Config item tagged immutable=true, judged against another scope tag
    _, out, _ = explain(capsys, str(EVENTS / "config-instance-changed.json"), "--scope-tag", "golden=yes")
    assert json.loads(out)["reason"] == "out_of_scope"


def test_an_event_from_another_account_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = explain(
        capsys, str(EVENTS / "cloudtrail-send-ssh-public-key.json"), "--account", "999999999999"
    )
    assert (json.loads(out)["decision"], json.loads(out)["reason"]) == ("ignore", "wrong_account")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not JSON"),
        ('{"hello": "world"}', "not an EventBridge event"),
        ("[1, 2, 3]", "not an EventBridge event"),
        (
            '{"detail-type": "Something Else", "source": "aws.ec2", "detail": {}}',
            "",
        ),
    ],
)
def test_a_bad_file_gets_one_line_and_exit_code_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "event.json"
    path.write_text(content)
    code, out, err = explain(capsys, str(path))
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and message in err


def test_a_missing_file_gets_exit_code_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = explain(capsys, str(tmp_path / "nope.json"))
    assert code == 2 and "cannot read" in err
