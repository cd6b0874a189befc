"""The organisation's trust model (docs/organization.md) is what the templates say: the tables of that page
are read and compared with template.yaml (as the security account deploys it) and organization/*.yaml;
every member role mirrors its function's statements in template.yaml; the member-regional rules forward
exactly what Detect's rules hear; and single-account mode grants none of it."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from immutable_guard.local.intrinsics import NO_VALUE, references
from immutable_guard.template import event_rules, function_policies, load_template
from template_policies import (
    MEMBER_ACCOUNT,
    ORGANIZATION_ID,
    REGION,
    SECURITY_ACCOUNT,
    as_list,
    member_template,
    resolve,
    statements,
    translated_template,
)

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "organization.md"
TEMPLATE = load_template(REPO / "template.yaml")
MEMBER_ROLES = load_template(REPO / "organization" / "member-roles.yaml")
MEMBER_REGIONAL = load_template(REPO / "organization" / "member-regional.yaml")
BUS_ARN = f"arn:aws:events:{REGION}:{SECURITY_ACCOUNT}:event-bus/immutable-guard-organization"
# Each central function that acts in member accounts -> the member role it acts through.
MEMBER_ROLE_OF = {
    "DetectFunction": "ImmutableGuard-Member-Reader",
    "QuarantineFunction": "ImmutableGuard-Member-Quarantine",
    "EvidenceFunction": "ImmutableGuard-Member-Evidence",
    "ReplaceFunction": "ImmutableGuard-Member-Replace",
    "NukeFunction": "ImmutableGuard-Member-Nuke",
    "ReleaseFunction": "ImmutableGuard-Member-Release",
}


# ---------------------------------------------------------------------------------------- the page
def table(heading: str) -> list[dict[str, str]]:
    """The first markdown table under ``### heading`` of docs/organization.md, one dict per row."""
    text = DOC.read_text("utf-8")
    section = text.split(f"### {heading}\n", 1)[1]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    block: list[str] = []
    for line in section.splitlines()[section.splitlines().index(rows[0]) :]:
        if not line.startswith("|"):
            break
        block.append(line)
    header, _, *body = ([cell.strip() for cell in line.strip("|").split("|")] for line in block)
    return [dict(zip(header, row, strict=True)) for row in body]


def names(cell: str) -> list[str]:
    """The `code` spans of a table cell."""
    return re.findall(r"`([^`]+)`", cell)


TRUST = table("Who can assume what")
ASSUMES = table("What each central role may assume")
BUS = table("Who may put events on the organisation bus")


def test_the_tables_are_read() -> None:
    assert len(TRUST) == 14 and len(ASSUMES) == 7 and len(BUS) == 1
    assert all(names(row["Role"]) for row in TRUST)


# ---------------------------------------------------------------------------------------- member roles
def member_roles(**overrides: str) -> dict[str, dict[str, Any]]:
    """Role name -> the member-roles.yaml role, resolved as a member account deploys it."""
    translated, resolver = member_template("member-roles.yaml", **overrides)
    roles = {}
    for resource in translated["Resources"].values():
        if resource["Type"] == "AWS::IAM::Role":
            properties = resolver.resolve(resource["Properties"])
            roles[properties["RoleName"]] = properties
    return roles


def central_role_names() -> dict[str, str]:
    """Fixed name in organisation mode -> logical id, for every role of template.yaml that has one."""
    found = {}
    for logical_id, resource in translated_template("organization")["Resources"].items():
        if resource["Type"] == "AWS::IAM::Role" and "RoleName" in resource["Properties"]:
            name = resolve(resource["Properties"]["RoleName"], "organization")
            if name is not NO_VALUE:
                found[name] = logical_id
    return found


def test_every_role_the_templates_name_is_in_the_table_and_every_row_is_a_role() -> None:
    rows = {names(row["Role"])[0]: row["Template"] for row in TRUST}
    assert {n for n, t in rows.items() if t == "member-roles.yaml"} == set(member_roles())
    assert {n for n, t in rows.items() if t == "template.yaml"} == set(central_role_names())


