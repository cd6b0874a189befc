"""CloudFormation's replacement of an ``AWS::EC2::Instance`` on stack update, which moto does not do: an
update that changes a property requiring replacement (its launch template version, image, subnet...)
creates a new instance, points the stack's resource at it, then deletes the old one in the cleanup phase.

What AWS does when the old instance has termination protection (DisableApiTermination, as Immutable
Guard's Contain step sets): the update itself succeeds. CloudFormation tries to delete the old resource
three times in UPDATE_COMPLETE_CLEANUP_IN_PROGRESS; when it cannot, it records DELETE_FAILED for the old
physical id, removes it from the stack and ends in UPDATE_COMPLETE with a status reason saying that one
or more resources could not be deleted. The old instance keeps running until someone terminates it.
("Monitor the progress of a stack update", AWS CloudFormation User Guide.)
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

INSTANCE_TYPE = "AWS::EC2::Instance"
# Properties of AWS::EC2::Instance whose change means "Replacement" (CloudFormation resource reference).
REPLACEMENT_PROPERTIES = frozenset(
    {
        "AvailabilityZone",
        "CpuOptions",
        "ElasticGpuSpecifications",
        "ElasticInferenceAccelerators",
        "EnclaveOptions",
        "HibernationOptions",
        "HostResourceGroupArn",
        "ImageId",
        "Ipv6AddressCount",
        "Ipv6Addresses",
        "KeyName",
        "LaunchTemplate",
        "LicenseSpecifications",
        "NetworkInterfaces",
        "PlacementGroupName",
        "PrivateIpAddress",
        "SecurityGroups",
        "SubnetId",
    }
)
DELETE_ATTEMPTS = 3
REPLACING_REASON = "Requested update requires the creation of a new physical resource; hence creating one."
CLEANUP_FAILED_REASON = "Update successful. One or more resources could not be deleted."


def replace_stack_instances_on_update(set_attribute: Callable[[Any, str, Any], None] = setattr) -> None:
    """Wrap moto's ``Stack.update`` so instances whose replacement properties changed are replaced."""
    from moto.cloudformation.models import Stack

    original = Stack.update
    if getattr(original, "_replaces_instances", False):
        return

    def update(
        self: Any,
        template: str,
        role_arn: str | None = None,
        parameters: dict[str, Any] | None = None,
        tags: dict[str, str] | None = None,
    ) -> None:
        before = {
            logical_id: (resource, _launch_state(self, logical_id))
            for logical_id, resource in _stack_instances(self).items()
        }
        original(self, template, role_arn, parameters, tags)
        _replace_changed_instances(self, before)

    update._replaces_instances = True  # type: ignore[attr-defined]
    set_attribute(Stack, "update", update)


def stack_updates_run_as_their_principal(set_attribute: Callable[[Any, str, Any], None] = setattr) -> None:
    """Wrap moto's ``Stack.update`` so an update keeps the stack's service role and runs as it (or as the
    guard function that asked, when the stack has none): one its principal may not do fails and rolls
    back, as in AWS (local/stack_credentials.py)."""
    from moto.cloudformation.models import Stack

    from immutable_guard.local.stack_credentials import refusal_of_update

    original = Stack.update
    if getattr(original, "_runs_as_principal", False):
        return

    def update(
        self: Any,
        template: str,
        role_arn: str | None = None,
        parameters: dict[str, Any] | None = None,
        tags: dict[str, str] | None = None,
    ) -> None:
        refusal = refusal_of_update(self, role_arn)
        if refusal is not None:
            _roll_back(self, *refusal)
            return
        role = role_arn or self.role_arn  # moto would forget it; AWS keeps it
        original(self, template, role_arn, parameters, tags)
        self.role_arn = role

    update._runs_as_principal = True  # type: ignore[attr-defined]
    set_attribute(Stack, "update", update)


