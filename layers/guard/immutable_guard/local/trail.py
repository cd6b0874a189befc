"""Turns API calls made by a named actor into CloudTrail-shaped EventBridge events, because moto records
no CloudTrail: the local runtime must produce what the detector reads in AWS.

Request parameters follow CloudTrail, not boto3: EC2 (query API) keys are camelCase and lists are
``{"items": [...]}``; newer EC2 APIs are wrapped as ``{"<Operation>Request": {...}}``; JSON-protocol
services (SSM, EC2 Instance Connect) keep their lowerCamel request fields.
"""

from __future__ import annotations

import base64
import threading
import uuid
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import boto3
from botocore.exceptions import ClientError
from botocore.model import ListShape, OperationModel, Shape, StructureShape

DETAIL_TYPE = "AWS API Call via CloudTrail"
SENSITIVE = "<sensitiveDataRemoved>"

# EC2 operations CloudTrail records in the request-wrapper form.
_WRAPPED_EC2 = frozenset(
    {
        "ModifySecurityGroupRules",
        "AssociateIamInstanceProfile",
        "ReplaceIamInstanceProfileAssociation",
        "DisassociateIamInstanceProfile",
        "CreateLaunchTemplate",
        "CreateLaunchTemplateVersion",
        "ModifyLaunchTemplate",
        "ModifyInstanceMetadataOptions",
        "ModifyManagedPrefixList",
        "CreateTrafficMirrorSession",
        "ModifyTrafficMirrorSession",
        "CreateReplaceRootVolumeTask",
    }
)
# CloudTrail records the resources and tags of these as resourcesSet and tagSet.
_TAG_OPERATIONS = frozenset({"CreateTags", "DeleteTags"})
# CloudTrail records the new security groups of these as groupSet.items[].groupId.
_GROUP_SET_OPERATIONS = frozenset({"ModifyInstanceAttribute", "ModifyNetworkInterfaceAttribute"})
_SENSITIVE_MEMBERS = {"UserData", "Parameters"}
_READ_ONLY_PREFIXES = ("Describe", "Get", "List", "Lookup", "Search", "Head")
# Calls of these services change what the Config recorder records (EC2 resources; Auto Scaling and
# CloudFormation launch and terminate instances).
_RECORDED_SERVICES = frozenset({"ec2", "autoscaling", "cloudformation"})
# Data events: a trail of management events does not record them.
_DATA_EVENTS = frozenset(
    {
        ("dynamodb", "PutItem"),
        ("dynamodb", "UpdateItem"),
        ("dynamodb", "DeleteItem"),
        ("dynamodb", "BatchWriteItem"),
        ("dynamodb", "TransactWriteItems"),
        ("s3", "PutObject"),
        ("s3", "DeleteObject"),
        ("s3", "DeleteObjects"),
        ("s3", "CopyObject"),
        ("sns", "Publish"),
        ("sqs", "SendMessage"),
        ("sqs", "DeleteMessage"),
        ("lambda", "Invoke"),
    }
)
# CloudTrail names Lambda's events after the API version of the operation, not the SDK's name
# (https://docs.aws.amazon.com/lambda/latest/dg/logging-using-cloudtrail.html; the CloudTrail User Guide's
# list of supported Lambda events): an alias moved by `sam deploy` is "UpdateAlias20150331".
LAMBDA_EVENT_NAMES = {
    "AddPermission": "AddPermission20150331v2",
    "CreateAlias": "CreateAlias20150331",
    "CreateEventSourceMapping": "CreateEventSourceMapping20150331",
    "CreateFunction": "CreateFunction20150331",
    "DeleteAlias": "DeleteAlias20150331",
    "DeleteEventSourceMapping": "DeleteEventSourceMapping20150331",
    "DeleteFunction": "DeleteFunction20150331",
    "PublishVersion": "PublishVersion20150331",
    "RemovePermission": "RemovePermission20150331v2",
    "TagResource": "TagResource20170331v2",
    "UntagResource": "UntagResource20170331v2",
    "UpdateAlias": "UpdateAlias20150331",
    "UpdateEventSourceMapping": "UpdateEventSourceMapping20150331",
    "UpdateFunctionCode": "UpdateFunctionCode20150331v2",
    "UpdateFunctionConfiguration": "UpdateFunctionConfiguration20150331v2",
}
LAMBDA_SOURCE_IP = "192.0.2.10"  # where a function's calls come from (a documentation address)


