"""Issue 15 on the local runtime, the stack deployed in enforce: when Detect first sees an in-scope server in
a VPC without our isolation groups, Contain makes them (Detect invokes it asynchronously), so the first
incident in that VPC is isolated by Detect's first response, not after the workflow's hop."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from immutable_guard.clients import Clients
from immutable_guard.drill.world import server_in_new_vpc
from immutable_guard.ledger import IncidentLedger
from immutable_guard.local import Deployment, EventRouter, LocalAws
from immutable_guard.local.moto_fixes import wait_for_async_invocations

pytestmark = pytest.mark.slow

EVENTS = Path(__file__).resolve().parents[2] / "events"
SAMPLE_ACCOUNT = "111122223333"
SAMPLE_INSTANCE = "i-0abc1234def567890"
ROLE_TAG = "immutable-guard:role"
# Bounds the wait for the workflow to end before the next test (never asserted on).
EXECUTION_WAIT_SECONDS = 180


def _event(name: str, deployment: Deployment, instance_id: str, group_id: str) -> dict[str, Any]:
    text = (
        (EVENTS / name)
        .read_text("utf-8")
        .replace(SAMPLE_INSTANCE, instance_id)
        .replace(SAMPLE_ACCOUNT, deployment.account_id)
        .replace("sg-0a1b2c3d4e5f67890", group_id)
        .replace("sg-0badc0ffee0ddf00d", group_id)
    )
    event: dict[str, Any] = json.loads(text)
    event["id"] = str(uuid.uuid4())
    if "eventID" in event["detail"]:
        event["detail"]["eventID"] = str(uuid.uuid4())
    return event


def _our_groups(clients: Clients, vpc_id: str) -> dict[str, str]:
    groups = clients.ec2.describe_security_groups(
        Filters=[{"Name": "vpc-id", "Values": [vpc_id]}, {"Name": "tag-key", "Values": [ROLE_TAG]}]
    )["SecurityGroups"]
    return {next(t["Value"] for t in g["Tags"] if t["Key"] == ROLE_TAG): g["GroupId"] for g in groups}


def test_the_first_incident_in_a_vpc_where_the_server_was_seen_is_isolated_by_detect(
    local_aws: LocalAws, deployment: Deployment
) -> None:
    clients = local_aws.clients()
    router = EventRouter(deployment, local_aws.session())
    ledger = IncidentLedger(clients.dynamodb, deployment.outputs["IncidentLedgerName"])
    ec2 = clients.ec2
    # Given a new VPC (no isolation groups of ours) and an immutable server in it
    server = server_in_new_vpc(ec2, "10.42.0.0/16", ("web", "open"))
    vpc, instance_id, web, attacker = (
        server.vpc_id,
        server.instance_id,
        server.groups["web"],
        server.groups["open"],
    )
    assert _our_groups(clients, vpc) == {}
    # When Config reports it (Detect sees it in scope for the first time; nothing to remediate)
    router.put(_event("benign-config-resource-discovered.json", deployment, instance_id, web))
    # Then Contain, invoked asynchronously by Detect, made both groups in its VPC
    wait_for_async_invocations()
    groups = _our_groups(clients, vpc)
    assert set(groups) == {"passthrough", "isolation"}
    # When the first attack in that VPC comes
    router.put(
        _event("cloudtrail-modify-instance-attribute-groupset.json", deployment, instance_id, attacker)
    )
    # Then Detect isolated every interface itself, right after the lock, before the workflow
    [incident] = [i for i in ledger.list_incidents(limit=1000) if i.instance_id == instance_id]
    by_detect = incident.details["isolated"]
    assert by_detect["by"] == "detect" and by_detect["isolated"] and not by_detect["left_to_workflow"]
    interfaces = ec2.describe_network_interfaces(
        Filters=[{"Name": "attachment.instance-id", "Values": [instance_id]}]
    )["NetworkInterfaces"]
    assert sorted(by_detect["isolated"]) == sorted(e["NetworkInterfaceId"] for e in interfaces)
    assert all([g["GroupId"] for g in e["Groups"]] == [groups["isolation"]] for e in interfaces)
    # The workflow runs on (not asserted here); let it end before the next test.
    machine = deployment.outputs["RemediationStateMachineArn"]
    arn = f"{machine.replace(':stateMachine:', ':execution:')}:{incident.incident_id}"
    deadline = time.monotonic() + EXECUTION_WAIT_SECONDS
    while clients.stepfunctions.describe_execution(executionArn=arn)["status"] == "RUNNING":
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
