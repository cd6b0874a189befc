"""Settings of the canary functions, read from the environment once at cold start."""

from __future__ import annotations

from immutable_guard.settings import _EnvSettings


class CanaryNotifySettings(_EnvSettings):
    alert_topic_arn: str
