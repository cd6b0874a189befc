"""Moves an alias's traffic: preflight, one shift, promotion and rollback. Every change is conditional on
the alias's RevisionId and on the alias still being exactly as this rollout left it (as recorded with its
lock), so a concurrent change stops the rollout instead of being overwritten: the rollback then leaves the
alias as it found it and reports the rollout superseded."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from immutable_guard.canary.errors import AliasChanged, CanaryRefused, RollbackFailed
from immutable_guard.canary.lock import RolloutLock, alias_state, lock_seconds
from immutable_guard.canary.plan import CanaryRequest, weight
from immutable_guard.errors import AwsCallFailed

if TYPE_CHECKING:
    from mypy_boto3_cloudwatch import CloudWatchClient
    from mypy_boto3_lambda import LambdaClient

# The canary's role may change the alias of, and invoke, only functions carrying this tag (IAM condition
# aws:ResourceTag in template.yaml); preflight checks it to refuse early with a clear message.
CANARY_TAG_KEY = "immutable-guard:canary"
CANARY_TAG_VALUE = "allowed"
_WEIGHT_TOLERANCE = 1e-6


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _routing(alias: dict[str, Any]) -> dict[str, float]:
    weights = (alias.get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {}
    return {str(version): float(share) for version, share in weights.items()}


def _describe(alias: dict[str, Any]) -> str:
    routing = _routing(alias)
    shares = ", ".join(f"{share * 100:g} % on version {version}" for version, share in routing.items())
    return f"version {alias.get('FunctionVersion')}" + (f" with {shares}" if shares else " with no routing")


def _get_alias(lambda_: LambdaClient, function: str, alias: str) -> dict[str, Any]:
    try:
        return dict(lambda_.get_alias(FunctionName=function, Name=alias))
    except ClientError as exc:
        if _error_code(exc) == "ResourceNotFoundException":
            raise AliasChanged(f"alias {function}:{alias} no longer exists") from exc
        raise AwsCallFailed(f"alias {function}:{alias}: cannot read it: {exc}") from exc


# ---------------------------------------------------------------------------------------------- preflight
def preflight(
    lambda_: LambdaClient,
    cloudwatch: CloudWatchClient,
    request: CanaryRequest,
    lock: RolloutLock | None = None,
    execution: str | None = None,
) -> dict[str, Any]:
    """Refuse a rollout that cannot be run safely; return the plan every later step works from.

    With ``lock``, the alias's lock is taken for ``execution`` first, so everything below is read while no
    other rollout can move the alias; a refusal releases it again.

    Raises
    ------
    CanaryRefused
        Another rollout holds the alias, the alias is missing or already routing, the version is missing
        or current, an alarm is missing or already in ALARM, a hook is missing, or a function lacks the
        canary tag.
    """
    if lock is None:
        return _check(lambda_, cloudwatch, request)[0]
    if not execution:
        raise ValueError("taking the rollout lock needs the execution's ARN")
    draft = {**request.model_dump(mode="json"), "function": request.function_name}
    lock.acquire(draft, execution, lock_seconds(draft))
    try:
        plan, found = _check(lambda_, cloudwatch, request)
    except Exception:
        lock.release(request.function_name, request.alias, execution)
        raise
    plan["execution"] = execution
    lock.record(plan["function"], plan["alias"], execution, found, plan)
    return plan


def _check(
    lambda_: LambdaClient, cloudwatch: CloudWatchClient, request: CanaryRequest
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The plan, and the alias as preflight found it."""
    function = request.function_name
    try:
        alias = dict(lambda_.get_alias(FunctionName=request.function, Name=request.alias))
    except ClientError as exc:
        if _error_code(exc) == "ResourceNotFoundException":
            raise CanaryRefused(f"alias: function {function} has no alias {request.alias!r}") from exc
        raise AwsCallFailed(f"alias {function}:{request.alias}: cannot read it: {exc}") from exc
    routing = _routing(alias)
    if routing:
        raise CanaryRefused(
            f"alias: {function}:{request.alias} already routes traffic ({_describe(alias)}); a rollout is in "
            "progress or was abandoned: finish it or reset the alias's routing first"
        )
    stable = str(alias["FunctionVersion"])
    if stable == request.target_version:
        raise CanaryRefused(
            f"target_version: {function}:{request.alias} already points to version {stable}; "
            "nothing to roll out"
        )
    if not stable.isdigit():
        raise CanaryRefused(
            f"alias: {function}:{request.alias} points to {stable}, not a published version; "
            "it cannot be rolled back to"
        )
    target = _function_configuration(lambda_, request.function, request.target_version, "target_version")
    function_arn = str(target["FunctionArn"]).rsplit(":", 1)[0]
    _require_tag(lambda_, function_arn, "function")
    hooks = {}
    for field in ("pre_traffic_hook", "post_traffic_hook"):
        hook = getattr(request, field)
        if hook is not None:
            configuration = _function_configuration(lambda_, hook, None, field)
            _require_tag(lambda_, str(configuration["FunctionArn"]), field)
            hooks[field] = str(configuration["FunctionArn"])
    _require_alarms(cloudwatch, request.alarms)
    plan = {
        **request.model_dump(mode="json"),
        "function": function,
        "function_arn": function_arn,
        "stable_version": stable,
        "steps": list(request.steps),
        "step_count": len(request.steps),
        "pre_traffic_hook": hooks.get("pre_traffic_hook"),
        "post_traffic_hook": hooks.get("post_traffic_hook"),
        "revision_id": alias.get("RevisionId"),
        "started_at": now_iso(),
        # How often a person may make it wait (pause, inconclusive step, confirmation): the history's bound.
        "person_waits": request.person_waits(),
        # The first look after a shift: a failure can show before the bake is over.
        "first_check_seconds": min(request.check_interval_seconds, request.bake_seconds),
    }
    return plan, alias_state(alias)


