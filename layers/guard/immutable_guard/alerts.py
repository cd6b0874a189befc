"""The alert schema (versioned) and its publication on SNS. Subscribers read the JSON body; people read
the text; filter policies use the message attributes. Changing a field name is a breaking change."""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any, get_args, get_origin
from urllib.parse import quote

from botocore.exceptions import ClientError
from pydantic import BaseModel, Field, model_validator

from immutable_guard.errors import AwsCallFailed
from immutable_guard.ledger import now_iso

if TYPE_CHECKING:
    from mypy_boto3_sns import SNSClient

SCHEMA_VERSION = "1.0"

# SNS refuses a message whose body and message attributes (name, type and value of each) together exceed
# the topic's MaximumMessageSize, 262,144 bytes by default, counted in UTF-8 bytes
# (https://docs.aws.amazon.com/sns/latest/dg/large-message-payloads.html,
# https://docs.aws.amazon.com/sns/latest/api/API_MessageAttributeValue.html). With MessageStructure
# "json" the body is the whole JSON document holding every protocol's body.
SNS_MAX_MESSAGE_BYTES = 262_144
# Caps tried in turn on each field's JSON size until the message fits: small fields are never touched,
# the largest are cut first. The last one fits any alert (about 20 fields of at most 200 bytes).
_FIELD_CAPS = (16_000, 8_000, 4_000, 2_000, 1_000, 500, 200)
# Never cut: they say which schema this is and what was cut.
_UNCUT_FIELDS = frozenset({"schema_version", "truncated"})