def test_single_account_mode_names_no_role_and_grants_no_assume_role() -> None:
    # Given template.yaml as deployed with OrganizationId empty (the default): the resources it creates
    created = _created(translated_template(), "single")
    resources = {k: v for k, v in translated_template()["Resources"].items() if k in created}
    assert "OnboardFunction" not in resources and "OnboardFunctionRole" not in resources
    # Then no role carries a fixed name ...
    for logical_id, resource in resources.items():
        if resource["Type"] == "AWS::IAM::Role" and "RoleName" in resource["Properties"]:
            assert resolve(resource["Properties"]["RoleName"]) is NO_VALUE, logical_id
    # ... no policy grants sts:AssumeRole, no organisation bus exists, and the functions are told so
    granted = {
        action
        for resource in resources.values()
        if resource["Type"] == "AWS::IAM::Role"
        for policy in resource["Properties"].get("Policies", [])
        for statement in statements(resolve(policy["PolicyDocument"]))
        for action in as_list(statement.get("Action", []))
    }
    assert not {a for a in granted if a.startswith("sts:")}
    assert "OrganizationEventBus" not in _created(translated_template(), "single")
    for function in MEMBER_ROLE_OF:
        variables = resolve(resources[function]["Properties"]["Environment"]["Variables"])
        assert (variables["ORGANIZATION_ID"], variables["MEMBER_ROLE_NAME"]) == ("", ""), function


def _created(translated: dict[str, Any], mode: str) -> set[str]:
    return {
        logical_id
        for logical_id, resource in translated["Resources"].items()
        if "Condition" not in resource or resolve({"Fn::If": [resource["Condition"], True, False]}, mode)
    }


def _trust_statement(role: dict[str, Any]) -> dict[str, Any]:
    (statement,) = statements(role["AssumeRolePolicyDocument"])
    assert (statement["Effect"], as_list(statement["Action"])) == ("Allow", ["sts:AssumeRole"])
    return statement


def _condition_keys(statement: dict[str, Any]) -> set[str]:
    return {key for block in (statement.get("Condition") or {}).values() for key in block}


MEMBER_ROWS = [row for row in TRUST if row["Template"] == "member-roles.yaml"]


@pytest.mark.parametrize("row", MEMBER_ROWS, ids=lambda row: names(row["Role"])[0])
@pytest.mark.parametrize("external_id", ["", "example-id"])
def test_each_member_role_trusts_exactly_what_the_table_says(row: dict[str, str], external_id: str) -> None:
    # Given the member role as deployed with or without an ExternalId
    (name,) = names(row["Role"])
    statement = _trust_statement(member_roles(ExternalId=external_id)[name])
    trusted = names(row["Trusted principal"])
    principal = trusted[0]
    listed = set(names(row["Conditions"]))
    conditions = statement["Condition"]
    if principal.startswith("ImmutableGuard-Central-"):
        # Then only those central roles of the security account, within the organisation
        assert statement["Principal"] == {"AWS": f"arn:aws:iam::{SECURITY_ACCOUNT}:root"}
        arns = [f"arn:aws:iam::{SECURITY_ACCOUNT}:role/{name}" for name in trusted]
        assert conditions["ArnEquals"] == {"aws:PrincipalArn": arns if len(arns) > 1 else arns[0]}
        # ... as onboarding.py checks in every member account
        from immutable_guard.onboarding import MEMBER_ROLE_TRUSTS

        assert tuple(trusted) == MEMBER_ROLE_TRUSTS[name]
        assert conditions["StringEquals"]["aws:PrincipalOrgID"] == ORGANIZATION_ID
        # ... and the ExternalId when one is set (the table says "if set")
        assert conditions["StringEquals"].get("sts:ExternalId") == (external_id or None)
        expected = listed if external_id else listed - {"sts:ExternalId"}
        assert _condition_keys(statement) == expected
    else:
        # Then the service, for this account's own resources only
        assert statement["Principal"] == {"Service": principal}
        assert _condition_keys(statement) == listed == {"aws:SourceAccount"}
        assert conditions["StringEquals"]["aws:SourceAccount"] == MEMBER_ACCOUNT


CENTRAL_ROWS = [row for row in TRUST if row["Template"] == "template.yaml"]


@pytest.mark.parametrize("row", CENTRAL_ROWS, ids=lambda row: names(row["Role"])[0])
def test_each_central_role_is_a_function_role_trusted_by_lambda_only(row: dict[str, str]) -> None:
    (name,) = names(row["Role"])
    role = resolve(
        translated_template("organization")["Resources"][central_role_names()[name]], "organization"
    )
    statement = _trust_statement(role["Properties"])
    assert statement["Principal"] == {"Service": ["lambda.amazonaws.com"]} and names(
        row["Trusted principal"]
    ) == ["lambda.amazonaws.com"]
    assert "Condition" not in statement