def _function_configuration(
    lambda_: LambdaClient, function: str, version: str | None, field: str
) -> dict[str, Any]:
    try:
        if version is None:
            return dict(lambda_.get_function_configuration(FunctionName=function))
        return dict(lambda_.get_function_configuration(FunctionName=function, Qualifier=version))
    except ClientError as exc:
        if _error_code(exc) == "ResourceNotFoundException":
            what = f"function {function} has no version {version}" if version else f"function {function}"
            raise CanaryRefused(f"{field}: {what} does not exist") from exc
        raise AwsCallFailed(f"{field}: cannot read function {function}: {exc}") from exc


def _require_tag(lambda_: LambdaClient, function_arn: str, field: str) -> None:
    try:
        tags = lambda_.list_tags(Resource=function_arn).get("Tags") or {}
    except ClientError as exc:
        raise AwsCallFailed(f"{field}: cannot read the tags of {function_arn}: {exc}") from exc
    if tags.get(CANARY_TAG_KEY) != CANARY_TAG_VALUE:
        raise CanaryRefused(
            f"{field}: {function_arn} lacks the tag {CANARY_TAG_KEY}={CANARY_TAG_VALUE}; "
            "the canary may only change aliases of, and invoke, functions that carry it"
        )


def alarm_states(cloudwatch: CloudWatchClient, names: tuple[str, ...] | list[str]) -> dict[str, str | None]:
    """Each alarm's state; None for an alarm that does not exist (which never counts as OK)."""
    if not names:
        return {}
    states: dict[str, str | None] = dict.fromkeys(names)
    try:
        paginator = cloudwatch.get_paginator("describe_alarms")
        for page in paginator.paginate(AlarmNames=list(names), AlarmTypes=["MetricAlarm", "CompositeAlarm"]):
            for alarm in [*page.get("MetricAlarms", []), *page.get("CompositeAlarms", [])]:
                states[alarm["AlarmName"]] = str(alarm["StateValue"])
    except ClientError as exc:
        raise AwsCallFailed(f"alarms {', '.join(names)}: cannot read their state: {exc}") from exc
    return states


