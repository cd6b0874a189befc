"""template.yaml's IAM as AWS would hold it: the template after the SAM transform (which adds the roles of
functions and state machines, their policy templates and dead-letter permissions), with every intrinsic
function resolved into a plausible ARN of the resource it names, so that a policy linter can check each
resource against the types its actions accept."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import boto3
from immutable_guard.local.deploy import Deployer
from immutable_guard.local.intrinsics import Resolver, UnresolvedReference

REPO = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = REPO / "template.yaml"
REGION = "us-east-1"
ACCOUNT = "123456789012"
STACK = "immutable-guard"
# Conditions are evaluated with every optional resource present (the defaults create them all), and an
# e-mail address, so that no policy is left out.
# As the drill and the e2e deployment deploy it, whose calls the manifest records: a replaceable stack tag
# declared (Replace's UpdateStack grant exists only then).
PARAMETERS = {"AlertEmail": "security@example.com", "ReplaceableStackTagValue": "true"}


@dataclass(frozen=True)
class PolicyDocument:
    """One policy of the template: where it is, and its resolved JSON document."""

    resource: str  # logical id of the resource that holds it
    where: str  # e.g. "Policies/DetectFunctionRolePolicy0", "KeyPolicy"
    document: dict[str, Any]

    @property
    def label(self) -> str:
        return f"{self.resource}/{self.where}"


def _suffix(logical_id: str) -> str:
    return f"{STACK}-{logical_id}-EXAMPLE0123"


def _plausible(kind: str, logical_id: str) -> tuple[Any, dict[str, Any]]:
    """What Ref and Fn::GetAtt return for a resource of this type (AWS::<Service>::<Type> reference pages)."""
    name = _suffix(logical_id)
    region_account = f"{REGION}:{ACCOUNT}"
    if kind == "AWS::Lambda::Function":
        arn = f"arn:aws:lambda:{region_account}:function:{name}"
        return name, {"Arn": arn}
    if kind == "AWS::IAM::Role":
        return name, {"Arn": f"arn:aws:iam::{ACCOUNT}:role/{name}", "RoleId": "AROAEXAMPLE"}
    if kind == "AWS::SNS::Topic":
        arn = f"arn:aws:sns:{region_account}:{name}"
        return arn, {"TopicArn": arn, "TopicName": name}
    if kind == "AWS::SQS::Queue":
        arn = f"arn:aws:sqs:{region_account}:{name}"
        url = f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{name}"
        return url, {"Arn": arn, "QueueName": name, "QueueUrl": url}
    if kind == "AWS::DynamoDB::Table":
        arn = f"arn:aws:dynamodb:{region_account}:table/{name}"
        return name, {"Arn": arn, "StreamArn": f"{arn}/stream/2024-01-01T00:00:00.000"}
    if kind == "AWS::S3::Bucket":
        bucket = name.lower()
        return bucket, {"Arn": f"arn:aws:s3:::{bucket}", "DomainName": f"{bucket}.s3.amazonaws.com"}
    if kind == "AWS::KMS::Key":
        key = "1234abcd-12ab-34cd-56ef-1234567890ab"
        return key, {"Arn": f"arn:aws:kms:{region_account}:key/{key}", "KeyId": key}
    if kind == "AWS::StepFunctions::StateMachine":
        arn = f"arn:aws:states:{region_account}:stateMachine:{name}"
        return arn, {"Arn": arn, "Name": name}
    if kind == "AWS::Lambda::LayerVersion":
        return f"arn:aws:lambda:{region_account}:layer:{name}:1", {}
    if kind == "AWS::SSM::Association":
        return "assoc-example", {"AssociationId": "11111111-2222-3333-4444-555555555555"}
    if kind == "AWS::Events::Rule":
        return name, {"Arn": f"arn:aws:events:{region_account}:rule/{name}"}
    if kind == "AWS::CloudTrail::Trail":
        return name, {"Arn": f"arn:aws:cloudtrail:{region_account}:trail/{name}"}
    return name, {}


# Organisation mode, and the member templates' parameters, as the organisation tests deploy them
# (docs/organization.md).
ORGANIZATION_ID = "o-exampleorg1"
SECURITY_ACCOUNT = ACCOUNT
ORGANIZATION_PARAMETERS = {**PARAMETERS, "OrganizationId": ORGANIZATION_ID, "MemberExternalId": "example-id"}
MEMBER_TEMPLATES = {
    path.name: path for path in (REPO / "organization").glob("*.yaml") if path.name.startswith("member-")
}
MEMBER_ACCOUNT = "444455556666"
MEMBER_PARAMETERS = {
    "SecurityAccountId": SECURITY_ACCOUNT,
    "SecurityRegion": REGION,
    "OrganizationId": ORGANIZATION_ID,
    "ExternalId": "example-id",
    "ScopeStackNames": "web,api",
    "ReplaceableStackTagValue": "true",
    "ReplacementStackRoleName": "stack-service-role",
}


def _offline_deployer(path: Path) -> Deployer:
    offline = boto3.Session(region_name=REGION, aws_access_key_id="offline", aws_secret_access_key="offline")
    return Deployer(offline, path)


@cache
def _translation(mode: str = "single") -> tuple[dict[str, Any], dict[str, str]]:
    parameters = ORGANIZATION_PARAMETERS if mode == "organization" else PARAMETERS
    return _offline_deployer(TEMPLATE_PATH).translated(parameters)


def translated_template(mode: str = "single") -> dict[str, Any]:
    """template.yaml after the SAM transform (intrinsics kept), as deployed in ``mode`` (single or
    organization)."""
    return _translation(mode)[0]


@cache
def _resolver(mode: str = "single") -> Resolver:
    return _plausible_resolver(*_translation(mode), account=ACCOUNT)


@cache
def member_template(name: str, **overrides: str) -> tuple[dict[str, Any], Resolver]:
    """A member template (organization/) and a resolver as a member account deploys it."""
    translated, values = _offline_deployer(MEMBER_TEMPLATES[name]).translated(
        {k: v for k, v in {**MEMBER_PARAMETERS, **overrides}.items() if k in _declared(name)}
    )
    return translated, _plausible_resolver(translated, values, account=MEMBER_ACCOUNT)


def _declared(name: str) -> set[str]:
    from immutable_guard.template import load_template

    return set(load_template(MEMBER_TEMPLATES[name]).get("Parameters") or {})


def _plausible_resolver(translated: dict[str, Any], values: dict[str, str], account: str) -> Resolver:
    declared = translated.get("Parameters") or {}
    typed: dict[str, Any] = {
        name: value.split(",") if declared.get(name, {}).get("Type") == "CommaDelimitedList" else value
        for name, value in values.items()
    }
    resolver = Resolver(
        parameters=typed,
        pseudo={
            "AWS::Region": REGION,
            "AWS::AccountId": account,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::StackName": STACK,
            "AWS::StackId": f"arn:aws:cloudformation:{REGION}:{account}:stack/{STACK}/example",
        },
        conditions=translated.get("Conditions"),
        mappings=translated.get("Mappings"),
    )
    for logical_id, resource in (translated.get("Resources") or {}).items():
        ref, attributes = _plausible(str(resource.get("Type")), logical_id)
        resolver.refs[logical_id] = ref
        resolver.attributes[logical_id] = attributes
    return resolver


def resolve(value: Any, mode: str = "single") -> Any:
    """``value`` with every intrinsic function replaced by what it would be in a deployed stack."""
    return _resolved(_resolver(mode), value)


def _resolved(resolver: Resolver, value: Any) -> Any:
    try:
        return resolver.resolve(value)
    except UnresolvedReference as exc:
        raise AssertionError(f"cannot resolve {value!r}: {exc}") from exc


def policy_documents() -> list[PolicyDocument]:
    """Every policy document of the translated template: roles' inline and trust policies, and the
    resource policies of keys, buckets, queues and topics."""
    return _documents(translated_template(), _resolver())


def organization_policy_documents() -> list[PolicyDocument]:
    """The policy documents organisation mode adds or changes: template.yaml's as the security account
    deploys it (labelled ``organization:``), and every document of the member templates (labelled by
    template)."""
    single = {d.label: d.document for d in policy_documents()}
    central = [
        PolicyDocument(f"organization:{d.resource}", d.where, d.document)
        for d in _documents(translated_template("organization"), _resolver("organization"))
        if single.get(d.label) != d.document
    ]
    members = [
        PolicyDocument(f"{name}:{d.resource}", d.where, d.document)
        for name in sorted(MEMBER_TEMPLATES)
        for d in _documents(*member_template(name))
    ]
    return central + members


def _documents(translated: dict[str, Any], resolver: Resolver) -> list[PolicyDocument]:
    found = []
    for logical_id, resource in (translated.get("Resources") or {}).items():
        if "Condition" in resource and not resolver.condition(resource["Condition"]):
            continue
        properties = resource.get("Properties") or {}
        for policy in properties.get("Policies") or []:
            if isinstance(policy, dict) and "PolicyDocument" in policy:
                where = f"Policies/{policy.get('PolicyName')}"
                found.append(PolicyDocument(logical_id, where, _resolved(resolver, policy["PolicyDocument"])))
        # An event bus's policy is its Policy property.
        for key in ("KeyPolicy", "PolicyDocument", "AssumeRolePolicyDocument", "Policy"):
            if isinstance(properties.get(key), dict):
                found.append(PolicyDocument(logical_id, key, _resolved(resolver, properties[key])))
    return found


def principals() -> dict[str, str]:
    """Logical id of every function and state machine -> logical id of the role it runs with."""
    found = {}
    for logical_id, resource in (translated_template().get("Resources") or {}).items():
        properties = resource.get("Properties") or {}
        if resource.get("Type") == "AWS::Lambda::Function":
            role = properties.get("Role")
        elif resource.get("Type") == "AWS::StepFunctions::StateMachine":
            role = properties.get("RoleArn")
        else:
            continue
        if not (isinstance(role, dict) and "Fn::GetAtt" in role):
            raise AssertionError(f"{logical_id}: its role is not a role of this template: {role!r}")
        target = role["Fn::GetAtt"]
        found[logical_id] = target.split(".")[0] if isinstance(target, str) else target[0]
    return found


def statements(document: dict[str, Any]) -> list[dict[str, Any]]:
    listed = document.get("Statement", [])
    return listed if isinstance(listed, list) else [listed]


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def import_parliament() -> Any:
    """The parliament IAM policy linter. It still reads its data files through ``pkg_resources``, which
    setuptools 82 removed (duo-labs/parliament#247); without it, a stand-in serves the one function it
    uses, instead of pinning an old setuptools."""
    import importlib.util
    import sys
    import types

    if "pkg_resources" not in sys.modules and importlib.util.find_spec("pkg_resources") is None:
        shim = types.ModuleType("pkg_resources")

        def resource_filename(package: str, name: str) -> str:
            spec = importlib.util.find_spec(package)
            assert spec is not None and spec.origin is not None, package
            return str(Path(spec.origin).parent / name)

        shim.resource_filename = resource_filename  # type: ignore[attr-defined]
        sys.modules["pkg_resources"] = shim
    import parliament

    return parliament
