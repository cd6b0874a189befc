"""The network paths to a server beyond its security groups: routes and route tables of its subnet, its
subnet's network ACL association, prefix lists its groups reference, public addresses, interfaces
attached to it and traffic mirror sessions copying its packets."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Final

from botocore.exceptions import BotoCoreError, ClientError

from immutable_guard.detection.readers import (
    Facts,
    Handler,
    as_dict,
    first_of,
    int_of,
    is_world,
    items_of,
    text_of,
)
from immutable_guard.detection.scope_resolvers import Resolver
from immutable_guard.errors import ScopeResolutionFailed
from immutable_guard.model import Kind, Severity

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ec2.type_defs import FilterTypeDef, RouteTableTypeDef

    from immutable_guard.clients import Clients
    from immutable_guard.detection.events import CloudTrailDetail

# EC2 accepts at most 200 values per filter; stay well below.
_CHUNK: Final = 100

# ---------------------------------------------------------------- routes

# Where a route can send traffic, as CreateRoute / ReplaceRoute record it, and what that means.
# Only a route to an internet gateway (or a carrier gateway, its Wavelength twin) makes the subnet's
# servers reachable from the internet: that is the exposure, remediated like an opened port. A route
# through one chosen interface or instance routes the subnet's traffic through that machine
# (interception), which is also the ordinary NAT-instance or firewall-appliance design: a person must
# judge, so it is alerted. NAT gateways and egress-only gateways are outbound only; peering, transit
# gateways, VPN gateways, endpoints and the VPC's local route connect networks the account already
# runs: none opens the server to anyone new, so they are recorded in the finding and ignored.
_EXPOSING_TARGETS: Final = {"gatewayId": "igw-", "carrierGatewayId": "cagw-"}
_INTERCEPTING_TARGETS: Final = ("networkInterfaceId", "instanceId")
_OTHER_TARGETS: Final = (
    "gatewayId",
    "natGatewayId",
    "egressOnlyInternetGatewayId",
    "vpcPeeringConnectionId",
    "transitGatewayId",
    "localGatewayId",
    "vpcEndpointId",
    "coreNetworkArn",
)


def _route_target(request: dict[str, Any]) -> tuple[str | None, str | None]:
    """(request field, target id) of the route's target; the exposing ones first."""
    for field, prefix in _EXPOSING_TARGETS.items():
        target = text_of(request.get(field))
        if target and target.startswith(prefix):
            return field, target
    for field in (*_INTERCEPTING_TARGETS, *_OTHER_TARGETS):
        target = text_of(request.get(field))
        if target:
            return field, target
    return None, None


def _route(detail: CloudTrailDetail) -> Facts:
    request = detail.request_parameters or {}
    table_id = text_of(request.get("routeTableId"))
    destination = (
        text_of(request.get("destinationCidrBlock"))
        or text_of(request.get("destinationIpv6CidrBlock"))
        or text_of(request.get("destinationPrefixListId"))
    )
    field, target = _route_target(request)
    verb = "created" if detail.event_name == "CreateRoute" else "replaced"
    evidence = {
        "route_table_id": table_id,
        "destination": destination,
        "target": target,
        "target_type": field,
    }
    route = f"Route to {destination or '?'} via {target or 'an unnamed target'} {verb} in {table_id or '?'}"
    # gatewayId also names virtual private gateways (vgw-) and the VPC's "local" target.
    prefix = _EXPOSING_TARGETS.get(field or "")
    if prefix is not None and target is not None and target.startswith(prefix):
        return Facts(
            Kind.NETWORK_PATH_CHANGED,
            Severity.CRITICAL if is_world(destination) else Severity.HIGH,
            f"{route}: the servers of its subnets are reachable from the internet.",
            resource_ids=[table_id],
            evidence={**evidence, "exposure": "internet"},
            # The table is named; one that is gone or unused reaches no server, and that is no alert.
        )
    if field is None:
        # A target this reader does not know (AWS adds target types): a person must look.
        return Facts(
            Kind.NETWORK_PATH_CHANGED,
            Severity.MEDIUM,
            f"{route}: its target could not be read.",
            evidence={**evidence, "exposure": "unknown"},
            alert_if_unresolved=True,
        )
    if field in _INTERCEPTING_TARGETS:
        return Facts(
            Kind.NETWORK_PATH_CHANGED,
            Severity.MEDIUM,
            f"{route}: its subnets' traffic now passes through that one machine. Alert only: this is "
            "also how NAT instances and firewall appliances are wired.",
            evidence={**evidence, "exposure": "interception"},
            alert_if_unresolved=True,
        )
    return Facts(
        Kind.NETWORK_PATH_CHANGED,
        Severity.LOW,
        f"{route}: not a path from the internet (outbound-only, private or local); nothing to remediate.",
        evidence={**evidence, "exposure": "none"},
    )


