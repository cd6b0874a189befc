"""The golden image a replacement is built from: launch template versions created, deleted or made the
default, and an Auto Scaling group pointed at another launch template or configuration. The guard would
otherwise replace a compromised server from the attacker's image, so such a change is alerted (critical)
whenever it reaches an in-scope server; the running servers themselves are unchanged, so none is
quarantined for it (the policy keeps this kind alert-only), and Replace refuses a template that changed
after the incident opened."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from botocore.exceptions import BotoCoreError, ClientError

from immutable_guard.detection.readers import Facts, Handler, as_dict, first_of, text_of
from immutable_guard.detection.scope_resolvers import Resolver
from immutable_guard.errors import ScopeResolutionFailed
from immutable_guard.model import Kind, Severity

if TYPE_CHECKING:
    from immutable_guard.clients import Clients
    from immutable_guard.detection.events import CloudTrailDetail

TEMPLATE_NAME_PREFIX: Final = "launch-template/"
"""Resource id of a launch template known by name only: "launch-template/<name>" (by id: "lt-...")."""

GROUP_PREFIX: Final = "autoScalingGroup/"
"""Resource id of an Auto Scaling group: "autoScalingGroup/<name>" (the word of its ARN)."""

LAUNCH_TEMPLATE_ID_TAG: Final = "aws:ec2launchtemplate:id"
"""EC2 tags every instance launched from a launch template with the template's id."""

_EC2: Final = "ec2.amazonaws.com"
_AUTOSCALING: Final = "autoscaling.amazonaws.com"


def _template_ref(
    request: dict[str, Any], response: dict[str, Any], name: str
) -> tuple[str | None, str | None]:
    """(id, name) of the launch template, from the wrapped request or the response."""
    wrapped = as_dict(first_of(request, f"{name}Request")) or request
    answered = as_dict(first_of(response, f"{name}Response")) or response
    returned = as_dict(
        first_of(
            answered, "launchTemplateVersion", "LaunchTemplateVersion", "launchTemplate", "LaunchTemplate"
        )
    )
    template_id = text_of(first_of(wrapped, "LaunchTemplateId", "launchTemplateId")) or text_of(
        first_of(returned, "launchTemplateId", "LaunchTemplateId")
    )
    template_name = text_of(first_of(wrapped, "LaunchTemplateName", "launchTemplateName")) or text_of(
        first_of(returned, "launchTemplateName", "LaunchTemplateName")
    )
    return template_id, template_name


def _template_ids(template_id: str | None, template_name: str | None) -> list[str | None]:
    return [
        template_id if template_id else (f"{TEMPLATE_NAME_PREFIX}{template_name}" if template_name else None)
    ]


def _launch_template_version(detail: CloudTrailDetail) -> Facts:
    request, response = detail.request_parameters or {}, detail.response_elements or {}
    template_id, template_name = _template_ref(request, response, detail.event_name)
    wrapped = as_dict(first_of(request, f"{detail.event_name}Request")) or request
    answered = as_dict(first_of(response, f"{detail.event_name}Response")) or response
    version = as_dict(first_of(answered, "launchTemplateVersion", "LaunchTemplateVersion"))
    data = as_dict(first_of(wrapped, "LaunchTemplateData", "launchTemplateData"))
    number = first_of(version, "versionNumber", "VersionNumber")
    image = text_of(first_of(data, "ImageId", "imageId"))
    target = template_id or template_name or "a launch template"
    return Facts(
        Kind.GOLDEN_IMAGE_CHANGED,
        Severity.CRITICAL,
        f"New version {number if number is not None else '?'} of launch template {target}"
        f"{f' (image {image})' if image else ''}: servers launched from $Latest, and every replacement the "
        "guard asks for, may be built from it.",
        resource_ids=_template_ids(template_id, template_name),
        evidence={
            "launch_template_id": template_id,
            "launch_template_name": template_name,
            "version_number": number if isinstance(number, int | str) else None,
            "image_id": image,
            "source_version": text_of(first_of(wrapped, "SourceVersion", "sourceVersion")),
        },
    )