# ---------------------------------------------------------------------------------------- central roles
def _assume_role_grants(mode: str) -> dict[str, list[dict[str, Any]]]:
    """Logical id of every role (and resource policy) of template.yaml -> its statements granting sts:*."""
    found: dict[str, list[dict[str, Any]]] = {}
    for logical_id, resource in translated_template(mode)["Resources"].items():
        if logical_id not in _created(translated_template(mode), mode):
            continue
        for policy in resource.get("Properties", {}).get("Policies", []):
            if not isinstance(policy, dict) or "PolicyDocument" not in policy:
                continue
            for statement in statements(resolve(policy["PolicyDocument"], mode)):
                if any(str(a).startswith("sts:") or a == "*" for a in as_list(statement.get("Action", []))):
                    found.setdefault(logical_id, []).append(statement)
    return found


def test_each_central_role_may_assume_only_its_own_member_role_in_the_organisation() -> None:
    grants = _assume_role_grants("organization")
    central = central_role_names()
    expected = {}
    for row in ASSUMES:
        (role,) = names(row["Central role"])
        (member,) = names(row["May assume"])
        assert names(row["Condition"]) == ["aws:ResourceOrgID"]
        expected[central[role]] = [
            {
                "Sid": "ActThroughTheMemberRole",
                "Effect": "Allow",
                "Action": "sts:AssumeRole",
                "Resource": f"arn:aws:iam::*:role/{member}",
                "Condition": {"StringEquals": {"aws:ResourceOrgID": ORGANIZATION_ID}},
            }
        ]
    # No other role of template.yaml may assume anything
    assert grants == expected


def test_each_function_is_told_the_member_role_it_acts_through() -> None:
    resources = translated_template("organization")["Resources"]
    for function, member in MEMBER_ROLE_OF.items():
        variables = resolve(resources[function]["Properties"]["Environment"]["Variables"], "organization")
        assert (variables["ORGANIZATION_ID"], variables["MEMBER_ROLE_NAME"]) == (ORGANIZATION_ID, member)
        role_id = resources[function]["Properties"]["Role"]["Fn::GetAtt"][0]
        assert _assume_role_grants("organization")[role_id][0]["Resource"].endswith(f":role/{member}")


# ---------------------------------------------------------------------------------------- the bus
def test_the_organisation_bus_admits_only_the_organisation() -> None:
    (row,) = BUS
    assert names(row["Bus"]) == ["immutable-guard-organization"]
    bus = resolve(translated_template("organization")["Resources"]["OrganizationEventBus"], "organization")
    assert bus["Properties"]["Name"] == "immutable-guard-organization"
    (statement,) = statements(bus["Properties"]["Policy"])
    assert statement["Effect"] == "Allow"
    assert as_list(statement["Action"]) == names(row["Action"]) == ["events:PutEvents"]
    assert statement["Principal"] == names(row["Principal"])[0] == "*"
    assert statement["Resource"] == BUS_ARN
    assert _condition_keys(statement) == set(names(row["Condition"])) == {"aws:PrincipalOrgID"}
    assert statement["Condition"]["StringEquals"]["aws:PrincipalOrgID"] == ORGANIZATION_ID


def test_detects_rules_listen_on_the_organisation_bus_only_in_organisation_mode() -> None:
    for mode in ("single", "organization"):
        rules = [
            rule
            for rule in translated_template(mode)["Resources"].values()
            if rule["Type"] == "AWS::Events::Rule" and _targets_detect(rule)
        ]
        assert len(rules) == len(_detect_events())
        for rule in rules:
            value = rule["Properties"]["EventBusName"]
            if mode == "single":  # the property is left out: the default bus
                assert resolve(value) is NO_VALUE
            else:
                assert _bus_name(value) == "immutable-guard-organization"


def _targets_detect(rule: dict[str, Any]) -> bool:
    return any("DetectFunction" in json.dumps(target) for target in rule["Properties"].get("Targets", []))


def _bus_name(value: dict[str, Any]) -> str:
    """The bus an ``EventBusName`` names in organisation mode (Ref of an event bus is its name)."""
    condition, when_true, _ = value["Fn::If"]
    assert condition == "OrganizationMode" and when_true == {"Ref": "OrganizationEventBus"}
    return str(TEMPLATE["Resources"]["OrganizationEventBus"]["Properties"]["Name"])


