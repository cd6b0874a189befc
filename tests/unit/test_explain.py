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
    "benign-failed-call.json": ("ignore", "not_delivered"),
    "benign-out-of-scope-instance.json": ("ignore", "out_of_scope"),
    "cloudtrail-import-key-pair.json": ("alert", "account_level_alert_only"),
    "cloudtrail-stop-logging.json": ("alert", "account_level_alert_only"),
    "cloudtrail-stop-configuration-recorder.json": ("alert", "account_level_alert_only"),
    # A route to a peering connection opens no path from the internet; removing prefix-list entries
    # narrows rules: both name no resource to remediate.
    "benign-create-route-peering.json": ("ignore", "out_of_scope"),
    "benign-modify-managed-prefix-list-remove-entry.json": ("ignore", "out_of_scope"),
    "cloudtrail-delete-tags-scope.json": ("remediate", "scope_tampered"),
    "cloudtrail-create-tags-forged-quarantine.json": ("remediate", "scope_tampered"),
    "benign-create-tags-unrelated.json": ("ignore", "tags_only"),
    # paths/shell.py and paths/wiring.py
    "benign-disable-rule-not-the-guards.json": ("ignore", "not_guard_wiring"),
    # CloudTrail does not name the stack CloudFormation acted for: new code for the guard is alerted
    # unless the deployer is allow-listed.
    "cloudtrail-update-guard-function-code-via-cloudformation.json": ("alert", "account_level_alert_only"),
    "cloudtrail-create-instance-connect-endpoint.json": ("alert", "unresolved_target"),
    "cloudtrail-enable-serial-console-access.json": ("alert", "unresolved_target"),
    "cloudtrail-update-association-guard-inventory.json": ("alert", "account_level_alert_only"),
    "cloudtrail-delete-association.json": ("alert", "account_level_alert_only"),
    "cloudtrail-disable-rule.json": ("alert", "account_level_alert_only"),
    "cloudtrail-remove-targets.json": ("alert", "account_level_alert_only"),
    "cloudtrail-put-targets.json": ("alert", "account_level_alert_only"),
    "cloudtrail-update-function-configuration.json": ("alert", "account_level_alert_only"),
    "cloudtrail-put-function-concurrency.json": ("alert", "account_level_alert_only"),
    "cloudtrail-put-configuration-recorder.json": ("alert", "account_level_alert_only"),
    "cloudtrail-update-trail.json": ("alert", "account_level_alert_only"),
    "cloudtrail-sns-unsubscribe.json": ("alert", "account_level_alert_only"),
    # paths/permissions.py and paths/golden_image.py: a launch template or group change is alerted, never
    # remediated; a capacity change names no launch source.
    "benign-put-role-policy-cloudformation.json": ("ignore", "cloudformation_change"),
    "benign-update-auto-scaling-group-capacity.json": ("ignore", "out_of_scope"),
    "cloudtrail-create-launch-template-version.json": ("alert", "golden_image_at_risk"),
    "cloudtrail-modify-launch-template.json": ("alert", "golden_image_at_risk"),
    "cloudtrail-delete-launch-template-versions.json": ("alert", "golden_image_at_risk"),
    "cloudtrail-update-auto-scaling-group-launch-template.json": ("alert", "golden_image_at_risk"),
    "benign-config-resource-discovered.json": ("ignore", "config_not_a_change"),
    "benign-config-instance-state-change.json": ("ignore", "config_not_a_change"),
    "benign-config-sg-rule-revoked.json": ("ignore", "config_not_a_change"),
    "benign-config-network-acl-deny-added.json": ("ignore", "config_not_a_change"),
    "benign-config-inventory-access-time-only.json": ("ignore", "config_not_a_change"),
    "benign-config-instance-tag-change.json": ("ignore", "tags_only"),
}

