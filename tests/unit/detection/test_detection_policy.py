"""judge: failed calls, known changers, other accounts and out-of-scope servers are ignored; key pairs
only alert; a mutation reaching an immutable server is remediated, whatever the mode."""

from __future__ import annotations

from typing import Any

import pytest
from detection_samples import SAMPLE_INSTANCE, World, load_sample
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
from immutable_guard.detection.policy import made_through_cloudformation, principal_key
from immutable_guard.detection.scope import ScopeRule
from immutable_guard.errors import InvalidEvent
from immutable_guard.model import Actor, Decision, Finding, Mode

IMMUTABLE = InstanceInfo(instance_id=SAMPLE_INSTANCE, state="running", tags={"immutable": "true"})
MUTABLE = InstanceInfo(instance_id="i-0def5678abc901234", state="running", tags={"Name": "scratch"})
QUARANTINE_ROLE = "arn:aws:iam::111122223333:role/immutable-guard-QuarantineFunctionRole-1A2B3C4D5E6F"


def finding(name: str, **detail_changes: Any) -> Finding:
    raw = load_sample(name)
    raw["detail"].update(detail_changes)
    return normalise(parse_event(raw))


def test_a_mutation_reaching_an_immutable_instance_is_remediated_for_it_alone() -> None:
    # Given a world-open SSH rule on a group used by an immutable and a mutable instance
    ssh = finding("cloudtrail-authorize-sg-ingress-ssh-world.json")
    # When it is judged
    judgement = judge(ssh, [IMMUTABLE, MUTABLE], Policy())
    # Then only the immutable instance is to be remediated
    assert judgement.decision is Decision.REMEDIATE
    assert judgement.reason == "mutation_of_immutable_instance"
    assert judgement.instances_in_scope == (IMMUTABLE,)
    assert SAMPLE_INSTANCE in judgement.detail


@pytest.mark.parametrize("mode", list(Mode))
def test_the_mode_does_not_change_the_decision(mode: Mode) -> None:
    # The caller applies the mode afterwards; judge says what the finding deserves.
    judgement = judge(finding("cloudtrail-ssm-start-session.json"), [IMMUTABLE], Policy(mode=mode))
    assert judgement.decision is Decision.REMEDIATE


def test_a_failed_call_is_ignored() -> None:
    judgement = judge(finding("benign-failed-call.json"), [IMMUTABLE], Policy())
    assert (judgement.decision, judgement.reason) == (Decision.IGNORE, "failed_call")
    assert "Client.UnauthorizedOperation" in judgement.detail


@pytest.mark.parametrize(
    "allowed",
    [
        "arn:aws:iam::111122223333:role/deploy-pipeline",
        "arn:aws:iam::111122223333:role/ci/deploy-pipeline",
        "arn:aws:sts::111122223333:assumed-role/deploy-pipeline/another-session",
    ],
    ids=["role", "role-with-path", "other-session-of-the-role"],
)
def test_an_allow_listed_role_is_ignored_in_any_of_its_sessions(allowed: str) -> None:
    judgement = judge(
        finding("benign-allow-listed-principal.json"), [IMMUTABLE], Policy(allowed_principal_arns=(allowed,))
    )
    assert (judgement.decision, judgement.reason) == (Decision.IGNORE, "allow_listed_principal")


def test_the_same_role_name_in_another_account_is_not_allow_listed() -> None:
    policy = Policy(allowed_principal_arns=("arn:aws:iam::444455556666:role/deploy-pipeline",))
    judgement = judge(finding("benign-allow-listed-principal.json"), [IMMUTABLE], policy)
    assert judgement.decision is Decision.REMEDIATE


def test_an_sso_session_matches_its_issuer_role_with_a_path() -> None:
    issuer = "arn:aws:iam::111122223333:role/aws-reserved/sso.amazonaws.com/AWSReservedSSO_Ops_1a2b"
    actor = Actor(
        principal_arn="arn:aws:sts::111122223333:assumed-role/AWSReservedSSO_Ops_1a2b/alice",
        session_issuer_arn=issuer,
    )
    base = finding("cloudtrail-ssm-start-session.json")
    judgement = judge(
        base.model_copy(update={"actor": actor}), [IMMUTABLE], Policy(allowed_principal_arns=(issuer,))
    )
    assert judgement.reason == "allow_listed_principal"


