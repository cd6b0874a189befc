"""The requests each canary function receives from canary.asl.json, validated so a wiring mistake fails
with the field's name rather than a KeyError deep in the logic."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict


class _Step(BaseModel):
    model_config = ConfigDict(extra="ignore")

    plan: dict[str, Any]


class PreflightRequest(BaseModel):
    """The execution's input and the execution's own ARN (the lock's holder)."""

    model_config = ConfigDict(extra="forbid")

    request: Any
    execution: str


class ShiftRequest(_Step):
    action: Literal["shift", "promote", "release"]
    index: int = 0
    revision_id: str | None = None
    # For a promotion: the step the alias is on (a person may promote before the last one).
    step: dict[str, Any] | None = None


class GateRequest(_Step):
    step: dict[str, Any]
    checks: int = 0
    failures: int = 0


class WaitRequest(_Step):
    """The gate's verdict that asks for a person, the step the alias is on, and the task token."""

    gate: dict[str, Any]
    step: dict[str, Any]
    token: str


class RollbackRequest(_Step):
    failure: dict[str, Any] | None = None


def correlation(plan: dict[str, Any]) -> dict[str, str]:
    """Log keys that tie every line of one rollout together."""
    return {
        "canary": f"{plan.get('function')}:{plan.get('alias')}",
        "stable_version": str(plan.get("stable_version")),
        "target_version": str(plan.get("target_version")),
    }
