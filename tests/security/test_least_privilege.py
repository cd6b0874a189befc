"""Least privilege, read from template.yaml: no wildcard action is allowed, every mutating EC2 grant is
either limited by Immutable Guard's tags or listed here with why AWS cannot limit it; every function and
state machine is granted exactly the actions it was seen calling (observed_calls.json, recorded from the
runs of call_manifest.RECORDING_SOURCES), every policy document passes the parliament IAM linter, and no
role may pass any role to a service through which it could escalate."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aws_lambda_powertools import Metrics
from call_manifest import MANIFEST, MEMBER_ROLE_FUNCTIONS, NOT_OBSERVED, load_manifest, outside, stale
from immutable_guard.local import call_log, lambda_runner
from immutable_guard.local.call_log import Entry
from immutable_guard.pipeline import process_event
from immutable_guard.template import function_policies, load_template
from template_policies import (
    TEMPLATE_PATH,
    PolicyDocument,
    as_list,
    import_parliament,
    organization_policy_documents,
    policy_documents,
    principals,
    resolve,
    statements,
    translated_template,
)

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
    ("DetectFunction", "ec2:ModifyNetworkInterfaceAttribute"): (
        "the first response (single-account mode only) moves an in-scope instance's ENIs onto our isolation "
        "groups right after the lock; an ENI does not carry its instance's tags (issue 15)"
    ),
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
    ("EvidenceFunction", "ec2:CopySnapshot"): (
        "organisation mode, custody: the source is a member's snapshot shared with this account (its tags "
        "are not shared); limited to snapshot ARNs of the guard's region"
    ),
    ("EvidenceFunction", "ec2:LockSnapshot"): (
        "organisation mode, custody: locks the copy it just made; limited to snapshot ARNs of the guard's "
        "region (a lock only protects, it never deletes)"
    ),
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
        # SAM functions' Policies are documents; a role's inline policies hold theirs in PolicyDocument.
        documents = [
            p.get("PolicyDocument", p) for p in properties.get("Policies", []) if isinstance(p, dict)
        ]
        documents += [properties.get(k) for k in ("KeyPolicy", "PolicyDocument", "AssumeRolePolicyDocument")]
        for document in documents:
            for statement in _statements(document):
                if statement.get("Effect") == "Allow":
                    yield name, statement


def _function_grants(name: str) -> list[tuple[str, dict[str, Any]]]:
    grants = []
    for policy in function_policies(TEMPLATE, name):
        for statement in _statements(policy):
            grants.extend((action, statement) for action in _actions(statement))
    return grants


def _is_administration_by_the_account(name: str, statement: dict[str, Any]) -> bool:
    # The key policy must let the account administer its key (or the key becomes unmanageable);
    # IAM policies then decide who may use it. This is AWS's default key policy.
    principal = statement.get("Principal", {})
    return (
        name in ("AlertKey", "TrailKey", "EvidenceCustodyKey")
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


# ---------------------------------------------------------------------- granted == observed


def test_every_sample_event_through_detect_calls_only_what_the_manifest_holds() -> None:
    """A recording run: every sample event of events/, each about its own immutable server, judged by
    Detect's logic on moto, its calls counted as DetectFunction's (tests/conftest.py holds them to the
    manifest). The e2e scenarios take only a few of Detect's paths; these take them all."""
    from detect_load import ACCOUNT, EVENTS, SAMPLE_GROUP, SAMPLE_INSTANCE, detect_world

    samples = sorted(EVENTS.glob("*.json"))
    call_log.name_principal("detect-sample-events", TEMPLATE_PATH, "DetectFunction")
    with detect_world(immutable=len(samples), mutable=2) as world:
        events: list[object] = []
        for instance_id, path in zip(world.immutable_ids, samples, strict=True):
            instance = world.clients.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0][
                "Instances"
            ][0]
            text = (
                path.read_text("utf-8")
                .replace(SAMPLE_INSTANCE, instance_id)
                .replace(SAMPLE_GROUP, instance["SecurityGroups"][0]["GroupId"])
            )
            events.append(json.loads(text))
        lambda_runner.install()
        try:
            with lambda_runner.acting_as("detect-sample-events"):
                decisions = [
                    process_event(
                        event, world.settings, world.clients, Metrics(namespace="x"), ACCOUNT
                    ).decision
                    for event in [*events, "garbage"]
                ]
        finally:
            lambda_runner.uninstall()
    # Every kind of decision was reached, so the calls recorded cover each way through Detect.
    assert {"ignore", "alert", "remediate"} <= set(decisions)
    assert decisions[-1] == "reject"


