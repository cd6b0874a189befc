"""The network paths (paths/network.py): routes, route-table and ACL associations, prefix lists, public
addresses, attached interfaces, traffic mirrors and groups named by name each become the right finding,
reach the instances behind them in EC2 (moto), and leave benign twins alone."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from detection_samples import SAMPLE_ENI, SAMPLE_GROUP, SAMPLE_INSTANCE, World, load_sample
from immutable_guard.detection import Ec2InstanceDirectory, Policy, judge_event, normalise, parse_event
from immutable_guard.detection.scope import ScopeRule
from immutable_guard.model import Decision, Finding, Kind, Severity
from immutable_guard.patterns import matches
from immutable_guard.template import event_rules, load_template

TEMPLATE = load_template(Path(__file__).resolve().parents[3] / "template.yaml")
PIPELINE = "arn:aws:iam::111122223333:role/deploy-pipeline"

SAMPLE_ROUTE_TABLE = "rtb-0e4f5a6b7c8d90123"
SAMPLE_ROUTE_ASSOCIATION = "rtbassoc-0b1c2d3e4f5a60789"
SAMPLE_ACL_ASSOCIATION = "aclassoc-0c2d3e4f5a6b70891"
SAMPLE_PREFIX_LIST = "pl-0c3516b0e5630bf3e"


def finding_of(raw: dict[str, Any]) -> Finding:
    return normalise(parse_event(raw))


def resolved(world: World, raw: dict[str, Any]) -> set[str]:
    return {info.instance_id for info in Ec2InstanceDirectory(world.ec2).resolve(finding_of(raw))}


def with_request(name: str, request: dict[str, Any]) -> dict[str, Any]:
    raw = load_sample(name)
    raw["detail"]["requestParameters"] = request
    return raw


# ---------------------------------------------------------------- the samples


SAMPLES = [
    ("cloudtrail-create-route-internet-gateway.json", Kind.NETWORK_PATH_CHANGED, Severity.CRITICAL),
    ("cloudtrail-replace-route-internet-gateway.json", Kind.NETWORK_PATH_CHANGED, Severity.CRITICAL),
    ("cloudtrail-replace-route-table-association.json", Kind.NETWORK_PATH_CHANGED, Severity.HIGH),
    ("cloudtrail-replace-network-acl-association.json", Kind.NETWORK_PATH_CHANGED, Severity.HIGH),
    ("cloudtrail-attach-network-interface.json", Kind.NETWORK_PATH_CHANGED, Severity.HIGH),
    ("cloudtrail-modify-managed-prefix-list.json", Kind.PORT_OPENED, Severity.CRITICAL),
    ("cloudtrail-associate-address.json", Kind.PORT_OPENED, Severity.HIGH),
    ("cloudtrail-authorize-sg-ingress-by-group-name.json", Kind.PORT_OPENED, Severity.CRITICAL),
    ("cloudtrail-create-traffic-mirror-session.json", Kind.TRAFFIC_MIRRORED, Severity.CRITICAL),
]


@pytest.mark.parametrize(("name", "kind", "severity"), SAMPLES)
def test_each_network_sample_is_recognised_and_delivered_by_one_rule(
    name: str, kind: Kind, severity: Severity
) -> None:
    """Record shapes: EC2 query API (camelCase, {"items": [...]}) per the EC2 API reference; real
    records of CreateRoute (panther-labs/panther-analysis rules/aws_cloudtrail_rules/
    aws_ec2_route_table_modified.yml), CreateTrafficMirrorSession wrapped as
    CreateTrafficMirrorSessionRequest (same repository, aws_ec2_traffic_mirroring.yml),
    ModifyManagedPrefixList wrapped with AddEntry {Description, cidr, tag} (a published console record),
    AttachNetworkInterface with responseElements.attachmentId (a published lookup-events record), and
    AuthorizeSecurityGroupIngress responses carrying securityGroupRuleSet.items[].groupId (stratus-red-team
    detonation records)."""
    # Given a sample / When it is normalised
    raw = load_sample(name)
    finding = finding_of(raw)
    # Then its kind and severity follow the rules, and exactly one rule of the template delivers it
    assert (finding.kind, finding.severity) == (kind, severity)
    assert [rule.logical_id for rule in event_rules(TEMPLATE) if matches(rule.pattern, raw)] != []
    assert len([rule for rule in event_rules(TEMPLATE) if matches(rule.pattern, raw)]) == 1


@pytest.mark.parametrize("name", [name for name, _, _ in SAMPLES])
def test_a_failed_call_of_each_path_is_delivered_by_no_rule(name: str) -> None:
    raw = load_sample(name)
    raw["detail"]["errorCode"] = "Client.UnauthorizedOperation"
    assert [rule for rule in event_rules(TEMPLATE) if matches(rule.pattern, raw)] == []


@pytest.mark.parametrize("name", [name for name, _, _ in SAMPLES])
def test_an_empty_request_and_response_yield_a_finding_with_less_evidence(name: str) -> None:
    raw = load_sample(name)
    raw["detail"]["requestParameters"] = None
    raw["detail"]["responseElements"] = None
    finding = finding_of(raw)
    assert finding.summary and finding.instance_ids == ()


# ---------------------------------------------------------------- routes: what is an exposure


def test_a_default_route_to_an_internet_gateway_names_its_route_table() -> None:
    finding = finding_of(load_sample("cloudtrail-create-route-internet-gateway.json"))
    assert finding.resource_ids == (SAMPLE_ROUTE_TABLE,)
    assert finding.evidence["exposure"] == "internet"
    # A table that reaches no server is no alert: every new VPC gets such a route.
    assert finding.alert_if_unresolved is False


def test_a_narrow_route_to_an_internet_gateway_is_high_not_critical() -> None:
    raw = with_request(
        "cloudtrail-create-route-internet-gateway.json",
        {"routeTableId": SAMPLE_ROUTE_TABLE, "destinationCidrBlock": "198.51.100.0/24", "gatewayId": "igw-1"},
    )
    assert finding_of(raw).severity is Severity.HIGH


@pytest.mark.parametrize(
    "target",
    [
        {"vpcPeeringConnectionId": "pcx-0d1e2f3a4b5c60718"},
        {"transitGatewayId": "tgw-0a1b2c3d4e5f60718"},
        {"natGatewayId": "nat-0a1b2c3d4e5f60718"},
        {"egressOnlyInternetGatewayId": "eigw-0a1b2c3d4e5f60718"},
        {"gatewayId": "vgw-0a1b2c3d4e5f60718"},
        {"gatewayId": "local"},
        {"vpcEndpointId": "vpce-0a1b2c3d4e5f60718"},
    ],
)
def test_a_route_that_opens_no_path_from_the_internet_is_ignored(target: dict[str, str]) -> None:
    # Given a route to a private, outbound-only or local target
    raw = with_request(
        "cloudtrail-create-route-internet-gateway.json",
        {"routeTableId": SAMPLE_ROUTE_TABLE, "destinationCidrBlock": "0.0.0.0/0", **target},
    )
    # When it is judged, even with an immutable server behind the table
    judgement = judge_event(raw, Policy(), _Everything())
    # Then nothing is remediated or alerted
    assert (judgement.decision, judgement.reason) == (Decision.IGNORE, "out_of_scope")
    assert judgement.finding.evidence["exposure"] == "none"


@pytest.mark.parametrize("target", [{"networkInterfaceId": SAMPLE_ENI}, {"instanceId": SAMPLE_INSTANCE}])
def test_a_route_through_one_machine_is_alerted_not_remediated(target: dict[str, str]) -> None:
    raw = with_request(
        "cloudtrail-create-route-internet-gateway.json",
        {"routeTableId": SAMPLE_ROUTE_TABLE, "destinationCidrBlock": "0.0.0.0/0", **target},
    )
    judgement = judge_event(raw, Policy(), _Everything())
    assert judgement.decision is Decision.ALERT
    assert judgement.finding.evidence["exposure"] == "interception"


def test_the_peering_sample_is_ignored() -> None:
    judgement = judge_event(load_sample("benign-create-route-peering.json"), Policy(), _Everything())
    assert (judgement.decision, judgement.reason) == (Decision.IGNORE, "out_of_scope")


class _Everything:
    """A directory for which every finding reaches one immutable server (the worst case for noise)."""

    def resolve(self, finding: Finding) -> list[Any]:
        from immutable_guard.detection import InstanceInfo

        if not finding.resource_ids and not finding.instance_ids:
            return []
        return [InstanceInfo(instance_id=SAMPLE_INSTANCE, state="running", tags={"immutable": "true"})]


# ---------------------------------------------------------------- routes: resolution in EC2


def _route_event(world: World, table_id: str) -> dict[str, Any]:
    return world.event("cloudtrail-create-route-internet-gateway.json", **{SAMPLE_ROUTE_TABLE: table_id})


def test_a_route_reaches_the_live_instances_of_the_subnets_its_table_is_associated_with(world: World) -> None:
    # Given a table explicitly associated with the world's subnet
    table_id = world.ec2.create_route_table(VpcId=world.vpc_id)["RouteTable"]["RouteTableId"]
    world.ec2.associate_route_table(RouteTableId=table_id, SubnetId=world.subnet_id)
    # When an internet route is added to it
    # Then both live instances of the subnet are reached, the terminated one is not
    assert resolved(world, _route_event(world, table_id)) == {world.immutable_id, world.mutable_id}


def test_a_route_in_the_main_table_reaches_only_subnets_without_their_own_table(world: World) -> None:
    # Given a second subnet with its own table, and the world's subnet on the VPC's main table
    main_id = world.ec2.describe_route_tables(
        Filters=[
            {"Name": "vpc-id", "Values": [world.vpc_id]},
            {"Name": "association.main", "Values": ["true"]},
        ]
    )["RouteTables"][0]["RouteTableId"]
    other_subnet = world.ec2.create_subnet(VpcId=world.vpc_id, CidrBlock="10.0.2.0/24")["Subnet"]["SubnetId"]
    own_table = world.ec2.create_route_table(VpcId=world.vpc_id)["RouteTable"]["RouteTableId"]
    world.ec2.associate_route_table(RouteTableId=own_table, SubnetId=other_subnet)
    elsewhere = world.ec2.run_instances(
        ImageId=world.image_id,
        InstanceType="t3.micro",
        MinCount=1,
        MaxCount=1,
        SubnetId=other_subnet,
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "immutable", "Value": "true"}]}],
    )["Instances"][0]["InstanceId"]
    # When the main table gets an internet route
    found = resolved(world, _route_event(world, main_id))
    # Then the main table's implicit subnet is reached, the explicitly associated one is not
    assert found == {world.immutable_id, world.mutable_id}
    assert elsewhere not in found
    # And a route in the other subnet's own table reaches only that subnet
    assert resolved(world, _route_event(world, own_table)) == {elsewhere}


def test_a_route_in_a_deleted_table_reaches_nothing_and_is_ignored(world: World) -> None:
    raw = world.event("cloudtrail-create-route-internet-gateway.json")
    judgement = judge_event(raw, Policy(), Ec2InstanceDirectory(world.ec2))
    assert (judgement.decision, judgement.reason) == (Decision.IGNORE, "out_of_scope")


def test_an_internet_route_for_an_immutable_subnet_is_remediated_end_to_end(world: World) -> None:
    table_id = world.ec2.create_route_table(VpcId=world.vpc_id)["RouteTable"]["RouteTableId"]
    world.ec2.associate_route_table(RouteTableId=table_id, SubnetId=world.subnet_id)
    judgement = judge_event(_route_event(world, table_id), Policy(), Ec2InstanceDirectory(world.ec2))
    assert judgement.decision is Decision.REMEDIATE
    assert [i.instance_id for i in judgement.instances_in_scope] == [world.immutable_id]


def test_moving_a_subnet_onto_another_route_table_reaches_that_subnet_only(world: World) -> None:
    # Given the world's subnet moved from one explicit table to another (ReplaceRouteTableAssociation)
    first = world.ec2.create_route_table(VpcId=world.vpc_id)["RouteTable"]["RouteTableId"]
    second = world.ec2.create_route_table(VpcId=world.vpc_id)["RouteTable"]["RouteTableId"]
    other_subnet = world.ec2.create_subnet(VpcId=world.vpc_id, CidrBlock="10.0.3.0/24")["Subnet"]["SubnetId"]
    world.ec2.associate_route_table(RouteTableId=second, SubnetId=other_subnet)
    old = world.ec2.associate_route_table(RouteTableId=first, SubnetId=world.subnet_id)["AssociationId"]
    new = world.ec2.replace_route_table_association(AssociationId=old, RouteTableId=second)[
        "NewAssociationId"
    ]
    raw = world.event("cloudtrail-replace-route-table-association.json", **{SAMPLE_ROUTE_ASSOCIATION: new})
    # Then the moved subnet's instances are reached, not those of the table's other subnet
    assert resolved(world, raw) == {world.immutable_id, world.mutable_id}


def test_associating_a_route_table_names_the_subnet() -> None:
    raw = load_sample("cloudtrail-replace-route-table-association.json")
    raw["detail"]["eventName"] = "AssociateRouteTable"
    raw["detail"]["requestParameters"] = {"routeTableId": SAMPLE_ROUTE_TABLE, "subnetId": "subnet-0a1b2c3d"}
    raw["detail"]["responseElements"] = {"associationId": SAMPLE_ROUTE_ASSOCIATION}
    finding = finding_of(raw)
    assert finding.resource_ids == (SAMPLE_ROUTE_ASSOCIATION,)
    assert finding.evidence["subnet_id"] == "subnet-0a1b2c3d"


def test_associating_a_route_table_reaches_the_subnet_through_the_new_association(world: World) -> None:
    table_id = world.ec2.create_route_table(VpcId=world.vpc_id)["RouteTable"]["RouteTableId"]
    association = world.ec2.associate_route_table(RouteTableId=table_id, SubnetId=world.subnet_id)[
        "AssociationId"
    ]
    raw = world.event("cloudtrail-replace-route-table-association.json")
    raw["detail"]["eventName"] = "AssociateRouteTable"
    raw["detail"]["requestParameters"] = {"routeTableId": table_id, "subnetId": world.subnet_id}
    raw["detail"]["responseElements"] = {"associationId": association}
    assert resolved(world, raw) == {world.immutable_id, world.mutable_id}


def test_a_route_whose_target_cannot_be_read_is_alerted() -> None:
    raw = with_request(
        "cloudtrail-create-route-internet-gateway.json",
        {"routeTableId": SAMPLE_ROUTE_TABLE, "destinationCidrBlock": "0.0.0.0/0", "odbNetworkArn": "arn:x"},
    )
    judgement = judge_event(raw, Policy(), _Everything())
    assert judgement.decision is Decision.ALERT


# ---------------------------------------------------------------- network ACL association


def test_a_network_acl_association_reaches_the_subnet_that_moved_not_every_subnet_of_the_acl(
    world: World,
) -> None:
    # Given the world's subnet moved to a new ACL, which another (empty) subnet also uses
    acl_id = world.ec2.create_network_acl(VpcId=world.vpc_id)["NetworkAcl"]["NetworkAclId"]
    current = world.ec2.describe_network_acls(
        Filters=[{"Name": "association.subnet-id", "Values": [world.subnet_id]}]
    )["NetworkAcls"][0]
    association = next(a for a in current["Associations"] if a.get("SubnetId") == world.subnet_id)
    new = world.ec2.replace_network_acl_association(
        AssociationId=association["NetworkAclAssociationId"], NetworkAclId=acl_id
    )["NewAssociationId"]
    raw = world.event("cloudtrail-replace-network-acl-association.json", **{SAMPLE_ACL_ASSOCIATION: new})
    # When it is resolved and judged
    judgement = judge_event(raw, Policy(), Ec2InstanceDirectory(world.ec2))
    # Then the subnet's immutable server is remediated
    assert judgement.decision is Decision.REMEDIATE
    assert [i.instance_id for i in judgement.instances_in_scope] == [world.immutable_id]
    assert resolved(world, raw) == {world.immutable_id, world.mutable_id}


def test_a_network_acl_association_that_cannot_be_found_is_alerted(world: World) -> None:
    judgement = judge_event(
        world.event("cloudtrail-replace-network-acl-association.json"),
        Policy(),
        Ec2InstanceDirectory(world.ec2),
    )
    assert (judgement.decision, judgement.reason) == (Decision.ALERT, "unresolved_target")


# ---------------------------------------------------------------- managed prefix lists


def _prefix_list(world: World) -> str:
    return world.ec2.create_managed_prefix_list(
        PrefixListName="office-ranges", AddressFamily="IPv4", MaxEntries=10, Entries=[]
    )["PrefixList"]["PrefixListId"]


def test_a_prefix_list_change_reaches_instances_whose_groups_reference_it(world: World) -> None:
    # Given a prefix list referenced by an ingress rule of the spare group, worn by the immutable server
    list_id = _prefix_list(world)
    world.ec2.authorize_security_group_ingress(
        GroupId=world.spare_group_id,
        IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "PrefixListIds": [{"PrefixListId": list_id}]}
        ],
    )
    world.ec2.modify_instance_attribute(InstanceId=world.immutable_id, Groups=[world.spare_group_id])
    raw = world.event("cloudtrail-modify-managed-prefix-list.json", **{SAMPLE_PREFIX_LIST: list_id})
    # When 0.0.0.0/0 is added to the list
    judgement = judge_event(raw, Policy(), Ec2InstanceDirectory(world.ec2))
    # Then the immutable server is remediated; the mutable one (other group) is not reached at all
    assert judgement.decision is Decision.REMEDIATE
    assert judgement.finding.severity is Severity.CRITICAL
    assert resolved(world, raw) == {world.immutable_id}


def test_a_prefix_list_no_group_references_reaches_nothing(world: World) -> None:
    raw = world.event(
        "cloudtrail-modify-managed-prefix-list.json", **{SAMPLE_PREFIX_LIST: _prefix_list(world)}
    )
    assert resolved(world, raw) == set()


def test_removing_prefix_list_entries_opens_nothing() -> None:
    finding = finding_of(load_sample("benign-modify-managed-prefix-list-remove-entry.json"))
    assert finding.resource_ids == () and finding.severity is Severity.LOW
    assert finding.evidence["removed_cidrs"] == ["198.51.100.0/24"]


def test_several_added_entries_are_read_from_a_list() -> None:
    raw = load_sample("cloudtrail-modify-managed-prefix-list.json")
    wrapped = raw["detail"]["requestParameters"]["ModifyManagedPrefixListRequest"]
    wrapped["AddEntry"] = [{"Cidr": "198.51.100.0/24", "tag": 1}, {"cidr": "203.0.113.0/24", "tag": 2}]
    finding = finding_of(raw)
    assert finding.evidence["added_cidrs"] == ["198.51.100.0/24", "203.0.113.0/24"]
    assert finding.severity is Severity.HIGH


# ---------------------------------------------------------------- addresses, interfaces, mirrors


def test_an_elastic_ip_on_an_immutable_server_is_remediated(world: World) -> None:
    judgement = judge_event(
        world.event("cloudtrail-associate-address.json"), Policy(), Ec2InstanceDirectory(world.ec2)
    )
    assert judgement.decision is Decision.REMEDIATE
    assert [i.instance_id for i in judgement.instances_in_scope] == [world.immutable_id]


def test_an_elastic_ip_on_an_interface_reaches_its_instance(world: World) -> None:
    world.ec2.attach_network_interface(
        NetworkInterfaceId=world.eni_id, InstanceId=world.immutable_id, DeviceIndex=1
    )
    raw = load_sample("cloudtrail-associate-address.json")
    raw["detail"]["requestParameters"] = {"networkInterfaceId": world.eni_id, "allocationId": "eipalloc-1"}
    assert resolved(world, raw) == {world.immutable_id}


def test_an_elastic_ip_on_a_mutable_server_is_ignored(world: World) -> None:
    raw = world.event("cloudtrail-associate-address.json", **{world.immutable_id: world.mutable_id})
    judgement = judge_event(raw, Policy(), Ec2InstanceDirectory(world.ec2))
    assert (judgement.decision, judgement.reason) == (Decision.IGNORE, "out_of_scope")


def test_ipv6_addresses_assigned_to_an_interface_reach_its_instance(world: World) -> None:
    world.ec2.attach_network_interface(
        NetworkInterfaceId=world.eni_id, InstanceId=world.immutable_id, DeviceIndex=1
    )
    raw = load_sample("cloudtrail-associate-address.json")
    raw["detail"]["eventName"] = "AssignIpv6Addresses"
    raw["detail"]["requestParameters"] = {"networkInterfaceId": world.eni_id, "ipv6AddressCount": 1}
    raw["detail"]["responseElements"] = {
        "networkInterfaceId": world.eni_id,
        "assignedIpv6Addresses": {"items": [{"ipv6Address": "2600:1f18::1"}]},
    }
    finding = finding_of(raw)
    assert (finding.kind, finding.evidence["ipv6_addresses"]) == (Kind.PORT_OPENED, ["2600:1f18::1"])
    assert resolved(world, raw) == {world.immutable_id}


def test_an_interface_attached_to_an_immutable_server_is_remediated(world: World) -> None:
    judgement = judge_event(
        world.event("cloudtrail-attach-network-interface.json"), Policy(), Ec2InstanceDirectory(world.ec2)
    )
    assert judgement.decision is Decision.REMEDIATE
    assert judgement.finding.evidence["device_index"] == 1


def test_a_traffic_mirror_on_an_immutable_servers_interface_is_remediated(world: World) -> None:
    # Given the sample's source interface attached to the immutable server
    world.ec2.attach_network_interface(
        NetworkInterfaceId=world.eni_id, InstanceId=world.immutable_id, DeviceIndex=1
    )
    judgement = judge_event(
        world.event("cloudtrail-create-traffic-mirror-session.json"),
        Policy(),
        Ec2InstanceDirectory(world.ec2),
    )
    assert judgement.decision is Decision.REMEDIATE
    assert [i.instance_id for i in judgement.instances_in_scope] == [world.immutable_id]


def test_a_traffic_mirror_whose_source_reaches_no_instance_is_alerted(world: World) -> None:
    judgement = judge_event(
        world.event("cloudtrail-create-traffic-mirror-session.json"),
        Policy(),
        Ec2InstanceDirectory(world.ec2),
    )
    assert (judgement.decision, judgement.reason) == (Decision.ALERT, "unresolved_target")


def test_a_mirror_session_retargeted_names_its_source_from_the_response() -> None:
    raw = load_sample("cloudtrail-create-traffic-mirror-session.json")
    raw["detail"]["eventName"] = "ModifyTrafficMirrorSession"
    raw["detail"]["requestParameters"] = {
        "ModifyTrafficMirrorSessionRequest": {
            "TrafficMirrorSessionId": "tms-0a8b1c2d3e4f50617",
            "TrafficMirrorTargetId": "tmt-0attacker000000001",
        }
    }
    raw["detail"]["responseElements"] = {
        "ModifyTrafficMirrorSessionResponse": {"trafficMirrorSession": {"networkInterfaceId": SAMPLE_ENI}}
    }
    finding = finding_of(raw)
    assert finding.kind is Kind.TRAFFIC_MIRRORED and finding.resource_ids == (SAMPLE_ENI,)
    assert finding.evidence["traffic_mirror_target_id"] == "tmt-0attacker000000001"


# ---------------------------------------------------------------- groups named by name


def test_a_group_named_by_name_is_resolved_through_the_id_in_the_response(world: World) -> None:
    # Given a rule added to the web-tier group by its name; the response names its id
    raw = world.event("cloudtrail-authorize-sg-ingress-by-group-name.json")
    finding = finding_of(raw)
    assert finding.resource_ids == (world.group_id,)
    assert finding.evidence["group_name"] == "default"
    # Then the group's instances are reached and the immutable one remediated
    judgement = judge_event(raw, Policy(), Ec2InstanceDirectory(world.ec2))
    assert judgement.decision is Decision.REMEDIATE
    assert [i.instance_id for i in judgement.instances_in_scope] == [world.immutable_id]


def test_a_group_named_by_name_without_an_id_in_the_response_is_alerted(world: World) -> None:
    raw = world.event("cloudtrail-authorize-sg-ingress-by-group-name.json")
    raw["detail"]["responseElements"] = {"_return": True}
    judgement = judge_event(raw, Policy(), Ec2InstanceDirectory(world.ec2))
    assert (judgement.decision, judgement.reason) == (Decision.ALERT, "unresolved_target")


def test_a_group_named_by_id_is_still_named_by_the_request() -> None:
    raw = load_sample("cloudtrail-authorize-sg-ingress-ssh-world.json")
    assert finding_of(raw).resource_ids == (SAMPLE_GROUP,)


def test_the_sdk_spelling_of_the_response_is_read_too() -> None:
    raw = load_sample("cloudtrail-authorize-sg-ingress-by-group-name.json")
    raw["detail"]["responseElements"] = {"Return": True, "SecurityGroupRules": [{"GroupId": "sg-0feed"}]}
    assert finding_of(raw).resource_ids == ("sg-0feed",)


# ---------------------------------------------------------------- benign twins


REMEDIABLE = [
    "cloudtrail-create-route-internet-gateway.json",
    "cloudtrail-replace-network-acl-association.json",
    "cloudtrail-modify-managed-prefix-list.json",
    "cloudtrail-associate-address.json",
    "cloudtrail-attach-network-interface.json",
    "cloudtrail-create-traffic-mirror-session.json",
    "cloudtrail-authorize-sg-ingress-by-group-name.json",
]


class _DeclaredStack(_Everything):
    """Every finding reaches one immutable server of the operator's declared stack web-stack."""

    def resolve(self, finding: Finding) -> list[Any]:
        return [
            info.model_copy(update={"tags": {**info.tags, "aws:cloudformation:stack-name": "web-stack"}})
            for info in super().resolve(finding)
        ]