def _route_table_association(detail: CloudTrailDetail) -> Facts:
    # A subnet moved onto another route table takes that table's routes, an internet route included:
    # the same exposure as adding the route, reached without a CreateRoute.
    request = detail.request_parameters or {}
    response = detail.response_elements or {}
    table_id = text_of(request.get("routeTableId"))
    subnet_id = text_of(request.get("subnetId"))
    old_association = text_of(request.get("associationId"))
    new_association = text_of(
        first_of(response, "newAssociationId", "NewAssociationId", "associationId", "AssociationId")
    )
    target = subnet_id or new_association or old_association
    return Facts(
        Kind.NETWORK_PATH_CHANGED,
        Severity.HIGH,
        f"Route table {table_id or '?'} now routes {subnet_id or f'the subnets of association {target}'}: "
        "its servers take that table's routes.",
        # The association leads to the subnet (or, for the main table, to the VPC's implicit subnets);
        # a subnet id alone is not resolved, so that ids other paths name never fan out to a subnet.
        resource_ids=[new_association or subnet_id],
        evidence={
            "route_table_id": table_id,
            "subnet_id": subnet_id,
            "replaced_association_id": old_association,
            "association_id": new_association,
        },
        # An edge association (gatewayId) steers the VPC's inbound traffic, which no server resolves.
        alert_if_unresolved=new_association is None or "gatewayId" in request,
    )


def _route_table_disassociation(detail: CloudTrailDetail) -> Facts:
    # The subnet falls back to its VPC's main table, whose routes (an internet route included) it then
    # takes. The association is gone once the call succeeds, so nothing leads to the subnet: alerted.
    request = detail.request_parameters or {}
    association = text_of(request.get("associationId"))
    return Facts(
        Kind.NETWORK_PATH_CHANGED,
        Severity.MEDIUM,
        f"Route table association {association or '?'} removed: its subnet now takes the main route "
        "table's routes.",
        resource_ids=[association],
        evidence={"replaced_association_id": association},
        alert_if_unresolved=True,
    )


def _network_acl_association(detail: CloudTrailDetail) -> Facts:
    # The record names the old association and the new ACL, not the subnet; the new association id
    # (response) leads to exactly the one subnet that moved. The ACL id would reach every subnet using
    # that ACL, most of which did not change.
    request = detail.request_parameters or {}
    response = detail.response_elements or {}
    acl_id = text_of(request.get("networkAclId"))
    old_association = text_of(request.get("associationId"))
    new_association = text_of(first_of(response, "newAssociationId", "NewAssociationId"))
    return Facts(
        Kind.NETWORK_PATH_CHANGED,
        Severity.HIGH,
        f"Network ACL {acl_id or '?'} now filters the subnet of association "
        f"{new_association or old_association or '?'}: its servers take that ACL's rules.",
        resource_ids=[new_association],
        evidence={
            "network_acl_id": acl_id,
            "replaced_association_id": old_association,
            "association_id": new_association,
        },
        alert_if_unresolved=True,
    )


# ---------------------------------------------------------------- prefix lists