def _granted(role: str) -> set[str]:
    """Every action a role's inline policies allow in either mode, except the permission SAM adds for the
    Lambda service itself to deliver failed asynchronous events to the function's dead-letter queue.

    The recorded runs deploy both modes (single account, and the organisation of the organisation drill and
    tests), so a grant counts as deployed when it is in either: resolved with that mode's parameters, a
    statement under a condition (!If [Cond, statement, !Ref AWS::NoValue]) counts when its condition holds."""
    granted: set[str] = set()
    for mode in ("single", "organization"):
        resource = translated_template(mode)["Resources"][role]
        for policy in resource["Properties"].get("Policies", []):
            if policy["PolicyName"] == "DeadLetterQueuePolicy":
                continue
            for statement in statements(resolve(policy["PolicyDocument"], mode)):
                if isinstance(statement, dict) and statement.get("Effect") == "Allow":
                    granted.update(as_list(statement["Action"]))
    return granted


PRINCIPALS = principals()


@pytest.mark.parametrize("principal", sorted(PRINCIPALS))
def test_each_function_and_state_machine_is_granted_exactly_what_it_was_seen_calling(principal: str) -> None:
    # Given the actions its recorded runs used, and the few grants no run reaches (each with a reason)
    manifest = load_manifest()
    expected = set(manifest.get(principal, [])) | set(NOT_OBSERVED.get(principal, {}))
    # When its role's policies are read from the template after the SAM transform
    granted = _granted(PRINCIPALS[principal])
    # Then nothing is missing (an outage) and nothing is left over (attack surface)
    assert {"missing": sorted(expected - granted), "never used": sorted(granted - expected)} == {
        "missing": [],
        "never used": [],
    }, f"{principal}: regenerate {MANIFEST.name} (make observed-calls) or fix template.yaml"


def test_the_manifest_names_only_principals_of_the_template() -> None:
    # (beside them, the member roles of organization/member-roles.yaml: test_member_role_grants.py)
    central = {name for name in load_manifest() if name not in MEMBER_ROLE_FUNCTIONS}
    assert central | set(NOT_OBSERVED) <= set(PRINCIPALS)


def test_a_grant_kept_without_being_observed_is_not_observed() -> None:
    # Once a recorded run reaches it, it belongs to the manifest, and its reason here goes stale.
    manifest = load_manifest()
    assert {
        (name, action)
        for name, kept in NOT_OBSERVED.items()
        for action in kept
        if action in manifest.get(name, [])
    } == set()


def test_a_call_outside_the_manifest_is_reported_and_a_manifest_action_no_run_made_is_stale() -> None:
    # Given a manifest, and calls of a template's function: one it holds, one it does not, one kept
    # without being observed
    manifest = {"NukeFunction": ["ec2:TerminateInstances", "ec2:DescribeInstances"]}
    calls = [
        Entry("template.yaml", "NukeFunction", "ec2:TerminateInstances", "ec2.TerminateInstances"),
        Entry("template.yaml", "NukeFunction", "s3:GetObject", "s3.GetObject"),
        Entry("template.yaml", "NukeFunction", "ec2:StopInstances", "ec2.StopInstances"),
    ]
    # Then the call it does not hold fails the test that made it (tests/conftest.py) ...
    assert outside(calls, manifest) == ["NukeFunction: s3:GetObject (s3.GetObject)"]
    # ... and, once every recording run has run, the action none of them made is stale
    assert stale(manifest, calls) == ["NukeFunction: ec2:DescribeInstances"]


