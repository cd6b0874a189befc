"""What every Lambda step does first with its input: validate it against the step's model, or count it
and fail with InvalidEvent naming the fields, which the state machine's Catch turns into a failure alert
that names the step. A wiring mistake then reads "EvidenceRequest is malformed: action: required field is
missing", not a KeyError deep in the logic."""

from __future__ import annotations

from typing import Any, Protocol, TypeVar

from pydantic import BaseModel, Field, ValidationError

from immutable_guard.detection.events import ACCOUNT_PATTERN, REGION_PATTERN
from immutable_guard.errors import InvalidEvent

_Model = TypeVar("_Model", bound=BaseModel)


class _Counter(Protocol):
    def add_metric(self, name: str, unit: Any, value: float) -> None: ...


def describe_errors(exc: ValidationError) -> str:
    """pydantic's errors as `field: problem` phrases a person can act on."""
    problems = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"]) or "input"
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown field (check its spelling)"
        elif error["type"] == "missing":
            message = "required field is missing"
        problems.append(f"{field}: {message}")
    return "; ".join(problems)


def parse_step_input(model: type[_Model], event: Any, metrics: _Counter | None = None) -> _Model:
    """The step's request, or InvalidEvent (counted as InvalidRequests when `metrics` is given)."""
    try:
        return model.model_validate(event)
    except ValidationError as exc:
        if metrics is not None:
            metrics.add_metric(name="InvalidRequests", unit="Count", value=1)
        raise InvalidEvent(f"{model.__name__} is malformed: {describe_errors(exc)}") from exc


class InstancePlace(BaseModel):
    """Where the incident's instance is (issue 14): the account and region every step acts in. Absent in
    the input of an execution started before organisation mode existed: the function's own."""

    account: str | None = Field(default=None, pattern=ACCOUNT_PATTERN)
    region: str | None = Field(default=None, pattern=REGION_PATTERN)


class _HasIncident(Protocol):
    def get(self, incident_id: str) -> Any: ...


def checked_place(request: InstancePlace, incident_id: str, ledger: _HasIncident) -> tuple[str, str]:
    """The account and region of the incident, as the ledger holds them; InvalidEvent when the step's
    input names another place (a wiring mistake, or an input made by hand): no step acts elsewhere than
    where Detect opened the incident."""
    incident = ledger.get(incident_id)
    for field, said, held in (
        ("account", request.account, incident.account),
        ("region", request.region, incident.region),
    ):
        if said is not None and said != held:
            raise InvalidEvent(
                f"incident {incident_id} is in {field} {held}, but the step's input says {said}"
            )
    return incident.account, incident.region
