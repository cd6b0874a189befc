"""Builds AWS Config "Configuration Item Change" events for instances, security groups and files seen by
SSM Inventory, because moto runs no Config recorder: the local runtime emits what the detector reads."""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

DETAIL_TYPE = "Config Configuration Item Change"
ACCOUNT_ID = "123456789012"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"


_state_lock = threading.Lock()
_last_state_id = 0


def _state_id() -> int:
    """``configurationStateId``: milliseconds of the capture, strictly increasing as Config's are."""
    global _last_state_id
    with _state_lock:
        _last_state_id = max(_last_state_id + 1, int(time.time() * 1000))
        return _last_state_id


def configuration_item_event(
    resource_type: str,
    resource_id: str,
    configuration: dict[str, Any] | None,
    changed_properties: dict[str, Any],
    tags: dict[str, str] | None = None,
    change_type: str = "UPDATE",
    region: str = "us-east-1",
    account_id: str = ACCOUNT_ID,
    resource_name: str | None = None,
    arn: str | None = None,
    status: str = "OK",
    related_events: list[str] | None = None,
    relationships: list[dict[str, Any]] | None = None,
    availability_zone: str | None = None,
    resource_creation_time: str | None = None,
) -> dict[str, Any]:
    """An EventBridge event carrying one configuration item change, shaped as AWS Config sends it.

    Parameters
    ----------
    configuration:
        The resource's configuration (Describe API shape, lowerCamel keys); None for ResourceDeleted.
    changed_properties:
        ``configurationItemDiff.changedProperties``: path -> {previousValue, updatedValue, changeType}.
    change_type:
        ``configurationItemDiff.changeType``: CREATE (with ResourceDiscovered), UPDATE, DELETE.
    status:
        ``configurationItemStatus``: OK, ResourceDiscovered, ResourceDeleted, ResourceNotRecorded, ...
    related_events:
        ``relatedEvents``: ids of the CloudTrail events that caused the change.
    """
    captured = _now()
    item = {
        "relatedEvents": list(related_events or []),
        "relationships": list(relationships or []),
        "configuration": configuration,
        "supplementaryConfiguration": {},
        "tags": dict(tags or {}),
        "configurationItemVersion": "1.3",
        "configurationItemCaptureTime": captured,
        "configurationStateId": _state_id(),
        "awsAccountId": account_id,
        "configurationItemStatus": status,
        "resourceType": resource_type,
        "resourceId": resource_id,
        "resourceName": resource_name or resource_id,
        "ARN": arn or "",
        "awsRegion": region,
        "availabilityZone": availability_zone or "Not Applicable",
        "configurationStateMd5Hash": "",
        "resourceCreationTime": resource_creation_time,
    }
    detail = {
        "recordVersion": "1.3",
        "messageType": "ConfigurationItemChangeNotification",
        "configurationItemDiff": {"changedProperties": changed_properties, "changeType": change_type},
        "notificationCreationTime": captured,
        "configurationItem": item,
    }
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": DETAIL_TYPE,
        "source": "aws.config",
        "account": account_id,
        "time": captured[:19] + "Z",
        "region": region,
        "resources": [arn] if arn else [],
        "detail": detail,
    }


def _tags(described: dict[str, Any]) -> dict[str, str]:
    return {tag["Key"]: tag["Value"] for tag in described.get("Tags") or []}


def instance_changed(
    instance: dict[str, Any],
    changed_properties: dict[str, Any],
    region: str = "us-east-1",
    account_id: str = ACCOUNT_ID,
) -> dict[str, Any]:
    """An ``AWS::EC2::Instance`` item from a ``describe_instances`` instance dict."""
    instance_id = instance["InstanceId"]
    configuration = {
        "instanceId": instance_id,
        "imageId": instance.get("ImageId"),
        "instanceType": instance.get("InstanceType"),
        "securityGroups": [
            {"groupId": group["GroupId"], "groupName": group.get("GroupName")}
            for group in instance.get("SecurityGroups") or []
        ],
        "iamInstanceProfile": instance.get("IamInstanceProfile"),
        "state": {"name": (instance.get("State") or {}).get("Name")},
    }
    return configuration_item_event(
        "AWS::EC2::Instance",
        instance_id,
        configuration,
        changed_properties,
        tags=_tags(instance),
        region=region,
        account_id=account_id,
        arn=f"arn:aws:ec2:{region}:{account_id}:instance/{instance_id}",
    )


