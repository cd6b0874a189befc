"""Resolves CloudFormation intrinsic functions against the resources the local deployer has created,
because moto's CloudFormation cannot deploy our (SAM) template."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator, Mapping
from typing import Any


class NoValue:
    """``AWS::NoValue``: the property it stands for is removed."""

    def __repr__(self) -> str:
        return "AWS::NoValue"


NO_VALUE = NoValue()
_SUB_VARIABLE = re.compile(r"\$\{([^}]+)\}")


class UnresolvedReference(KeyError):
    """A Ref / GetAtt names something that does not exist (yet)."""


class Resolver:
    """Evaluates intrinsics with parameter values, pseudo parameters and created resources.

    Parameters
    ----------
    parameters:
        Parameter name -> value (strings; lists for CommaDelimitedList parameters).
    pseudo:
        ``AWS::Region``, ``AWS::AccountId`` etc.
    conditions:
        The template's ``Conditions`` section (evaluated lazily).
    mappings:
        The template's ``Mappings`` section.
    """

    def __init__(
        self,
        parameters: Mapping[str, Any],
        pseudo: Mapping[str, str],
        conditions: Mapping[str, Any] | None = None,
        mappings: Mapping[str, Any] | None = None,
    ) -> None:
        self.parameters = dict(parameters)
        self.pseudo = dict(pseudo)
        self.conditions = dict(conditions or {})
        self.mappings = dict(mappings or {})
        self.refs: dict[str, Any] = {}
        self.attributes: dict[str, dict[str, Any]] = {}
        self._condition_values: dict[str, bool] = {}

    def condition(self, name: str) -> bool:
        if name not in self._condition_values:
            if name not in self.conditions:
                raise UnresolvedReference(f"condition {name} is not defined")
            self._condition_values[name] = bool(self.resolve(self.conditions[name]))
        return self._condition_values[name]

    def resolve(self, value: Any) -> Any:
        """Evaluate every intrinsic in ``value``; ``AWS::NoValue`` entries are dropped."""
        if isinstance(value, list):
            return [item for item in (self.resolve(v) for v in value) if item is not NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, argument),) = value.items()
            function = _FUNCTIONS.get(key)
            if function is not None:
                return function(self, argument)
        resolved = {k: self.resolve(v) for k, v in value.items()}
        return {k: v for k, v in resolved.items() if v is not NO_VALUE}

    def ref(self, name: str) -> Any:
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in self.pseudo:
            return self.pseudo[name]
        if name in self.parameters:
            return self.parameters[name]
        if name in self.refs:
            return self.refs[name]
        raise UnresolvedReference(f"Ref {name}")

    def get_att(self, resource: str, attribute: str) -> Any:
        try:
            return self.attributes[resource][attribute]
        except KeyError:
            raise UnresolvedReference(f"GetAtt {resource}.{attribute}") from None

    def sub(self, template: str, variables: Mapping[str, Any]) -> str:
        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in variables:
                return _as_string(variables[name])
            if "." in name and name.split(".", 1)[0] not in self.pseudo:
                resource, attribute = name.split(".", 1)
                return _as_string(self.get_att(resource, attribute))
            return _as_string(self.ref(name))

        return _SUB_VARIABLE.sub(replace, template)


def _as_string(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(_as_string(item) for item in value)
    return str(value)


def _fn_sub(resolver: Resolver, argument: Any) -> str:
    if isinstance(argument, str):
        return resolver.sub(argument, {})
    template, variables = argument
    return resolver.sub(template, {k: resolver.resolve(v) for k, v in variables.items()})


def _fn_join(resolver: Resolver, argument: Any) -> str:
    delimiter, items = argument
    values = resolver.resolve(items)
    return str(delimiter).join(_as_string(item) for item in values)


def _fn_select(resolver: Resolver, argument: Any) -> Any:
    index, items = resolver.resolve(argument[0]), resolver.resolve(argument[1])
    return items[int(index)]


def _fn_split(resolver: Resolver, argument: Any) -> list[str]:
    delimiter, text = argument
    return str(resolver.resolve(text)).split(str(delimiter))


def _fn_if(resolver: Resolver, argument: Any) -> Any:
    name, when_true, when_false = argument
    return resolver.resolve(when_true if resolver.condition(name) else when_false)


def _fn_get_att(resolver: Resolver, argument: Any) -> Any:
    if isinstance(argument, str):
        resource, attribute = argument.split(".", 1)
    else:
        resource, attribute = argument[0], resolver.resolve(argument[1])
    return resolver.get_att(resource, attribute)


def _fn_find_in_map(resolver: Resolver, argument: Any) -> Any:
    name, first, second = (resolver.resolve(item) for item in argument[:3])
    return resolver.mappings[name][first][second]


def _fn_get_azs(resolver: Resolver, argument: Any) -> list[str]:
    region = resolver.resolve(argument) or resolver.pseudo["AWS::Region"]
    return [f"{region}{zone}" for zone in "abc"]


def _fn_import_value(resolver: Resolver, argument: Any) -> Any:
    raise UnresolvedReference(f"ImportValue {resolver.resolve(argument)} (no other stacks run locally)")


_FUNCTIONS: dict[str, Any] = {
    "Ref": lambda r, a: r.ref(a),
    "Condition": lambda r, a: r.condition(a),
    "Fn::GetAtt": _fn_get_att,
    "Fn::Sub": _fn_sub,
    "Fn::Join": _fn_join,
    "Fn::Select": _fn_select,
    "Fn::Split": _fn_split,
    "Fn::If": _fn_if,
    "Fn::Equals": lambda r, a: _as_string(r.resolve(a[0])) == _as_string(r.resolve(a[1])),
    "Fn::Not": lambda r, a: not r.resolve(a[0]),
    "Fn::And": lambda r, a: all(r.resolve(item) for item in a),
    "Fn::Or": lambda r, a: any(r.resolve(item) for item in a),
    "Fn::FindInMap": _fn_find_in_map,
    "Fn::Base64": lambda r, a: base64.b64encode(str(r.resolve(a)).encode()).decode(),
    "Fn::GetAZs": _fn_get_azs,
    "Fn::ImportValue": _fn_import_value,
    "Fn::ToJsonString": lambda r, a: json.dumps(r.resolve(a), separators=(",", ":")),
}


def references(value: Any) -> Iterator[str]:
    """Names that ``value`` refers to through Ref, GetAtt and Sub (resources, parameters, pseudo)."""
    if isinstance(value, list):
        for item in value:
            yield from references(item)
    elif isinstance(value, dict):
        for key, argument in value.items():
            if key == "Ref" and isinstance(argument, str):
                yield argument
            elif key == "Fn::GetAtt":
                yield argument.split(".", 1)[0] if isinstance(argument, str) else argument[0]
            elif key == "Fn::Sub":
                template = argument if isinstance(argument, str) else argument[0]
                for name in _SUB_VARIABLE.findall(template):
                    if not name.startswith("!"):
                        yield name.split(".", 1)[0]
                if not isinstance(argument, str):
                    yield from references(argument[1])
            else:
                yield from references(argument)