# Changes the operator's own stack made to its servers: explained as the operator would, with the stack
# declared (ScopeStackNames) and the servers taken to be its members.
DECLARED_STACK_SAMPLES = {"benign-cloudformation-change.json", "benign-put-role-policy-cloudformation.json"}
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
    declared = ["--declared-stack", "web-stack"] if sample in DECLARED_STACK_SAMPLES else []
    code, out, _ = explain(capsys, str(EVENTS / sample), *allow, *declared)
    # Then
    assert code == 0
    result = json.loads(out)
    expected = EXPECTED.get(
        sample, ("ignore", "allow_listed_principal") if "allow-listed" in sample else REMEDIATE
    )
    assert (result["decision"], result["reason"]) == expected
    assert set(result) >= {"matched_rules", "finding", "decision", "reason"}
    if expected[1] != "not_delivered":
        assert len(result["matched_rules"]) == 1


def test_the_allow_listed_sample_is_remediated_when_nobody_is_allow_listed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The template's default allow-list is empty.
    _, out, _ = explain(capsys, str(EVENTS / "benign-allow-listed-principal.json"))
    assert json.loads(out)["decision"] == "remediate"


@pytest.mark.parametrize("sample", sorted(DECLARED_STACK_SAMPLES))
def test_a_change_through_a_stack_nobody_declared_is_remediated(
    capsys: pytest.CaptureFixture[str], sample: str
) -> None:
    # Given the same change made through CloudFormation, with no stack declared: any principal allowed
    # to create a stack could have made it
    _, out, _ = explain(capsys, str(EVENTS / sample))
    result = json.loads(out)
    # Then it is judged like any change, and says why the stack did not exempt it
    assert (result["decision"], result["reason"]) == ("remediate", "mutation_of_immutable_instance")
    assert "ScopeStackNames" in result["detail"]
    # And declared, the servers it reaches are the stack's own: ignored, and the assumption is said
    _, out, _ = explain(capsys, str(EVENTS / sample), "--declared-stack", "web-stack")
    declared = json.loads(out)
    assert declared["reason"] == "cloudformation_change"
    assert "web-stack" in declared["assumption"]


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
        ('{"detail-type": "AWS API Call via CloudTrail", "source": "aws.ec2", "detail": []}', "detail"),
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


@pytest.mark.parametrize(
    "event",
    [
        # A read-only call no rule watches, as CloudTrail records it.
        {
            "detail-type": "AWS API Call via CloudTrail",
            "source": "aws.ec2",
            "detail": {
                "eventSource": "ec2.amazonaws.com",
                "eventName": "DescribeInstances",
                "requestParameters": {"instancesSet": {}},
            },
        },
        # Another kind of event altogether.
        {
            "detail-type": "EC2 Instance State-change Notification",
            "source": "aws.ec2",
            "detail": {"instance-id": "i-0abc1234def567890", "state": "running"},
        },
    ],
)
def test_a_valid_event_no_rule_delivers_is_ignored_as_not_delivered(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, event: dict[str, object]
) -> None:
    # Given a well-formed event that no rule of the template matches
    path = tmp_path / "event.json"
    path.write_text(json.dumps(event))
    # When it is explained
    code, out, err = explain(capsys, str(path))
    # Then it is a valid answer, not an input error
    assert code == 0 and err == ""
    result = json.loads(out)
    assert (result["matched_rules"], result["decision"], result["reason"]) == ([], "ignore", "not_delivered")


def test_config_s_echo_of_an_allow_listed_call_is_ignored_when_explained_after_the_call(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given the pipeline's allow-listed call and Config's item naming it in relatedEvents
    allow = ["--allow", "arn:aws:iam::111122223333:role/deploy-pipeline"]
    call, echo = EVENTS / "benign-allow-listed-principal.json", EVENTS / "config-echo-of-pipeline-change.json"
    # When the echo is explained alone, nothing says who made the change
    _, alone, _ = explain(capsys, str(echo), *allow)
    assert json.loads(alone)["decision"] == "remediate"
    # When both are explained as one sequence, the echo takes the call's judgement, as in Detect
    code, out, _ = explain(capsys, str(call), str(echo), *allow)
    assert code == 0
    results = json.loads(out)
    assert [(r["decision"], r["reason"]) for r in results] == [
        ("ignore", "allow_listed_principal"),
        ("ignore", "allow_listed_principal"),
    ]
    assert "echo" in results[1]["detail"].lower() or "config" in results[1]["detail"].lower()