def _modify_launch_template(detail: CloudTrailDetail) -> Facts:
    request, response = detail.request_parameters or {}, detail.response_elements or {}
    template_id, template_name = _template_ref(request, response, detail.event_name)
    wrapped = as_dict(first_of(request, "ModifyLaunchTemplateRequest")) or request
    default = first_of(wrapped, "SetDefaultVersion", "setDefaultVersion", "DefaultVersion", "defaultVersion")
    default_version = str(default)[:32] if isinstance(default, int | str) and default != "" else None
    target = template_id or template_name or "a launch template"
    return Facts(
        Kind.GOLDEN_IMAGE_CHANGED,
        Severity.CRITICAL,
        f"Default version of launch template {target} set to {default_version or '?'}: servers launched "
        "from $Default, and replacements, may be built from it.",
        resource_ids=_template_ids(template_id, template_name),
        evidence={
            "launch_template_id": template_id,
            "launch_template_name": template_name,
            "default_version": default_version,
        },
    )


def _delete_launch_template_versions(detail: CloudTrailDetail) -> Facts:
    request, response = detail.request_parameters or {}, detail.response_elements or {}
    template_id, template_name = _template_ref(request, response, detail.event_name)
    target = template_id or template_name or "a launch template"
    # Deleting the newest version makes an older one $Latest: possibly an image with known holes.
    return Facts(
        Kind.GOLDEN_IMAGE_CHANGED,
        Severity.CRITICAL,
        f"Versions of launch template {target} deleted: what $Latest launches may now be an older image.",
        resource_ids=_template_ids(template_id, template_name),
        evidence={"launch_template_id": template_id, "launch_template_name": template_name},
    )


_LAUNCH_SOURCE_FIELDS: Final = ("launchTemplate", "launchConfigurationName", "mixedInstancesPolicy")


def _update_auto_scaling_group(detail: CloudTrailDetail) -> Facts:
    request = detail.request_parameters or {}
    group = text_of(first_of(request, "autoScalingGroupName", "AutoScalingGroupName"))
    changed = {
        field: first_of(request, field, field[:1].upper() + field[1:])
        for field in _LAUNCH_SOURCE_FIELDS
        if first_of(request, field, field[:1].upper() + field[1:]) is not None
    }
    if not changed:
        # Capacity, health checks, subnets: nothing the next server is built from. No resource is named,
        # so nothing is resolved and the policy ignores it.
        return Facts(
            Kind.GOLDEN_IMAGE_CHANGED,
            Severity.LOW,
            f"Auto Scaling group {group or '?'} updated without changing its launch template or "
            "configuration.",
            evidence={"auto_scaling_group_name": group, "launch_source_changed": False},
        )
    template = as_dict(changed.get("launchTemplate"))
    source = (
        text_of(first_of(template, "launchTemplateId", "LaunchTemplateId"))
        or text_of(first_of(template, "launchTemplateName", "LaunchTemplateName"))
        or text_of(changed.get("launchConfigurationName"))
        or ("a mixed instances policy" if "mixedInstancesPolicy" in changed else "?")
    )
    version = text_of(first_of(template, "version", "Version"))
    which = f"{source} version {version}" if version else source
    return Facts(
        Kind.GOLDEN_IMAGE_CHANGED,
        Severity.CRITICAL,
        f"Auto Scaling group {group or '?'} now launches from {which}: "
        "its next servers, and every replacement, are built from it.",
        resource_ids=[f"{GROUP_PREFIX}{group}" if group else None],
        evidence={"auto_scaling_group_name": group, "launch_source_changed": True, "launch_source": changed},
        alert_if_unresolved=group is None,
    )


HANDLERS: Final[dict[tuple[str, str], Handler]] = {
    (_EC2, "CreateLaunchTemplateVersion"): _launch_template_version,
    (_EC2, "ModifyLaunchTemplate"): _modify_launch_template,
    (_EC2, "DeleteLaunchTemplateVersions"): _delete_launch_template_versions,
    (_AUTOSCALING, "UpdateAutoScalingGroup"): _update_auto_scaling_group,
}
"""(eventSource, eventName) -> handler, for the CloudTrail records of this path."""