def test_the_forwarder_role_may_put_events_on_the_organisation_bus_only() -> None:
    role = member_roles()["ImmutableGuard-Member-EventForwarder"]
    (policy,) = role["Policies"]
    assert statements(policy["PolicyDocument"]) == [
        {
            "Sid": "TheOrganizationBusOnly",
            "Effect": "Allow",
            "Action": "events:PutEvents",
            "Resource": BUS_ARN,
        }
    ]


# ---------------------------------------------------------------------------------------- mirrors
# What may differ between a central statement and its member copy, and why (in member-roles.yaml too):
# the member role serves every region of its account, so a resource's region is any, and the replacement
# stack role is named in the member account rather than given as an ARN of one account.
RESOURCE_IN_THE_MEMBER = {
    json.dumps({"Ref": "ReplacementStackRoleArn"}): {
        "Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:role/${ReplacementStackRoleName}"
    },
}
# Condition keys the central statement pins to the guard's region, which a role of every region cannot.
REGION_CONDITIONS = {"aws:RequestedRegion"}
# Evidence custody (remediation/custody.py) is not a mirror: the member role makes and shares the transfer
# copy, the central roles copy, lock and verify in the security account. Those statements exist on one side
# only, by design, and are named "Custody..."; test_custody_statements_are_one_sided_and_named_so says which.
CUSTODY_SID_PREFIX = "Custody"
# Onboarding (onboarding.py) reads, through the Reader role, what tells whether a member account is watched;
# Detect never makes those calls, so they are the Reader's alone, named "Onboarding..."
# (test_the_readers_onboarding_statements_are_exactly_what_onboarding_calls).
ONBOARDING_SID_PREFIX = "Onboarding"


def _unwrapped(statement: Any) -> tuple[str | None, dict[str, Any]] | None:
    """(the condition it is granted under, the statement), or None for an !If's AWS::NoValue."""
    if isinstance(statement, dict) and "Fn::If" in statement:
        condition, when_true, when_false = statement["Fn::If"]
        assert when_false == {"Ref": "AWS::NoValue"}
        return condition, when_true
    return None, statement


def _on_the_guards_own_resources(statement: dict[str, Any], resources: set[str]) -> bool:
    return bool(set(references(statement.get("Resource"))) & resources)


def _comparable(condition: str | None, statement: dict[str, Any]) -> dict[str, Any]:
    resource = json.dumps(statement["Resource"]).replace("${AWS::Region}", "*")
    resource_value = RESOURCE_IN_THE_MEMBER.get(resource, json.loads(resource))
    conditions = {
        operator: {k: v for k, v in block.items() if k not in REGION_CONDITIONS}
        for operator, block in (statement.get("Condition") or {}).items()
    }
    return {
        "granted under": condition,
        "Effect": statement["Effect"],
        "Action": sorted(as_list(statement["Action"])),
        "Resource": resource_value,
        "Condition": {operator: block for operator, block in conditions.items() if block},
    }


def _central_statements(function: str) -> dict[str, dict[str, Any]]:
    own = set(TEMPLATE["Resources"])
    found = {}
    for document in function_policies(TEMPLATE, function):
        for entry in document["Statement"]:
            condition, statement = _unwrapped(entry)
            if (
                # Granted in single-account mode only (Detect's first response): no member role needs it.
                condition == "SingleAccountMode"
                or statement.get("Sid") == "ActThroughTheMemberRole"
                or str(statement.get("Sid", "")).startswith(CUSTODY_SID_PREFIX)
                or _on_the_guards_own_resources(statement, own)
            ):
                continue  # acts in the security account, with the central role itself
            found[statement["Sid"]] = _comparable(condition, statement)
    return found


def _member_statements(role_name: str) -> dict[str, dict[str, Any]]:
    (role,) = [
        r
        for r in MEMBER_ROLES["Resources"].values()
        if r["Type"] == "AWS::IAM::Role" and r["Properties"]["RoleName"] == role_name
    ]
    (policy,) = role["Properties"]["Policies"]
    found = {}
    for entry in policy["PolicyDocument"]["Statement"]:
        condition, statement = _unwrapped(entry)
        if not str(statement["Sid"]).startswith((CUSTODY_SID_PREFIX, ONBOARDING_SID_PREFIX)):
            found[statement["Sid"]] = _comparable(condition, statement)
    return found


