"""Settings of the canary functions, read from the environment once at cold start."""

from __future__ import annotations

from immutable_guard.settings import _EnvSettings


class CanaryNotifySettings(_EnvSettings):
    alert_topic_arn: str


class CanaryLockSettings(_EnvSettings):
    """The ledger table that holds each alias's rollout lock."""

    ledger_table: str


class CanaryRecoverSettings(_EnvSettings):
    alert_topic_arn: str
    ledger_table: str
    canary_state_machine_arn: str


class CanaryStartSettings(_EnvSettings):
    """The state machine a publication's rollout is started on."""

    canary_state_machine_arn: str


class CanaryWaitSettings(_EnvSettings):
    """Where a rollout that waits for a person keeps its task token, and where it alerts."""

    alert_topic_arn: str
    ledger_table: str