def _roll_back(stack: Any, logical_id: str, reason: str) -> None:
    """An update whose first change failed: nothing changed, the stack ends in UPDATE_ROLLBACK_COMPLETE."""
    logger.info("stack %s update refused: %s", stack.name, reason)
    stack._add_stack_event("UPDATE_IN_PROGRESS", resource_status_reason="User Initiated")
    if logical_id:
        resource = stack.resource_map._parsed_resources.get(logical_id)
        resource_type = str((stack.resource_map._resource_json_map or {}).get(logical_id, {}).get("Type", ""))
        stack.events.append(
            _make_event(
                stack, logical_id, getattr(resource, "physical_resource_id", ""), resource_type, reason
            )
        )
        failed = f"The following resource(s) failed to update: [{logical_id}]."
    else:
        failed = reason
    stack._add_stack_event("UPDATE_ROLLBACK_IN_PROGRESS", resource_status_reason=failed)
    stack._add_stack_event("UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS")
    stack._add_stack_event("UPDATE_ROLLBACK_COMPLETE")
    stack.status = "UPDATE_ROLLBACK_COMPLETE"


def _make_event(stack: Any, logical_id: str, physical_id: str, resource_type: str, reason: str) -> Any:
    from moto.cloudformation.models import Event

    return Event(
        stack_id=stack.stack_id,
        stack_name=stack.name,
        logical_resource_id=logical_id,
        physical_resource_id=physical_id,
        resource_type=resource_type,
        resource_status="UPDATE_FAILED",
        resource_status_reason=reason,
        resource_properties=None,
    )


def _stack_instances(stack: Any) -> dict[str, Any]:
    resource_map = stack.resource_map
    return {
        logical_id: resource_map._parsed_resources.get(logical_id)
        for logical_id, resource_json in (resource_map._resource_json_map or {}).items()
        if isinstance(resource_json, dict)
        and resource_json.get("Type") == INSTANCE_TYPE
        and logical_id in resource_map._parsed_resources
    }


def _launch_state(stack: Any, logical_id: str) -> dict[str, Any]:
    """The instance's properties as CloudFormation would resolve them now, with its launch template's
    data: a new template version is a changed LaunchTemplate property even when the number is stated."""
    from moto.cloudformation.parsing import clean_json

    resource_map = stack.resource_map
    resource_json = resource_map._resource_json_map[logical_id]
    properties = clean_json(copy.deepcopy(resource_json.get("Properties") or {}), resource_map)
    state = {key: _plain(value) for key, value in properties.items()}
    template = properties.get("LaunchTemplate")
    if isinstance(template, dict):
        state["LaunchTemplate"] = {
            **{key: str(value) for key, value in template.items()},
            "Data": _template_data(stack, template),
        }
    return state


def _template_data(stack: Any, template: dict[str, Any]) -> Any:
    from moto.ec2.models import ec2_backends

    backend = ec2_backends[stack.account_id][stack.region_name]
    try:
        version = backend._get_template_from_args({key: str(value) for key, value in template.items()})
    except Exception as exc:  # a template that cannot be read changes nothing we can compare
        return f"unreadable: {exc}"
    return _plain(version.data)


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str, sort_keys=True))


