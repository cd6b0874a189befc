"""What a replacement would be built from: the launch template versions (with $Latest and $Default
resolved to numbers) or launch configuration of the instance's owner. Contain records it when the
incident opens; Replace reads it again and refuses to rebuild from a golden image that changed since."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from botocore.exceptions import BotoCoreError, ClientError

from immutable_guard.errors import LaunchTemplateChanged

if TYPE_CHECKING:
    from immutable_guard.clients import Clients

PRIOR_STATE_KEY: Final = "launch_source"
"""Key of the incident's prior state under which Contain records the launch source."""

LAUNCH_TEMPLATE_ID_TAG: Final = "aws:ec2launchtemplate:id"
# An instance launched from a template without a group (a stack's) is rebuilt by its stack, whose
# template may name $Latest or $Default: both are watched.
_STANDALONE_VERSIONS: Final = ("$Latest", "$Default")


def _resolved(clients: Clients, template_id: str | None, template_name: str | None, version: str) -> Any:
    """The version number `version` stands for now; None when the template or version is gone."""
    reference: dict[str, Any] = (
        {"LaunchTemplateId": template_id} if template_id else {"LaunchTemplateName": template_name}
    )
    try:
        found = clients.ec2.describe_launch_template_versions(**reference, Versions=[version])
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if "NotFound" in code or "Malformed" in code:
            return None
        raise
    versions = found.get("LaunchTemplateVersions", [])
    return versions[0].get("VersionNumber") if versions else None


def _template_entry(clients: Clients, spec: Mapping[str, Any], default_version: str) -> dict[str, Any]:
    template_id = spec.get("LaunchTemplateId")
    template_name = spec.get("LaunchTemplateName")
    version = str(spec.get("Version") or default_version)
    return {
        "id": template_id,
        "name": template_name,
        "version": version,
        "resolved": _resolved(clients, template_id, template_name, version),
    }


def _group_specs(group: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    mixed = (group.get("MixedInstancesPolicy") or {}).get("LaunchTemplate") or {}
    specs = [group.get("LaunchTemplate"), mixed.get("LaunchTemplateSpecification")]
    specs += [o.get("LaunchTemplateSpecification") for o in mixed.get("Overrides") or []]
    return [spec for spec in specs if spec]


def launch_source(clients: Clients, asg_name: str | None, instance_tags: Mapping[str, str]) -> dict[str, Any]:
    """What the instance's owner would launch now.

    Parameters
    ----------
    clients:
        Needs autoscaling:DescribeAutoScalingGroups and ec2:DescribeLaunchTemplateVersions.
    asg_name:
        The instance's Auto Scaling group, if any.
    instance_tags:
        The instance's tags (``aws:ec2launchtemplate:id`` names the template it was launched from).

    Returns
    -------
    dict
        ``{"auto_scaling_group", "launch_templates": [{"id", "name", "version", "resolved"}],
        "launch_configuration"}``; empty lists when nothing is launched from a template.

    Raises
    ------
    ClientError, BotoCoreError
        When a read fails (the caller decides whether that stops it).
    """
    if asg_name:
        groups = clients.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[asg_name])
        group: Mapping[str, Any] = next(iter(groups.get("AutoScalingGroups", [])), {})
        # A group's template without a version launches $Default.
        return {
            "auto_scaling_group": asg_name,
            "launch_templates": [_template_entry(clients, s, "$Default") for s in _group_specs(group)],
            "launch_configuration": group.get("LaunchConfigurationName"),
        }
    template_id = instance_tags.get(LAUNCH_TEMPLATE_ID_TAG)
    templates = (
        [
            _template_entry(clients, {"LaunchTemplateId": template_id, "Version": v}, v)
            for v in _STANDALONE_VERSIONS
        ]
        if template_id
        else []
    )
    return {"auto_scaling_group": None, "launch_templates": templates, "launch_configuration": None}


def record_launch_source(
    clients: Clients, asg_name: str | None, instance_tags: Mapping[str, str]
) -> dict[str, Any]:
    """`launch_source` for Contain, which must isolate the server whatever happens: a failed read is
    recorded as unknown (Replace then cannot prove a change, and says so), never raised."""
    try:
        return launch_source(clients, asg_name, instance_tags)
    except (ClientError, BotoCoreError) as exc:
        return {"unknown": f"{type(exc).__name__}: {str(exc)[:200]}"}


def _comparable(source: Mapping[str, Any]) -> tuple[Any, ...]:
    templates = sorted(
        (str(t.get("id")), str(t.get("name")), str(t.get("version")), str(t.get("resolved")))
        for t in source.get("launch_templates") or []
    )
    return (source.get("auto_scaling_group"), tuple(templates), source.get("launch_configuration"))


def verify_launch_source(
    clients: Clients, incident_id: str, recorded: Any, asg_name: str | None, instance_tags: Mapping[str, str]
) -> dict[str, Any]:
    """Refuse to replace from a launch source that changed since the incident opened.

    Returns
    -------
    dict
        ``{"verified": bool, "launch_source": now}``; not verified when nothing was recorded (an incident
        opened before recording existed, or Contain could not read it).

    Raises
    ------
    LaunchTemplateChanged
        The group's launch template, version (or what $Latest / $Default resolve to) or launch
        configuration differs from the one recorded when the incident opened.
    """
    known = isinstance(recorded, dict) and "launch_templates" in recorded
    # The instance left its group during Contain; the group Contain saw is the one that will launch.
    recorded_group = recorded.get("auto_scaling_group") if known else None
    now = launch_source(clients, asg_name or (str(recorded_group) if recorded_group else None), instance_tags)
    if not known:
        return {"verified": False, "launch_source": now}
    if _comparable(now) != _comparable(recorded):
        raise LaunchTemplateChanged(
            f"incident {incident_id}: the launch source changed after the incident opened "
            f"(recorded {_describe(recorded)}, now {_describe(now)}); refusing to build the replacement "
            "from it: check the template, then replace the server by hand"
        )
    return {"verified": True, "launch_source": now}


def _describe(source: Mapping[str, Any]) -> str:
    parts = []
    for template in source.get("launch_templates") or []:
        named = " ".join(str(n) for n in (template.get("name"), template.get("id")) if n)
        parts.append(f"{named} {template.get('version')}={template.get('resolved')}")
    if source.get("launch_configuration"):
        parts.append(f"launch configuration {source['launch_configuration']}")
    return ", ".join(parts) or "no launch template"
