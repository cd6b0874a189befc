"""Scope that cannot be stripped: tag changes (CreateTags, DeleteTags) are no mutation, unless they remove
the scope tag of an immutable server or touch the guard's own `immutable-guard:*` tags; a server stays in
scope as of the change; a quarantine marker counts only while its incident is open."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from detection_samples import SAMPLE_INSTANCE, SAMPLE_OTHER_INSTANCE, World, load_sample
from immutable_guard.detection import (
    Ec2InstanceDirectory,
    InstanceInfo,
    OfflineInstanceDirectory,
    Policy,
    judge,
    judge_event,
    normalise,
    parse_event,
)
from immutable_guard.detection.memory import NoMemory
from immutable_guard.detection.paths.tags import EVERY_USER_TAG, tag_changes_of
from immutable_guard.detection.readers import TAG_CHANGES_EVIDENCE_KEY, TAGS_ONLY_EVIDENCE_KEY
from immutable_guard.detection.scope import ScopeRule
from immutable_guard.local.trail import request_parameters
from immutable_guard.model import Decision, Finding, Kind, Severity, Source

PIPELINE = "arn:aws:iam::111122223333:role/deploy-pipeline"
GUARD_ROLE = "arn:aws:iam::111122223333:role/immutable-guard-QuarantineFunctionRole-1A2B3C4D5E6F"
POLICY = Policy(allowed_principal_arns=(PIPELINE,), own_role_arns=(GUARD_ROLE,))

# After the attacker's DeleteTags, the server no longer carries the scope tag.
STRIPPED = InstanceInfo(instance_id=SAMPLE_INSTANCE, state="running", tags={"Name": "web-1"})
IMMUTABLE = InstanceInfo(
    instance_id=SAMPLE_INSTANCE, state="running", tags={"Name": "web-1", "immutable": "true"}
)
MUTABLE = InstanceInfo(instance_id=SAMPLE_OTHER_INSTANCE, state="running", tags={"Name": "scratch"})


class Memory(NoMemory):
    """What the ledger would remember: instances seen with a scope tag, open incidents (no echoes)."""

    def __init__(self, in_scope: dict[str, str] | None = None, incidents: dict[str, str] | None = None):
        self.in_scope = in_scope or {}
        self.incidents = incidents or {}
        self.scope_reads: list[str] = []

    def open_incident_for(self, instance_id: str) -> str | None:
        return self.incidents.get(instance_id)

    def was_in_scope(self, instance_id: str, scope_tag: str) -> bool:
        self.scope_reads.append(instance_id)
        return self.in_scope.get(instance_id) == scope_tag


SEEN = Memory(in_scope={SAMPLE_INSTANCE: "immutable=true"})


def event(name: str, **detail_changes: Any) -> dict[str, Any]:
    raw = load_sample(name)
    raw["detail"].update(detail_changes)
    return raw


def finding(name: str, **detail_changes: Any) -> Finding:
    return normalise(parse_event(event(name, **detail_changes)))


def tags_request(*tags: dict[str, str], resources: tuple[str, ...] = (SAMPLE_INSTANCE,)) -> dict[str, Any]:
    request: dict[str, Any] = {"resourcesSet": {"items": [{"resourceId": r} for r in resources]}}
    if tags:
        request["tagSet"] = {"items": list(tags)}
    return request


def as_actor(name: str, role_arn: str) -> dict[str, Any]:
    """The sample's userIdentity, with the session issued for `role_arn`."""
    identity = load_sample(name)["detail"]["userIdentity"]
    role = role_arn.rsplit("/", 1)[-1]
    identity["arn"] = f"arn:aws:sts::111122223333:assumed-role/{role}/session"
    identity["sessionContext"]["sessionIssuer"]["arn"] = role_arn
    return identity


# ---------------------------------------------------------------- what the records say


