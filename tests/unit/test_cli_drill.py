"""`immutable-guard drill --stack`: refusals come before anything is created, each with a clear reason."""

from __future__ import annotations

import json

import pytest
from immutable_guard.cli import main
from immutable_guard.clients import Clients


def guard_stack(aws: Clients, name: str, parameters: dict[str, str]) -> None:
    """A stack record with template.yaml's outputs, as `sam deploy` leaves it."""
    outputs = ("AlertTopicArn", "IncidentLedgerName", "EvidenceBucketName", "RemediationStateMachineArn")
    template = {
        "Parameters": {key: {"Type": "String"} for key in parameters},
        "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
        "Outputs": {
            **{key: {"Value": f"{key}-value"} for key in outputs},
            "DetectFunctionName": {"Value": "detect"},
        },
    }
    aws.cloudformation.create_stack(
        StackName=name,
        TemplateBody=json.dumps(template),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
    )


def test_without_credentials_the_drill_says_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", raising=False)
    assert main(["drill", "--stack", "immutable-guard", "--region", "eu-west-1"]) == 1
    assert "no AWS credentials" in capsys.readouterr().err


def test_a_missing_stack_is_named(aws: Clients, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["drill", "--stack", "nowhere", "--region", "us-east-1"]) == 1
    assert "cannot read stack nowhere in us-east-1" in capsys.readouterr().err


def test_a_notify_only_stack_is_refused_and_nothing_is_created(
    aws: Clients, capsys: pytest.CaptureFixture[str]
) -> None:
    guard_stack(aws, "immutable-guard", {"Mode": "notify-only"})
    assert main(["drill", "--stack", "immutable-guard", "--region", "us-east-1"]) == 1
    assert "notify-only mode" in capsys.readouterr().err
    stacks = aws.cloudformation.describe_stacks()["Stacks"]
    assert [s["StackName"] for s in stacks] == ["immutable-guard"]
    assert aws.sqs.list_queues().get("QueueUrls", []) == []


def test_an_unknown_scenario_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["drill", "--scenario", "port-openned"])
    assert exit_.value.code == 2
    assert "invalid choice: 'port-openned'" in capsys.readouterr().err


def test_account_options_without_a_stack_are_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["drill", "--region", "eu-west-1"]) == 2
    assert "go with --stack" in capsys.readouterr().err
