"""One rollout per alias: a lock item in the ledger table, taken by a conditional write in preflight and
released in every end state. It also records the alias exactly as the rollout last left it (version,
routing, RevisionId), which is what the rollback and the abort handler compare against before they touch
anything: an alias that is not as recorded was changed by someone else and is left alone.

The lock expires on its own (``expires_at``) an hour after the longest the plan can take, so a holder
that crashed and whose abort handler also failed cannot block the alias forever. The state machine
releases it on every path it controls; the execution-status handler releases it for an execution that
was aborted, timed out or crashed.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from immutable_guard.canary.alerts import ROLLOUT_FIELDS
from immutable_guard.canary.errors import CanaryRefused
from immutable_guard.errors import AwsCallFailed

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

_PREFIX = "CANARY#"
# Margin on top of the plan's own longest duration (task retries, Lambda cold starts, a slow hook).
LOCK_MARGIN_SECONDS = 3600
# What each step may spend beyond its bake and holds: shift, gate and their retries.
_STEP_OVERHEAD_SECONDS = 300
# Fields of the plan kept with the lock: what the abort handler needs to alert about the rollout without
# it, and what steering needs to answer a person (status, waits).
PLAN_FIELDS = (
    *ROLLOUT_FIELDS,
    "check_interval_seconds",
    "confirm_promotion",
    "on_inconclusive",
    "max_wait_seconds",
    "person_waits",
)


def lock_seconds(plan: dict[str, Any]) -> int:
    """How long the lock holds: the longest the plan can run, plus an hour."""
    steps = len(plan.get("steps") or [])
    per_step = int(plan["bake_seconds"]) + int(plan["max_holds"]) * int(plan["hold_seconds"])
    hooks = 2 * (int(plan["hook_timeout_seconds"]) + 60)
    return hooks + steps * (per_step + _STEP_OVERHEAD_SECONDS) + LOCK_MARGIN_SECONDS


def alias_state(alias: dict[str, Any]) -> dict[str, Any]:
    """The parts of a GetAlias / UpdateAlias answer that say who routes what."""
    weights = (alias.get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {}
    return {
        "version": str(alias.get("FunctionVersion")),
        "routing": {str(version): float(share) for version, share in weights.items()},
        "revision_id": alias.get("RevisionId"),
    }


def _key(function: str, alias: str) -> dict[str, Any]:
    return {"pk": {"S": f"{_PREFIX}{function}:{alias}"}}


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class RolloutLock:
    """The lock of one alias in the ledger table."""

    def __init__(self, dynamodb: DynamoDBClient, table_name: str) -> None:
        self._db = dynamodb
        self._table = table_name

    def acquire(self, plan: dict[str, Any], execution: str, seconds: int) -> None:
        """Take the alias's lock for ``execution`` (again, for a retried preflight of the same execution).

        Raises
        ------
        CanaryRefused
            Another rollout holds the alias and its lock has not expired.
        """
        now = int(time.time())
        summary = {field: plan.get(field) for field in PLAN_FIELDS}
        try:
            self._db.put_item(
                TableName=self._table,
                Item={
                    **_key(plan["function"], plan["alias"]),
                    "execution": {"S": execution},
                    "plan": {"S": json.dumps(summary)},
                    "acquired_at": {"N": str(now)},
                    "expires_at": {"N": str(now + seconds)},
                },
                ConditionExpression="attribute_not_exists(pk) OR expires_at < :now OR execution = :me",
                ExpressionAttributeValues={":now": {"N": str(now)}, ":me": {"S": execution}},
            )
        except ClientError as exc:
            if _code(exc) != "ConditionalCheckFailedException":
                raise AwsCallFailed(f"rollout lock of {plan['function']}:{plan['alias']}: {exc}") from exc
            holder = self.get(plan["function"], plan["alias"]) or {}
            raise CanaryRefused(
                f"alias: another rollout of {plan['function']}:{plan['alias']} holds it "
                f"({holder.get('execution', 'unknown execution')}); one rollout per alias at a time"
            ) from exc

    def get(self, function: str, alias: str) -> dict[str, Any] | None:
        """The lock item (execution, plan, alias_state, expires_at), or None when nobody holds it."""
        try:
            item = self._db.get_item(
                TableName=self._table, Key=_key(function, alias), ConsistentRead=True
            ).get("Item")
        except ClientError as exc:
            raise AwsCallFailed(f"rollout lock of {function}:{alias}: cannot read it: {exc}") from exc
        if not item:
            return None

        def document(name: str) -> Any:
            return json.loads(item[name]["S"]) if name in item else None

        return {
            "execution": item["execution"]["S"],
            "plan": document("plan") or {},
            "alias_state": document("alias_state"),
            "expires_at": int(item["expires_at"]["N"]),
            # A person's request the gate acts on at its next check (pause, promote, abort).
            "request": document("request"),
            # While the rollout waits for a person: why, since when, and the token that answers it.
            "waiting": document("waiting"),
            "task_token": item["task_token"]["S"] if "task_token" in item else None,
            "waits": int(item["waits"]["N"]) if "waits" in item else 0,
        }

    def record(
        self,
        function: str,
        alias: str,
        execution: str,
        state: dict[str, Any],
        plan: dict[str, Any] | None = None,
    ) -> bool:
        """Remember the alias as ``execution`` just left it (and the final ``plan``, from preflight);
        False when the lock is no longer its own."""
        request: dict[str, Any] = {
            "TableName": self._table,
            "Key": _key(function, alias),
            "UpdateExpression": "SET alias_state = :state",
            "ConditionExpression": "execution = :me",
            "ExpressionAttributeValues": {":state": {"S": json.dumps(state)}, ":me": {"S": execution}},
        }
        if plan is not None:
            request["UpdateExpression"] += ", #plan = :plan"
            request["ExpressionAttributeNames"] = {"#plan": "plan"}
            summary = {field: plan.get(field) for field in PLAN_FIELDS}
            request["ExpressionAttributeValues"][":plan"] = {"S": json.dumps(summary)}
        try:
            self._db.update_item(**request)
        except ClientError as exc:
            if _code(exc) == "ConditionalCheckFailedException":
                return False
            raise AwsCallFailed(
                f"rollout lock of {function}:{alias}: cannot record the alias: {exc}"
            ) from exc
        return True

    def release(self, function: str, alias: str, execution: str) -> bool:
        """Release the lock if ``execution`` holds it; never another rollout's. True when it was released."""
        try:
            self._db.delete_item(
                TableName=self._table,
                Key=_key(function, alias),
                ConditionExpression="execution = :me",
                ExpressionAttributeValues={":me": {"S": execution}},
            )
        except ClientError as exc:
            if _code(exc) == "ConditionalCheckFailedException":
                return False
            raise AwsCallFailed(f"rollout lock of {function}:{alias}: cannot release it: {exc}") from exc
        return True

    # ------------------------------------------------------------------------------------ steering
    def request(
        self,
        function: str,
        alias: str,
        execution: str,
        request: dict[str, Any],
        waits_below: int | None = None,
    ) -> bool:
        """Leave a person's request for ``execution``'s gate; False when that execution no longer holds the
        lock (it ended, or expired and another rollout took it), or has used ``waits_below`` waits."""
        condition = "execution = :me AND expires_at > :now"
        values: dict[str, Any] = {
            ":request": {"S": json.dumps(request)},
            ":me": {"S": execution},
            ":now": {"N": str(int(time.time()))},
        }
        if waits_below is not None:
            condition += " AND (attribute_not_exists(waits) OR waits < :most)"
            values[":most"] = {"N": str(waits_below)}
        return self._update(
            function,
            alias,
            "SET #request = :request",
            condition,
            values,
            f"cannot record the request of {execution}",
        )

    def withdraw_request(self, function: str, alias: str, execution: str, request: dict[str, Any]) -> bool:
        """Remove ``request`` (as `get` returned it) if it is still pending: a resume cancels a pause the gate
        has not acted on yet."""
        return self._update(
            function,
            alias,
            "REMOVE #request",
            "execution = :me AND #request = :request",
            {":me": {"S": execution}, ":request": {"S": json.dumps(request)}},
            f"cannot withdraw the request of {execution}",
        )

    def begin_wait(
        self,
        function: str,
        alias: str,
        execution: str,
        token: str,
        waiting: dict[str, Any],
        until: int,
        consumed: dict[str, Any] | None = None,
    ) -> bool:
        """Record that ``execution`` waits for a person: the task token that answers it, why, one more wait
        counted, and the lock kept until ``until`` (epoch seconds). ``consumed`` is the request (a pause) the
        wait answers: it is removed only if it is still the one pending, so a promote or abort written
        meanwhile is not lost. False when ``execution`` no longer holds the lock."""
        expression = (
            "SET task_token = :token, waiting = :waiting, waits = if_not_exists(waits, :zero) + :one, "
            "expires_at = :until"
        )
        values = {
            ":token": {"S": token},
            ":waiting": {"S": json.dumps(waiting)},
            ":zero": {"N": "0"},
            ":one": {"N": "1"},
            ":until": {"N": str(until)},
            ":me": {"S": execution},
        }
        what = f"cannot record the wait of {execution}"
        if consumed and self._update(
            function,
            alias,
            expression + " REMOVE #request",
            "execution = :me AND #request = :consumed",
            {**values, ":consumed": {"S": json.dumps(consumed)}},
            what,
        ):
            return True
        return self._update(function, alias, expression, "execution = :me", values, what)

    def end_wait(self, function: str, alias: str, execution: str, token: str) -> bool:
        """Forget an answered wait (only this one: a later wait has another token)."""
        return self._update(
            function,
            alias,
            "REMOVE task_token, waiting",
            "execution = :me AND task_token = :token",
            {":me": {"S": execution}, ":token": {"S": token}},
            f"cannot clear the wait of {execution}",
        )

    def _update(
        self,
        function: str,
        alias: str,
        expression: str,
        condition: str,
        values: dict[str, Any],
        what: str,
    ) -> bool:
        update: dict[str, Any] = {
            "TableName": self._table,
            "Key": _key(function, alias),
            "UpdateExpression": expression,
            "ConditionExpression": condition,
            "ExpressionAttributeValues": values,
        }
        if "#request" in expression + condition:
            # "request" is a DynamoDB reserved word: it is always named through #request.
            update["ExpressionAttributeNames"] = {"#request": "request"}
        try:
            self._db.update_item(**update)
        except ClientError as exc:
            if _code(exc) == "ConditionalCheckFailedException":
                return False
            raise AwsCallFailed(f"rollout lock of {function}:{alias}: {what}: {exc}") from exc
        return True
