"""The IAM actions each function and state machine of template.yaml was seen using: the committed manifest
(observed_calls.json, logical id -> sorted actions), the runs that produce it, and the few grants that no
run reaches, each with the reason it is kept. The manifest holds, beside them, the actions each member role
of organization/member-roles.yaml was seen used for (role name -> sorted actions): the calls a central
function made in a member account with that role's credentials (test_member_role_grants.py holds the
roles to them).

The local runtime writes every call a deployed function or state machine makes, mapped to its IAM actions
(immutable_guard.local.call_log), while the suite runs. tests/conftest.py then holds each test to the
manifest (a call outside it fails the test), and test_least_privilege.py holds template.yaml to the
manifest plus the grants below (nothing more, nothing less).

Regenerate the manifest after a change of what a function calls: ``make observed-calls`` (it runs the
RECORDING_SOURCES below with ``pytest --record-calls``), then grant exactly the difference in template.yaml
(a member role's, in organization/member-roles.yaml).
"""

from __future__ import annotations

import json
from pathlib import Path

from immutable_guard.local.call_log import Entry, actions_by_principal

MANIFEST = Path(__file__).resolve().parent / "observed_calls.json"

# The runs the manifest is recorded from (pytest node ids, relative to the repository): the drill and every
# e2e test on the local runtime, the fault matrix's runs without a fault, and every sample event through
# Detect (paths no e2e scenario takes).
RECORDING_SOURCES = (
    "tests/e2e",
    "tests/reliability/test_fault_matrix.py::test_without_faults_the_remediation_succeeds_and_every_invariant_holds",
    "tests/reliability/test_fault_matrix.py::test_without_faults_the_stack_replaces_its_server_and_every_invariant_holds",
    "tests/security/test_least_privilege.py::test_every_sample_event_through_detect_calls_only_what_the_manifest_holds",
)

# Grants no recorded run reaches, and why each is still needed. Every entry must be granted and must not be
# in the manifest (once a run reaches it, it belongs there instead).
_NO_LOAD_BALANCER = "the golden workload's servers are in no target group (no run has a load balancer)"
NOT_OBSERVED: dict[str, dict[str, str]] = {
    "DetectFunction": {
        "ec2:DescribeInstanceConnectEndpoints": (
            "tells apart two VPCs that hold a tunnel's private address by the endpoint's VPC "
            "(detection/paths/shell.py); every recorded world has one VPC"
        ),
        # Organisation mode: Lambda's event source mapping reads DetectQueue with the function's role; the
        # local runtime's poller (local/event_source_mappings.py) reads it as the runtime, not as Detect.
        "sqs:ReceiveMessage": "Lambda's event source mapping polls DetectQueue as Detect's role",
        "sqs:DeleteMessage": "as sqs:ReceiveMessage: the mapping deletes what Detect judged",
        "sqs:GetQueueAttributes": "as sqs:ReceiveMessage: the mapping reads the queue's attributes",
    },
    "EvidenceFunction": {
        # Organisation mode: EBS uses the custody key on the role's behalf (kms:ViaService) while it
        # copies; the function itself calls no KMS API, and the local AWS makes no KMS call for EBS.
        "kms:CreateGrant": "EBS creates a grant on the custody key for the copy, as the caller",
        "kms:Decrypt": "as kms:CreateGrant",
        "kms:DescribeKey": "as kms:CreateGrant",
        "kms:GenerateDataKeyWithoutPlaintext": "as kms:CreateGrant",
        "kms:ReEncryptFrom": "as kms:CreateGrant",
        "kms:ReEncryptTo": "as kms:CreateGrant",
    },
    "QuarantineFunction": {
        "ec2:CreateNetworkAclEntry": (
            "IsolationDepth=network-acl only; every recorded run isolates with security groups (the default)"
        ),
        "iam:GetInstanceProfile": (
            "records the roles of the profile it drops; the golden workload's servers carry no profile"
        ),
        "ec2:DescribeSecurityGroupRules": (
            "finds the direction of an offending rule that a ModifySecurityGroupRules event names by id "
            "only (remediation/offending_rules.py); no run modifies a rule that way"
        ),
        "ec2:DescribeNetworkAcls": (
            "reads the network ACL entry an attacker created before deleting it "
            "(remediation/offending_rules.py); no run opens a network ACL"
        ),
        "ec2:DeleteNetworkAclEntry": "as ec2:DescribeNetworkAcls",
        "ec2:DisassociateIamInstanceProfile": (
            "drops the instance's credentials; the golden workload's servers carry no instance profile"
        ),
    },
    "ReleaseFunction": {
        "ec2:DescribeIamInstanceProfileAssociations": (
            "gives back the instance profile Contain removed; the golden workload's servers carry none"
        ),
        "ec2:AssociateIamInstanceProfile": "as ec2:DescribeIamInstanceProfileAssociations",
        "iam:PassRole": "AssociateIamInstanceProfile passes the profile's role to EC2",
        "elasticloadbalancing:RegisterTargets": _NO_LOAD_BALANCER,
        "iam:GetInstanceProfile": "checks the profile it gives back still holds the recorded roles; as above",
        "ec2:DescribeNetworkAcls": "removes IsolationDepth=network-acl entries; no recorded run adds any",
        "ec2:DeleteNetworkAclEntry": "as ec2:DescribeNetworkAcls",
        "states:StopExecution": (
            "stops the incident's remediation when it still runs; in the drill's release it has ended"
        ),
        "sts:AssumeRole": (
            "organisation mode: releases a member account's instance through its Release role; no "
            "recorded run releases an instance of a member account"
        ),
    },
    "NukeFunction": {
        "ec2:StopInstances": "PostEvidenceAction=stop; every recorded run terminates",
        "ec2:DescribeNetworkAcls": (
            "frees a terminated instance's IsolationDepth=network-acl entries; no recorded run adds any"
        ),
        "ec2:DeleteNetworkAclEntry": "as ec2:DescribeNetworkAcls",
    },
}


