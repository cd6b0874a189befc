"""Replacement through CloudFormation cannot be turned into a privilege escalation: the Replace function may
update only the stacks the operator declared, may pass no role to CloudFormation but the one the operator
named, and Release may pass only this account's roles, to EC2. Read from template.yaml, with its
conditions and intrinsics resolved for several parameter sets, and judged by IAM's evaluation rules.

(A wildcard iam:PassRole to CloudFormation plus UpdateStack on every stack let a role update any stack
that has a powerful service role: https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/using-iam-servicerole.html)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from immutable_guard.local.iam_policies import evaluate
from immutable_guard.local.intrinsics import NO_VALUE, Resolver, UnresolvedReference
from immutable_guard.template import function_policies, load_template

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = load_template(REPO / "template.yaml")
ACCOUNT, REGION = "123456789012", "eu-west-1"
STACK = f"arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/{{}}/0d3a1e70-0000-11ef-8000-0a1b2c3d4e5f"
OPERATOR_ROLE = f"arn:aws:iam::{ACCOUNT}:role/workload-stacks"


def _every_statement(statements: list[Any]) -> list[dict[str, Any]]:
    """Each statement, both branches of a conditional one."""
    found: list[dict[str, Any]] = []
    for statement in statements:
        if isinstance(statement, dict) and "Fn::If" in statement:
            found += _every_statement([b for b in statement["Fn::If"][1:] if "Ref" not in b])
        else:
            found.append(statement)
    return found


def _unresolved_statements(function: str) -> list[dict[str, Any]]:
    policies = function_policies(TEMPLATE, function)
    return [s for policy in policies for s in _every_statement(policy["Statement"])]


def _policy(function: str, **overrides: str) -> dict[str, Any]:
    """The function's policy as deployed with these parameters (statements on the guard's own resources,
    which only a deploy can name, left out)."""
    parameters: dict[str, Any] = {}
    for name, spec in TEMPLATE["Parameters"].items():
        value = overrides.get(name, str(spec.get("Default", "")))
        parameters[name] = value.split(",") if spec["Type"] == "CommaDelimitedList" else value
    resolver = Resolver(
        parameters,
        {
            "AWS::Region": REGION,
            "AWS::AccountId": ACCOUNT,
            "AWS::Partition": "aws",
            "AWS::StackName": "guard",
        },
        TEMPLATE["Conditions"],
    )
    statements = []
    for policy in function_policies(TEMPLATE, function):
        for statement in policy["Statement"]:
            try:
                resolved = resolver.resolve(statement)
            except UnresolvedReference:
                continue
            if resolved is not NO_VALUE:
                statements.append(resolved)
    return {"Version": "2012-10-17", "Statement": statements}


def _may(policy: dict[str, Any], action: str, resource: str, **context: str) -> bool:
    return evaluate([policy], action, resource, {"aws:RequestedRegion": REGION, **context}).allowed


def test_no_statement_passes_a_role_to_cloudformation_on_a_wildcard() -> None:
    for function, resource in TEMPLATE["Resources"].items():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        for statement in _unresolved_statements(function):
            actions = statement.get("Action", [])
            if "iam:PassRole" not in ([actions] if isinstance(actions, str) else actions):
                continue
            assert statement.get("Resource") != "*", (function, statement.get("Sid"))
            passed_to = statement.get("Condition", {}).get("StringEquals", {}).get("iam:PassedToService")
            assert passed_to is not None, (function, statement.get("Sid"))
            if passed_to == "cloudformation.amazonaws.com":
                # Only the role the operator named, never a pattern
                assert statement["Resource"] == {"Ref": "ReplacementStackRoleArn"}, statement


def test_with_nothing_declared_replace_may_update_no_stack_and_pass_no_role() -> None:
    policy = _policy("ReplaceFunction")
    for name in ("web", "immutable-guard", "anything"):
        assert not _may(policy, "cloudformation:UpdateStack", STACK.format(name))
    assert not _may(
        policy, "iam:PassRole", OPERATOR_ROLE, **{"iam:PassedToService": "cloudformation.amazonaws.com"}
    )


def test_replace_may_update_exactly_the_stacks_declared_by_name_in_this_region() -> None:
    policy = _policy("ReplaceFunction", ScopeStackNames="web,api-2")
    assert _may(policy, "cloudformation:UpdateStack", STACK.format("web"))
    assert _may(policy, "cloudformation:UpdateStack", STACK.format("api-2"))
    # Not another stack, not one whose name merely starts alike, not the same name in another region
    assert not _may(policy, "cloudformation:UpdateStack", STACK.format("webx"))
    assert not _may(policy, "cloudformation:UpdateStack", STACK.format("guard"))
    other_region = STACK.format("web").replace(REGION, "us-east-1")
    assert not evaluate(
        [policy], "cloudformation:UpdateStack", other_region, {"aws:RequestedRegion": "us-east-1"}
    ).allowed


def test_replace_may_update_a_stack_carrying_the_declared_tag_only() -> None:
    policy = _policy("ReplaceFunction", ReplaceableStackTagValue="golden")
    tagged = {"aws:ResourceTag/immutable-guard-replaceable": "golden"}
    assert _may(policy, "cloudformation:UpdateStack", STACK.format("any"), **tagged)
    other = {"aws:ResourceTag/immutable-guard-replaceable": "true"}
    assert not _may(policy, "cloudformation:UpdateStack", STACK.format("any"), **other)
    assert not _may(policy, "cloudformation:UpdateStack", STACK.format("any"))


@pytest.mark.parametrize("named", [True, False])
def test_replace_may_pass_only_the_role_the_operator_named_and_only_to_cloudformation(named: bool) -> None:
    policy = _policy("ReplaceFunction", ReplacementStackRoleArn=OPERATOR_ROLE if named else "")
    to_cloudformation = {"iam:PassedToService": "cloudformation.amazonaws.com"}
    assert _may(policy, "iam:PassRole", OPERATOR_ROLE, **to_cloudformation) is named
    assert not _may(policy, "iam:PassRole", f"arn:aws:iam::{ACCOUNT}:role/admin", **to_cloudformation)
    assert not _may(policy, "iam:PassRole", OPERATOR_ROLE, **{"iam:PassedToService": "ec2.amazonaws.com"})


def test_release_may_pass_only_this_accounts_roles_and_only_to_ec2() -> None:
    policy = _policy("ReleaseFunction")
    to_ec2 = {"iam:PassedToService": "ec2.amazonaws.com"}
    assert _may(policy, "iam:PassRole", f"arn:aws:iam::{ACCOUNT}:role/golden-app", **to_ec2)
    assert not _may(policy, "iam:PassRole", "arn:aws:iam::999999999999:role/golden-app", **to_ec2)
    assert not _may(
        policy,
        "iam:PassRole",
        f"arn:aws:iam::{ACCOUNT}:role/admin",
        **{"iam:PassedToService": "cloudformation.amazonaws.com"},
    )