def security_group_changed(
    group: dict[str, Any], changed_properties: dict[str, Any], region: str = "us-east-1"
) -> dict[str, Any]:
    """An ``AWS::EC2::SecurityGroup`` item from a ``describe_security_groups`` group dict."""
    group_id = group["GroupId"]

    def permissions(rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            {
                "ipProtocol": rule.get("IpProtocol"),
                "fromPort": rule.get("FromPort"),
                "toPort": rule.get("ToPort"),
                "ipv4Ranges": [{"cidrIp": r["CidrIp"]} for r in rule.get("IpRanges") or []],
                "ipRanges": [r["CidrIp"] for r in rule.get("IpRanges") or []],
                "userIdGroupPairs": [
                    {"groupId": p.get("GroupId")} for p in rule.get("UserIdGroupPairs") or []
                ],
            }
            for rule in rules
        ]

    configuration = {
        "groupId": group_id,
        "groupName": group.get("GroupName"),
        "vpcId": group.get("VpcId"),
        "ipPermissions": permissions(group.get("IpPermissions") or []),
        "ipPermissionsEgress": permissions(group.get("IpPermissionsEgress") or []),
    }
    return configuration_item_event(
        "AWS::EC2::SecurityGroup",
        group_id,
        configuration,
        changed_properties,
        tags=_tags(group),
        region=region,
        resource_name=group.get("GroupName"),
        arn=f"arn:aws:ec2:{region}:{ACCOUNT_ID}:security-group/{group_id}",
    )


def ingress_rule_added(
    group: dict[str, Any], rule: dict[str, Any], region: str = "us-east-1"
) -> dict[str, Any]:
    """A security group item whose diff says one ingress permission (boto3 shape) was created."""
    diff = {
        "Configuration.IpPermissions.0": {
            "updatedValue": {
                "ipProtocol": rule.get("IpProtocol"),
                "fromPort": rule.get("FromPort"),
                "toPort": rule.get("ToPort"),
                "ipv4Ranges": [{"cidrIp": r["CidrIp"]} for r in rule.get("IpRanges") or []],
            },
            "changeType": "CREATE",
        }
    }
    return security_group_changed(group, diff, region)


# When the watched file was last written before the drill changed it.
_EARLIER = "2026-01-01T00:00:00Z"


def file_changed(
    instance_id: str,
    path: str,
    size: int = 0,
    modified: str | None = None,
    change_type: str = "UPDATE",
    region: str = "us-east-1",
) -> dict[str, Any]:
    """An ``AWS::SSM::ManagedInstanceInventory`` item whose AWS:File inventory shows ``path`` changed.

    SSM Inventory records file metadata (name, size, modification time), never a content hash.
    """
    directory, _, name = path.rpartition("/")
    modified = modified or _now()
    file_record = {
        "Name": name,
        "Size": str(size),
        "Description": "",
        "FileVersion": "",
        "InstalledDate": "",
        "LastAccessTime": modified,
        "ProductName": "",
        "InstalledDir": directory or "/",
        "ProductLanguage": "",
        "CompanyName": "",
        "ProductVersion": "",
        "ModificationTime": modified,
    }
    key = f"{directory or '/'}/{name}".replace("//", "/")
    configuration = {
        "AWS:File": {
            "SchemaVersion": "1.0",
            "CaptureTime": modified,
            "Content": {key: file_record},
        },
        "AWS:InstanceInformation": {"Content": {instance_id: {"InstanceId": instance_id}}},
    }
    diff_type = {"UPDATE": "UPDATE", "CREATE": "CREATE", "DELETE": "DELETE"}[change_type]
    # An update shows the record before and after: here the content changed (size, modification time).
    before = {
        **file_record,
        "Size": str(max(size - 33, 0)),
        "ModificationTime": _EARLIER,
        "LastAccessTime": _EARLIER,
    }
    values: dict[str, Any] = {
        "UPDATE": {"previousValue": before, "updatedValue": file_record},
        "CREATE": {"previousValue": None, "updatedValue": file_record},
        "DELETE": {"previousValue": file_record, "updatedValue": None},
    }
    # Config prefixes the paths of the diff with "Configuration." (as events/config-inventory-*.json).
    diff = {f"Configuration.AWS:File.Content.{key}": {**values[diff_type], "changeType": diff_type}}
    return configuration_item_event(
        "AWS::SSM::ManagedInstanceInventory",
        instance_id,
        configuration,
        diff,
        change_type="UPDATE",
        region=region,
        arn=f"arn:aws:ssm:{region}:{ACCOUNT_ID}:managed-instance-inventory/{instance_id}",
    )