@pytest.mark.parametrize("name", REMEDIABLE)
def test_the_same_change_by_the_pipeline_the_declared_stack_or_failing_is_ignored(name: str) -> None:
    raw = load_sample(name)
    pipeline = copy.deepcopy(load_sample("benign-allow-listed-principal.json")["detail"]["userIdentity"])
    by_pipeline = copy.deepcopy(raw)
    by_pipeline["detail"]["userIdentity"] = pipeline
    by_stack = copy.deepcopy(raw)
    by_stack["detail"]["userIdentity"]["invokedBy"] = "cloudformation.amazonaws.com"
    failed = copy.deepcopy(raw)
    failed["detail"]["errorCode"] = "Client.UnauthorizedOperation"
    policy = Policy(allowed_principal_arns=(PIPELINE,), scope=ScopeRule(stack_names=("web-stack",)))
    reasons = [judge_event(e, policy, _DeclaredStack()).reason for e in (by_pipeline, by_stack, failed)]
    assert reasons == ["allow_listed_principal", "cloudformation_change", "failed_call"]
    # And the attack itself would be remediated, as would the same call through a stack nobody declared
    assert judge_event(raw, policy, _Everything()).decision is Decision.REMEDIATE
    assert judge_event(by_stack, policy, _Everything()).decision is Decision.REMEDIATE


