"""AWS calls to IAM actions (what AWS authorizes a call with, from the AWS documentation cited in
local/call_log.py), and the log the test suite holds the template to."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest
from immutable_guard.local.call_log import CallLog, CallLogReader, iam_actions, name_principal


def _never_encrypted(action: str, params: object) -> bool:
    return False


@pytest.mark.parametrize(
    ("service", "operation", "params", "expected"),
    [
        ("ec2", "DescribeInstances", {}, {"ec2:DescribeInstances"}),
        ("monitoring", "GetMetricData", {}, {"cloudwatch:GetMetricData"}),
        ("states", "StartExecution", {}, {"states:StartExecution"}),
        ("elasticloadbalancing", "DescribeTargetHealth", {}, {"elasticloadbalancing:DescribeTargetHealth"}),
        ("s3", "ListObjectsV2", {"Bucket": "b"}, {"s3:ListBucket"}),
        ("s3", "HeadObject", {"Bucket": "b", "Key": "k"}, {"s3:GetObject"}),
        ("lambda", "Invoke", {"FunctionName": "f"}, {"lambda:InvokeFunction"}),
        ("sts", "GetCallerIdentity", {}, set()),
        (
            "dynamodb",
            "TransactWriteItems",
            {"TransactItems": [{"Put": {}}, {"Update": {}}, {"ConditionCheck": {}}]},
            {"dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:ConditionCheckItem"},
        ),
        (
            "ec2",
            "CreateSnapshots",
            {"TagSpecifications": [{"ResourceType": "snapshot", "Tags": []}]},
            {"ec2:CreateSnapshots", "ec2:CreateTags"},
        ),
        ("ec2", "CreateSnapshots", {}, {"ec2:CreateSnapshots"}),
        ("ec2", "AssociateIamInstanceProfile", {}, {"ec2:AssociateIamInstanceProfile", "iam:PassRole"}),
        ("cloudformation", "UpdateStack", {"StackName": "s"}, {"cloudformation:UpdateStack"}),
        (
            "cloudformation",
            "UpdateStack",
            {"StackName": "s", "RoleARN": "arn:aws:iam::123456789012:role/deployer"},
            {"cloudformation:UpdateStack", "iam:PassRole"},
        ),
        ("sns", "Publish", {"TopicArn": "t"}, {"sns:Publish"}),
    ],
)
def test_a_call_needs_the_iam_actions_aws_authorizes_it_with(
    service: str, operation: str, params: dict[str, object], expected: set[str]
) -> None:
    assert iam_actions(service, operation, params, _never_encrypted) == expected


def test_publishing_to_an_encrypted_topic_or_queue_needs_its_key() -> None:
    def encrypted(action: str, params: object) -> bool:
        return True

    key = {"kms:GenerateDataKey", "kms:Decrypt"}
    assert iam_actions("sns", "Publish", {"TopicArn": "t"}, encrypted) == {"sns:Publish", *key}
    assert iam_actions("sqs", "SendMessage", {"QueueUrl": "q"}, encrypted) == {"sqs:SendMessage", *key}


def test_the_log_holds_each_action_of_a_named_principal_once_and_the_reader_reads_each_line_once(
    tmp_path: Path,
) -> None:
    # Given a log, and a function of a template named to it
    template = tmp_path / "template.yaml"
    template.write_text("{}")
    name_principal("stack-EchoFunction-1", template, "EchoFunction")
    log = CallLog(tmp_path / "calls.jsonl")
    reader = CallLogReader(tmp_path / "calls.jsonl", template)
    model = boto3.Session(region_name="us-east-1").client("ec2").meta.service_model
    describe = model.operation_model("DescribeInstances")
    # When it calls twice, and something nobody named calls too
    log("stack-EchoFunction-1", describe, {})
    log("stack-EchoFunction-1", describe, {})
    log("somebody-else", describe, {})
    first = reader.new_entries()
    log("stack-EchoFunction-1", model.operation_model("CreateSnapshots"), {"TagSpecifications": [{}]})
    second = reader.new_entries()
    # Then each action is there once, under the logical id, and read once
    assert [(e.principal, e.action, e.operation) for e in first] == [
        ("EchoFunction", "ec2:DescribeInstances", "ec2.DescribeInstances")
    ]
    assert sorted(e.action for e in second) == ["ec2:CreateSnapshots", "ec2:CreateTags"]
    assert all(
        json.loads(line)["template"] == str(template.resolve()) for line in log.path.read_text().splitlines()
    )


def test_a_call_made_through_a_member_role_is_logged_as_that_member_roles(tmp_path: Path) -> None:
    # Given a function of template.yaml named to the log, and organization/member-roles.yaml beside it
    template = tmp_path / "template.yaml"
    template.write_text("{}")
    member_roles = tmp_path / "organization" / "member-roles.yaml"
    member_roles.parent.mkdir()
    member_roles.write_text("{}")
    name_principal("stack-QuarantineFunction-1", template, "QuarantineFunction")
    log = CallLog(tmp_path / "calls.jsonl")
    central_only = CallLogReader(tmp_path / "calls.jsonl", template)
    both = CallLogReader(tmp_path / "calls.jsonl", template, member_roles)
    model = boto3.Session(region_name="us-east-1").client("ec2").meta.service_model
    # When it calls with its own role, and with a member role's credentials (lambda_runner names that call
    # "<function name>@<member role name>"), and an unnamed function calls through the member role too
    log("stack-QuarantineFunction-1", model.operation_model("DescribeInstances"), {})
    member_call = "stack-QuarantineFunction-1@ImmutableGuard-Member-Quarantine"
    log(member_call, model.operation_model("ModifyNetworkInterfaceAttribute"), {})
    log("somebody-else@ImmutableGuard-Member-Quarantine", model.operation_model("TerminateInstances"), {})
    # Then the member role's call is that role's, a principal of member-roles.yaml named by its role name
    assert [(e.principal, e.action) for e in both.new_entries()] == [
        ("QuarantineFunction", "ec2:DescribeInstances"),
        ("ImmutableGuard-Member-Quarantine", "ec2:ModifyNetworkInterfaceAttribute"),
    ]
    assert json.loads(log.path.read_text().splitlines()[1])["template"] == str(member_roles.resolve())
    # And a reader of template.yaml alone does not count it as the function's
    assert [(e.principal, e.action) for e in central_only.new_entries()] == [
        ("QuarantineFunction", "ec2:DescribeInstances")
    ]