# ---------------------------------------------------------------------------------------------------------
# What Config records of a resource, built from its Describe API dict (boto3 shape), and the diff between two
# records. Config keeps the Describe shape with lowerCamel keys (tags as [{"key", "value"}]), except for the
# rules of a security group, which it records with both `ipRanges` (CIDR strings) and `ipv4Ranges`.
# Source: AWS Config Developer Guide, "Example Configuration Item Change Notifications".

INSTANCE = "AWS::EC2::Instance"
SECURITY_GROUP = "AWS::EC2::SecurityGroup"
NETWORK_INTERFACE = "AWS::EC2::NetworkInterface"
VOLUME = "AWS::EC2::Volume"
ELASTIC_IP = "AWS::EC2::EIP"

OK = "OK"
RESOURCE_DISCOVERED = "ResourceDiscovered"
RESOURCE_DELETED = "ResourceDeleted"


def config_shape(value: Any) -> Any:
    """boto3 Describe shape -> Config's: lowerCamel keys, times as ISO 8601 with milliseconds."""
    if isinstance(value, dict):
        return {key[:1].lower() + key[1:]: config_shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [config_shape(item) for item in value]
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    return value


def _relationship(resource_type: str, resource_id: str | None, name: str) -> list[dict[str, Any]]:
    if not resource_id:
        return []
    return [{"resourceId": resource_id, "resourceName": None, "resourceType": resource_type, "name": name}]


def _time(value: Any) -> str | None:
    shaped = config_shape(value)
    return shaped if isinstance(shaped, str) else None


@dataclass(frozen=True)
class ConfigRecord:
    """What Config holds of one resource at one capture: the fields of a configuration item."""

    resource_type: str
    resource_id: str
    configuration: dict[str, Any]
    tags: dict[str, str]
    relationships: list[dict[str, Any]]
    arn: str
    resource_name: str | None = None
    availability_zone: str | None = None
    resource_creation_time: str | None = None

    def related_ids(self) -> list[str]:
        """Resources whose events also change this record: its interfaces, volumes, addresses, instance."""
        carried = {INSTANCE, NETWORK_INTERFACE, VOLUME, ELASTIC_IP}
        return [r["resourceId"] for r in self.relationships if r["resourceType"] in carried]


def instance_record(instance: dict[str, Any], region: str, account_id: str) -> ConfigRecord:
    """An ``AWS::EC2::Instance`` record from a ``describe_instances`` instance dict."""
    instance_id = instance["InstanceId"]
    relationships: list[dict[str, Any]] = []
    for eni in instance.get("NetworkInterfaces") or []:
        relationships += _relationship(
            NETWORK_INTERFACE, eni.get("NetworkInterfaceId"), "Contains NetworkInterface"
        )
    for group in instance.get("SecurityGroups") or []:
        relationships += _relationship(
            SECURITY_GROUP, group.get("GroupId"), "Is associated with SecurityGroup"
        )
    relationships += _relationship("AWS::EC2::Subnet", instance.get("SubnetId"), "Is contained in Subnet")
    for mapping in instance.get("BlockDeviceMappings") or []:
        volume_id = (mapping.get("Ebs") or {}).get("VolumeId")
        relationships += _relationship(VOLUME, volume_id, "Is attached to Volume")
    relationships += _relationship("AWS::EC2::VPC", instance.get("VpcId"), "Is contained in Vpc")
    return ConfigRecord(
        INSTANCE,
        instance_id,
        config_shape(instance),
        _tags(instance),
        relationships,
        f"arn:aws:ec2:{region}:{account_id}:instance/{instance_id}",
        availability_zone=(instance.get("Placement") or {}).get("AvailabilityZone"),
        resource_creation_time=_time(instance.get("LaunchTime")),
    )


def _permissions(rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "ipProtocol": rule.get("IpProtocol"),
            "fromPort": rule.get("FromPort"),
            "toPort": rule.get("ToPort"),
            "userIdGroupPairs": config_shape(rule.get("UserIdGroupPairs") or []),
            "ipRanges": [r["CidrIp"] for r in rule.get("IpRanges") or [] if "CidrIp" in r],
            "ipv4Ranges": [{"cidrIp": r["CidrIp"]} for r in rule.get("IpRanges") or [] if "CidrIp" in r],
            "ipv6Ranges": config_shape(rule.get("Ipv6Ranges") or []),
            "prefixListIds": config_shape(rule.get("PrefixListIds") or []),
        }
        for rule in rules
    ]


