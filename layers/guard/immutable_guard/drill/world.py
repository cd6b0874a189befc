"""The world a drill acts in: a deployed guard and the means to observe it, the disposable workload it
attacks, and what an attacker can do there. The embedded local AWS and a sandbox account provide the
same things; only their pace and their means of attack differ."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import boto3

from immutable_guard.clients import Clients
from immutable_guard.ledger import Incident, IncidentLedger

ISOLATION_GROUP_NAME = "immutable-guard-isolation"

T = TypeVar("T")


@dataclass(frozen=True)
class Pace:
    """How long the world takes. The local AWS hands each event to Detect before the call returns; in an
    account, CloudTrail takes minutes to reach EventBridge and snapshots and replacements take minutes."""

    event_seconds: float  # from an attack to its incident
    quiet_seconds: float  # how long to watch before concluding that nothing happened
    execution_seconds: float  # one remediation, start to end
    poll_seconds: float


LOCAL_PACE = Pace(event_seconds=0, quiet_seconds=0, execution_seconds=180, poll_seconds=0.1)
ACCOUNT_PACE = Pace(event_seconds=900, quiet_seconds=300, execution_seconds=2700, poll_seconds=5)


def poll(probe: Callable[[], T], done: Callable[[T], bool], seconds: float, every: float) -> T:
    """Probe until `done` holds or `seconds` have passed (at least once); the last answer either way."""
    deadline = time.monotonic() + seconds
    while True:
        answer = probe()
        if done(answer) or time.monotonic() >= deadline:
            return answer
        time.sleep(every)


def drain_alerts(sqs: Any, queue_url: str) -> list[dict[str, Any]]:
    """The alerts an SQS subscriber of the alert topic holds, in order, each deleted once read: the SNS
    envelope's ``Message``, parsed."""
    found: list[dict[str, Any]] = []
    while messages := sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get(
        "Messages"
    ):
        for message in messages:
            found.append(json.loads(json.loads(message["Body"])["Message"]))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    return found


class Attacks(Protocol):
    """What an attacker (and the allow-listed pipeline) can do where a guard watches.

    Methods raise ScenarioSkipped when this world cannot stage the attack."""

    def attacker(self) -> boto3.Session:
        """A session whose calls the guard hears as the attacker's."""

    def pipeline(self) -> boto3.Session:
        """A session of an allow-listed principal."""

    def push_ssh_key(self, instance_id: str) -> None: ...

    def open_shell(self, instance_id: str) -> None: ...

    def change_watched_file(self, instance_id: str, path: str) -> None: ...

    def stop_trail(self, name: str) -> None:
        """Stop the trail the guard listens through (StopLogging, as the attacker)."""

    def deliver_again(self) -> None:
        """Deliver the attacker's last call to Detect once more, as at-least-once delivery may."""

    def report_instance_change(self, instance: dict[str, Any], changed: dict[str, Any]) -> list[str] | None:
        """Have Config report a change to the instance; the rules that matched, or None when the world's
        own Config recorder reports it (in an account)."""