def _needs_replacement(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    return sorted(key for key in REPLACEMENT_PROPERTIES if before.get(key) != after.get(key))


def _event(stack: Any, logical_id: str, physical_id: str, status: str, reason: str | None = None) -> None:
    from moto.cloudformation.models import Event

    stack.events.append(
        Event(
            stack_id=stack.stack_id,
            stack_name=stack.name,
            logical_resource_id=logical_id,
            physical_resource_id=physical_id,
            resource_type=INSTANCE_TYPE,
            resource_status=status,
            resource_status_reason=reason,
            resource_properties=None,
        )
    )


def _replace_changed_instances(stack: Any, before: dict[str, tuple[Any, dict[str, Any]]]) -> None:
    from moto.cloudformation.parsing import parse_and_create_resource
    from moto.ec2.models import ec2_backends

    resource_map = stack.resource_map
    replaced: list[tuple[str, Any]] = []
    final: Any = None
    for logical_id, (old, old_state) in before.items():
        if old is None or logical_id not in (resource_map._resource_json_map or {}):
            continue
        new_state = _launch_state(stack, logical_id)
        changed = _needs_replacement(old_state, new_state)
        current = resource_map._parsed_resources.get(logical_id)
        if not changed:
            if current is None:
                # moto "updated" it without an update handler; the instance stays as it is.
                resource_map._parsed_resources[logical_id] = old
            _update_tags(stack, old, old_state, new_state)
            continue
        logger.info("stack %s replaces %s (%s changed)", stack.name, logical_id, ", ".join(changed))
        if final is None:
            # moto has already recorded the update as complete; in AWS the replacement and the cleanup
            # phase come before that event.
            final = _pop_stack_complete(stack)
        _event(stack, logical_id, old.physical_resource_id, "UPDATE_IN_PROGRESS", REPLACING_REASON)
        resource_json = copy.deepcopy(resource_map._resource_json_map[logical_id])
        new = parse_and_create_resource(
            logical_id, resource_json, resource_map, stack.account_id, stack.region_name
        )
        if new is None:  # its Condition turned false: AWS would delete it; moto has no such update
            continue
        stack_tags = {
            "aws:cloudformation:stack-name": stack.name,
            "aws:cloudformation:stack-id": stack.stack_id,
            "aws:cloudformation:logical-id": logical_id,
        }
        ec2_backends[stack.account_id][stack.region_name].create_tags([new.physical_resource_id], stack_tags)
        resource_map._parsed_resources[logical_id] = new
        _event(
            stack, logical_id, new.physical_resource_id, "UPDATE_IN_PROGRESS", "Resource creation Initiated"
        )
        _event(stack, logical_id, new.physical_resource_id, "UPDATE_COMPLETE")
        replaced.append((logical_id, old))
    if not replaced:
        if final is not None:
            stack.events.append(final)
        return

    stack.output_map = stack._create_output_map()
    stack._add_stack_event("UPDATE_COMPLETE_CLEANUP_IN_PROGRESS")
    failed = [logical_id for logical_id, old in replaced if not _delete_old(stack, logical_id, old)]
    if final is not None and failed:
        final.resource_status_reason = CLEANUP_FAILED_REASON
    if final is not None:
        stack.events.append(final)
    stack.status = "UPDATE_COMPLETE"


def _pop_stack_complete(stack: Any) -> Any:
    for index in range(len(stack.events) - 1, -1, -1):
        event = stack.events[index]
        if event.resource_type == "AWS::CloudFormation::Stack" and event.resource_status == "UPDATE_COMPLETE":
            return stack.events.pop(index)
    return None


def _delete_old(stack: Any, logical_id: str, old: Any) -> bool:
    """Terminate the replaced instance as CloudFormation does: three attempts, then give up and leave it."""
    from moto.ec2.models import ec2_backends

    backend = ec2_backends[stack.account_id][stack.region_name]
    physical_id = old.physical_resource_id
    _event(stack, logical_id, physical_id, "DELETE_IN_PROGRESS")
    error: Exception | None = None
    for _ in range(DELETE_ATTEMPTS):
        try:
            backend.terminate_instances([physical_id])
        except Exception as exc:  # EC2's refusal, e.g. OperationNotPermitted under termination protection
            error = exc
            continue
        _event(stack, logical_id, physical_id, "DELETE_COMPLETE")
        return True
    message = getattr(error, "message", None) or str(error)
    reason = (
        f'Resource handler returned message: "{message} (Service: Ec2, Status Code: 400)" '
        "(HandlerErrorCode: GeneralServiceException)"
    )
    _event(stack, logical_id, physical_id, "DELETE_FAILED", reason)
    logger.info("stack %s could not delete old %s %s: %s", stack.name, logical_id, physical_id, message)
    return False


def _update_tags(stack: Any, instance: Any, before: dict[str, Any], after: dict[str, Any]) -> None:
    """Tags update without interruption: apply the new values to the same instance."""
    if before.get("Tags") == after.get("Tags"):
        return
    new_tags = {str(t["Key"]): str(t["Value"]) for t in after.get("Tags") or [] if "Key" in t}
    if new_tags:
        instance.add_tags(new_tags)
