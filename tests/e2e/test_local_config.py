"""The local AWS reports every change through AWS Config as AWS does, not only the attacks: a new server is
discovered, the guard's own quarantine and a person's release are echoed with relatedEvents naming the
calls of the functions' roles, and the guard judges those items as Config means them (nothing happens).
The drill's Config scenarios pass, and fail when Config's relatedEvents are lost.

Item shapes: AWS Config Developer Guide, "Example Configuration Item Change Notifications"
(https://docs.aws.amazon.com/config/latest/developerguide/example-sns-notification.html).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from drill_runs import run_drill
from immutable_guard.clients import Clients
from immutable_guard.ledger import Incident, IncidentLedger
from immutable_guard.local import Deployment, EventRouter, LocalAws
from immutable_guard.local.config_recorder import ConfigRecorder
from immutable_guard.local.moto_fixes import wait_for_async_invocations
from immutable_guard.local.trail import Actor, CloudTrailEmitter

pytestmark = pytest.mark.slow

EXECUTION_WAIT_SECONDS = 120
CONFIG_RULE = "DetectFunctionConfigItemChanged"


class ConfigWorld:
    """A guard's rules, a CloudTrail that also hears the guard's functions, and a Config recorder."""

    def __init__(self, aws: LocalAws, deployment: Deployment) -> None:
        self.clients = aws.clients()
        self.deployment = deployment
        self.router = EventRouter(deployment, aws.session())
        self.matched: list[tuple[dict[str, Any], list[str]]] = []
        self.recorder = ConfigRecorder(aws.session(), self._deliver, aws.region, deployment.account_id)
        self.trail = CloudTrailEmitter(self.router.put, aws.region, self.recorder)
        self.stop_hearing = self.trail.hear_functions(deployment.function_names.values())
        self.ledger = IncidentLedger(self.clients.dynamodb, deployment.outputs["IncidentLedgerName"])

    def _deliver(self, item: dict[str, Any]) -> None:
        self.matched.append((item, self.router.put(item)))

    def launch(self) -> str:
        ec2 = self.clients.ec2
        image = ec2.describe_images()["Images"][0]["ImageId"]
        instance = ec2.run_instances(
            ImageId=image,
            MinCount=1,
            MaxCount=1,
            TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "immutable", "Value": "true"}]}],
        )["Instances"][0]
        return str(instance["InstanceId"])

    def items_for(self, resource_id: str) -> list[tuple[dict[str, Any], list[str]]]:
        return [
            (i, m) for i, m in self.matched if i["detail"]["configurationItem"]["resourceId"] == resource_id
        ]

    def incidents_for(self, instance_id: str) -> list[Incident]:
        return [i for i in self.ledger.list_incidents(limit=1000) if i.instance_id == instance_id]

    def role_of(self, event_id: str) -> str:
        event = next(e for e in self.trail.events if e["detail"]["eventID"] == event_id)
        return str(event["detail"]["userIdentity"]["sessionContext"]["sessionIssuer"]["arn"])

    def role(self, logical_id: str) -> str:
        return str(self.deployment.attributes[logical_id]["Arn"])

    def finished(self, incident_id: str) -> dict[str, Any]:
        machine = self.deployment.outputs["RemediationStateMachineArn"]
        arn = f"{machine.replace(':stateMachine:', ':execution:')}:{incident_id}"
        deadline = time.monotonic() + EXECUTION_WAIT_SECONDS
        while True:
            execution = self.clients.stepfunctions.describe_execution(executionArn=arn)
            if execution["status"] != "RUNNING" or time.monotonic() > deadline:
                return dict(execution)
            time.sleep(0.2)


@pytest.fixture
def world(local_aws: LocalAws, deployment: Deployment) -> Iterator[ConfigWorld]:
    config_world = ConfigWorld(local_aws, deployment)
    config_world.recorder.start()
    try:
        yield config_world
    finally:
        config_world.stop_hearing()


def _status(item: dict[str, Any]) -> str:
    return str(item["detail"]["configurationItem"]["configurationItemStatus"])


def _attacked_and_contained(world: ConfigWorld, instance_id: str) -> Incident:
    """An SSH key pushed to the server by an attacker, and the guard's workflow run to its end."""
    world.trail.emit(
        Actor(),
        "ec2-instance-connect.amazonaws.com",
        "SendSSHPublicKey",
        {
            "instanceId": instance_id,
            "instanceOSUser": "ec2-user",
            "sshPublicKey": "ssh-ed25519 AAAA attacker",
        },
        response_elements={"requestId": "local", "success": True},
    )
    [incident] = world.incidents_for(instance_id)
    world.finished(incident.incident_id)
    return incident


