"""EventBridge content filtering as the local runtime applies the template's rules."""

from __future__ import annotations

from typing import Any

import pytest
from immutable_guard.patterns import matches
from immutable_guard.template import event_rules, find_template, load_template

CLOUDTRAIL_INGRESS: dict[str, Any] = {
    "version": "0",
    "source": "aws.ec2",
    "detail-type": "AWS API Call via CloudTrail",
    "detail": {
        "eventSource": "ec2.amazonaws.com",
        "eventName": "AuthorizeSecurityGroupIngress",
        "sourceIPAddress": "203.0.113.7",
        "requestParameters": {
            "groupId": "sg-0123456789abcdef0",
            "ipPermissions": {
                "items": [
                    {
                        "ipProtocol": "tcp",
                        "fromPort": 22,
                        "toPort": 22,
                        "ipRanges": {"items": [{"cidrIp": "10.0.0.0/8"}, {"cidrIp": "0.0.0.0/0"}]},
                    },
                    {"ipProtocol": "tcp", "fromPort": 443, "toPort": 443, "ipRanges": {}},
                ]
            },
        },
        "readOnly": False,
        "resources": None,
    },
}


def test_exact_strings_numbers_booleans_and_null_match_their_own_type_only() -> None:
    # Given an event with a string, a number, a boolean and a null
    event = {"s": "5", "n": 5, "b": False, "z": None}
    # When / Then each matches its own value, and not a look-alike of another type
    assert matches({"s": ["5"], "n": [5.0], "b": [False], "z": [None]}, event)
    assert not matches({"s": [5]}, event)
    assert not matches({"n": ["5"]}, event)
    assert not matches({"b": [0]}, event)
    assert not matches({"z": [""]}, event)


def test_a_list_of_values_is_a_set_of_alternatives() -> None:
    # Given a pattern with alternatives
    pattern = {"detail": {"eventName": ["CreateKeyPair", "ImportKeyPair"]}}
    # When / Then one alternative suffices, none fails
    assert matches(pattern, {"detail": {"eventName": "ImportKeyPair"}})
    assert not matches(pattern, {"detail": {"eventName": "DeleteKeyPair"}})


def test_every_field_of_the_pattern_must_match() -> None:
    # Given a pattern with two fields
    pattern = {"source": ["aws.ec2"], "detail-type": ["AWS API Call via CloudTrail"]}
    # When one field differs, Then the event does not match
    assert matches(pattern, CLOUDTRAIL_INGRESS)
    assert not matches({**pattern, "source": ["aws.ssm"]}, CLOUDTRAIL_INGRESS)


def test_a_field_absent_from_the_event_does_not_match_a_value() -> None:
    assert not matches({"detail": {"errorCode": ["AccessDenied"]}}, CLOUDTRAIL_INGRESS)
    assert not matches({"missing": {"deeper": ["x"]}}, CLOUDTRAIL_INGRESS)


def test_an_array_in_the_event_matches_when_any_element_does() -> None:
    # Given an event whose field is an array of strings
    event = {"resources": ["arn:aws:ec2:us-east-1:1:instance/i-1", "arn:aws:ec2:us-east-1:1:instance/i-2"]}
    # When / Then a pattern naming one element matches
    assert matches({"resources": ["arn:aws:ec2:us-east-1:1:instance/i-2"]}, event)
    assert not matches({"resources": ["arn:aws:ec2:us-east-1:1:instance/i-3"]}, event)


def test_lists_of_objects_in_the_event_are_searched_element_by_element() -> None:
    # Given a CloudTrail record whose ipPermissions are a list of objects holding lists of objects
    pattern = {
        "detail": {
            "requestParameters": {
                "ipPermissions": {
                    "items": {"fromPort": [22], "ipRanges": {"items": {"cidrIp": ["0.0.0.0/0"]}}}
                }
            }
        }
    }
    # When / Then the nested element is found
    assert matches(pattern, CLOUDTRAIL_INGRESS)
    # And a value that no element holds does not match
    pattern["detail"]["requestParameters"]["ipPermissions"]["items"]["fromPort"] = [3389]
    assert not matches(pattern, CLOUDTRAIL_INGRESS)


def test_fields_of_one_array_element_are_matched_together() -> None:
    # Given port 443 exists (without ranges) and 0.0.0.0/0 exists (on port 22)
    pattern = {
        "detail": {
            "requestParameters": {
                "ipPermissions": {
                    "items": {"fromPort": [443], "ipRanges": {"items": {"cidrIp": ["0.0.0.0/0"]}}}
                }
            }
        }
    }
    # When / Then no single permission holds both, so it does not match
    assert not matches(pattern, CLOUDTRAIL_INGRESS)


