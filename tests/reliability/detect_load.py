"""CloudTrail-shaped traffic for the Detect path, each event labelled with what must become of it, and the
moto world it runs against. Shared by the load test (correctness) and benchmarks/load_detect.py (figures).

The mix is what an account sends the detector: mostly changes that are not ours to judge (out of scope,
failed calls, allow-listed pipelines, CloudFormation, another account), a few account-level alerts, some
real mutations of immutable servers, re-deliveries of the same event, and a little garbage.
"""

from __future__ import annotations

import copy
import json
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

EVENTS = Path(__file__).resolve().parents[2] / "events"
ACCOUNT = "111122223333"
OTHER_ACCOUNT = "444455556666"
SAMPLE_INSTANCE = "i-0abc1234def567890"
SAMPLE_GROUP = "sg-0a1b2c3d4e5f67890"
ALLOWED_ROLE = "arn:aws:iam::111122223333:role/deploy-pipeline"
LAMBDA_ASYNC_RETRIES = 2  # template.yaml: DetectFunction EventInvokeConfig.MaximumRetryAttempts
PASS_MACHINE = json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}})

# kind -> (share of the traffic, what must become of it)
MIX: dict[str, tuple[float, str]] = {
    "out_of_scope_ssh": (0.30, "ignore"),
    "out_of_scope_port": (0.20, "ignore"),
    "failed_call": (0.12, "ignore"),
    "allow_listed": (0.08, "ignore"),
    "cloudformation": (0.06, "ignore"),
    "wrong_account": (0.05, "ignore"),
    "key_pair": (0.04, "alert"),
    "mutation": (0.07, "remediate"),
    "redelivery": (0.04, "remediate"),
    "second_report": (0.02, "remediate"),
    "malformed": (0.02, "reject"),
}


@dataclass
class LabelledEvent:
    kind: str
    expected: str
    event: Any
    instance_id: str | None = None


@dataclass
class Outcome:
    labelled: LabelledEvent
    decision: str
    instance_outcomes: list[str]
    seconds: float
    error: str | None = None


@dataclass
class Report:
    outcomes: list[Outcome] = field(default_factory=list)
    seconds: float = 0.0

    def by_decision(self) -> Counter[str]:
        return Counter(o.decision for o in self.outcomes)

    def mismatches(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.decision != o.labelled.expected]

    def latencies_ms(self) -> list[float]:
        return sorted(o.seconds * 1000 for o in self.outcomes)


def _template(name: str) -> dict[str, Any]:
    return dict(json.loads((EVENTS / name).read_text("utf-8")))


class TrafficGenerator:
    """Labelled events over the given immutable and mutable instances (deterministic for a seed)."""

    def __init__(
        self, immutable_ids: list[str], mutable_ids: list[str], mutable_group: str, seed: int = 7
    ) -> None:
        self.rng = random.Random(seed)
        self.immutable = list(immutable_ids)
        self.mutable = list(mutable_ids)
        self.mutable_group = mutable_group
        self.mutated: list[str] = []
        self.delivered: list[dict[str, Any]] = []
        self.templates = {
            "ssh": _template("cloudtrail-send-ssh-public-key.json"),
            "port": _template("cloudtrail-authorize-sg-ingress-ssh-world.json"),
            "failed": _template("benign-failed-call.json"),
            "allowed": _template("benign-allow-listed-principal.json"),
            "cfn": _template("benign-cloudformation-change.json"),
            "key": _template("cloudtrail-import-key-pair.json"),
            "session": _template("cloudtrail-ssm-start-session.json"),
        }

    def _fresh(
        self, name: str, instance_id: str | None = None, group_id: str | None = None
    ) -> dict[str, Any]:
        text = json.dumps(self.templates[name])
        if instance_id:
            text = text.replace(SAMPLE_INSTANCE, instance_id)
        text = text.replace(SAMPLE_GROUP, group_id or self.mutable_group)
        event: dict[str, Any] = json.loads(text)
        event["id"] = str(uuid.uuid4())
        event["detail"]["eventID"] = str(uuid.uuid4())
        return event

    def make(self, kind: str) -> LabelledEvent:
        expected = MIX[kind][1]
        rng = self.rng
        if kind == "out_of_scope_ssh":
            return LabelledEvent(kind, expected, self._fresh("ssh", rng.choice(self.mutable)))
        if kind == "out_of_scope_port":
            return LabelledEvent(kind, expected, self._fresh("port"))
        if kind == "failed_call":
            return LabelledEvent(kind, expected, self._fresh("failed", group_id=self.mutable_group))
        if kind == "allow_listed":
            return LabelledEvent(kind, expected, self._fresh("allowed", rng.choice(self.immutable)))
        if kind == "cloudformation":
            return LabelledEvent(kind, expected, self._fresh("cfn"))
        if kind == "wrong_account":
            event = json.loads(
                json.dumps(self._fresh("ssh", rng.choice(self.immutable))).replace(ACCOUNT, OTHER_ACCOUNT)
            )
            return LabelledEvent(kind, expected, event)
        if kind == "key_pair":
            return LabelledEvent(kind, expected, self._fresh("key"))
        if kind == "mutation" or (kind in ("redelivery", "second_report") and not self.delivered):
            pool = [i for i in self.immutable if i not in self.mutated] or self.immutable
            instance_id = rng.choice(pool)
            if instance_id not in self.mutated:
                self.mutated.append(instance_id)
            event = self._fresh(rng.choice(["ssh", "session"]), instance_id)
            self.delivered.append(event)
            return LabelledEvent("mutation", "remediate", event, instance_id)
        if kind == "redelivery":  # EventBridge delivers at least once: the very same event again
            event = copy.deepcopy(rng.choice(self.delivered))
            return LabelledEvent(kind, expected, event, _instance_of(event))
        if kind == "second_report":  # the same server reported again by another call
            instance_id = rng.choice(self.mutated)
            return LabelledEvent(kind, expected, self._fresh("session", instance_id), instance_id)
        return LabelledEvent(kind, "reject", self.malformed())

    def malformed(self) -> Any:
        choice = self.rng.randrange(5)
        if choice == 0:
            return "not an event"
        if choice == 1:
            return {"detail-type": "AWS API Call via CloudTrail", "source": "aws.ec2"}
        if choice == 2:
            event = self._fresh("ssh", self.rng.choice(self.immutable))
            event["detail"] = ["a", "list"]
            return event
        if choice == 3:
            return None
        event = self._fresh("port")
        event["detail"]["requestParameters"] = 12
        event["detail"]["eventName"] = {"nested": True}
        return event

    def traffic(self, count: int) -> list[LabelledEvent]:
        kinds = list(MIX)
        weights = [MIX[k][0] for k in kinds]
        return [self.make(self.rng.choices(kinds, weights)[0]) for _ in range(count)]


