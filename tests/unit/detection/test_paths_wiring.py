"""The guard's own wiring: disabling, deleting or retargeting its EventBridge rules, changing or
throttling its functions, narrowing the Config recorder or the trail is detection_disabled (a critical
account alert). The same calls on someone else's rule or function, a harmless setting, and the guard's
own stack updates through CloudFormation open nothing."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import boto3
import pytest
from detection_samples import SAMPLE_GUARD_FUNCTION, SAMPLE_GUARD_RULE, SAMPLE_GUARD_STACK, load_sample
from immutable_guard.detection import OfflineInstanceDirectory, Policy, judge_event
from immutable_guard.detection.paths.wiring import function_name, is_guard_resource
from immutable_guard.detection.policy import Judgement
from immutable_guard.local.deploy import Deployer
from immutable_guard.model import Decision, Kind, Severity
from immutable_guard.settings import DetectSettings, GuardIdentity
from immutable_guard.template import load_template

REPO = Path(__file__).resolve().parents[3]


def judged(raw: dict[str, Any]) -> Judgement:
    return judge_event(raw, Policy(), OfflineInstanceDirectory())


def with_request(name: str, request: dict[str, Any], **detail: Any) -> dict[str, Any]:
    raw = load_sample(name)
    raw["detail"]["requestParameters"] = request
    raw["detail"].update(detail)
    return raw


WIRING_SAMPLES = [
    # EventBridge API reference: DisableRule / RemoveTargets / PutTargets request fields (Name, Rule,
    # Ids, Targets), recorded by CloudTrail in their JSON names.
    ("cloudtrail-disable-rule.json", Severity.CRITICAL),
    ("cloudtrail-remove-targets.json", Severity.CRITICAL),
    ("cloudtrail-put-targets.json", Severity.CRITICAL),
    # Lambda developer guide, "Logging AWS Lambda API calls using AWS CloudTrail": event names carry the
    # API version (UpdateFunctionConfiguration20150331v2, PutFunctionConcurrency20171031, ...).
    ("cloudtrail-update-function-configuration.json", Severity.CRITICAL),
    ("cloudtrail-put-function-concurrency.json", Severity.CRITICAL),
    # Config API PutConfigurationRecorder (configurationRecorder.recordingGroup, recordingMode) and
    # CloudTrail API UpdateTrail (isMultiRegionTrail, includeGlobalServiceEvents).
    ("cloudtrail-put-configuration-recorder.json", Severity.CRITICAL),
    ("cloudtrail-update-trail.json", Severity.CRITICAL),
    # SNS API Unsubscribe (SubscriptionArn: the topic ARN followed by the subscription id).
    ("cloudtrail-sns-unsubscribe.json", Severity.HIGH),
]


@pytest.mark.parametrize(("name", "severity"), WIRING_SAMPLES)
def test_a_change_to_the_guards_wiring_is_a_critical_account_alert(name: str, severity: Severity) -> None:
    # Given a change to one of the guard's rules, functions or sensors, by a person
    judgement = judged(load_sample(name))
    # Then it is detection_disabled, alerted, never remediated
    assert (judgement.finding.kind, judgement.finding.severity) == (Kind.DETECTION_DISABLED, severity)
    assert (judgement.decision, judgement.reason) == (Decision.ALERT, "account_level_alert_only")


def test_a_rule_that_is_not_the_guards_is_ignored() -> None:
    judgement = judged(load_sample("benign-disable-rule-not-the-guards.json"))
    assert (judgement.decision, judgement.reason) == (Decision.IGNORE, "not_guard_wiring")
    assert judgement.finding.severity is Severity.LOW


@pytest.mark.parametrize("event_name", ["DeleteRule", "PutRule", "DisableRule"])
def test_every_way_of_switching_off_a_guard_rule_is_recognised(event_name: str) -> None:
    raw = with_request(
        "cloudtrail-disable-rule.json",
        {"name": SAMPLE_GUARD_RULE, "state": "DISABLED", "eventPattern": '{"source": ["nothing"]}'},
        eventName=event_name,
    )
    judgement = judged(raw)
    assert judgement.decision is Decision.ALERT
    assert judgement.finding.resource_ids == (SAMPLE_GUARD_RULE,)


def test_a_rule_of_the_same_name_on_another_bus_is_not_the_guards() -> None:
    raw = with_request(
        "cloudtrail-disable-rule.json", {"name": SAMPLE_GUARD_RULE, "eventBusName": "custom-bus"}
    )
    assert judged(raw).reason == "not_guard_wiring"


def test_the_guards_own_stack_update_of_its_function_is_exempt_for_the_allow_listed_deployer() -> None:
    raw = load_sample("cloudtrail-update-guard-function-code-via-cloudformation.json")
    deployer = raw["detail"]["userIdentity"]["sessionContext"]["sessionIssuer"]["arn"]
    judgement = judge_event(raw, Policy(allowed_principal_arns=(deployer,)), OfflineInstanceDirectory())
    assert (judgement.decision, judgement.reason) == (Decision.IGNORE, "allow_listed_principal")


def test_a_stack_update_of_the_guards_function_by_anyone_else_is_alerted() -> None:
    # CloudTrail does not name the stack CloudFormation acted for: an attacker's stack cannot be told
    # from the guard's own, so new code for the guard is alerted unless the deployer is allow-listed.
    judgement = judged(load_sample("cloudtrail-update-guard-function-code-via-cloudformation.json"))
    assert judgement.decision is Decision.ALERT
    assert "CloudFormation" in judgement.detail


def test_new_code_for_the_guards_function_by_a_person_is_critical() -> None:
    raw = load_sample("cloudtrail-update-guard-function-code-via-cloudformation.json")
    base = load_sample("cloudtrail-update-function-configuration.json")["detail"]
    for field in ("userIdentity", "sourceIPAddress", "userAgent"):
        raw["detail"][field] = copy.deepcopy(base[field])
    judgement = judged(raw)
    assert judgement.decision is Decision.ALERT
    assert judgement.finding.severity is Severity.CRITICAL


@pytest.mark.parametrize("event_name", ["DeleteFunction20150331", "RemovePermission20150331v2"])
def test_deleting_the_guards_function_or_its_invoke_permission_is_critical(event_name: str) -> None:
    raw = with_request(
        "cloudtrail-put-function-concurrency.json",
        {"functionName": SAMPLE_GUARD_FUNCTION, "statementId": "DetectFunctionShellOpenedPermission"},
        eventName=event_name,
        responseElements=None,
    )
    judgement = judged(raw)
    assert judgement.decision is Decision.ALERT
    assert judgement.finding.severity is Severity.CRITICAL


def test_a_function_that_is_not_the_guards_is_ignored() -> None:
    raw = with_request(
        "cloudtrail-update-function-configuration.json", {"functionName": "orders-api"}, responseElements=None
    )
    assert judged(raw).reason == "not_guard_wiring"


def test_throttling_the_guards_function_is_high_and_switching_it_off_critical() -> None:
    throttled = with_request(
        "cloudtrail-put-function-concurrency.json",
        {"functionName": SAMPLE_GUARD_FUNCTION, "reservedConcurrentExecutions": 1},
    )
    assert judged(throttled).finding.severity is Severity.HIGH
    off = judged(load_sample("cloudtrail-put-function-concurrency.json")).finding
    assert (off.severity, off.evidence["reserved_concurrency"]) == (Severity.CRITICAL, 0)


@pytest.mark.parametrize(
    "reference",
    [
        SAMPLE_GUARD_FUNCTION,
        f"{SAMPLE_GUARD_FUNCTION}:live",
        f"arn:aws:lambda:us-east-1:111122223333:function:{SAMPLE_GUARD_FUNCTION}",
        f"arn:aws:lambda:us-east-1:111122223333:function:{SAMPLE_GUARD_FUNCTION}:7",
        f"111122223333:function:{SAMPLE_GUARD_FUNCTION}",
    ],
)
def test_every_way_of_naming_a_function_is_read(reference: str) -> None:
    # Lambda accepts a name, a name with a qualifier, a full ARN or a partial ARN.
    assert function_name(reference) == SAMPLE_GUARD_FUNCTION


def test_the_guards_rules_are_recognised_as_the_local_runtime_names_them() -> None:
    # Given the local deployer's names for the SAM-generated rule and the function
    deployer = Deployer(boto3.Session(region_name="us-east-1"), REPO / "template.yaml")
    identity = GuardIdentity(guard_stack_name=deployer.stack_name)
    # Then both are the guard's, and a similarly named stack's are not
    assert is_guard_resource(deployer.physical_name("DetectFunctionShellOpened"), identity)
    assert is_guard_resource(deployer.physical_name("DetectFunction"), identity)
    assert not is_guard_resource("immutable-guardian-DetectFunction-1A2B", identity)


def test_another_stack_name_makes_the_sample_rule_not_the_guards(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GUARD_STACK_NAME", "prod-guard")
    assert judged(load_sample("cloudtrail-disable-rule.json")).reason == "not_guard_wiring"
    renamed = with_request(
        "cloudtrail-disable-rule.json", {"name": "prod-guard-DetectFunctionKeyPairAdded-9Z8Y"}
    )
    assert judged(renamed).decision is Decision.ALERT


# ---------------------------------------------------------------- Config recorder and trail


def _recorder(group: dict[str, Any] | None, frequency: str = "CONTINUOUS") -> dict[str, Any]:
    recorder: dict[str, Any] = {"name": "default", "recordingMode": {"recordingFrequency": frequency}}
    if group is not None:
        recorder["recordingGroup"] = group
    return with_request("cloudtrail-put-configuration-recorder.json", {"configurationRecorder": recorder})


def test_a_recorder_that_records_everything_is_not_blinding() -> None:
    assert judged(_recorder({"allSupported": True, "includeGlobalResourceTypes": True})).reason == (
        "not_guard_wiring"
    )
    assert judged(_recorder(None)).reason == "not_guard_wiring"


def test_excluding_instances_from_the_recorder_is_critical() -> None:
    judgement = judged(
        _recorder(
            {
                "allSupported": False,
                "exclusionByResourceTypes": {"resourceTypes": ["AWS::EC2::Instance"]},
                "recordingStrategy": {"useOnly": "EXCLUSION_BY_RESOURCE_TYPES"},
            }
        )
    )
    assert judgement.finding.severity is Severity.CRITICAL
    assert judgement.finding.evidence["unrecorded_types"] == ["AWS::EC2::Instance"]


def test_excluding_types_the_guard_does_not_watch_is_not_blinding() -> None:
    group = {
        "allSupported": False,
        "exclusionByResourceTypes": {"resourceTypes": ["AWS::S3::Bucket"]},
        "recordingStrategy": {"useOnly": "EXCLUSION_BY_RESOURCE_TYPES"},
    }
    assert judged(_recorder(group)).reason == "not_guard_wiring"


def test_recording_once_a_day_is_high() -> None:
    judgement = judged(_recorder({"allSupported": True}, frequency="DAILY"))
    assert (judgement.decision, judgement.finding.severity) == (Decision.ALERT, Severity.HIGH)


@pytest.mark.parametrize("setting", ["isMultiRegionTrail", "includeGlobalServiceEvents"])
def test_narrowing_the_trail_is_critical(setting: str) -> None:
    judgement = judged(with_request("cloudtrail-update-trail.json", {"name": "org-trail", setting: "false"}))
    assert judgement.finding.severity is Severity.CRITICAL
    assert judgement.finding.evidence["switched_off"] == [setting]


def test_moving_the_trails_bucket_does_not_blind_the_guard() -> None:
    raw = with_request("cloudtrail-update-trail.json", {"name": "org-trail", "s3BucketName": "new-bucket"})
    assert judged(raw).reason == "not_guard_wiring"


def test_a_failed_wiring_change_is_ignored() -> None:
    raw = load_sample("cloudtrail-disable-rule.json")
    raw["detail"]["errorCode"] = "AccessDeniedException"
    assert judged(raw).reason == "failed_call"


# ---------------------------------------------------------------- the alert topic


def test_deleting_the_alert_topic_is_critical_and_filtering_a_subscription_high() -> None:
    topic = "arn:aws:sns:us-east-1:111122223333:immutable-guard-AlertTopic-1A2B3C4D5E6F"
    deleted = judged(
        with_request("cloudtrail-sns-unsubscribe.json", {"topicArn": topic}, eventName="DeleteTopic")
    )
    assert (deleted.decision, deleted.finding.severity) == (Decision.ALERT, Severity.CRITICAL)
    filtered = judged(
        with_request(
            "cloudtrail-sns-unsubscribe.json",
            {
                "subscriptionArn": f"{topic}:6b0d3c2a-1f4e-4d5c-9b8a-7f6e5d4c3b2a",
                "attributeName": "FilterPolicy",
                "attributeValue": '{"kind": ["nothing"]}',
            },
            eventName="SetSubscriptionAttributes",
        )
    )
    assert (filtered.decision, filtered.finding.evidence["attribute"]) == (Decision.ALERT, "FilterPolicy")


def test_another_topic_is_not_the_guards() -> None:
    raw = with_request(
        "cloudtrail-sns-unsubscribe.json",
        {"subscriptionArn": "arn:aws:sns:us-east-1:111122223333:billing-alerts:6b0d3c2a"},
    )
    assert judged(raw).reason == "not_guard_wiring"


# ---------------------------------------------------------------- the guard's identity


def test_detect_receives_its_stack_name_and_inventory_association_from_the_template() -> None:
    variables = load_template(REPO / "template.yaml")["Resources"]["DetectFunction"]["Properties"][
        "Environment"
    ]["Variables"]
    assert variables["GUARD_STACK_NAME"] == {"Ref": "AWS::StackName"}
    assert "InventoryAssociation" in str(variables["GUARD_INVENTORY_ASSOCIATION_ID"])


def test_the_detect_settings_read_the_guards_identity() -> None:
    env = {
        "LEDGER_TABLE": "t",
        "ALERT_TOPIC_ARN": "arn:aws:sns:us-east-1:111122223333:a",
        "MODE": "enforce",
        "SCOPE_TAG_KEY": "immutable",
        "SCOPE_TAG_VALUE": "true",
        "MAX_INCIDENTS_PER_HOUR": "5",
        "POST_EVIDENCE_ACTION": "terminate",
        "REMEDIATION_STATE_MACHINE_ARN": "arn:aws:states:us-east-1:111122223333:stateMachine:r",
        "DEAD_LETTER_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/111122223333/q",
        "GUARD_STACK_NAME": "prod-guard",
        "GUARD_INVENTORY_ASSOCIATION_ID": "",
    }
    settings = DetectSettings.from_env(env)
    assert (settings.guard_stack_name, settings.guard_inventory_association_id) == ("prod-guard", None)
    assert GuardIdentity.from_env({}).guard_stack_name == SAMPLE_GUARD_STACK
