"""Patches of moto's behaviour where it differs from AWS in ways the remediation depends on, so that what
passes on the local runtime passes for the same reason in an account. Each patch says what AWS does.

``apply_moto_fixes()`` patches the classes of this process (moto's server runs in it); calls nest and
each needs its own ``revert_moto_fixes()``. Single fixes take a ``setattr``-like callable, so a test can
apply one with ``monkeypatch.setattr`` and have it undone after the test.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import Any

Setter = Callable[[Any, str, Any], None]

_lock = threading.RLock()
_applied = 0
_undo: list[tuple[Any, str, Any]] = []
_SUB_VARIABLE = re.compile(r"\$\{([^}!][^}]*)\}")


def _recording_setattr(target: Any, name: str, value: Any) -> None:
    _undo.append((target, name, target.__dict__.get(name)))
    setattr(target, name, value)


# ---------------------------------------------------------------------- (a) security groups of ENIs


def eni_groups_as_in_aws(set_attribute: Setter = setattr) -> None:
    """An ENI's groups are exactly its own; an instance's groups are those of its primary ENI.

    In EC2 security groups belong to network interfaces: ``describe_network_interfaces`` and
    ``describe_instances`` (NetworkInterfaces[].Groups) list only the interface's own groups, the
    instance's ``SecurityGroups`` are its primary (device 0) interface's, and ModifyInstanceAttribute
    ``Groups`` replaces the primary interface's groups. moto adds the instance's launch groups to every
    attached ENI, so an isolated ENI would still show the workload's group and isolation could never be
    verified; and it keeps the instance's groups apart from its primary ENI's.
    """
    from moto.ec2.models.elastic_network_interfaces import NetworkInterface
    from moto.ec2.models.instances import Instance

    def own_groups(eni: Any) -> Any:
        return eni._group_set

    def primary_interface(instance: Any) -> Any:
        nics = instance.__dict__.get("nics") or {}
        return nics.get(0)

    def get_groups(instance: Any) -> list[Any]:
        primary = primary_interface(instance)
        if primary is not None:
            return list(primary._group_set)
        return list(instance.__dict__.get("_launch_security_groups") or [])

    def set_groups(instance: Any, groups: list[Any]) -> None:
        instance.__dict__["_launch_security_groups"] = list(groups or [])
        # Shadowed while patched; what moto reads again once the patch is undone.
        instance.__dict__["security_groups"] = list(groups or [])
        primary = primary_interface(instance)
        if primary is not None:
            primary._group_set = list(groups or [])

    set_attribute(NetworkInterface, "group_set", property(own_groups))
    set_attribute(Instance, "security_groups", property(get_groups, set_groups))


# ---------------------------------------------------------------------- (b) CloudFormation


def stack_instances_use_their_launch_template(set_attribute: Setter = setattr) -> None:
    """An ``AWS::EC2::Instance`` is launched as RunInstances would launch it from its properties.

    CloudFormation passes LaunchTemplate, SecurityGroupIds and BlockDeviceMappings to RunInstances, so
    the instance gets the template's type, groups, volumes, user data and tags, and the image's root
    volume when no mapping is given. moto's CloudFormation ignores LaunchTemplate and SecurityGroupIds
    (the instance lands in the VPC's default group) and, passing an empty mapping list, creates an
    instance without any volume, so there would be nothing to snapshot as evidence.
    """
    from moto.ec2.models import ec2_backends
    from moto.ec2.models.instances import Instance

    def create_from_cloudformation_json(
        cls: Any,
        /,
        resource_name: str,
        cloudformation_json: Any,
        account_id: str,
        region_name: str,
        **kwargs: Any,
    ) -> Any:
        properties = cloudformation_json["Properties"]
        backend = ec2_backends[account_id][region_name]
        request: dict[str, Any] = {
            "instance_type": properties.get("InstanceType", "m1.small"),
            "is_instance_type_default": not properties.get("InstanceType"),
            "subnet_id": properties.get("SubnetId"),
            "key_name": properties.get("KeyName"),
            "private_ip": properties.get("PrivateIpAddress"),
            "security_group_ids": list(properties.get("SecurityGroupIds") or []),
        }
        if properties.get("BlockDeviceMappings"):
            request["block_device_mappings"] = properties["BlockDeviceMappings"]
        template = properties.get("LaunchTemplate")
        if template:
            request["launch_template"] = {
                key: str(value) for key, value in template.items() if key != "LaunchTemplateSpecification"
            }
        if properties.get("AvailabilityZone"):
            request["placement"] = properties["AvailabilityZone"]
        # SecurityGroups holds names (default VPC) or ids; moto looks both up by name or id.
        names = list(properties.get("SecurityGroups") or [])
        reservation = backend.run_instances(
            image_id=properties.get("ImageId"),
            user_data=properties.get("UserData"),
            count=1,
            security_group_names=names,
            **request,
        )
        instance = reservation.instances[0]
        for tag in properties.get("Tags") or []:
            instance.add_tag(tag["Key"], str(tag["Value"]))
        if properties.get("DisableApiTermination") in (True, "true", "True"):
            instance.disable_api_termination = True
        if properties.get("IamInstanceProfile"):
            backend.associate_iam_instance_profile(
                instance_id=instance.id, iam_instance_profile_name=properties["IamInstanceProfile"]
            )
        return instance

    set_attribute(Instance, "create_from_cloudformation_json", classmethod(create_from_cloudformation_json))


def previous_parameter_values_as_in_aws(set_attribute: Setter = setattr) -> None:
    """UpdateStack ``UsePreviousValue`` keeps the stack's current value, a defaulted one included.

    In AWS every parameter the stack shows (DescribeStacks lists defaults too) can be passed with
    UsePreviousValue; for an ``AWS::SSM::Parameter::Value`` parameter the SSM name is kept and resolved
    again. moto looks the key up in the parameters given at creation only, so a defaulted parameter
    fails the whole update with KeyError (HTTP 500). Leaving it out makes moto use the template's
    default, which is the stack's current value for a parameter never given.
    """
    from moto.cloudformation.models import CloudFormationBackend

    def resolve(self: Any, instance: Any, incoming_params: list[dict[str, str]]) -> dict[str, Any]:
        given = instance.parameters or {}
        parameters: dict[str, Any] = {
            p["ParameterKey"]: p["ParameterValue"] for p in incoming_params if "ParameterValue" in p
        }
        for parameter in incoming_params:
            key = parameter["ParameterKey"]
            if parameter.get("UsePreviousValue", False) and key in given:
                parameters[key] = given[key]
        return parameters

    set_attribute(CloudFormationBackend, "_resolve_update_parameters", resolve)


def sub_references_count_as_references(set_attribute: Setter = setattr) -> None:
    """A resource that names a parameter in ``Fn::Sub`` is updated when the parameter changes.

    CloudFormation re-evaluates every property that depends on a changed parameter, whether through Ref
    or a ``${Name}`` in Fn::Sub. moto's stack update only follows Ref, so a launch template whose user
    data says ``${ReplacementGeneration}`` would keep its old version.
    """
    import moto.cloudformation.parsing as parsing

    original = parsing.get_references_from_template
    if getattr(original, "_follows_sub", False):
        return

    def references(template: Any) -> list[str]:
        found = list(original(template))
        found.extend(_sub_names(template))
        return found

    references._follows_sub = True  # type: ignore[attr-defined]
    set_attribute(parsing, "get_references_from_template", references)


def _sub_names(value: Any) -> list[str]:
    names: list[str] = []
    if isinstance(value, dict):
        for key, argument in value.items():
            if key == "Fn::Sub":
                text = argument if isinstance(argument, str) else argument[0]
                names.extend(name.split(".", 1)[0] for name in _SUB_VARIABLE.findall(str(text)))
                if not isinstance(argument, str):
                    names.extend(_sub_names(argument[1]))
            else:
                names.extend(_sub_names(argument))
    elif isinstance(value, list):
        for item in value:
            names.extend(_sub_names(item))
    return names


# ---------------------------------------------------------------------- (c) S3 bucket policies


def conditional_statements_apply_only_when_met(set_attribute: Setter = setattr) -> None:
    """A policy statement whose Condition does not match does not apply; requests arrive over TLS.

    In IAM's evaluation a statement with an unmet condition is simply not applicable: a conditional Deny
    such as the evidence bucket's ``DenyInsecureTransport`` (Bool aws:SecureTransport "false") refuses
    only plain-HTTP requests, and every AWS SDK call (Lambda included) uses HTTPS. moto returns DENIED
    for any statement whose condition it cannot match, whatever its effect, treats an operator it does
    not implement (Bool among them) as matched, and knows no request context: that bucket refused every
    PutObject (HTTP 403). The local runtime's plain HTTP to 127.0.0.1 stands for the TLS connection a
    client has in AWS, so requests count as secure.
    """
    from moto.iam.access_control import IAMPolicyStatement, PermissionResult

    original = IAMPolicyStatement.is_action_permitted
    check_conditions = IAMPolicyStatement._check_conditions
    if getattr(original, "_conditions_as_in_aws", False):
        return

    def is_action_permitted(
        self: Any,
        action: str,
        resource: str = "*",
        principal: str | None = None,
        incoming_condition_values: dict[str, str] | None = None,
    ) -> Any:
        values = {"aws:SecureTransport": "true", **(incoming_condition_values or {})}
        condition = self._statement.get("Condition")
        if condition and not _conditions_met(self, condition, values, check_conditions):
            return PermissionResult.NEUTRAL
        return original(self, action, resource, principal, values)

    is_action_permitted._conditions_as_in_aws = True  # type: ignore[attr-defined]
    set_attribute(IAMPolicyStatement, "is_action_permitted", is_action_permitted)


def _conditions_met(
    statement: Any, condition: dict[str, Any], values: dict[str, str], check: Callable[..., bool]
) -> bool:
    """IAM's Bool operator (moto lacks it); every other operator as moto evaluates it."""
    for operator, entries in condition.items():
        if_exists = operator.endswith("IfExists")
        base = operator[: -len("IfExists")] if if_exists else operator
        if base != "Bool":
            probe = type(statement)({**statement._statement, "Condition": {operator: entries}})
            if not check(probe, values):
                return False
            continue
        for key, expected in entries.items():
            actual = values.get(key)
            if actual is None:
                if if_exists:
                    continue
                return False
            wanted = expected if isinstance(expected, list) else [expected]
            if str(actual).lower() not in {str(item).lower() for item in wanted}:
                return False
    return True


# ---------------------------------------------------------------------- all of them


def _all_fixes() -> list[Callable[[Setter], None]]:
    from immutable_guard.local.stack_updates import (
        replace_stack_instances_on_update,
        stack_updates_run_as_their_principal,
    )

    return [
        eni_groups_as_in_aws,
        stack_instances_use_their_launch_template,
        previous_parameter_values_as_in_aws,
        sub_references_count_as_references,
        replace_stack_instances_on_update,
        # After the one above: it wraps it, so a refused update replaces nothing.
        stack_updates_run_as_their_principal,
        conditional_statements_apply_only_when_met,
    ]


def apply_moto_fixes() -> None:
    """Make moto behave like AWS where the remediation depends on it. Idempotent; calls nest."""
    global _applied
    with _lock:
        if _applied == 0:
            for fix in _all_fixes():
                fix(_recording_setattr)
        _applied += 1


def revert_moto_fixes() -> None:
    """Undo one ``apply_moto_fixes()``; the last one restores moto as it was."""
    global _applied
    with _lock:
        if _applied == 0:
            return
        _applied -= 1
        if _applied:
            return
        while _undo:
            target, name, previous = _undo.pop()
            if previous is None:
                delattr(target, name)
            else:
                setattr(target, name, previous)


def moto_fixes_applied() -> bool:
    return _applied > 0