def test_removing_a_route_table_association_is_alerted(world: World) -> None:
    # Given a subnet dropped back onto the main table: the association no longer exists to resolve
    raw = world.event("cloudtrail-replace-route-table-association.json")
    raw["detail"]["eventName"] = "DisassociateRouteTable"
    raw["detail"]["requestParameters"] = {"associationId": SAMPLE_ROUTE_ASSOCIATION}
    raw["detail"]["responseElements"] = {"_return": True}
    assert len([rule for rule in event_rules(TEMPLATE) if matches(rule.pattern, raw)]) == 1
    judgement = judge_event(raw, Policy(), Ec2InstanceDirectory(world.ec2))
    assert (judgement.decision, judgement.reason) == (Decision.ALERT, "unresolved_target")


def test_an_edge_association_of_a_gateway_is_alerted(world: World) -> None:
    raw = world.event("cloudtrail-replace-route-table-association.json")
    raw["detail"]["eventName"] = "AssociateRouteTable"
    raw["detail"]["requestParameters"] = {"routeTableId": SAMPLE_ROUTE_TABLE, "gatewayId": "igw-0a9b8c7d"}
    raw["detail"]["responseElements"] = {"associationId": SAMPLE_ROUTE_ASSOCIATION}
    judgement = judge_event(raw, Policy(), Ec2InstanceDirectory(world.ec2))
    assert (judgement.decision, judgement.reason) == (Decision.ALERT, "unresolved_target")


