"""The canary's alerts on the shared alert topic: the same versioned schema (kind "canary", its own
stages), plus a `rollout` object and a `function` message attribute, so existing subscribers keep working."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from immutable_guard.alerts import Alert, publish_alert

if TYPE_CHECKING:
    from mypy_boto3_sns import SNSClient

KIND = "canary"
STARTED = "canary_started"
PROMOTED = "canary_promoted"
ROLLED_BACK = "canary_rolled_back"
ROLLBACK_FAILED = "canary_rollback_failed"
SUPERSEDED = "canary_superseded"
ABORTED = "canary_aborted"
WAITING = "canary_waiting"

# stage -> (headline, severity, decision)
STAGES: dict[str, tuple[str, str, str]] = {
    STARTED: ("Canary rollout started", "low", "rollout"),
    PROMOTED: ("Canary rollout promoted: the alias serves the new version", "low", "promote"),
    ROLLED_BACK: (
        "Canary rollout ROLLED BACK: the alias serves the stable version again",
        "high",
        "rollback",
    ),
    ROLLBACK_FAILED: (
        "Canary rollback FAILED: the alias may still route traffic to the new version, a person must act",
        "critical",
        "rollback",
    ),
    SUPERSEDED: (
        "Canary rollout SUPERSEDED: someone else changed the alias; the canary left it as found",
        "high",
        "leave",
    ),
    ABORTED: (
        "Canary rollout ABORTED, timed out or crashed: its execution ended before it finished",
        "high",
        "rollback",
    ),
    WAITING: (
        "Canary rollout WAITING for a person: answer it, or it is rolled back when the wait runs out",
        "high",
        "wait",
    ),
}


class CanaryStageEvent(BaseModel):
    """What the state machine sends to the notify function."""

    stage: str
    plan: dict[str, Any]
    detail: dict[str, Any] = Field(default_factory=dict)
    execution: str | None = None


class CanaryAlert(Alert):
    """An alert about one rollout; ``rollout`` names the function, alias and versions."""

    rollout: dict[str, Any] = Field(default_factory=dict)

    def _target(self) -> str:
        return f"{self.rollout.get('function')}:{self.rollout.get('alias')}"

    def subject(self) -> str:
        text = f"[Immutable Guard] {self.severity.upper()} {self.stage}: {self._target()}"
        return text if len(text) <= 100 else text[:97] + "..."

    def text(self) -> str:
        headline = STAGES.get(self.stage, (self.stage, "", ""))[0]
        lines = [headline, ""]
        if self.summary:
            lines += [self.summary, ""]
        lines += [
            f"Alias:      {self._target()}",
            f"Versions:   stable {self.rollout.get('stable_version')}"
            f" -> new {self.rollout.get('target_version')}",
            f"Plan:       {', '.join(f'{s:g} %' for s in self.rollout.get('steps', []))}, then 100 %",
            f"Account:    {self.account} / {self.region}",
        ]
        if self.reason:
            lines.append(f"Why:        {self.reason}")
        if self.actions:
            lines += ["", "What Immutable Guard did:"] + [f"  - {a}" for a in self.actions]
        if self.console_links:
            lines += ["", "Console:"] + [f"  {name}: {url}" for name, url in self.console_links.items()]
        lines += ["", f"Alert schema {self.schema_version}; JSON body in the 'json' view of this message."]
        return "\n".join(lines)

    def message_attributes(self) -> dict[str, dict[str, str]]:
        attributes = super().message_attributes()
        attributes["function"] = {
            "DataType": "String",
            "StringValue": str(self.rollout.get("function") or "none"),
        }
        return attributes


# What every canary alert says of its rollout (and what the lock keeps of the plan, so the recovery
# function can alert without the execution's input).
ROLLOUT_FIELDS = ("function", "alias", "stable_version", "target_version", "steps", "alarms", "bake_seconds")


def build_alert(event: CanaryStageEvent, account: str, region: str) -> CanaryAlert:
    """The alert for one stage of a rollout."""
    if event.stage not in STAGES:
        raise ValueError(f"unknown canary stage {event.stage!r}; expected one of {', '.join(STAGES)}")
    _, severity, decision = STAGES[event.stage]
    plan, detail = event.plan, event.detail
    rollout = {key: plan.get(key) for key in ROLLOUT_FIELDS}
    reason, summary, actions = "", "", []
    if event.stage == STARTED:
        summary = (
            f"Traffic of {plan.get('function')}:{plan.get('alias')} moves from version "
            f"{plan.get('stable_version')} to {plan.get('target_version')} in {plan.get('step_count')} "
            "checked steps; any failed check rolls it back."
        )
    elif event.stage == PROMOTED:
        summary = f"Every step was healthy; version {plan.get('target_version')} now serves all traffic."
        actions = [f"alias points to version {plan.get('target_version')} with no routing"]
    elif event.stage == WAITING:
        reason = str(detail.get("reason") or "unknown")
        summary = (
            f"The alias keeps {detail.get('percent')} % on version {plan.get('target_version')} while the "
            "rollout waits; the health gate does not look until it is answered. Run: "
            f"{detail.get('commands')}"
        )
    elif event.stage == SUPERSEDED:
        reason = str(detail.get("reason") or "unknown")
        summary = (
            "The alias is no longer as this rollout left it (another deployment, a hotfix or a second "
            "rollout changed it), so the canary stopped without touching it. Check that the alias serves "
            f"what you expect: {detail.get('found', 'see the details')}."
        )
        if detail.get("action"):
            actions = [f"alias {detail['action']}"]
    else:
        reason = str(detail.get("reason") or detail.get("error") or "unknown")
        summary = f"Version {plan.get('target_version')} was kept (never deleted) for diagnosis."
        if detail.get("action"):
            actions = [f"alias {detail['action']}"]
    links = {}
    if event.execution:
        links["execution"] = (
            f"https://{region}.console.aws.amazon.com/states/home?region={region}#/v2/executions/details/"
            f"{event.execution}"
        )
    return CanaryAlert(
        stage=event.stage,
        kind=KIND,
        severity=severity,
        decision=decision,
        mode="enforce",
        reason=reason,
        account=account,
        region=region,
        summary=summary,
        actions=actions,
        details=detail,
        rollout=rollout,
        console_links=links,
    )


def notify(
    sns: SNSClient, topic_arn: str, event: CanaryStageEvent, account: str, region: str
) -> dict[str, Any]:
    """Publish the stage's alert; returns what was sent."""
    alert = build_alert(event, account, region)
    message_id = publish_alert(sns, topic_arn, alert)
    return {
        "stage": alert.stage,
        "severity": alert.severity,
        "message_id": message_id,
        "reason": alert.reason,
    }
