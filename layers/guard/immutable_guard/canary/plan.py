"""The canary's input schema and the rollout plan built from it. The input is validated field by field so a
bad rollout fails at once, before any traffic moves, with a message naming what to fix."""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from immutable_guard.canary.errors import InvalidCanaryInput
from immutable_guard.step_input import describe_errors

MAX_STEP_PERCENT = 10.0
DEFAULT_STEPS: tuple[float, ...] = (10, 20, 30, 40, 50, 60, 70, 80, 90)
# Each look of the health gate is one turn of the canary state machine's loop. Step Functions fails an
# execution at 25,000 history events, leaving the alias split with no rollback; this is the most looks
# that stay under it with every retry spent (computed from statemachines/canary.asl.json by
# tests/infrastructure/test_execution_history.py).
MAX_GATE_CHECKS = 488
# Waits for a person (a pause, an inconclusive step, confirm-before-promotion) an execution can take: their
# history events are kept aside from the gate's looks above, and each wait leaves room for the looks that
# can follow it (see CanaryRequest.person_waits).
MAX_PERSON_WAITS = 10
DEFAULT_MAX_WAIT_SECONDS = 86_400
_EXECUTION_NAME_LIMIT = 80
_FUNCTION_ARN = re.compile(r"^arn:aws[\w-]*:lambda:[\w-]+:\d{12}:function:(?P<name>[\w-]+)$")
_FUNCTION_NAME = re.compile(r"^[\w-]{1,64}$")
_ALIAS_NAME = re.compile(r"^(?!^\d+$)[\w-]{1,128}$")


