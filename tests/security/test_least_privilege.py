"""Least privilege, read from template.yaml: no wildcard action is allowed, every mutating EC2 grant is
either limited by Immutable Guard's tags or listed here with why AWS cannot limit it, and the Detect
function holds exactly the permissions its calls need (measured by running every sample event on moto)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.handlers
import pytest
from aws_lambda_powertools import Metrics
from immutable_guard.pipeline import process_event
from immutable_guard.template import load_template

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = load_template(REPO / "template.yaml")
RESOURCES: dict[str, Any] = TEMPLATE["Resources"]
TAG_CONDITION_KEYS = ("aws:ResourceTag/immutable-guard:", "ec2:ResourceTag/immutable-guard:")

# Mutating EC2 actions that AWS cannot (or this design cannot) limit to a tag, with the reason.
UNLIMITABLE: dict[tuple[str, str], str] = {
    ("QuarantineFunction", "ec2:ModifyNetworkInterfaceAttribute"): (
        "acts on the ENI and the security groups; an ENI does not carry its instance's tags"
    ),
    ("QuarantineFunction", "ec2:ModifyInstanceAttribute"): (
        "evidence protection runs before the quarantine tag is written, and an instance can be in scope "
        "by stack or Auto Scaling group membership without the scope tag"
    ),
    ("QuarantineFunction", "ec2:DisassociateIamInstanceProfile"): (
        "same as ModifyInstanceAttribute: scope by membership carries no tag"
    ),
    ("QuarantineFunction", "ec2:CreateSecurityGroup"): (
        "could require aws:RequestTag/immutable-guard:role on create (see docs/security.md), VPC is any"
    ),
    ("QuarantineFunction", "ec2:CreateTags"): (
        "tags the instance as quarantined; could be limited with aws:TagKeys to immutable-guard:* "
        "(see docs/security.md)"
    ),
    ("QuarantineFunction", "ec2:AuthorizeSecurityGroupIngress"): (
        "only on our isolation groups, but their ids are created at run time (could be tag-limited)"
    ),
    ("QuarantineFunction", "ec2:AuthorizeSecurityGroupEgress"): "as AuthorizeSecurityGroupIngress",
    ("QuarantineFunction", "ec2:RevokeSecurityGroupIngress"): (
        "revokes the offending rule on the workload's own group, which carries no tag of ours"
    ),
    ("QuarantineFunction", "ec2:RevokeSecurityGroupEgress"): "as RevokeSecurityGroupIngress",
    ("QuarantineFunction", "ec2:DeleteNetworkAclEntry"): (
        "deletes the allow entry the attacker added to the workload's own network ACL, which carries no "
        "tag of ours (and only while it is still the entry the event created)"
    ),
    ("QuarantineFunction", "ec2:CreateNetworkAclEntry"): (
        "IsolationDepth=network-acl adds deny entries to the workload's own network ACLs, which carry no "
        "tag of ours; limited to network-acl ARNs (IAM cannot limit an entry to deny)"
    ),
    ("ReleaseFunction", "ec2:ModifyNetworkInterfaceAttribute"): "ENIs do not carry the instance's tags",
    ("ReleaseFunction", "ec2:DeleteNetworkAclEntry"): (
        "removes the quarantine's deny entries from the workload's network ACLs (no tag of ours), each only "
        "while it is still the entry the ledger recorded"
    ),
    ("NukeFunction", "ec2:DeleteNetworkAclEntry"): (
        "as Release: a terminated instance's addresses go to other instances, its deny entries must go"
    ),
    ("EvidenceFunction", "ec2:CreateSnapshots"): (
        "needs the instance, every volume and the new snapshots; volumes carry no tag of ours"
    ),
    ("EvidenceFunction", "ec2:CreateTags"): "limited to snapshot ARNs (resource-level), not by tag",
}
# Mutating actions that must carry a condition on our own tags.
MUST_BE_TAG_LIMITED = {
    ("NukeFunction", "ec2:TerminateInstances"),
    ("NukeFunction", "ec2:StopInstances"),
    ("NukeFunction", "ec2:ModifyInstanceAttribute"),
    ("ReleaseFunction", "ec2:ModifyInstanceAttribute"),
    ("ReleaseFunction", "ec2:AssociateIamInstanceProfile"),
    ("ReleaseFunction", "ec2:DeleteTags"),
}
READ_PREFIXES = ("Describe", "Get", "List")


def _statements(document: Any) -> list[dict[str, Any]]:
    if not isinstance(document, dict):
        return []
    statements = document.get("Statement", [])
    statements = statements if isinstance(statements, list) else [statements]
    # A statement granted only under a condition (!If [Cond, statement, !Ref AWS::NoValue]) counts.
    found: list[dict[str, Any]] = []
    for statement in statements:
        if isinstance(statement, dict) and "Fn::If" in statement:
            found += _statements({"Statement": [b for b in statement["Fn::If"][1:] if "Ref" not in b]})
        else:
            found.append(statement)
    return found


def _actions(statement: dict[str, Any]) -> list[str]:
    action = statement.get("Action", [])
    return action if isinstance(action, list) else [action]


def _every_allow_statement() -> Iterator[tuple[str, dict[str, Any]]]:
    for name, resource in RESOURCES.items():
        properties = resource.get("Properties", {})
        documents = [p for p in properties.get("Policies", []) if isinstance(p, dict)]
        documents += [properties.get(k) for k in ("KeyPolicy", "PolicyDocument", "AssumeRolePolicyDocument")]
        for document in documents:
            for statement in _statements(document):
                if statement.get("Effect") == "Allow":
                    yield name, statement


def _function_grants(name: str) -> list[tuple[str, dict[str, Any]]]:
    grants = []
    for policy in RESOURCES[name]["Properties"].get("Policies", []):
        for statement in _statements(policy):
            grants.extend((action, statement) for action in _actions(statement))
    return grants


def _is_administration_by_the_account(name: str, statement: dict[str, Any]) -> bool:
    # The key policy must let the account administer its key (or the key becomes unmanageable);
    # IAM policies then decide who may use it. This is AWS's default key policy.
    principal = statement.get("Principal", {})
    return (
        name in ("AlertKey", "TrailKey")
        and isinstance(principal, dict)
        and "AWS" in principal
        and _actions(statement) == ["kms:*"]
    )


def test_no_allow_statement_grants_a_wildcard_action_except_the_accounts_own_key_administration() -> None:
    offenders = [
        (name, action)
        for name, statement in _every_allow_statement()
        for action in _actions(statement)
        if "*" in action
        and action != "kms:GenerateDataKey*"
        and not _is_administration_by_the_account(name, statement)
    ]
    assert offenders == []


def test_the_alert_key_grants_services_no_wildcard_action_but_the_documented_one() -> None:
    # AWS documents kms:GenerateDataKey* (with kms:Decrypt) for CloudWatch alarms and EventBridge to
    # publish to a topic encrypted with a customer key ("Enable compatibility between event sources from
    # AWS services and encrypted topics"); anything wider is a defect.
    actions = [a for name, s in _every_allow_statement() if name == "AlertKey" for a in _actions(s)]
    assert {a for a in actions if a.endswith("*") and a != "kms:*"} <= {"kms:GenerateDataKey*"}


def _mutating_ec2_grants() -> list[tuple[str, str, dict[str, Any]]]:
    found = []
    for name, resource in RESOURCES.items():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        for action, statement in _function_grants(name):
            service, _, operation = action.partition(":")
            if service == "ec2" and not operation.startswith(READ_PREFIXES):
                found.append((name, action, statement))
    return found


def _tag_limited(statement: dict[str, Any]) -> bool:
    conditions = statement.get("Condition", {})
    keys = [key for block in conditions.values() if isinstance(block, dict) for key in block]
    return any(key.startswith(TAG_CONDITION_KEYS) for key in keys)


def test_every_mutating_ec2_grant_is_tag_limited_or_listed_with_why_it_cannot_be() -> None:
    unclassified = [
        (name, action)
        for name, action, _ in _mutating_ec2_grants()
        if (name, action) not in UNLIMITABLE and (name, action) not in MUST_BE_TAG_LIMITED
    ]
    assert unclassified == []


def test_the_destructive_grants_are_limited_to_instances_we_quarantined() -> None:
    grants = {
        (n, a): s for n, a, s in _mutating_ec2_grants() if n == "NukeFunction" and (n, a) not in UNLIMITABLE
    }
    assert grants and all(_tag_limited(statement) for statement in grants.values())
    for statement in grants.values():
        assert statement["Condition"]["StringEquals"] == {
            "aws:ResourceTag/immutable-guard:state": "quarantined"
        }


def test_release_can_only_touch_quarantined_instances() -> None:
    grants = {(n, a): s for n, a, s in _mutating_ec2_grants() if n == "ReleaseFunction"}
    limited = {key for key, statement in grants.items() if _tag_limited(statement)}
    assert {key for key in MUST_BE_TAG_LIMITED if key[0] == "ReleaseFunction"} <= limited


# ---------------------------------------------------------------------- Detect: granted == used

_IAM_SERVICE = {
    "auto-scaling": "autoscaling",
    "elastic-load-balancing-v2": "elasticloadbalancing",
    "sfn": "states",
}
# A call that needs the permission of other actions (TransactWriteItems: those of its items).
_IMPLIED = {"dynamodb:TransactWriteItems": {"dynamodb:PutItem"}}
# Publishing to a KMS-encrypted topic needs the key too; moto does not call KMS for it.
_ENCRYPTED_TOPIC = {"kms:Decrypt", "kms:GenerateDataKey"}


def iam_action(operation: str) -> str:
    service, _, name = operation.partition(".")
    return f"{_IAM_SERVICE.get(service, service)}:{name}"


@pytest.fixture(scope="module")
def detect_calls() -> set[str]:
    from detect_load import ACCOUNT, EVENTS, SAMPLE_GROUP, SAMPLE_INSTANCE, detect_world

    used: set[str] = set()
    recording = threading.Event()

    def record(event_name: str, **_: Any) -> None:
        if recording.is_set():
            used.add(iam_action(event_name.split(".", 1)[1]))

    botocore.handlers.BUILTIN_HANDLERS.append(("before-call", record))
    try:
        with detect_world(immutable=len(list(EVENTS.glob("*.json"))), mutable=2) as world:
            recording.set()
            for index, path in enumerate(sorted(EVENTS.glob("*.json"))):
                # Each sample about its own immutable server, so every sample takes its whole path.
                instance_id = world.immutable_ids[index]
                group_id = world.clients.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0][
                    "Instances"
                ][0]["SecurityGroups"][0]["GroupId"]
                text = (
                    path.read_text("utf-8")
                    .replace(SAMPLE_INSTANCE, instance_id)
                    .replace(SAMPLE_GROUP, group_id)
                )
                event = json.loads(text)
                process_event(
                    event, world.settings, world.clients, Metrics(namespace="x"), expected_account=ACCOUNT
                )
            process_event(
                "garbage", world.settings, world.clients, Metrics(namespace="x"), expected_account=ACCOUNT
            )
            recording.clear()
    finally:
        botocore.handlers.BUILTIN_HANDLERS.remove(("before-call", record))
    needed: set[str] = set()
    for action in used:
        needed |= _IMPLIED.get(action, {action})
    if "sns:Publish" in needed:
        needed |= _ENCRYPTED_TOPIC
    return needed


def test_detect_is_granted_every_permission_its_calls_need(detect_calls: set[str]) -> None:
    granted = {action for action, _ in _function_grants("DetectFunction")}
    assert detect_calls - granted == set()


def test_detect_holds_no_permission_that_no_sample_event_uses(detect_calls: set[str]) -> None:
    granted = {action for action, _ in _function_grants("DetectFunction")}
    # (ec2:DescribeIamInstanceProfileAssociations is reached: a role leads to instances through the live
    # associations of its profiles, paths/permissions.py.)
    # Forgetting an account-level event whose alert could not be published, so its redelivery alerts
    # (triage); only a failed Publish reaches it.
    # Telling apart two VPCs that hold a tunnel's private address by the endpoint's VPC (paths/shell.py);
    # the sample world has one VPC.
    unreached = {
        "dynamodb:DeleteItem",
        "ec2:DescribeInstanceConnectEndpoints",
    }
    assert granted - detect_calls == unreached