def _require_alarms(cloudwatch: CloudWatchClient, names: tuple[str, ...]) -> None:
    states = alarm_states(cloudwatch, names)
    missing = sorted(name for name, state in states.items() if state is None)
    if missing:
        raise CanaryRefused(
            f"alarms: {', '.join(missing)} do{'es' if len(missing) == 1 else ''} not exist; "
            "a missing alarm would never report a problem"
        )
    firing = sorted(name for name, state in states.items() if state == "ALARM")
    if firing:
        raise CanaryRefused(f"alarms: {', '.join(firing)} already in ALARM before any traffic moved")


# ---------------------------------------------------------------------------------------------- shifting
def _update(
    lambda_: LambdaClient,
    plan: dict[str, Any],
    version: str,
    routing: dict[str, float],
    revision_id: str | None,
) -> dict[str, Any]:
    request: dict[str, Any] = {
        "FunctionName": plan["function"],
        "Name": plan["alias"],
        "FunctionVersion": version,
        "RoutingConfig": {"AdditionalVersionWeights": routing},
    }
    if revision_id:
        request["RevisionId"] = revision_id
    try:
        return dict(lambda_.update_alias(**request))
    except ClientError as exc:
        if _error_code(exc) in {"PreconditionFailedException", "ResourceNotFoundException"}:
            raise AliasChanged(
                f"alias {plan['function']}:{plan['alias']} changed while this rollout was updating it: {exc}"
            ) from exc
        raise AwsCallFailed(f"alias {plan['function']}:{plan['alias']}: cannot update it: {exc}") from exc


def _same_routing(found: dict[str, float], expected: dict[str, float]) -> bool:
    return found.keys() == expected.keys() and all(
        abs(found[v] - expected[v]) < _WEIGHT_TOLERANCE for v in expected
    )


def _expect(
    alias: dict[str, Any],
    plan: dict[str, Any],
    version: str,
    routing: dict[str, float],
    revision_id: str | None,
) -> None:
    """Raise AliasChanged unless the alias is exactly as the previous step left it."""
    expected = f"version {version}" + (
        f" with {routing[plan['target_version']] * 100:g} % on version {plan['target_version']}"
        if routing
        else " with no routing"
    )
    if str(alias.get("FunctionVersion")) != version or not _same_routing(_routing(alias), routing):
        raise AliasChanged(
            f"alias {plan['function']}:{plan['alias']} was changed outside this rollout: "
            f"expected {expected}, found {_describe(alias)}"
        )
    if revision_id and alias.get("RevisionId") and alias["RevisionId"] != revision_id:
        raise AliasChanged(
            f"alias {plan['function']}:{plan['alias']} was changed outside this rollout: revision "
            f"{alias['RevisionId']} is not {revision_id}, the one this rollout last wrote"
        )


def _remember(lock: RolloutLock, plan: dict[str, Any], written: dict[str, Any]) -> None:
    """Record the alias as this rollout left it; a rollout that lost its lock must stop."""
    if not lock.record(plan["function"], plan["alias"], str(plan.get("execution")), alias_state(written)):
        raise AliasChanged(
            f"alias {plan['function']}:{plan['alias']}: this rollout no longer holds the alias's lock "
            "(it expired and another rollout took it)"
        )


def shift(
    lambda_: LambdaClient, lock: RolloutLock, plan: dict[str, Any], index: int, revision_id: str | None
) -> dict[str, Any]:
    """Route step ``index``'s share of the alias to the new version (idempotent for a retried call)."""
    steps = [float(s) for s in plan["steps"]]
    if not 0 <= index < len(steps):
        raise ValueError(f"step index {index} is outside the plan's {len(steps)} steps")
    stable, target = str(plan["stable_version"]), str(plan["target_version"])
    wanted = {target: weight(steps[index])}
    alias = _get_alias(lambda_, plan["function"], plan["alias"])
    already = str(alias.get("FunctionVersion")) == stable and _same_routing(_routing(alias), wanted)
    if already:  # a retry after the update succeeded: the revision is new, the state is ours
        written = alias
    else:
        previous = {target: weight(steps[index - 1])} if index else {}
        _expect(alias, plan, stable, previous, revision_id)
        written = _update(lambda_, plan, stable, wanted, alias.get("RevisionId") or revision_id)
    _remember(lock, plan, written)
    return {
        "index": index,
        "step": index + 1,
        "percent": steps[index],
        "weight": wanted[target],
        "stable_version": stable,
        "target_version": target,
        "revision_id": written.get("RevisionId"),
        "shifted_at": now_iso(),
        "last": index == len(steps) - 1,
    }


