"""Identity-based policy evaluation for the few requests the local runtime authorizes itself (moto
authorizes none): does a role's policy allow this action on this resource, in this request context?

IAM's evaluation logic, reduced to what the guard's policies use: an explicit Deny wins, otherwise one
Allow whose Action, Resource and every Condition match is needed; a condition on a key absent from the
request does not match, unless its operator ends in IfExists (or is Null). An operator this model does not
know makes its statement not apply, so an Allow it cannot judge grants nothing.
("Policy evaluation logic" and "IAM JSON policy elements: Condition operators", IAM User Guide.)
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

_STRING_OPERATORS: dict[str, Callable[[str, str], bool]] = {
    "StringEquals": lambda actual, wanted: actual == wanted,
    "StringNotEquals": lambda actual, wanted: actual != wanted,
    "StringEqualsIgnoreCase": lambda actual, wanted: actual.lower() == wanted.lower(),
    "StringLike": fnmatch.fnmatchcase,
    "ArnEquals": lambda actual, wanted: actual == wanted,
    "ArnLike": fnmatch.fnmatchcase,
    "Bool": lambda actual, wanted: actual.lower() == wanted.lower(),
}
_NEGATED = {"StringNotEquals"}


@dataclass(frozen=True)
class Decision:
    allowed: bool
    explicit_deny: bool = False


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]


def _matches(patterns: Any, value: str, case_sensitive: bool = True) -> bool:
    for pattern in _as_list(patterns):
        if case_sensitive and fnmatch.fnmatchcase(value, str(pattern)):
            return True
        if not case_sensitive and fnmatch.fnmatchcase(value.lower(), str(pattern).lower()):
            return True
    return False


def _condition_met(operator: str, entries: Mapping[str, Any], context: Mapping[str, str]) -> bool:
    if_exists = operator.endswith("IfExists")
    base = operator[: -len("IfExists")] if if_exists else operator
    for key, wanted in entries.items():
        actual = context.get(key)
        if base == "Null":
            # "true": the key must be absent; "false": present.
            if (actual is None) != (str(_as_list(wanted)[0]).lower() == "true"):
                return False
            continue
        compare = _STRING_OPERATORS.get(base)
        if compare is None:
            return False
        if actual is None:
            if if_exists:
                continue
            return False
        results = [compare(str(actual), str(item)) for item in _as_list(wanted)]
        if not (all(results) if base in _NEGATED else any(results)):
            return False
    return True


def _statement_applies(
    statement: Mapping[str, Any], action: str, resource: str, context: Mapping[str, str]
) -> bool:
    if "Action" not in statement or not _matches(statement["Action"], action, case_sensitive=False):
        return False
    if "Resource" not in statement or not _matches(statement["Resource"], resource):
        return False
    conditions = statement.get("Condition") or {}
    return all(_condition_met(op, entries, context) for op, entries in conditions.items())


def evaluate(
    documents: Iterable[Mapping[str, Any] | str],
    action: str,
    resource: str,
    context: Mapping[str, str] | None = None,
) -> Decision:
    """Whether identity policies ``documents`` allow ``action`` on ``resource`` with ``context``."""
    allowed = False
    for document in documents:
        parsed = json.loads(document) if isinstance(document, str) else document
        for statement in _as_list(parsed.get("Statement", [])):
            if not isinstance(statement, Mapping):
                continue
            if not _statement_applies(statement, action, resource, context or {}):
                continue
            if statement.get("Effect") == "Deny":
                return Decision(allowed=False, explicit_deny=True)
            allowed = allowed or statement.get("Effect") == "Allow"
    return Decision(allowed=allowed)


def role_policies(account_id: str, role_arn: str) -> list[Any] | None:
    """The identity policies of a role of moto's IAM (inline and attached), or None if there is no such
    role."""
    from moto.iam.models import iam_backends

    partition = role_arn.split(":")[1] if role_arn.count(":") >= 5 else "aws"
    backend = iam_backends[account_id][partition]
    try:
        role = backend.get_role_by_arn(role_arn)
    except Exception:  # moto's NotFoundException
        return None
    documents: list[Any] = list(role.policies.values())
    for policy in role.managed_policies.values():
        default = next((v for v in policy.versions if v.is_default), None)
        if default is not None and default.document:
            documents.append(default.document)
    return documents


def role_trusts_service(account_id: str, role_arn: str, service: str) -> bool:
    """Whether the role's trust policy lets ``service`` (e.g. cloudformation.amazonaws.com) assume it."""
    from moto.iam.models import iam_backends

    backend = iam_backends[account_id][role_arn.split(":")[1]]
    try:
        role = backend.get_role_by_arn(role_arn)
    except Exception:
        return False
    document = role.assume_role_policy_document
    parsed = json.loads(document) if isinstance(document, str) else document
    for statement in _as_list(parsed.get("Statement", [])):
        principal = statement.get("Principal") or {}
        services = _as_list(principal.get("Service", [])) if isinstance(principal, Mapping) else []
        if statement.get("Effect") == "Allow" and service in services:
            return True
    return False