@dataclass
class Guard:
    """One deployment of template.yaml, the means to observe it, and the attacks it watches for."""

    clients: Clients
    outputs: dict[str, str]
    parameters: dict[str, str]
    subscriber_url: str
    attacks: Attacks
    pace: Pace
    received: list[dict[str, Any]] = field(default_factory=list)

    @property
    def post_evidence_action(self) -> str:
        return self.parameters.get("PostEvidenceAction", "terminate")

    @property
    def ledger(self) -> IncidentLedger:
        return IncidentLedger(self.clients.dynamodb, self.outputs["IncidentLedgerName"])

    def incidents_for(self, instance_id: str) -> list[Incident]:
        return [i for i in self.ledger.list_incidents(limit=1000) if i.instance_id == instance_id]

    def wait_for_incidents(self, instance_ids: list[str]) -> dict[str, list[Incident]]:
        """Each instance's incidents, once every one has some or the event time has passed."""
        return poll(
            lambda: {i: self.incidents_for(i) for i in instance_ids},
            lambda found: all(found.values()),
            self.pace.event_seconds,
            self.pace.poll_seconds,
        )

    def execution_arn(self, incident_id: str) -> str:
        machine = self.outputs["RemediationStateMachineArn"]
        return f"{machine.replace(':stateMachine:', ':execution:')}:{incident_id}"

    def executions(self) -> list[str]:
        machine = self.outputs["RemediationStateMachineArn"]
        pages = self.clients.stepfunctions.get_paginator("list_executions").paginate(stateMachineArn=machine)
        return [e["name"] for page in pages for e in page["executions"]]

    def wait_for_execution(self, incident_id: str) -> dict[str, Any]:
        arn = self.execution_arn(incident_id)
        return poll(
            lambda: dict(self.clients.stepfunctions.describe_execution(executionArn=arn)),
            lambda execution: execution["status"] != "RUNNING",
            self.pace.execution_seconds,
            self.pace.poll_seconds,
        )

    def alerts(self) -> list[dict[str, Any]]:
        """Every alert the security team has received so far (drained from the subscriber queue)."""
        self.received.extend(drain_alerts(self.clients.sqs, self.subscriber_url))
        return list(self.received)

    def wait_for_alerts(self, done: Callable[[list[dict[str, Any]]], bool]) -> list[dict[str, Any]]:
        """Alerts received, once `done` holds for them or the event time has passed (SNS is asynchronous)."""
        return poll(self.alerts, done, max(self.pace.event_seconds, 5), self.pace.poll_seconds)


@dataclass
class Workload:
    stack_name: str
    group_name: str
    security_group_id: str
    standalone_instance_id: str
    vpc_cidr: str = "10.42.0.0/16"
    # The Spot server's group and its Network Load Balancer target group (None in an older workload).
    spot_group_name: str | None = None
    balanced_target_group_arn: str | None = None
    # Whether the guard may update the stack (declared, with a service role): its standalone server is
    # then rebuilt by it, otherwise left isolated for a person (manual_replacement).
    stack_replaceable: bool = True

    @property
    def group_names(self) -> list[str]:
        return [name for name in (self.group_name, self.spot_group_name) if name]


REPLACEABLE_STACK_TAG = "immutable-guard-replaceable"
"""The stack tag a guard's ReplaceableStackTagValue declares replaceable (remediation/replace.py)."""


@dataclass(frozen=True)
class Server:
    """An immutable server (tagged as the guard's default scope) alone in a VPC of its own."""

    vpc_id: str
    subnet_id: str
    groups: dict[str, str]  # security group name -> id, all in the VPC; the server carries the first
    image_id: str
    instance_id: str


def server_in_new_vpc(ec2: Any, cidr: str, group_names: tuple[str, ...] = ("web",)) -> Server:
    """A new VPC with one subnet and ``group_names`` groups, and a server in it tagged immutable=true with
    the first group: a VPC where the guard holds no isolation group yet."""
    vpc = ec2.create_vpc(CidrBlock=cidr)["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock=cidr.replace(".0.0/16", ".1.0/24"))["Subnet"]["SubnetId"]
    groups = {
        name: ec2.create_security_group(GroupName=name, Description=name, VpcId=vpc)["GroupId"]
        for name in group_names
    }
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    instance_id = ec2.run_instances(
        ImageId=image,
        MinCount=1,
        MaxCount=1,
        SubnetId=subnet,
        SecurityGroupIds=[groups[group_names[0]]],
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "immutable", "Value": "true"}]}],
    )["Instances"][0]["InstanceId"]
    return Server(vpc, subnet, groups, image, instance_id)


def deploy_workload_role(
    clients: Clients, body: str, stack_name: str, tags: dict[str, str] | None = None
) -> str:
    """Create the golden workload's CloudFormation service role (examples/golden-workload-role.yaml);
    its ARN. The workload stack runs as it, so Replace can update the stack without its permissions."""
    clients.cloudformation.create_stack(
        StackName=stack_name,
        TemplateBody=body,
        Capabilities=["CAPABILITY_IAM"],
        Tags=[{"Key": k, "Value": v} for k, v in (tags or {}).items()],
    )
    clients.cloudformation.get_waiter("stack_create_complete").wait(
        StackName=stack_name, WaiterConfig={"Delay": 5, "MaxAttempts": 60}
    )
    stack = clients.cloudformation.describe_stacks(StackName=stack_name)["Stacks"][0]
    return next(o["OutputValue"] for o in stack.get("Outputs", []) if o["OutputKey"] == "RoleArn")


