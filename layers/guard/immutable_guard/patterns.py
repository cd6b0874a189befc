"""EventBridge content filtering, so the local runtime routes events exactly as the template's rules do
(moto's own matcher cannot look into lists of objects, which CloudTrail records are full of)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from functools import lru_cache, partial
from typing import Any

_MISSING = object()


def matches(pattern: dict[str, Any], event: dict[str, Any]) -> bool:
    """Whether ``event`` matches the EventBridge event ``pattern``.

    Parameters
    ----------
    pattern:
        An event pattern: nested objects whose leaves are lists of alternatives (values or operator
        objects such as ``{"prefix": "aws."}``), optionally with ``$or``.
    event:
        The event, as EventBridge delivers it.

    Returns
    -------
    bool
        True when every field of the pattern matches. Where the event holds an array, a field matches
        when any element of the array does.
    """
    return _match_object(pattern, event)


def _match_object(pattern: dict[str, Any], event: Any) -> bool:
    if isinstance(event, list):
        return any(_match_object(pattern, element) for element in event)
    # A field whose parent is absent (or not an object) is absent itself: only `exists: false` matches.
    fields = event if isinstance(event, dict) else {}
    for key, sub_pattern in pattern.items():
        if key == "$or":
            if not any(_match_object(branch, fields) for branch in sub_pattern):
                return False
        elif isinstance(sub_pattern, dict):
            if not _match_object(sub_pattern, fields.get(key, {})):
                return False
        elif isinstance(sub_pattern, list):
            if not _match_leaf(sub_pattern, fields.get(key, _MISSING)):
                return False
        else:
            raise ValueError(f"pattern field {key!r} must be an object or a list, not {sub_pattern!r}")
    return True


def _match_leaf(alternatives: list[Any], value: Any) -> bool:
    for alternative in alternatives:
        if isinstance(alternative, dict):
            if _match_operator(alternative, value):
                return True
        elif value is not _MISSING and _any_value(value, partial(_equal, alternative)):
            return True
    return False


def _any_value(value: Any, predicate: Callable[[Any], bool]) -> bool:
    """Applies a leaf test to a value, or to each element when the event holds an array there."""
    if isinstance(value, list):
        return any(predicate(item) for item in value)
    return predicate(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _equal(expected: Any, actual: Any) -> bool:
    if _is_number(expected) and _is_number(actual):
        return float(expected) == float(actual)
    if isinstance(expected, bool) or isinstance(actual, bool):
        return expected is actual
    return type(expected) is type(actual) and bool(expected == actual)


def _match_operator(operator: dict[str, Any], value: Any) -> bool:
    if len(operator) != 1:
        raise ValueError(f"an operator object has exactly one key: {operator!r}")
    ((name, argument),) = operator.items()
    if name == "exists":
        present = value is not _MISSING and value != []
        return present is bool(argument)
    if value is _MISSING:
        return False
    test = _OPERATORS.get(name)
    if test is None:
        raise ValueError(f"unsupported pattern operator {name!r}")
    return _any_value(value, lambda item: test(argument, item))


def _string_test(kind: str, argument: Any, item: Any) -> bool:
    if not isinstance(item, str):
        return False
    if isinstance(argument, dict) and set(argument) == {"equals-ignore-case"}:
        expected, actual = str(argument["equals-ignore-case"]).casefold(), item.casefold()
    elif isinstance(argument, str):
        expected, actual = argument, item
    else:
        raise ValueError(f"unsupported {kind} argument {argument!r}")
    return actual.startswith(expected) if kind == "prefix" else actual.endswith(expected)


def _equals_ignore_case(argument: Any, item: Any) -> bool:
    return isinstance(item, str) and item.casefold() == str(argument).casefold()


@lru_cache(maxsize=256)
def _wildcard_regex(wildcard: str) -> re.Pattern[str]:
    parts = re.split(r"(\\\*|\\\\|\*)", wildcard)
    translated = "".join(
        ".*" if part == "*" else re.escape(part[1:] if part in ("\\*", "\\\\") else part) for part in parts
    )
    return re.compile(translated, re.DOTALL)


def _wildcard(argument: Any, item: Any) -> bool:
    return isinstance(item, str) and _wildcard_regex(str(argument)).fullmatch(item) is not None


_NUMERIC_COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    "<": lambda actual, bound: actual < bound,
    "<=": lambda actual, bound: actual <= bound,
    ">": lambda actual, bound: actual > bound,
    ">=": lambda actual, bound: actual >= bound,
    "=": lambda actual, bound: actual == bound,
}


def _numeric(argument: Any, item: Any) -> bool:
    if not _is_number(item):
        return False
    if not isinstance(argument, list) or len(argument) % 2:
        raise ValueError(f"numeric takes operator/number pairs, not {argument!r}")
    for index in range(0, len(argument), 2):
        comparison = _NUMERIC_COMPARISONS.get(argument[index])
        if comparison is None:
            raise ValueError(f"unsupported numeric comparison {argument[index]!r}")
        if not comparison(float(item), float(argument[index + 1])):
            return False
    return True


def _cidr(argument: Any, item: Any) -> bool:
    if not isinstance(item, str):
        return False
    try:
        return ipaddress.ip_address(item) in ipaddress.ip_network(str(argument), strict=False)
    except ValueError:
        return False


def _anything_but(argument: Any, item: Any) -> bool:
    if isinstance(argument, dict):
        ((name, inner),) = argument.items()
        if name in ("prefix", "suffix"):
            return isinstance(item, str) and not _string_test(name, inner, item)
        if name == "equals-ignore-case":
            candidates = inner if isinstance(inner, list) else [inner]
            return isinstance(item, str) and not any(_equals_ignore_case(c, item) for c in candidates)
        if name == "wildcard":
            candidates = inner if isinstance(inner, list) else [inner]
            return isinstance(item, str) and not any(_wildcard(c, item) for c in candidates)
        raise ValueError(f"unsupported anything-but operator {name!r}")
    excluded = argument if isinstance(argument, list) else [argument]
    return not any(_equal(candidate, item) for candidate in excluded)


_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "prefix": lambda argument, item: _string_test("prefix", argument, item),
    "suffix": lambda argument, item: _string_test("suffix", argument, item),
    "equals-ignore-case": _equals_ignore_case,
    "wildcard": _wildcard,
    "numeric": _numeric,
    "cidr": _cidr,
    "anything-but": _anything_but,
}
