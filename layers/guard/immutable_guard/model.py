"""The vocabulary shared by detection, remediation and alerts. Kind and Decision values are part of
the alert schema: renaming one is a breaking change for subscribers' filter policies."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Kind(StrEnum):
    PORT_OPENED = "port_opened"
    SSH_KEY_PUSHED = "ssh_key_pushed"
    SHELL_ACCESS = "shell_access"
    KEY_PAIR_ADDED = "key_pair_added"
    INSTANCE_MODIFIED = "instance_modified"
    IAM_PROFILE_CHANGED = "iam_profile_changed"
    FILE_CHANGED = "file_changed"
    # Someone blinded the sensors (CloudTrail, Config): no instance is changed, the guard may go deaf.
    DETECTION_DISABLED = "detection_disabled"
    # Someone took a server out of the guard's sight: its scope tag or an immutable-guard:* tag changed.
    SCOPE_TAMPERED = "scope_tampered"
    # A route, ACL association or attached interface changed what can reach the server.
    NETWORK_PATH_CHANGED = "network_path_changed"
    # Its traffic copied elsewhere (a traffic mirror session on one of its interfaces).
    TRAFFIC_MIRRORED = "traffic_mirrored"
    # A volume attached, detached or its root volume replaced.
    DISK_CHANGED = "disk_changed"
    # What its role may do changed (a policy attached, put or removed; its trust policy).
    ROLE_CHANGED = "role_changed"
    # The launch template or configuration a replacement would be built from changed.
    GOLDEN_IMAGE_CHANGED = "golden_image_changed"


# Findings about the account, not about a running instance: alerted, never remediated.
ACCOUNT_LEVEL_KINDS = frozenset({Kind.KEY_PAIR_ADDED, Kind.DETECTION_DISABLED})

# Findings about what future servers are built from: alerted when they reach an in-scope server, never
# remediated (the running servers are unchanged; quarantining them would not stop the next launch).
ALERT_ONLY_KINDS = frozenset({Kind.GOLDEN_IMAGE_CHANGED})


class Severity(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class Decision(StrEnum):
    REMEDIATE = "remediate"
    ALERT = "alert"
    IGNORE = "ignore"


class Mode(StrEnum):
    ENFORCE = "enforce"
    DRY_RUN = "dry-run"
    NOTIFY_ONLY = "notify-only"


class PostEvidenceAction(StrEnum):
    TERMINATE = "terminate"
    STOP = "stop"
    KEEP = "keep"


class Source(StrEnum):
    CLOUDTRAIL = "cloudtrail"
    CONFIG = "config"


class Actor(BaseModel):
    """Who made the change, as the event reports it (Config items carry no actor)."""

    model_config = ConfigDict(frozen=True)

    principal_arn: str | None = None
    principal_type: str | None = None
    session_issuer_arn: str | None = None
    source_ip: str | None = None
    user_agent: str | None = None
    invoked_by: str | None = None


class Finding(BaseModel):
    """One observed mutation, normalised from a CloudTrail record or a Config item change.

    `resource_ids` are what the event names (a group, an ENI, an ACL, an instance); `instance_ids` are
    the instances that mutation reaches, resolved at detection time.
    """

    model_config = ConfigDict(frozen=True)

    kind: Kind
    severity: Severity
    source: Source
    event_name: str
    event_source: str
    event_id: str
    event_time: str
    account: str
    region: str
    actor: Actor = Field(default_factory=Actor)
    resource_ids: tuple[str, ...] = ()
    instance_ids: tuple[str, ...] = ()
    evidence: dict[str, Any] = Field(default_factory=dict)
    error_code: str | None = None
    summary: str = ""
    # The event names a target that could not be resolved to instances (a private IP, a deleted
    # resource): alert rather than ignore.
    alert_if_unresolved: bool = False

    @property
    def change_key(self) -> str:
        """Identifies the change itself, so CloudTrail's and Config's reports of it can be matched."""
        return f"{self.kind}:{','.join(sorted(self.resource_ids))}"
