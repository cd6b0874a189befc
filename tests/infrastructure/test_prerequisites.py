"""What detection relies on is in template.yaml: a trail, a Config recorder and SSM Inventory (each
optional by its parameter), a dashboard of the metrics our code emits, alarms to the alert topic, and
X-Ray tracing."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from immutable_guard.local.intrinsics import Resolver
from immutable_guard.template import event_rules, load_template, parameter_defaults

REPO = Path(__file__).resolve().parents[2]
SECTION = (
    "  # ---------------------------------------------------------------- prerequisites and observability"
)

PREREQUISITES = {
    "TrailWanted": ("CreateTrail", {"TrailBucket", "TrailBucketPolicy", "TrailKey", "Trail"}),
    "ConfigRecorderWanted": (
        "CreateConfigRecorder",
        {
            "ConfigBucket",
            "ConfigBucketPolicy",
            "ConfigRecorderRole",
            "ConfigRecorder",
            "ConfigDeliveryChannel",
        },
    ),
    "InventoryAssociationWanted": ("CreateInventoryAssociation", {"InventoryAssociation"}),
}


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template(REPO / "template.yaml")


@pytest.fixture(scope="module")
def resources(template: dict[str, Any]) -> dict[str, Any]:
    return dict(template["Resources"])


def _conditions(template: dict[str, Any], **overrides: str) -> Resolver:
    values = {**parameter_defaults(template), **overrides}
    return Resolver(parameters=values, pseudo={}, conditions=template["Conditions"])


# ---------------------------------------------------------------------------- optional prerequisites
@pytest.mark.parametrize("condition", sorted(PREREQUISITES))
def test_each_prerequisite_is_created_by_default_and_skipped_when_the_account_has_one(
    template: dict[str, Any], resources: dict[str, Any], condition: str
) -> None:
    parameter, logical_ids = PREREQUISITES[condition]
    # Given the parameter that says whether the account already has it
    spec = template["Parameters"][parameter]
    assert spec["AllowedValues"] == ["true", "false"]
    # Then every resource of that prerequisite follows its condition
    assert {k for k, r in resources.items() if r.get("Condition") == condition} == logical_ids
    # And it is created with the defaults, and not when the operator says one exists
    assert _conditions(template).condition(condition) is True
    assert _conditions(template, **{parameter: "false"}).condition(condition) is False
    # And switching one off leaves the others on
    others = set(PREREQUISITES) - {condition}
    assert all(_conditions(template, **{parameter: "false"}).condition(other) for other in others)


def test_the_recorder_parameter_says_a_region_allows_one_recorder(template: dict[str, Any]) -> None:
    description = template["Parameters"]["CreateConfigRecorder"]["Description"]
    assert "only ONE recorder" in description
    assert "AWS::SSM::ManagedInstanceInventory" in description


def test_new_parameters_come_after_the_existing_ones(template: dict[str, Any]) -> None:
    names = list(template["Parameters"])
    assert names.index("MaxPolls") < min(
        names.index(p) for p in ("CreateTrail", "CreateConfigRecorder", "CreateInventoryAssociation")
    )


def test_the_trail_is_multi_region_validated_and_logs_write_management_events(
    resources: dict[str, Any],
) -> None:
    trail = resources["Trail"]["Properties"]
    assert trail["IsLogging"] is True
    assert trail["IsMultiRegionTrail"] is True
    assert trail["EnableLogFileValidation"] is True
    assert trail["IncludeGlobalServiceEvents"] is True
    (selector,) = trail["EventSelectors"]
    assert selector["IncludeManagementEvents"] is True
    assert selector["ReadWriteType"] in ("All", "WriteOnly")
    assert resources["Trail"]["DependsOn"] == "TrailBucketPolicy"


@pytest.mark.parametrize("bucket", ["TrailBucket", "ConfigBucket"])
def test_the_log_buckets_are_encrypted_private_and_kept(resources: dict[str, Any], bucket: str) -> None:
    resource = resources[bucket]
    properties = resource["Properties"]
    assert properties["BucketEncryption"]["ServerSideEncryptionConfiguration"][0][
        "ServerSideEncryptionByDefault"
    ]
    assert set(properties["PublicAccessBlockConfiguration"].values()) == {True}
    assert len(properties["PublicAccessBlockConfiguration"]) == 4
    assert properties["VersioningConfiguration"]["Status"] == "Enabled"
    assert resource["DeletionPolicy"] == "Retain"


def test_the_trail_bucket_policy_lets_only_this_trail_write(resources: dict[str, Any]) -> None:
    statements = resources["TrailBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    writes = [s for s in statements if s["Action"] == "s3:PutObject"]
    assert [s["Principal"] for s in writes] == [{"Service": "cloudtrail.amazonaws.com"}]
    condition = writes[0]["Condition"]["StringEquals"]
    assert condition["s3:x-amz-acl"] == "bucket-owner-full-control"
    # The trail's ARN is spelled out with the trail's own name
    assert condition["aws:SourceArn"]["Fn::Sub"].endswith("trail/${AWS::StackName}-trail")
    assert resources["Trail"]["Properties"]["TrailName"] == {"Fn::Sub": "${AWS::StackName}-trail"}
    assert any(s["Effect"] == "Deny" and s["Sid"] == "DenyInsecureTransport" for s in statements)


def test_the_trail_encrypts_with_a_rotated_key_cloudtrail_may_use_for_this_trail_only(
    resources: dict[str, Any],
) -> None:
    assert resources["Trail"]["Properties"]["KMSKeyId"] == {"Ref": "TrailKey"}
    key = resources["TrailKey"]["Properties"]
    assert key["EnableKeyRotation"] is True
    statements = key["KeyPolicy"]["Statement"]
    to_cloudtrail = [s for s in statements if s["Principal"] == {"Service": "cloudtrail.amazonaws.com"}]
    assert sorted(str(s["Action"]) for s in to_cloudtrail) == ["kms:DescribeKey", "kms:GenerateDataKey*"]
    encrypt = next(s for s in to_cloudtrail if s["Action"] == "kms:GenerateDataKey*")
    assert encrypt["Condition"]["StringEquals"]["aws:SourceArn"]["Fn::Sub"].endswith(
        "trail/${AWS::StackName}-trail"
    )
    # No one else is named in the key policy: reading the logs is granted in IAM by the account
    others = [s["Principal"] for s in statements if s not in to_cloudtrail]
    assert others == [{"AWS": {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"}}]


def test_the_recorder_records_every_type_the_config_rules_listen_to(
    template: dict[str, Any], resources: dict[str, Any]
) -> None:
    listened: set[str] = set()
    for rule in event_rules(template):
        detail = rule.pattern.get("detail", {})
        for key in ("configurationItem", "configurationItemSummary"):
            listened.update(detail.get(key, {}).get("resourceType", []))
    group = resources["ConfigRecorder"]["Properties"]["RecordingGroup"]
    assert listened >= {"AWS::EC2::SecurityGroup", "AWS::EC2::Instance", "AWS::SSM::ManagedInstanceInventory"}
    assert set(group["ResourceTypes"]) == listened
    assert resources["ConfigDeliveryChannel"]["Properties"]["S3BucketName"] == {"Ref": "ConfigBucket"}


def test_inventory_collects_the_watched_files_on_every_managed_instance(
    template: dict[str, Any], resources: dict[str, Any]
) -> None:
    association = resources["InventoryAssociation"]["Properties"]
    assert association["Name"] == "AWS-GatherSoftwareInventory"
    # Not by the scope tag: stripping the tag must not also stop the inventory that sees file changes
    assert association["Targets"] == [{"Key": "InstanceIds", "Values": ["*"]}]
    assert association["Parameters"]["files"] == [{"Ref": "WatchedFilePaths"}]
    # The default is the JSON that AWS-GatherSoftwareInventory's "files" parameter takes
    watched = json.loads(parameter_defaults(template)["WatchedFilePaths"])
    assert all(set(entry) == {"Path", "Pattern", "Recursive"} for entry in watched)
    patterns = {(entry["Path"], pattern) for entry in watched for pattern in entry["Pattern"]}
    for expected in (
        ("/etc/ssh", "sshd_config"),
        ("/etc", "passwd"),
        ("/etc", "sudoers"),
        ("/etc/cron.d", "*"),
        ("/home", "authorized_keys*"),
        ("/root/.ssh", "authorized_keys*"),
    ):
        assert expected in patterns


# ---------------------------------------------------------------------------- observability
def _dashboard_body(resources: dict[str, Any]) -> str:
    """The dashboard's JSON text (``!Sub`` of a string, or of a string and its variables)."""
    sub = resources["OperationsDashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    return str(sub if isinstance(sub, str) else sub[0])


def _dashboard(resources: dict[str, Any]) -> dict[str, Any]:
    body = _dashboard_body(resources)
    document: dict[str, Any] = json.loads(re.sub(r"\$\{[^}]+\}", "X", body))
    return document


def _emitted_metric_names() -> set[str]:
    sources = [*(REPO / "layers" / "guard").rglob("*.py"), *(REPO / "functions").rglob("app.py")]
    names: set[str] = set()
    for path in sources:
        text = path.read_text()
        if "add_metric(" in text or "count_by_reason(" in text:
            # Names are literals, sometimes picked from a dict or a tuple: any CamelCase string counts.
            names.update(re.findall(r'"([A-Z][a-z]+(?:[A-Z][a-z]+)+)"', text))
    return names


def test_the_dashboard_shows_the_metrics_the_issue_names(resources: dict[str, Any]) -> None:
    text = json.dumps(_dashboard(resources))
    for metric in (
        "EventsReceived",
        "EventsRejected",
        "IncidentsOpened",
        "TimeToContain",
        "TimeToReplace",
        "RemediationFailures",
        "CanaryRollbacks",
        "ExecutionsFailed",
        "ApproximateNumberOfMessagesVisible",
    ):
        assert metric in text, metric
    assert "{ImmutableGuard,reason,service}" in text  # rejected and ignored events, by reason


def test_every_custom_metric_on_the_dashboard_is_emitted_by_our_code(
    template: dict[str, Any], resources: dict[str, Any]
) -> None:
    variables = template["Globals"]["Function"]["Environment"]["Variables"]
    namespace, service = variables["POWERTOOLS_METRICS_NAMESPACE"], variables["POWERTOOLS_SERVICE_NAME"]
    shown: set[str] = set()
    for widget in _dashboard(resources)["widgets"]:
        previous: list[Any] = []
        for row in widget.get("properties", {}).get("metrics", []):
            plain = [item for item in row if not isinstance(item, dict)]
            if plain and plain[0] == "...":
                continue
            row_values = [p if p != "." else previous[i] for i, p in enumerate(plain)]
            previous = row_values
            if row_values and row_values[0] == namespace:
                assert row_values[2:4] == ["service", service], row
                shown.add(row_values[1])
    assert shown
    assert shown <= _emitted_metric_names(), shown - _emitted_metric_names()


def _referenced(value: dict[str, Any]) -> str:
    return str(value["Ref"]) if "Ref" in value else str(value["Fn::GetAtt"][0])


def test_alarms_reach_the_alert_topic_on_every_failure_the_issue_names(resources: dict[str, Any]) -> None:
    alarms = {k: r["Properties"] for k, r in resources.items() if r["Type"] == "AWS::CloudWatch::Alarm"}
    watched = {
        (p["Namespace"], p["MetricName"], _referenced(p["Dimensions"][0]["Value"])) for p in alarms.values()
    }
    assert ("AWS/States", "ExecutionsFailed", "RemediationStateMachine") in watched
    assert ("AWS/States", "ExecutionsFailed", "CanaryStateMachine") in watched
    assert ("AWS/Lambda", "Errors", "DetectFunction") in watched
    assert ("AWS/SQS", "ApproximateNumberOfMessagesVisible", "DetectDeadLetterQueue") in watched
    assert all(p["AlarmActions"] == [{"Ref": "AlertTopic"}] for p in alarms.values())
    assert len(watched) == len(alarms), "two alarms watch the same metric"


def test_the_dashboard_lists_every_alarm(resources: dict[str, Any]) -> None:
    # The body and its variables (organisation mode's alarm is one, absent in single-account mode)
    text = json.dumps(resources["OperationsDashboard"]["Properties"]["DashboardBody"])
    alarms = {k for k, r in resources.items() if r["Type"] == "AWS::CloudWatch::Alarm"}
    assert {m for m in re.findall(r"\$\{(\w+)\.Arn\}", text)} == alarms


def test_functions_and_state_machines_are_traced(template: dict[str, Any], resources: dict[str, Any]) -> None:
    assert template["Globals"]["Function"]["Tracing"] == "Active"
    machines = {k: r for k, r in resources.items() if r["Type"] == "AWS::Serverless::StateMachine"}
    assert machines
    for name, machine in machines.items():
        assert machine["Properties"]["Tracing"] == {"Enabled": True}, name
    functions = [r for r in resources.values() if r["Type"] == "AWS::Serverless::Function"]
    assert not any(f["Properties"].get("Tracing") == "PassThrough" for f in functions)


def test_prerequisites_and_observability_close_the_resources_section() -> None:
    text = (REPO / "template.yaml").read_text()
    section = text.index(SECTION)
    for logical_id in (
        "Trail",
        "ConfigRecorder",
        "InventoryAssociation",
        "OperationsDashboard",
        "CanaryRolledBackAlarm",
    ):
        assert text.index(f"\n  {logical_id}:\n") > section
    assert text.index("\nOutputs:") > section