def test_roles_carry_only_the_managed_policies_their_service_uses_itself() -> None:
    # Lambda writes the function's logs and X-Ray traces with the function's role (SAM attaches these two);
    # Step Functions its traces. No managed policy grants our code anything.
    lambda_service = {
        "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
        "arn:aws:iam::aws:policy/AWSXrayWriteOnlyAccess",
    }
    resources = translated_template()["Resources"]
    for principal, role in PRINCIPALS.items():
        # (Roles written out in template.yaml name the partition with !Sub; SAM writes it out.)
        managed = set(resolve(resources[role]["Properties"].get("ManagedPolicyArns", [])))
        if resources[principal]["Type"] == "AWS::Lambda::Function":
            assert managed == lambda_service, principal
        else:
            assert managed == {"arn:aws:iam::aws:policy/AWSXrayWriteOnlyAccess"}, principal


def test_the_dead_letter_permission_sam_adds_reaches_only_the_functions_own_queue() -> None:
    resources = translated_template()["Resources"]
    for principal, role in PRINCIPALS.items():
        for policy in resources[role]["Properties"].get("Policies", []):
            if policy["PolicyName"] == "DeadLetterQueuePolicy":
                target = resources[principal]["Properties"]["DeadLetterConfig"]["TargetArn"]
                assert statements(policy["PolicyDocument"]) == [
                    {"Action": "sqs:SendMessage", "Resource": target, "Effect": "Allow"}
                ], principal


# ---------------------------------------------------------------------- parliament

# Findings of parliament (https://github.com/duo-labs/parliament) that are not defects here, with why.
# Everything else it reports fails: an unknown action or service prefix, a condition key the action does
# not support, a resource of a type the action does not take, a malformed statement.
SUPPRESSED_EVERYWHERE = {
    "NO_VERSION": (
        "SAM writes a function's inline statements and its policy templates (LambdaInvokePolicy) without a "
        "Version; IAM then reads them as 2008-10-17, under which policy variables are not expanded "
        "(https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_version.html). "
        "test_no_policy_without_a_version_uses_a_policy_variable holds them to that."
    ),
    "RESOURCE_STAR": (
        "the resource is any of its type in the account by design (any immutable instance, stack, alarm, "
        "the key a key policy is attached to). Which mutating grants may be that wide is decided with a "
        "reason each by test_every_mutating_ec2_grant_is_tag_limited_or_listed_with_why_it_cannot_be, "
        "and a wildcard iam:PassRole by the tests below."
    ),
}
# (document, finding, detail) -> why.
SUPPRESSED: dict[tuple[str, str, str], str] = {
    (
        "ReleaseFunctionRole/Policies/ReleaseFunctionRolePolicy0",
        "RESOURCE_MISMATCH",
        "states:DescribeExecution",
    ): (
        "the IAM reference lists two alternative resource types for DescribeExecution (execution, express) "
        "and parliament requires a resource of each; the remediation state machine is STANDARD, whose "
        "executions are execution ARNs"
    ),
}


def lint(document: PolicyDocument) -> list[str]:
    """parliament's findings on one document, less the suppressed ones: ``ISSUE detail``."""
    parliament = import_parliament()
    policy = parliament.analyze_policy_string(json.dumps(document.document))
    found = []
    for finding in policy.findings:
        if finding.issue in SUPPRESSED_EVERYWHERE:
            continue
        if (
            finding.issue == "MALFORMED"
            and document.where == "AssumeRolePolicyDocument"
            and "neither Resource nor NotResource" in str(finding.detail)
        ):
            continue  # a trust policy names no resource: the role it is attached to is the resource
        details = finding.detail if isinstance(finding.detail, list) else [finding.detail]
        for detail in details:
            action = detail.get("action", "") if isinstance(detail, dict) else str(detail)
            # (template.yaml's documents as organisation mode changes them keep their suppressions)
            label = document.label.removeprefix("organization:")
            if (label, finding.issue, action) not in SUPPRESSED:
                found.append(f"{finding.issue} {detail}")
    return found


