"""The local runtime's identity-policy evaluation follows IAM's rules where moto's does not: a condition on
a key the request lacks does not match (moto treats it as met), an explicit Deny wins, and an operator it
does not know grants nothing. ("Policy evaluation logic", IAM User Guide.)"""

from __future__ import annotations

from typing import Any

import pytest
from immutable_guard.local.iam_policies import evaluate

STACK = "arn:aws:cloudformation:us-east-1:123456789012:stack/web/1"


def _allow(**condition: Any) -> dict[str, Any]:
    statement: dict[str, Any] = {"Effect": "Allow", "Action": "cloudformation:UpdateStack", "Resource": "*"}
    if condition:
        statement["Condition"] = condition
    return {"Version": "2012-10-17", "Statement": [statement]}


@pytest.mark.parametrize(
    ("condition", "context", "allowed"),
    [
        ({"StringEquals": {"aws:ResourceTag/team": "a"}}, {"aws:ResourceTag/team": "a"}, True),
        ({"StringEquals": {"aws:ResourceTag/team": "a"}}, {"aws:ResourceTag/team": "b"}, False),
        # The key is absent from the request: the condition does not match (moto would allow)
        ({"StringEquals": {"aws:ResourceTag/team": "a"}}, {}, False),
        ({"StringEqualsIfExists": {"aws:ResourceTag/team": "a"}}, {}, True),
        ({"Null": {"aws:ResourceTag/team": "true"}}, {}, True),
        ({"Null": {"aws:ResourceTag/team": "true"}}, {"aws:ResourceTag/team": "a"}, False),
        ({"ArnLike": {"iam:AssociatedResourceArn": "arn:aws:ec2:*:*:instance/*"}}, {}, False),
        ({"StringLike": {"aws:RequestedRegion": "eu-*"}}, {"aws:RequestedRegion": "eu-west-1"}, True),
        # An operator this model does not know grants nothing
        ({"DateGreaterThan": {"aws:CurrentTime": "2020-01-01T00:00:00Z"}}, {}, False),
    ],
)
def test_conditions_match_as_iam_evaluates_them(
    condition: dict[str, Any], context: dict[str, str], allowed: bool
) -> None:
    assert evaluate([_allow(**condition)], "cloudformation:UpdateStack", STACK, context).allowed is allowed


def test_an_explicit_deny_wins_over_any_allow() -> None:
    deny = {
        "Statement": [{"Effect": "Deny", "Action": "cloudformation:*", "Resource": "arn:*:cloudformation:*"}]
    }
    decision = evaluate([_allow(), deny], "cloudformation:UpdateStack", STACK)
    assert decision.allowed is False and decision.explicit_deny is True


def test_action_and_resource_patterns_match_as_in_iam() -> None:
    policy = {
        "Statement": [{"Effect": "Allow", "Action": "CloudFormation:Update*", "Resource": STACK[:-1] + "*"}]
    }
    assert evaluate([policy], "cloudformation:UpdateStack", STACK).allowed
    assert not evaluate([policy], "cloudformation:DeleteStack", STACK).allowed
    assert not evaluate([policy], "cloudformation:UpdateStack", STACK.replace("/web/", "/webx/")).allowed
