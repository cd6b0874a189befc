"""Patches of moto's behaviour where it differs from AWS in ways the remediation depends on, so that what
passes on the local runtime passes for the same reason in an account. Each patch says what AWS does.

``apply_moto_fixes()`` patches the classes of this process (moto's server runs in it); calls nest and
each needs its own ``revert_moto_fixes()``. Single fixes take a ``setattr``-like callable, so a test can
apply one with ``monkeypatch.setattr`` and have it undone after the test.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterator
from typing import Any

Setter = Callable[[Any, str, Any], None]
logger = logging.getLogger(__name__)

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


def stack_load_balancers_have_their_type(set_attribute: Setter = setattr) -> None:
    """An ``AWS::ElasticLoadBalancingV2::LoadBalancer`` is of the ``Type`` its properties say.

    CloudFormation creates a Network Load Balancer for ``Type: network``
    (https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/aws-resource-elasticloadbalancingv2-loadbalancer.html);
    moto's CloudFormation always creates an Application Load Balancer, which refuses a TCP listener.
    """
    from moto.elbv2.models import FakeLoadBalancer, elbv2_backends

    def create_from_cloudformation_json(
        cls: Any, /, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str, **_: Any
    ) -> Any:
        properties = cloudformation_json["Properties"]
        return elbv2_backends[account_id][region_name].create_load_balancer(
            resource_name,
            properties.get("SecurityGroups"),
            properties.get("Subnets"),
            scheme=properties.get("Scheme", "internet-facing"),
            loadbalancer_type=properties.get("Type", "application"),
        )

    set_attribute(
        FakeLoadBalancer, "create_from_cloudformation_json", classmethod(create_from_cloudformation_json)
    )


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


# ---------------------------------------------------------------------- (d) SNS message size

SNS_MAX_MESSAGE_BYTES = 262_144


def sns_message_size_in_bytes(set_attribute: Setter = setattr) -> None:
    """Publish refuses a message whose body and attributes exceed 262,144 bytes, counted in UTF-8.

    SNS validates "the combined size of the message body and message attributes" against the topic's
    MaximumMessageSize, 256 KiB by default, and each attribute's name, type and value count
    (https://docs.aws.amazon.com/sns/latest/dg/large-message-payloads.html). moto counts the body's
    characters and ignores the attributes, so an alert of multi-byte text passed locally and failed in
    AWS with InvalidParameter.
    """
    from moto.sns.exceptions import InvalidParameterValue
    from moto.sns.models import SNSBackend

    original = SNSBackend.publish
    if getattr(original, "_size_as_in_aws", False):
        return

    def publish(self: Any, message: str, *args: Any, **kwargs: Any) -> Any:
        attributes = kwargs.get("message_attributes") or {}
        size = len(message.encode()) + sum(
            len(name.encode())
            + len(str(value.get("Type", "")).encode())
            + len(str(value.get("Value", "")).encode())
            for name, value in attributes.items()
        )
        if size > SNS_MAX_MESSAGE_BYTES:
            raise InvalidParameterValue("Invalid parameter: Message too long")
        return original(self, message, *args, **kwargs)

    publish._size_as_in_aws = True  # type: ignore[attr-defined]
    set_attribute(SNSBackend, "publish", publish)


# ---------------------------------------------------------------------- (e) Lambda alias revisions

_alias_lock = threading.Lock()


def alias_revisions_as_in_aws(set_attribute: Setter = setattr) -> None:
    """UpdateAlias honours ``RevisionId``, and every update gives the alias a new one.

    Lambda's UpdateAlias "RevisionId: Only update the alias if the revision ID matches the ID that's
    specified" (https://docs.aws.amazon.com/lambda/latest/api/API_UpdateAlias.html); a mismatch is
    PreconditionFailedException, HTTP 412. moto ignores the parameter and never changes an alias's
    revision, so two writers that each read the alias would both succeed: the canary's optimistic
    concurrency (never overwrite another's change) could not be seen to work.
    """
    from moto.awslambda.exceptions import PreconditionFailedException
    from moto.awslambda.models import LambdaAlias
    from moto.awslambda.responses import LambdaResponse
    from moto.moto_api._internal import mock_random

    original_update = LambdaAlias.update
    original_response = LambdaResponse.update_alias
    if getattr(original_response, "_revisions_as_in_aws", False):
        return

    def update(self: Any, *args: Any, **kwargs: Any) -> None:
        original_update(self, *args, **kwargs)
        self.revision_id = str(mock_random.uuid4())

    def update_alias(self: Any) -> Any:
        import json
        from urllib.parse import unquote

        wanted = json.loads(self.body or "{}").get("RevisionId")
        with _alias_lock:  # the check and the write are one step, as in Lambda
            if wanted:
                function_name = unquote(self.path.rsplit("/")[-3])
                alias_name = unquote(self.path.rsplit("/", 2)[-1])
                alias = self.backend.get_alias(alias_name, function_name)
                if alias.revision_id != wanted:
                    raise PreconditionFailedException(
                        "The Revision Id provided does not match the latest Revision Id. Call the GetAlias "
                        "API to retrieve the latest Revision Id"
                    )
            return original_response(self)

    update_alias._revisions_as_in_aws = True  # type: ignore[attr-defined]
    set_attribute(LambdaAlias, "update", update)
    set_attribute(LambdaResponse, "update_alias", update_alias)


# ---------------------------------------------------------------------- (f) Step Functions


# Who receives "Step Functions Execution Status Change" events (e.g. an EventRouter's put).
_execution_listeners: list[Callable[[dict[str, Any]], Any]] = []
PAYLOAD_QUOTA_BYTES = 256 * 1024


def listen_to_executions(deliver: Callable[[dict[str, Any]], Any]) -> Callable[[], None]:
    """Deliver every execution status change to ``deliver`` (in its own thread, as EventBridge invokes
    a target asynchronously); returns the function that stops it."""
    _execution_listeners.append(deliver)

    def stop() -> None:
        if deliver in _execution_listeners:
            _execution_listeners.remove(deliver)

    return stop


def _millis(value: Any) -> int | None:
    return int(value.timestamp() * 1000) if value is not None else None


def execution_status_change_event(execution: Any) -> dict[str, Any]:
    """The event Step Functions sends EventBridge when an execution's status changes; the detail is what
    DescribeExecution returns, dates in epoch milliseconds
    (https://docs.aws.amazon.com/step-functions/latest/dg/cw-events.html)."""
    import json

    status = str(getattr(execution.exec_status, "value", execution.exec_status))
    output = execution.output if status == "SUCCEEDED" else None
    return {
        "source": "aws.states",
        "detail-type": "Step Functions Execution Status Change",
        "resources": [execution.exec_arn],
        "detail": {
            "executionArn": execution.exec_arn,
            "stateMachineArn": execution.state_machine.arn,
            "name": execution.name,
            "status": status,
            "startDate": _millis(execution.start_date),
            "stopDate": _millis(execution.stop_date),
            "input": json.dumps(execution.input_data) if execution.input_data is not None else None,
            "inputDetails": {"included": True},
            "output": json.dumps(output) if output is not None else None,
            "outputDetails": {"included": True} if output is not None else None,
            "error": execution.error,
            "cause": execution.cause,
        },
    }


def execution_status_events_as_in_aws(set_attribute: Setter = setattr) -> None:
    """An execution that ends emits a "Step Functions Execution Status Change" event.

    Step Functions sends one to EventBridge whenever an execution's status changes (SUCCEEDED, FAILED,
    TIMED_OUT, ABORTED, ...), which is how an aborted or crashed canary rollout is rolled back. moto emits
    none; here each end of an execution is handed to the listeners of ``listen_to_executions``.
    """
    from moto.stepfunctions.parser.backend.execution import BaseExecutionWorkerCommunication

    original = BaseExecutionWorkerCommunication.terminated
    if getattr(original, "_emits_events", False):
        return

    def terminated(self: Any) -> None:
        original(self)
        if not _execution_listeners:
            return
        event = execution_status_change_event(self.execution)
        for deliver in list(_execution_listeners):
            threading.Thread(target=deliver, args=(event,), name="execution-status", daemon=True).start()

    terminated._emits_events = True  # type: ignore[attr-defined]
    set_attribute(BaseExecutionWorkerCommunication, "terminated", terminated)


def payload_quota_as_in_aws(set_attribute: Setter = setattr) -> None:
    """A Lambda task result above 256 KiB fails the execution with States.DataLimitExceeded, uncaught.

    "States.DataLimitExceeded ... when the output of a connector is larger than payload size quota";
    "States.ALL ... can't catch the States.DataLimitExceeded terminal error"
    (https://docs.aws.amazon.com/step-functions/latest/dg/concepts-error-handling.html). moto passes any
    payload through and lets States.ALL catch everything, so a task returning a huge answer would look
    harmless locally while it ends the execution (with an alias half shifted) in AWS.
    """
    import json

    from moto.stepfunctions.parser.api import HistoryEventType, TaskFailedEventDetails
    from moto.stepfunctions.parser.asl.component.common.error_name import error_equals_decl
    from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import (
        FailureEvent,
        FailureEventException,
    )
    from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name import StatesErrorName
    from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name_type import (
        StatesErrorNameType,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_task import lambda_eval_utils
    from moto.stepfunctions.parser.asl.eval.event.event_detail import EventDetails

    original_invoke = lambda_eval_utils.execute_lambda_function_integration
    original_match = error_equals_decl.ErrorEqualsDecl._eval_body
    if getattr(original_invoke, "_quota_as_in_aws", False):
        return
    limit = StatesErrorName(typ=StatesErrorNameType.StatesStatesDataLimitExceeded)

    def execute_lambda_function_integration(env: Any, *args: Any, **kwargs: Any) -> None:
        original_invoke(env, *args, **kwargs)
        size = len(json.dumps(env.stack[-1].get("Payload"), separators=(",", ":")).encode())
        if size > PAYLOAD_QUOTA_BYTES:
            env.stack.pop()
            raise FailureEventException(
                FailureEvent(
                    env=env,
                    error_name=limit,
                    event_type=HistoryEventType.TaskFailed,
                    event_details=EventDetails(  # type: ignore[typeddict-item]
                        taskFailedEventDetails=TaskFailedEventDetails(
                            error="States.DataLimitExceeded",
                            cause=f"The state/task returned a result with a size exceeding the maximum "
                            f"number of bytes service limit ({size} bytes).",
                        )
                    ),
                )
            )

    def eval_body(self: Any, env: Any) -> None:
        error_name = env.stack[-1]
        if error_name == limit:  # terminal: States.ALL does not match it, only its own name does
            env.stack.pop()
            env.stack.append(limit in self.error_names)
            return
        original_match(self, env)

    execute_lambda_function_integration._quota_as_in_aws = True  # type: ignore[attr-defined]
    set_attribute(
        lambda_eval_utils, "execute_lambda_function_integration", execute_lambda_function_integration
    )
    set_attribute(error_equals_decl.ErrorEqualsDecl, "_eval_body", eval_body)


# ---------------------------------------------------------------------- (g) Spot instances


def spot_instances_refuse_protection(set_attribute: Setter = setattr) -> None:
    """A Spot instance can have neither termination nor stop protection.

    EC2: "You can't enable termination protection for Spot Instances"
    (https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/Using_ChangingDisableAPITermination.html) and
    "You can't enable stop protection for Spot Instances"
    (https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/ec2-stop-protection.html). ModifyInstanceAttribute
    on such an instance fails whatever the value, with UnsupportedOperation "Modifying
    'disableApiTermination' is not supported for spot instances." (as reported from real accounts in
    cloud-custodian/cloud-custodian#2083 and hashicorp/terraform-provider-aws#41206; the stop-protection
    message is assumed to read alike). moto sets either attribute on any instance.
    """
    from moto.ec2.exceptions import EC2ClientError
    from moto.ec2.models.instances import InstanceBackend

    original = InstanceBackend.modify_instance_attribute
    if getattr(original, "_spot_as_in_aws", False):
        return
    refused = {"disable_api_termination": "disableApiTermination", "disable_api_stop": "disableApiStop"}

    def modify_instance_attribute(self: Any, instance_id: str, key: str, value: Any) -> Any:
        instance = self.get_instance(instance_id)
        if key in refused and getattr(instance, "lifecycle", None) == "spot":
            raise EC2ClientError(
                "UnsupportedOperation", f"Modifying '{refused[key]}' is not supported for spot instances."
            )
        return original(self, instance_id, key, value)

    modify_instance_attribute._spot_as_in_aws = True  # type: ignore[attr-defined]
    set_attribute(InstanceBackend, "modify_instance_attribute", modify_instance_attribute)


def launch_template_spot_options_launch_spot_instances(set_attribute: Setter = setattr) -> None:
    """An instance launched from a launch template whose InstanceMarketOptions say ``spot`` is a Spot
    instance (``InstanceLifecycle: spot``), whether RunInstances, an Auto Scaling group or CloudFormation
    launches it (https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/interruption-behavior.html: Spot
    Instances configured in a launch template). moto marks only a RunInstances call that passes
    InstanceMarketOptions itself, so a group's members are never Spot.
    """
    from moto.ec2.models.instances import InstanceBackend

    original = InstanceBackend.run_instances
    if getattr(original, "_spot_as_in_aws", False):
        return

    def run_instances(self: Any, *args: Any, **kwargs: Any) -> Any:
        reservation = original(self, *args, **kwargs)
        template_spec = kwargs.get("launch_template")
        if template_spec:
            data = self._get_template_from_args(template_spec).data or {}
            if (data.get("InstanceMarketOptions") or {}).get("MarketType") == "spot":
                for instance in reservation.instances:
                    instance.lifecycle = "spot"
        return reservation

    run_instances._spot_as_in_aws = True  # type: ignore[attr-defined]
    set_attribute(InstanceBackend, "run_instances", run_instances)


# ---------------------------------------------------------------------- (h) network ACL quota

NETWORK_ACL_RULES_PER_DIRECTION = 20


def network_acl_entries_are_limited(set_attribute: Setter = setattr) -> None:
    """A network ACL holds at most 20 rules per direction (the default quota, "Rules per network ACL",
    https://docs.aws.amazon.com/vpc/latest/userguide/amazon-vpc-limits.html); the default "*" rules do not
    count. One more fails with NetworkAclEntryLimitExceeded. moto accepts any number.
    """
    from moto.ec2.exceptions import EC2ClientError
    from moto.ec2.models.network_acls import NetworkAclBackend

    original = NetworkAclBackend.create_network_acl_entry
    if getattr(original, "_limited_as_in_aws", False):
        return

    def create_network_acl_entry(
        self: Any, network_acl_id: str, rule_number: int, *args: Any, **kwargs: Any
    ) -> Any:
        egress = kwargs.get("egress", args[2] if len(args) > 2 else None)
        acl = self.get_network_acl(network_acl_id)
        same_direction = [
            entry
            for entry in acl.network_acl_entries
            if str(entry.egress).lower() == str(egress).lower() and int(entry.rule_number) < 32767
        ]
        if len(same_direction) >= NETWORK_ACL_RULES_PER_DIRECTION:
            raise EC2ClientError(
                "NetworkAclEntryLimitExceeded",
                f"The maximum number of entries for network ACL '{network_acl_id}' has been reached.",
            )
        return original(self, network_acl_id, rule_number, *args, **kwargs)

    create_network_acl_entry._limited_as_in_aws = True  # type: ignore[attr-defined]
    set_attribute(NetworkAclBackend, "create_network_acl_entry", create_network_acl_entry)


# ---------------------------------------------------------------------- (i) eventual consistency (opt-in)


def ec2_reads_lag_behind_writes(set_attribute: Setter = setattr, stale_reads: int = 2) -> None:
    """After ModifyNetworkInterfaceAttribute, the next ``stale_reads`` DescribeNetworkInterfaces calls
    still show the interface's previous groups.

    EC2 is eventually consistent: "the result of an API command you run that affects your Amazon EC2
    resources might not be immediately visible to all subsequent commands you run" (EC2 API reference,
    "Eventual consistency"). moto is immediately consistent. Not among the fixes applied by default (it
    slows every isolation down by the verification's back-off): tests and the fault matrix opt in.
    """
    from moto.ec2.models.elastic_network_interfaces import NetworkInterfaceBackend
    from moto.ec2.responses.elastic_network_interfaces import ElasticNetworkInterfaces

    modify = NetworkInterfaceBackend.modify_network_interface_attribute
    describe = ElasticNetworkInterfaces.describe_network_interfaces
    lagging: dict[str, tuple[list[Any], int]] = {}

    def modify_network_interface_attribute(
        self: Any, eni_id: str, group_ids: list[str], *args: Any, **kwargs: Any
    ) -> Any:
        eni = self.get_network_interface(eni_id)
        if group_ids and eni_id not in lagging:
            lagging[eni_id] = (list(eni._group_set), stale_reads)
        return modify(self, eni_id, group_ids, *args, **kwargs)

    def describe_network_interfaces(self: Any) -> Any:
        result = describe(self)
        body: dict[str, Any] = result.result  # type: ignore[assignment]
        shown = []
        for eni in body["NetworkInterfaces"]:
            stale = lagging.get(eni.id)
            if stale is None:
                shown.append(eni)
                continue
            groups, left = stale
            if left <= 1:
                del lagging[eni.id]
            else:
                lagging[eni.id] = (groups, left - 1)
            shown.append(_WithGroups(eni, groups))
        body["NetworkInterfaces"] = shown
        return result

    set_attribute(
        NetworkInterfaceBackend, "modify_network_interface_attribute", modify_network_interface_attribute
    )
    set_attribute(ElasticNetworkInterfaces, "describe_network_interfaces", describe_network_interfaces)


class _WithGroups:
    """A network interface as a stale read shows it: its earlier groups, everything else as it is now."""

    def __init__(self, eni: Any, groups: list[Any]) -> None:
        self._eni = eni
        self.group_set = groups

    def __getattr__(self, name: str) -> Any:
        return getattr(self._eni, name)


# ---------------------------------------------------------------------- (j) task tokens


def task_tokens_close_as_in_aws(set_attribute: Setter = setattr) -> None:
    """A task token answers its task once: after the task is answered, times out, or its execution ends,
    SendTaskSuccess / SendTaskFailure / SendTaskHeartbeat with it are ``TaskTimedOut``.

    Step Functions: "TaskTimedOut: The task token has either expired or the task associated with the token
    has already been closed" (https://docs.aws.amazon.com/step-functions/latest/apireference/API_SendTaskSuccess.html).
    moto keeps every token of an execution open: a second answer, or an answer after the wait ran out,
    succeeds silently while the execution runs, and is ``InvalidToken`` once it has ended. A person's
    `immutable-guard canary promote` after the wait had rolled back would be told it was delivered.
    """
    from moto.stepfunctions.parser.asl.eval.callback.callback import (
        CallbackConsumerTimeout,
        CallbackEndpoint,
    )
    from moto.stepfunctions.parser.models import StepFunctionsParserBackend

    original_interrupt = CallbackEndpoint.interrupt_all
    if getattr(original_interrupt, "_closes_as_in_aws", False):
        return

    def interrupt_all(self: Any) -> None:
        # Called when the task has its outcome (answer, timeout, error): the token is closed from now on.
        original_interrupt(self)
        if self.consumer_error is None:
            self.consumer_error = CallbackConsumerTimeout()

    from moto.core.exceptions import AWSError

    def task_answer_error(code: str, message: str) -> AWSError:
        return AWSError(message, exception_type=code)

    def answering(name: str) -> Callable[..., Any]:
        original = getattr(StepFunctionsParserBackend, name)

        def answer(self: Any, task_token: str, *args: Any, **kwargs: Any) -> Any:
            for execution in self._get_executions():
                worker = getattr(execution, "exec_worker", None)
                endpoint = worker.env.callback_pool_manager.get(task_token) if worker else None
                if endpoint is not None and (
                    endpoint.consumer_error is not None or str(execution.status) != "RUNNING"
                ):
                    raise task_answer_error("TaskTimedOut", "Task Timed Out")
            try:
                return original(self, task_token, *args, **kwargs)
            except AWSError as exc:
                # moto's parser errors keep their name in a class attribute its server never sends (the
                # answer has no error code); AWS names them: InvalidToken, TaskDoesNotExist, ...
                code = getattr(type(exc), "code", None)
                if not isinstance(code, str):
                    raise
                raise task_answer_error(code, str(exc.message) or code) from exc

        return answer

    interrupt_all._closes_as_in_aws = True  # type: ignore[attr-defined]
    set_attribute(CallbackEndpoint, "interrupt_all", interrupt_all)
    for name in ("send_task_success", "send_task_failure", "send_task_heartbeat"):
        set_attribute(StepFunctionsParserBackend, name, answering(name))


# ---------------------------------------------------------------------- (k) sts:AssumeRole across accounts


def assume_role_needs_a_role_that_trusts_the_caller(set_attribute: Setter = setattr) -> None:
    """AssumeRole succeeds only into a role that exists and whose trust policy admits the caller's account
    (and the external id, when the policy asks for one); otherwise AccessDenied.

    AWS: "the role's trust policy ... must grant the caller sts:AssumeRole", an sts:ExternalId condition must
    be met (https://docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRole.html), and a role that does
    not exist is refused like a role that does not trust the caller (AccessDenied). moto issues credentials
    for any role ARN, existing or not, so "is the member-roles stack deployed there?" could never fail
    locally. Checked: the role exists; an Allow statement for sts:AssumeRole names "*", the caller's
    account (root) or a principal of it; its StringEquals sts:ExternalId, if any, is the one given. Other
    conditions (aws:PrincipalOrgID...) are not evaluated here.
    """
    from moto.iam.models import iam_backends
    from moto.sts.exceptions import STSClientError
    from moto.sts.models import STSBackend

    original = STSBackend.__dict__["assume_role"]

    def assume_role(backend: Any, *args: Any, **kwargs: Any) -> Any:
        role_arn = str(kwargs.get("role_arn") or "")
        external_id = kwargs.get("external_id")
        caller = str(backend.account_id)
        parts = role_arn.split(":")
        account = parts[4] if len(parts) > 5 else ""
        role = None
        if account:
            try:
                role = iam_backends[account]["global"].get_role_by_arn(role_arn)
            except Exception:  # moto's IAMNotFoundException: the role does not exist
                role = None
        if role is None or not _trusts(role.assume_role_policy_document, caller, external_id):
            raise STSClientError(
                "AccessDenied",
                f"User: arn:aws:sts::{caller}:assumed-role/caller is not authorized to perform: "
                f"sts:AssumeRole on resource: {role_arn}",
            )
        return original(backend, *args, **kwargs)

    set_attribute(STSBackend, "assume_role", assume_role)


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _allows(document: Any, actions: set[str], caller_account: str) -> Iterator[dict[str, Any]]:
    """The Allow statements of a resource policy (a role's trust policy, a bus policy) that name one of
    ``actions`` and admit ``caller_account`` as principal ("*", the account id, or an ARN in it); their
    resources and conditions are the caller's to judge."""
    import json

    policy = json.loads(document) if isinstance(document, str) else (document or {})
    for statement in _as_list(policy.get("Statement", [])):
        if statement.get("Effect") != "Allow" or not actions & set(_as_list(statement.get("Action", []))):
            continue
        principal = statement.get("Principal", {})
        principals = _as_list(principal.get("AWS", []) if isinstance(principal, dict) else principal)
        if any(
            p == "*" or p == caller_account or str(p).split(":")[4:5] == [caller_account] for p in principals
        ):
            yield statement


def _trusts(document: Any, caller_account: str, external_id: str | None) -> bool:
    for statement in _allows(document, {"sts:AssumeRole", "sts:*", "*"}, caller_account):
        wanted = (statement.get("Condition", {}).get("StringEquals", {}) or {}).get("sts:ExternalId")
        if wanted is None or external_id in _as_list(wanted):
            return True
    return False


# ---------------------------------------------------------------------- (l) snapshot custody across accounts


def snapshots_are_shared_copied_and_locked_as_in_aws(set_attribute: Setter = setattr) -> None:
    """CopySnapshot reads a snapshot another account shared with the caller; a copy encrypted with a KMS key
    that is not enabled ends in the ``error`` state; LockSnapshot and DescribeLockedSnapshots exist, and a
    locked snapshot cannot be deleted.

    AWS: a snapshot shared through its ``createVolumePermission`` can be copied by the account it is shared
    with ("Users that you have authorized can use the snapshots that you share",
    https://docs.aws.amazon.com/ebs/latest/userguide/ebs-modifying-snapshot-permissions.html); CopySnapshot
    is called in the destination region, SourceRegion names the source
    (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_CopySnapshot.html); "A locked snapshot can't
    be deleted" (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_LockSnapshot.html). moto copies
    only the caller's own snapshots, never fails a copy, and has no snapshot lock, so custody in the security
    account could neither work nor fail locally. Modelled: the copy is ``completed`` at once (no progress);
    a KMS key that does not exist or is disabled in the destination makes it ``error`` (AWS fails a copy it
    cannot encrypt; the exact moment it does so is not modelled); lock states ``governance`` and
    ``compliance-cooloff``/``compliance`` (by CoolOffPeriod) with an expiry of LockDuration days;
    DeleteSnapshot of a locked snapshot fails with ``SnapshotLocked`` (the error code is this model's choice).
    """
    from datetime import timedelta

    from moto.core.utils import utcnow
    from moto.ec2.exceptions import EC2ClientError, InvalidSnapshotIdError
    from moto.ec2.models import ec2_backends
    from moto.ec2.models.elastic_block_store import EBSBackend
    from moto.ec2.responses.elastic_block_store import ElasticBlockStore

    original_copy = EBSBackend.__dict__["copy_snapshot"]
    original_delete = EBSBackend.__dict__["delete_snapshot"]

    def shared_source(backend: Any, snapshot_id: str, region: str) -> Any:
        for account, regions in list(ec2_backends.items()):
            if account == backend.account_id or region not in regions:
                continue
            snapshot = regions[region].snapshots.get(snapshot_id)
            if snapshot is not None and (
                backend.account_id in snapshot.create_volume_permission_userids
                or "all" in snapshot.create_volume_permission_groups
            ):
                return snapshot
        return None

    def key_enabled(key_id: str | None, account: str, region: str) -> bool:
        if not key_id:
            return True
        from moto.kms.models import kms_backends

        parts = key_id.split(":")
        if len(parts) > 5:  # a key ARN names its own account and region
            region, account = parts[3], parts[4]
        try:
            key = kms_backends[account][region].describe_key(key_id)
        except Exception:  # moto's NotFoundException: no such key there
            return False
        return bool(key.enabled) and key.key_state == "Enabled"

    def copy_snapshot(
        backend: Any, source_snapshot_id: str, source_region: str, description: str, kms_key_id: str | None
    ) -> Any:
        source = ec2_backends[backend.account_id][source_region].snapshots.get(source_snapshot_id)
        if source is None:
            source = shared_source(backend, source_snapshot_id, source_region)
            if source is None:
                raise InvalidSnapshotIdError()
            backend.snapshots[source_snapshot_id] = source  # seen by the original copy for one call
            try:
                copy = original_copy(
                    backend, source_snapshot_id, backend.region_name, description, kms_key_id
                )
            finally:
                del backend.snapshots[source_snapshot_id]
        else:
            copy = original_copy(backend, source_snapshot_id, source_region, description, kms_key_id)
        copy.owner_id = backend.account_id
        if not key_enabled(kms_key_id, backend.account_id, backend.region_name):
            copy.status = "error"
        return copy

    def delete_snapshot(backend: Any, snapshot_id: str) -> Any:
        snapshot = backend.snapshots.get(snapshot_id)
        lock = getattr(snapshot, "guard_lock", None)
        if lock is not None and lock["LockExpiresOn"] > utcnow():
            raise EC2ClientError(
                "SnapshotLocked", f"The snapshot '{snapshot_id}' is locked and cannot be deleted."
            )
        return original_delete(backend, snapshot_id)

    def lock_snapshot(response: Any) -> Any:
        from moto.core.responses import ActionResult

        snapshot = response.ec2_backend.get_snapshot(response._get_param("SnapshotId"))
        mode = response._get_param("LockMode")
        days = int(response._get_param("LockDuration") or 1)
        cool_off = response._get_param("CoolOffPeriod")
        now = utcnow()
        state = mode if mode == "governance" or not cool_off else "compliance-cooloff"
        lock: dict[str, Any] = {
            "SnapshotId": snapshot.id,
            "LockState": state,
            "LockDuration": days,
            "LockCreatedOn": now,
            "LockDurationStartTime": now,
            "LockExpiresOn": now + timedelta(days=days),
        }
        if cool_off:
            lock["CoolOffPeriod"] = int(cool_off)
            lock["CoolOffPeriodExpiresOn"] = now + timedelta(hours=int(cool_off))
        snapshot.guard_lock = lock
        return ActionResult(dict(lock))

    def describe_locked_snapshots(response: Any) -> Any:
        from moto.core.responses import ActionResult

        wanted = set(response._get_param("SnapshotIds", []))
        locks = [
            dict(s.guard_lock)
            for s in response.ec2_backend.snapshots.values()
            if getattr(s, "guard_lock", None) and (not wanted or s.id in wanted)
        ]
        return ActionResult({"Snapshots": locks})

    set_attribute(EBSBackend, "copy_snapshot", copy_snapshot)
    set_attribute(EBSBackend, "delete_snapshot", delete_snapshot)
    set_attribute(ElasticBlockStore, "lock_snapshot", lock_snapshot)
    set_attribute(ElasticBlockStore, "describe_locked_snapshots", describe_locked_snapshots)


# ---------------------------------------------------------------- (m) event bus policies across accounts


def organization_of(account_id: str) -> str | None:
    """The id of the AWS Organizations organisation ``account_id`` belongs to in moto, or None."""
    from moto.organizations.models import organizations_backends

    # A member is listed with its management account; the management account holds the organisation.
    management, partition = organizations_backends.master_accounts.get(account_id, (account_id, "aws"))
    organization = organizations_backends[management][partition].org
    return str(organization.id) if organization is not None else None


def bus_policy_admits(policy: Any, caller_account: str, bus_arn: str) -> bool:
    """Whether an event bus's resource policy lets ``caller_account`` put events on it: an Allow statement
    for events:PutEvents (or events:*), principal "*" or the caller's account, on the bus (or "*"), whose
    conditions are met. Conditions evaluated: StringEquals on aws:PrincipalOrgID and aws:PrincipalAccount
    (what the guard's bus uses); a statement with any other condition is not taken as an Allow."""
    for statement in _allows(policy, {"events:PutEvents", "events:*", "*"}, caller_account):
        if not any(r in ("*", bus_arn) for r in _as_list(statement.get("Resource", "*"))):
            continue
        conditions = statement.get("Condition", {}) or {}
        if set(conditions) - {"StringEquals"}:
            continue
        known = {
            "aws:PrincipalOrgID": organization_of(caller_account),
            "aws:PrincipalAccount": caller_account,
        }
        wanted = conditions.get("StringEquals", {})
        if any(key not in known or known[key] not in _as_list(value) for key, value in wanted.items()):
            continue
        return True
    return False


def put_events_on_another_accounts_bus_needs_its_policy(set_attribute: Setter = setattr) -> None:
    """PutEvents naming another account's event bus (by ARN) is admitted only by that bus's resource policy
    (an aws:PrincipalOrgID condition admits the accounts of that organisation), and the event lands on that
    bus, in that account; refused with AccessDeniedException otherwise.

    AWS: "The default event bus in your AWS account only allows events from one account. You can grant
    additional permissions to an event bus by attaching a resource-based policy to it ... use IAM conditions
    in the policy to grant permissions to an organization"
    (https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-event-bus-perms.html; PutPermission,
    https://docs.aws.amazon.com/eventbridge/latest/APIReference/API_PutPermission.html). moto evaluates no
    bus policy and looks the bus up by name in the caller's own account, so an account outside the
    organisation could not be refused locally (nor a bus of the caller's own account in another region be
    reached). Events of the caller's own buses in its region go through moto unchanged.
    """
    from moto.core.exceptions import JsonRESTError
    from moto.events.models import EventsBackend, events_backends

    original = EventsBackend.__dict__["put_events"]

    def put_events(backend: Any, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        caller = str(backend.account_id)
        own, entries = [], []
        for event in events:
            name = str(event.get("EventBusName") or "")
            parts = name.split(":")
            if not name.startswith("arn:") or len(parts) < 6:
                own.append(event)
                continue
            account, region, bus_name = parts[4], parts[3], name.rsplit("/", 1)[-1]
            if (account, region) == (caller, backend.region_name):
                own.append({**event, "EventBusName": bus_name})
                continue
            target = events_backends[account][region]
            try:
                bus = target.describe_event_bus(bus_name)
            except Exception:  # moto's ResourceNotFoundException: no such bus
                bus = None
            # A bus of the caller's own account in another region needs no resource policy (the caller's
            # IAM permissions admit it); another account's bus only admits what its policy allows.
            admitted = bus is not None and (account == caller or bus_policy_admits(bus.policy, caller, name))
            if not admitted:
                raise JsonRESTError(
                    "AccessDeniedException",
                    f"User: arn:aws:sts::{caller}:assumed-role/caller is not authorized to perform: "
                    f"events:PutEvents on resource: {name} because no resource-based policy allows the "
                    "events:PutEvents action",
                )
            entries.extend(original(target, [{**event, "EventBusName": bus_name}]))
        if own:
            entries = original(backend, own) + entries
        return entries

    set_attribute(EventsBackend, "put_events", put_events)


# ---------------------------------------------------------------------- (p) SQS event source mappings


def sqs_event_source_mappings_poll_as_in_aws(set_attribute: Setter = setattr) -> None:
    """A message sent to a queue with an event source mapping waits for the runtime's poller.

    Lambda polls the queue, invokes the function with a batch, deletes the records that succeeded and,
    with ReportBatchItemFailures, leaves those the function reported failed for another receive, until the
    queue's redrive policy moves them to its dead-letter queue
    (https://docs.aws.amazon.com/lambda/latest/dg/services-sqs-errorhandling.html). moto instead invokes the
    function inside SendMessage, one message per invocation, and deletes the message when the invocation
    returns, whatever the function reported: a failed record would be lost. Here SendMessage only enqueues;
    local/event_source_mappings.py polls as Lambda does (the EventRouter runs it right after delivering).
    """
    from moto.sqs.models import Queue

    original = Queue.add_message
    hiding = threading.RLock()

    def add_message(queue: Any, message: Any) -> None:
        with hiding:
            mappings = queue.__dict__.get("lambda_event_source_mappings")
            # moto triggers the queue's mappings from this attribute: hidden while the message is added.
            queue.__dict__["lambda_event_source_mappings"] = {}
            try:
                original(queue, message)
            finally:
                queue.__dict__["lambda_event_source_mappings"] = mappings

    set_attribute(Queue, "add_message", add_message)


# ---------------------------------------------------------------------- (q) asynchronous Lambda invocations

_async_lock = threading.Lock()
_async_invocations: list[threading.Thread] = []


def async_invocations_as_in_aws(set_attribute: Setter = setattr) -> None:
    """``Invoke`` with ``InvocationType: Event``: Lambda queues the event, answers 202 at once and runs the
    function later (https://docs.aws.amazon.com/lambda/latest/dg/invocation-async.html,
    https://docs.aws.amazon.com/lambda/latest/api/API_Invoke.html). moto ran the function inside the Invoke
    call, so the caller waited for it (Detect's request for isolation groups, issue 15). Here the function
    runs on a thread of its own; an unknown function is still refused at once (ResourceNotFoundException).
    ``wait_for_async_invocations()`` waits for those started so far; the runtime waits for them on stop."""
    from moto.awslambda.models import LambdaBackend

    original = LambdaBackend.invoke

    def invoke(
        self: Any, function_name: str, qualifier: str | None, body: Any, headers: Any, response_headers: Any
    ) -> Any:
        if headers.get("X-Amz-Invocation-Type") != "Event":
            return original(self, function_name, qualifier, body, headers, response_headers)
        self.get_function(function_name, qualifier)

        def run() -> None:
            try:
                original(self, function_name, qualifier, body, {"x-amz-invocation-type": "Event"}, {})
            except Exception:  # Lambda keeps an asynchronous failure from the caller
                logger.exception("asynchronous invocation of %s failed", function_name)

        thread = threading.Thread(target=run, name=f"async-invoke-{function_name}", daemon=True)
        with _async_lock:
            _async_invocations.append(thread)
        thread.start()
        response_headers["Content-Length"] = "0"
        return b""

    set_attribute(LambdaBackend, "invoke", invoke)


def wait_for_async_invocations(timeout: float = 60.0) -> None:
    """Wait (at most ``timeout`` seconds each) for the asynchronous invocations started so far to end."""
    with _async_lock:
        started = list(_async_invocations)
        _async_invocations.clear()
    for thread in started:
        thread.join(timeout)


# ---------------------------------------------------------------------- the model's cost, not its behaviour


def transactions_back_up_only_their_items(set_attribute: Setter = setattr) -> None:
    """TransactWriteItems as moto runs it, at the cost of the items it names instead of whole tables.

    So that a failed transaction changes nothing (all or nothing, as in DynamoDB), moto backs up every
    table the transaction names by deep-copying the whole table, once per item of the transaction. The
    ledger's lock is one transaction of up to five items on a table that grows with every event, so a drill
    or a load run spent most of its time copying the ledger (the 95 sample events through Detect: about
    110 of 138 s). Here moto's transaction runs as before, but its backup of a table is the table itself,
    and when the transaction fails the items it names are put back as they were. Tables with a stream keep
    moto's whole copy (the copy also drops the stream records of the cancelled writes). Not a difference
    from AWS: what a transaction does and returns is unchanged."""
    import copy

    from moto.dynamodb import models
    from moto.dynamodb.models.dynamo_type import DynamoType
    from moto.dynamodb.models.table import Table

    backend = models.DynamoDBBackend
    if getattr(backend.transact_write_items, "backs_up_items_only", False):
        return
    original = backend.transact_write_items

    class TablesAreTheirOwnBackup:
        """``copy`` as moto.dynamodb.models sees it: there, the only deep copy of a table is a
        transaction's backup."""

        def __getattr__(self, name: str) -> Any:
            return getattr(copy, name)

        @staticmethod
        def deepcopy(value: Any, memo: Any = None) -> Any:
            if isinstance(value, Table) and value.stream_shard is None:
                return value
            return copy.deepcopy(value, memo)

    def named_item(backend_: Any, entry: dict[str, Any]) -> tuple[Any, Any, Any] | None:
        """(table, hash key, range key) of the item one transaction entry writes or checks."""
        for operation in entry.values():
            if not isinstance(operation, dict):
                return None
            try:
                table = backend_.get_table(operation.get("TableName"))
            except Exception:
                return None  # moto refuses the transaction before writing this one
            attributes = operation.get("Key") or operation.get("Item") or {}
            if table.hash_key_attr not in attributes:
                return None
            if table.range_key_attr is None:
                return table, DynamoType(attributes[table.hash_key_attr]), None
            if table.range_key_attr not in attributes:
                return None
            return (
                table,
                DynamoType(attributes[table.hash_key_attr]),
                DynamoType(attributes[table.range_key_attr]),
            )
        return None

    def put_back(table: Any, hash_key: Any, range_key: Any, item: Any) -> None:
        if range_key is None:
            if item is None:
                table.items.pop(hash_key, None)
            else:
                table.items[hash_key] = item
        elif item is None:
            table.items.get(hash_key, {}).pop(range_key, None)
        else:
            table.items[hash_key][range_key] = item

    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> Any:
        saved: list[tuple[Any, Any, Any, Any]] = []
        for entry in transact_items[:100]:  # moto refuses more before writing any
            named = named_item(self, entry)
            if named is not None:
                table, hash_key, range_key = named
                before = table.get_item(hash_key, range_key)
                saved.append((table, hash_key, range_key, copy.deepcopy(before)))
        try:
            return original(self, transact_items)
        except Exception:
            # Newest first, so a key named twice ends as it was before the first write.
            for table, hash_key, range_key, before in reversed(saved):
                if table.stream_shard is None:
                    put_back(table, hash_key, range_key, before)
            raise

    transact_write_items.backs_up_items_only = True  # type: ignore[attr-defined]
    set_attribute(models, "copy", TablesAreTheirOwnBackup())
    set_attribute(backend, "transact_write_items", transact_write_items)


# ---------------------------------------------------------------------- all of them


def _all_fixes() -> list[Callable[[Setter], None]]:
    from immutable_guard.local.stack_updates import (
        replace_stack_instances_on_update,
        stack_updates_run_as_their_principal,
    )

    return [
        eni_groups_as_in_aws,
        stack_instances_use_their_launch_template,
        stack_load_balancers_have_their_type,
        previous_parameter_values_as_in_aws,
        sub_references_count_as_references,
        replace_stack_instances_on_update,
        # After the one above: it wraps it, so a refused update replaces nothing.
        stack_updates_run_as_their_principal,
        conditional_statements_apply_only_when_met,
        sns_message_size_in_bytes,
        alias_revisions_as_in_aws,
        execution_status_events_as_in_aws,
        payload_quota_as_in_aws,
        task_tokens_close_as_in_aws,
        spot_instances_refuse_protection,
        launch_template_spot_options_launch_spot_instances,
        network_acl_entries_are_limited,
        assume_role_needs_a_role_that_trusts_the_caller,
        snapshots_are_shared_copied_and_locked_as_in_aws,
        put_events_on_another_accounts_bus_needs_its_policy,
        sqs_event_source_mappings_poll_as_in_aws,
        async_invocations_as_in_aws,
        transactions_back_up_only_their_items,
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
