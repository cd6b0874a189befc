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


def test_evidence_needs_its_custody_key_in_organisation_mode_only() -> None:
    from immutable_guard.settings import EvidenceSettings

    base = {**VALID, "EVIDENCE_BUCKET": "evidence", "MAX_POLLS": "10", "CUSTODY_KEY_ARN": ""}
    # Given single-account mode, Then no key is needed (the template passes "")
    assert EvidenceSettings.from_env(base).custody_key_arn is None
    # Given organisation mode without the custody key, Then the cold start fails naming it
    organisation = {
        **base,
        "ORGANIZATION_ID": "o-exampleorg01",
        "MEMBER_ROLE_NAME": "ImmutableGuard-Member-Evidence",
    }
    with pytest.raises(SettingsError, match="CUSTODY_KEY_ARN"):
        EvidenceSettings.from_env(organisation)
    # And with it, the copies are locked as the template says
    key = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    settings = EvidenceSettings.from_env({**organisation, "CUSTODY_KEY_ARN": key, "CUSTODY_LOCK_DAYS": "30"})
    assert (settings.custody_key_arn, settings.custody_lock_mode, settings.custody_lock_days) == (
        key,
        "governance",
        30,
    )