class Recorder(Protocol):
    """What the emitter tells AWS Config about (config_recorder.ConfigRecorder)."""

    @property
    def lock(self) -> AbstractContextManager[Any]:
        """Held by a change until its event is noted, and by a snapshot."""

    def note(self, event: dict[str, Any]) -> None: ...

    def observe(self) -> list[dict[str, Any]]: ...


def read_only(operation_name: str) -> bool:
    """CloudTrail's readOnly: the call reads and changes nothing."""
    return operation_name.startswith(_READ_ONLY_PREFIXES)


def changes_recorded_resources(model: OperationModel) -> bool:
    """A call that may change what Config records: it must be noted before a snapshot can see it."""
    return model.service_model.endpoint_prefix in _RECORDED_SERVICES and not read_only(model.name)


@dataclass(frozen=True)
class Actor:
    """The principal whose calls are recorded (an assumed role by default, as most attackers are)."""

    arn: str = "arn:aws:sts::123456789012:assumed-role/attacker/session"
    source_ip: str = "203.0.113.66"
    user_agent: str = "aws-cli/2.17.0 Python/3.12.0 Linux/6.1 exe/x86_64"
    access_key_id: str = "ASIAEXAMPLELOCAL0001"

    @property
    def account_id(self) -> str:
        return self.arn.split(":")[4]

    @classmethod
    def for_function(cls, role_arn: str, function_name: str) -> Actor:
        """A Lambda function calling AWS: a session of its execution role named after the function."""
        account = role_arn.split(":")[4]
        role_name = role_arn.rsplit("/", 1)[-1]
        return cls(
            arn=f"arn:aws:sts::{account}:assumed-role/{role_name}/{function_name}",
            source_ip=LAMBDA_SOURCE_IP,
            user_agent="Boto3/1.35.0 md/Botocore#1.35.0 ua/2.0 os/linux lang/python#3.12 "
            "exec-env/AWS_Lambda_python3.12",
            access_key_id="ASIAEXAMPLELAMBDA001",
        )

    def user_identity(self) -> dict[str, Any]:
        """userIdentity as CloudTrail writes it: an assumed role names the role it was issued for."""
        parts = self.arn.split(":", 5)
        resource = parts[5] if len(parts) > 5 else ""
        if resource.startswith("assumed-role/"):
            _, role, session = [*resource.split("/", 2), ""][:3]
            role_arn = f"arn:aws:iam::{self.account_id}:role/{role}"
            return {
                "type": "AssumedRole",
                "principalId": f"AROAEXAMPLELOCAL:{session}",
                "arn": self.arn,
                "accountId": self.account_id,
                "accessKeyId": self.access_key_id,
                "sessionContext": {
                    "sessionIssuer": {
                        "type": "Role",
                        "principalId": "AROAEXAMPLELOCAL",
                        "arn": role_arn,
                        "accountId": self.account_id,
                        "userName": role,
                    },
                    "attributes": {"creationDate": _now(), "mfaAuthenticated": "false"},
                },
            }
        kind = "Root" if resource == "root" else "IAMUser"
        return {
            "type": kind,
            "principalId": "AIDAEXAMPLELOCAL",
            "arn": self.arn,
            "accountId": self.account_id,
            "accessKeyId": self.access_key_id,
            **({"userName": resource.split("/")[-1]} if kind == "IAMUser" else {}),
        }


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _lower_camel(name: str) -> str:
    return name[:1].lower() + name[1:]


