"""Reads template.yaml, the one description of the system, so tests and the local runtime need no second
list of resources: short-form CloudFormation tags, event rules and parameter defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

TEMPLATE_ENV = "IMMUTABLE_GUARD_TEMPLATE"
TEMPLATE_NAME = "template.yaml"

# Short-form tags whose long form is `Fn::<Name>`; Ref and Condition have no `Fn::` prefix.
_FN_TAGS = (
    "Base64",
    "Cidr",
    "FindInMap",
    "GetAZs",
    "ImportValue",
    "Join",
    "Select",
    "Split",
    "Sub",
    "Transform",
    "And",
    "Equals",
    "If",
    "Not",
    "Or",
    "Length",
    "ToJsonString",
)


@dataclass(frozen=True)
class EventRule:
    """An EventBridge rule of the template and the function it targets.

    Attributes
    ----------
    logical_id:
        The rule's logical id as SAM generates it (function logical id + event key), or the id of a
        plain ``AWS::Events::Rule``.
    function_logical_id:
        Logical id of the target function; empty when a plain rule targets no function of the template.
    pattern:
        The EventBridge event pattern.
    """

    logical_id: str
    function_logical_id: str
    pattern: dict[str, Any]


class _TemplateLoader(yaml.SafeLoader):
    """A SafeLoader that understands CloudFormation's short-form intrinsic tags."""


def _construct(node: yaml.Node, loader: yaml.SafeLoader) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_scalar(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    raise yaml.constructor.ConstructorError(None, None, f"unexpected node {node!r}", node.start_mark)


def _long_form(key: str) -> Any:
    def constructor(loader: yaml.SafeLoader, node: yaml.Node) -> dict[str, Any]:
        return {key: _construct(node, loader)}

    return constructor


def _get_att(loader: yaml.SafeLoader, node: yaml.Node) -> dict[str, Any]:
    value = _construct(node, loader)
    if isinstance(value, str):
        # "Resource.Attribute"; attributes may themselves contain dots (e.g. Endpoint.Address).
        resource, _, attribute = value.partition(".")
        return {"Fn::GetAtt": [resource, attribute]}
    return {"Fn::GetAtt": value}


_TemplateLoader.add_constructor("!Ref", _long_form("Ref"))
_TemplateLoader.add_constructor("!Condition", _long_form("Condition"))
_TemplateLoader.add_constructor("!GetAtt", _get_att)
for _name in _FN_TAGS:
    _TemplateLoader.add_constructor(f"!{_name}", _long_form(f"Fn::{_name}"))


def _is_repo_root(directory: Path) -> bool:
    return (directory / TEMPLATE_NAME).is_file() and (directory / "functions").is_dir()


def find_template(start: Path | None = None) -> Path:
    """Locate template.yaml.

    Parameters
    ----------
    start:
        Directory to search upward from; the current directory when omitted.

    Returns
    -------
    Path
        ``$IMMUTABLE_GUARD_TEMPLATE`` when set, else the first template.yaml beside a ``functions/``
        folder upward from ``start``, else the one of the repository this package lives in.

    Raises
    ------
    FileNotFoundError
        When no template can be found.
    """
    configured = os.environ.get(TEMPLATE_ENV)
    if configured:
        path = Path(configured).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"{TEMPLATE_ENV}={configured} is not a file")
        return path.resolve()
    here = (start or Path.cwd()).resolve()
    for directory in (here, *here.parents):
        if _is_repo_root(directory):
            return directory / TEMPLATE_NAME
    # layers/guard/immutable_guard/template.py -> the repository root is three folders up.
    for directory in Path(__file__).resolve().parents:
        if _is_repo_root(directory):
            return directory / TEMPLATE_NAME
    raise FileNotFoundError(
        f"no {TEMPLATE_NAME} next to a functions/ folder above {here}; set {TEMPLATE_ENV}"
    )


def load_template(path: Path | str) -> dict[str, Any]:
    """Parse a CloudFormation / SAM template, turning short-form tags into their long-form dicts."""
    with Path(path).open(encoding="utf-8") as stream:
        document = yaml.load(stream, Loader=_TemplateLoader)
    if not isinstance(document, dict):
        raise ValueError(f"{path} is not a template (top level is not a mapping)")
    return document


