"""Which instances a finding reaches, and which of them the operator declared immutable. A change to a
security group, an interface or a network ACL reaches every instance behind it, so those are resolved
at detection time rather than trusting the ids the event happens to name."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, Final, Protocol

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, ConfigDict, computed_field

from immutable_guard.detection import paths
from immutable_guard.detection.readers import INSTANCE_TAGS_EVIDENCE_KEY, SSM_TAG_TARGETS_EVIDENCE_KEY
from immutable_guard.errors import ScopeResolutionFailed
from immutable_guard.model import Finding

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ec2.type_defs import FilterTypeDef, InstanceTypeDef

    from immutable_guard.clients import Clients
    from immutable_guard.detection.memory import DetectionMemory

ASG_TAG: Final = "aws:autoscaling:groupName"
STACK_TAG: Final = "aws:cloudformation:stack-name"

# A terminated (or shutting-down) instance cannot be mutated further or remediated.
LIVE_STATES: Final = frozenset({"pending", "running", "stopping", "stopped"})

# EC2 accepts at most 200 values per filter; stay well below.
_CHUNK: Final = 100


class InstanceInfo(BaseModel):
    """What detection needs to know about one instance.

    `tags` is None when the tags are unknown (offline, without a Config item): such an instance is
    assumed to be in scope, so `explain` errs towards showing what would happen.
    """

    model_config = ConfigDict(frozen=True)

    instance_id: str
    state: str | None = None
    tags: dict[str, str] | None = None
    vpc_id: str | None = None
    subnet_id: str | None = None
    security_group_ids: tuple[str, ...] = ()
    network_interface_ids: tuple[str, ...] = ()

    @computed_field  # type: ignore[prop-decorator]
    @property
    def asg_name(self) -> str | None:
        return (self.tags or {}).get(ASG_TAG)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def stack_name(self) -> str | None:
        return (self.tags or {}).get(STACK_TAG)


class ScopeRule(BaseModel):
    """The operator's declaration of what is immutable: a tag, or membership in stacks or groups."""

    model_config = ConfigDict(frozen=True)

    tag_key: str = "immutable"
    tag_value: str = "true"
    stack_names: tuple[str, ...] = ()
    asg_names: tuple[str, ...] = ()

    @property
    def scope_tag(self) -> str:
        """The scope tag as "key=value": what the ledger remembers an instance carried."""
        return f"{self.tag_key}={self.tag_value}"

    def tagged(self, tags: dict[str, str]) -> bool:
        """In scope by the scope tag (stack and group membership are `aws:` tags nobody can remove)."""
        return tags.get(self.tag_key) == self.tag_value

    def in_scope(self, info: InstanceInfo) -> bool:
        """In scope by its current tags (an instance whose tags are unknown is assumed to be)."""
        if info.tags is None:
            return True
        if self.tagged(info.tags):
            return True
        if info.stack_name is not None and info.stack_name in self.stack_names:
            return True
        return info.asg_name is not None and info.asg_name in self.asg_names

    def in_scope_at_change(
        self, info: InstanceInfo, previous_tags: dict[str, str] | None, memory: DetectionMemory
    ) -> bool:
        """In scope when the change was made, not only now: by its current tags, by the tags it had
        before the change (`previous_tags`, when the event says), or as the ledger remembers it. The
        ledger is read only when the tags alone cannot tell."""
        if self.in_scope(info):
            return True
        if previous_tags is not None:
            return self.in_scope(info.model_copy(update={"tags": previous_tags}))
        return memory.was_in_scope(info.instance_id, self.scope_tag)


class InstanceDirectory(Protocol):
    """Resolves the instances a finding reaches."""

    def resolve(self, finding: Finding) -> list[InstanceInfo]: ...


def _chunks(values: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]


def _prefixed(ids: Iterable[str], prefix: str) -> list[str]:
    return list(dict.fromkeys(i for i in ids if i.startswith(prefix)))