def security_group_record(group: dict[str, Any], region: str, account_id: str) -> ConfigRecord:
    """An ``AWS::EC2::SecurityGroup`` record from a ``describe_security_groups`` group dict."""
    group_id = group["GroupId"]
    configuration = {
        "ownerId": group.get("OwnerId"),
        "groupName": group.get("GroupName"),
        "groupId": group_id,
        "description": group.get("Description"),
        "ipPermissions": _permissions(group.get("IpPermissions") or []),
        "ipPermissionsEgress": _permissions(group.get("IpPermissionsEgress") or []),
        "vpcId": group.get("VpcId"),
        "tags": config_shape(group.get("Tags") or []),
    }
    return ConfigRecord(
        SECURITY_GROUP,
        group_id,
        configuration,
        _tags(group),
        _relationship("AWS::EC2::VPC", group.get("VpcId"), "Is contained in Vpc"),
        f"arn:aws:ec2:{region}:{account_id}:security-group/{group_id}",
        resource_name=group.get("GroupName"),
    )


def network_interface_record(eni: dict[str, Any], region: str, account_id: str) -> ConfigRecord:
    """An ``AWS::EC2::NetworkInterface`` record from a ``describe_network_interfaces`` dict."""
    eni_id = eni["NetworkInterfaceId"]
    relationships = _relationship(
        INSTANCE, (eni.get("Attachment") or {}).get("InstanceId"), "Is attached to Instance"
    )
    for group in eni.get("Groups") or []:
        relationships += _relationship(
            SECURITY_GROUP, group.get("GroupId"), "Is associated with SecurityGroup"
        )
    relationships += _relationship("AWS::EC2::Subnet", eni.get("SubnetId"), "Is contained in Subnet")
    relationships += _relationship("AWS::EC2::VPC", eni.get("VpcId"), "Is contained in Vpc")
    return ConfigRecord(
        NETWORK_INTERFACE,
        eni_id,
        config_shape(eni),
        {t["Key"]: t["Value"] for t in eni.get("TagSet") or []},
        relationships,
        f"arn:aws:ec2:{region}:{account_id}:network-interface/{eni_id}",
        availability_zone=eni.get("AvailabilityZone"),
    )


def volume_record(volume: dict[str, Any], region: str, account_id: str) -> ConfigRecord:
    """An ``AWS::EC2::Volume`` record from a ``describe_volumes`` dict."""
    volume_id = volume["VolumeId"]
    relationships: list[dict[str, Any]] = []
    for attachment in volume.get("Attachments") or []:
        relationships += _relationship(INSTANCE, attachment.get("InstanceId"), "Is attached to Instance")
    return ConfigRecord(
        VOLUME,
        volume_id,
        config_shape(volume),
        _tags(volume),
        relationships,
        f"arn:aws:ec2:{region}:{account_id}:volume/{volume_id}",
        availability_zone=volume.get("AvailabilityZone"),
        resource_creation_time=_time(volume.get("CreateTime")),
    )


