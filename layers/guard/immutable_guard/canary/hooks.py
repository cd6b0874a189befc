"""Hooks are invoked through this wrapper, never by a direct lambda:invoke task, so whatever a hook answers
becomes a small, valid verdict. On real Step Functions a task result above the payload quota (256 KiB)
fails the execution with States.DataLimitExceeded, which a States.ALL catcher does not catch
(https://docs.aws.amazon.com/step-functions/latest/dg/concepts-error-handling.html): an oversized hook
answer would end the rollout with the alias still split and no rollback. Here an answer is read up to a
bound, parsed, and reduced to ``{"status", "reason"}``; anything else is a failed hook."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from mypy_boto3_lambda import LambdaClient

SUCCEEDED = "Succeeded"
FAILED = "Failed"
# A verdict is a status and a sentence; nothing a hook needs to say is larger.
MAX_ANSWER_BYTES = 32 * 1024
MAX_REASON_CHARS = 1000


class HookRequest(BaseModel):
    """What the state machine passes to the wrapper."""

    model_config = ConfigDict(extra="forbid")

    hook: str
    timeout_seconds: int = Field(ge=1, le=900)
    event: dict[str, Any]


def _short(text: str) -> str:
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 3] + "..."


def _verdict(status: str, reason: str, answered_bytes: int | None = None) -> dict[str, Any]:
    verdict: dict[str, Any] = {"status": status, "reason": _short(reason)}
    if answered_bytes is not None:
        verdict["answer_bytes"] = answered_bytes
    return verdict


def judge_answer(raw: bytes, truncated: bool, function_error: str | None) -> dict[str, Any]:
    """The verdict of one hook answer: Succeeded only for a JSON object whose status is "Succeeded"."""
    if truncated:
        return _verdict(
            FAILED,
            f"the hook answered more than {MAX_ANSWER_BYTES} bytes; a verdict is a status and a reason",
        )
    try:
        answer = json.loads(raw.decode("utf-8")) if raw else None
    except (UnicodeDecodeError, ValueError):
        return _verdict(FAILED, "the hook's answer is not JSON", len(raw))
    if function_error:
        error = answer if isinstance(answer, dict) else {}
        kind, message = error.get("errorType", function_error), error.get("errorMessage", "")
        return _verdict(FAILED, f"the hook raised {kind}: {message}", len(raw))
    if not isinstance(answer, dict):
        return _verdict(FAILED, f"the hook answered {type(answer).__name__}, not an object", len(raw))
    status = answer.get("status")
    reason = answer.get("reason")
    text = str(reason) if isinstance(reason, str | int | float) else ""
    if status == SUCCEEDED:
        return _verdict(SUCCEEDED, text, len(raw))
    said = f"status {status!r}" if isinstance(status, str) else "no status"
    return _verdict(FAILED, text or f"the hook answered {said}", len(raw))


def invoke_hook(lambda_: LambdaClient, request: HookRequest) -> dict[str, Any]:
    """Invoke the hook synchronously and return its bounded verdict; never raises for the hook's faults."""
    try:
        response = lambda_.invoke(
            FunctionName=request.hook,
            InvocationType="RequestResponse",
            Payload=json.dumps(request.event).encode(),
        )
        raw = response["Payload"].read(MAX_ANSWER_BYTES + 1)
    except (ClientError, BotoCoreError) as exc:
        return _verdict(FAILED, f"the hook could not be invoked or did not answer: {exc}")
    verdict = judge_answer(raw[:MAX_ANSWER_BYTES], len(raw) > MAX_ANSWER_BYTES, response.get("FunctionError"))
    verdict["hook"] = request.hook
    return verdict