def _entries(value: object) -> list[dict[str, Any]]:
    """Wrapped EC2 requests record one entry as an object and several as a list."""
    if isinstance(value, dict) and "items" not in value:
        return [value]
    if isinstance(value, dict):
        return [as_dict(item) for item in items_of(value)]
    return [as_dict(item) for item in value] if isinstance(value, list) else []


def _modify_managed_prefix_list(detail: CloudTrailDetail) -> Facts:
    request = detail.request_parameters or {}
    wrapped = as_dict(first_of(request, "ModifyManagedPrefixListRequest")) or request
    list_id = text_of(first_of(wrapped, "PrefixListId", "prefixListId"))
    added = [
        cidr
        for cidr in (text_of(first_of(e, "Cidr", "cidr")) for e in _entries(first_of(wrapped, "AddEntry")))
        if cidr
    ]
    removed = [
        cidr
        for cidr in (text_of(first_of(e, "Cidr", "cidr")) for e in _entries(first_of(wrapped, "RemoveEntry")))
        if cidr
    ]
    evidence = {"prefix_list_id": list_id, "added_cidrs": added, "removed_cidrs": removed}
    if not added:
        # Removing entries narrows every rule that references the list, as a revocation does.
        return Facts(
            Kind.PORT_OPENED,
            Severity.LOW,
            f"Prefix list {list_id or '?'} changed without adding an address: nothing was opened.",
            evidence=evidence,
        )
    return Facts(
        Kind.PORT_OPENED,
        Severity.CRITICAL if any(is_world(cidr) for cidr in added) else Severity.HIGH,
        f"Prefix list {list_id or '?'} now also admits {', '.join(added[:3])}"
        f"{' and more' if len(added) > 3 else ''} in every security group rule that references it.",
        resource_ids=[list_id],
        evidence=evidence,
        alert_if_unresolved=list_id is None,
    )


# ---------------------------------------------------------------- addresses, interfaces, mirrors


def _associate_address(detail: CloudTrailDetail) -> Facts:
    request = detail.request_parameters or {}
    response = detail.response_elements or {}
    instance_id = text_of(request.get("instanceId"))
    eni_id = text_of(request.get("networkInterfaceId"))
    address = text_of(request.get("allocationId")) or text_of(request.get("publicIp"))
    return Facts(
        Kind.PORT_OPENED,
        Severity.HIGH,
        f"Elastic IP {address or '?'} associated with {instance_id or eni_id or 'an unnamed target'}: it is "
        "reachable from the internet wherever its groups allow.",
        resource_ids=[instance_id, eni_id],
        instance_ids=[instance_id],
        evidence={
            "address": address,
            "private_ip": text_of(request.get("privateIpAddress")),
            "network_interface_id": eni_id,
            "association_id": text_of(first_of(response, "associationId", "AssociationId")),
        },
        alert_if_unresolved=True,
    )


def _assign_ipv6_addresses(detail: CloudTrailDetail) -> Facts:
    # IPv6 addresses are global: with the subnet's usual ::/0 route, the interface is on the internet.
    request = detail.request_parameters or {}
    response = detail.response_elements or {}
    eni_id = text_of(request.get("networkInterfaceId")) or text_of(
        first_of(response, "networkInterfaceId", "NetworkInterfaceId")
    )
    addresses = [
        text_of(as_dict(item).get("ipv6Address")) or text_of(item)
        for item in items_of(first_of(response, "assignedIpv6Addresses", "AssignedIpv6Addresses"))
    ]
    count = int_of(request.get("ipv6AddressCount"))
    return Facts(
        Kind.PORT_OPENED,
        Severity.HIGH,
        f"IPv6 address(es) {', '.join(a for a in addresses if a) or (count or '?')} assigned to network "
        f"interface {eni_id or '?'}: globally routable.",
        resource_ids=[eni_id],
        evidence={"network_interface_id": eni_id, "ipv6_addresses": [a for a in addresses if a]},
        alert_if_unresolved=True,
    )