def test_a_delete_tags_record_names_the_instance_and_the_removed_key_with_no_known_previous() -> None:
    """Sample shape: EC2 CloudTrail records of CreateTags / DeleteTags carry requestParameters
    resourcesSet.items[].resourceId and tagSet.items[].{key, value} and responseElements
    {requestId, _return: true}: e.g. the CreateTags record of an instance printed in a Stelligent-U
    CloudTrail lab answer on GitHub (lab 8.2.2, invokedBy cloudformation.amazonaws.com), and DeleteTags
    records with tagSet.items[{key}] in public Lambda tests of tag-removal alerts. Semantics from the EC2
    API Reference (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DeleteTags.html): a tag
    without a value is deleted whatever its value, with a value only if it has it, and no tags at all
    deletes every user-defined tag."""
    # Given / When
    deleted = finding("cloudtrail-delete-tags-scope.json")
    # Then
    assert (deleted.kind, deleted.severity) == (Kind.INSTANCE_MODIFIED, Severity.MEDIUM)
    assert deleted.instance_ids == (SAMPLE_INSTANCE,)
    assert deleted.evidence[TAGS_ONLY_EVIDENCE_KEY] is True
    assert deleted.evidence[TAG_CHANGES_EVIDENCE_KEY] == {"immutable": {"updated": None}}
    [change] = tag_changes_of(deleted.evidence)
    assert (change.key, change.updated, change.previous_known) == ("immutable", None, False)


def test_a_create_tags_record_says_which_value_each_tag_was_set_to() -> None:
    # Whether it tampers depends on the operator's scope and the instance: the policy decides
    forged = finding("cloudtrail-create-tags-forged-quarantine.json")
    assert (forged.kind, forged.severity) == (Kind.INSTANCE_MODIFIED, Severity.MEDIUM)
    assert forged.evidence[TAG_CHANGES_EVIDENCE_KEY] == {"immutable-guard:state": {"updated": "quarantined"}}
    assert "immutable-guard:state=quarantined" in forged.summary


def test_a_delete_with_a_value_says_what_the_tag_was_if_it_was_deleted() -> None:
    # EC2 deletes a tag given with a value only if it had that value
    deleted = finding(
        "cloudtrail-delete-tags-scope.json",
        requestParameters=tags_request({"key": "immutable", "value": "true"}),
    )
    [change] = tag_changes_of(deleted.evidence)
    assert (change.previous, change.previous_known, change.updated) == ("true", True, None)


def test_a_delete_without_tags_removes_every_user_tag() -> None:
    everything = finding("cloudtrail-delete-tags-scope.json", requestParameters=tags_request())
    assert everything.evidence[TAG_CHANGES_EVIDENCE_KEY] == {EVERY_USER_TAG: {"updated": None}}
    assert "every user tag" in everything.summary


def test_only_instances_are_named_and_other_resources_are_kept_as_evidence() -> None:
    tagged = finding(
        "benign-create-tags-unrelated.json",
        requestParameters=tags_request(
            {"key": "Name", "value": "x"}, resources=("vol-0123456789abcdef0", SAMPLE_INSTANCE, "ami-1")
        ),
    )
    assert tagged.instance_ids == (SAMPLE_INSTANCE,)
    assert tagged.evidence["other_resources"] == ["vol-0123456789abcdef0", "ami-1"]


@pytest.mark.parametrize(
    "request_parameters",
    [None, {}, {"resourcesSet": "i-1"}, {"resourcesSet": {"items": [None, 3]}, "tagSet": {"items": "x"}}],
)
def test_a_surprising_shape_yields_less_evidence_never_a_crash(request_parameters: Any) -> None:
    odd = finding("cloudtrail-delete-tags-scope.json", requestParameters=request_parameters)
    assert odd.instance_ids == ()
    assert judge(odd, [], POLICY).decision is Decision.IGNORE


def test_a_padded_request_cannot_hide_the_scope_tag_beyond_the_evidence_kept() -> None:
    # Given 60 keys deleted, the scope tag last
    padding = [{"key": f"k{n}"} for n in range(59)]
    padded = finding(
        "cloudtrail-delete-tags-scope.json", requestParameters=tags_request(*padding, {"key": "immutable"})
    )
    # Then the evidence says "possibly every tag", and the strip is still found
    assert EVERY_USER_TAG in padded.evidence[TAG_CHANGES_EVIDENCE_KEY]
    assert judge(padded, [STRIPPED], POLICY, SEEN).reason == "scope_tampered"


# ---------------------------------------------------------------- stripping the scope tag


def test_stripping_the_scope_tag_of_a_server_the_ledger_saw_in_scope_is_scope_tampering() -> None:
    # Given the attacker's DeleteTags, judged after the tag is gone, on a server seen with the tag
    judgement = judge(finding("cloudtrail-delete-tags-scope.json"), [STRIPPED], POLICY, SEEN)
    # Then
    assert (judgement.decision, judgement.reason) == (Decision.REMEDIATE, "scope_tampered")
    assert judgement.instances_in_scope == (STRIPPED,)
    assert (judgement.finding.kind, judgement.finding.severity) == (Kind.SCOPE_TAMPERED, Severity.CRITICAL)
    assert "immutable" in judgement.detail and "mallory" in judgement.finding.summary


