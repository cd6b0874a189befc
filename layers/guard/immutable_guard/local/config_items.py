"""Builds AWS Config "Configuration Item Change" events for instances, security groups and files seen by
SSM Inventory, because moto runs no Config recorder: the local runtime emits what the detector reads."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

DETAIL_TYPE = "Config Configuration Item Change"
ACCOUNT_ID = "123456789012"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"


def configuration_item_event(
    resource_type: str,
    resource_id: str,
    configuration: dict[str, Any],
    changed_properties: dict[str, Any],
    tags: dict[str, str] | None = None,
    change_type: str = "UPDATE",
    region: str = "us-east-1",
    account_id: str = ACCOUNT_ID,
    resource_name: str | None = None,
    arn: str | None = None,
) -> dict[str, Any]:
    """An EventBridge event carrying one configuration item change, shaped as AWS Config sends it.

    Parameters
    ----------
    changed_properties:
        ``configurationItemDiff.changedProperties``: path -> {previousValue, updatedValue, changeType}.
    """
    captured = _now()
    item = {
        "relatedEvents": [],
        "relationships": [],
        "configuration": configuration,
        "supplementaryConfiguration": {},
        "tags": dict(tags or {}),
        "configurationItemVersion": "1.3",
        "configurationItemCaptureTime": captured,
        "configurationStateId": int(datetime.now(UTC).timestamp() * 1000),
        "awsAccountId": account_id,
        "configurationItemStatus": "OK",
        "resourceType": resource_type,
        "resourceId": resource_id,
        "resourceName": resource_name or resource_id,
        "ARN": arn or "",
        "awsRegion": region,
        "availabilityZone": "Not Applicable",
        "configurationStateMd5Hash": "",
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
    instance: dict[str, Any], changed_properties: dict[str, Any], region: str = "us-east-1"
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
        arn=f"arn:aws:ec2:{region}:{ACCOUNT_ID}:instance/{instance_id}",
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
    diff = {
        f"AWS:File.Content.{key}": {
            **({"updatedValue": file_record} if diff_type != "DELETE" else {"previousValue": file_record}),
            "changeType": diff_type,
        }
    }
    return configuration_item_event(
        "AWS::SSM::ManagedInstanceInventory",
        instance_id,
        configuration,
        diff,
        change_type="UPDATE",
        region=region,
        arn=f"arn:aws:ssm:{region}:{ACCOUNT_ID}:managed-instance-inventory/{instance_id}",
    )