def test_the_readers_onboarding_statements_are_exactly_what_onboarding_calls() -> None:
    from immutable_guard.onboarding import VERIFY_PERMISSIONS

    reader = member_roles()["ImmutableGuard-Member-Reader"]
    (policy,) = reader["Policies"]
    onboarding = [
        s for s in statements(policy["PolicyDocument"]) if str(s["Sid"]).startswith(ONBOARDING_SID_PREFIX)
    ]
    assert {a for s in onboarding for a in as_list(s["Action"])} == VERIFY_PERMISSIONS
    # The member roles it reads are the guard's own, in this account only
    (roles,) = [s for s in onboarding if "iam:GetRole" in as_list(s["Action"])]
    assert roles["Resource"] == f"arn:aws:iam::{MEMBER_ACCOUNT}:role/ImmutableGuard-Member-*"
    # And no other member role holds them
    for name, role in member_roles().items():
        if name != "ImmutableGuard-Member-Reader":
            for other in role.get("Policies", []):
                sids = {str(s.get("Sid")) for s in statements(other["PolicyDocument"])}
                assert not {sid for sid in sids if sid.startswith(ONBOARDING_SID_PREFIX)}, name


def _sids(document_statements: Any) -> set[str]:
    return {str(_unwrapped(entry)[1].get("Sid")) for entry in document_statements}  # type: ignore[index]