def test_an_allow_listed_user_matches_exactly() -> None:
    user = "arn:aws:iam::111122223333:user/break-glass"
    base = finding("cloudtrail-ssm-start-session.json")
    as_user = base.model_copy(update={"actor": Actor(principal_arn=user)})
    assert (
        judge(as_user, [IMMUTABLE], Policy(allowed_principal_arns=(user,))).reason == "allow_listed_principal"
    )
    other = base.model_copy(update={"actor": Actor(principal_arn=user + "-2")})
    assert judge(other, [IMMUTABLE], Policy(allowed_principal_arns=(user,))).decision is Decision.REMEDIATE


DECLARED = InstanceInfo(
    instance_id=SAMPLE_INSTANCE,
    state="running",
    tags={"immutable": "true", "aws:cloudformation:stack-name": "web-stack"},
)
WITH_STACKS = Policy(scope=ScopeRule(stack_names=("web-stack",)))


def test_a_change_the_operators_declared_stack_makes_to_its_own_servers_is_ignored() -> None:
    judgement = judge(finding("benign-cloudformation-change.json"), [DECLARED], WITH_STACKS)
    assert (judgement.decision, judgement.reason) == (Decision.IGNORE, "cloudformation_change")
    assert "web-stack" in judgement.detail


@pytest.mark.parametrize(
    ("instances", "policy"),
    [
        # an immutable server in no stack at all: any principal's own stack could change it
        ([IMMUTABLE], WITH_STACKS),
        # a server of a stack nobody declared
        ([DECLARED], Policy(scope=ScopeRule(stack_names=("other-stack",)))),
        # one server of the declared stack, another immutable one outside it
        ([DECLARED, IMMUTABLE.model_copy(update={"instance_id": "i-0fff5678abc901234"})], WITH_STACKS),
    ],
    ids=["no-stack", "undeclared-stack", "reaches-beyond-the-declared-stack"],
)
def test_a_change_through_an_undeclared_stack_is_remediated(
    instances: list[InstanceInfo], policy: Policy
) -> None:
    # Given a change CloudFormation made (AWS says so) for a principal nobody allow-listed
    judgement = judge(finding("benign-cloudformation-change.json"), instances, policy)
    # Then it is judged like any other change, and the detail says why the stack did not exempt it
    assert (judgement.decision, judgement.reason) == (Decision.REMEDIATE, "mutation_of_immutable_instance")
    assert "ScopeStackNames" in judgement.detail


def test_the_allow_listed_deployer_going_through_cloudformation_is_ignored_on_any_stack() -> None:
    deployer = "arn:aws:iam::111122223333:role/OpsRole"
    judgement = judge(
        finding("benign-cloudformation-change.json"), [IMMUTABLE], Policy(allowed_principal_arns=(deployer,))
    )
    assert (judgement.decision, judgement.reason) == (Decision.IGNORE, "allow_listed_principal")


def test_a_caller_claiming_to_be_cloudformation_in_its_user_agent_is_not_believed() -> None:
    # Given a direct call whose caller set its user agent to CloudFormation's
    spoofed = finding(
        "cloudtrail-authorize-sg-ingress-ssh-world.json", userAgent="cloudformation.amazonaws.com"
    )
    # Then it is not mistaken for a stack operation
    assert not made_through_cloudformation(spoofed.actor)
    assert judge(spoofed, [IMMUTABLE], Policy()).decision is Decision.REMEDIATE


def test_our_own_remediation_is_ignored() -> None:
    own = Actor(
        principal_arn="arn:aws:sts::111122223333:assumed-role/immutable-guard-QuarantineFunctionRole-1A2B3C4D5E6F/q",
        session_issuer_arn=QUARANTINE_ROLE,
    )
    base = finding("cloudtrail-modify-instance-attribute-groupset.json")
    judgement = judge(
        base.model_copy(update={"actor": own}), [IMMUTABLE], Policy(own_role_arns=(QUARANTINE_ROLE,))
    )
    assert (judgement.decision, judgement.reason) == (Decision.IGNORE, "own_change")


def test_an_event_from_another_account_is_ignored() -> None:
    policy = Policy(expected_account="444455556666")
    judgement = judge(finding("cloudtrail-ssm-start-session.json"), [IMMUTABLE], policy)
    assert (judgement.decision, judgement.reason) == (Decision.IGNORE, "wrong_account")
    assert (
        judge(
            finding("cloudtrail-ssm-start-session.json"), [IMMUTABLE], Policy(expected_account="111122223333")
        ).decision
        is Decision.REMEDIATE
    )


def test_a_key_pair_is_alerted_not_remediated() -> None:
    judgement = judge(finding("cloudtrail-import-key-pair.json"), [], Policy())
    assert (judgement.decision, judgement.reason) == (Decision.ALERT, "account_level_alert_only")


