"""Which IAM actions the functions and state machines of a template need, read from the AWS calls they make
on the local runtime: every call is mapped to the IAM actions AWS authorizes for it, and each new
(principal, action) is appended to the file named by ``IMMUTABLE_GUARD_CALL_LOG`` (JSON lines).

The test suite sets that variable and holds template.yaml and organization/member-roles.yaml to what the
log saw (tests/security); the log is off otherwise. A principal is a function or a state machine, named by
its logical id in the template it was deployed from (the local deployer names each one here), or a member
role of organization/member-roles.yaml that such a function acted through in a member account, named by
its role name (``ImmutableGuard-Member-Quarantine``: the name AWS's AccessDenied would give).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CALL_LOG_VARIABLE = "IMMUTABLE_GUARD_CALL_LOG"

# botocore's signing name is the IAM service prefix, except for these.
_IAM_PREFIX = {"monitoring": "cloudwatch"}

# Operations whose IAM action has another name. Source: the Service Authorization Reference ("Actions
# defined by ..."), and each API reference's Permissions section, e.g. ListObjectsV2: "You must have
# permission to perform the s3:ListBucket action"
# (https://docs.aws.amazon.com/AmazonS3/latest/API/API_ListObjectsV2.html).
_RENAMED = {
    "s3:ListObjectsV2": "s3:ListBucket",
    "s3:ListObjects": "s3:ListBucket",
    "s3:HeadBucket": "s3:ListBucket",
    "s3:HeadObject": "s3:GetObject",
    "s3:ListObjectVersions": "s3:ListBucketVersions",
    "s3:DeleteObjects": "s3:DeleteObject",
    "lambda:Invoke": "lambda:InvokeFunction",
}
# "No permissions are required to perform this operation"
# (https://docs.aws.amazon.com/STS/latest/APIReference/API_GetCallerIdentity.html).
_NEEDS_NO_PERMISSION = frozenset({"sts:GetCallerIdentity"})
# TransactWriteItems has no IAM action of its own: "Permissions for Put, Update, Delete, and Get actions
# are governed by the permissions used for the underlying PutItem, UpdateItem, DeleteItem, and GetItem
# operations. For the ConditionCheck action, you can use the dynamodb:ConditionCheckItem permission"
# (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/transaction-apis-iam.html).
_TRANSACT_ITEMS = {
    "Put": "dynamodb:PutItem",
    "Update": "dynamodb:UpdateItem",
    "Delete": "dynamodb:DeleteItem",
    "ConditionCheck": "dynamodb:ConditionCheckItem",
    "Get": "dynamodb:GetItem",
}
# Publishing to a topic or queue encrypted with a KMS key needs the key too, on the caller's credentials:
# kms:GenerateDataKey and kms:Decrypt (https://docs.aws.amazon.com/sns/latest/dg/sns-key-management.html,
# https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-key-management.html).
_ENCRYPTED_TARGET_KEY = frozenset({"kms:GenerateDataKey", "kms:Decrypt"})


def iam_actions(
    service: str,
    operation: str,
    params: Mapping[str, Any],
    encrypted: Callable[[str, Mapping[str, Any]], bool] = lambda action, params: False,
) -> frozenset[str]:
    """The IAM actions AWS authorizes for one call.

    Parameters
    ----------
    service:
        botocore's signing name of the service (``ec2``, ``monitoring``, ``states``...).
    operation:
        The API operation (``DescribeInstances``).
    params:
        The call's parameters, as given to boto3: some decide further actions (tags on create, a role
        passed to a service).
    encrypted:
        Whether the topic or queue a ``sns:Publish`` / ``sqs:SendMessage`` call writes to is encrypted with
        a KMS key (the caller then needs the key).
    """
    prefix = _IAM_PREFIX.get(service, service)
    action = _RENAMED.get(f"{prefix}:{operation}", f"{prefix}:{operation}")
    if action in _NEEDS_NO_PERMISSION:
        return frozenset()
    if action == "dynamodb:TransactWriteItems":
        items = params.get("TransactItems") or []
        return frozenset(_TRANSACT_ITEMS[kind] for item in items for kind in item if kind in _TRANSACT_ITEMS)
    actions = {action}
    # "If tags are specified in the resource-creating action, Amazon performs additional authorization on
    # the ec2:CreateTags action" (https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/supported-iam-actions-tagging.html).
    if prefix == "ec2" and params.get("TagSpecifications"):
        actions.add("ec2:CreateTags")
    # Giving a service a role to act with is iam:PassRole on the caller: an instance profile's role to EC2
    # (https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/permission-to-pass-iam-roles.html), a stack's
    # service role to CloudFormation
    # (https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/using-iam-servicerole.html).
    if action in ("ec2:AssociateIamInstanceProfile", "ec2:ReplaceIamInstanceProfileAssociation") or (
        prefix == "cloudformation" and params.get("RoleARN")
    ):
        actions.add("iam:PassRole")
    if action in ("sns:Publish", "sqs:SendMessage", "sqs:SendMessageBatch") and encrypted(action, params):
        actions |= _ENCRYPTED_TARGET_KEY
    return frozenset(actions)


# ---------------------------------------------------------------------- principals


@dataclass(frozen=True)
class Principal:
    """A function or state machine of a deployed template (``name``: its logical id), or a member role of
    organization/member-roles.yaml (``name``: its role name)."""

    template: Path
    name: str


# The member roles template.yaml's functions act through in member accounts, relative to template.yaml.
MEMBER_ROLES_TEMPLATE = Path("organization") / "member-roles.yaml"


def member_roles_template(template: Path) -> Path:
    """organization/member-roles.yaml of the repository ``template`` (template.yaml) is in."""
    return (Path(template).parent / MEMBER_ROLES_TEMPLATE).resolve()


_principals: dict[str, Principal] = {}
_principals_lock = threading.Lock()


def name_principal(key: str, template: Path, logical_id: str) -> None:
    """Let the calls made as ``key`` (a Lambda function name, a state machine ARN) count as
    ``logical_id``'s of ``template``."""
    with _principals_lock:
        _principals[key] = Principal(Path(template).resolve(), logical_id)


