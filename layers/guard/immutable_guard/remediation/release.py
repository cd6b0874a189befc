"""Release: undo a quarantine that was a false positive, from the prior state Contain recorded, while the
instance still exists. A person invokes it; nothing in the pipeline does."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, ConfigDict, Field

from immutable_guard.alerts import Alert, console_links, publish_alert
from immutable_guard.errors import AwsCallFailed, InstanceNotFound, ReleaseRefused, error_code
from immutable_guard.ledger import Incident, IncidentLedger, Status
from immutable_guard.remediation.network_acl import DETAIL_KEY as ACL_DETAIL_KEY
from immutable_guard.remediation.network_acl import remove_entries
from immutable_guard.remediation.quarantine import (
    PARTIAL,
    PRIOR_TARGET_GROUPS,
    SPOT,
    STAGE_CONTAINED,
    TAG_INCIDENT,
    TAG_STATE,
    call_aws,
    call_on_instance,
    describe_instance,
    instance_profile_identity,
)

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_iam import IAMClient

    from immutable_guard.clients import Clients

STAGE_RELEASED = "released"


class ReleaseRequest(BaseModel):
    """What a person (through `immutable-guard release`) sends the Release function."""

    model_config = ConfigDict(extra="forbid")

    incident_id: str = Field(min_length=1)


def _restore_network_interfaces(
    ec2: EC2Client, instance: Mapping[str, Any], prior: Mapping[str, Any], actions: list[str]
) -> list[dict[str, Any]]:
    attached = {eni["NetworkInterfaceId"]: eni for eni in instance.get("NetworkInterfaces", [])}
    restored = []
    for eni in prior.get("network_interfaces", []):
        eni_id, groups = eni["eni"], list(eni["groups"])
        current = attached.get(eni_id)
        if current is None:
            actions.append(f"{eni_id} is no longer attached; its groups were not restored")
            continue
        if [g["GroupId"] for g in current.get("Groups", [])] != groups:
            call_aws(
                ec2.modify_network_interface_attribute,
                f"network interface {eni_id}: restore groups {groups}",
                NetworkInterfaceId=eni_id,
                Groups=groups,
            )
            actions.append(f"{eni_id} back in {', '.join(groups)}")
        restored.append({"eni": eni_id, "groups": groups})
    return restored


def _profile_changed(iam: IAMClient, profile: Mapping[str, Any]) -> str:
    """Why the profile is no longer the one Contain recorded ("" when it is). Release may pass any role of
    the account to EC2 (which roles a workload uses is not known in advance), so it gives back only the
    recorded profile holding the recorded role: not one whose role was swapped, or that was made again."""
    if "roles" not in profile:
        unknown = profile.get("identity_unknown") or "an incident opened before roles were recorded"
        return f"the role it held when the incident opened was not recorded ({unknown})"
    try:
        now = instance_profile_identity(iam, str(profile["arn"]))
    except ClientError as exc:
        # Not a reason to stop half-way through a release: the profile is left out, and the result says so.
        if error_code(exc) == "NoSuchEntity":
            return "it no longer exists"
        return f"it could not be read ({error_code(exc)})"
    except BotoCoreError as exc:
        return f"it could not be read ({type(exc).__name__})"
    if profile.get("id") and now["id"] != profile["id"]:
        return f"it was deleted and made again (id {profile['id']} then, {now['id']} now)"
    if now["roles"] != sorted(profile["roles"]):
        then, held = ", ".join(profile["roles"]) or "no role", ", ".join(now["roles"]) or "no role"
        return f"it holds {held} now, {then} then"
    return ""


def _restore_profile(
    ec2: EC2Client, iam: IAMClient, instance_id: str, prior: Mapping[str, Any], actions: list[str]
) -> str | None:
    profile = prior.get("iam_instance_profile")
    if not profile:
        return None
    response = call_aws(
        ec2.describe_iam_instance_profile_associations,
        f"instance {instance_id}: read instance profile association",
        Filters=[
            {"Name": "instance-id", "Values": [instance_id]},
            {"Name": "state", "Values": ["associated", "associating"]},
        ],
    )
    current = [a["IamInstanceProfile"]["Arn"] for a in response.get("IamInstanceProfileAssociations", [])]
    if profile["arn"] in current:
        return str(profile["arn"])
    if current:
        # Someone attached another profile to a quarantined instance: that is for a person to judge.
        actions.append(f"profile {profile['arn']} not restored: {current[0]} is attached now")
        return None
    changed = _profile_changed(iam, profile)
    if changed:
        actions.append(f"profile {profile['arn']} not restored: {changed}; check it, then attach it by hand")
        return None
    call_on_instance(
        ec2.associate_iam_instance_profile,
        instance_id,
        f"re-associate profile {profile['arn']}",
        InstanceId=instance_id,
        IamInstanceProfile={"Arn": profile["arn"]},
    )
    actions.append(f"instance profile {profile['arn']} re-associated")
    return str(profile["arn"])


def _restore_protection(
    ec2: EC2Client, instance: Mapping[str, Any], prior: Mapping[str, Any], actions: list[str]
) -> dict[str, Any]:
    instance_id = instance["InstanceId"]
    termination = bool(prior.get("disable_api_termination", False))
    shutdown = str(prior.get("instance_initiated_shutdown_behavior") or "stop")
    # Setting a value it may already have is cheaper than reading it first, and idempotent. Not on a
    # Spot instance: EC2 refuses the attribute there, whatever the value, and Contain never set it.
    if instance.get("InstanceLifecycle") != SPOT:
        call_aws(
            ec2.modify_instance_attribute,
            f"instance {instance_id}: restore termination protection {termination}",
            InstanceId=instance_id,
            DisableApiTermination={"Value": termination},
        )
    call_aws(
        ec2.modify_instance_attribute,
        f"instance {instance_id}: restore shutdown behaviour {shutdown}",
        InstanceId=instance_id,
        # The Attribute/Value form: as valid in EC2, and the one the local runtime implements.
        Attribute="instanceInitiatedShutdownBehavior",
        Value=shutdown,
    )
    current = {
        m["DeviceName"]: bool(m["Ebs"].get("DeleteOnTermination", False))
        for m in instance.get("BlockDeviceMappings", [])
        if "Ebs" in m
    }
    changes = [
        {"DeviceName": v["device_name"], "Ebs": {"DeleteOnTermination": bool(v["delete_on_termination"])}}
        for v in prior.get("volumes", [])
        if v["device_name"] in current and current[v["device_name"]] != bool(v["delete_on_termination"])
    ]
    if changes:
        call_aws(
            ec2.modify_instance_attribute,
            f"instance {instance_id}: restore DeleteOnTermination",
            InstanceId=instance_id,
            BlockDeviceMappings=changes,
        )
    actions.append(f"termination protection {termination}, shutdown behaviour {shutdown} restored")
    return {
        "disable_api_termination": termination,
        "instance_initiated_shutdown_behavior": shutdown,
        "delete_on_termination": {
            v["device_name"]: v["delete_on_termination"] for v in prior.get("volumes", [])
        },
    }


def _reregister(
    clients: Clients, instance: Mapping[str, Any], target_groups: list[dict[str, Any]], actions: list[str]
) -> list[str]:
    state = instance.get("State", {}).get("Name")
    if target_groups and state != "running":
        # Load balancers refuse targets that are not running; start it and register by hand.
        actions.append(f"not re-registered in {len(target_groups)} target group(s): instance is {state}")
        return []
    registered = []
    for tg in target_groups:
        try:
            clients.elbv2.register_targets(TargetGroupArn=tg["arn"], Targets=tg["targets"])
        except ClientError as exc:
            if error_code(exc) == "TargetGroupNotFound":
                actions.append(f"target group {tg['arn']} no longer exists; not re-registered")
                continue
            raise AwsCallFailed(
                f"instance {instance['InstanceId']}: re-register in {tg['arn']}: {error_code(exc)}: {exc}"
            ) from exc
        actions.append(f"re-registered in {tg['arn']}")
        registered.append(str(tg["arn"]))
    return registered


def _released_alert(incident: Incident, result: Mapping[str, Any]) -> Alert:
    finding = incident.finding
    return Alert(
        stage=STAGE_RELEASED,
        incident_id=incident.incident_id,
        kind=incident.kind,
        severity=incident.severity,
        decision=incident.decision,
        mode=incident.mode,
        account=incident.account,
        region=incident.region,
        instance_ids=[incident.instance_id],
        actor=finding.get("actor", {}),
        event={
            "source": finding.get("event_source"),
            "name": finding.get("event_name"),
            "id": finding.get("event_id"),
            "time": finding.get("event_time"),
        },
        summary="A person declared this incident a false positive; the quarantine was undone.",
        actions=list(result["actions"]),
        details=dict(result),
        console_links=console_links(incident.region, [incident.instance_id], incident.incident_id),
    )


def release_incident(
    clients: Clients,
    ledger: IncidentLedger,
    incident_id: str,
    *,
    alert_topic_arn: str | None = None,
    state_machine_arn: str | None = None,
) -> dict[str, Any]:
    """Restore a quarantined instance to its state before the incident and close the incident.

    Parameters
    ----------
    clients:
        boto3 clients (ec2, elbv2).
    ledger:
        The incident ledger holding the prior state.
    incident_id:
        The incident to release.
    alert_topic_arn:
        When given, the security team is told: undoing a quarantine is itself worth an alert.
    state_machine_arn:
        The remediation state machine: its execution for this incident is stopped first, so it cannot
        go on to nuke (or fail and re-mark) an instance that is being given back.

    Returns
    -------
    dict
        instance_id, restored network_interfaces, profile_restored, protection, reregistered_in,
        auto_scaling_group_not_restored, revoked_rules_not_restored, acl_entries_not_restored,
        network_acl_entries_removed (the quarantine's own deny entries), actions.

    Raises
    ------
    IncidentNotFound
        No such incident.
    ReleaseRefused
        Nothing was ever changed (no prior state), the instance is gone, or another incident holds it.
    """
    incident = ledger.get(incident_id)
    prior = incident.prior_state
    instance_id = incident.instance_id
    if prior is None:
        # Contain records the prior state before its first change: without it, nothing was changed.
        raise ReleaseRefused(f"incident {incident_id}: instance {instance_id} was never contained")
    ec2 = clients.ec2
    try:
        instance = describe_instance(ec2, instance_id)
    except InstanceNotFound as exc:
        raise ReleaseRefused(f"incident {incident_id}: instance {instance_id} is gone ({exc})") from exc
    tags = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
    holder = tags.get(TAG_INCIDENT)
    if holder not in (None, incident_id):
        raise ReleaseRefused(
            f"incident {incident_id}: instance {instance_id} is quarantined by incident {holder}"
        )

    actions: list[str] = []
    if state_machine_arn:
        _stop_remediation(clients, state_machine_arn, incident_id, actions)
    # Credentials before traffic: an instance that serves without its profile fails its requests.
    if prior.get(PARTIAL):
        # Only Detect's first response changed the instance (its interfaces): Contain never recorded
        # the rest, nor changed it, so there is nothing else to give back.
        protection: dict[str, Any] = {}
        profile = None
        actions.append("only the network interfaces were changed (Contain never ran): the rest is as it was")
    else:
        protection = _restore_protection(ec2, instance, prior, actions)
        profile = _restore_profile(ec2, clients.iam, instance_id, prior, actions)
    acl_entries = incident.details.get(ACL_DETAIL_KEY) or []
    acl_removed = remove_entries(ec2, acl_entries, actions) if acl_entries else []
    interfaces = _restore_network_interfaces(ec2, instance, prior, actions)
    # Found after isolation since issue 12 (incident details); in the prior state before.
    target_groups = incident.details.get(PRIOR_TARGET_GROUPS) or prior.get("target_groups", [])
    reregistered = _reregister(clients, instance, target_groups, actions)
    call_aws(
        ec2.delete_tags,
        f"instance {instance_id}: remove quarantine tags",
        Resources=[instance_id],
        Tags=[{"Key": TAG_INCIDENT}, {"Key": TAG_STATE}],
    )
    group = prior.get("auto_scaling_group")
    if group:
        actions.append(
            f"not re-attached to Auto Scaling group {group}: it has launched a replacement; attaching "
            "this instance by hand raises the group's desired capacity"
        )
    contained = incident.details.get(STAGE_CONTAINED) or {}
    revoked = contained.get("revoked_rules", [])
    if revoked:
        actions.append(
            f"{len(revoked)} revoked security group rule(s) not restored: re-add them deliberately"
        )
    removed_acl_entries = contained.get("removed_acl_entries", [])
    if removed_acl_entries:
        actions.append(
            f"{len(removed_acl_entries)} deleted network ACL entry(ies) not restored: re-add deliberately"
        )
    for arn in contained.get("connection_termination_enabled", []):
        # The attribute is the whole target group's: other quarantines may rely on it.
        actions.append(f"connection termination left on for NLB target group {arn}: turn it off deliberately")

    result: dict[str, Any] = {
        "incident_id": incident_id,
        "instance_id": instance_id,
        "network_interfaces": interfaces,
        "profile_restored": profile,
        "protection": protection,
        "reregistered_in": reregistered,
        "auto_scaling_group_not_restored": group,
        "revoked_rules_not_restored": revoked,
        "acl_entries_not_restored": removed_acl_entries,
        "network_acl_entries_removed": acl_removed,
        "actions": actions,
    }
    # Before the incident is marked released: Config's report of what was restored is the guard's own.
    place = ledger.at(incident.account, incident.region)
    place.remember_released(instance_id, incident_id)
    ledger.record_stage(incident_id, STAGE_RELEASED, status=Status.RELEASED, details=result)
    place.release_lock(instance_id, incident_id)
    if alert_topic_arn:
        publish_alert(clients.sns, alert_topic_arn, _released_alert(incident, result))
    return result


def _stop_remediation(clients: Clients, state_machine_arn: str, incident_id: str, actions: list[str]) -> None:
    """Stop the incident's execution (named by the incident id); one that already ended is fine."""
    execution_arn = f"{state_machine_arn.replace(':stateMachine:', ':execution:')}:{incident_id}"
    try:
        execution = clients.stepfunctions.describe_execution(executionArn=execution_arn)
        if execution["status"] == "RUNNING":
            clients.stepfunctions.stop_execution(
                executionArn=execution_arn,
                error="Released",
                cause=f"incident {incident_id} released by a person",
            )
            actions.append(f"stopped remediation execution {incident_id}")
    except ClientError as exc:
        if error_code(exc) != "ExecutionDoesNotExist":
            raise AwsCallFailed(f"incident {incident_id}: cannot stop its remediation: {exc}") from exc