# What each stage means to the reader, in the words of the alert's first line.
STAGE_HEADLINES = {
    "detected": "Mutation detected on an immutable server",
    "tampered": "Quarantine undone by someone else: the server is contained again",
    "contained": "Compromised server isolated",
    "manual_replacement": "Server isolated; it has no owner that can replace it: replace it by hand",
    "closed": "Incident closed: evidence preserved, server replaced",
    "failed": "Remediation FAILED: the server stays quarantined, a person must act",
    "released": "Incident released: quarantine undone",
    "breaker_open": "Blast-radius breaker open: new incidents are alerted, not remediated",
    "account_joined": "Account joined the organisation: protected in dry-run until verified",
    "account_unverified": "Account failed its verification: back in dry-run",
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
    # The fields cut to fit SNS's message size, each with what it held; empty for a whole alert.
    truncated: list[str] = Field(default_factory=list)

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
        lines += self.truncation_note()
        lines += ["", f"Alert schema {self.schema_version}; JSON body in the 'json' view of this message."]
        return "\n".join(lines)

    def truncation_note(self) -> list[str]:
        """Lines saying what was cut to fit SNS's size limit (none for a whole alert)."""
        if not self.truncated:
            return []
        return ["", "TRUNCATED to fit SNS's 256 KB message limit (the full record is in the ledger):"] + [
            f"  - {item}" for item in self.truncated
        ]

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
    return _truncation_marker(text, limit)


def _truncation_marker(text: str, keep_bytes: int) -> dict[str, Any]:
    """What stands for a dict that was cut: its size, its hash (to match the full record) and a prefix."""
    data = text.encode()
    return {
        "truncated": True,
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "prefix": data[: max(keep_bytes, 0)].decode(errors="ignore"),
    }


def _json_bytes(value: Any) -> int:
    return len(json.dumps(value, default=str).encode())


def _cut(name: str, value: Any, cap: int, free_form: bool) -> tuple[Any, str | None]:
    """``value`` with its JSON at most about ``cap`` bytes, and a note of what was cut (None if nothing).
    A free-form dict (evidence, details) becomes a truncation marker; a list or a dict of strings keeps
    its first entries."""
    size = _json_bytes(value)
    if size <= cap:
        return value, None
    if isinstance(value, str):
        kept = value.encode()[: max(cap - 120, 0)].decode(errors="ignore")
        return f"{kept}...[truncated by Immutable Guard: {size} bytes]", f"{name}: {size} bytes"
    if isinstance(value, dict) and free_form:
        if value.get("truncated") is True and isinstance(value.get("prefix"), str):
            # Already a marker (the model bounds evidence and details itself): keep its size and hash,
            # which are the full record's, and shorten its prefix.
            prefix = value["prefix"].encode()[: max(cap - 200, 0)].decode(errors="ignore")
            return {**value, "prefix": prefix}, f"{name}: {value.get('bytes', size)} bytes"
        marker = _truncation_marker(json.dumps(value, default=str), cap - 200)
        return marker, f"{name}: {size} bytes"
    if isinstance(value, list | dict):
        entries = list(value.items()) if isinstance(value, dict) else list(value)
        kept_entries: list[Any] = []
        used = 2
        for entry in entries:
            used += _json_bytes(entry) + 2
            if used > cap:
                break
            kept_entries.append(entry)
        note = f"{name}: {len(kept_entries)} of {len(entries)} entries"
        return (dict(kept_entries) if isinstance(value, dict) else kept_entries), note
    return value, None


def _free_form(annotation: Any) -> bool:
    """True for a ``dict[str, Any]`` field, which a marker dict may stand in for."""
    return get_origin(annotation) is dict and get_args(annotation)[1:] == (Any,)


def fit_for_sns(alert: Alert, limit: int = SNS_MAX_MESSAGE_BYTES) -> Alert:
    """The alert itself when its SNS message fits ``limit`` bytes; otherwise a copy whose largest fields
    are cut, each cut named in ``truncated`` (and in the text), so that every protocol's body fits."""
    if sns_message_bytes(sns_request(alert)) <= limit:
        return alert
    values = alert.model_dump(mode="json")
    fields = type(alert).model_fields
    for cap in _FIELD_CAPS:
        update: dict[str, Any] = {}
        notes: list[str] = []
        for name, value in values.items():
            if name in _UNCUT_FIELDS:
                continue
            cut, note = _cut(name, value, cap, _free_form(fields[name].annotation))
            if note:
                update[name] = cut
                notes.append(note)
        candidate = alert.model_copy(update={**update, "truncated": [*alert.truncated, *notes]})
        if sns_message_bytes(sns_request(candidate)) <= limit:
            return candidate
    raise AwsCallFailed(f"{alert.stage} alert does not fit SNS's {limit} bytes even with every field cut")


def sns_request(alert: Alert) -> dict[str, Any]:
    """The Publish request for ``alert``: people get the text, programs get the versioned JSON."""
    text = alert.text()
    machine = json.dumps(alert.model_dump(mode="json"))
    message = {
        "default": text,
        "email": text,
        "sms": alert.subject(),  # a text message holds a line, not a report
        "sqs": machine,
        "lambda": machine,
        "https": machine,
        "http": machine,
    }
    return {
        "Subject": alert.subject(),
        "Message": json.dumps(message),
        "MessageStructure": "json",
        "MessageAttributes": alert.message_attributes(),
    }


def sns_message_bytes(request: dict[str, Any]) -> int:
    """The bytes SNS counts against its message size: the body and every attribute's name, type and
    value. The subject is counted too (SNS caps it separately at 100 characters): a margin."""
    total = len(request["Message"].encode()) + len(request.get("Subject", "").encode())
    for name, attribute in request.get("MessageAttributes", {}).items():
        total += len(name.encode()) + len(attribute["DataType"].encode())
        total += len(str(attribute.get("StringValue", "")).encode())
    return total


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
    """Publish one alert, cut to fit SNS's message size if need be; returns the SNS message id."""
    request = sns_request(fit_for_sns(alert))
    try:
        response = sns.publish(TopicArn=topic_arn, **request)
    except ClientError as exc:
        raise AwsCallFailed(f"alert topic {topic_arn}: cannot publish {alert.stage} alert: {exc}") from exc
    return response["MessageId"]
