"""The pure detection pipeline: parse an EventBridge event, normalise it into a Finding, resolve the
instances it reaches, and judge whether it is a mutation of an immutable server."""

from __future__ import annotations

from immutable_guard.detection.events import CloudTrailEvent, ConfigEvent, ParsedEvent, parse_event
from immutable_guard.detection.normalise import normalise
from immutable_guard.detection.policy import Judgement, Policy, judge, judge_event
from immutable_guard.detection.scope import (
    Ec2InstanceDirectory,
    InstanceDirectory,
    InstanceInfo,
    OfflineInstanceDirectory,
    ScopeRule,
)

__all__ = [
    "CloudTrailEvent",
    "ConfigEvent",
    "Ec2InstanceDirectory",
    "InstanceDirectory",
    "InstanceInfo",
    "Judgement",
    "OfflineInstanceDirectory",
    "ParsedEvent",
    "Policy",
    "ScopeRule",
    "judge",
    "judge_event",
    "normalise",
    "parse_event",
]