DOCUMENTS = {document.label: document for document in policy_documents()}


@pytest.mark.parametrize("label", sorted(DOCUMENTS))
def test_every_policy_document_passes_the_iam_linter(label: str) -> None:
    assert lint(DOCUMENTS[label]) == []


ORGANIZATION_DOCUMENTS = {document.label: document for document in organization_policy_documents()}


@pytest.mark.parametrize("label", sorted(ORGANIZATION_DOCUMENTS))
def test_every_policy_document_of_organisation_mode_passes_the_iam_linter(label: str) -> None:
    # template.yaml's documents that organisation mode changes (the central roles' sts:AssumeRole, the bus
    # policy) and every document of organization/member-*.yaml
    assert lint(ORGANIZATION_DOCUMENTS[label]) == []


def test_the_linter_sees_each_kind_of_defect_it_is_trusted_with() -> None:
    # Given statements with an unknown action, a condition key the action does not support, and a resource
    # of a type the action does not take (a DynamoDB table for sns:Publish)
    broken = PolicyDocument(
        "Example",
        "Policies/Broken",
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": "ec2:DescribeInstancez", "Resource": "*"},
                {
                    "Effect": "Allow",
                    "Action": "sns:Publish",
                    "Resource": "arn:aws:sns:us-east-1:123456789012:alerts",
                    "Condition": {"StringEquals": {"ec2:Region": "us-east-1"}},
                },
                {
                    "Effect": "Allow",
                    "Action": "sns:Publish",
                    "Resource": "arn:aws:dynamodb:us-east-1:123456789012:table/ledger",
                },
            ],
        },
    )
    # When linted; Then each is reported
    issues = {finding.split(" ", 1)[0] for finding in lint(broken)}
    assert {"UNKNOWN_ACTION", "UNKNOWN_CONDITION_FOR_ACTION", "RESOURCE_MISMATCH"} <= issues


def test_no_policy_without_a_version_uses_a_policy_variable() -> None:
    # (The reason NO_VERSION is suppressed: without a Version, "${aws:username}" is a literal string.)
    for document in DOCUMENTS.values():
        if "Version" not in document.document:
            assert "${" not in json.dumps(document.document), document.label


# ---------------------------------------------------------------------- iam:PassRole

# A role passed to a service acts through that service. Passing any role (a wildcard resource) is safe only
# to a service the caller cannot then make run code of its choosing with that role; for each such service,
# the actions that would let it (the caller must hold none of them). CloudFormation is never on this list:
# a stack update runs with the passed role and does whatever its template says.
PASS_ANY_ROLE_TO: dict[str, frozenset[str]] = {
    # The role lands on an instance: it acts only through code running there. Release re-attaches the
    # profile it removed from an instance we quarantined; it can neither launch, start nor reach into one.
    "ec2.amazonaws.com": frozenset(
        {
            "ec2:RunInstances",
            "ec2:StartInstances",
            "ec2:CreateLaunchTemplateVersion",
            "ssm:SendCommand",
            "ssm:StartSession",
            "ssm:StartAutomationExecution",
            "ssm:CreateAssociation",
            "ec2-instance-connect:SendSSHPublicKey",
            "ec2-instance-connect:SendSerialConsoleSSHPublicKey",
        }
    ),
}