def test_stripping_the_scope_tag_when_the_record_says_its_value_needs_no_memory() -> None:
    memory = Memory()
    deleted = finding(
        "cloudtrail-delete-tags-scope.json",
        requestParameters=tags_request({"key": "immutable", "value": "true"}),
    )
    assert judge(deleted, [STRIPPED], POLICY, memory).reason == "scope_tampered"
    assert memory.scope_reads == []


def test_config_s_previous_value_proves_the_server_was_in_scope() -> None:
    # Given a tag change as Config reports it (previous and updated values), nothing in the ledger
    config_like = finding("cloudtrail-delete-tags-scope.json").model_copy(
        update={
            "evidence": {
                TAG_CHANGES_EVIDENCE_KEY: {"immutable": {"previous": "true", "updated": "false"}},
                TAGS_ONLY_EVIDENCE_KEY: True,
            }
        }
    )
    stripped = STRIPPED.model_copy(update={"tags": {"Name": "web-1", "immutable": "false"}})
    assert judge(config_like, [stripped], POLICY, Memory()).reason == "scope_tampered"


def test_deleting_every_tag_of_a_server_seen_in_scope_is_scope_tampering() -> None:
    everything = finding("cloudtrail-delete-tags-scope.json", requestParameters=tags_request())
    bare = STRIPPED.model_copy(update={"tags": {}})
    assert judge(everything, [bare], POLICY, SEEN).reason == "scope_tampered"
    assert judge(everything, [bare], POLICY, Memory()).reason == "tags_only"


def test_an_allow_listed_pipeline_taking_a_server_out_of_scope_is_the_legitimate_way() -> None:
    # Benign twin: the same DeleteTags by the allow-listed pipeline
    deleted = finding(
        "cloudtrail-delete-tags-scope.json",
        userIdentity=as_actor("cloudtrail-delete-tags-scope.json", PIPELINE),
    )
    judgement = judge(deleted, [STRIPPED], POLICY, SEEN)
    assert (judgement.decision, judgement.reason) == (Decision.IGNORE, "allow_listed_principal")


def test_an_out_of_scope_server_losing_a_tag_it_never_had_in_scope_is_ignored() -> None:
    # Benign twin: the ledger never saw the scratch box with the scope tag
    deleted = finding(
        "cloudtrail-delete-tags-scope.json", requestParameters=tags_request({"key": "immutable"})
    )
    scratch = MUTABLE.model_copy(update={"instance_id": SAMPLE_INSTANCE})
    judgement = judge(deleted, [scratch], POLICY, Memory())
    assert (judgement.decision, judgement.reason) == (Decision.IGNORE, "tags_only")


def test_a_server_seen_under_an_old_scope_tag_is_not_in_scope_under_a_new_one() -> None:
    # The operator changed ScopeTagKey: what the ledger saw under the old tag no longer counts
    policy = POLICY.model_copy(update={"scope": ScopeRule(tag_key="golden", tag_value="yes")})
    deleted = finding("cloudtrail-delete-tags-scope.json", requestParameters=tags_request({"key": "golden"}))
    assert judge(deleted, [STRIPPED], policy, SEEN).reason == "tags_only"


def test_an_unrelated_tag_is_no_mutation_and_costs_no_ledger_read() -> None:
    # Benign twin: a Name tag on an immutable server
    memory = Memory()
    judgement = judge(finding("benign-create-tags-unrelated.json"), [IMMUTABLE], POLICY, memory)
    assert (judgement.decision, judgement.reason) == (Decision.IGNORE, "tags_only")
    assert memory.scope_reads == []


def test_setting_the_scope_tag_brings_a_server_into_scope_and_is_no_tampering() -> None:
    tagged = finding(
        "benign-create-tags-unrelated.json",
        requestParameters=tags_request({"key": "immutable", "value": "true"}),
    )
    assert judge(tagged, [IMMUTABLE], POLICY, Memory()).reason == "tags_only"


def test_a_failed_delete_is_ignored() -> None:
    failed = finding("cloudtrail-delete-tags-scope.json", errorCode="Client.UnauthorizedOperation")
    assert judge(failed, [STRIPPED], POLICY, SEEN).reason == "failed_call"


# ---------------------------------------------------------------- the guard's own tags


