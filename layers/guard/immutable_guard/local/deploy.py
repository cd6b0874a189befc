"""Deploys template.yaml onto the local AWS: SAM is translated offline and each resource is created with
boto3, because moto's CloudFormation ignores the SAM transform and skips several resource types.

A deploy given the previous deployment of the same stack is a stack update, as CloudFormation makes one: a
resource whose resolved definition is unchanged is left alone, a new one is created, a changed one is
updated where this deployer knows how (Lambda functions and aliases), and any other change is refused.
("Understand update behaviors of stack resources", AWS CloudFormation User Guide.)"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import logging
import random
import string
import uuid
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

from immutable_guard.local import call_log, lambda_runner
from immutable_guard.local.intrinsics import Resolver, UnresolvedReference, references
from immutable_guard.template import load_template

logger = logging.getLogger(__name__)

ACCOUNT_ID = "123456789012"
# Local CodeUri / ContentUri / DefinitionUri are rewritten to this bucket for the SAM translator
# (which accepts only S3 URIs) and mapped back to the folders afterwards; nothing is uploaded.
_ARTIFACT_BUCKET = "immutable-guard-local-artifacts"
_LOCAL_URI_PROPERTIES = {
    "AWS::Serverless::Function": "CodeUri",
    "AWS::Serverless::LayerVersion": "ContentUri",
    "AWS::Serverless::StateMachine": "DefinitionUri",
    "AWS::Serverless::Api": "DefinitionUri",
    "AWS::Serverless::HttpApi": "DefinitionUri",
}
_ZIP_EXCLUDED = {"__pycache__", ".pytest_cache", ".mypy_cache"}


@dataclass(frozen=True)
class SkippedResource:
    logical_id: str
    resource_type: str
    reason: str


@dataclass
class Deployment:
    """What a local deploy created, by logical id (of the translated template).

    Attributes
    ----------
    physical_ids:
        Logical id -> what ``Ref`` returns (name, URL or ARN, as CloudFormation documents per type).
    attributes:
        Logical id -> ``Fn::GetAtt`` attributes (``Arn``, ``QueueName``, ...).
    function_names:
        Logical id of each Lambda function -> its function name.
    parameters:
        Every template parameter and the value the deploy used.
    skipped:
        Resources not created: unsupported types, or references to resources that were not created.
    dead_letter_targets:
        Logical id of each function -> ARN of its dead-letter queue or topic (moto does not keep it).
    missing_code:
        Functions deployed without code because their folder does not exist yet (only with
        ``allow_missing_code``); invoking them fails with ImportError.
    """

    stack_name: str
    region: str
    account_id: str
    repo_root: Path
    template: dict[str, Any]
    resources: dict[str, Any]
    parameters: dict[str, str]
    physical_ids: dict[str, Any] = field(default_factory=dict)
    attributes: dict[str, dict[str, Any]] = field(default_factory=dict)
    resource_types: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    function_names: dict[str, str] = field(default_factory=dict)
    code_dirs: dict[str, Path] = field(default_factory=dict)
    skipped: list[SkippedResource] = field(default_factory=list)
    missing_code: dict[str, Path] = field(default_factory=dict)
    dead_letter_targets: dict[str, str] = field(default_factory=dict)
    disabled_by_condition: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # Logical id -> the properties it was created or last updated with, resolved (what an update compares).
    properties: dict[str, Any] = field(default_factory=dict)
    # Logical ids a redeploy updated, and those it left as they were.
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    def arn(self, logical_id: str) -> str:
        return str(self.attributes[logical_id]["Arn"])


_Handler = Callable[["Deployer", str, dict[str, Any]], tuple[Any, dict[str, Any]]]
_HANDLERS: dict[str, _Handler] = {}
# Updaters receive the resource's previous Ref and attributes too; a type without one cannot change locally.
_Updater = Callable[["Deployer", str, dict[str, Any], Any, dict[str, Any]], tuple[Any, dict[str, Any]]]
_UPDATERS: dict[str, _Updater] = {}


class UnsupportedUpdate(Exception):
    """A redeploy changes a resource the local deployer cannot update (CloudFormation could)."""


def _handles(resource_type: str) -> Callable[[_Handler], _Handler]:
    def register(handler: _Handler) -> _Handler:
        _HANDLERS[resource_type] = handler
        return handler

    return register


def _updates(resource_type: str) -> Callable[[_Updater], _Updater]:
    def register(updater: _Updater) -> _Updater:
        _UPDATERS[resource_type] = updater
        return updater

    return register


def supported_resource_types() -> frozenset[str]:
    return frozenset(_HANDLERS)


class Deployer:
    """Creates a template's resources against the endpoint ``session`` points at.

    Parameters
    ----------
    session:
        boto3 session for the local AWS (clients honour ``AWS_ENDPOINT_URL``, or ``endpoint_url``).
    template_path:
        The SAM / CloudFormation template; folders it names are relative to it.
    stack_name:
        Prefix of generated physical names, as CloudFormation would use the stack name.
    allow_missing_code:
        Deploy a function whose code folder does not exist yet (reported in ``missing_code``) instead of
        failing, so the rest of the system can run while a function is being written.
    """

    def __init__(
        self,
        session: boto3.Session,
        template_path: Path,
        stack_name: str = "immutable-guard",
        endpoint_url: str | None = None,
        allow_missing_code: bool = False,
    ) -> None:
        self.session = session
        self.allow_missing_code = allow_missing_code
        self.template_path = Path(template_path).resolve()
        self.repo_root = self.template_path.parent
        self.stack_name = stack_name
        self.endpoint_url = endpoint_url
        self.region = session.region_name or "us-east-1"
        self._clients: dict[str, Any] = {}
        self._rng = random.Random()
        self.deployment: Deployment | None = None
        self.previous: Deployment | None = None

    def client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = self.session.client(  # type: ignore[call-overload]
                service, region_name=self.region, endpoint_url=self.endpoint_url
            )
        return self._clients[service]

    # ------------------------------------------------------------------ naming and artefacts
    def physical_name(self, logical_id: str, max_length: int = 64, lowercase: bool = False) -> str:
        """``<stack>-<LogicalId>-<RANDOM>`` cut to the service's limit, the way CloudFormation names."""
        suffix = "".join(self._rng.choices(string.ascii_uppercase + string.digits, k=12))
        prefix = f"{self.stack_name}-{logical_id}"[: max_length - len(suffix) - 1]
        name = f"{prefix}-{suffix}"
        return name.lower() if lowercase else name

    def local_path(self, location: Mapping[str, Any]) -> Path | None:
        bucket = location.get("S3Bucket", location.get("Bucket"))
        key = location.get("S3Key", location.get("Key"))
        if bucket != _ARTIFACT_BUCKET or not isinstance(key, str):
            return None
        return (self.repo_root / key).resolve()

    @staticmethod
    def zip_folder(folder: Path) -> bytes:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(folder.rglob("*")):
                relative = path.relative_to(folder)
                if (
                    path.is_file()
                    and not _ZIP_EXCLUDED.intersection(relative.parts)
                    and path.suffix != ".pyc"
                ):
                    archive.write(path, relative.as_posix())
        return buffer.getvalue()

    # ------------------------------------------------------------------ deploy
    def deploy(
        self, parameters: Mapping[str, str] | None = None, previous: Deployment | None = None
    ) -> Deployment:
        """Translate, order and create every resource; return what was created.

        With ``previous`` (an earlier deployment of this stack) it is a stack update: unchanged resources
        are kept as they are, new ones created, changed ones updated (``UnsupportedUpdate`` where the local
        deployer cannot), and resources gone from the template are left in place (noted).
        """
        template = load_template(self.template_path)
        values = self._parameter_values(template, dict(parameters or {}))
        translated = self._translate(template, values)
        resources: dict[str, Any] = translated.get("Resources") or {}
        deployment = Deployment(
            stack_name=self.stack_name,
            region=self.region,
            account_id=ACCOUNT_ID,
            repo_root=self.repo_root,
            template=template,
            resources=resources,
            parameters=values,
        )
        self.deployment = deployment
        self.previous = previous
        if previous is not None:
            # What survives an update unchanged keeps what the first deploy learnt about it.
            deployment.function_names.update(previous.function_names)
            deployment.code_dirs.update(previous.code_dirs)
            deployment.dead_letter_targets.update(previous.dead_letter_targets)
        stack_name = self.stack_name
        resolver = Resolver(
            parameters={name: self._typed(template, name, value) for name, value in values.items()},
            pseudo={
                "AWS::Region": self.region,
                "AWS::AccountId": ACCOUNT_ID,
                "AWS::Partition": "aws",
                "AWS::URLSuffix": "amazonaws.com",
                "AWS::StackName": self.stack_name,
                "AWS::StackId": f"arn:aws:cloudformation:{self.region}:{ACCOUNT_ID}:stack/{stack_name}/local",
                "AWS::NotificationARNs": [],  # type: ignore[dict-item]
            },
            conditions=translated.get("Conditions"),
            mappings=translated.get("Mappings"),
        )
        for logical_id in _dependency_order(resources):
            self._create(deployment, resolver, logical_id, resources[logical_id])
        if previous is not None:
            for logical_id in sorted(set(previous.physical_ids) - set(resources)):
                # SAM retains replaced versions (DeletionPolicy Retain); the rest is not deleted locally.
                deployment.notes.append(f"{logical_id}: no longer in the template, left in place locally")
        for name, output in (translated.get("Outputs") or {}).items():
            if "Condition" in output and not resolver.condition(output["Condition"]):
                continue
            try:
                deployment.outputs[name] = resolver.resolve(output["Value"])
            except UnresolvedReference as exc:
                deployment.notes.append(f"output {name} not resolved: {exc}")
        return deployment

    def translated(
        self, parameters: Mapping[str, str] | None = None
    ) -> tuple[dict[str, Any], dict[str, str]]:
        """The template after the SAM transform (intrinsics kept), and every parameter's value."""
        template = load_template(self.template_path)
        values = self._parameter_values(template, dict(parameters or {}))
        return self._translate(template, values), values

    def _create(
        self, deployment: Deployment, resolver: Resolver, logical_id: str, resource: dict[str, Any]
    ) -> None:
        kind = str(resource.get("Type"))
        deployment.resource_types[logical_id] = kind
        condition = resource.get("Condition")
        if condition and not resolver.condition(condition):
            deployment.disabled_by_condition.append(logical_id)
            return
        handler = _HANDLERS.get(kind)
        if handler is None:
            logger.warning("local deploy skips %s (%s): type not supported locally", logical_id, kind)
            deployment.skipped.append(SkippedResource(logical_id, kind, "type not supported locally"))
            return
        try:
            properties = resolver.resolve(resource.get("Properties") or {})
        except UnresolvedReference as exc:
            logger.warning("local deploy skips %s (%s): %s", logical_id, kind, exc)
            deployment.skipped.append(SkippedResource(logical_id, kind, f"unresolved {exc}"))
            return
        before = self.previous
        if (
            before is not None
            and logical_id in before.physical_ids
            and before.resource_types.get(logical_id) == kind
        ):
            old_ref, old_attributes = before.physical_ids[logical_id], before.attributes.get(logical_id, {})
            if before.properties.get(logical_id) == properties:
                ref, attributes = old_ref, old_attributes
                deployment.unchanged.append(logical_id)
            elif kind in _UPDATERS:
                ref, attributes = _UPDATERS[kind](self, logical_id, properties, old_ref, old_attributes)
                deployment.updated.append(logical_id)
            else:
                raise UnsupportedUpdate(f"{logical_id} ({kind}) changed; the local deployer cannot update it")
        else:
            ref, attributes = handler(self, logical_id, properties)
        deployment.properties[logical_id] = properties
        resolver.refs[logical_id] = ref
        resolver.attributes[logical_id] = attributes
        deployment.physical_ids[logical_id] = ref
        deployment.attributes[logical_id] = attributes

    def _parameter_values(self, template: dict[str, Any], overrides: dict[str, str]) -> dict[str, str]:
        declared: dict[str, Any] = template.get("Parameters") or {}
        unknown = set(overrides) - set(declared)
        if unknown:
            raise ValueError(f"parameters not in the template: {sorted(unknown)}")
        values: dict[str, str] = {}
        for name, spec in declared.items():
            if name in overrides:
                value = overrides[name]
            elif "Default" in spec:
                default = spec["Default"]
                value = ",".join(map(str, default)) if isinstance(default, list) else str(default)
            else:
                raise ValueError(f"parameter {name} has no default; pass a value")
            allowed = spec.get("AllowedValues")
            if allowed and str(value) not in [str(item) for item in allowed]:
                raise ValueError(f"parameter {name}={value!r} is not one of {allowed}")
            _check_number(name, spec, str(value))
            values[name] = str(value)
        return values

    @staticmethod
    def _typed(template: dict[str, Any], name: str, value: str) -> Any:
        kind = str((template.get("Parameters") or {}).get(name, {}).get("Type", "String"))
        if kind == "CommaDelimitedList" or kind.startswith("List<"):
            return value.split(",")
        return value

    def _translate(self, template: dict[str, Any], values: dict[str, str]) -> dict[str, Any]:
        transform = template.get("Transform")
        transforms = transform if isinstance(transform, list) else [transform]
        if not any(isinstance(t, str) and t.startswith("AWS::Serverless") for t in transforms):
            return copy.deepcopy(template)
        from samtranslator.parser.parser import Parser
        from samtranslator.translator.translator import Translator

        sam = copy.deepcopy(template)
        for resource in (sam.get("Resources") or {}).values():
            key = _LOCAL_URI_PROPERTIES.get(resource.get("Type", ""))
            properties = resource.get("Properties") or {}
            if key and isinstance(properties.get(key), str) and not properties[key].startswith("s3://"):
                if "AutoPublishAlias" in properties:
                    # `sam package` uploads the code under a key derived from its content, so SAM's
                    # AutoPublishAlias publishes a version when the code changes; the local stand-in for that
                    # key is the folder's digest, carried as the object version SAM hashes with the code.
                    properties[key] = {
                        "Bucket": _ARTIFACT_BUCKET,
                        "Key": properties[key],
                        "Version": _folder_digest(self.repo_root / properties[key]),
                    }
                    continue
                properties[key] = f"s3://{_ARTIFACT_BUCKET}/{properties[key]}"
        global_function = (sam.get("Globals") or {}).get("Function") or {}
        if isinstance(global_function.get("CodeUri"), str):
            global_function["CodeUri"] = f"s3://{_ARTIFACT_BUCKET}/{global_function['CodeUri']}"
        offline = boto3.Session(
            region_name=self.region, aws_access_key_id="local", aws_secret_access_key="local"
        )
        translator = Translator({}, Parser(), boto_session=offline)
        result: dict[str, Any] = translator.translate(
            sam, parameter_values=dict(values), get_managed_policy_map=lambda: {}
        )
        return result