def _related(item: dict[str, Any]) -> list[str]:
    return list(item["detail"]["configurationItem"]["relatedEvents"])


def _changed(item: dict[str, Any]) -> list[str]:
    return list(item["detail"]["configurationItemDiff"]["changedProperties"])


def test_a_new_server_is_discovered_and_nothing_happens(world: ConfigWorld) -> None:
    # Given a guard whose stack runs a Config recorder
    # When a new immutable server appears (as a scale-out or a replacement makes one)
    instance_id = world.launch()
    world.recorder.observe()
    # Then Config reports it as discovered, and Detect hears it
    [(item, matched)] = world.items_for(instance_id)
    assert _status(item) == "ResourceDiscovered"
    assert item["detail"]["configurationItemDiff"] == {"changedProperties": {}, "changeType": "CREATE"}
    assert matched == [CONFIG_RULE]
    # And no incident is opened for it
    assert world.incidents_for(instance_id) == []


def test_the_guards_quarantine_and_release_are_echoed_by_config_and_judged_as_the_guards_own(
    world: ConfigWorld,
) -> None:
    # Given an immutable server Config has recorded (and the isolation groups Detect then asked Contain
    # to make in its VPC)
    instance_id = world.launch()
    world.recorder.observe()
    wait_for_async_invocations()
    groups_before = _groups(world.clients, instance_id)
    # When someone pushes an SSH key to it, and the guard contains it (a standalone server: no one
    # replaces it automatically, so it stays quarantined)
    incident = _attacked_and_contained(world, instance_id)
    # Then Config reported the quarantine (tags changed), naming the Contain function's calls
    quarantine_role = world.role("QuarantineFunctionRole")
    echoes = [
        item
        for item, matched in world.items_for(instance_id)
        if _status(item) == "OK" and matched == [CONFIG_RULE]
    ]
    assert echoes, "no Config item for the quarantine"
    contained = [item for item in echoes if quarantine_role in {world.role_of(e) for e in _related(item)}]
    assert contained, [_related(item) for item in echoes]
    assert {key.split(".")[1] for item in contained for key in _changed(item)} >= {"Tags"}
    # And the guard's own calls were heard as CloudTrail records of the function's role
    own = [e for e in world.trail.events if world.role_of(e["detail"]["eventID"]) == quarantine_role]
    assert "CreateTags" in {e["detail"]["eventName"] for e in own}
    session = f"{quarantine_role.rsplit('/', 1)[-1]}/{world.deployment.function_names['QuarantineFunction']}"
    assert {e["detail"]["userIdentity"]["arn"] for e in own} == {
        f"arn:aws:sts::{world.deployment.account_id}:assumed-role/{session}"
    }
    # And Detect's first response (issue 15: Contain made the isolation groups when Config first reported
    # the server) moved the interfaces on its worker threads: CloudTrail recorded those moves as Detect's
    # role's, Detect's own rule heard them, and Config's echo of the new groups names them
    detect_role = world.role("DetectFunctionRole")
    moves = [
        e
        for e in world.trail.events
        if e["detail"]["eventName"] == "ModifyNetworkInterfaceAttribute"
        and world.role_of(e["detail"]["eventID"]) == detect_role
    ]
    [contained_incident] = world.incidents_for(instance_id)
    interfaces = set(contained_incident.details["isolated"]["isolated"])
    assert interfaces
    assert {e["detail"]["requestParameters"]["networkInterfaceId"] for e in moves} == interfaces
    assert len(moves) == 2 * len(interfaces)  # the passthrough group, then the isolation group
    delivered = {event["detail"].get("eventID") for _, event in world.router.delivered}
    assert {e["detail"]["eventID"] for e in moves} <= delivered  # Detect's rule heard each move
    assert any(
        detect_role in {world.role_of(e) for e in _related(item)}
        and any(".SecurityGroups" in key for key in _changed(item))
        for item in echoes
    ), [_related(item) for item in echoes]
    # And none of the echoes, of Contain's calls or of Detect's, opened another incident
    assert [i.incident_id for i in world.incidents_for(instance_id)] == [incident.incident_id]

    # When a person releases it
    seen = len(world.matched)
    response = world.clients.lambda_.invoke(
        FunctionName=world.deployment.outputs["ReleaseFunctionName"],
        Payload=json.dumps({"incident_id": incident.incident_id}).encode(),
    )
    assert "FunctionError" not in response, response["Payload"].read()
    # Then Config reports the release, naming the Release function's calls
    release_role = world.role("ReleaseFunctionRole")
    released = [
        item
        for item, _ in world.matched[seen:]
        if item["detail"]["configurationItem"]["resourceId"] == instance_id
        and release_role in {world.role_of(e) for e in _related(item)}
    ]
    assert released
    # And the released server is not quarantined again: still one incident, running, in its groups
    assert [i.incident_id for i in world.incidents_for(instance_id)] == [incident.incident_id]
    instance = world.clients.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0][
        "Instances"
    ][0]
    assert instance["State"]["Name"] == "running"
    assert _groups(world.clients, instance_id) == groups_before