def _attach_network_interface(detail: CloudTrailDetail) -> Facts:
    request = detail.request_parameters or {}
    response = detail.response_elements or {}
    instance_id = text_of(request.get("instanceId"))
    eni_id = text_of(request.get("networkInterfaceId"))
    return Facts(
        Kind.NETWORK_PATH_CHANGED,
        Severity.HIGH,
        f"Network interface {eni_id or '?'} attached to {instance_id or 'an instance'} as device "
        f"{int_of(request.get('deviceIndex'))}: it joins that interface's subnet and groups.",
        resource_ids=[instance_id],
        instance_ids=[instance_id],
        evidence={
            "network_interface_id": eni_id,
            "device_index": int_of(request.get("deviceIndex")),
            "attachment_id": text_of(first_of(response, "attachmentId", "AttachmentId")),
        },
        alert_if_unresolved=True,
    )


def _traffic_mirror_session(detail: CloudTrailDetail) -> Facts:
    # The mirrored interface (the source) is in the request of CreateTrafficMirrorSession and in the
    # response of both Create and Modify (Modify can point an existing session at a new target).
    name = detail.event_name
    request = as_dict(first_of(detail.request_parameters or {}, f"{name}Request")) or (
        detail.request_parameters or {}
    )
    response = as_dict(first_of(detail.response_elements or {}, f"{name}Response")) or (
        detail.response_elements or {}
    )
    session = as_dict(first_of(response, "trafficMirrorSession", "TrafficMirrorSession"))
    eni_id = text_of(first_of(request, "NetworkInterfaceId", "networkInterfaceId")) or text_of(
        first_of(session, "networkInterfaceId", "NetworkInterfaceId")
    )
    session_id = text_of(first_of(request, "TrafficMirrorSessionId")) or text_of(
        first_of(session, "trafficMirrorSessionId", "TrafficMirrorSessionId")
    )
    target = text_of(first_of(request, "TrafficMirrorTargetId", "trafficMirrorTargetId")) or text_of(
        first_of(session, "trafficMirrorTargetId", "TrafficMirrorTargetId")
    )
    verb = "created" if name == "CreateTrafficMirrorSession" else "modified"
    return Facts(
        Kind.TRAFFIC_MIRRORED,
        Severity.CRITICAL,
        f"Traffic mirror session {session_id or ''} {verb}: packets of network interface {eni_id or '?'} "
        f"are copied to {target or 'a mirror target'}.",
        resource_ids=[eni_id or session_id],
        evidence={
            "network_interface_id": eni_id,
            "traffic_mirror_session_id": session_id,
            "traffic_mirror_target_id": target,
            "traffic_mirror_filter_id": text_of(first_of(request, "TrafficMirrorFilterId")),
        },
        alert_if_unresolved=True,
    )


HANDLERS: Final[dict[tuple[str, str], Handler]] = {
    ("ec2.amazonaws.com", "CreateRoute"): _route,
    ("ec2.amazonaws.com", "ReplaceRoute"): _route,
    ("ec2.amazonaws.com", "AssociateRouteTable"): _route_table_association,
    ("ec2.amazonaws.com", "ReplaceRouteTableAssociation"): _route_table_association,
    ("ec2.amazonaws.com", "DisassociateRouteTable"): _route_table_disassociation,
    ("ec2.amazonaws.com", "ReplaceNetworkAclAssociation"): _network_acl_association,
    ("ec2.amazonaws.com", "ModifyManagedPrefixList"): _modify_managed_prefix_list,
    ("ec2.amazonaws.com", "AssociateAddress"): _associate_address,
    ("ec2.amazonaws.com", "AssignIpv6Addresses"): _assign_ipv6_addresses,
    ("ec2.amazonaws.com", "AttachNetworkInterface"): _attach_network_interface,
    ("ec2.amazonaws.com", "CreateTrafficMirrorSession"): _traffic_mirror_session,
    ("ec2.amazonaws.com", "ModifyTrafficMirrorSession"): _traffic_mirror_session,
}
"""(eventSource, eventName) -> handler, for the CloudTrail records of this path."""