def pass_role_problems(role_actions: set[str], statement: dict[str, Any]) -> list[str]:
    """Why this Allow statement's iam:PassRole is an escalation path (empty when it is not)."""
    actions = as_list(statement.get("Action", []))
    if statement.get("Effect") != "Allow" or not any(a in ("iam:PassRole", "iam:*", "*") for a in actions):
        return []
    if not any("*" in str(resource) for resource in as_list(statement.get("Resource", []))):
        return []
    passed_to = [
        value
        for operator, block in (statement.get("Condition") or {}).items()
        if operator in ("StringEquals", "ForAnyValue:StringEquals")
        for key, value in block.items()
        if key == "iam:PassedToService"
    ]
    services = [service for value in passed_to for service in as_list(value)]
    if len(services) != 1 or "*" in services[0] or "?" in services[0]:
        return [f"passes any role, to {services or 'any service'}; limit it to one service"]
    (service,) = services
    if service == "cloudformation.amazonaws.com":
        return ["passes any role to CloudFormation: a stack update then does anything that role may"]
    if service not in PASS_ANY_ROLE_TO:
        return [f"passes any role to {service}, not known to be unable to escalate"]
    reach = sorted(PASS_ANY_ROLE_TO[service] & role_actions)
    return [f"passes any role to {service} and may also run code there: {reach}"] if reach else []


def _roles() -> list[Any]:
    roles = [
        logical_id
        for logical_id, resource in translated_template()["Resources"].items()
        if resource["Type"] == "AWS::IAM::Role"
    ]
    return sorted(roles)


@pytest.mark.parametrize("role", _roles())
def test_no_role_may_pass_any_role_to_a_service_it_could_escalate_through(role: str) -> None:
    resource = translated_template()["Resources"][role]
    policies = [p["PolicyDocument"] for p in resource["Properties"].get("Policies", [])]
    role_actions = {a for doc in policies for s in statements(doc) for a in as_list(s.get("Action", []))}
    problems = [
        problem
        for document in DOCUMENTS.values()
        if document.resource == role and document.where.startswith("Policies/")
        for statement in statements(document.document)
        for problem in pass_role_problems(role_actions, statement)
    ]
    assert problems == []


MEMBER_ROLE_POLICIES = sorted(
    label
    for label in ORGANIZATION_DOCUMENTS
    if label.startswith("member-roles.yaml:") and "/Policies/" in label
)


@pytest.mark.parametrize("label", MEMBER_ROLE_POLICIES)
def test_no_member_role_may_pass_any_role_to_a_service_it_could_escalate_through(label: str) -> None:
    # (each member role has one inline policy: its actions are the role's)
    document = ORGANIZATION_DOCUMENTS[label].document
    role_actions = {a for s in statements(document) for a in as_list(s.get("Action", []))}
    assert [problem for s in statements(document) for problem in pass_role_problems(role_actions, s)] == []


@pytest.mark.parametrize(
    ("statement", "others", "verdict"),
    [
        ({"Effect": "Allow", "Action": "iam:PassRole", "Resource": "*"}, set(), "any service"),
        (
            {
                "Effect": "Allow",
                "Action": "iam:PassRole",
                "Resource": "*",
                "Condition": {"StringEquals": {"iam:PassedToService": "cloudformation.amazonaws.com"}},
            },
            set(),
            "CloudFormation",
        ),
        (
            {
                "Effect": "Allow",
                "Action": "iam:PassRole",
                "Resource": "arn:aws:iam::123456789012:role/*",
                "Condition": {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}},
            },
            {"ec2:RunInstances"},
            "run code",
        ),
        (
            {
                "Effect": "Allow",
                "Action": "iam:PassRole",
                "Resource": "*",
                "Condition": {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}},
            },
            {"ec2:AssociateIamInstanceProfile"},
            None,
        ),
        (
            {"Effect": "Allow", "Action": "iam:PassRole", "Resource": "arn:aws:iam::123456789012:role/stack"},
            set(),
            None,
        ),
    ],
)
def test_the_pass_role_rule(statement: dict[str, Any], others: set[str], verdict: str | None) -> None:
    problems = pass_role_problems(others, statement)
    if verdict is None:
        assert problems == []
    else:
        assert len(problems) == 1 and verdict in problems[0]
