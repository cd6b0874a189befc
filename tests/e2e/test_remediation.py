"""The whole remediation (contain, evidence, replace, nuke) on the local AWS, for the golden workload of
examples/: an Auto Scaling group member and the stack's standalone instance are compromised, and what AWS
reports afterwards is checked; and a failing step leaves the instance quarantined, not terminated."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from immutable_guard.clients import Clients
from immutable_guard.drill.world import REPLACEABLE_STACK_TAG, deploy_workload_role
from immutable_guard.ledger import Incident, IncidentLedger, Status
from immutable_guard.local import Deployment, EventRouter, LocalAws, LocalSession
from immutable_guard.local.trail import Actor, CloudTrailEmitter

pytestmark = pytest.mark.slow

WORKLOAD_TEMPLATE = Path(__file__).resolve().parents[2] / "examples" / "golden-workload.yaml"
WORKLOAD_ROLE_TEMPLATE = WORKLOAD_TEMPLATE.with_name("golden-workload-role.yaml")
WORKLOAD_STACK = "golden-workload"
INCIDENT_TAG = "immutable-guard:incident"
ISOLATION_GROUP = "immutable-guard-isolation"
# Bounds the wait for an execution (ReplacementPollSeconds=1, MaxPolls=30); never asserted on.
EXECUTION_WAIT_SECONDS = 180


@dataclass
class Workload:
    stack_name: str
    group_name: str
    security_group_id: str
    attacked: set[str] = field(default_factory=set)


@dataclass
class Subscriber:
    """An SQS queue subscribed to the alert topic, as a security team's tooling would be."""

    clients: Clients
    url: str
    received: list[dict[str, Any]] = field(default_factory=list)

    def alerts_for(self, incident_id: str) -> list[dict[str, Any]]:
        while True:
            messages = self.clients.sqs.receive_message(
                QueueUrl=self.url, MaxNumberOfMessages=10, WaitTimeSeconds=0
            ).get("Messages", [])
            if not messages:
                break
            for message in messages:
                self.received.append(json.loads(json.loads(message["Body"])["Message"]))
                self.clients.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=message["ReceiptHandle"])
        return [alert for alert in self.received if alert.get("incident_id") == incident_id]


def _deploy_workload(clients: Clients) -> Workload:
    # As a golden workload should: run by its own CloudFormation service role, and declared replaceable.
    role_arn = deploy_workload_role(
        clients, WORKLOAD_ROLE_TEMPLATE.read_text("utf-8"), f"{WORKLOAD_STACK}-role"
    )
    cloudformation = clients.cloudformation
    cloudformation.create_stack(
        StackName=WORKLOAD_STACK,
        TemplateBody=WORKLOAD_TEMPLATE.read_text("utf-8"),
        RoleARN=role_arn,
        Tags=[{"Key": REPLACEABLE_STACK_TAG, "Value": "true"}],
    )
    stack = cloudformation.describe_stacks(StackName=WORKLOAD_STACK)["Stacks"][0]
    assert stack["StackStatus"] == "CREATE_COMPLETE"
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}
    return Workload(WORKLOAD_STACK, outputs["AutoScalingGroupName"], outputs["SecurityGroupId"])


def _subscribe(clients: Clients, deployment: Deployment) -> Subscriber:
    url = clients.sqs.create_queue(QueueName="security-team-alerts")["QueueUrl"]
    arn = clients.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    clients.sns.subscribe(TopicArn=deployment.outputs["AlertTopicArn"], Protocol="sqs", Endpoint=arn)
    return Subscriber(clients, url)


@pytest.fixture
def clients(local_aws: LocalAws) -> Clients:
    return local_aws.clients()


@pytest.fixture
def workload(local_session: LocalSession, deployment: Deployment, clients: Clients) -> Workload:
    return local_session.get("golden-workload", lambda: _deploy_workload(clients))


@pytest.fixture
def subscriber(local_session: LocalSession, deployment: Deployment, clients: Clients) -> Subscriber:
    return local_session.get("subscriber", lambda: _subscribe(clients, deployment))


@pytest.fixture
def emitter(local_aws: LocalAws, deployment: Deployment) -> CloudTrailEmitter:
    return CloudTrailEmitter(EventRouter(deployment, local_aws.session()).put)


@pytest.fixture
def ledger(clients: Clients, deployment: Deployment) -> IncidentLedger:
    return IncidentLedger(clients.dynamodb, deployment.outputs["IncidentLedgerName"])