def address_record(address: dict[str, Any], region: str, account_id: str) -> ConfigRecord:
    """An ``AWS::EC2::EIP`` record (resource id: the allocation id) from a ``describe_addresses`` dict."""
    allocation_id = address.get("AllocationId") or address.get("PublicIp") or ""
    relationships = _relationship(INSTANCE, address.get("InstanceId"), "Is attached to Instance")
    relationships += _relationship(
        NETWORK_INTERFACE, address.get("NetworkInterfaceId"), "Is attached to NetworkInterface"
    )
    return ConfigRecord(
        ELASTIC_IP,
        allocation_id,
        config_shape(address),
        _tags(address),
        relationships,
        f"arn:aws:ec2:{region}:{account_id}:eip-allocation/{allocation_id}",
    )


def _pascal(key: str) -> str:
    return key[:1].upper() + key[1:]


def list_changes(path: str, previous: list[Any], updated: list[Any]) -> dict[str, Any]:
    """Config diffs a list by element: a changed element is the old one deleted (at its index) and the new
    one created after the old list's end, as in its documented security-group swap notification."""
    changes: dict[str, Any] = {}
    for index, item in enumerate(previous):
        if item not in updated:
            changes[f"{path}.{index}"] = {"previousValue": item, "updatedValue": None, "changeType": "DELETE"}
    added = [item for item in updated if item not in previous]
    for offset, item in enumerate(added):
        changes[f"{path}.{len(previous) + offset}"] = {
            "previousValue": None,
            "updatedValue": item,
            "changeType": "CREATE",
        }
    return changes


def _value_changes(path: str, previous: Any, updated: Any) -> dict[str, Any]:
    if previous == updated:
        return {}
    if isinstance(previous, dict) and isinstance(updated, dict):
        changes: dict[str, Any] = {}
        for key in [*previous, *(k for k in updated if k not in previous)]:
            changes.update(_value_changes(f"{path}.{_pascal(key)}", previous.get(key), updated.get(key)))
        return changes
    if isinstance(previous, list) and isinstance(updated, list):
        return list_changes(path, previous, updated)
    if previous is None:
        return {path: {"previousValue": None, "updatedValue": updated, "changeType": "CREATE"}}
    if updated is None:
        return {path: {"previousValue": previous, "updatedValue": None, "changeType": "DELETE"}}
    return {path: {"previousValue": previous, "updatedValue": updated, "changeType": "UPDATE"}}


def changed_properties(previous: ConfigRecord, updated: ConfigRecord) -> dict[str, Any]:
    """``configurationItemDiff.changedProperties`` between two records of one resource: paths such as
    ``Configuration.State.Name``, ``Configuration.SecurityGroups.1``, ``Relationships.0``."""
    changes = _value_changes("Configuration", previous.configuration, updated.configuration)
    changes.update(list_changes("Relationships", previous.relationships, updated.relationships))
    return changes


def record_event(
    record: ConfigRecord,
    status: str,
    changed: dict[str, Any],
    related_events: list[str],
    region: str,
    account_id: str,
) -> dict[str, Any]:
    """The "Configuration Item Change" event of one record: ResourceDiscovered (diff CREATE, no changed
    properties), OK (diff UPDATE) or ResourceDeleted (diff DELETE, no configuration)."""
    change_type = {RESOURCE_DISCOVERED: "CREATE", RESOURCE_DELETED: "DELETE"}.get(status, "UPDATE")
    return configuration_item_event(
        record.resource_type,
        record.resource_id,
        None if status == RESOURCE_DELETED else record.configuration,
        changed,
        tags=record.tags,
        change_type=change_type,
        region=region,
        account_id=account_id,
        resource_name=record.resource_name,
        arn=record.arn,
        status=status,
        related_events=related_events,
        relationships=[] if status == RESOURCE_DELETED else record.relationships,
        availability_zone=record.availability_zone,
        resource_creation_time=record.resource_creation_time,
    )