def test_someone_undoing_a_quarantine_has_it_contained_again(world: ConfigWorld) -> None:
    # Given a standalone immutable server the guard contained after an SSH key was pushed to it (nobody
    # replaces it automatically: it stays quarantined until a person decides)
    instance_id = world.launch()
    world.recorder.observe()
    wait_for_async_invocations()
    incident = _attacked_and_contained(world, instance_id)
    isolation = _groups(world.clients, instance_id)
    [eni] = [
        e["NetworkInterfaceId"]
        for e in world.clients.ec2.describe_network_interfaces(
            Filters=[{"Name": "attachment.instance-id", "Values": [instance_id]}]
        )["NetworkInterfaces"]
    ]
    web = world.clients.ec2.describe_security_groups(GroupNames=["default"])["SecurityGroups"][0]["GroupId"]
    # When the attacker opens SSH on the isolation group and moves the interface back to an open group,
    # with their own credentials (CloudTrail records both calls as theirs)
    attacker = world.trail.session(Actor()).client("ec2")
    attacker.authorize_security_group_ingress(
        GroupId=isolation[0],
        IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
        ],
    )
    attacker.modify_network_interface_attribute(NetworkInterfaceId=eni, Groups=[web])
    wait_for_async_invocations()
    # Then Detect asked Contain to contain it again, and Contain did: the interface is back on the
    # isolation group, which has no rule again
    assert _groups(world.clients, instance_id) == isolation
    group = world.clients.ec2.describe_security_groups(GroupIds=isolation)["SecurityGroups"][0]
    assert (group["IpPermissions"], group["IpPermissionsEgress"]) == ([], [])
    # And both changes joined the one incident, which says it was contained again; no other incident
    [held] = world.incidents_for(instance_id)
    assert held.incident_id == incident.incident_id
    tampering = [
        e["detail"]["eventID"]
        for e in world.trail.events
        if e["detail"]["eventName"] in {"AuthorizeSecurityGroupIngress", "ModifyNetworkInterfaceAttribute"}
        and e["detail"]["userIdentity"]["arn"] == Actor().arn
    ]
    assert len(tampering) == 2 and set(tampering) <= set(held.related_event_ids)
    assert "contained_again" in held.timeline


def _groups(clients: Clients, instance_id: str) -> list[str]:
    instance = clients.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    return sorted({g["GroupId"] for eni in instance["NetworkInterfaces"] for g in eni["Groups"]})


def test_the_drills_config_scenarios_pass(every_scenario: tuple[int, dict[str, Any]]) -> None:
    # Read from the run of every scenario that test_drill also reads (the drill runs them in this order)
    code, report = every_scenario
    config_scenarios = [
        s for s in report["scenarios"] if s["scenario"] in ("scale-out", "released", "pipeline-via-config")
    ]
    assert code == 0, json.dumps([s for s in report["scenarios"] if not s["passed"]], indent=1)
    assert [s["scenario"] for s in config_scenarios] == ["scale-out", "released", "pipeline-via-config"]
    assert all(s["passed"] for s in config_scenarios), json.dumps(config_scenarios, indent=1)


def test_a_config_echo_judged_alone_fails_the_pipeline_scenario() -> None:
    # Given a Config recorder that loses relatedEvents, and a ledger that forgets exempt changes: the
    # echo of the pipeline's change is judged alone
    sabotage = """
        from immutable_guard.ledger import IncidentLedger
        from immutable_guard.local.config_recorder import ConfigRecorder
        ConfigRecorder._related = lambda self, records, pending: []
        IncidentLedger.exempt_reason_of_change = lambda self, change_key: None
    """
    code, report = run_drill("--scenario", "pipeline-via-config", prelude=sabotage)
    # Then the drill notices: the echo of an allow-listed change opened an incident
    assert code == 1
    [scenario] = report["scenarios"]
    failed = {c["name"] for c in scenario["checks"] if not c["passed"]}
    assert "no incident opened" in failed