@pytest.mark.parametrize(
    ("operator", "value", "expected"),
    [
        ({"prefix": "aws."}, "aws.ec2", True),
        ({"prefix": "aws."}, "custom.ec2", False),
        ({"prefix": {"equals-ignore-case": "AWS."}}, "aws.ec2", True),
        ({"suffix": ".png"}, "image.png", True),
        ({"suffix": ".png"}, "image.jpg", False),
        ({"suffix": {"equals-ignore-case": ".PNG"}}, "image.png", True),
        ({"equals-ignore-case": "StartSession"}, "startsession", True),
        ({"equals-ignore-case": "StartSession"}, "SendCommand", False),
        ({"wildcard": "arn:aws:iam::*:role/admin*"}, "arn:aws:iam::123:role/admin-1", True),
        ({"wildcard": "arn:aws:iam::*:role/admin*"}, "arn:aws:iam::123:user/admin-1", False),
        ({"wildcard": r"literal\*star"}, "literal*star", True),
        ({"wildcard": r"literal\*star"}, "literalXstar", False),
        ({"anything-but": "dry-run"}, "enforce", True),
        ({"anything-but": "dry-run"}, "dry-run", False),
        ({"anything-but": ["a", "b"]}, "b", False),
        ({"anything-but": [1, 2]}, 3, True),
        ({"anything-but": {"prefix": "aws."}}, "custom.app", True),
        ({"anything-but": {"prefix": "aws."}}, "aws.ec2", False),
        ({"anything-but": {"suffix": ".tmp"}}, "a.tmp", False),
        ({"numeric": [">", 0, "<=", 5]}, 5, True),
        ({"numeric": [">", 0, "<=", 5]}, 0, False),
        ({"numeric": ["=", 22]}, 22.0, True),
        ({"numeric": [">", 0]}, "22", False),
        ({"cidr": "10.0.0.0/24"}, "10.0.0.77", True),
        ({"cidr": "10.0.0.0/24"}, "10.0.1.77", False),
        ({"cidr": "10.0.0.0/24"}, "not-an-ip", False),
        ({"cidr": "2001:db8::/32"}, "2001:db8::1", True),
    ],
)
def test_content_filters(operator: dict[str, Any], value: Any, expected: bool) -> None:
    # Given an event field with a value, When a content filter is applied, Then it matches as AWS documents
    assert matches({"field": [operator]}, {"field": value}) is expected


def test_exists_false_matches_a_missing_field_and_exists_true_a_present_one() -> None:
    # Given a successful call and a failed one
    failed = {**CLOUDTRAIL_INGRESS, "detail": {**CLOUDTRAIL_INGRESS["detail"], "errorCode": "AccessDenied"}}
    # When / Then
    assert matches({"detail": {"errorCode": [{"exists": False}]}}, CLOUDTRAIL_INGRESS)
    assert not matches({"detail": {"errorCode": [{"exists": False}]}}, failed)
    assert matches({"detail": {"errorCode": [{"exists": True}]}}, failed)
    assert not matches({"detail": {"errorCode": [{"exists": True}]}}, CLOUDTRAIL_INGRESS)


def test_exists_false_matches_when_the_parent_object_is_missing() -> None:
    assert matches({"detail": {"errorCode": [{"exists": False}]}}, {"source": "aws.ec2"})


def test_operators_other_than_exists_never_match_a_missing_field() -> None:
    assert not matches({"absent": [{"anything-but": "x"}]}, {"present": "y"})
    assert not matches({"absent": [{"prefix": ""}]}, {"present": "y"})


def test_or_matches_when_any_branch_matches() -> None:
    # Given a pattern with a shared field and two alternative branches
    pattern = {
        "source": ["aws.ec2"],
        "$or": [{"detail": {"eventName": ["StartSession"]}}, {"detail": {"readOnly": [False]}}],
    }
    # When / Then
    assert matches(pattern, CLOUDTRAIL_INGRESS)
    assert not matches({**pattern, "source": ["aws.ssm"]}, CLOUDTRAIL_INGRESS)
    assert not matches({"$or": [{"detail": {"eventName": ["StartSession"]}}]}, CLOUDTRAIL_INGRESS)


def test_an_unknown_operator_is_an_error_not_a_silent_miss() -> None:
    with pytest.raises(ValueError, match="unsupported pattern operator"):
        matches({"field": [{"regex": ".*"}]}, {"field": "x"})


def test_the_templates_network_rule_matches_a_cloudtrail_ingress_event_and_not_a_failed_one() -> None:
    # Given the rules of template.yaml
    rules = {rule.logical_id: rule for rule in event_rules(load_template(find_template()))}
    network = rules["DetectFunctionNetworkOpened"].pattern
    failed = {
        **CLOUDTRAIL_INGRESS,
        "detail": {**CLOUDTRAIL_INGRESS["detail"], "errorCode": "Client.Unauthorized"},
    }
    # When / Then
    assert matches(network, CLOUDTRAIL_INGRESS)
    assert not matches(network, failed)
    assert not matches(rules["DetectFunctionShellOpened"].pattern, CLOUDTRAIL_INGRESS)