def deploy_workload(
    clients: Clients,
    body: str,
    stack_name: str,
    tags: dict[str, str] | None = None,
    role_arn: str | None = None,
) -> Workload:
    """Create the golden workload stack (as the service role `role_arn`) and wait for it (minutes in an
    account)."""
    clients.cloudformation.create_stack(
        StackName=stack_name,
        TemplateBody=body,
        Tags=[{"Key": k, "Value": v} for k, v in (tags or {}).items()],
        **({"RoleARN": role_arn} if role_arn else {}),  # type: ignore[arg-type]
    )
    clients.cloudformation.get_waiter("stack_create_complete").wait(
        StackName=stack_name, WaiterConfig={"Delay": 5, "MaxAttempts": 120}
    )
    stack = clients.cloudformation.describe_stacks(StackName=stack_name)["Stacks"][0]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    group = clients.cloudformation.describe_stack_resource(
        StackName=stack_name, LogicalResourceId="AppSecurityGroup"
    )["StackResourceDetail"]
    return Workload(
        stack_name=stack_name,
        group_name=outputs["AutoScalingGroupName"],
        security_group_id=group["PhysicalResourceId"],
        standalone_instance_id=outputs["StandaloneInstanceId"],
        spot_group_name=outputs.get("SpotGroupName"),
        balanced_target_group_arn=outputs.get("BalancedTargetGroupArn"),
    )


def subscribe_queue(clients: Clients, topic_arn: str, name: str) -> tuple[str, str]:
    """A queue subscribed to the alert topic, as a security team's tooling would be; (url, subscription)."""
    url = clients.sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = clients.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    clients.sqs.set_queue_attributes(
        QueueUrl=url,
        Attributes={
            "Policy": json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Principal": {"Service": "sns.amazonaws.com"},
                            "Action": "sqs:SendMessage",
                            "Resource": arn,
                            "Condition": {"ArnEquals": {"aws:SourceArn": topic_arn}},
                        }
                    ],
                }
            )
        },
    )
    subscription = clients.sns.subscribe(
        TopicArn=topic_arn, Protocol="sqs", Endpoint=arn, ReturnSubscriptionArn=True
    )["SubscriptionArn"]
    return url, subscription


class IsolationWatch:
    """Reads an instance's network interfaces from EC2 while its remediation runs, so isolation is proven
    on the live instance and not inferred after it was nuked."""

    def __init__(self, clients: Clients, instance_id: str, execution_arn: str, every: float) -> None:
        self._clients = clients
        self._instance_id = instance_id
        self._execution_arn = execution_arn
        self._every = max(every / 2, 0.05)
        self.observed: list[list[str]] | None = None
        self.isolation_group_ids: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> IsolationWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        sfn = self._clients.stepfunctions
        while not self._stop.is_set() and self.observed is None:
            try:
                events = sfn.get_execution_history(executionArn=self._execution_arn, maxResults=1000)[
                    "events"
                ]
            except Exception:  # the execution may not exist yet
                time.sleep(self._every)
                continue
            entered = {e.get("stateEnteredEventDetails", {}).get("name") for e in events}
            if "StartSnapshots" in entered and "Nuke" not in entered:
                self.observed = self._groups()
                return
            if "Nuke" in entered:
                return  # too late to look: the check will say so
            time.sleep(self._every)

    def _groups(self) -> list[list[str]]:
        ec2 = self._clients.ec2
        interfaces = ec2.describe_network_interfaces(
            Filters=[{"Name": "attachment.instance-id", "Values": [self._instance_id]}]
        )["NetworkInterfaces"]
        groups = [[g["GroupId"] for g in eni.get("Groups", [])] for eni in interfaces]
        ids = {g for eni in groups for g in eni}
        if ids:
            described = ec2.describe_security_groups(GroupIds=sorted(ids))["SecurityGroups"]
            self.isolation_group_ids = {
                g["GroupId"] for g in described if g["GroupName"] == ISOLATION_GROUP_NAME
            }
        return groups