def test_custody_statements_are_one_sided_and_named_so() -> None:
    # Given the custody statements of each side
    central_evidence = set().union(
        *(_sids(d["Statement"]) for d in function_policies(TEMPLATE, "EvidenceFunction"))
    )
    central_nuke = set().union(*(_sids(d["Statement"]) for d in function_policies(TEMPLATE, "NukeFunction")))
    (member,) = [
        r
        for r in MEMBER_ROLES["Resources"].values()
        if r["Type"] == "AWS::IAM::Role" and r["Properties"]["RoleName"] == "ImmutableGuard-Member-Evidence"
    ]
    member_sids = _sids(member["Properties"]["Policies"][0]["PolicyDocument"]["Statement"])
    custody = {
        sid for sid in central_evidence | central_nuke | member_sids if sid.startswith(CUSTODY_SID_PREFIX)
    }
    # Then the central role copies, locks and reads locks in its own account; Nuke reads locks; the member
    # copies, shares and uses the custody key; and no custody statement is on both sides
    assert {s for s in central_evidence if s.startswith(CUSTODY_SID_PREFIX)} == {
        "CustodyCopyAndLock",
        "CustodyReadLocks",
        "CustodyKey",
    }
    assert {s for s in central_nuke if s.startswith(CUSTODY_SID_PREFIX)} == {"CustodyVerify"}
    assert {s for s in member_sids if s.startswith(CUSTODY_SID_PREFIX)} == {
        "CustodyTransferCopy",
        "CustodyShareOnlyIncidentSnapshots",
        "CustodyKeyThroughEbs",
        "CustodyMemberKeysThroughEbs",
    }
    assert len(custody) == 8
    # And the member may share only snapshots tagged as an incident's
    (share,) = [
        _unwrapped(e)[1]  # type: ignore[index]
        for e in member["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
        if _unwrapped(e)[1]["Sid"] == "CustodyShareOnlyIncidentSnapshots"  # type: ignore[index]
    ]
    assert share["Condition"] == {"StringLike": {"aws:ResourceTag/immutable-guard:incident": "*"}}


@pytest.mark.parametrize("function", sorted(MEMBER_ROLE_OF))
def test_each_member_role_holds_exactly_its_functions_statements_on_the_workload(function: str) -> None:
    # Given the function's statements in template.yaml that act on the workload (not on the guard's own
    # ledger, topic, key, queue, bucket or state machine)
    central = _central_statements(function)
    assert central, function
    # Then its member role holds the same statements: Sid, actions, resources (any region), tag conditions
    assert _member_statements(MEMBER_ROLE_OF[function]) == central


def test_detect_moves_interfaces_only_in_single_account_mode() -> None:
    # Detect's first response (issue 15) isolates in its own account; in an organisation Detect only reads
    # member accounts through the Reader role, and the workflow isolates.
    granted = [
        _unwrapped(entry)
        for document in function_policies(TEMPLATE, "DetectFunction")
        for entry in document["Statement"]
    ]
    moving = [
        condition
        for condition, statement in granted
        if "ec2:ModifyNetworkInterfaceAttribute" in as_list(statement.get("Action", []))
    ]
    assert moving == ["SingleAccountMode"]
    reader = _member_statements(MEMBER_ROLE_OF["DetectFunction"])
    assert not any("ec2:Modify" in json.dumps(statement) for statement in reader.values())


def test_the_mirror_sees_a_drift() -> None:
    # Given Nuke's statements with the tag condition dropped from its member copy
    member = _member_statements("ImmutableGuard-Member-Nuke")
    member["NukeOnlyQuarantinedInstances"] = {**member["NukeOnlyQuarantinedInstances"], "Condition": {}}
    # Then they differ from the central ones
    assert member != _central_statements("NukeFunction")


def test_the_member_roles_serve_every_region_but_only_their_own_account() -> None:
    for name, role in member_roles().items():
        for policy in role.get("Policies", []):
            for statement in statements(policy["PolicyDocument"]):
                for resource in as_list(statement.get("Resource", [])):
                    if resource == "*" or name == "ImmutableGuard-Member-EventForwarder":
                        continue
                    if statement.get("Sid") == "CustodyKeyThroughEbs":
                        # The security account's custody key, which the member uses through EBS only
                        assert resource.split(":")[4] == SECURITY_ACCOUNT, (name, resource)
                        continue
                    account = resource.split(":")[4]
                    assert account in (MEMBER_ACCOUNT, "", "*"), (name, resource)
                    if account == "*":  # the declared stacks' ARNs: any account, as template.yaml says
                        assert ":cloudformation:" in resource, (name, resource)


# ---------------------------------------------------------------------------------------- forwarding rules
def test_each_forwarding_rule_hears_exactly_what_a_rule_of_detect_hears() -> None:
    detect = _detect_events()
    forwarded = {
        logical_id.removeprefix("Forward"): resource["Properties"]["EventPattern"]
        for logical_id, resource in MEMBER_REGIONAL["Resources"].items()
        if resource["Type"] == "AWS::Events::Rule"
    }
    # (the management account's rule forwards what Onboard hears: the test below)
    forwarded.pop(ORGANIZATION_EVENTS_RULE.removeprefix("Forward"))
    assert forwarded == detect
    # onboarding.py counts them in every account-region
    from immutable_guard.onboarding import FORWARDING_RULES

    assert len(forwarded) == FORWARDING_RULES


# The management account's rule for the Onboard function (ForwardOrganizationEvents=true only).
ORGANIZATION_EVENTS_RULE = "ForwardAccountJoined"


def test_the_management_accounts_rule_forwards_exactly_what_onboard_hears() -> None:
    rule = MEMBER_REGIONAL["Resources"][ORGANIZATION_EVENTS_RULE]
    onboard = TEMPLATE["Resources"]["OnboardFunction"]["Properties"]["Events"]["AccountJoined"]["Properties"]
    assert rule["Properties"]["EventPattern"] == onboard["Pattern"]
    assert rule["Condition"] == "OrganizationEventsForwarded"
    assert MEMBER_REGIONAL["Parameters"]["ForwardOrganizationEvents"]["Default"] == "false"
    # Onboard hears them on the organisation bus only
    assert onboard["EventBusName"] == {"Ref": "OrganizationEventBus"}
    assert TEMPLATE["Resources"]["OnboardFunction"]["Condition"] == "OrganizationMode"


def _detect_events() -> dict[str, Any]:
    """Detect's rules (DetectFunction<Name>, targeting Detect or, in organisation mode, its queue): the
    event pattern of each, by name."""
    return {
        rule.logical_id.removeprefix("DetectFunction"): rule.pattern
        for rule in event_rules(TEMPLATE)
        if rule.function_logical_id == "DetectFunction"
    }


def test_each_forwarding_rule_sends_straight_to_the_organisation_bus_with_the_forwarder_role() -> None:
    translated, resolver = member_template("member-regional.yaml")
    rules = [r for r in translated["Resources"].values() if r["Type"] == "AWS::Events::Rule"]
    assert len(rules) == len(_detect_events()) + 1  # and the management account's ForwardAccountJoined
    for rule in rules:
        properties = resolver.resolve(rule["Properties"])
        assert properties.get("EventBusName", "default") == "default"
        (target,) = properties["Targets"]
        assert target["Arn"] == BUS_ARN
        assert target["RoleArn"] == f"arn:aws:iam::{MEMBER_ACCOUNT}:role/ImmutableGuard-Member-EventForwarder"
        assert target["DeadLetterConfig"]["Arn"].startswith(f"arn:aws:sqs:{REGION}:")