# ---------------------------------------------------------------------- helpers


def _instance(clients: Clients, instance_id: str) -> dict[str, Any]:
    return dict(clients.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0])


def _group(clients: Clients, name: str) -> dict[str, Any]:
    return dict(
        clients.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"][0]
    )


def _fresh_member(clients: Clients, workload: Workload) -> str:
    members = [m["InstanceId"] for m in _group(clients, workload.group_name)["Instances"]]
    instance_id = str(next(m for m in sorted(members) if m not in workload.attacked))
    workload.attacked.add(instance_id)
    return instance_id


def _standalone(clients: Clients, workload: Workload) -> str:
    resource = clients.cloudformation.describe_stack_resource(
        StackName=workload.stack_name, LogicalResourceId="StandaloneServer"
    )["StackResourceDetail"]
    return str(resource["PhysicalResourceId"])


def _push_ssh_key(emitter: CloudTrailEmitter, instance_id: str) -> None:
    """EC2 Instance Connect SendSSHPublicKey naming the instance, as CloudTrail records it."""
    emitter.emit(
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


def _incident(ledger: IncidentLedger, instance_id: str) -> Incident:
    incidents = [i for i in ledger.list_incidents(limit=1000) if i.instance_id == instance_id]
    assert len(incidents) == 1, f"incidents about {instance_id}: {incidents}"
    return incidents[0]


def _finished(clients: Clients, deployment: Deployment, incident_id: str) -> dict[str, Any]:
    machine = deployment.outputs["RemediationStateMachineArn"]
    arn = f"{machine.replace(':stateMachine:', ':execution:')}:{incident_id}"
    deadline = time.monotonic() + EXECUTION_WAIT_SECONDS
    while True:
        execution = clients.stepfunctions.describe_execution(executionArn=arn)
        if execution["status"] != "RUNNING" or time.monotonic() > deadline:
            return dict(execution)
        time.sleep(0.2)


def _attack_and_wait(
    clients: Clients,
    deployment: Deployment,
    emitter: CloudTrailEmitter,
    ledger: IncidentLedger,
    instance_id: str,
) -> tuple[Incident, dict[str, Any]]:
    _push_ssh_key(emitter, instance_id)
    incident = _incident(ledger, instance_id)
    execution = _finished(clients, deployment, incident.incident_id)
    return ledger.get(incident.incident_id), execution


def _assert_evidence_and_nuke(
    clients: Clients, incident: Incident, instance_id: str, subscriber: Subscriber
) -> None:
    assert incident.status is Status.CLOSED, incident.status
    # The instance is gone, and only after every ENI was isolated (the Contain step read them back)
    assert _instance(clients, instance_id)["State"]["Name"] == "terminated"
    contained = incident.details["contained"]
    prior_enis = [eni["eni"] for eni in (incident.prior_state or {})["network_interfaces"]]
    assert prior_enis and [eni["eni"] for eni in contained["network_interfaces"]] == prior_enis
    # Detect isolates right after its lock once our groups exist in the VPC (issue 15), and Contain finds
    # it done; the first quarantine in a VPC is Contain's.
    isolated = contained["actions"] + incident.details.get("isolated", {}).get("actions", [])
    assert all(any(a.startswith(f"isolated {eni}") for a in isolated) for eni in prior_enis)
    isolation = clients.ec2.describe_security_groups(GroupIds=contained["isolation_group_ids"])[
        "SecurityGroups"
    ]
    assert [g["GroupName"] for g in isolation] == [ISOLATION_GROUP]
    assert isolation[0]["IpPermissions"] == [] and isolation[0]["IpPermissionsEgress"] == []
    assert incident.details["nuked"]["action"] == "terminated"
    # Every volume it had is in a completed snapshot tagged with the incident
    evidence = incident.details["evidence_complete"]
    snapshots = clients.ec2.describe_snapshots(SnapshotIds=evidence["snapshot_ids"])["Snapshots"]
    volumes = {v["volume_id"] for v in (incident.prior_state or {})["volumes"]}
    assert volumes and {s["VolumeId"] for s in snapshots} == volumes
    assert {s["State"] for s in snapshots} == {"completed"}
    assert all(
        {t["Key"]: t["Value"] for t in s["Tags"]}[INCIDENT_TAG] == incident.incident_id for s in snapshots
    )
    # The manifest in the evidence bucket is the one whose digest the ledger holds
    stored = clients.s3.get_object(
        Bucket=evidence["bucket"], Key=evidence["key"], VersionId=evidence["version_id"]
    )
    body = stored["Body"].read()
    assert hashlib.sha256(body).hexdigest() == evidence["sha256"]
    manifest = json.loads(body)
    assert manifest["incident_id"] == incident.incident_id and manifest["instance_id"] == instance_id
    assert {s["snapshot_id"] for s in manifest["snapshots"]} == set(evidence["snapshot_ids"])
    # The security team heard of it from detection to closure
    stages = [alert["stage"] for alert in subscriber.alerts_for(incident.incident_id)]
    assert {"detected", "contained", "closed"} <= set(stages), stages


# ---------------------------------------------------------------------- scenarios


def test_a_compromised_auto_scaling_member_is_contained_preserved_replaced_and_nuked(
    clients: Clients,
    deployment: Deployment,
    workload: Workload,
    subscriber: Subscriber,
    emitter: CloudTrailEmitter,
    ledger: IncidentLedger,
) -> None:
    # Given an in-service member of the golden group
    instance_id = _fresh_member(clients, workload)
    desired = int(_group(clients, workload.group_name)["DesiredCapacity"])
    # When someone pushes an SSH key to it
    incident, execution = _attack_and_wait(clients, deployment, emitter, ledger, instance_id)
    # Then the remediation succeeded
    assert execution["status"] == "SUCCEEDED", incident.details.get("failed")
    _assert_evidence_and_nuke(clients, incident, instance_id, subscriber)
    # And the group is back to its desired capacity of healthy members, without the old one
    group = _group(clients, workload.group_name)
    in_service = [m["InstanceId"] for m in group["Instances"] if m["LifecycleState"] == "InService"]
    assert len(in_service) == desired and instance_id not in in_service
    assert incident.details["replaced"]["strategy"] == "auto_scaling_group"


def test_a_compromised_stack_instance_is_replaced_by_its_stack_then_nuked(
    clients: Clients,
    deployment: Deployment,
    workload: Workload,
    subscriber: Subscriber,
    emitter: CloudTrailEmitter,
    ledger: IncidentLedger,
) -> None:
    # Given the stack's standalone server
    instance_id = _standalone(clients, workload)
    generation = _generation(clients, workload)
    # When someone pushes an SSH key to it
    incident, execution = _attack_and_wait(clients, deployment, emitter, ledger, instance_id)
    # Then the remediation succeeded
    assert execution["status"] == "SUCCEEDED", incident.details.get("failed")
    _assert_evidence_and_nuke(clients, incident, instance_id, subscriber)
    # And the stack rebuilt it from the next generation of its launch template
    stack = clients.cloudformation.describe_stacks(StackName=workload.stack_name)["Stacks"][0]
    assert stack["StackStatus"] == "UPDATE_COMPLETE"
    assert _generation(clients, workload) == generation + 1
    new_id = _standalone(clients, workload)
    new = _instance(clients, new_id)
    assert new_id != instance_id and new["State"]["Name"] == "running"
    assert {t["Key"]: t["Value"] for t in new["Tags"]}["golden:generation"] == str(generation + 1)
    assert incident.details["replaced"]["replacement_instance_ids"] == [new_id]
    # And the stack could not delete the protected old server itself: that was the Nuke step's job
    events = clients.cloudformation.describe_stack_events(StackName=workload.stack_name)["StackEvents"]
    failed = [e for e in events if e["ResourceStatus"] == "DELETE_FAILED"]
    assert [e["PhysicalResourceId"] for e in failed][:1] == [instance_id]
    assert "disableApiTermination" in failed[0]["ResourceStatusReason"]
    # And the update ran as the stack's own service role, which it keeps
    assert incident.details["replaced"]["service_role"] == stack["RoleARN"]
    assert incident.details["replaced"]["service_role_source"] == "stack"


@pytest.mark.parametrize(
    ("role", "tagged", "why"),
    [
        (False, True, "has no service role; Replace's own credentials cannot update it"),
        (True, False, "is not declared replaceable"),
    ],
)
def test_a_stack_instance_the_guard_may_not_rebuild_stays_isolated_and_the_alert_says_why(
    clients: Clients,
    deployment: Deployment,
    subscriber: Subscriber,
    emitter: CloudTrailEmitter,
    ledger: IncidentLedger,
    role: bool,
    tagged: bool,
    why: str,
) -> None:
    # Given a golden workload stack created without a service role, or not declared replaceable
    role_arn = deploy_workload_role(
        clients, WORKLOAD_ROLE_TEMPLATE.read_text("utf-8"), f"manual-{role}-{tagged}-role"
    )
    name = f"manual-{role}-{tagged}"
    clients.cloudformation.create_stack(
        StackName=name,
        TemplateBody=WORKLOAD_TEMPLATE.read_text("utf-8"),
        Tags=[{"Key": REPLACEABLE_STACK_TAG, "Value": "true"}] if tagged else [],
        **({"RoleARN": role_arn} if role else {}),
    )
    workload = Workload(name, "", "")
    instance_id = _standalone(clients, workload)
    # When someone pushes an SSH key to its standalone server
    incident, execution = _attack_and_wait(clients, deployment, emitter, ledger, instance_id)
    # Then the workflow ends without rebuilding it: evidence kept, server isolated, not nuked
    assert execution["status"] == "SUCCEEDED", incident.details.get("failed")
    assert incident.status is Status.AWAITING_MANUAL_REPLACEMENT
    assert "evidence_complete" in incident.details and "nuked" not in incident.details
    assert _instance(clients, instance_id)["State"]["Name"] == "running"
    # And the stack was not touched
    stack = clients.cloudformation.describe_stacks(StackName=name)["Stacks"][0]
    assert stack["StackStatus"] == "CREATE_COMPLETE" and _standalone(clients, workload) == instance_id
    # And the team is told why it must replace the server by hand
    [alert] = [a for a in subscriber.alerts_for(incident.incident_id) if a["stage"] == "manual_replacement"]
    assert why in alert["summary"] and why in alert["details"]["reason"]


def _generation(clients: Clients, workload: Workload) -> int:
    stack = clients.cloudformation.describe_stacks(StackName=workload.stack_name)["Stacks"][0]
    values = {p["ParameterKey"]: p["ParameterValue"] for p in stack["Parameters"]}
    return int(values["ReplacementGeneration"])


@pytest.fixture
def snapshots_refused(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """EC2 refuses CreateSnapshots (e.g. the role lost ec2:CreateSnapshots): the server runs in this
    process, so moto's backend is patched where it serves the call."""
    from moto.ec2.exceptions import EC2ClientError
    from moto.ec2.models.elastic_block_store import EBSBackend

    def refuse(*_: Any, **__: Any) -> Any:
        raise EC2ClientError("UnauthorizedOperation", "You are not authorized to perform this operation.")

    monkeypatch.setattr(EBSBackend, "create_snapshots", refuse)
    yield


def test_a_failing_step_alerts_and_leaves_the_instance_quarantined_not_terminated(
    clients: Clients,
    deployment: Deployment,
    workload: Workload,
    subscriber: Subscriber,
    emitter: CloudTrailEmitter,
    ledger: IncidentLedger,
    snapshots_refused: None,
) -> None:
    # Given a member of the golden group, and EC2 refusing to snapshot its volumes
    instance_id = _fresh_member(clients, workload)
    # When someone pushes an SSH key to it
    incident, execution = _attack_and_wait(clients, deployment, emitter, ledger, instance_id)
    # Then the remediation failed, and says where
    assert execution["status"] == "FAILED", execution
    assert incident.status is Status.FAILED
    failures = [a for a in subscriber.alerts_for(incident.incident_id) if a["stage"] == "failed"]
    assert len(failures) == 1 and "StartSnapshots" in json.dumps(failures[0])
    # And the instance is still there, running, isolated and protected, for a person to take over
    instance = _instance(clients, instance_id)
    assert instance["State"]["Name"] == "running"
    isolation_ids = incident.details["contained"]["isolation_group_ids"]
    enis = clients.ec2.describe_network_interfaces(
        Filters=[{"Name": "attachment.instance-id", "Values": [instance_id]}]
    )["NetworkInterfaces"]
    assert enis and all([g["GroupId"] for g in eni["Groups"]] == isolation_ids for eni in enis)
    assert [g["GroupId"] for g in instance["SecurityGroups"]] == isolation_ids
    tags = {t["Key"]: t["Value"] for t in instance["Tags"]}
    assert (tags[INCIDENT_TAG], tags["immutable-guard:state"]) == (incident.incident_id, "quarantined")
    protection = clients.ec2.describe_instance_attribute(
        InstanceId=instance_id, Attribute="disableApiTermination"
    )
    assert protection["DisableApiTermination"]["Value"] is True
    assert "nuked" not in incident.details