# ---------------------------------------------------------------- resolvers


def _chunks(values: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]


def _failure(what: str, exc: Exception) -> ScopeResolutionFailed:
    code = exc.response.get("Error", {}).get("Code", "") if isinstance(exc, ClientError) else ""
    return ScopeResolutionFailed(f"could not resolve instances from {what}: {code or type(exc).__name__}")


def _gone(exc: ClientError) -> bool:
    # An id that no longer exists (or never did) names no instance; any other refusal is a failure.
    return exc.response.get("Error", {}).get("Code", "").endswith(("NotFound", ".Malformed"))


def _guarded(what: str, read: Callable[[], list[Any]]) -> list[Any]:
    try:
        return read()
    except ClientError as exc:
        if _gone(exc):
            return []
        raise _failure(what, exc) from exc
    except BotoCoreError as exc:
        raise _failure(what, exc) from exc


def _instances(ec2: EC2Client, name: str, values: list[str]) -> list[dict[str, Any]]:
    """Every instance matching one multi-valued filter (chunked), with its subnet."""
    found: list[dict[str, Any]] = []
    for chunk in _chunks(list(dict.fromkeys(values))):
        filters: list[FilterTypeDef] = [{"Name": name, "Values": chunk}]

        def read(filters: list[FilterTypeDef] = filters) -> list[Any]:
            return [
                instance
                for page in ec2.get_paginator("describe_instances").paginate(Filters=filters)
                for reservation in page.get("Reservations", [])
                for instance in reservation.get("Instances", [])
            ]

        found += _guarded(f"{name}={','.join(chunk[:3])}", read)
    return found


def _instance_ids(instances: Iterable[dict[str, Any]]) -> list[str]:
    return [i["InstanceId"] for i in instances if "InstanceId" in i]


def _route_tables(ec2: EC2Client, what: str, **kwargs: Any) -> list[RouteTableTypeDef]:
    def read() -> list[Any]:
        paginator = ec2.get_paginator("describe_route_tables")
        return [table for page in paginator.paginate(**kwargs) for table in page.get("RouteTables", [])]

    return _guarded(what, read)


def _servers_of_route_tables(ec2: EC2Client, tables: list[RouteTableTypeDef]) -> list[str]:
    """Instances in the tables' subnets; a main table also serves every subnet of its VPC that has no
    explicit association."""
    subnet_ids: list[str] = []
    main_vpcs: list[str] = []
    for table in tables:
        for association in table.get("Associations", []):
            if association.get("Main") and "VpcId" in table:
                main_vpcs.append(table["VpcId"])
            elif "SubnetId" in association:
                subnet_ids.append(association["SubnetId"])
    found = _instance_ids(_instances(ec2, "subnet-id", subnet_ids)) if subnet_ids else []
    for vpc_id in dict.fromkeys(main_vpcs):
        explicit = {
            association["SubnetId"]
            for table in _route_tables(
                ec2, f"route tables of {vpc_id}", Filters=[{"Name": "vpc-id", "Values": [vpc_id]}]
            )
            for association in table.get("Associations", [])
            if "SubnetId" in association
        }
        found += _instance_ids(
            i for i in _instances(ec2, "vpc-id", [vpc_id]) if i.get("SubnetId") not in explicit
        )
    return found


def _route_table_servers(clients: Clients, table_ids: list[str]) -> list[str]:
    tables: list[RouteTableTypeDef] = []
    for table_id in table_ids:
        # By id, one at a time: a table deleted since the event is simply no server.
        tables += _route_tables(clients.ec2, f"route table {table_id}", RouteTableIds=[table_id])
    return _servers_of_route_tables(clients.ec2, tables)