def test_a_forged_quarantine_marker_on_an_immutable_server_is_scope_tampering() -> None:
    judgement = judge(finding("cloudtrail-create-tags-forged-quarantine.json"), [IMMUTABLE], POLICY, Memory())
    assert (judgement.decision, judgement.reason) == (Decision.REMEDIATE, "scope_tampered")
    assert "immutable-guard:state" in judgement.detail


def test_removing_the_guard_s_marker_from_a_quarantined_server_is_scope_tampering() -> None:
    removed = finding(
        "cloudtrail-delete-tags-scope.json", requestParameters=tags_request({"key": "immutable-guard:state"})
    )
    assert judge(removed, [IMMUTABLE], POLICY, Memory()).reason == "scope_tampered"


def test_the_guard_setting_its_own_marker_is_its_own_business() -> None:
    # Benign twin: Contain tags the server it quarantines
    ours = finding(
        "cloudtrail-create-tags-forged-quarantine.json",
        userIdentity=as_actor("cloudtrail-create-tags-forged-quarantine.json", GUARD_ROLE),
    )
    assert judge(ours, [IMMUTABLE], POLICY, Memory()).reason == "own_change"


def test_config_s_echo_of_a_guard_tag_change_is_no_tampering_for_lack_of_an_actor() -> None:
    # Config reports the guard's own Contain and Release tag changes too, with no actor: only CloudTrail's
    # record of the same call can say someone else made it
    echo = finding("cloudtrail-create-tags-forged-quarantine.json").model_copy(
        update={
            "source": Source.CONFIG,
            "evidence": {
                TAG_CHANGES_EVIDENCE_KEY: {
                    "immutable-guard:state": {"previous": "quarantined", "updated": None}
                },
                TAGS_ONLY_EVIDENCE_KEY: True,
            },
        }
    )
    assert judge(echo, [IMMUTABLE], POLICY, Memory()).reason == "tags_only"


def test_a_guard_tag_on_an_out_of_scope_server_is_not_the_guard_s_business() -> None:
    forged = finding(
        "cloudtrail-create-tags-forged-quarantine.json",
        requestParameters=tags_request(
            {"key": "immutable-guard:state", "value": "quarantined"}, resources=(SAMPLE_OTHER_INSTANCE,)
        ),
    )
    assert judge(forged, [MUTABLE], POLICY, Memory()).reason == "tags_only"


# ---------------------------------------------------------------- quarantine marker, scope as of the change


MARKED = IMMUTABLE.model_copy(update={"tags": {"immutable": "true", "immutable-guard:state": "quarantined"}})


def test_a_change_to_a_server_with_a_forged_marker_is_judged_as_if_the_marker_were_absent() -> None:
    # Given a marker with no open incident behind it
    judgement = judge(finding("cloudtrail-send-ssh-public-key.json"), [MARKED], POLICY, Memory())
    # Then the change is remediated, and the forgery named
    assert (judgement.decision, judgement.reason) == (Decision.REMEDIATE, "forged_quarantine_marker")
    assert judgement.instances_in_scope == (MARKED,)
    assert "forged" in judgement.detail


def test_the_marker_counts_while_the_ledger_holds_the_open_incident() -> None:
    quarantined = MARKED.model_copy(
        update={"tags": {**(MARKED.tags or {}), "immutable-guard:incident": "ig-1"}}
    )
    memory = Memory(incidents={SAMPLE_INSTANCE: "ig-1"})
    judgement = judge(finding("config-instance-changed.json"), [quarantined], POLICY, memory)
    assert (judgement.decision, judgement.reason) == (Decision.IGNORE, "already_quarantined")


def test_a_marker_naming_another_incident_than_the_open_one_is_forged() -> None:
    mismatched = MARKED.model_copy(
        update={"tags": {**(MARKED.tags or {}), "immutable-guard:incident": "ig-forged"}}
    )
    memory = Memory(incidents={SAMPLE_INSTANCE: "ig-1"})
    judgement = judge(finding("cloudtrail-send-ssh-public-key.json"), [mismatched], POLICY, memory)
    assert judgement.reason == "forged_quarantine_marker"


def test_a_change_judged_after_the_scope_tag_was_stripped_still_counts() -> None:
    # Given an SSH key pushed, judged once the attacker has also stripped the tag
    judgement = judge(finding("cloudtrail-send-ssh-public-key.json"), [STRIPPED], POLICY, SEEN)
    assert (judgement.decision, judgement.reason) == (Decision.REMEDIATE, "mutation_of_immutable_instance")
    # ...and a server never seen in scope stays out of scope
    assert judge(finding("cloudtrail-send-ssh-public-key.json"), [STRIPPED], POLICY, Memory()).reason == (
        "out_of_scope"
    )


