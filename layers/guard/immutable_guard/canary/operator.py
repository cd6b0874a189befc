"""What a person does to a rollout from the command line, with their own credentials: read its status,
steer it (pause, resume, promote, abort) and revert an alias in one step. Requests are written on the
alias's lock item, conditional on the execution that holds it; a rollout waiting for a person is answered
directly through its task token (SendTaskSuccess,
https://docs.aws.amazon.com/step-functions/latest/apireference/API_SendTaskSuccess.html: a token whose
task was answered already or ran out is TaskTimedOut; a malformed one InvalidToken)."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from immutable_guard.canary.errors import CanaryRefused
from immutable_guard.canary.history import Entry, history_events, timeline
from immutable_guard.canary.lock import RolloutLock
from immutable_guard.canary.plan import function_name
from immutable_guard.canary.steering import ABORT, CONFIRM, INCONCLUSIVE, PAUSE, PAUSED, RESUME, may_wait
from immutable_guard.canary.traffic import now_iso
from immutable_guard.errors import AwsCallFailed

if TYPE_CHECKING:
    from mypy_boto3_lambda import LambdaClient
    from mypy_boto3_stepfunctions import SFNClient
    from mypy_boto3_sts import STSClient

# The newest executions looked at to find an alias's last rollout (ListExecutions returns newest first).
_LAST_ROLLOUT_SCAN = 500


@dataclass
class Operator:
    """A person's view of the canary: the state machine, the lock table and their own identity."""

    sfn: SFNClient
    lambda_: LambdaClient
    sts: STSClient
    lock: RolloutLock
    state_machine: str

    def who(self) -> str:
        return str(self.sts.get_caller_identity()["Arn"])

    # ------------------------------------------------------------------------------------ reading
    def running(self, function: str, alias: str) -> tuple[dict[str, Any], str]:
        """The lock of the rollout running on the alias and its execution's status.

        Raises
        ------
        CanaryRefused
            No rollout holds the alias, or the one that holds it has ended.
        """
        held = self.lock.get(function, alias)
        if held is None or held["expires_at"] < time.time():
            raise CanaryRefused(f"no rollout of {function}:{alias} is running")
        status = str(self.sfn.describe_execution(executionArn=held["execution"])["status"])
        if status != "RUNNING":
            raise CanaryRefused(
                f"the rollout that holds {function}:{alias} ({held['execution']}) has ended {status}; "
                "nothing to steer (its lock is released by the recovery function or expires)"
            )
        return held, status

    def last_rollout(
        self, function: str, alias: str, status: str | None = None
    ) -> tuple[str, dict[str, Any]] | None:
        """The newest execution of a rollout of ``function:alias`` (with ``status``), and its description."""
        prefix = re.sub(r"[^\w-]", "-", f"{function}-{alias}-v")
        request: dict[str, Any] = {"stateMachineArn": self.state_machine}
        if status:
            request["statusFilter"] = status
        seen = 0
        for page in self.sfn.get_paginator("list_executions").paginate(**request):
            for execution in page["executions"]:
                seen += 1
                if seen > _LAST_ROLLOUT_SCAN:
                    return None
                if not str(execution["name"]).startswith(prefix):
                    continue
                described = dict(self.sfn.describe_execution(executionArn=execution["executionArn"]))
                document = _json(described.get("input"))
                if (
                    function_name(str(document.get("function"))) == function
                    and document.get("alias") == alias
                ):
                    return str(execution["executionArn"]), described
        return None

    def alias(self, function: str, alias: str) -> dict[str, Any]:
        try:
            return dict(self.lambda_.get_alias(FunctionName=function, Name=alias))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                raise CanaryRefused(f"function {function} has no alias {alias!r}") from exc
            raise

    def status(self, function: str, alias: str) -> list[str]:
        """What a person wants to know: where the alias routes now, and the running or last rollout."""
        found = self.alias(function, alias)
        lines = [f"alias {function}:{alias}: {describe_alias(found)} (revision {found.get('RevisionId')})"]
        try:
            held, status = self.running(function, alias)
        except CanaryRefused:
            last = self.last_rollout(function, alias)
            if last is None:
                return [*lines, f"no rollout of {function}:{alias} is running, and none was found"]
            arn, described = last
            story = timeline(history_events(self.sfn, arn))
            ended = story[-1].text if story else str(described["status"])
            return [
                *lines,
                f"no rollout is running; the last one, {arn}, ended {described['status']}: {ended}",
            ]
        plan = held["plan"]
        story = timeline(history_events(self.sfn, held["execution"]))
        lines += [
            f"rollout {held['execution']}: {status}",
            f"  version {plan.get('stable_version')} -> {plan.get('target_version')}, steps "
            + ", ".join(f"{s:g}" for s in plan.get("steps") or [])
            + f" %, checked every {plan.get('check_interval_seconds')} s",
        ]
        shift = _last(story, "shift")
        gate = _last(story, "gate")
        if shift:
            lines.append(f"  now: {shift.text}")
        if gate:
            lines.append(f"  last check: {gate.text.strip()}")
        if held.get("task_token") and held.get("waiting"):
            waiting = held["waiting"]
            lines.append(
                f"  WAITING for a person since {waiting.get('since')} ({waiting.get('reason')}): answer with "
                f"`{waiting.get('commands')}` by {waiting.get('answer_by')}, or it is rolled back"
            )
        request = held.get("request")
        if request:
            lines.append(
                f"  requested: {request.get('action')} by {request.get('by')} at {request.get('at')} "
                "(acted on at the next health check)"
            )
        lines.append(f"  waits for a person used: {held.get('waits', 0)} of {plan.get('person_waits', 0)}")
        return lines

    # ------------------------------------------------------------------------------------ steering
    def steer(self, function: str, alias: str, action: str) -> str:
        """Carry a person's request to the running rollout; returns what was done.

        Raises
        ------
        CanaryRefused
            Nothing runs, the rollout no longer holds the alias, there is nothing to resume, or a pause would
            take the rollout past the waits its history holds.
        """
        held, _ = self.running(function, alias)
        execution, plan = held["execution"], held["plan"]
        by, at = self.who(), now_iso()
        if held.get("task_token"):
            return self._answer(function, alias, held, action, by, at)
        if action == RESUME:
            pending = held.get("request") or {}
            if pending.get("action") == PAUSE and self.lock.withdraw_request(
                function, alias, execution, pending
            ):
                return (
                    f"the pause requested by {pending.get('by')} had not taken effect yet: withdrawn; "
                    f"{function}:{alias} goes on"
                )
            raise CanaryRefused(f"{function}:{alias} is not waiting for a person; nothing to resume")
        waits_below = None
        if action == PAUSE:
            if not may_wait(plan, int(held.get("waits") or 0), PAUSED):
                raise CanaryRefused(
                    f"this rollout has used the {held.get('waits', 0)} waits for a person its execution "
                    f"history leaves room for ({plan.get('person_waits', 0)}, one kept for confirm_promotion "
                    "if asked); "
                    "promote or abort it instead"
                )
            reserved = 1 if plan.get("confirm_promotion") else 0
            waits_below = int(plan.get("person_waits") or 0) - reserved
        request = {"action": action, "by": by, "at": at}
        if not self.lock.request(function, alias, execution, request, waits_below):
            raise CanaryRefused(
                f"the rollout {execution} no longer holds {function}:{alias} (it ended, or another rollout "
                "took the alias); nothing was recorded"
            )
        return (
            f"{action} requested by {by}: the rollout acts on it at its next health check (within "
            f"{plan.get('check_interval_seconds')} s)"
        )

    def _answer(self, function: str, alias: str, held: dict[str, Any], action: str, by: str, at: str) -> str:
        waiting = held.get("waiting") or {}
        if action == PAUSE:
            return f"{function}:{alias} is already waiting for a person ({waiting.get('reason')})"
        answer: dict[str, Any] = {"decision": action, "by": by, "at": at}
        if action == ABORT:
            answer["reason"] = f"aborted by {by} at {at}"
        token = str(held["task_token"])
        try:
            self.sfn.send_task_success(taskToken=token, output=json.dumps(answer))
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code not in {"TaskTimedOut", "InvalidToken", "TaskDoesNotExist"}:
                raise
            self.lock.end_wait(function, alias, held["execution"], token)
            raise CanaryRefused(
                f"the wait of {function}:{alias} is over ({code}: it was answered already or ran out); "
                f"see `immutable-guard canary status {function} --alias {alias}`"
            ) from exc
        self.lock.end_wait(function, alias, held["execution"], token)
        kind = waiting.get("kind")
        if action == ABORT:
            then = "it rolls back now"
        elif action == RESUME and kind != CONFIRM:
            then = "it looks at the step's health again" + (
                " (its re-checks for data start over)" if kind == INCONCLUSIVE else ""
            )
        else:
            then = "it promotes the new version now (the post-traffic hook still runs)"
        return f"{action} sent by {by} to the rollout waiting since {waiting.get('since')}: {then}"

    # ------------------------------------------------------------------------------------ revert
    def revert(self, function: str, alias: str, to_version: str | None = None) -> list[str]:
        """Point the alias at the previous stable version with no routing, in one conditional call; stop
        the running rollout (its recovery then finds the alias changed and leaves it as set here).

        Raises
        ------
        CanaryRefused
            No version to revert to can be told (use ``to_version``), or the alias changed while reverting.
        """
        found = self.alias(function, alias)
        held = self.lock.get(function, alias)
        live = held if held and held["expires_at"] >= time.time() else None
        lines: list[str] = []
        if to_version:
            version = str(to_version)
        elif live:
            version = str(live["plan"].get("stable_version"))
            lines.append(f"the running rollout {live['execution']} started from version {version}")
        else:
            version, why = self._replaced_version(function, alias, found)
            lines.append(why)
        request: dict[str, Any] = {
            "FunctionName": function,
            "Name": alias,
            "FunctionVersion": version,
            "RoutingConfig": {"AdditionalVersionWeights": {}},
        }
        if found.get("RevisionId"):
            request["RevisionId"] = found["RevisionId"]  # never over a change made since it was read
        try:
            self.lambda_.update_alias(**request)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code == "PreconditionFailedException":
                raise CanaryRefused(
                    f"{function}:{alias} changed while it was being reverted; read `canary status` and run "
                    "the revert again"
                ) from exc
            raise AwsCallFailed(
                f"alias {function}:{alias}: cannot point it at version {version}: {exc}"
            ) from exc
        lines.append(
            f"REVERTED {function}:{alias} from {describe_alias(found)} to version {version} with no routing"
        )
        if live:
            by = self.who()
            # Said on the lock first, for the recovery's alert (StopExecution's own error and cause are not
            # relied upon to reach it).
            self.lock.request(
                function,
                alias,
                live["execution"],
                {"action": "revert", "by": by, "at": now_iso(), "to_version": version},
            )
            try:
                self.sfn.stop_execution(
                    executionArn=live["execution"],
                    error="CanaryReverted",
                    cause=f"reverted by {by} at {now_iso()} to version {version}",
                )
                lines.append(
                    f"stopped the rollout {live['execution']}: its recovery leaves the alias as reverted and "
                    "releases the lock"
                )
            except ClientError as exc:
                lines.append(
                    f"the rollout {live['execution']} could not be stopped ({exc}); it stops at its "
                    "next step, finding the alias changed"
                )
        return lines

    def _replaced_version(self, function: str, alias: str, found: dict[str, Any]) -> tuple[str, str]:
        last = self.last_rollout(function, alias, status="SUCCEEDED")
        if last is None:
            raise CanaryRefused(
                f"no promoted rollout of {function}:{alias} was found to revert; name the version with "
                "--to-version"
            )
        arn, described = last
        output = _json(described.get("output"))
        plan = (output.get("plan") or {}).get("result") or {}
        promoted, previous = str(plan.get("target_version")), str(plan.get("stable_version"))
        routing = (found.get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {}
        if str(found.get("FunctionVersion")) != promoted or routing:
            raise CanaryRefused(
                f"{function}:{alias} serves {describe_alias(found)}, not version {promoted} that the last "
                f"promoted rollout ({arn}) left; name the version with --to-version"
            )
        return previous, f"the last promoted rollout {arn} replaced version {previous} with {promoted}"


def describe_alias(alias: dict[str, Any]) -> str:
    weights = (alias.get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {}
    shares = ", ".join(f"{float(share) * 100:g} % on version {version}" for version, share in weights.items())
    return f"version {alias.get('FunctionVersion')}" + (f" with {shares}" if shares else " with no routing")


def _json(text: Any) -> dict[str, Any]:
    try:
        value = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _last(story: list[Entry], kind: str) -> Entry | None:
    return next((entry for entry in reversed(story) if entry.kind == kind), None)
