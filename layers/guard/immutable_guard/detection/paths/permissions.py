"""What an immutable server may do through its role: policies attached to, put on or removed from the role
behind its instance profile, a new default version of a managed policy attached to it, its trust policy
and permissions boundary, the role swapped inside the profile, and the profile taken off the instance.
A role is shared by every instance whose profile carries it, so one change reaches all of them."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final

from botocore.exceptions import BotoCoreError, ClientError

from immutable_guard.detection.readers import Facts, Handler, as_dict, first_of, text_of
from immutable_guard.detection.scope_resolvers import Resolver
from immutable_guard.errors import ScopeResolutionFailed
from immutable_guard.model import Kind, Severity

if TYPE_CHECKING:
    from immutable_guard.clients import Clients
    from immutable_guard.detection.events import CloudTrailDetail

ROLE_PREFIX: Final = "role/"
"""Resource ids of this path name a role as "role/<RoleName>" (IAM's requests carry the name, not the
ARN; the prefix keeps it apart from the ids of other paths)."""

PROFILE_PREFIX: Final = "instance-profile/"
"""And an instance profile as "instance-profile/<InstanceProfileName>"."""

_IAM: Final = "iam.amazonaws.com"

# What each IAM call does to the role, and how bad it is. Granting (a policy attached or put, the
# boundary deleted, the trust widened) is critical; taking a policy away is still a change of a running
# server's permissions (a removed policy may have been a Deny), so it is high, not ignored.
_ROLE_CALLS: Final[dict[str, tuple[str, Severity]]] = {
    "AttachRolePolicy": ("managed policy {policy} attached to", Severity.CRITICAL),
    "DetachRolePolicy": ("managed policy {policy} detached from", Severity.HIGH),
    "PutRolePolicy": ("inline policy {policy} put on", Severity.CRITICAL),
    "DeleteRolePolicy": ("inline policy {policy} deleted from", Severity.HIGH),
    "UpdateAssumeRolePolicy": ("trust policy changed on", Severity.CRITICAL),
    "PutRolePermissionsBoundary": ("permissions boundary {policy} set on", Severity.HIGH),
    "DeleteRolePermissionsBoundary": ("permissions boundary deleted from", Severity.CRITICAL),
}


def _role_policy_changed(detail: CloudTrailDetail) -> Facts:
    request = detail.request_parameters or {}
    role = text_of(first_of(request, "roleName", "RoleName"))
    policy = text_of(
        first_of(request, "policyArn", "PolicyArn", "policyName", "PolicyName", "permissionsBoundary")
    )
    what, severity = _ROLE_CALLS[detail.event_name]
    sentence = what.format(policy=policy or "?")
    document = text_of(first_of(request, "policyDocument", "PolicyDocument"))
    return Facts(
        Kind.ROLE_CHANGED,
        severity,
        f"{sentence[:1].upper()}{sentence[1:]} role {role or '?'}: every instance whose profile carries it "
        "may now do something else.",
        resource_ids=[f"{ROLE_PREFIX}{role}" if role else None],
        evidence={"role_name": role, "policy": policy, "policy_document": document},
        alert_if_unresolved=role is None,
    )


def _profile_role_changed(detail: CloudTrailDetail) -> Facts:
    request = detail.request_parameters or {}
    profile = text_of(first_of(request, "instanceProfileName", "InstanceProfileName"))
    role = text_of(first_of(request, "roleName", "RoleName"))
    added = detail.event_name == "AddRoleToInstanceProfile"
    return Facts(
        Kind.ROLE_CHANGED,
        Severity.CRITICAL if added else Severity.HIGH,
        f"Role {role or '?'} {'added to' if added else 'removed from'} instance profile {profile or '?'}: "
        "the instances using the profile run with other permissions.",
        resource_ids=[f"{PROFILE_PREFIX}{profile}" if profile else None],
        evidence={"instance_profile_name": profile, "role_name": role},
        alert_if_unresolved=profile is None,
    )


def _profile_disassociated(detail: CloudTrailDetail) -> Facts:
    request = detail.request_parameters or {}
    response = detail.response_elements or {}
    wrapped = as_dict(first_of(request, "DisassociateIamInstanceProfileRequest")) or request
    association_id = text_of(first_of(wrapped, "AssociationId", "associationId"))
    # The association is gone once disassociated; the response still names its instance.
    answered = as_dict(first_of(response, "DisassociateIamInstanceProfileResponse")) or response
    association = as_dict(
        first_of(answered, "iamInstanceProfileAssociation", "IamInstanceProfileAssociation")
    )
    instance_id = text_of(first_of(association, "instanceId", "InstanceId"))
    profile = as_dict(first_of(association, "iamInstanceProfile", "IamInstanceProfile"))
    profile_arn = text_of(first_of(profile, "arn", "Arn"))
    return Facts(
        Kind.IAM_PROFILE_CHANGED,
        Severity.HIGH,
        f"Instance profile {profile_arn or '?'} disassociated from "
        f"{instance_id or association_id or 'an instance'}.",
        resource_ids=[instance_id, association_id],
        instance_ids=[instance_id],
        evidence={"association_id": association_id, "instance_profile": profile_arn},
        alert_if_unresolved=True,
    )


def _managed_policy_changed(detail: CloudTrailDetail) -> Facts:
    request = detail.request_parameters or {}
    policy_arn = text_of(first_of(request, "policyArn", "PolicyArn"))
    if detail.event_name == "SetDefaultPolicyVersion":
        version, in_force = text_of(first_of(request, "versionId", "VersionId")), True
    else:
        version = None
        flag = first_of(request, "setAsDefault", "SetAsDefault")
        in_force = flag is True or (isinstance(flag, str) and flag.lower() == "true")
    if not in_force:
        # A version that is not the default grants nothing until SetDefaultPolicyVersion (heard too).
        return Facts(
            Kind.ROLE_CHANGED,
            Severity.LOW,
            f"New non-default version of managed policy {policy_arn or '?'}: nothing changes until it is "
            "made the default.",
            evidence={"policy_arn": policy_arn, "in_force": False},
        )
    which = f"version {version}" if version else "new version"
    return Facts(
        Kind.ROLE_CHANGED,
        Severity.CRITICAL,
        f"Managed policy {policy_arn or '?'} now grants what its {which} says: every role it is attached to, "
        "and every instance running with such a role, may do something else.",
        resource_ids=[policy_arn],
        evidence={
            "policy_arn": policy_arn,
            "version_id": version,
            "policy_document": text_of(first_of(request, "policyDocument", "PolicyDocument")),
            "in_force": True,
        },
        alert_if_unresolved=policy_arn is None,
    )


HANDLERS: Final[dict[tuple[str, str], Handler]] = {
    **{(_IAM, name): _role_policy_changed for name in _ROLE_CALLS},
    (_IAM, "CreatePolicyVersion"): _managed_policy_changed,
    (_IAM, "SetDefaultPolicyVersion"): _managed_policy_changed,
    (_IAM, "AddRoleToInstanceProfile"): _profile_role_changed,
    (_IAM, "RemoveRoleFromInstanceProfile"): _profile_role_changed,
    ("ec2.amazonaws.com", "DisassociateIamInstanceProfile"): _profile_disassociated,
}
"""(eventSource, eventName) -> handler, for the CloudTrail records of this path."""

ROLE_EVENT_NAMES: Final = tuple(name for source, name in HANDLERS if source == _IAM)
"""The IAM calls this path hears: the rule of template.yaml and the forwarder of us-east-1 list them."""


# ---------------------------------------------------------------- role -> profiles -> instances


def _failure(what: str, exc: Exception) -> ScopeResolutionFailed:
    code = exc.response.get("Error", {}).get("Code", "") if isinstance(exc, ClientError) else ""
    return ScopeResolutionFailed(f"could not resolve instances from {what}: {code or type(exc).__name__}")


def _no_such_entity(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code", "") == "NoSuchEntity"


def _instances_using(clients: Clients, profile_arns: Iterable[str]) -> list[str]:
    """Instances whose profile is one of these. No API filters associations by profile (and moto lacks
    DescribeInstances' iam-instance-profile.arn filter), so the region's live associations are read and
    matched here: one paginated call, whatever the number of profiles."""
    wanted = set(profile_arns)
    if not wanted:
        return []
    try:
        pages = clients.ec2.get_paginator("describe_iam_instance_profile_associations").paginate(
            Filters=[{"Name": "state", "Values": ["associating", "associated"]}]
        )
        return [
            association["InstanceId"]
            for page in pages
            for association in page.get("IamInstanceProfileAssociations", [])
            if association.get("IamInstanceProfile", {}).get("Arn") in wanted and "InstanceId" in association
        ]
    except (ClientError, BotoCoreError) as exc:
        raise _failure(f"instance profiles {', '.join(sorted(wanted)[:3])}", exc) from exc


def _role_servers(clients: Clients, resource_ids: list[str]) -> list[str]:
    profile_arns: list[str] = []
    for resource_id in resource_ids:
        role = resource_id[len(ROLE_PREFIX) :]
        try:
            pages = clients.iam.get_paginator("list_instance_profiles_for_role").paginate(RoleName=role)
            profile_arns += [p["Arn"] for page in pages for p in page.get("InstanceProfiles", [])]
        except ClientError as exc:
            if _no_such_entity(exc):
                continue  # deleted since: no instance runs with it
            raise _failure(f"role {role}", exc) from exc
        except BotoCoreError as exc:
            raise _failure(f"role {role}", exc) from exc
    return _instances_using(clients, profile_arns)


def _profile_servers(clients: Clients, resource_ids: list[str]) -> list[str]:
    profile_arns: list[str] = []
    for resource_id in resource_ids:
        name = resource_id[len(PROFILE_PREFIX) :]
        try:
            profile_arns.append(
                clients.iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]["Arn"]
            )
        except ClientError as exc:
            if _no_such_entity(exc):
                continue
            raise _failure(f"instance profile {name}", exc) from exc
        except BotoCoreError as exc:
            raise _failure(f"instance profile {name}", exc) from exc
    return _instances_using(clients, profile_arns)


def _policy_servers(clients: Clients, resource_ids: list[str]) -> list[str]:
    roles: list[str] = []
    for policy_arn in resource_ids:
        try:
            pages = clients.iam.get_paginator("list_entities_for_policy").paginate(
                PolicyArn=policy_arn, EntityFilter="Role"
            )
            roles += [f"{ROLE_PREFIX}{r['RoleName']}" for page in pages for r in page.get("PolicyRoles", [])]
        except ClientError as exc:
            if _no_such_entity(exc):
                continue
            raise _failure(f"managed policy {policy_arn}", exc) from exc
        except BotoCoreError as exc:
            raise _failure(f"managed policy {policy_arn}", exc) from exc
    return _role_servers(clients, list(dict.fromkeys(roles)))


def _is_managed_policy(resource_id: str) -> bool:
    return resource_id.startswith("arn:") and ":policy/" in resource_id


def _named(prefix: str) -> Any:
    return lambda resource_id: resource_id.startswith(prefix) and len(resource_id) > len(prefix)


RESOLVERS: Final[tuple[Resolver, ...]] = (
    Resolver("IAM role", _named(ROLE_PREFIX), _role_servers),
    Resolver("instance profile", _named(PROFILE_PREFIX), _profile_servers),
    Resolver("managed policy", _is_managed_policy, _policy_servers),
)
"""A role reaches the instances of every profile that carries it; a profile, the instances using it; a
managed policy (by ARN), the instances of every role it is attached to."""