def test_the_ledger_is_not_read_for_a_server_in_scope_by_its_tags() -> None:
    memory = Memory()
    judge(finding("cloudtrail-send-ssh-public-key.json"), [IMMUTABLE], POLICY, memory)
    assert memory.scope_reads == []


# ---------------------------------------------------------------- end to end on EC2 (moto)


def test_judge_event_on_ec2_finds_the_strip_and_says_what_to_remember(world: World) -> None:
    # Given the immutable server's tag really stripped, and the ledger having seen it in scope
    world.ec2.delete_tags(Resources=[world.immutable_id], Tags=[{"Key": "immutable"}])
    memory = Memory(in_scope={world.immutable_id: "immutable=true"})
    # When the DeleteTags record is judged against EC2
    judgement = judge_event(
        world.event("cloudtrail-delete-tags-scope.json"), POLICY, Ec2InstanceDirectory(world.ec2), memory
    )
    # Then
    assert judgement.reason == "scope_tampered"
    assert [i.instance_id for i in judgement.instances_in_scope] == [world.immutable_id]
    assert (judgement.seen_in_scope, judgement.left_scope) == ((), ())


def test_judge_event_remembers_servers_seen_in_scope_and_forgets_those_the_pipeline_released(
    world: World,
) -> None:
    directory = Ec2InstanceDirectory(world.ec2)
    # An unrelated tag on the immutable server: it is seen in scope
    seen = judge_event(world.event("benign-create-tags-unrelated.json"), POLICY, directory, Memory())
    assert seen.seen_in_scope == (world.immutable_id,)
    # The pipeline takes it out of scope: forgotten
    world.ec2.delete_tags(Resources=[world.immutable_id], Tags=[{"Key": "immutable"}])
    raw = world.event("cloudtrail-delete-tags-scope.json")
    raw["detail"]["userIdentity"] = as_actor("cloudtrail-delete-tags-scope.json", PIPELINE)
    released = judge_event(raw, POLICY, directory, Memory())
    assert released.reason == "allow_listed_principal"
    assert released.left_scope == (world.immutable_id,)


@pytest.mark.parametrize(
    ("name", "decision", "reason"),
    [
        ("cloudtrail-delete-tags-scope.json", Decision.REMEDIATE, "scope_tampered"),
        ("cloudtrail-create-tags-forged-quarantine.json", Decision.REMEDIATE, "scope_tampered"),
        ("benign-create-tags-unrelated.json", Decision.IGNORE, "tags_only"),
    ],
)
def test_offline_the_samples_are_judged_as_they_would_be(name: str, decision: Decision, reason: str) -> None:
    # Offline, tags are unknown and the instance is assumed in scope (as explain does everywhere)
    judgement = judge_event(load_sample(name), POLICY, OfflineInstanceDirectory())
    assert (judgement.decision, judgement.reason) == (decision, reason)


def test_changing_the_scope_tag_s_value_is_stripping_it() -> None:
    changed = finding(
        "benign-create-tags-unrelated.json",
        requestParameters=tags_request({"key": "immutable", "value": "false"}),
    )
    stripped = STRIPPED.model_copy(update={"tags": {"immutable": "false"}})
    assert judge(changed, [stripped], POLICY, SEEN).reason == "scope_tampered"


def test_the_local_runtime_records_tag_calls_in_cloudtrail_s_shape() -> None:
    # The drill's attacker calls become these records: the handler must read them as it reads AWS's
    ec2 = boto3.Session(region_name="us-east-1").client("ec2").meta.service_model
    created = request_parameters(
        ec2.operation_model("CreateTags"), {"Resources": ["i-1"], "Tags": [{"Key": "a", "Value": "b"}]}
    )
    deleted = request_parameters(
        ec2.operation_model("DeleteTags"), {"Resources": ["i-1"], "Tags": [{"Key": "a"}]}
    )
    assert created == {
        "resourcesSet": {"items": [{"resourceId": "i-1"}]},
        "tagSet": {"items": [{"key": "a", "value": "b"}]},
    }
    assert deleted == {
        "resourcesSet": {"items": [{"resourceId": "i-1"}]},
        "tagSet": {"items": [{"key": "a"}]},
    }
