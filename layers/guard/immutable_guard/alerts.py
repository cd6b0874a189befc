"""The alert schema (versioned) and its publication on SNS. Subscribers read the JSON body; people read
the text; filter policies use the message attributes. Changing a field name is a breaking change."""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from botocore.exceptions import ClientError
from pydantic import BaseModel, Field, model_validator

from immutable_guard.errors import AwsCallFailed
from immutable_guard.ledger import now_iso

if TYPE_CHECKING:
    from mypy_boto3_sns import SNSClient

SCHEMA_VERSION = "1.0"

# What each stage means to the reader, in the words of the alert's first line.
STAGE_HEADLINES = {
    "detected": "Mutation detected on an immutable server",
    "contained": "Compromised server isolated",
    "manual_replacement": "Server isolated; it has no owner that can replace it: replace it by hand",
    "closed": "Incident closed: evidence preserved, server replaced",
    "failed": "Remediation FAILED: the server stays quarantined, a person must act",
    "released": "Incident released: quarantine undone",
    "breaker_open": "Blast-radius breaker open: new incidents are alerted, not remediated",
}


class Alert(BaseModel):
    """One alert. `stage` says where in Detect. Nuke. Replace. it was sent."""

    schema_version: str = SCHEMA_VERSION
    stage: str
    incident_id: str | None = None
    kind: str
    severity: str
    decision: str
    mode: str
    reason: str = ""
    account: str
    region: str
    instance_ids: list[str] = Field(default_factory=list)
    actor: dict[str, Any] = Field(default_factory=dict)
    event: dict[str, Any] = Field(default_factory=dict)
    evidence: dict[str, Any] = Field(default_factory=dict)
    summary: str = ""
    actions: list[str] = Field(default_factory=list)
    details: dict[str, Any] = Field(default_factory=dict)
    console_links: dict[str, str] = Field(default_factory=dict)
    sent_at: str = Field(default_factory=now_iso)

    @model_validator(mode="after")
    def _bounded(self) -> Alert:
        """SNS takes 256 KB. Event fields are the attacker's to choose (a 150 KB user agent fits in an
        event), so no field may make the alert itself fail."""
        self.actor = {k: _clip(v) for k, v in self.actor.items()}
        self.event = {k: _clip(v) for k, v in self.event.items()}
        self.summary = _clip(self.summary, 4_000)
        self.evidence = _bounded_dict(self.evidence)
        self.details = _bounded_dict(self.details)
        return self

    def subject(self) -> str:
        target = ", ".join(self.instance_ids) or self.account
        text = f"[Immutable Guard] {self.severity.upper()} {self.kind} {self.stage}: {target}"
        return text if len(text) <= 100 else text[:97] + "..."  # SNS subjects stop at 100 characters

    def text(self) -> str:
        """The readable version, for e-mail and chat."""
        lines = [STAGE_HEADLINES.get(self.stage, self.stage), ""]
        if self.summary:
            lines += [self.summary, ""]
        lines += [
            f"Incident:   {self.incident_id or '(none)'}",
            f"Kind:       {self.kind} (severity {self.severity})",
            f"Decision:   {self.decision} — mode {self.mode}" + (f" — {self.reason}" if self.reason else ""),
            f"Instances:  {', '.join(self.instance_ids) or '(account-level)'}",
            f"Account:    {self.account} / {self.region}",
        ]
        if self.actor:
            who = self.actor.get("principal_arn") or "unknown principal"
            lines.append(
                f"Who:        {who} from {self.actor.get('source_ip') or '?'}"
                f" ({self.actor.get('user_agent') or 'no user agent'})"
            )
        if self.event:
            lines.append(
                f"Event:      {self.event.get('source')} {self.event.get('name')} "
                f"at {self.event.get('time')} (id {self.event.get('id')})"
            )
        if self.actions:
            lines += ["", "What Immutable Guard did or will do:"] + [f"  - {a}" for a in self.actions]
        if self.console_links:
            lines += ["", "Console:"] + [f"  {name}: {url}" for name, url in self.console_links.items()]
        lines += ["", f"Alert schema {self.schema_version}; JSON body in the 'json' view of this message."]
        return "\n".join(lines)

    def message_attributes(self) -> dict[str, dict[str, str]]:
        # SNS rejects empty attribute values, so account-level alerts say "none".
        values = {
            "severity": self.severity,
            "kind": self.kind,
            "decision": self.decision,
            "stage": self.stage,
            "instance_id": self.instance_ids[0] if self.instance_ids else "none",
            "account": self.account,
        }
        return {k: {"DataType": "String", "StringValue": v} for k, v in values.items()}


def _clip(value: Any, limit: int = 1_000) -> Any:
    if isinstance(value, str) and len(value) > limit:
        return value[:limit] + f"... ({len(value)} characters)"
    return value


def _bounded_dict(value: dict[str, Any], limit: int = 20_000) -> dict[str, Any]:
    text = json.dumps(value, default=str)
    if len(text) <= limit:
        return value
    return {"truncated": True, "sha256": hashlib.sha256(text.encode()).hexdigest(), "prefix": text[:limit]}


def console_links(region: str, instance_ids: list[str], incident_id: str | None) -> dict[str, str]:
    links = {
        f"instance {i}": f"https://{region}.console.aws.amazon.com/ec2/home?region={region}#InstanceDetails:instanceId={i}"
        for i in instance_ids
    }
    if incident_id:
        links["remediation executions"] = (
            f"https://{region}.console.aws.amazon.com/states/home?region={region}#/statemachines"
            f"?search={quote(incident_id)}"
        )
    return links


def publish_alert(sns: SNSClient, topic_arn: str, alert: Alert) -> str:
    """Publish one alert; returns the SNS message id."""
    body = alert.model_dump(mode="json")
    text = alert.text()
    machine = json.dumps(body)
    # Per-protocol bodies: people get the text, programs get the versioned JSON.
    message = {
        "default": text,
        "email": text,
        "sqs": machine,
        "lambda": machine,
        "https": machine,
        "http": machine,
    }
    try:
        response = sns.publish(
            TopicArn=topic_arn,
            Subject=alert.subject(),
            Message=json.dumps(message),
            MessageStructure="json",
            MessageAttributes=alert.message_attributes(),  # type: ignore[arg-type]
        )
    except ClientError as exc:
        raise AwsCallFailed(f"alert topic {topic_arn}: cannot publish {alert.stage} alert: {exc}") from exc
    return response["MessageId"]