def _ec2_query_shape(value: Any, shape: Shape | None) -> Any:
    """boto3 value -> CloudTrail's EC2 query-API shape (camelCase keys, lists as {"items": [...]})."""
    if isinstance(shape, StructureShape) and isinstance(value, dict):
        converted = {}
        for name, item in value.items():
            member = shape.members.get(name)
            key = str(member.serialization.get("name", name)) if member is not None else name
            converted[_lower_camel(key)] = (
                SENSITIVE if name in _SENSITIVE_MEMBERS else _ec2_query_shape(item, member)
            )
        return converted
    if isinstance(shape, ListShape) and isinstance(value, list):
        items = [_ec2_query_shape(item, shape.member) for item in value]
        if shape.member.type_name != "structure":
            # CloudTrail records scalar lists as items of a one-field structure named after the member.
            field = _lower_camel(shape.member.serialization.get("name", "value"))
            items = [{"value" if field == "item" else field: item} for item in items]
        return {"items": items}
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    return value


def _wrapped_shape(value: Any, shape: Shape | None) -> Any:
    """The request-wrapper form: query-API names kept in PascalCase; list items carry a 1-based tag."""
    if isinstance(shape, StructureShape) and isinstance(value, dict):
        converted = {}
        for name, item in value.items():
            member = shape.members.get(name)
            key = str(member.serialization.get("name", name)) if member is not None else name
            converted[key[:1].upper() + key[1:]] = _wrapped_shape(item, member)
        return converted
    if isinstance(shape, ListShape) and isinstance(value, list):
        items = []
        for index, item in enumerate(value, start=1):
            converted_item = _wrapped_shape(item, shape.member)
            items.append(
                {**converted_item, "tag": index} if isinstance(converted_item, dict) else converted_item
            )
        return items[0] if len(items) == 1 else items
    return value


