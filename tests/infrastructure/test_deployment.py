"""template.yaml deploys in a real account as it is: resources created in the order AWS needs, nothing
reserved that a new account lacks, what protects retained data retained with it, service principals held
to this account, and no ARN that only exists in the aws partition."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from immutable_guard.local.deploy import Deployer, substitute_definition
from immutable_guard.local.intrinsics import NO_VALUE, Resolver
from immutable_guard.template import load_template, parameter_defaults
from moto import mock_aws

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = [
    REPO / "template.yaml",
    REPO / "iam-events-forwarder.yaml",
    *sorted((REPO / "organization").glob("*.yaml")),
    *sorted((REPO / "examples").glob("*.yaml")),
]
STATE_MACHINES = sorted((REPO / "statemachines").glob("*.asl.json"))
# Properties through which a resource is encrypted with a KMS key of the template.
KEY_PROPERTIES = ("KmsMasterKeyId", "KMSKeyId", "KMSMasterKeyID", "KmsKeyId")


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template(REPO / "template.yaml")


@pytest.fixture(scope="module")
def resources(template: dict[str, Any]) -> dict[str, Any]:
    return dict(template["Resources"])


# ---------------------------------------------------------------------------------------- creation order
def test_the_config_delivery_channel_is_created_after_the_recorder(resources: dict[str, Any]) -> None:
    # Config refuses a delivery channel while the region has no recorder
    # (PutDeliveryChannel: NoAvailableConfigurationRecorderException); CloudFormation creates resources
    # that do not depend on each other at the same time.
    depends_on = resources["ConfigDeliveryChannel"]["DependsOn"]
    assert {"ConfigRecorder", "ConfigBucketPolicy"} <= set(depends_on)


# ---------------------------------------------------------------------------------------- concurrency
def _detect_concurrency(template: dict[str, Any], **parameters: str) -> Any:
    values = {**parameter_defaults(template), **parameters}
    resolver = Resolver(parameters=values, pseudo={}, conditions=template["Conditions"])
    return resolver.resolve(
        template["Resources"]["DetectFunction"]["Properties"]["ReservedConcurrentExecutions"]
    )


def test_detect_reserves_no_concurrency_unless_the_operator_asks(template: dict[str, Any]) -> None:
    spec = template["Parameters"]["DetectReservedConcurrency"]
    assert (spec["Type"], spec["Default"], spec["MinValue"]) == ("Number", 0, 0)
    # 0 leaves the property out: Lambda's own 0 would throttle every invocation of Detect
    assert _detect_concurrency(template) is NO_VALUE
    assert _detect_concurrency(template, DetectReservedConcurrency="20") == "20"


@pytest.fixture
def new_account(monkeypatch: pytest.MonkeyPatch) -> Iterator[boto3.Session]:
    """An account whose Lambda concurrency quota is still 10 (new accounts start below the default
    1,000, https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html). Lambda keeps 100
    unreserved: moto enforces it given the quota."""
    monkeypatch.setenv("MOTO_LAMBDA_CONCURRENCY_QUOTA", "10")
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        yield boto3.Session(region_name="us-east-1")


def test_the_template_deploys_in_a_new_account_with_its_defaults(new_account: boto3.Session) -> None:
    # When the template is deployed with its defaults
    deployment = Deployer(new_account, REPO / "template.yaml").deploy()
    # Then Detect runs from the account's unreserved pool
    concurrency = new_account.client("lambda").get_function_concurrency(
        FunctionName=deployment.function_names["DetectFunction"]
    )
    assert "ReservedConcurrentExecutions" not in concurrency


def test_a_reservation_the_account_cannot_afford_is_refused_as_lambda_does(
    new_account: boto3.Session,
) -> None:
    with pytest.raises(ClientError, match="below its minimum value of \\[100\\]"):
        Deployer(new_account, REPO / "template.yaml").deploy({"DetectReservedConcurrency": "20"})


# ---------------------------------------------------------------------------------------- retention
def _key_references(properties: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(properties, dict):
        for key, value in properties.items():
            if key in KEY_PROPERTIES and isinstance(value, dict):
                referenced = value.get("Ref") or value.get("Fn::GetAtt", [None])[0]
                found |= {referenced} if referenced else set()
            else:
                found |= _key_references(value)
    elif isinstance(properties, list):
        for item in properties:
            found |= _key_references(item)
    return found


def _retained(resource: dict[str, Any]) -> bool:
    return resource.get("DeletionPolicy") == "Retain" and resource.get("UpdateReplacePolicy") == "Retain"


def test_the_keys_and_the_dead_letter_queue_are_kept_like_the_data_they_hold(
    resources: dict[str, Any],
) -> None:
    # What holds records a person needs after the stack is gone is retained
    for name in ("IncidentLedger", "EvidenceBucket", "TrailBucket", "ConfigBucket", "DetectDeadLetterQueue"):
        assert _retained(resources[name]), name
    # And so is every key that encrypts something retained: without it the data cannot be read
    for name, resource in resources.items():
        if _retained(resource):
            for key in _key_references(resource.get("Properties", {})):
                assert _retained(resources[key]), f"{key} encrypts the retained {name}"
    # The trail's key encrypts the retained trail bucket's log files (through the trail)
    assert _key_references(resources["Trail"]["Properties"]) == {"TrailKey"}
    assert _retained(resources["TrailKey"]) and _retained(resources["AlertKey"])


# ---------------------------------------------------------------------------------------- service principals
def _policy_documents(resources: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    documents = []
    for name, resource in resources.items():
        properties = resource.get("Properties", {})
        for key in ("KeyPolicy", "PolicyDocument", "AssumeRolePolicyDocument"):
            if isinstance(properties.get(key), dict):
                documents.append((name, properties[key]))
    return documents


def _service_statements() -> list[tuple[str, str, dict[str, Any]]]:
    found = []
    for path in TEMPLATES:
        for name, document in _policy_documents(load_template(path)["Resources"]):
            for statement in document.get("Statement", []):
                principal = statement.get("Principal")
                services = principal.get("Service", []) if isinstance(principal, dict) else []
                for service in [services] if isinstance(services, str) else services:
                    found.append((f"{path.name}:{name}", service, statement))
    return found


def _source_keys(statement: dict[str, Any]) -> set[str]:
    return {key.lower() for condition in (statement.get("Condition") or {}).values() for key in condition}


# (resource, service) -> why it carries no source condition, with AWS's word for it.
NO_SOURCE_CONDITION = {
    **{
        (f"template.yaml:{function}FunctionRole", "lambda.amazonaws.com"): (
            "a function's execution role, as SAM generates it for every other function here (these are "
            "written out only to carry a fixed name in organisation mode): Lambda assumes it for a function "
            "that names it, and naming it takes iam:PassRole on it "
            "(https://docs.aws.amazon.com/lambda/latest/dg/lambda-intro-execution-role.html)"
        )
        for function in ("Detect", "Quarantine", "Evidence", "Replace", "Nuke", "Release", "Onboard")
    },
    ("template.yaml:AlertKey", "events.amazonaws.com"): (
        "EventBridge's KMS requests carry neither key: 'Adding the aws:SourceAccount and aws:SourceArn to a "
        "AWS KMS policy is not supported for EventBridge-to-encrypted topics' "
        "(https://docs.aws.amazon.com/sns/latest/dg/sns-key-management.html)"
    ),
}


def test_every_service_principal_is_held_to_this_account() -> None:
    statements = _service_statements()
    assert len(statements) >= 10  # keys, buckets, queues and trust policies of every template
    for resource, service, statement in statements:
        if (resource, service) in NO_SOURCE_CONDITION:
            assert not statement.get("Condition"), f"{resource} {service}: drop it from NO_SOURCE_CONDITION"
            continue
        assert _source_keys(statement) & {"aws:sourcearn", "aws:sourceaccount"}, (
            f"{resource}: {service} may act for any account (confused deputy); add aws:SourceArn or "
            "aws:SourceAccount, or say in NO_SOURCE_CONDITION why AWS does not support them"
        )


def test_cloudtrail_is_held_to_this_trail_on_every_statement() -> None:
    # AWS recommends aws:SourceArn (the trail) over aws:SourceAccount for CloudTrail, on the key's
    # encrypt and describe statements and on the bucket
    # (https://docs.aws.amazon.com/awscloudtrail/latest/userguide/create-kms-key-policy-for-cloudtrail.html).
    cloudtrail = [s for _, service, s in _service_statements() if service == "cloudtrail.amazonaws.com"]
    assert len(cloudtrail) == 4
    for statement in cloudtrail:
        arn = statement["Condition"]["StringEquals"]["aws:SourceArn"]["Fn::Sub"]
        assert arn.endswith(":trail/${AWS::StackName}-trail")


# ---------------------------------------------------------------------------------------- partitions
@pytest.mark.parametrize("path", TEMPLATES + STATE_MACHINES, ids=lambda p: p.name)
def test_no_arn_names_the_aws_partition_literally(path: Path) -> None:
    # GovCloud (aws-us-gov) and China (aws-cn) ARNs differ: every ARN takes ${AWS::Partition}
    literal = [line.strip() for line in path.read_text().splitlines() if "arn:aws:" in line]
    assert literal == [], f"{path.name}: {literal}"


@pytest.mark.parametrize("path", STATE_MACHINES, ids=lambda p: p.name)
def test_the_state_machines_call_lambda_in_the_stack_partition(template: dict[str, Any], path: Path) -> None:
    (machine,) = [
        r
        for r in template["Resources"].values()
        if r["Properties"].get("DefinitionUri") == f"statemachines/{path.name}"
    ]
    assert machine["Properties"]["DefinitionSubstitutions"]["Partition"] == {"Ref": "AWS::Partition"}
    definition = substitute_definition(path.read_text(), {"Partition": "aws-cn"})
    resources = set(re.findall(r'"Resource": "([^"]+)"', definition))
    # (the canary's wait for a person is Lambda's callback pattern, in the same partition)
    assert resources - {"arn:aws-cn:states:::lambda:invoke.waitForTaskToken"} == {
        "arn:aws-cn:states:::lambda:invoke"
    }