def _info(instance: InstanceTypeDef) -> InstanceInfo:
    return InstanceInfo(
        instance_id=instance["InstanceId"],
        state=instance.get("State", {}).get("Name"),
        tags={
            tag["Key"]: tag["Value"] for tag in instance.get("Tags", []) if "Key" in tag and "Value" in tag
        },
        vpc_id=instance.get("VpcId"),
        subnet_id=instance.get("SubnetId"),
        security_group_ids=tuple(
            dict.fromkeys(
                [g["GroupId"] for g in instance.get("SecurityGroups", []) if "GroupId" in g]
                + [
                    g["GroupId"]
                    for eni in instance.get("NetworkInterfaces", [])
                    for g in eni.get("Groups", [])
                    if "GroupId" in g
                ]
            )
        ),
        network_interface_ids=tuple(
            eni["NetworkInterfaceId"]
            for eni in instance.get("NetworkInterfaces", [])
            if "NetworkInterfaceId" in eni
        ),
    )


class Ec2InstanceDirectory:
    """Resolves a finding against the live EC2 API.

    Parameters
    ----------
    ec2:
        An EC2 client (needs DescribeInstances, DescribeNetworkInterfaces, DescribeNetworkAcls and
        DescribeIamInstanceProfileAssociations).
    """

    def __init__(self, ec2: EC2Client, clients: Clients | None = None) -> None:
        self._ec2 = ec2
        self._clients = clients
        # Every instance described, as EC2 returned it: Detect's first response records the interfaces'
        # groups from it (no second describe before isolating).
        self.described: dict[str, InstanceTypeDef] = {}

    def resolve(self, finding: Finding) -> list[InstanceInfo]:
        """Every live instance the finding reaches, named or reached through a group, ENI, ACL or profile.

        Raises
        ------
        ScopeResolutionFailed
            When EC2 refuses or fails a describe call.
        """
        named = [*finding.instance_ids, *finding.resource_ids]
        instance_ids = _prefixed(named, "i-")
        instances: dict[str, InstanceInfo] = {}
        group_ids = _prefixed(finding.resource_ids, "sg-")
        if group_ids:
            instances.update(self._describe([{"Name": "instance.group-id", "Values": group_ids}]))
            # Instances whose secondary interfaces carry the group are found through the interfaces.
            instance_ids += self._interface_instances([{"Name": "group-id", "Values": group_ids}])
        eni_ids = _prefixed(finding.resource_ids, "eni-")
        if eni_ids:
            instance_ids += self._interface_instances([{"Name": "network-interface-id", "Values": eni_ids}])
        acl_ids = _prefixed(finding.resource_ids, "acl-")
        if acl_ids:
            subnet_ids = self._acl_subnets(acl_ids)
            if subnet_ids:
                instances.update(self._describe([{"Name": "subnet-id", "Values": subnet_ids}]))
        association_ids = _prefixed(finding.resource_ids, "iip-assoc-")
        if association_ids:
            instance_ids += self._association_instances(association_ids)
        for target in finding.evidence.get(SSM_TAG_TARGETS_EVIDENCE_KEY) or []:
            instances.update(self._tag_target(target))
        for resolver in paths.RESOLVERS:
            ids = [r for r in dict.fromkeys(finding.resource_ids) if resolver.applies_to(r)]
            if ids:
                instance_ids += list(resolver.find_instances(self._all_clients(), ids))
        missing = [i for i in dict.fromkeys(instance_ids) if i not in instances]
        if missing:
            instances.update(self._describe([{"Name": "instance-id", "Values": missing}]))
        return [info for info in instances.values() if info.state in LIVE_STATES]

    def _all_clients(self) -> Clients:
        from immutable_guard.clients import Clients

        if self._clients is None:
            self._clients = Clients()
        return self._clients

    # ------------------------------------------------------------ describe calls

    def _fail(self, what: str, exc: Exception) -> ScopeResolutionFailed:
        code = exc.response.get("Error", {}).get("Code", "") if isinstance(exc, ClientError) else ""
        return ScopeResolutionFailed(f"could not resolve instances from {what}: {code or type(exc).__name__}")

    def _describe(self, filters: list[FilterTypeDef]) -> dict[str, InstanceInfo]:
        found: dict[str, InstanceInfo] = {}
        for chunked in _split(filters):
            try:
                for page in self._ec2.get_paginator("describe_instances").paginate(Filters=chunked):
                    for reservation in page.get("Reservations", []):
                        for instance in reservation.get("Instances", []):
                            found[instance["InstanceId"]] = _info(instance)
                            self.described[instance["InstanceId"]] = instance
            except (ClientError, BotoCoreError) as exc:
                raise self._fail(_filter_text(chunked), exc) from exc
        return found

    def _interface_instances(self, filters: list[FilterTypeDef]) -> list[str]:
        found: list[str] = []
        for chunked in _split(filters):
            try:
                for page in self._ec2.get_paginator("describe_network_interfaces").paginate(Filters=chunked):
                    for eni in page.get("NetworkInterfaces", []):
                        instance_id = eni.get("Attachment", {}).get("InstanceId")
                        if instance_id:
                            found.append(instance_id)
            except (ClientError, BotoCoreError) as exc:
                raise self._fail(_filter_text(chunked), exc) from exc
        return found

    def _acl_subnets(self, acl_ids: list[str]) -> list[str]:
        subnets: list[str] = []
        for acl_id in acl_ids:
            # By id, one at a time: an ACL deleted since the event is simply no subnet.
            try:
                paginator = self._ec2.get_paginator("describe_network_acls")
                for page in paginator.paginate(NetworkAclIds=[acl_id]):
                    for acl in page.get("NetworkAcls", []):
                        subnets += [a["SubnetId"] for a in acl.get("Associations", []) if "SubnetId" in a]
            except ClientError as exc:
                if _not_found(exc):
                    continue
                raise self._fail(f"network ACL {acl_id}", exc) from exc
            except BotoCoreError as exc:
                raise self._fail(f"network ACL {acl_id}", exc) from exc
        return list(dict.fromkeys(subnets))

    def _association_instances(self, association_ids: list[str]) -> list[str]:
        found: list[str] = []
        for association_id in association_ids:
            # No filter by association id exists; an id that is gone (replaced) is simply no instance.
            try:
                paginator = self._ec2.get_paginator("describe_iam_instance_profile_associations")
                for page in paginator.paginate(AssociationIds=[association_id]):
                    found += [
                        a["InstanceId"]
                        for a in page.get("IamInstanceProfileAssociations", [])
                        if "InstanceId" in a
                    ]
            except ClientError as exc:
                if _not_found(exc):
                    continue
                raise self._fail(f"instance profile association {association_id}", exc) from exc
            except BotoCoreError as exc:
                raise self._fail(f"instance profile association {association_id}", exc) from exc
        return found

    def _tag_target(self, target: Any) -> dict[str, InstanceInfo]:
        """Instances an SSM selector reaches: `tag:<key>` (values), `tag-key` (keys), `InstanceIds=*`."""
        if not isinstance(target, dict):
            return {}
        key, values = target.get("key"), target.get("values")
        if not isinstance(key, str) or not isinstance(values, list):
            return {}
        values = [v for v in values if isinstance(v, str)]
        if not values:
            return {}
        if key.startswith("tag:") or key == "tag-key":
            return self._describe([{"Name": key, "Values": values}])
        if key.lower() == "instanceids" and "*" in values:
            return self._describe([{"Name": "instance-state-name", "Values": sorted(LIVE_STATES)}])
        return {}