def principal(key: str) -> Principal | None:
    """Whose call a call made as ``key`` is. lambda_runner names a call made with a member role's credentials
    ``<function name>@<member role name>``: that call is the member role's (the function's own role needs
    only sts:AssumeRole for it), counted when the function is named. (A Lambda function name holds no "@".)"""
    with _principals_lock:
        found = _principals.get(key)
        if found is not None or "@" not in key:
            return found
        function_key, role_name = key.split("@", 1)
        function = _principals.get(function_key)
    if function is None:
        return None
    return Principal(member_roles_template(function.template), role_name)


# ---------------------------------------------------------------------- the log


@dataclass(frozen=True)
class Entry:
    template: str
    principal: str
    action: str
    operation: str


class CallLog:
    """Appends each new (template, principal, action) to a JSON-lines file; a lambda_runner call listener.

    Several processes may append to one file (a test and the drill it starts): each line is one short
    write in append mode.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._seen: set[tuple[str, str, str]] = set()
        self._lock = threading.Lock()

    def __call__(self, key: str, model: Any, params: Mapping[str, Any]) -> None:
        who = principal(key)
        if who is None:
            return
        service_model = model.service_model
        actions = iam_actions(service_model.signing_name, model.name, params, _encrypted_in_moto)
        operation = f"{service_model.service_name}.{model.name}"
        lines = []
        with self._lock:
            for action in sorted(actions):
                seen = (str(who.template), who.name, action)
                if seen not in self._seen:
                    self._seen.add(seen)
                    entry = Entry(str(who.template), who.name, action, operation)
                    lines.append(json.dumps(vars(entry)) + "\n")
            if lines:
                with self.path.open("a", encoding="utf-8") as log:
                    log.write("".join(lines))


def log_from_environment() -> CallLog | None:
    """The log named by ``IMMUTABLE_GUARD_CALL_LOG``, or None when it is not set."""
    path = os.environ.get(CALL_LOG_VARIABLE)
    return CallLog(Path(path)) if path else None


class CallLogReader:
    """Reads the entries of some templates' principals from a log, each entry once.

    Parameters
    ----------
    path:
        The log (it need not exist yet).
    templates:
        Only the calls of principals of these templates are read.
    """

    def __init__(self, path: Path, *templates: Path) -> None:
        self.path = Path(path)
        self.templates = {str(Path(template).resolve()) for template in templates}
        self._offset = 0

    def new_entries(self) -> list[Entry]:
        """The entries written since the last read (a line still being written waits for the next)."""
        if not self.path.exists():
            return []
        with self.path.open("rb") as log:
            log.seek(self._offset)
            data = log.read()
        complete = data[: data.rfind(b"\n") + 1]
        self._offset += len(complete)
        entries = [
            Entry(**json.loads(line)) for line in complete.decode("utf-8").splitlines() if line.strip()
        ]
        return [entry for entry in entries if entry.template in self.templates]


def actions_by_principal(entries: Iterable[Entry]) -> dict[str, list[str]]:
    """Principal -> its sorted actions: the shape of the committed manifest."""
    found: dict[str, set[str]] = {}
    for entry in entries:
        found.setdefault(entry.principal, set()).add(entry.action)
    return {name: sorted(actions) for name, actions in sorted(found.items())}


def _encrypted_in_moto(action: str, params: Mapping[str, Any]) -> bool:
    """Whether the target topic or queue has a KMS key, read from moto's backends (the local AWS runs in
    this process)."""
    try:
        if action == "sns:Publish":
            from moto.sns.models import sns_backends

            arn = str(params.get("TopicArn") or params.get("TargetArn") or "")
            _, _, _, region, account, _ = arn.split(":", 5)
            topic = sns_backends[account][region].topics.get(arn)
            return bool(topic is not None and topic.kms_master_key_id)
        from moto.sqs.models import sqs_backends

        # A local queue URL names no region (http://127.0.0.1:port/account/name): any region's queue of
        # that name and account.
        account, name = str(params.get("QueueUrl") or "").rstrip("/").split("/")[-2:]
        return any(
            getattr(backend.queues.get(name), "kms_master_key_id", None)
            for backend in sqs_backends[account].values()
        )
    except (ValueError, KeyError, ImportError):
        return False