def _instance_of(event: dict[str, Any]) -> str | None:
    params = (event.get("detail") or {}).get("requestParameters") or {}
    return params.get("instanceId") or params.get("target")


@dataclass
class DetectWorld:
    """Moto with the ledger, topic, dead-letter queue, a (non-executing) state machine and a fleet."""

    clients: Any
    settings: Any
    ledger: Any
    immutable_ids: list[str]
    mutable_ids: list[str]
    mutable_group: str
    subscriber_url: str
    raised: list[str] = field(default_factory=list)

    def process(self, labelled: LabelledEvent, attempt: int = 0) -> Outcome:
        from aws_lambda_powertools import Metrics
        from immutable_guard.pipeline import process_event

        metrics = Metrics(namespace="ImmutableGuardLoad")
        started = time.perf_counter()
        try:
            result = process_event(
                labelled.event, self.settings, self.clients, metrics, expected_account=ACCOUNT
            )
        except Exception as exc:
            # Lambda retries a failed asynchronous invocation twice (EventInvokeConfig), then hands the
            # event to the function's dead-letter queue: the same happens here, so nothing escapes uncounted.
            self.raised.append(f"{type(exc).__name__}: {exc}")
            if attempt < LAMBDA_ASYNC_RETRIES:
                return self.process(labelled, attempt + 1)
            return Outcome(
                labelled, "raised", [], time.perf_counter() - started, f"{type(exc).__name__}: {exc}"
            )
        finally:
            metrics.clear_metrics()
        return Outcome(
            labelled, result.decision, [i.outcome for i in result.instances], time.perf_counter() - started
        )

    def run(self, traffic: list[LabelledEvent], threads: int = 1, concurrent_share: float = 0.0) -> Report:
        """Deliver the traffic; a share of it in bursts over ``threads`` threads, as Lambda scales out."""
        report = Report()
        lock = threading.Lock()
        cut = int(len(traffic) * (1 - concurrent_share))
        started = time.perf_counter()
        for labelled in traffic[:cut]:
            report.outcomes.append(self.process(labelled))
        if cut < len(traffic):
            with ThreadPoolExecutor(max_workers=threads) as pool:
                for outcome in pool.map(self.process, traffic[cut:]):
                    with lock:
                        report.outcomes.append(outcome)
        report.seconds = time.perf_counter() - started
        return report

    def dead_letters(self) -> list[dict[str, Any]]:
        sqs = self.clients.sqs
        url = self.settings.dead_letter_queue_url
        found = []
        while True:
            messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
            if not messages:
                return found
            for message in messages:
                found.append(json.loads(message["Body"]))
                sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])

    def executions(self) -> list[str]:
        arn = self.settings.remediation_state_machine_arn
        paginator = self.clients.stepfunctions.get_paginator("list_executions")
        return [e["name"] for page in paginator.paginate(stateMachineArn=arn) for e in page["executions"]]