def confirm_step(lambda_: LambdaClient, plan: dict[str, Any], step: dict[str, Any]) -> None:
    """The gate's first check: the alias is still exactly as ``step`` (the shift's result) left it.

    Raises
    ------
    AliasChanged
        Someone else changed the alias since the shift; its metrics no longer judge this rollout.
    """
    alias = _get_alias(lambda_, plan["function"], plan["alias"])
    routing = {str(plan["target_version"]): float(step["weight"])}
    _expect(alias, plan, str(plan["stable_version"]), routing, step.get("revision_id"))


def promote(
    lambda_: LambdaClient,
    lock: RolloutLock,
    plan: dict[str, Any],
    revision_id: str | None,
    step: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Point the alias at the new version with no routing (idempotent for a retried call). ``step`` is the
    step the alias is on: the last one, or an earlier one when a person promoted."""
    stable, target = str(plan["stable_version"]), str(plan["target_version"])
    on = float(step["weight"]) if step and "weight" in step else weight(float(plan["steps"][-1]))
    alias = _get_alias(lambda_, plan["function"], plan["alias"])
    if str(alias.get("FunctionVersion")) == target and not _routing(alias):
        written = alias
    else:
        _expect(alias, plan, stable, {target: on}, revision_id)
        written = _update(lambda_, plan, target, {}, alias.get("RevisionId") or revision_id)
    _remember(lock, plan, written)
    return {
        "promoted_version": target,
        "previous_version": stable,
        "revision_id": written.get("RevisionId"),
        "promoted_at": now_iso(),
    }


# ---------------------------------------------------------------------------------------------- rollback
def _as_recorded(found: dict[str, Any], recorded: dict[str, Any]) -> bool:
    """The alias is exactly as the rollout last left it: version, weights and RevisionId."""
    return (
        str(found.get("FunctionVersion")) == str(recorded.get("version"))
        and _same_routing(_routing(found), dict(recorded.get("routing") or {}))
        and (not recorded.get("revision_id") or found.get("RevisionId") == recorded["revision_id"])
    )


def _describe_state(state: dict[str, Any]) -> str:
    return _describe(
        {
            "FunctionVersion": state.get("version"),
            "RoutingConfig": {"AdditionalVersionWeights": state.get("routing") or {}},
        }
    )


def restore(lambda_: LambdaClient, lock: RolloutLock, plan: dict[str, Any], execution: str) -> dict[str, Any]:
    """Put the alias back on the stable version, only if it is exactly as this rollout left it.

    Returns ``outcome`` "rolled_back" (moved back, or nothing had moved) or "superseded" (the alias was
    changed by someone else, or the lock is no longer this rollout's: the alias is left as found),
    with ``found`` and ``action``. Raises RollbackFailed when the alias cannot be read or written, or a
    re-read does not confirm the stable version; a retry reads it again.
    """
    function, alias_name = plan["function"], plan["alias"]
    stable = str(plan["stable_version"])
    try:
        found = dict(lambda_.get_alias(FunctionName=function, Name=alias_name))
    except ClientError as exc:
        raise RollbackFailed(f"alias {function}:{alias_name}: cannot read it to roll back: {exc}") from exc
    held = lock.get(function, alias_name)
    if held is None or held["execution"] != execution:
        holder = f"it is held by {held['execution']}" if held else "nobody holds it"
        return _superseded(found, f"this rollout no longer holds the alias's lock ({holder})")
    recorded = held.get("alias_state") or {"version": stable, "routing": {}}
    if not _as_recorded(found, recorded):
        return _superseded(
            found,
            f"alias {function}:{alias_name} was changed outside this rollout: it left "
            f"{_describe_state(recorded)} (revision {recorded.get('revision_id')}), found "
            f"{_describe(found)} (revision {found.get('RevisionId')})",
        )
    action = "already on the stable version"
    if str(found.get("FunctionVersion")) != stable or _routing(found):
        request: dict[str, Any] = {
            "FunctionName": function,
            "Name": alias_name,
            "FunctionVersion": stable,
            "RoutingConfig": {"AdditionalVersionWeights": {}},
        }
        if found.get("RevisionId"):
            # Conditional: a change between the read above and this write fails it (PreconditionFailed),
            # and the retry reads the alias again and finds it superseded.
            request["RevisionId"] = found["RevisionId"]
        try:
            lambda_.update_alias(**request)
        except ClientError as exc:
            raise RollbackFailed(
                f"alias {function}:{alias_name}: cannot put it back on version {stable}: {exc}"
            ) from exc
        action = f"moved from {_describe(found)} to version {stable}"
    confirmed = _get_alias(lambda_, function, alias_name)
    if str(confirmed.get("FunctionVersion")) != stable or _routing(confirmed):
        raise RollbackFailed(
            f"alias {function}:{alias_name} is on {_describe(confirmed)} after the rollback, "
            f"not version {stable}"
        )
    lock.record(function, alias_name, execution, alias_state(confirmed))
    return {"outcome": "rolled_back", "found": _describe(found), "action": action}


def _superseded(found: dict[str, Any], why: str) -> dict[str, Any]:
    return {
        "outcome": "superseded",
        "found": _describe(found),
        "action": f"left as found ({_describe(found)})",
        "superseded_because": why,
    }


def rollback(
    lambda_: LambdaClient, lock: RolloutLock, plan: dict[str, Any], failure: dict[str, Any] | None
) -> dict[str, Any]:
    """The state machine's rollback: the alias back on the stable version if it is as this rollout left
    it, else left alone ("superseded"). The new version is kept (never deleted) for diagnosis."""
    result = restore(lambda_, lock, plan, str(plan.get("execution")))
    reason = failure_reason(failure)
    if result["outcome"] == "superseded":
        reason = f"{result['superseded_because']} (the rollout had stopped on: {reason})"
    return {
        **result,
        "rolled_back_to": str(plan["stable_version"]) if result["outcome"] == "rolled_back" else None,
        "abandoned_version": str(plan["target_version"]),
        "reason": reason,
        "failed_state": (failure or {}).get("state"),
        "rolled_back_at": now_iso(),
    }


def release(lock: RolloutLock, plan: dict[str, Any]) -> dict[str, Any]:
    """The end of a rollout, however it ended: its lock is released (never another rollout's)."""
    released = lock.release(plan["function"], plan["alias"], str(plan.get("execution")))
    return {"released": released, "released_at": now_iso()}


def failure_reason(failure: dict[str, Any] | None) -> str:
    """A person's sentence from the failure record the state machine passes to rollback."""
    if not failure:
        return "unknown failure"
    if failure.get("reason"):
        reason = str(failure["reason"])
        if "verdict" in failure:
            reason += f"; it returned {json.dumps(failure['verdict'])}"
        return reason
    error = failure.get("error") or {}
    name = str(error.get("Error") or "error")
    cause = error.get("Cause") or ""
    try:
        parsed = json.loads(cause) if isinstance(cause, str) and cause.startswith("{") else None
    except ValueError:
        parsed = None
    message = parsed.get("errorMessage") if isinstance(parsed, dict) else cause
    state = failure.get("state")
    if name == "States.Timeout":
        message = message or "did not finish in time"
    return f"{state + ': ' if state else ''}{name}" + (f": {message}" if message else "")