def _function_event_rules(logical_id: str, resource: dict[str, Any]) -> list[EventRule]:
    events = (resource.get("Properties") or {}).get("Events") or {}
    rules = []
    for key, event in events.items():
        if event.get("Type") in ("EventBridgeRule", "CloudWatchEvent"):
            pattern = (event.get("Properties") or {}).get("Pattern") or {}
            rules.append(EventRule(f"{logical_id}{key}", logical_id, pattern))
    return rules


def _target_function(targets: list[dict[str, Any]], functions: set[str]) -> str:
    for target in _branches(targets):
        arn = target.get("Arn")
        if isinstance(arn, dict):
            ref = arn.get("Ref") or (arn.get("Fn::GetAtt") or [None])[0]
            if ref in functions:
                return str(ref)
    return ""


def _branches(targets: list[Any]) -> list[dict[str, Any]]:
    """Every target a rule may have: both branches of a conditional one (``Fn::If``), as Detect's rules
    target DetectQueue in organisation mode and DetectFunction otherwise."""
    found: list[dict[str, Any]] = []
    for target in targets:
        if isinstance(target, dict) and "Fn::If" in target:
            found.extend(_branches(list(target["Fn::If"][1:])))
        elif isinstance(target, dict):
            found.append(target)
    return found


def event_rules(template: dict[str, Any]) -> list[EventRule]:
    """Every EventBridge rule of the template: SAM function events and plain ``AWS::Events::Rule``."""
    resources: dict[str, Any] = template.get("Resources") or {}
    functions = {
        name
        for name, resource in resources.items()
        if resource.get("Type") in ("AWS::Serverless::Function", "AWS::Lambda::Function")
    }
    rules: list[EventRule] = []
    for logical_id, resource in resources.items():
        kind = resource.get("Type")
        if kind == "AWS::Serverless::Function":
            rules.extend(_function_event_rules(logical_id, resource))
        elif kind == "AWS::Events::Rule":
            properties = resource.get("Properties") or {}
            if "EventPattern" in properties:
                target = _target_function(properties.get("Targets") or [], functions)
                rules.append(EventRule(logical_id, target, properties["EventPattern"]))
    return rules


def function_policies(template: dict[str, Any], logical_id: str) -> list[dict[str, Any]]:
    """The inline policy documents (each with its ``Statement``) a function of the template is granted.

    A SAM function's own ``Policies`` documents; or, for a function whose ``Role`` is a role of the template
    (``!GetAtt <Role>.Arn``, as the functions whose roles carry a fixed name in organisation mode), that
    role's inline policy documents. Managed policies and policy templates are left out.
    """
    resources: dict[str, Any] = template.get("Resources") or {}
    properties = (resources[logical_id].get("Properties") or {}) if logical_id in resources else {}
    role = properties.get("Role")
    if isinstance(role, dict) and "Fn::GetAtt" in role:
        role_id = role["Fn::GetAtt"][0] if isinstance(role["Fn::GetAtt"], list) else role["Fn::GetAtt"]
        policies = (resources[role_id].get("Properties") or {}).get("Policies") or []
        return [p["PolicyDocument"] for p in policies if isinstance(p, dict) and "PolicyDocument" in p]
    return [p for p in properties.get("Policies") or [] if isinstance(p, dict) and "Statement" in p]


def parameter_defaults(template: dict[str, Any]) -> dict[str, str]:
    """Parameter name -> its default as CloudFormation passes it (a string), for parameters that have one."""
    defaults: dict[str, str] = {}
    for name, parameter in (template.get("Parameters") or {}).items():
        if "Default" not in parameter:
            continue
        value = parameter["Default"]
        if isinstance(value, bool):
            defaults[name] = "true" if value else "false"
        elif isinstance(value, list):
            defaults[name] = ",".join(str(item) for item in value)
        else:
            defaults[name] = str(value)
    return defaults
