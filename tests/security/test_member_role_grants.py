"""Least privilege of the member roles (organization/member-roles.yaml), held against the calls made through
them: the central functions' calls in member accounts, made with a member role's credentials, are recorded
as that role's (local/call_log.py) into observed_calls.json. The local AWS enforces no IAM, so a call a
member role does not grant passes every local run and fails with AccessDenied in a real organisation; these
tests catch it. And a grant no run used through the role is either explained in
call_manifest.MEMBER_NOT_OBSERVED or dropped."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from call_manifest import (
    KEPT_AS_ITS_FUNCTION,
    MEMBER_NOT_OBSERVED,
    MEMBER_ROLE_FUNCTIONS,
    NOT_OBSERVED,
    SEEN_AS_ITS_FUNCTION,
    load_manifest,
)
from template_policies import as_list, statements
from test_trust_model import member_roles

# As the recorded runs deploy member-roles.yaml (drill/organization_world.member_roles_stack, the e2e
# tests): no stack declared for Replace, so its conditional statements are absent. The observed calls must
# be granted there; every grant, with every conditional statement present (member_roles()'s parameters),
# must be used or explained.
AS_RECORDED = {"ScopeStackNames": "", "ReplaceableStackTagValue": "", "ReplacementStackRoleName": ""}
DEPLOYMENTS = {"as recorded": AS_RECORDED, "every statement": {}}
ROLES = member_roles()


def granted(role: dict[str, Any]) -> set[str]:
    """Every action the role's inline policies allow (as resolved: a statement under a false condition is
    gone)."""
    return {
        action
        for policy in role.get("Policies", [])
        for statement in statements(policy["PolicyDocument"])
        if statement.get("Effect") == "Allow"
        for action in as_list(statement["Action"])
    }


def missing(role: dict[str, Any], observed: list[str]) -> list[str]:
    """What the role was seen used for and does not grant: an AccessDenied in a real organisation."""
    return sorted(set(observed) - granted(role))


def unexplained(role: dict[str, Any], observed: list[str], kept: dict[str, str]) -> list[str]:
    """What the role grants that no run used through it and MEMBER_NOT_OBSERVED does not explain."""
    return sorted(granted(role) - set(observed) - set(kept))


def _observed(manifest: dict[str, list[str]], role_name: str) -> list[str]:
    return manifest.get(role_name, [])


@pytest.mark.parametrize("deployment", sorted(DEPLOYMENTS))
@pytest.mark.parametrize("role_name", sorted(ROLES))
def test_each_member_role_grants_every_action_it_was_seen_used_for(role_name: str, deployment: str) -> None:
    # Given the actions the central functions used through the role in member accounts
    observed = _observed(load_manifest(), role_name)
    # When the role is read as a member account deploys it
    role = member_roles(**DEPLOYMENTS[deployment])[role_name]
    # Then it grants each of them
    assert missing(role, observed) == [], f"{role_name} lacks grants its calls need (AccessDenied in AWS)"


@pytest.mark.parametrize("role_name", sorted(ROLES))
def test_each_member_role_grant_was_used_through_it_or_is_kept_with_a_reason(role_name: str) -> None:
    observed = _observed(load_manifest(), role_name)
    kept = MEMBER_NOT_OBSERVED.get(role_name, {})
    assert unexplained(ROLES[role_name], observed, kept) == [], (
        f"{role_name} grants what no run used: drop it from member-roles.yaml, or say why in "
        "MEMBER_NOT_OBSERVED"
    )


def test_the_recording_saw_the_member_roles_the_organisation_runs_act_through() -> None:
    # (a recording that lost the member roles' calls would leave every grant "explained" by nothing but
    # MEMBER_NOT_OBSERVED; the organisation drill quarantines, preserves, replaces and nukes in member
    # accounts, and onboarding verifies them)
    manifest = load_manifest()
    assert {name for name in manifest if name in ROLES} >= {
        "ImmutableGuard-Member-Reader",
        "ImmutableGuard-Member-Quarantine",
        "ImmutableGuard-Member-Evidence",
        "ImmutableGuard-Member-Replace",
        "ImmutableGuard-Member-Nuke",
    }


def test_the_manifest_names_only_member_roles_of_member_roles_yaml_beside_the_templates_principals() -> None:
    member = {name for name in load_manifest() if name.startswith("ImmutableGuard-")}
    assert member <= set(ROLES)
    assert set(MEMBER_NOT_OBSERVED) <= set(ROLES)
    assert set(MEMBER_ROLE_FUNCTIONS) | {"ImmutableGuard-Member-EventForwarder"} == set(ROLES)


def test_a_member_grant_kept_without_being_observed_is_granted_and_not_observed() -> None:
    # Once a recorded run reaches it, it belongs to the manifest, and its reason here goes stale.
    manifest = load_manifest()
    for role_name, kept in MEMBER_NOT_OBSERVED.items():
        assert set(kept) & set(_observed(manifest, role_name)) == set(), role_name
        assert set(kept) <= granted(ROLES[role_name]), role_name


def test_a_member_grant_kept_as_its_functions_is_its_functions() -> None:
    # "Seen used by its function": in that function's part of the manifest; "kept, as by": in its
    # NOT_OBSERVED. Either way, a function that serves the role.
    manifest = load_manifest()
    for role_name, kept in MEMBER_NOT_OBSERVED.items():
        for action, reason in kept.items():
            if reason.startswith(SEEN_AS_ITS_FUNCTION):
                function = reason.removeprefix(SEEN_AS_ITS_FUNCTION).strip()
                assert function in MEMBER_ROLE_FUNCTIONS[role_name], (role_name, action)
                assert action in manifest.get(function, []), (role_name, action, function)
            elif reason.startswith(KEPT_AS_ITS_FUNCTION):
                function = reason.removeprefix(KEPT_AS_ITS_FUNCTION).split(":", 1)[0].strip()
                assert function in MEMBER_ROLE_FUNCTIONS[role_name], (role_name, action)
                assert action in NOT_OBSERVED[function], (role_name, action, function)


# ---------------------------------------------------------------------- the checks can fail


def _without(role: dict[str, Any], action: str) -> dict[str, Any]:
    """A copy of the role whose policy no longer grants ``action``."""
    copied = copy.deepcopy(role)
    for policy in copied["Policies"]:
        kept = []
        for statement in statements(policy["PolicyDocument"]):
            actions = [a for a in as_list(statement["Action"]) if a != action]
            if actions:
                kept.append({**statement, "Action": actions})
        policy["PolicyDocument"]["Statement"] = kept
    return copied


def test_a_member_role_without_a_grant_it_was_seen_using_fails_the_check() -> None:
    # Given the Quarantine role, and what the organisation runs used it for
    observed = _observed(load_manifest(), "ImmutableGuard-Member-Quarantine")
    role = ROLES["ImmutableGuard-Member-Quarantine"]
    assert "ec2:ModifyNetworkInterfaceAttribute" in observed and missing(role, observed) == []
    # When a copy of its policy no longer grants moving the instance's interfaces onto the isolation group
    broken = _without(role, "ec2:ModifyNetworkInterfaceAttribute")
    # Then the check names exactly that grant
    assert missing(broken, observed) == ["ec2:ModifyNetworkInterfaceAttribute"]


def test_a_member_role_granting_what_no_run_used_fails_the_check() -> None:
    # Given the Nuke role with one more grant, which no run used and nothing explains
    role = copy.deepcopy(ROLES["ImmutableGuard-Member-Nuke"])
    role["Policies"][0]["PolicyDocument"]["Statement"].append(
        {"Effect": "Allow", "Action": "ec2:DeleteVolume", "Resource": "*"}
    )
    observed = _observed(load_manifest(), "ImmutableGuard-Member-Nuke")
    # Then the check names it
    kept = MEMBER_NOT_OBSERVED["ImmutableGuard-Member-Nuke"]
    assert unexplained(role, observed, kept) == ["ec2:DeleteVolume"]