@contextmanager
def detect_world(
    immutable: int = 20, mutable: int = 20, max_incidents_per_hour: int = 1000
) -> Iterator[DetectWorld]:
    """A moto account with a fleet: ``immutable`` tagged servers and ``mutable`` others (one shared group)."""
    from immutable_guard.clients import Clients
    from immutable_guard.ledger import IncidentLedger
    from immutable_guard.model import Mode, PostEvidenceAction
    from immutable_guard.settings import DetectSettings
    from moto import mock_aws

    with mock_aws():
        aws = Clients(boto3.Session(region_name="us-east-1"))
        ec2 = aws.ec2
        aws.dynamodb.create_table(
            TableName="ledger",
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            BillingMode="PAY_PER_REQUEST",
        )
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.0.0/18")["Subnet"]["SubnetId"]
        group = ec2.create_security_group(GroupName="pets", Description="mutable", VpcId=vpc)["GroupId"]
        golden = ec2.create_security_group(GroupName="golden", Description="immutable", VpcId=vpc)["GroupId"]
        image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]

        def launch(count: int, tags: dict[str, str], group_id: str) -> list[str]:
            if count == 0:
                return []
            return [
                i["InstanceId"]
                for i in ec2.run_instances(
                    ImageId=image,
                    MinCount=count,
                    MaxCount=count,
                    SubnetId=subnet,
                    SecurityGroupIds=[group_id],
                    TagSpecifications=[
                        {
                            "ResourceType": "instance",
                            "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
                        }
                    ],
                )["Instances"]
            ]

        immutable_ids = launch(immutable, {"immutable": "true"}, golden)
        mutable_ids = launch(mutable, {"team": "pets"}, group)
        topic = aws.sns.create_topic(Name="alerts")["TopicArn"]
        subscriber = aws.sqs.create_queue(QueueName="subscriber")["QueueUrl"]
        subscriber_arn = aws.sqs.get_queue_attributes(QueueUrl=subscriber, AttributeNames=["QueueArn"])
        aws.sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=subscriber_arn["Attributes"]["QueueArn"])
        dlq = aws.sqs.create_queue(QueueName="detect-dlq")["QueueUrl"]
        role = aws._session.client("iam").create_role(RoleName="sfn", AssumeRolePolicyDocument="{}")["Role"][
            "Arn"
        ]
        machine = aws.stepfunctions.create_state_machine(
            name="remediation", definition=PASS_MACHINE, roleArn=role
        )
        settings = DetectSettings(
            ledger_table="ledger",
            alert_topic_arn=topic,
            mode=Mode.ENFORCE,
            scope_tag_key="immutable",
            scope_tag_value="true",
            allowed_principal_arns=(ALLOWED_ROLE,),
            own_role_arns=("arn:aws:iam::111122223333:role/immutable-guard-QuarantineFunctionRole-ABC",),
            max_incidents_per_hour=max_incidents_per_hour,
            post_evidence_action=PostEvidenceAction.TERMINATE,
            remediation_state_machine_arn=machine["stateMachineArn"],
            dead_letter_queue_url=dlq,
        )
        yield DetectWorld(
            aws,
            settings,
            IncidentLedger(aws.dynamodb, "ledger"),
            immutable_ids,
            mutable_ids,
            group,
            subscriber,
        )


def percentile(values: list[float], share: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def account_for(world: DetectWorld, report: Report, generator: TrafficGenerator) -> dict[str, Any]:
    """Every event accounted for, against the world's end state (ledger, executions, dead-letter queue)."""
    incidents = world.ledger.list_incidents(limit=1_000_000)
    per_instance = Counter(i.instance_id for i in incidents)
    return {
        "events": len(report.outcomes),
        "decisions": dict(report.by_decision()),
        "mismatches": [
            (o.labelled.kind, o.labelled.expected, o.decision, o.error) for o in report.mismatches()
        ],
        "raised": [o.error for o in report.outcomes if o.decision == "raised"],
        "retried_after_exception": list(world.raised),
        "dead_letters": len(world.dead_letters()),
        "rejected": sum(1 for o in report.outcomes if o.decision == "reject"),
        "mutated_instances": sorted(generator.mutated),
        "incidents_per_instance": dict(per_instance),
        "executions": sorted(world.executions()),
        "incident_ids": sorted(i.incident_id for i in incidents),
        "instance_outcomes": dict(Counter(x for o in report.outcomes for x in o.instance_outcomes)),
    }