def _route_association_servers(clients: Clients, association_ids: list[str]) -> list[str]:
    tables = _route_tables(
        clients.ec2,
        f"route table association {','.join(association_ids[:3])}",
        Filters=[{"Name": "association.route-table-association-id", "Values": association_ids}],
    )
    wanted = set(association_ids)
    # Only the associations that changed: the table's other subnets did not move.
    narrowed: list[RouteTableTypeDef] = [
        {
            **table,
            "Associations": [
                a for a in table.get("Associations", []) if a.get("RouteTableAssociationId") in wanted
            ],
        }
        for table in tables
    ]
    return _servers_of_route_tables(clients.ec2, narrowed)


def _subnet_servers(clients: Clients, subnet_ids: list[str]) -> list[str]:
    return _instance_ids(_instances(clients.ec2, "subnet-id", subnet_ids))


def _acl_association_servers(clients: Clients, association_ids: list[str]) -> list[str]:
    def read() -> list[Any]:
        paginator = clients.ec2.get_paginator("describe_network_acls")
        filters: list[FilterTypeDef] = [{"Name": "association.association-id", "Values": association_ids}]
        return [acl for page in paginator.paginate(Filters=filters) for acl in page.get("NetworkAcls", [])]

    wanted = set(association_ids)
    subnet_ids = [
        association["SubnetId"]
        for acl in _guarded(f"network ACL association {','.join(association_ids[:3])}", read)
        for association in acl.get("Associations", [])
        if association.get("NetworkAclAssociationId") in wanted and "SubnetId" in association
    ]
    return _subnet_servers(clients, subnet_ids) if subnet_ids else []


def _references(group: dict[str, Any], list_ids: set[str]) -> bool:
    permissions = [*group.get("IpPermissions", []), *group.get("IpPermissionsEgress", [])]
    return any(
        entry.get("PrefixListId") in list_ids
        for permission in permissions
        for entry in permission.get("PrefixListIds", [])
    )


def _prefix_list_servers(clients: Clients, list_ids: list[str]) -> list[str]:
    """Instances using a group whose ingress or egress rules reference one of the prefix lists."""
    ec2 = clients.ec2
    wanted = set(list_ids)

    # Every group is read and its rules checked here: the `ip-permission.prefix-list-id` filters do the
    # same in AWS, but moto (the local runtime) does not implement them, and a prefix list change is
    # rare enough for the extra pages not to matter.
    def read() -> list[Any]:
        paginator = ec2.get_paginator("describe_security_groups")
        return [group for page in paginator.paginate() for group in page.get("SecurityGroups", [])]

    group_ids = [
        group["GroupId"]
        for group in _guarded(f"prefix list {','.join(list_ids[:3])}", read)
        if "GroupId" in group and _references(group, wanted)
    ]
    if not group_ids:
        return []
    found = _instance_ids(_instances(ec2, "instance.group-id", group_ids))
    # Groups on secondary interfaces reach their instances through the interfaces.
    for chunk in _chunks(list(dict.fromkeys(group_ids))):
        filters: list[FilterTypeDef] = [{"Name": "group-id", "Values": chunk}]

        def read_enis(filters: list[FilterTypeDef] = filters) -> list[Any]:
            paginator = ec2.get_paginator("describe_network_interfaces")
            return [
                e for page in paginator.paginate(Filters=filters) for e in page.get("NetworkInterfaces", [])
            ]

        found += [
            eni["Attachment"]["InstanceId"]
            for eni in _guarded(f"group-id={','.join(chunk[:3])}", read_enis)
            if eni.get("Attachment", {}).get("InstanceId")
        ]
    return found


def _prefixed(prefix: str) -> Callable[[str], bool]:
    return lambda resource_id: resource_id.startswith(prefix)


RESOLVERS: Final[tuple[Resolver, ...]] = (
    Resolver("route table", _prefixed("rtb-"), _route_table_servers),
    Resolver("route table association", _prefixed("rtbassoc-"), _route_association_servers),
    Resolver("network ACL association", _prefixed("aclassoc-"), _acl_association_servers),
    Resolver("managed prefix list", _prefixed("pl-"), _prefix_list_servers),
)
"""How the resource ids this path's findings name lead to instances."""