# ---------------------------------------------------------------- template / group -> servers


def _failure(what: str, exc: Exception) -> ScopeResolutionFailed:
    code = exc.response.get("Error", {}).get("Code", "") if isinstance(exc, ClientError) else ""
    return ScopeResolutionFailed(f"could not resolve instances from {what}: {code or type(exc).__name__}")


def _group_templates(group: dict[str, Any]) -> list[dict[str, Any]]:
    """The launch template specifications a group launches from (directly or in a mixed policy)."""
    mixed = as_dict(as_dict(group.get("MixedInstancesPolicy")).get("LaunchTemplate"))
    specs = [as_dict(group.get("LaunchTemplate")), as_dict(mixed.get("LaunchTemplateSpecification"))]
    specs += [
        as_dict(override.get("LaunchTemplateSpecification"))
        for override in mixed.get("Overrides") or []
        if isinstance(override, dict)
    ]
    return [spec for spec in specs if spec]


def _live_members(group: dict[str, Any]) -> list[str]:
    return [m["InstanceId"] for m in group.get("Instances", []) if isinstance(m, dict) and "InstanceId" in m]


def _template_servers(clients: Clients, resource_ids: list[str]) -> list[str]:
    ids = {r for r in resource_ids if r.startswith("lt-")}
    names = {r[len(TEMPLATE_NAME_PREFIX) :] for r in resource_ids if r.startswith(TEMPLATE_NAME_PREFIX)}
    found: list[str] = []
    try:
        for page in clients.autoscaling.get_paginator("describe_auto_scaling_groups").paginate():
            for group in page.get("AutoScalingGroups", []):
                specs = _group_templates(dict(group))
                if any(
                    s.get("LaunchTemplateId") in ids or s.get("LaunchTemplateName") in names for s in specs
                ):
                    found += _live_members(dict(group))
    except (ClientError, BotoCoreError) as exc:
        raise _failure(f"launch templates {', '.join(sorted(ids | names)[:3])}", exc) from exc
    # Servers launched from the template directly (a stack's instance) carry its id as a tag.
    if ids:
        try:
            pages = clients.ec2.get_paginator("describe_instances").paginate(
                Filters=[{"Name": f"tag:{LAUNCH_TEMPLATE_ID_TAG}", "Values": sorted(ids)}]
            )
            found += [
                i["InstanceId"]
                for page in pages
                for r in page.get("Reservations", [])
                for i in r.get("Instances", [])
            ]
        except (ClientError, BotoCoreError) as exc:
            raise _failure(f"launch templates {', '.join(sorted(ids)[:3])}", exc) from exc
    return found


def _group_servers(clients: Clients, resource_ids: list[str]) -> list[str]:
    names = [r[len(GROUP_PREFIX) :] for r in resource_ids]
    found: list[str] = []
    for start in range(0, len(names), 50):  # DescribeAutoScalingGroups takes at most 50 names
        chunk = names[start : start + 50]
        try:
            pages = clients.autoscaling.get_paginator("describe_auto_scaling_groups").paginate(
                AutoScalingGroupNames=chunk
            )
            found += [
                i for page in pages for g in page.get("AutoScalingGroups", []) for i in _live_members(dict(g))
            ]
        except (ClientError, BotoCoreError) as exc:
            raise _failure(f"Auto Scaling groups {', '.join(chunk[:3])}", exc) from exc
    return found


def _starts_with(prefix: str) -> Any:
    return lambda resource_id: resource_id.startswith(prefix) and len(resource_id) > len(prefix)


RESOLVERS: Final[tuple[Resolver, ...]] = (
    Resolver(
        "launch template",
        lambda r: _starts_with("lt-")(r) or _starts_with(TEMPLATE_NAME_PREFIX)(r),
        _template_servers,
    ),
    Resolver("Auto Scaling group", _starts_with(GROUP_PREFIX), _group_servers),
)
"""A launch template reaches the members of every group launching from it and the servers launched from
it directly; a group, its members. Their scope (tag, ScopeAutoScalingGroupNames, ScopeStackNames) is then
judged as for any server."""