# ---------------------------------------------------------------- the local runtime records the same


LOCAL_CALLS = [
    (
        "CreateRoute",
        {"RouteTableId": "rtb-1", "DestinationCidrBlock": "0.0.0.0/0", "GatewayId": "igw-1"},
        {},
        "rtb-1",
    ),
    (
        "ReplaceNetworkAclAssociation",
        {"AssociationId": "aclassoc-old", "NetworkAclId": "acl-1"},
        {"NewAssociationId": "aclassoc-new"},
        "aclassoc-new",
    ),
    ("ModifyManagedPrefixList", {"PrefixListId": "pl-1", "AddEntries": [{"Cidr": "0.0.0.0/0"}]}, {}, "pl-1"),
    (
        "AssociateAddress",
        {"InstanceId": "i-1", "AllocationId": "eipalloc-1"},
        {"AssociationId": "eipassoc-1"},
        "i-1",
    ),
    (
        "AttachNetworkInterface",
        {"NetworkInterfaceId": "eni-1", "InstanceId": "i-1", "DeviceIndex": 1},
        {},
        "i-1",
    ),
    (
        "CreateTrafficMirrorSession",
        {"NetworkInterfaceId": "eni-1", "TrafficMirrorTargetId": "tmt-1", "TrafficMirrorFilterId": "tmf-1"},
        {},
        "eni-1",
    ),
    (
        "AuthorizeSecurityGroupIngress",
        {"GroupName": "default"},
        {"SecurityGroupRules": [{"GroupId": "sg-1"}]},
        "sg-1",
    ),
]