# ---------------------------------------------------------------------- member roles

# Each member role of organization/member-roles.yaml that central functions act through -> those functions
# (docs/organization.md, "Who can assume what"). The EventForwarder role is EventBridge's, not a function's.
MEMBER_ROLE_FUNCTIONS: dict[str, tuple[str, ...]] = {
    "ImmutableGuard-Member-Reader": ("DetectFunction", "OnboardFunction"),
    "ImmutableGuard-Member-Quarantine": ("QuarantineFunction",),
    "ImmutableGuard-Member-Evidence": ("EvidenceFunction",),
    "ImmutableGuard-Member-Replace": ("ReplaceFunction",),
    "ImmutableGuard-Member-Nuke": ("NukeFunction",),
    "ImmutableGuard-Member-Release": ("ReleaseFunction",),
}
# A member role mirrors its function's statements (test_trust_model.py), and the function runs the same code
# in a member account as in its own. A grant its function was seen using in its own account, that no
# organisation run reaches through the member role, is kept with this reason (followed by the function's
# logical id); the test holds each such entry to the function's part of the manifest.
SEEN_AS_ITS_FUNCTION = "no organisation run takes this path; seen used by its function in its own account:"
# ... and a grant its function keeps unobserved too, with the function's reason (held to NOT_OBSERVED).
KEPT_AS_ITS_FUNCTION = "no run takes this path; kept, as by"


def _seen_as(function: str, *actions: str) -> dict[str, str]:
    return {action: f"{SEEN_AS_ITS_FUNCTION} {function}" for action in actions}


def _kept_as(function: str, *actions: str) -> dict[str, str]:
    return {
        action: f"{KEPT_AS_ITS_FUNCTION} {function}: {NOT_OBSERVED[function][action]}" for action in actions
    }


