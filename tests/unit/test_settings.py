"""Settings fail at cold start, naming the variable."""

from __future__ import annotations

import pytest
from immutable_guard.errors import SettingsError
from immutable_guard.model import Mode
from immutable_guard.settings import DetectSettings, QuarantineSettings

VALID = {
    "LEDGER_TABLE": "ledger",
    "ALERT_TOPIC_ARN": "arn:aws:sns:us-east-1:111122223333:alerts",
    "MODE": "enforce",
    "SCOPE_TAG_KEY": "immutable",
    "SCOPE_TAG_VALUE": "true",
    "SCOPE_STACK_NAMES": "",
    "SCOPE_ASG_NAMES": "web, api",
    "ALLOWED_PRINCIPAL_ARNS": "arn:aws:iam::111122223333:role/deploy",
    "OWN_ROLE_ARNS": "arn:aws:iam::111122223333:role/q,arn:aws:iam::111122223333:role/n",
    "MAX_INCIDENTS_PER_HOUR": "5",
    "POST_EVIDENCE_ACTION": "terminate",
    "REMEDIATION_STATE_MACHINE_ARN": "arn:aws:states:us-east-1:111122223333:stateMachine:r",
    "DEAD_LETTER_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/111122223333/dlq",
}


def test_valid_environment_is_parsed() -> None:
    settings = DetectSettings.from_env(VALID)
    assert settings.mode is Mode.ENFORCE
    assert settings.scope_stack_names == ()
    assert settings.scope_asg_names == ("web", "api")
    assert len(settings.own_role_arns) == 2
    assert settings.max_incidents_per_hour == 5


def test_missing_variable_is_named() -> None:
    environ = {k: v for k, v in VALID.items() if k != "LEDGER_TABLE"}
    with pytest.raises(SettingsError, match="LEDGER_TABLE"):
        DetectSettings.from_env(environ)


@pytest.mark.parametrize(
    ("variable", "value"),
    [("MODE", "yolo"), ("MAX_INCIDENTS_PER_HOUR", "many"), ("MAX_INCIDENTS_PER_HOUR", "0")],
)
def test_malformed_variable_is_named(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        DetectSettings.from_env({**VALID, variable: value})


def test_contain_reads_its_isolation_depth_and_refuses_an_unknown_one() -> None:
    step = {"LEDGER_TABLE": "ledger", "ALERT_TOPIC_ARN": VALID["ALERT_TOPIC_ARN"]}
    assert QuarantineSettings.from_env(step).isolation_depth == "security-groups"
    assert (
        QuarantineSettings.from_env({**step, "ISOLATION_DEPTH": "network-acl"}).isolation_depth
        == "network-acl"
    )
    with pytest.raises(SettingsError, match="ISOLATION_DEPTH"):
        QuarantineSettings.from_env({**step, "ISOLATION_DEPTH": "routes"})