def _folder_digest(folder: Path) -> str:
    """SHA-256 of a folder's files (paths and contents), so only a change of code changes it."""
    digest = hashlib.sha256()
    if folder.is_dir():
        for path in sorted(folder.rglob("*")):
            relative = path.relative_to(folder)
            if path.is_file() and not _ZIP_EXCLUDED.intersection(relative.parts) and path.suffix != ".pyc":
                digest.update(relative.as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _check_number(name: str, spec: Mapping[str, Any], value: str) -> None:
    """CloudFormation refuses a Number parameter that is not a number or lies outside MinValue/MaxValue."""
    if spec.get("Type") != "Number":
        return
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"parameter {name}={value!r} is not a number") from None
    if "MinValue" in spec and number < float(spec["MinValue"]):
        raise ValueError(f"parameter {name}={value} is below its MinValue {spec['MinValue']}")
    if "MaxValue" in spec and number > float(spec["MaxValue"]):
        raise ValueError(f"parameter {name}={value} is above its MaxValue {spec['MaxValue']}")


def _dependency_order(resources: Mapping[str, Any]) -> list[str]:
    """Resources after everything they reference or depend on (stable for independent ones)."""
    dependencies: dict[str, set[str]] = {}
    for logical_id, resource in resources.items():
        depends_on = resource.get("DependsOn") or []
        names = set(references(resource.get("Properties") or {}))
        names.update([depends_on] if isinstance(depends_on, str) else depends_on)
        dependencies[logical_id] = {name for name in names if name in resources and name != logical_id}
    ordered: list[str] = []
    state: dict[str, int] = {}

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            raise ValueError(f"circular dependency: {' -> '.join((*chain, name))}")
        state[name] = 1
        for dependency in sorted(dependencies[name]):
            visit(dependency, (*chain, name))
        state[name] = 2
        ordered.append(name)

    for name in resources:
        visit(name, ())
    return ordered