# Member-role grants no recorded run uses through the member role, and why each is still needed (as
# NOT_OBSERVED: each must be granted and must not be in the manifest). The recording's organisation runs are
# the organisation drill and tests/e2e/test_organization_*.py, test_onboarding_local.py.
MEMBER_NOT_OBSERVED: dict[str, dict[str, str]] = {
    "ImmutableGuard-Member-Reader": {
        **_seen_as(
            "DetectFunction",
            "autoscaling:DescribeAutoScalingGroups",
            "ec2:DescribeIamInstanceProfileAssociations",
            "ec2:DescribeNetworkAcls",
            "ec2:DescribeRouteTables",
            "ec2:DescribeSecurityGroups",
            "iam:GetInstanceProfile",
            "iam:ListEntitiesForPolicy",
            "iam:ListInstanceProfilesForRole",
        ),
        **_kept_as("DetectFunction", "ec2:DescribeInstanceConnectEndpoints"),
    },
    "ImmutableGuard-Member-Quarantine": {
        **_seen_as(
            "QuarantineFunction",
            "ec2:RevokeSecurityGroupIngress",
            "elasticloadbalancing:DeregisterTargets",
            "elasticloadbalancing:DescribeTargetGroupAttributes",
            "elasticloadbalancing:DescribeTargetHealth",
            "elasticloadbalancing:ModifyTargetGroupAttributes",
        ),
        **_kept_as(
            "QuarantineFunction",
            "ec2:CreateNetworkAclEntry",
            "ec2:DeleteNetworkAclEntry",
            "ec2:DescribeNetworkAcls",
            "ec2:DescribeSecurityGroupRules",
            "ec2:DisassociateIamInstanceProfile",
            "iam:GetInstanceProfile",
        ),
    },
    "ImmutableGuard-Member-Evidence": {
        # The member's custody statements: EBS uses the security account's custody key (and the member's
        # own key of an encrypted volume) on the role's behalf while it makes the transfer copy; the local
        # AWS makes no KMS call for EBS.
        "kms:CreateGrant": (
            "EBS creates a grant on the custody key (or the volume's own key) for the copy, as the caller"
        ),
        "kms:Decrypt": "as kms:CreateGrant",
        "kms:DescribeKey": "as kms:CreateGrant",
        "kms:GenerateDataKeyWithoutPlaintext": "as kms:CreateGrant",
        "kms:ReEncryptFrom": "as kms:CreateGrant",
        "kms:ReEncryptTo": "as kms:CreateGrant",
    },
    "ImmutableGuard-Member-Replace": {
        **_seen_as(
            "ReplaceFunction",
            "autoscaling:DescribeAutoScalingInstances",
            "cloudformation:DescribeStackResource",
            "cloudformation:DescribeStacks",
            "cloudformation:UpdateStack",
        ),
        "iam:PassRole": (
            "ReplacementStackRoleName only: UpdateStack passes the operator's stack role to CloudFormation; "
            "no recorded run names one (nor template.yaml's ReplacementStackRoleArn)"
        ),
    },
    "ImmutableGuard-Member-Nuke": {
        **_seen_as("NukeFunction", "cloudformation:DescribeStackResource", "cloudformation:DescribeStacks"),
        **_kept_as(
            "NukeFunction", "ec2:DeleteNetworkAclEntry", "ec2:DescribeNetworkAcls", "ec2:StopInstances"
        ),
    },
    "ImmutableGuard-Member-Release": {
        **_seen_as(
            "ReleaseFunction",
            "ec2:DeleteTags",
            "ec2:DescribeInstances",
            "ec2:ModifyInstanceAttribute",
            "ec2:ModifyNetworkInterfaceAttribute",
        ),
        **_kept_as(
            "ReleaseFunction",
            "ec2:AssociateIamInstanceProfile",
            "ec2:DeleteNetworkAclEntry",
            "ec2:DescribeIamInstanceProfileAssociations",
            "ec2:DescribeNetworkAcls",
            "elasticloadbalancing:RegisterTargets",
            "iam:GetInstanceProfile",
            "iam:PassRole",
        ),
    },
    "ImmutableGuard-Member-EventForwarder": {
        "events:PutEvents": (
            "EventBridge forwards the member-regional rules' events with it, not a function; the local "
            "runtime forwards with the account's own credentials (local/forwarding.py)"
        ),
    },
}


def load_manifest(path: Path = MANIFEST) -> dict[str, list[str]]:
    if not path.exists():
        return {}
    manifest: dict[str, list[str]] = json.loads(path.read_text("utf-8"))
    return manifest


def allowed(manifest: dict[str, list[str]]) -> dict[str, set[str]]:
    """Principal -> every action it may call: what was observed and what is kept without being observed."""
    found = {name: set(actions) for name, actions in manifest.items()}
    for name, kept in (*NOT_OBSERVED.items(), *MEMBER_NOT_OBSERVED.items()):
        found.setdefault(name, set()).update(kept)
    return found


def outside(entries: list[Entry], manifest: dict[str, list[str]]) -> list[str]:
    """``principal: action (operation)`` of each logged call that neither the manifest nor NOT_OBSERVED
    holds."""
    permitted = allowed(manifest)
    return sorted(
        {
            f"{entry.principal}: {entry.action} ({entry.operation})"
            for entry in entries
            if entry.action not in permitted.get(entry.principal, set())
        }
    )


def write_manifest(entries: list[Entry], path: Path = MANIFEST) -> dict[str, list[str]]:
    manifest = actions_by_principal(entries)
    path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def stale(manifest: dict[str, list[str]], entries: list[Entry]) -> list[str]:
    """``principal: action`` of each manifest action that no logged call used (with every recording run
    in the log, a call the code no longer makes)."""
    seen = actions_by_principal(entries)
    return sorted(
        f"{name}: {action}"
        for name, actions in manifest.items()
        for action in actions
        if action not in seen.get(name, [])
    )