@pytest.mark.parametrize(
    "sample", ["cloudtrail-stop-logging.json", "cloudtrail-stop-configuration-recorder.json"]
)
def test_blinding_a_sensor_is_alerted_not_remediated(sample: str) -> None:
    judgement = judge(finding(sample), [IMMUTABLE], Policy())
    assert (judgement.decision, judgement.reason) == (Decision.ALERT, "account_level_alert_only")
    assert "unseen" in judgement.detail


def test_the_guards_trail_stopped_through_a_stack_is_still_alerted() -> None:
    # CloudFormation deleting or updating a stack can stop the guard's trail: AWS says so in invokedBy,
    # but not which stack, and a stack reaches no instance to tell. Blinding the guard is alerted unless
    # an allow-listed deployer did it.
    stopped = finding("cloudtrail-stop-logging.json")
    through_stack = stopped.model_copy(
        update={"actor": stopped.actor.model_copy(update={"invoked_by": "cloudformation.amazonaws.com"})}
    )
    judgement = judge(through_stack, [], Policy())
    assert (judgement.decision, judgement.reason) == (Decision.ALERT, "account_level_alert_only")
    assert "CloudFormation" in judgement.detail


def test_a_mutation_reaching_no_immutable_instance_is_ignored() -> None:
    judgement = judge(finding("cloudtrail-send-ssh-public-key.json"), [MUTABLE], Policy())
    assert (judgement.decision, judgement.reason) == (Decision.IGNORE, "out_of_scope")
    assert MUTABLE.instance_id in judgement.detail


def test_a_mutation_reaching_no_live_instance_is_ignored() -> None:
    judgement = judge(finding("cloudtrail-send-ssh-public-key.json"), [], Policy())
    assert judgement.reason == "out_of_scope"


def test_principal_keys_unify_sessions_and_roles_and_leave_other_arns_alone() -> None:
    assert principal_key("arn:aws:sts::111122223333:assumed-role/R/s") == principal_key(
        "arn:aws:iam::111122223333:role/a/b/R"
    )
    assert principal_key("arn:aws-us-gov:iam::111122223333:role/R") != principal_key(
        "arn:aws:iam::111122223333:role/R"
    )
    assert principal_key("arn:aws:iam::111122223333:user/u") == "arn:aws:iam::111122223333:user/u"


# ---------------------------------------------------------------- end to end


def test_judge_event_remediates_world_open_ssh_for_the_immutable_member_of_the_group(world: World) -> None:
    raw = world.event("cloudtrail-authorize-sg-ingress-ssh-world.json")
    judgement = judge_event(raw, Policy(), Ec2InstanceDirectory(world.ec2))
    assert judgement.decision is Decision.REMEDIATE
    assert [i.instance_id for i in judgement.instances_in_scope] == [world.immutable_id]
    assert judgement.finding.severity.value == "critical"


def test_judge_event_ignores_a_change_to_an_untagged_instance(world: World) -> None:
    # Given the out-of-scope Config sample pointed at the mutable (untagged) instance
    raw = world.event("benign-out-of-scope-instance.json")
    judgement = judge_event(raw, Policy(), Ec2InstanceDirectory(world.ec2))
    assert (judgement.decision, judgement.reason) == (Decision.IGNORE, "out_of_scope")


def test_judge_event_offline_uses_the_config_item_tags() -> None:
    directory = OfflineInstanceDirectory()
    assert (
        judge_event(load_sample("benign-out-of-scope-instance.json"), Policy(), directory).reason
        == "out_of_scope"
    )
    in_scope = judge_event(load_sample("config-instance-changed.json"), Policy(), directory)
    assert in_scope.decision is Decision.REMEDIATE


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("benign-failed-call.json", "failed_call"),
        ("benign-allow-listed-principal.json", "allow_listed_principal"),
        ("benign-out-of-scope-instance.json", "out_of_scope"),
    ],
)
def test_every_benign_sample_is_ignored_offline(name: str, reason: str) -> None:
    policy = Policy(allowed_principal_arns=("arn:aws:iam::111122223333:role/deploy-pipeline",))
    judgement = judge_event(load_sample(name), policy, OfflineInstanceDirectory())
    assert (judgement.decision, judgement.reason) == (Decision.IGNORE, reason)


def test_judge_event_rejects_what_is_not_an_event() -> None:
    with pytest.raises(InvalidEvent, match="missing 'detail-type'"):
        judge_event({"hello": "world"}, Policy(), OfflineInstanceDirectory())