def _json_shape(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            _lower_camel(k): SENSITIVE if k in _SENSITIVE_MEMBERS else _json_shape(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_json_shape(item) for item in value]
    return value


def _tag_request(params: dict[str, Any]) -> dict[str, Any]:
    """CreateTags / DeleteTags as CloudTrail records them: resourcesSet.items[].resourceId and
    tagSet.items[].{key, value}; a DeleteTags tag without a value has no "value"."""
    converted: dict[str, Any] = {
        "resourcesSet": {"items": [{"resourceId": r} for r in params.get("Resources") or []]}
    }
    if params.get("Tags"):
        converted["tagSet"] = {
            "items": [
                {"key": t.get("Key"), **({"value": t["Value"]} if "Value" in t else {})}
                for t in params["Tags"]
            ]
        }
    return converted


def request_parameters(operation: OperationModel, params: dict[str, Any]) -> dict[str, Any]:
    """CloudTrail's requestParameters for a boto3 call of ``operation`` with ``params``."""
    params = {k: v for k, v in params.items() if k != "DryRun"}
    name = operation.name
    protocol = operation.metadata.get("protocol")
    if protocol == "ec2":
        if name in _WRAPPED_EC2:
            return {f"{name}Request": _wrapped_shape(params, operation.input_shape)}
        if name in _TAG_OPERATIONS:
            return _tag_request(params)
        groups = params.pop("Groups", None) if name in _GROUP_SET_OPERATIONS else None
        converted: dict[str, Any] = _ec2_query_shape(params, operation.input_shape)
        if groups is not None:
            converted["groupSet"] = {"items": [{"groupId": group} for group in groups]}
        return converted
    result: dict[str, Any] = _json_shape(params)
    return result


class CloudTrailEmitter:
    """Builds CloudTrail-shaped EventBridge events and hands each to ``deliver`` (e.g. ``router.put``).

    Parameters
    ----------
    deliver:
        Called with each event; the EventRouter's ``put`` in the local runtime.
    region:
        awsRegion of the records.
    """

    def __init__(
        self,
        deliver: Callable[[dict[str, Any]], Any],
        region: str = "us-east-1",
        recorder: Recorder | None = None,
    ) -> None:
        self.deliver = deliver
        self.region = region
        self.recorder = recorder
        self.events: list[dict[str, Any]] = []
        self._holding = threading.local()

    def record(
        self,
        actor: Actor,
        event_source: str,
        event_name: str,
        request_parameters: dict[str, Any] | None,
        response_elements: dict[str, Any] | None = None,
        error_code: str | None = None,
        error_message: str | None = None,
    ) -> dict[str, Any]:
        """The EventBridge event for one API call, without delivering it."""
        detail: dict[str, Any] = {
            "eventVersion": "1.09",
            "userIdentity": actor.user_identity(),
            "eventTime": _now(),
            "eventSource": event_source,
            "eventName": event_name,
            "awsRegion": self.region,
            "sourceIPAddress": actor.source_ip,
            "userAgent": actor.user_agent,
            "requestParameters": request_parameters,
            "responseElements": response_elements,
            "requestID": str(uuid.uuid4()),
            "eventID": str(uuid.uuid4()),
            "readOnly": read_only(event_name),
            "eventType": "AwsApiCall",
            "managementEvent": True,
            "recipientAccountId": actor.account_id,
            "eventCategory": "Management",
        }
        if error_code:
            detail["errorCode"] = error_code
            detail["errorMessage"] = error_message or ""
        service = event_source.split(".", 1)[0]
        return {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": DETAIL_TYPE,
            "source": f"aws.{service}",
            "account": actor.account_id,
            "time": detail["eventTime"],
            "region": self.region,
            "resources": [],
            "detail": detail,
        }

    def emit(
        self,
        actor: Actor,
        event_source: str,
        event_name: str,
        request_parameters: dict[str, Any] | None,
        response_elements: dict[str, Any] | None = None,
        error_code: str | None = None,
        error_message: str | None = None,
    ) -> dict[str, Any]:
        """Record and deliver a call that was not (or cannot be) made against moto, e.g. SSM StartSession
        ``{"target": "i-..."}`` or EC2 Instance Connect SendSSHPublicKey."""
        event = self.record(
            actor, event_source, event_name, request_parameters, response_elements, error_code, error_message
        )
        self.keep(event)
        self.deliver(event)
        return event

    def keep(self, event: dict[str, Any]) -> None:
        """Remember an event (and tell the recorder of it) without delivering it."""
        self.events.append(event)
        if self.recorder is not None:
            self.recorder.note(event)

    def session(
        self, actor: Actor, region: str | None = None, credentials: dict[str, Any] | None = None
    ) -> boto3.Session:
        """A boto3 session whose every call (successful or failed) is emitted as the actor's.

        ``credentials`` (an AssumeRole answer's): the calls act in the account they belong to (moto keeps
        accounts apart by credentials); without them, in the local AWS's own account."""
        session = boto3.Session(
            aws_access_key_id=(credentials or {}).get("AccessKeyId", actor.access_key_id),
            aws_secret_access_key=(credentials or {}).get("SecretAccessKey", "local-actor-secret"),
            aws_session_token=(credentials or {}).get("SessionToken"),
            region_name=region or self.region,
        )
        session.events.register("before-parameter-build.*.*", remember_params)
        session.events.register("before-call.*.*", self._before_call)
        session.events.register("after-call.*.*", lambda **kwargs: self._after_call(actor, **kwargs))
        session.events.register("after-call-error.*.*", lambda **kwargs: self._release())
        return session

    def _before_call(self, model: OperationModel, **_: Any) -> None:
        # A change is noted before the recorder may snapshot it (see config_recorder).
        if self.recorder is not None and changes_recorded_resources(model):
            self.recorder.lock.__enter__()
            self._holding.depth = getattr(self._holding, "depth", 0) + 1

    def _release(self) -> None:
        if getattr(self._holding, "depth", 0) and self.recorder is not None:
            self._holding.depth -= 1
            self.recorder.lock.__exit__(None, None, None)

    def _after_call(
        self,
        actor: Actor,
        http_response: Any,
        parsed: dict[str, Any],
        model: OperationModel,
        context: Any,
        **_: Any,
    ) -> None:
        try:
            params = (context or {}).get("immutable_guard_params") or {}
            failed = getattr(http_response, "status_code", 200) >= 300
            event = self.record_call(actor, model, params, parsed, failed)
            self.keep(event)
        finally:
            self._release()
        self.deliver(event)
        if self.recorder is not None and changes_recorded_resources(model) and not failed:
            self.recorder.observe()

    def record_call(
        self,
        actor: Actor,
        model: OperationModel,
        params: dict[str, Any],
        parsed: dict[str, Any] | None,
        failed: bool,
    ) -> dict[str, Any]:
        """The event of one boto3 call (boto3 parameters and parsed response), without delivering it."""
        source = f"{model.service_model.endpoint_prefix}.amazonaws.com"
        error = (parsed or {}).get("Error") or {}
        response = None if failed else {k: v for k, v in (parsed or {}).items() if k != "ResponseMetadata"}
        name = (
            LAMBDA_EVENT_NAMES.get(model.name, model.name) if source == "lambda.amazonaws.com" else model.name
        )
        return self.record(
            actor,
            source,
            name,
            request_parameters(model, params),
            response_elements=_json_safe(response),
            error_code=error.get("Code", "Error") if failed else None,
            error_message=error.get("Message") if failed else None,
        )

    def hear_functions(self, function_names: Iterable[str]) -> Callable[[], None]:
        """Record the calls these Lambda functions make (run in-process by lambda_runner) as CloudTrail
        records their execution roles' calls, and observe Config after an invocation that changed
        recorded resources. Returns the function that stops it."""
        from immutable_guard.local import lambda_runner

        names = frozenset(function_names)

        def calls_of(function: Any) -> FunctionCalls | None:
            if function.function_name not in names:
                return None
            return FunctionCalls(self, Actor.for_function(str(function.role), str(function.function_name)))

        return lambda_runner.observe_calls(calls_of)


class FunctionCalls:
    """The calls of one Lambda invocation, recorded as CloudTrail records them (a lambda_runner observer).

    Parameters
    ----------
    emitter:
        Builds and delivers the events; its recorder hears of them.
    actor:
        The function's execution role session (``Actor.for_function``).
    """

    def __init__(self, emitter: CloudTrailEmitter, actor: Actor) -> None:
        self.emitter = emitter
        self.actor = actor
        self.changed = False

    def call(self, model: OperationModel, params: dict[str, Any], make_call: Callable[[], Any]) -> Any:
        """Make one call of the function and record it; what the call returns or raises is unchanged."""
        service = model.service_model.endpoint_prefix
        if read_only(model.name) or (service, model.name) in _DATA_EVENTS:
            return make_call()
        recorder = self.emitter.recorder
        holds = recorder is not None and changes_recorded_resources(model)
        failure: ClientError | None = None
        if holds and recorder is not None:
            recorder.lock.__enter__()
        try:
            try:
                response = make_call()
            except ClientError as exc:
                failure, response = exc, exc.response
            event = self.emitter.record_call(self.actor, model, params, response, failure is not None)
            self.emitter.keep(event)
        finally:
            if holds and recorder is not None:
                recorder.lock.__exit__(None, None, None)
        self.emitter.deliver(event)
        self.changed = self.changed or (holds and failure is None)
        if failure is not None:
            raise failure
        return response

    def finished(self) -> None:
        """The invocation ended: Config observes what it changed."""
        if self.changed and self.emitter.recorder is not None:
            self.emitter.recorder.observe()


def remember_params(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
    """A boto3 before-parameter-build hook: keeps the call's parameters for the after-call hook."""
    context["immutable_guard_params"] = dict(params)


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value
