"""template.yaml is the one description of the system: lint-clean, its wiring complete, its rules
delivering exactly the events we mean to see."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from immutable_guard.patterns import matches
from immutable_guard.template import event_rules, load_template

REPO = Path(__file__).resolve().parents[2]
EVENTS = REPO / "events"


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template(REPO / "template.yaml")


def resources_of_type(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def test_cfn_lint_is_clean() -> None:
    targets = [
        str(REPO / "template.yaml"),
        str(REPO / "iam-events-forwarder.yaml"),
        *map(str, sorted((REPO / "organization").glob("*.yaml"))),
        *map(str, sorted((REPO / "examples").glob("*.yaml"))),
    ]
    cfn_lint = Path(sys.executable).with_name("cfn-lint")  # installed beside the interpreter running us
    # Informational checks too: I3011 wants DeletionPolicy and UpdateReplacePolicy on stateful resources.
    run = subprocess.run(
        [str(cfn_lint), "--include-checks", "I", "--", *targets], capture_output=True, text=True, check=False
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_every_function_has_its_handler_file(template: dict[str, Any]) -> None:
    functions = resources_of_type(template, "AWS::Serverless::Function")
    assert functions, "the template declares no function"
    for name, resource in functions.items():
        code = REPO / resource["Properties"]["CodeUri"] / "app.py"
        assert code.is_file(), f"{name}: {code.relative_to(REPO)} is missing"
        assert "def handler(" in code.read_text(), f"{name}: app.py has no handler"
        assert template["Globals"]["Function"]["Runtime"] >= "python3.12"


def test_state_machine_substitutions_are_complete(template: dict[str, Any]) -> None:
    for name, resource in resources_of_type(template, "AWS::Serverless::StateMachine").items():
        properties = resource["Properties"]
        text = (REPO / properties["DefinitionUri"]).read_text()
        placeholders = set(re.findall(r"\$\{(\w+)\}", text))
        substitutions = set(properties.get("DefinitionSubstitutions", {}))
        assert placeholders == substitutions, f"{name}: unmatched {placeholders ^ substitutions}"
        definition = json.loads(re.sub(r"\$\{\w+\}", "1", text))
        assert definition["States"][definition["StartAt"]]
        for state_name, state in definition["States"].items():
            for key in ("Next", "Default"):
                if key in state:
                    assert state[key] in definition["States"], f"{state_name}.{key} -> {state[key]}"


def test_every_remediation_task_failure_reaches_the_failure_alert() -> None:
    text = (REPO / "statemachines" / "remediation.asl.json").read_text()
    states = json.loads(re.sub(r"\$\{\w+\}", "1", text))["States"]
    tasks = {n: s for n, s in states.items() if s["Type"] == "Task" and n != "AlertFailed"}
    for name, state in tasks.items():
        if name == "AlertContained":  # an alert that fails must not stop the remediation itself
            continue
        catch = state.get("Catch", [])
        assert catch and catch[0]["ErrorEquals"] == ["States.ALL"], f"{name} has no catch-all"
        handler = states[catch[0]["Next"]]
        assert handler.get("Next") == "AlertFailed", f"{name}'s failure does not alert"
    assert states["AlertFailed"]["Next"] == "RemediationFailed"


def test_nuke_is_reachable_only_after_evidence_and_a_healthy_replacement() -> None:
    text = (REPO / "statemachines" / "remediation.asl.json").read_text()
    states = json.loads(re.sub(r"\$\{\w+\}", "1", text))["States"]
    predecessors = [n for n, s in states.items() if s.get("Next") == "Nuke" or _choice_targets(s, "Nuke")]
    assert predecessors == ["ReplacementHealthy?"]
    choice = states["ReplacementHealthy?"]["Choices"][0]
    assert choice == {"Variable": "$.replacement.result.healthy", "BooleanEquals": True, "Next": "Nuke"}
    # and the replacement is started only once the manifest is written
    assert states["WriteManifest"]["Next"] == "StartReplacement"


def test_remediation_custody_wiring() -> None:
    """Organisation mode: a member account's snapshots go through custody in the security account before
    the manifest (and so before replacement and nuke); a custody failure alerts and stops there."""
    text = (REPO / "statemachines" / "remediation.asl.json").read_text()
    states = json.loads(re.sub(r"\$\{\w+\}", "1", text))["States"]
    # Given completed snapshots the Evidence step marked for custody, the first matching choice is custody
    first, second = states["SnapshotsCompleted?"]["Choices"]
    assert first["Next"] == "TakeIntoCustody"
    assert {"Variable": "$.evidence.result.custody", "IsPresent": True} in first["And"]
    assert second["Next"] == "WriteManifest" and "custody" not in json.dumps(second)
    # And the manifest follows custody only once the copies are complete and locked
    assert states["CustodyComplete?"]["Choices"] == [
        {"Variable": "$.evidence.result.custody_complete", "BooleanEquals": True, "Next": "WriteManifest"}
    ]
    assert states["CustodyComplete?"]["Default"] == "WaitForCustody"
    # And a failed custody step reaches the failure alert, naming the step (the instance stays quarantined)
    handler = states[states["TakeIntoCustody"]["Catch"][0]["Next"]]
    assert handler["Parameters"] == {"state": "TakeIntoCustody"} and handler["Next"] == "AlertFailed"
    payload = states["TakeIntoCustody"]["Parameters"]["Payload"]
    assert payload["action"] == "custody" and payload["polls.$"] == "$.evidence.result.custody_polls"


def _choice_targets(state: dict[str, Any], target: str) -> bool:
    return any(c.get("Next") == target for c in state.get("Choices", []))


def test_cloudtrail_rules_never_match_failed_calls(template: dict[str, Any]) -> None:
    for rule in event_rules(template):
        if rule.pattern.get("detail-type") == ["AWS API Call via CloudTrail"]:
            assert rule.pattern["detail"]["errorCode"] == [{"exists": False}], rule.logical_id


def test_event_rules_keep_failed_deliveries(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    detect_rules = [r.logical_id for r in event_rules(template) if r.function_logical_id == "DetectFunction"]
    assert detect_rules
    for name in detect_rules:
        # Both targets of the rule (DetectQueue in organisation mode, DetectFunction otherwise)
        (target,) = resources[name]["Properties"]["Targets"]
        _, queue, function = target["Fn::If"]
        assert queue["DeadLetterConfig"] == function["DeadLetterConfig"], name
        assert function["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": ["DetectDeadLetterQueue", "Arn"]}}, name
    assert "DeadLetterQueue" in resources["DetectFunction"]["Properties"]


DETECTION_SAMPLES = sorted(p.name for p in EVENTS.glob("cloudtrail-*.json")) + sorted(
    p.name for p in EVENTS.glob("config-*.json")
)


@pytest.mark.parametrize("sample", DETECTION_SAMPLES)
def test_every_detection_sample_is_delivered_by_exactly_one_rule(
    template: dict[str, Any], sample: str
) -> None:
    event = json.loads((EVENTS / sample).read_text())
    matched = [rule.logical_id for rule in event_rules(template) if matches(rule.pattern, event)]
    assert len(matched) == 1, f"{sample}: {matched}"


def test_a_failed_call_is_delivered_by_no_rule(template: dict[str, Any]) -> None:
    event = json.loads((EVENTS / "benign-failed-call.json").read_text())
    assert [r.logical_id for r in event_rules(template) if matches(r.pattern, event)] == []


def test_a_custom_event_posing_as_cloudtrail_is_not_delivered(template: dict[str, Any]) -> None:
    # PutEvents cannot use an "aws." source, so a forged event carries another one.
    event = json.loads((EVENTS / "cloudtrail-authorize-sg-ingress-ssh-world.json").read_text())
    event["source"] = "custom.attacker"
    assert [r.logical_id for r in event_rules(template) if matches(r.pattern, event)] == []


def test_every_store_is_encrypted_and_the_evidence_bucket_locked(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    assert resources["AlertTopic"]["Properties"]["KmsMasterKeyId"]
    assert resources["DetectDeadLetterQueue"]["Properties"]["KmsMasterKeyId"]
    assert resources["IncidentLedger"]["Properties"]["SSESpecification"]["SSEEnabled"] is True
    ledger = resources["IncidentLedger"]["Properties"]
    assert ledger["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    assert ledger["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    bucket = resources["EvidenceBucket"]["Properties"]
    assert bucket["ObjectLockEnabled"] is True
    assert bucket["ObjectLockConfiguration"]["ObjectLockEnabled"] == "Enabled"
    assert bucket["VersioningConfiguration"]["Status"] == "Enabled"
    assert all(bucket["PublicAccessBlockConfiguration"].values())


def test_one_lock_mode_holds_manifests_and_custody_copies(template: dict[str, Any]) -> None:
    # Given the EvidenceLockMode parameter (governance by default: a lock a person can still lift)
    assert template["Parameters"]["EvidenceLockMode"]["Default"] == "governance"
    assert template["Conditions"]["EvidenceLockedForCompliance"] == {
        "Fn::Equals": [{"Ref": "EvidenceLockMode"}, "compliance"]
    }
    # Then the bucket's default retention and the snapshot locks in the security account follow it
    retention = template["Resources"]["EvidenceBucket"]["Properties"]["ObjectLockConfiguration"]["Rule"]
    assert retention["DefaultRetention"]["Mode"] == {
        "Fn::If": ["EvidenceLockedForCompliance", "COMPLIANCE", "GOVERNANCE"]
    }
    environment = template["Resources"]["EvidenceFunction"]["Properties"]["Environment"]["Variables"]
    assert environment["CUSTODY_LOCK_MODE"] == {"Ref": "EvidenceLockMode"}


def test_no_policy_grants_a_wildcard_action(template: dict[str, Any]) -> None:
    for name, resource in template["Resources"].items():
        for policy in resource.get("Properties", {}).get("Policies", []):
            # SAM functions' Policies are documents; a role's inline policies hold theirs in PolicyDocument.
            document = policy.get("PolicyDocument", policy) if isinstance(policy, dict) else {}
            statements = document.get("Statement", [])
            # A statement granted only under a condition (!If [Cond, statement, !Ref AWS::NoValue]) counts.
            statements = [
                branch
                for statement in statements
                for branch in (statement["Fn::If"][1:] if "Fn::If" in statement else [statement])
                if "Ref" not in branch
            ]
            for statement in statements:
                actions = (
                    statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
                )
                assert not any(a == "*" or a.endswith(":*") for a in actions), f"{name}: {actions}"


def test_detect_knows_every_remediation_role_as_our_own(template: dict[str, Any]) -> None:
    own = template["Resources"]["DetectFunction"]["Properties"]["Environment"]["Variables"]["OWN_ROLE_ARNS"]
    roles = {item["Fn::GetAtt"][0] for item in own["Fn::Join"][1]}
    # Every function that changes EC2: the remediation workflow's steps, release, and Detect (its first
    # response moves interfaces since issue 15).
    substitutions = template["Resources"]["RemediationStateMachine"]["Properties"]["DefinitionSubstitutions"]
    steps = {v["Fn::GetAtt"][0] for v in substitutions.values() if isinstance(v, dict) and "Fn::GetAtt" in v}
    assert roles == {f"{f}Role" for f in steps | {"ReleaseFunction", "DetectFunction"}}