def _tags_list(tags: Any) -> list[dict[str, str]]:
    if isinstance(tags, dict):
        return [{"Key": str(k), "Value": str(v)} for k, v in tags.items()]
    return [{"Key": str(t["Key"]), "Value": str(t["Value"])} for t in tags or []]


def _tags_dict(tags: Any) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in _tags_list(tags)}


def _note_ignored(
    deployer: Deployer, logical_id: str, properties: Mapping[str, Any], handled: set[str]
) -> None:
    ignored = sorted(set(properties) - handled)
    if ignored and deployer.deployment is not None:
        deployer.deployment.notes.append(
            f"{logical_id}: properties not applied locally: {', '.join(ignored)}"
        )


# ---------------------------------------------------------------------- resource types
@_handles("AWS::KMS::Key")
def _kms_key(d: Deployer, logical_id: str, p: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    kms = d.client("kms")
    request: dict[str, Any] = {"Description": p.get("Description", "")}
    if "KeyPolicy" in p:
        request["Policy"] = json.dumps(p["KeyPolicy"])
    for key in ("KeyUsage", "KeySpec"):
        if key in p:
            request[key] = p[key]
    if "Tags" in p:
        request["Tags"] = [{"TagKey": t["Key"], "TagValue": t["Value"]} for t in _tags_list(p["Tags"])]
    key = kms.create_key(**request)["KeyMetadata"]
    if str(p.get("EnableKeyRotation")).lower() == "true":
        kms.enable_key_rotation(KeyId=key["KeyId"])
    _note_ignored(
        d, logical_id, p, {"Description", "KeyPolicy", "KeyUsage", "KeySpec", "Tags", "EnableKeyRotation"}
    )
    return key["KeyId"], {"Arn": key["Arn"], "KeyId": key["KeyId"]}


@_handles("AWS::KMS::Alias")
def _kms_alias(d: Deployer, logical_id: str, p: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    d.client("kms").create_alias(AliasName=p["AliasName"], TargetKeyId=p["TargetKeyId"])
    return p["AliasName"], {}


@_handles("AWS::SNS::Topic")
def _sns_topic(d: Deployer, logical_id: str, p: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    sns = d.client("sns")
    fifo = str(p.get("FifoTopic")).lower() == "true"
    name = p.get("TopicName") or d.physical_name(logical_id, 256 - 5) + (".fifo" if fifo else "")
    attributes = {
        key: str(p[key]).lower() if isinstance(p[key], bool) else str(p[key])
        for key in ("DisplayName", "KmsMasterKeyId", "FifoTopic", "ContentBasedDeduplication")
        if key in p
    }
    arn = sns.create_topic(Name=name, Attributes=attributes, Tags=_tags_list(p.get("Tags")))["TopicArn"]
    for subscription in p.get("Subscription") or []:
        sns.subscribe(TopicArn=arn, Protocol=subscription["Protocol"], Endpoint=subscription["Endpoint"])
    _note_ignored(d, logical_id, p, {*attributes, "TopicName", "Tags", "Subscription"})
    return arn, {"TopicArn": arn, "TopicName": name}


@_handles("AWS::SNS::Subscription")
def _sns_subscription(d: Deployer, logical_id: str, p: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    attributes = {
        key: json.dumps(p[key]) if isinstance(p[key], dict) else str(p[key]).lower()
        for key in ("FilterPolicy", "RawMessageDelivery", "RedrivePolicy")
        if key in p
    }
    arn = d.client("sns").subscribe(
        TopicArn=p["TopicArn"],
        Protocol=p["Protocol"],
        Endpoint=p["Endpoint"],
        Attributes=attributes,
        ReturnSubscriptionArn=True,
    )["SubscriptionArn"]
    return arn, {}


@_handles("AWS::SNS::TopicPolicy")
def _sns_topic_policy(d: Deployer, logical_id: str, p: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    for topic in p["Topics"]:
        d.client("sns").set_topic_attributes(
            TopicArn=topic, AttributeName="Policy", AttributeValue=json.dumps(p["PolicyDocument"])
        )
    return logical_id, {}


@_handles("AWS::DynamoDB::Table")
def _dynamodb_table(d: Deployer, logical_id: str, p: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    dynamodb = d.client("dynamodb")
    name = p.get("TableName") or d.physical_name(logical_id, 255)
    request: dict[str, Any] = {
        "TableName": name,
        "AttributeDefinitions": p["AttributeDefinitions"],
        "KeySchema": p["KeySchema"],
        "BillingMode": p.get("BillingMode", "PROVISIONED"),
    }
    for key in ("ProvisionedThroughput", "GlobalSecondaryIndexes", "LocalSecondaryIndexes", "TableClass"):
        if key in p:
            request[key] = p[key]
    if "StreamSpecification" in p:
        request["StreamSpecification"] = {"StreamEnabled": True, **p["StreamSpecification"]}
    if "SSESpecification" in p:
        sse = p["SSESpecification"]
        request["SSESpecification"] = {
            "Enabled": str(sse.get("SSEEnabled")).lower() == "true",
            **({"SSEType": sse["SSEType"]} if "SSEType" in sse else {}),
            **({"KMSMasterKeyId": sse["KMSMasterKeyId"]} if "KMSMasterKeyId" in sse else {}),
        }
    if "Tags" in p:
        request["Tags"] = _tags_list(p["Tags"])
    table = dynamodb.create_table(**request)["TableDescription"]
    ttl = p.get("TimeToLiveSpecification")
    if ttl:
        dynamodb.update_time_to_live(
            TableName=name,
            TimeToLiveSpecification={
                "AttributeName": ttl["AttributeName"],
                "Enabled": str(ttl.get("Enabled")).lower() == "true",
            },
        )
    pitr = p.get("PointInTimeRecoverySpecification")
    if pitr:
        dynamodb.update_continuous_backups(
            TableName=name,
            PointInTimeRecoverySpecification={
                "PointInTimeRecoveryEnabled": str(pitr.get("PointInTimeRecoveryEnabled")).lower() == "true"
            },
        )
    _note_ignored(
        d,
        logical_id,
        p,
        {*request, "SSESpecification", "TimeToLiveSpecification", "PointInTimeRecoverySpecification", "Tags"},
    )
    attributes = {"Arn": table["TableArn"]}
    if "LatestStreamArn" in table:
        attributes["StreamArn"] = table["LatestStreamArn"]
    return name, attributes


@_handles("AWS::S3::Bucket")
def _s3_bucket(d: Deployer, logical_id: str, p: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    s3 = d.client("s3")
    name = p.get("BucketName") or d.physical_name(logical_id, 63, lowercase=True)
    request: dict[str, Any] = {"Bucket": name}
    if d.region != "us-east-1":
        request["CreateBucketConfiguration"] = {"LocationConstraint": d.region}
    if str(p.get("ObjectLockEnabled")).lower() == "true":
        request["ObjectLockEnabledForBucket"] = True
    s3.create_bucket(**request)
    if "VersioningConfiguration" in p:
        s3.put_bucket_versioning(
            Bucket=name, VersioningConfiguration={"Status": p["VersioningConfiguration"]["Status"]}
        )
    lock = p.get("ObjectLockConfiguration")
    if lock:
        configuration: dict[str, Any] = {"ObjectLockEnabled": lock.get("ObjectLockEnabled", "Enabled")}
        retention = (lock.get("Rule") or {}).get("DefaultRetention")
        if retention:
            configuration["Rule"] = {
                "DefaultRetention": {
                    "Mode": retention["Mode"],
                    **{unit: int(retention[unit]) for unit in ("Days", "Years") if unit in retention},
                }
            }
        s3.put_object_lock_configuration(Bucket=name, ObjectLockConfiguration=configuration)
    encryption = p.get("BucketEncryption")
    if encryption:
        rules = []
        for rule in encryption["ServerSideEncryptionConfiguration"]:
            converted: dict[str, Any] = {}
            default = rule.get("ServerSideEncryptionByDefault")
            if default:
                converted["ApplyServerSideEncryptionByDefault"] = {
                    "SSEAlgorithm": default["SSEAlgorithm"],
                    **({"KMSMasterKeyID": default["KMSMasterKeyID"]} if "KMSMasterKeyID" in default else {}),
                }
            if "BucketKeyEnabled" in rule:
                converted["BucketKeyEnabled"] = str(rule["BucketKeyEnabled"]).lower() == "true"
            rules.append(converted)
        s3.put_bucket_encryption(Bucket=name, ServerSideEncryptionConfiguration={"Rules": rules})
    block = p.get("PublicAccessBlockConfiguration")
    if block:
        s3.put_public_access_block(
            Bucket=name,
            PublicAccessBlockConfiguration={k: str(v).lower() == "true" for k, v in block.items()},
        )
    if "OwnershipControls" in p:
        s3.put_bucket_ownership_controls(Bucket=name, OwnershipControls=p["OwnershipControls"])
    if "Tags" in p:
        s3.put_bucket_tagging(Bucket=name, Tagging={"TagSet": _tags_list(p["Tags"])})
    _note_ignored(
        d,
        logical_id,
        p,
        {
            "BucketName",
            "ObjectLockEnabled",
            "VersioningConfiguration",
            "ObjectLockConfiguration",
            "BucketEncryption",
            "PublicAccessBlockConfiguration",
            "OwnershipControls",
            "Tags",
        },
    )
    return name, {
        "Arn": f"arn:aws:s3:::{name}",
        "DomainName": f"{name}.s3.amazonaws.com",
        "RegionalDomainName": f"{name}.s3.{d.region}.amazonaws.com",
    }


@_handles("AWS::S3::BucketPolicy")
def _s3_bucket_policy(d: Deployer, logical_id: str, p: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    d.client("s3").put_bucket_policy(Bucket=p["Bucket"], Policy=json.dumps(p["PolicyDocument"]))
    return logical_id, {}


_SQS_ATTRIBUTES = (
    "DelaySeconds",
    "MaximumMessageSize",
    "MessageRetentionPeriod",
    "ReceiveMessageWaitTimeSeconds",
    "VisibilityTimeout",
    "KmsMasterKeyId",
    "KmsDataKeyReusePeriodSeconds",
    "FifoQueue",
    "ContentBasedDeduplication",
    "SqsManagedSseEnabled",
    "RedrivePolicy",
    "RedriveAllowPolicy",
)


@_handles("AWS::SQS::Queue")
def _sqs_queue(d: Deployer, logical_id: str, p: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    sqs = d.client("sqs")
    fifo = str(p.get("FifoQueue")).lower() == "true"
    name = p.get("QueueName") or d.physical_name(logical_id, 80 - 5) + (".fifo" if fifo else "")
    attributes = {}
    for key in _SQS_ATTRIBUTES:
        if key in p:
            value = p[key]
            attributes[key] = (
                json.dumps(value)
                if isinstance(value, dict)
                else str(value).lower()
                if isinstance(value, bool)
                else str(value)
            )
    url = sqs.create_queue(QueueName=name, Attributes=attributes, tags=_tags_dict(p.get("Tags")))["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    _note_ignored(d, logical_id, p, {*_SQS_ATTRIBUTES, "QueueName", "Tags"})
    return url, {"Arn": arn, "QueueName": name, "QueueUrl": url}


@_handles("AWS::SQS::QueuePolicy")
def _sqs_queue_policy(d: Deployer, logical_id: str, p: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    for url in p["Queues"]:
        d.client("sqs").set_queue_attributes(
            QueueUrl=url, Attributes={"Policy": json.dumps(p["PolicyDocument"])}
        )
    return logical_id, {}


def _policy_json(document: dict[str, Any]) -> str:
    # IAM defaults a missing Version to 2008-10-17 (SAM inline policies often omit it); moto rejects it.
    return json.dumps({"Version": "2012-10-17", **document})


@_handles("AWS::IAM::Role")
def _iam_role(d: Deployer, logical_id: str, p: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    iam = d.client("iam")
    name = p.get("RoleName") or d.physical_name(logical_id, 64)
    request: dict[str, Any] = {
        "RoleName": name,
        "AssumeRolePolicyDocument": json.dumps(p["AssumeRolePolicyDocument"]),
        "Path": p.get("Path", "/"),
    }
    for key in ("Description", "PermissionsBoundary"):
        if key in p:
            request[key] = p[key]
    if "MaxSessionDuration" in p:
        request["MaxSessionDuration"] = int(p["MaxSessionDuration"])
    if "Tags" in p:
        request["Tags"] = _tags_list(p["Tags"])
    role = iam.create_role(**request)["Role"]
    for policy in p.get("Policies") or []:
        iam.put_role_policy(
            RoleName=name,
            PolicyName=policy["PolicyName"],
            PolicyDocument=_policy_json(policy["PolicyDocument"]),
        )
    for arn in p.get("ManagedPolicyArns") or []:
        try:
            iam.attach_role_policy(RoleName=name, PolicyArn=arn)
        except iam.exceptions.NoSuchEntityException:
            if d.deployment is not None:
                d.deployment.notes.append(f"{logical_id}: managed policy {arn} unknown locally, not attached")
    _note_ignored(d, logical_id, p, {*request, "Policies", "ManagedPolicyArns"})
    return name, {"Arn": role["Arn"], "RoleId": role["RoleId"]}


@_handles("AWS::IAM::Policy")
def _iam_policy(d: Deployer, logical_id: str, p: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    for role in p.get("Roles") or []:
        d.client("iam").put_role_policy(
            RoleName=role, PolicyName=p["PolicyName"], PolicyDocument=_policy_json(p["PolicyDocument"])
        )
    return p["PolicyName"], {}


@_handles("AWS::IAM::ManagedPolicy")
def _iam_managed_policy(d: Deployer, logical_id: str, p: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    iam = d.client("iam")
    name = p.get("ManagedPolicyName") or d.physical_name(logical_id, 128)
    arn = iam.create_policy(
        PolicyName=name, PolicyDocument=json.dumps(p["PolicyDocument"]), Path=p.get("Path", "/")
    )["Policy"]["Arn"]
    for role in p.get("Roles") or []:
        iam.attach_role_policy(RoleName=role, PolicyArn=arn)
    return arn, {"PolicyArn": arn}


@_handles("AWS::IAM::InstanceProfile")
def _iam_instance_profile(d: Deployer, logical_id: str, p: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    iam = d.client("iam")
    name = p.get("InstanceProfileName") or d.physical_name(logical_id, 128)
    profile = iam.create_instance_profile(InstanceProfileName=name, Path=p.get("Path", "/"))[
        "InstanceProfile"
    ]
    for role in p.get("Roles") or []:
        iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=role)
    return name, {"Arn": profile["Arn"]}


@_handles("AWS::Logs::LogGroup")
def _log_group(d: Deployer, logical_id: str, p: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    name = p.get("LogGroupName") or d.physical_name(logical_id, 512)
    d.client("logs").create_log_group(logGroupName=name)
    if "RetentionInDays" in p:
        d.client("logs").put_retention_policy(logGroupName=name, retentionInDays=int(p["RetentionInDays"]))
    return name, {"Arn": f"arn:aws:logs:{d.region}:{ACCOUNT_ID}:log-group:{name}:*"}


def _code_zip(d: Deployer, logical_id: str, code: Mapping[str, Any]) -> tuple[bytes, Path | None]:
    folder = d.local_path(code)
    if folder is not None:
        if folder.is_dir():
            return Deployer.zip_folder(folder), folder
        if not d.allow_missing_code or d.deployment is None:
            raise FileNotFoundError(f"{logical_id}: code folder {folder} does not exist")
        d.deployment.missing_code[logical_id] = folder
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("MISSING", f"{folder.name} has not been written yet\n")
        return buffer.getvalue(), None
    if "ZipFile" in code:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("index.py", str(code["ZipFile"]))
        return buffer.getvalue(), None
    raise ValueError(
        f"{logical_id}: only local folders and inline ZipFile code deploy locally, not {dict(code)}"
    )


@_handles("AWS::Lambda::LayerVersion")
def _lambda_layer(d: Deployer, logical_id: str, p: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    content, _ = _code_zip(d, logical_id, p["Content"])
    request: dict[str, Any] = {"LayerName": p.get("LayerName") or logical_id, "Content": {"ZipFile": content}}
    for key in ("Description", "CompatibleRuntimes", "CompatibleArchitectures", "LicenseInfo"):
        if key in p:
            request[key] = p[key]
    arn = d.client("lambda").publish_layer_version(**request)["LayerVersionArn"]
    return arn, {"LayerVersionArn": arn}


_FUNCTION_PASSTHROUGH = (
    "Runtime",
    "Handler",
    "Description",
    "Environment",
    "DeadLetterConfig",
    "TracingConfig",
    "Layers",
    "Architectures",
    "KmsKeyArn",
    "EphemeralStorage",
    "PackageType",
)


@_handles("AWS::Lambda::Function")
def _lambda_function(d: Deployer, logical_id: str, p: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    lambda_ = d.client("lambda")
    name = p.get("FunctionName") or d.physical_name(logical_id, 64)
    content, folder = _code_zip(d, logical_id, p["Code"])
    request: dict[str, Any] = {"FunctionName": name, "Role": p["Role"], "Code": {"ZipFile": content}}
    request.update({key: p[key] for key in _FUNCTION_PASSTHROUGH if key in p})
    if "Environment" in request:
        variables = request["Environment"].get("Variables") or {}
        request["Environment"] = {"Variables": {key: str(value) for key, value in variables.items()}}
    for key in ("Timeout", "MemorySize"):
        if key in p:
            request[key] = int(p[key])
    if "Tags" in p:
        request["Tags"] = _tags_dict(p["Tags"])
    arn = lambda_.create_function(**request)["FunctionArn"]
    if "ReservedConcurrentExecutions" in p:
        lambda_.put_function_concurrency(
            FunctionName=name, ReservedConcurrentExecutions=int(p["ReservedConcurrentExecutions"])
        )
    if folder is not None:
        lambda_runner.register(name, folder)
    call_log.name_principal(name, d.template_path, logical_id)
    if d.deployment is not None:
        d.deployment.function_names[logical_id] = name
        if folder is not None:
            d.deployment.code_dirs[logical_id] = folder
        target = (p.get("DeadLetterConfig") or {}).get("TargetArn")
        if target:
            d.deployment.dead_letter_targets[logical_id] = str(target)
    _note_ignored(
        d,
        logical_id,
        p,
        {
            *_FUNCTION_PASSTHROUGH,
            "FunctionName",
            "Role",
            "Code",
            "Timeout",
            "MemorySize",
            "Tags",
            "ReservedConcurrentExecutions",
        },
    )
    return name, {"Arn": arn}


@_updates("AWS::Lambda::Function")
def _update_lambda_function(
    d: Deployer, logical_id: str, p: dict[str, Any], name: Any, attributes: dict[str, Any]
) -> tuple[Any, dict[str, Any]]:
    """New code and configuration on the same function, as CloudFormation updates one without replacing it."""
    lambda_ = d.client("lambda")
    before = d.previous.properties.get(logical_id, {}) if d.previous is not None else {}
    if p.get("FunctionName", name) != name:
        raise UnsupportedUpdate(f"{logical_id}: a new FunctionName replaces the function")
    if p.get("Code") != before.get("Code"):
        content, folder = _code_zip(d, logical_id, p["Code"])
        lambda_.update_function_code(FunctionName=name, ZipFile=content)
        if folder is not None:
            lambda_runner.register(str(name), folder)
            if d.deployment is not None:
                d.deployment.code_dirs[logical_id] = folder
        lambda_.get_waiter("function_updated_v2").wait(FunctionName=name)
    configuration: dict[str, Any] = {"FunctionName": name, "Role": p["Role"]}
    for key in (
        "Runtime",
        "Handler",
        "Description",
        "TracingConfig",
        "Layers",
        "KmsKeyArn",
        "EphemeralStorage",
    ):
        if key in p:
            configuration[key] = p[key]
    variables = (p.get("Environment") or {}).get("Variables") or {}
    configuration["Environment"] = {"Variables": {key: str(value) for key, value in variables.items()}}
    for key in ("Timeout", "MemorySize"):
        if key in p:
            configuration[key] = int(p[key])
    lambda_.update_function_configuration(**configuration)
    lambda_.get_waiter("function_updated_v2").wait(FunctionName=name)
    return name, attributes


@_handles("AWS::Lambda::EventInvokeConfig")
def _lambda_event_invoke_config(
    d: Deployer, logical_id: str, p: dict[str, Any]
) -> tuple[Any, dict[str, Any]]:
    request: dict[str, Any] = {"FunctionName": p["FunctionName"], "Qualifier": p.get("Qualifier", "$LATEST")}
    for key in ("MaximumRetryAttempts", "MaximumEventAgeInSeconds"):
        if key in p:
            request[key] = int(p[key])
    if p.get("DestinationConfig"):
        request["DestinationConfig"] = p["DestinationConfig"]
    d.client("lambda").put_function_event_invoke_config(**request)
    return logical_id, {}


_MAPPING_NUMBERS = ("BatchSize", "MaximumBatchingWindowInSeconds")
_MAPPING_PASSTHROUGH = ("EventSourceArn", "FunctionName", "FunctionResponseTypes")


@_handles("AWS::Lambda::EventSourceMapping")
def _lambda_event_source_mapping(
    d: Deployer, logical_id: str, p: dict[str, Any]
) -> tuple[Any, dict[str, Any]]:
    """Registered with moto's Lambda (so it can be listed, as doctor does); the local runtime, not moto,
    polls the queue: local/event_source_mappings.py, moto_fixes.py section (p)."""
    request: dict[str, Any] = {key: p[key] for key in _MAPPING_PASSTHROUGH if key in p}
    request.update({key: int(p[key]) for key in _MAPPING_NUMBERS if key in p})
    if "Enabled" in p:
        request["Enabled"] = str(p["Enabled"]).lower() == "true"
    if "ScalingConfig" in p:
        request["ScalingConfig"] = {"MaximumConcurrency": int(p["ScalingConfig"]["MaximumConcurrency"])}
    mapping = d.client("lambda").create_event_source_mapping(**request)
    _note_ignored(d, logical_id, p, {*_MAPPING_PASSTHROUGH, *_MAPPING_NUMBERS, "Enabled", "ScalingConfig"})
    # Ref and the Id attribute: the mapping's id (its UUID).
    return mapping["UUID"], {
        "Id": mapping["UUID"],
        "EventSourceMappingArn": mapping.get("EventSourceMappingArn"),
    }


@_updates("AWS::Lambda::EventSourceMapping")
def _update_lambda_event_source_mapping(
    d: Deployer, logical_id: str, p: dict[str, Any], uuid_: Any, attributes: dict[str, Any]
) -> tuple[Any, dict[str, Any]]:
    """CloudFormation updates a mapping in place (e.g. a new DetectMaxConcurrency); a new queue or function
    would replace it, which the local deployer does not do."""
    request: dict[str, Any] = {"UUID": str(uuid_)}
    request.update({key: int(p[key]) for key in _MAPPING_NUMBERS if key in p})
    if "Enabled" in p:
        request["Enabled"] = str(p["Enabled"]).lower() == "true"
    if "ScalingConfig" in p:
        request["ScalingConfig"] = {"MaximumConcurrency": int(p["ScalingConfig"]["MaximumConcurrency"])}
    if "FunctionResponseTypes" in p:
        request["FunctionResponseTypes"] = p["FunctionResponseTypes"]
    d.client("lambda").update_event_source_mapping(**request)
    return uuid_, attributes


@_handles("AWS::Lambda::Permission")
def _lambda_permission(d: Deployer, logical_id: str, p: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    request = {"FunctionName": p["FunctionName"], "StatementId": logical_id, "Action": p["Action"]}
    request.update({key: p[key] for key in ("Principal", "SourceArn", "SourceAccount") if key in p})
    d.client("lambda").add_permission(**request)
    return logical_id, {}


@_handles("AWS::Lambda::Version")
def _lambda_version(d: Deployer, logical_id: str, p: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    version = d.client("lambda").publish_version(FunctionName=p["FunctionName"])
    return version["FunctionArn"], {"Version": version["Version"]}


@_handles("AWS::Lambda::Alias")
def _lambda_alias(d: Deployer, logical_id: str, p: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    request: dict[str, Any] = {
        "FunctionName": p["FunctionName"],
        "Name": p["Name"],
        "FunctionVersion": str(p["FunctionVersion"]),
    }
    if "RoutingConfig" in p:
        request["RoutingConfig"] = p["RoutingConfig"]
    arn = d.client("lambda").create_alias(**request)["AliasArn"]
    return arn, {}


@_updates("AWS::Lambda::Alias")
def _update_lambda_alias(
    d: Deployer, logical_id: str, p: dict[str, Any], arn: Any, attributes: dict[str, Any]
) -> tuple[Any, dict[str, Any]]:
    """CloudFormation's UpdateAlias: the alias is set to what the template now says (routing included)."""
    d.client("lambda").update_alias(
        FunctionName=p["FunctionName"],
        Name=p["Name"],
        FunctionVersion=str(p["FunctionVersion"]),
        RoutingConfig=p.get("RoutingConfig") or {"AdditionalVersionWeights": {}},
    )
    return arn, attributes


@_handles("AWS::SSM::Parameter")
def _ssm_parameter(d: Deployer, logical_id: str, p: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    name = p.get("Name") or f"CFN-{d.physical_name(logical_id, 1011)}"
    request: dict[str, Any] = {"Name": name, "Value": str(p["Value"]), "Type": p.get("Type", "String")}
    for key in ("Description", "AllowedPattern", "Tier", "DataType"):
        if key in p:
            request[key] = p[key]
    d.client("ssm").put_parameter(**request, Overwrite=d.previous is not None)
    return name, {"Type": request["Type"], "Value": request["Value"]}


@_updates("AWS::SSM::Parameter")
def _update_ssm_parameter(
    d: Deployer, logical_id: str, p: dict[str, Any], name: Any, attributes: dict[str, Any]
) -> tuple[Any, dict[str, Any]]:
    if p.get("Name", name) != name:
        raise UnsupportedUpdate(f"{logical_id}: a new Name replaces the parameter")
    return _ssm_parameter(d, logical_id, {**p, "Name": name})


@_handles("AWS::Events::EventBus")
def _event_bus(d: Deployer, logical_id: str, p: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """A custom bus (organisation mode's); Ref is its name. Its Policy is the bus's resource policy."""
    events = d.client("events")
    name = p.get("Name") or d.physical_name(logical_id, 256)
    arn = events.create_event_bus(Name=name)["EventBusArn"]
    if "Policy" in p:
        events.put_permission(EventBusName=name, Policy=json.dumps(p["Policy"]))
    _note_ignored(d, logical_id, p, {"Name", "Policy"})
    return name, {"Arn": arn, "Name": name}


@_handles("AWS::Events::Rule")
def _events_rule(d: Deployer, logical_id: str, p: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    events = d.client("events")
    name = p.get("Name") or d.physical_name(logical_id, 64)
    request: dict[str, Any] = {"Name": name, "State": p.get("State", "ENABLED")}
    if "EventPattern" in p:
        request["EventPattern"] = json.dumps(p["EventPattern"])
    for key in ("ScheduleExpression", "Description", "EventBusName"):
        if key in p:
            request[key] = p[key]
    arn = events.put_rule(**request)["RuleArn"]
    # moto's EventBridge cannot deliver to Lambda; the EventRouter routes those from the template.
    targets = [t for t in p.get("Targets") or [] if ":lambda:" not in str(t.get("Arn"))]
    if targets:
        events.put_targets(Rule=name, EventBusName=p.get("EventBusName", "default"), Targets=targets)
    return name, {"Arn": arn}


_ALARM_PASSTHROUGH = (
    "AlarmDescription",
    "Namespace",
    "MetricName",
    "Dimensions",
    "Statistic",
    "ExtendedStatistic",
    "ComparisonOperator",
    "TreatMissingData",
    "AlarmActions",
    "OKActions",
    "InsufficientDataActions",
    "Unit",
    "Metrics",
    "ThresholdMetricId",
    "EvaluateLowSampleCountPercentile",
)


@_handles("AWS::CloudWatch::Alarm")
def _cloudwatch_alarm(d: Deployer, logical_id: str, p: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    name = p.get("AlarmName") or d.physical_name(logical_id, 255)
    request: dict[str, Any] = {"AlarmName": name}
    request.update({key: p[key] for key in _ALARM_PASSTHROUGH if key in p})
    for key in ("Period", "EvaluationPeriods", "DatapointsToAlarm"):
        if key in p:
            request[key] = int(p[key])
    if "Threshold" in p:
        request["Threshold"] = float(p["Threshold"])
    if "ActionsEnabled" in p:
        request["ActionsEnabled"] = str(p["ActionsEnabled"]).lower() == "true"
    d.client("cloudwatch").put_metric_alarm(**request)
    arn = f"arn:aws:cloudwatch:{d.region}:{ACCOUNT_ID}:alarm:{name}"
    return name, {"Arn": arn}


def substitute_definition(definition: str, substitutions: Mapping[str, Any]) -> str:
    """Apply ``DefinitionSubstitutions`` as Step Functions does: each ``${Key}`` named in the map."""
    for key, value in substitutions.items():
        text = json.dumps(value) if isinstance(value, dict | list) else str(value)
        definition = definition.replace("${" + key + "}", text)
    return definition


@_handles("AWS::StepFunctions::StateMachine")
def _state_machine(d: Deployer, logical_id: str, p: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    if "DefinitionString" in p:
        definition = str(p["DefinitionString"])
    elif "Definition" in p:
        definition = json.dumps(p["Definition"])
    elif "DefinitionS3Location" in p:
        path = d.local_path(p["DefinitionS3Location"])
        if path is None:
            raise ValueError(f"{logical_id}: definition is not a local file: {p['DefinitionS3Location']}")
        definition = path.read_text(encoding="utf-8")
    else:
        raise ValueError(f"{logical_id}: no definition")
    definition = substitute_definition(definition, p.get("DefinitionSubstitutions") or {})
    json.loads(definition)  # a substitution that breaks the JSON fails the deploy here, as in AWS
    name = p.get("StateMachineName") or d.physical_name(logical_id, 80)
    request: dict[str, Any] = {
        "name": name,
        "definition": definition,
        "roleArn": p["RoleArn"],
        "type": p.get("StateMachineType", "STANDARD"),
    }
    if "TracingConfiguration" in p:
        request["tracingConfiguration"] = {
            "enabled": str(p["TracingConfiguration"].get("Enabled")).lower() == "true"
        }
    if "Tags" in p:
        request["tags"] = [{"key": t["Key"], "value": t["Value"]} for t in _tags_list(p["Tags"])]
    arn = d.client("stepfunctions").create_state_machine(**request)["stateMachineArn"]
    call_log.name_principal(arn, d.template_path, logical_id)
    return arn, {"Arn": arn, "Name": name, "StateMachineRevisionId": ""}


# ---------------------------------------------------------------- prerequisites (trail, Config, inventory)
@_handles("AWS::CloudTrail::Trail")
def _cloudtrail_trail(d: Deployer, logical_id: str, p: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    cloudtrail = d.client("cloudtrail")
    name = p.get("TrailName") or d.physical_name(logical_id, 128)
    request: dict[str, Any] = {"Name": name, "S3BucketName": p["S3BucketName"]}
    for key in (
        "S3KeyPrefix",
        "SnsTopicName",
        "CloudWatchLogsLogGroupArn",
        "CloudWatchLogsRoleArn",
    ):
        if key in p:
            request[key] = p[key]
    if "KMSKeyId" in p:  # CloudFormation spells it KMSKeyId, the API KmsKeyId
        request["KmsKeyId"] = p["KMSKeyId"]
    for key in (
        "IsMultiRegionTrail",
        "IncludeGlobalServiceEvents",
        "EnableLogFileValidation",
        "IsOrganizationTrail",
    ):
        if key in p:
            request[key] = str(p[key]).lower() == "true"
    trail = cloudtrail.create_trail(**request)
    if p.get("EventSelectors"):
        selectors = [
            {**s, "IncludeManagementEvents": str(s.get("IncludeManagementEvents", True)).lower() == "true"}
            for s in p["EventSelectors"]
        ]
        cloudtrail.put_event_selectors(TrailName=name, EventSelectors=selectors)
    if str(p.get("IsLogging")).lower() == "true":
        cloudtrail.start_logging(Name=name)
    _note_ignored(d, logical_id, p, {*request, "TrailName", "EventSelectors", "IsLogging"})
    return name, {"Arn": trail["TrailARN"], "SnsTopicArn": trail.get("SnsTopicARN", "")}


def _lower_camel_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {k[:1].lower() + k[1:]: _lower_camel_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_lower_camel_keys(v) for v in value]
    return value


@_handles("AWS::Config::ConfigurationRecorder")
def _config_recorder(d: Deployer, logical_id: str, p: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    name = p.get("Name") or d.physical_name(logical_id, 256)
    recorder: dict[str, Any] = {"name": name, "roleARN": p["RoleARN"]}
    if "RecordingGroup" in p:
        group = _lower_camel_keys(p["RecordingGroup"])
        for key in ("allSupported", "includeGlobalResourceTypes"):
            if key in group:
                group[key] = str(group[key]).lower() == "true"
        recorder["recordingGroup"] = group
    d.client("config").put_configuration_recorder(ConfigurationRecorder=recorder)
    _note_ignored(d, logical_id, p, {"Name", "RoleARN", "RecordingGroup"})
    return name, {}


@_handles("AWS::Config::DeliveryChannel")
def _config_delivery_channel(d: Deployer, logical_id: str, p: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    config = d.client("config")
    name = p.get("Name") or d.physical_name(logical_id, 256)
    channel: dict[str, Any] = {"name": name, "s3BucketName": p["S3BucketName"]}
    for key in ("S3KeyPrefix", "SnsTopicARN", "S3KmsKeyArn"):
        if key in p:
            channel[key[:1].lower() + key[1:]] = p[key]
    if "ConfigSnapshotDeliveryProperties" in p:
        channel["configSnapshotDeliveryProperties"] = _lower_camel_keys(p["ConfigSnapshotDeliveryProperties"])
    config.put_delivery_channel(DeliveryChannel=channel)
    # CloudFormation starts the recorder once it has a delivery channel.
    for recorder in config.describe_configuration_recorders()["ConfigurationRecorders"]:
        config.start_configuration_recorder(ConfigurationRecorderName=recorder["name"])
    return name, {}


@_handles("AWS::CloudWatch::Dashboard")
def _cloudwatch_dashboard(d: Deployer, logical_id: str, p: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    name = p.get("DashboardName") or d.physical_name(logical_id, 255)
    d.client("cloudwatch").put_dashboard(DashboardName=name, DashboardBody=str(p["DashboardBody"]))
    return name, {}


@_handles("AWS::SSM::Association")
def _ssm_association(d: Deployer, logical_id: str, p: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    # moto has no SSM association API (nor DescribeInstanceInformation): record the declaration so the
    # rest of the template resolves, and say so.
    association_id = str(uuid.uuid4())
    if d.deployment is not None:
        d.deployment.notes.append(
            f"{logical_id}: {p.get('Name')} association recorded, not run (moto has no SSM association API)"
        )
    return association_id, {"AssociationId": association_id}