def _not_found(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code", "").endswith("NotFound")


def _split(filters: list[FilterTypeDef]) -> Iterator[list[FilterTypeDef]]:
    """One request per chunk of the (single) multi-valued filter."""
    first, *rest = filters
    for chunk in _chunks(list(first["Values"])):
        yield [{"Name": first["Name"], "Values": chunk}, *rest]


def _filter_text(filters: list[FilterTypeDef]) -> str:
    first = filters[0]
    values = list(first["Values"])
    return f"{first['Name']}={','.join(values[:3])}{'...' if len(values) > 3 else ''}"


class OfflineInstanceDirectory:
    """Resolution without AWS, for `explain`: only the instances the event names.

    Tags come from the Config item when the event carried one; otherwise they are unknown (None),
    which `ScopeRule.in_scope` treats as in scope. Instances behind a group, an interface or an ACL
    cannot be seen offline.
    """

    def resolve(self, finding: Finding) -> list[InstanceInfo]:
        raw_tags = finding.evidence.get(INSTANCE_TAGS_EVIDENCE_KEY)
        tags = {str(k): str(v) for k, v in raw_tags.items()} if isinstance(raw_tags, dict) else None
        return [InstanceInfo(instance_id=instance_id, tags=tags) for instance_id in finding.instance_ids]