class CanaryRequest(BaseModel):
    """One rollout: the state machine's execution input.

    Attributes
    ----------
    function:
        Name or unqualified ARN of the Lambda function.
    alias:
        The alias whose traffic moves (it must exist and route nothing yet).
    target_version:
        The published version to roll out; not the alias's current one.
    steps:
        Cumulative percent of the alias's traffic on the new version at each step. Each step, and the final
        promotion to 100 %, raises the share by at most 10 points.
    bake_seconds:
        How long each step bakes. Only a failure ends it early: a step passes once its bake is over and
        its metrics have settled (``metric_delay_seconds`` later).
    check_interval_seconds:
        During the bake the gate looks this often, and fails the step at once on an alarm in ALARM, or
        once the new version has been shown worse on ``failure_limit`` consecutive checks.
    metric_delay_seconds:
        How late CloudWatch's Lambda metrics may arrive; a step is not passed on an unsettled window.
    failure_limit:
        Consecutive checks that must find the new version worse before the step fails (noise is not a
        regression). Alarms in ALARM fail at once.
    confidence:
        One-sided confidence with which "worse" must be shown: the lower bound of the difference of error
        rates (new minus stable) must exceed ``error_rate_tolerance``.
    alarms:
        CloudWatch alarm names (metric or composite); every one must exist. Any in ALARM fails the gate.
    min_invocations:
        Invocations of the new version needed over the rollout before the last step can pass (earlier steps
        need their share, in proportion to their traffic). 0 gates on alarms alone.
    error_rate_tolerance:
        Percentage points by which the new version's error rate may exceed the stable version's.
    hold_seconds, max_holds:
        With too little data the gate holds: it re-checks after ``hold_seconds``, at most ``max_holds``
        times, then fails the step.
    pre_traffic_hook, post_traffic_hook:
        Functions invoked synchronously before the first shift and after promotion; they return
        ``{"status": "Succeeded"}`` or the rollout is rolled back.
    hook_timeout_seconds:
        A hook that has not answered by then has failed.
    confirm_promotion:
        Wait for a person (``immutable-guard canary promote``) before the promotion to 100 %.
    on_inconclusive:
        What a step still short of data after ``max_holds`` re-checks does: ``rollback`` (the default), or
        ``wait`` for a person to resume (look again), promote or abort it.
    max_wait_seconds:
        How long a wait for a person lasts; with no answer by then the rollout is rolled back.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    function: str
    alias: str
    target_version: str
    steps: tuple[float, ...] = DEFAULT_STEPS
    bake_seconds: int = Field(default=300, ge=0, le=86_400)
    alarms: tuple[str, ...] = ()
    check_interval_seconds: int = Field(default=60, ge=1, le=3_600)
    metric_delay_seconds: int = Field(default=120, ge=0, le=900)
    min_invocations: int = Field(default=100, ge=0)
    error_rate_tolerance: float = Field(default=1.0, ge=0, le=100)
    failure_limit: int = Field(default=2, ge=1, le=10)
    confidence: float = Field(default=0.99, ge=0.5, le=0.9999)
    hold_seconds: int = Field(default=60, ge=0, le=3_600)
    max_holds: int = Field(default=5, ge=0, le=100)
    pre_traffic_hook: str | None = None
    post_traffic_hook: str | None = None
    hook_timeout_seconds: int = Field(default=300, ge=1, le=900)
    confirm_promotion: bool = False
    on_inconclusive: Literal["rollback", "wait"] = "rollback"
    max_wait_seconds: int = Field(default=DEFAULT_MAX_WAIT_SECONDS, ge=1, le=7 * 86_400)

    @field_validator("function", "pre_traffic_hook", "post_traffic_hook")
    @classmethod
    def _function_name_or_arn(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not (_FUNCTION_NAME.match(value) or _FUNCTION_ARN.match(value)):
            raise ValueError(
                f"{value!r} is not a function name or an unqualified function ARN (no version or alias)"
            )
        return value

    @field_validator("alias")
    @classmethod
    def _alias_name(cls, value: str) -> str:
        if not _ALIAS_NAME.match(value):
            raise ValueError(f"{value!r} is not an alias name")
        return value

    @field_validator("target_version", mode="before")
    @classmethod
    def _published_version(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("must be a published version number")
        text = str(value).strip() if isinstance(value, int | str) else value
        if not isinstance(text, str) or not text.isdigit() or int(text) < 1:
            raise ValueError(f"{value!r} is not a published version number ($LATEST cannot be rolled out)")
        return str(int(text))

    @field_validator("alarms")
    @classmethod
    def _alarm_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if any(not name.strip() for name in value):
            raise ValueError("an alarm name is empty")
        if len(set(value)) != len(value):
            raise ValueError("an alarm is listed twice")
        if len(value) > 100:
            raise ValueError("at most 100 alarms")
        return value

    @field_validator("steps")
    @classmethod
    def _small_steps(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        steps = list(value)
        if steps and steps[-1] == 100:
            steps.pop()  # 100 % is the promotion, which always follows the last step
        if not steps:
            raise ValueError("the plan needs at least one step below 100 %")
        previous = 0.0
        for number, percent in enumerate(steps, start=1):
            if not 0 < percent < 100:
                raise ValueError(f"step {number} is {percent} %: each step must be above 0 and below 100")
            if percent <= previous:
                raise ValueError(f"step {number} ({percent} %) does not raise the share of step {number - 1}")
            if percent - previous > MAX_STEP_PERCENT:
                raise ValueError(
                    f"step {number} raises traffic from {previous:g} % to {percent:g} % "
                    f"(+{percent - previous:g}); no single step may exceed {MAX_STEP_PERCENT:g} %"
                )
            previous = percent
        if 100 - previous > MAX_STEP_PERCENT:
            raise ValueError(
                f"the last step is {previous:g} %, so promotion would move {100 - previous:g} % at once; "
                f"end the plan at {100 - MAX_STEP_PERCENT:g} % or above"
            )
        return tuple(steps)

    @model_validator(mode="after")
    def _distinct_hooks(self) -> CanaryRequest:
        if self.function_name in {_name(self.pre_traffic_hook), _name(self.post_traffic_hook)}:
            raise ValueError("a hook cannot be the function being rolled out")
        return self

    @model_validator(mode="after")
    def _fits_one_execution(self) -> CanaryRequest:
        looks = self.most_gate_looks()
        if looks > MAX_GATE_CHECKS:
            per_step = (
                f"a {self.bake_seconds} s bake + {self.metric_delay_seconds} s metric delay looked at every "
                f"{self.check_interval_seconds} s, {self.max_holds} re-checks, "
                f"{self.failure_limit} suspect checks"
            )
            raise ValueError(
                f"check_interval_seconds, steps and max_holds: {len(self.steps)} steps x "
                f"{looks // len(self.steps)} looks ({per_step}) = {looks} health checks, more than one "
                f"execution's history holds ({MAX_GATE_CHECKS}); raise check_interval_seconds, or use fewer "
                "steps or re-checks"
            )
        if self.confirm_promotion and self.person_waits() < 1:
            raise ValueError(
                "confirm_promotion: the plan's health checks leave no room in one execution's history for a "
                "wait; raise check_interval_seconds, or use fewer steps or re-checks"
            )
        return self

    def person_waits(self) -> int:
        """How many times a rollout of this plan may wait for a person. After a wait the gate may look
        again as often as a step short of data can (``max_holds`` re-checks and the suspect checks), so each
        wait takes that many looks from what the plan's own looks leave of ``MAX_GATE_CHECKS``."""
        looks_after_a_wait = self.max_holds + self.failure_limit + 1
        room = (MAX_GATE_CHECKS - self.most_gate_looks()) // looks_after_a_wait
        return max(0, min(MAX_PERSON_WAITS, room))

    def most_gate_looks(self) -> int:
        """The most looks of the health gate a rollout of this plan can take: per step, one each check
        interval until the bake and metric delay are over, then the re-checks for data and the suspect
        checks that can follow."""
        baking = -(-(self.bake_seconds + self.metric_delay_seconds) // self.check_interval_seconds)
        return len(self.steps) * (baking + self.max_holds + self.failure_limit + 1)

    @property
    def function_name(self) -> str:
        return _name(self.function) or self.function


def _name(function: str | None) -> str | None:
    if function is None:
        return None
    match = _FUNCTION_ARN.match(function)
    return match.group("name") if match else function


def function_name(function: str) -> str:
    """A function's name, from its name or unqualified ARN."""
    return _name(function) or function


def parse_request(document: Any) -> CanaryRequest:
    """Validate an execution input; the error names every bad field.

    Raises
    ------
    InvalidCanaryInput
        The input is not an object, has unknown fields, or a field is missing or malformed.
    """
    if not isinstance(document, dict):
        raise InvalidCanaryInput(f"canary input must be a JSON object, not {type(document).__name__}")
    try:
        return CanaryRequest.model_validate(document)
    except ValidationError as exc:
        raise InvalidCanaryInput(f"invalid canary input: {describe_errors(exc)}") from exc


def weight(percent: float) -> float:
    """A percent as the fraction Lambda's routing configuration takes."""
    return round(percent / 100, 5)


def execution_name(function: str, alias: str, version: str, unique: str | None = None) -> str:
    """A name that says what the rollout is and never collides with another execution's.

    Step Functions keeps execution names unique per state machine for 90 days, and names built only from
    function, alias and version collide (``a-b`` + ``c`` and ``a`` + ``b-c``; a retried version). One
    rollout per alias is held by the lock in the ledger, not by the name, so the name ends with the start
    time and a random part, or with ``unique`` (letters, digits, ``-`` and ``_``) when the caller must get the
    same name again for the same request: a second StartExecution of a name then starts nothing.
    """
    unique = unique or f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{secrets.token_hex(4)}"
    base = re.sub(r"[^\w-]", "-", f"{_name(function) or function}-{alias}-v{version}")
    room = _EXECUTION_NAME_LIMIT - len(unique) - 1
    if len(base) > room:
        digest = hashlib.sha256(base.encode()).hexdigest()[:8]
        base = f"{base[: room - 9]}-{digest}"
    return f"{base}-{unique}"
