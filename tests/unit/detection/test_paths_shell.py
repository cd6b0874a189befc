"""Shell and code without Run Command or a session: SSM Automation, State Manager associations (and the
guard's own inventory association), Run Command by every target key, Instance Connect Endpoint tunnels
and endpoints, and the serial console switch. Each path reaches the instance it runs on, and its benign
twin (an allow-listed pipeline, CloudFormation, a failed call, another server) opens nothing."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import pytest
from detection_samples import (
    SAMPLE_GUARD_INVENTORY_ASSOCIATION,
    SAMPLE_INSTANCE,
    SAMPLE_INSTANCE_CONNECT_ENDPOINT,
    SAMPLE_PRIVATE_IP,
    World,
    load_sample,
)
from immutable_guard.clients import Clients
from immutable_guard.detection import (
    Ec2InstanceDirectory,
    OfflineInstanceDirectory,
    Policy,
    judge_event,
    normalise,
    parse_event,
)
from immutable_guard.detection.paths.shell import read_ssm_targets
from immutable_guard.detection.scope import ScopeRule
from immutable_guard.model import Decision, Finding, Kind, Severity

if TYPE_CHECKING:
    from immutable_guard.detection.policy import Judgement

PIPELINE = "arn:aws:iam::111122223333:role/deploy-pipeline"


def finding_of(raw: dict[str, Any]) -> Finding:
    return normalise(parse_event(raw))


def judged(world: World, raw: dict[str, Any], policy: Policy | None = None) -> Judgement:
    directory = Ec2InstanceDirectory(world.ec2, Clients(region_name="us-east-1"))
    return judge_event(raw, policy or Policy(), directory)


def instance_ids(judgement: Judgement) -> set[str]:
    return {info.instance_id for info in judgement.instances_in_scope}


def as_pipeline(raw: dict[str, Any]) -> dict[str, Any]:
    raw = copy.deepcopy(raw)
    raw["detail"]["userIdentity"]["arn"] = f"{PIPELINE.replace(':iam:', ':sts:')}/run-42".replace(
        ":role/", ":assumed-role/"
    )
    raw["detail"]["userIdentity"]["sessionContext"]["sessionIssuer"]["arn"] = PIPELINE
    return raw


def failed(raw: dict[str, Any]) -> dict[str, Any]:
    raw = copy.deepcopy(raw)
    raw["detail"]["errorCode"] = "AccessDenied"
    raw["detail"]["responseElements"] = None
    return raw


# ---------------------------------------------------------------- SSM Automation


def test_an_automation_on_an_instance_is_shell_access_to_it() -> None:
    """Request fields from the SSM API's StartAutomationExecution (documentName, parameters,
    targetParameterName, targets, targetMaps), recorded by CloudTrail in their JSON names; a failed
    record of the same call appears in re:Post ("StartAutomationExecution AccessDenied from EventBridge",
    eventSource ssm.amazonaws.com)."""
    # Given an automation run against one instance by its InstanceId parameter
    finding = finding_of(load_sample("cloudtrail-start-automation-execution.json"))
    # Then it is shell access naming that instance and the runbook
    assert (finding.kind, finding.severity) == (Kind.SHELL_ACCESS, Severity.HIGH)
    assert finding.instance_ids == (SAMPLE_INSTANCE,)
    assert finding.evidence["document_name"] == "ops-hotfix-runbook"
    assert not finding.alert_if_unresolved


def test_an_automation_by_tag_reaches_the_tagged_immutable_instance(world: World) -> None:
    # Given an automation whose targets select instances by the scope tag
    raw = world.event("cloudtrail-start-automation-execution-targets.json")
    # When it is judged against live EC2
    judgement = judged(world, raw)
    # Then the live immutable instance is remediated, not the mutable or terminated one
    assert judgement.decision is Decision.REMEDIATE
    assert instance_ids(judgement) == {world.immutable_id}


def test_an_automation_by_an_allow_listed_pipeline_or_that_failed_opens_nothing(world: World) -> None:
    raw = world.event("cloudtrail-start-automation-execution.json")
    policy = Policy(allowed_principal_arns=(PIPELINE,))
    assert judged(world, as_pipeline(raw), policy).reason == "allow_listed_principal"
    assert judged(world, failed(raw)).reason == "failed_call"


def test_an_automation_on_a_mutable_instance_is_out_of_scope(world: World) -> None:
    raw = world.event("cloudtrail-start-automation-execution.json", **{world.immutable_id: world.mutable_id})
    assert (judged(world, raw).decision, judged(world, raw).reason) == (Decision.IGNORE, "out_of_scope")


def test_an_automation_whose_target_is_hidden_is_alerted_not_ignored(world: World) -> None:
    # Given an automation whose parameters CloudTrail hid and which has no targets
    raw = world.event("cloudtrail-start-automation-execution.json")
    raw["detail"]["requestParameters"]["parameters"] = "HIDDEN_DUE_TO_SECURITY_REASONS"
    # When it is judged / Then a person is asked to check
    judgement = judged(world, raw)
    assert (judgement.decision, judgement.reason) == (Decision.ALERT, "unresolved_target")


def test_an_automation_target_map_names_its_instances() -> None:
    raw = load_sample("cloudtrail-start-automation-execution.json")
    raw["detail"]["requestParameters"] = {
        "documentName": "ops-hotfix-runbook",
        "targetMaps": [{"InstanceId": ["i-0111111111111111a"]}, {"InstanceId": ["i-0222222222222222b"]}],
    }
    assert finding_of(raw).instance_ids == ("i-0111111111111111a", "i-0222222222222222b")


# ---------------------------------------------------------------- State Manager associations


def test_an_association_on_an_immutable_instance_is_remediated(world: World) -> None:
    """CreateAssociation as CloudTrail records SSM requests (name, targets [{key, values}], parameters
    hidden) and its associationDescription response (SSM API reference, CreateAssociation)."""
    raw = world.event("cloudtrail-create-association.json")
    judgement = judged(world, raw)
    assert judgement.decision is Decision.REMEDIATE
    assert instance_ids(judgement) == {world.immutable_id}
    assert judgement.finding.kind is Kind.SHELL_ACCESS


def test_an_association_on_another_server_opens_nothing(world: World) -> None:
    raw = world.event("cloudtrail-create-association.json", **{world.immutable_id: world.mutable_id})
    assert judged(world, raw).reason == "out_of_scope"


def test_an_association_through_a_stack_nobody_declared_is_remediated(world: World) -> None:
    # Any principal allowed to create a stack can have CloudFormation make the call for it
    cfn = world.event("cloudtrail-create-association.json")
    cfn["detail"]["userIdentity"]["invokedBy"] = "cloudformation.amazonaws.com"
    judgement = judged(world, cfn, Policy(scope=ScopeRule(stack_names=("web-stack",))))
    assert judgement.decision is Decision.REMEDIATE
    assert instance_ids(judgement) == {world.immutable_id}


def test_an_association_batch_resolves_every_entry_and_alerts_what_it_cannot(world: World) -> None:
    # Given a batch: one entry by tag key, one by resource group
    raw = world.event("cloudtrail-create-association-batch.json")
    finding = finding_of(raw)
    assert finding.alert_if_unresolved
    assert set(finding.resource_ids) == {"tag-key=immutable", "resource-groups:Name=web-tier"}
    # When judged / Then the instances with the tag key are reached
    judgement = judged(world, raw)
    assert judgement.decision is Decision.REMEDIATE
    assert instance_ids(judgement) == {world.immutable_id}


def test_an_update_without_targets_is_resolved_from_the_targets_in_the_response(world: World) -> None:
    # Given an update that only changes the schedule; the response names the targets it keeps
    raw = world.event("cloudtrail-create-association.json")
    raw["detail"]["eventName"] = "UpdateAssociation"
    raw["detail"]["requestParameters"] = {
        "associationId": "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d",
        "scheduleExpression": "rate(1 hour)",
    }
    judgement = judged(world, raw)
    assert judgement.decision is Decision.REMEDIATE
    assert instance_ids(judgement) == {world.immutable_id}


def test_a_change_to_the_guards_inventory_association_disables_detection() -> None:
    # Given the guard's association (named "<stack>-inventory" by template.yaml) retargeted at nothing
    judgement = judge_event(
        load_sample("cloudtrail-update-association-guard-inventory.json"),
        Policy(),
        OfflineInstanceDirectory(),
    )
    # Then it is an account-level critical alert
    assert judgement.decision is Decision.ALERT
    assert (judgement.finding.kind, judgement.finding.severity) == (
        Kind.DETECTION_DISABLED,
        Severity.CRITICAL,
    )


def test_the_guards_association_is_recognised_by_id_without_a_response(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GUARD_INVENTORY_ASSOCIATION_ID", SAMPLE_GUARD_INVENTORY_ASSOCIATION)
    raw = load_sample("cloudtrail-update-association-guard-inventory.json")
    raw["detail"]["responseElements"] = None
    assert finding_of(raw).kind is Kind.DETECTION_DISABLED


def test_a_stack_update_of_the_guards_association_is_alerted_unless_the_deployer_is_allow_listed() -> None:
    # CloudTrail does not say which stack CloudFormation acted for: the guard's own stack and an
    # attacker's look the same, so only the deployer's identity can exempt the change.
    raw = load_sample("cloudtrail-update-association-guard-inventory.json")
    raw["detail"]["userIdentity"]["invokedBy"] = "cloudformation.amazonaws.com"
    judgement = judge_event(raw, Policy(), OfflineInstanceDirectory())
    assert (judgement.decision, judgement.reason) == (Decision.ALERT, "account_level_alert_only")
    deployer = raw["detail"]["userIdentity"]["arn"]
    allowed = judge_event(raw, Policy(allowed_principal_arns=(deployer,)), OfflineInstanceDirectory())
    assert (allowed.decision, allowed.reason) == (Decision.IGNORE, "allow_listed_principal")


def test_a_second_inventory_association_is_alerted_as_blinding_not_remediated(world: World) -> None:
    # Given an inventory association (read-only) on the immutable instance: it silences the guard's one
    raw = world.event("cloudtrail-create-association.json")
    raw["detail"]["requestParameters"]["name"] = "AWS-GatherSoftwareInventory"
    judgement = judged(world, raw)
    assert judgement.decision is Decision.ALERT
    assert (judgement.finding.kind, judgement.finding.severity) == (Kind.DETECTION_DISABLED, Severity.HIGH)


def test_deleting_the_guards_association_is_critical(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GUARD_INVENTORY_ASSOCIATION_ID", SAMPLE_GUARD_INVENTORY_ASSOCIATION)
    judgement = judge_event(
        load_sample("cloudtrail-delete-association.json"), Policy(), OfflineInstanceDirectory()
    )
    assert judgement.decision is Decision.ALERT
    assert judgement.finding.severity is Severity.CRITICAL


def test_deleting_another_association_is_ignored_when_the_guard_has_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GUARD_INVENTORY_ASSOCIATION_ID", "00000000-1111-4222-8333-444444444444")
    judgement = judge_event(
        load_sample("cloudtrail-delete-association.json"), Policy(), OfflineInstanceDirectory()
    )
    assert (judgement.decision, judgement.reason) == (Decision.IGNORE, "not_guard_wiring")


def test_deleting_an_association_alerts_when_the_guard_relies_on_the_operators_inventory() -> None:
    # Without an association of its own (or offline) the deleted one may be the inventory it reads.
    judgement = judge_event(
        load_sample("cloudtrail-delete-association.json"), Policy(), OfflineInstanceDirectory()
    )
    assert judgement.decision is Decision.ALERT
    assert judgement.finding.severity is Severity.HIGH


# ---------------------------------------------------------------- Run Command by every target key


def test_run_command_by_tag_key_reaches_every_live_instance_with_the_key(world: World) -> None:
    """SendCommand Targets keys (SSM API reference, Target): InstanceIds, tag:<key>, tag-key,
    resource-groups:Name (with resource-groups:ResourceTypeFilters)."""
    raw = world.event("cloudtrail-ssm-send-command-tag.json")
    raw["detail"]["requestParameters"]["targets"] = [{"key": "tag-key", "values": ["immutable"]}]
    judgement = judged(world, raw)
    assert judgement.decision is Decision.REMEDIATE
    assert instance_ids(judgement) == {world.immutable_id}


def test_run_command_by_tag_reaches_only_matching_instances(world: World) -> None:
    assert instance_ids(judged(world, world.event("cloudtrail-ssm-send-command-tag.json"))) == {
        world.immutable_id
    }
    raw = world.event("cloudtrail-ssm-send-command-tag.json")
    raw["detail"]["requestParameters"]["targets"] = [{"key": "tag:Name", "values": ["scratch-box"]}]
    assert judged(world, raw).reason == "out_of_scope"


def test_run_command_on_every_instance_reaches_the_immutable_one(world: World) -> None:
    raw = world.event("cloudtrail-ssm-send-command-tag.json")
    raw["detail"]["requestParameters"]["targets"] = [{"key": "InstanceIds", "values": ["*"]}]
    assert instance_ids(judged(world, raw)) == {world.immutable_id}


def test_run_command_to_a_resource_group_is_alerted(world: World) -> None:
    # Given a command sent to a resource group, which scope cannot resolve
    raw = world.event("cloudtrail-ssm-send-command-resource-group.json")
    finding = finding_of(raw)
    assert finding.resource_ids == ("resource-groups:Name=web-tier",)
    # When judged / Then a person is asked to check rather than nothing happening
    judgement = judged(world, raw)
    assert (judgement.decision, judgement.reason) == (Decision.ALERT, "unresolved_target")


def test_run_command_by_the_lowercase_instanceids_key_names_the_instances() -> None:
    targets = read_ssm_targets([{"key": "instanceids", "values": ["i-0111111111111111a"]}])
    assert targets.instance_ids == ["i-0111111111111111a"]
    assert not targets.resolvable and not targets.unresolvable


def test_malformed_targets_yield_less_evidence_not_a_crash() -> None:
    targets = read_ssm_targets([None, 7, {"key": 5, "values": "x"}, {"values": [1, "i-0a"]}], {"items": 3})
    assert targets.instance_ids == []
    assert all(isinstance(t["key"], str) for t in targets.unresolvable)


# ---------------------------------------------------------------- EC2 Instance Connect Endpoint


def test_a_tunnel_is_resolved_from_the_private_address_to_the_instance(world: World) -> None:
    """OpenTunnel as AWS documents it (https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/
    log-ec2-instance-connect-endpoint-using-cloudtrail.html): eventSource
    ec2-instance-connect.amazonaws.com, requestParameters
    instanceConnectEndpointId, maxTunnelDuration, remotePort, privateIpAddress; no instance id."""
    address = world.ec2.describe_instances(InstanceIds=[world.immutable_id])["Reservations"][0]["Instances"][
        0
    ]["PrivateIpAddress"]
    raw = world.event("cloudtrail-open-tunnel.json", **{SAMPLE_PRIVATE_IP: address})
    judgement = judged(world, raw)
    assert judgement.decision is Decision.REMEDIATE
    assert instance_ids(judgement) == {world.immutable_id}
    assert judgement.finding.evidence["remote_port"] == 22


def test_a_tunnel_to_a_mutable_instance_is_out_of_scope(world: World) -> None:
    address = world.ec2.describe_instances(InstanceIds=[world.mutable_id])["Reservations"][0]["Instances"][0][
        "PrivateIpAddress"
    ]
    raw = world.event("cloudtrail-open-tunnel.json", **{SAMPLE_PRIVATE_IP: address})
    assert judged(world, raw).reason == "out_of_scope"


def test_a_tunnel_to_an_address_no_instance_holds_is_alerted(world: World) -> None:
    raw = world.event("cloudtrail-open-tunnel.json", **{SAMPLE_PRIVATE_IP: "10.0.1.250"})
    judgement = judged(world, raw)
    assert (judgement.decision, judgement.reason) == (Decision.ALERT, "unresolved_target")


class _EndpointsGone:
    """An EC2 client whose Instance Connect Endpoints are all gone (moto has none)."""

    def __init__(self, ec2: Any) -> None:
        self._ec2 = ec2
        self.asked: list[list[str]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ec2, name)

    def describe_instance_connect_endpoints(self, InstanceConnectEndpointIds: list[str]) -> dict[str, Any]:
        self.asked.append(InstanceConnectEndpointIds)
        return {"InstanceConnectEndpoints": []}


def test_an_address_held_in_two_vpcs_is_not_guessed_when_the_endpoint_is_gone(world: World) -> None:
    # Given the same private address on an immutable instance of a second VPC
    address = world.ec2.describe_instances(InstanceIds=[world.immutable_id])["Reservations"][0]["Instances"][
        0
    ]["PrivateIpAddress"]
    vpc = world.ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = world.ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    world.ec2.run_instances(
        ImageId=world.image_id,
        MinCount=1,
        MaxCount=1,
        SubnetId=subnet,
        PrivateIpAddress=address,
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "immutable", "Value": "true"}]}],
    )
    clients = Clients(region_name="us-east-1")
    ec2 = _EndpointsGone(clients.ec2)
    clients.__dict__["ec2"] = ec2
    raw = world.event("cloudtrail-open-tunnel.json", **{SAMPLE_PRIVATE_IP: address})
    # When judged / Then the endpoint's VPC is asked for, and without it no instance is guessed
    judgement = judge_event(raw, Policy(), Ec2InstanceDirectory(world.ec2, clients))
    assert ec2.asked == [[SAMPLE_INSTANCE_CONNECT_ENDPOINT]]
    assert (judgement.decision, judgement.reason) == (Decision.ALERT, "unresolved_target")


def test_a_tunnel_opened_by_an_allow_listed_pipeline_opens_nothing(world: World) -> None:
    raw = as_pipeline(world.event("cloudtrail-open-tunnel.json"))
    assert judged(world, raw, Policy(allowed_principal_arns=(PIPELINE,))).reason == "allow_listed_principal"


def test_creating_an_endpoint_is_alerted_and_never_remediates_the_vpc(world: World) -> None:
    """CreateInstanceConnectEndpoint is recorded in the wrapped form: public CloudTrail handlers read
    requestParameters.CreateInstanceConnectEndpointRequest.SubnetId and
    responseElements.CreateInstanceConnectEndpointResponse.instanceConnectEndpoint.vpcId."""
    judgement = judged(world, world.event("cloudtrail-create-instance-connect-endpoint.json"))
    assert (judgement.decision, judgement.reason) == (Decision.ALERT, "unresolved_target")
    finding = judgement.finding
    assert finding.kind is Kind.NETWORK_PATH_CHANGED
    assert finding.evidence["subnet_id"] == "subnet-0a1b2c3d4e5f60718"
    assert finding.evidence["instance_connect_endpoint_id"] == SAMPLE_INSTANCE_CONNECT_ENDPOINT


def test_enabling_the_serial_console_is_an_account_alert(world: World) -> None:
    """Record shape from a published EnableSerialConsoleAccess record: requestParameters
    {"EnableSerialConsoleAccessRequest": ""}, response serialConsoleAccessEnabled true."""
    judgement = judged(world, world.event("cloudtrail-enable-serial-console-access.json"))
    assert judgement.decision is Decision.ALERT
    assert judgement.finding.evidence["serial_console_access_enabled"] is True
    assert judged(world, failed(world.event("cloudtrail-enable-serial-console-access.json"))).reason == (
        "failed_call"
    )


# ---------------------------------------------------------------- Session Manager port forwarding


def _address_of(world: World, instance_id: str) -> str:
    reservations = world.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    return str(reservations[0]["Instances"][0]["PrivateIpAddress"])


def test_a_port_forward_through_a_mutable_jump_host_reaches_the_immutable_server(world: World) -> None:
    """StartSession with AWS-StartPortForwardingSessionToRemoteHost: parameters {"host": [...],
    "portNumber": [...], "localPortNumber": [...]} (SSM Session Manager documents), target the jump host."""
    # Given a session on the mutable instance forwarding to the immutable one's private address
    raw = world.event(
        "cloudtrail-ssm-start-session-port-forward.json",
        **{SAMPLE_PRIVATE_IP: _address_of(world, world.immutable_id)},
    )
    # When judged / Then the server behind the jump host is remediated, not the jump host
    judgement = judged(world, raw)
    assert judgement.decision is Decision.REMEDIATE
    assert instance_ids(judgement) == {world.immutable_id}
    assert judgement.finding.evidence["remote_port"] == "22"


def test_a_port_forward_to_a_mutable_server_or_a_dns_name_reaches_nothing_immutable(world: World) -> None:
    to_mutable = world.event(
        "cloudtrail-ssm-start-session-port-forward.json",
        **{SAMPLE_PRIVATE_IP: _address_of(world, world.mutable_id)},
    )
    assert judged(world, to_mutable).reason == "out_of_scope"
    to_name = world.event("cloudtrail-ssm-start-session-port-forward.json")
    to_name["detail"]["requestParameters"]["parameters"]["host"] = ["db.internal.example"]
    assert finding_of(to_name).resource_ids == (world.mutable_id,)
    assert judged(world, to_name).reason == "out_of_scope"