@pytest.mark.parametrize(("operation", "params", "response", "expected"), LOCAL_CALLS)
def test_what_the_local_trail_records_names_the_same_resources(
    operation: str, params: dict[str, Any], response: dict[str, Any], expected: str
) -> None:
    import boto3
    from immutable_guard.local.trail import Actor, CloudTrailEmitter, request_parameters

    # Given the local runtime's record of a boto3 call (request in CloudTrail's shape, SDK response)
    model = boto3.client("ec2", region_name="us-east-1").meta.service_model.operation_model(operation)
    emitter = CloudTrailEmitter(deliver=lambda event: None)
    event = emitter.record(
        Actor(), "ec2.amazonaws.com", operation, request_parameters(model, params), response
    )
    # When it is normalised, Then it names a resource the directory can resolve
    finding = finding_of(event)
    assert expected in finding.resource_ids


def test_a_public_ip_associated_with_an_interface_opens_it_to_the_internet() -> None:
    """ModifyNetworkInterfaceAttribute takes AssociatePublicIpAddress (a plain Boolean in the EC2 API
    reference, so CloudTrail's query shape records it as `associatePublicIpAddress: true`, unlike the
    `{"value": ...}` attribute values of sourceDestCheck); read both forms."""
    # Given the record of a public IPv4 address associated with a server's interface
    raw = load_sample("cloudtrail-modify-network-interface-attribute-public-ip.json")
    # When it is normalised
    finding = normalise(parse_event(raw))
    # Then it is a port opened on that interface, resolved later through the interface
    assert (finding.kind, finding.severity) == (Kind.PORT_OPENED, Severity.HIGH)
    assert finding.resource_ids == (SAMPLE_ENI,)
    # And the attribute-value spelling means the same
    raw["detail"]["requestParameters"]["associatePublicIpAddress"] = {"value": "true"}
    assert normalise(parse_event(raw)).kind is Kind.PORT_OPENED
    # But removing the address is a change of another kind (still a mutation, not an opening)
    raw["detail"]["requestParameters"]["associatePublicIpAddress"] = False
    assert normalise(parse_event(raw)).kind is Kind.INSTANCE_MODIFIED
