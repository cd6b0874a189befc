"""The drill: attacks on a golden-image workload, and proof, read back from the AWS APIs, that Immutable
Guard detected, alerted, contained, preserved evidence, replaced and nuked — or rightly did nothing.

By default everything runs on the embedded local AWS (moto's server on this machine); `--stack` runs the
same scenarios against a deployed stack in a sandbox account."""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from immutable_guard.clients import Clients
from immutable_guard.ledger import Incident, IncidentLedger

EVIDENCE_TAG = "immutable-guard:incident"
ISOLATION_GROUP_NAME = "immutable-guard-isolation"
STAGES = ("detected", "alerted", "contained", "evidence_complete", "replaced", "nuked")
EXECUTION_TIMEOUT_SECONDS = 180
WORKLOAD_STACK = "golden-workload"
ATTACKER_ARN = "arn:aws:sts::{account}:assumed-role/attacker/stolen-session"
PIPELINE_ROLE = "arn:aws:iam::{account}:role/deploy-pipeline"
PIPELINE_SESSION = "arn:aws:sts::{account}:assumed-role/deploy-pipeline/build-1042"

# The drill's guard: enforce, fast polls, an allow-listed pipeline, room for every scenario's incidents.
LOCAL_PARAMETERS = {
    "Mode": "enforce",
    "SnapshotPollSeconds": "1",
    "ReplacementPollSeconds": "1",
    "MaxPolls": "60",
    "MaxIncidentsPerHour": "20",
    "PostEvidenceAction": "terminate",
}


# ---------------------------------------------------------------------------- report
@dataclass
class Check:
    name: str
    passed: bool
    detail: str = ""


@dataclass
class ScenarioReport:
    key: str
    title: str
    checks: list[Check] = field(default_factory=list)
    timeline_ms: dict[str, int | None] = field(default_factory=dict)
    incidents: list[str] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return self.error is None and bool(self.checks) and all(c.passed for c in self.checks)

    def expect(self, name: str, passed: bool, detail: str = "") -> bool:
        self.checks.append(Check(name, bool(passed), detail))
        return bool(passed)

    def as_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.key,
            "title": self.title,
            "passed": self.passed,
            "seconds": round(self.seconds, 2),
            "incidents": self.incidents,
            "timeline_ms": self.timeline_ms,
            "checks": [c.__dict__ for c in self.checks],
            "error": self.error,
        }


class Progress:
    """Readable progress on a terminal; silent when the report is JSON."""

    def __init__(self, out: TextIO | None) -> None:
        self._out = out

    def say(self, text: str) -> None:
        if self._out is not None:
            print(text, file=self._out, flush=True)


# ---------------------------------------------------------------------------- the world the drill acts in
@dataclass
class Guard:
    """One deployment of template.yaml and the means to observe it."""

    clients: Clients
    outputs: dict[str, str]
    deliver: Callable[[dict[str, Any]], Any]
    subscriber_url: str
    received: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ledger(self) -> IncidentLedger:
        return IncidentLedger(self.clients.dynamodb, self.outputs["IncidentLedgerName"])

    def incidents_for(self, instance_id: str) -> list[Incident]:
        return [i for i in self.ledger.list_incidents(limit=1000) if i.instance_id == instance_id]

    def execution_arn(self, incident_id: str) -> str:
        machine = self.outputs["RemediationStateMachineArn"]
        return f"{machine.replace(':stateMachine:', ':execution:')}:{incident_id}"

    def executions(self) -> list[str]:
        machine = self.outputs["RemediationStateMachineArn"]
        pages = self.clients.stepfunctions.get_paginator("list_executions").paginate(stateMachineArn=machine)
        return [e["name"] for page in pages for e in page["executions"]]

    def alerts(self) -> list[dict[str, Any]]:
        """Every alert the security team has received so far (drained from the subscriber queue)."""
        while True:
            response = self.clients.sqs.receive_message(
                QueueUrl=self.subscriber_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
            )
            messages = response.get("Messages", [])
            if not messages:
                return list(self.received)
            for message in messages:
                self.received.append(json.loads(json.loads(message["Body"])["Message"]))
                self.clients.sqs.delete_message(
                    QueueUrl=self.subscriber_url, ReceiptHandle=message["ReceiptHandle"]
                )


@dataclass
class Workload:
    stack_name: str
    group_name: str
    security_group_id: str
    standalone_instance_id: str


class IsolationWatch:
    """Reads an instance's network interfaces from EC2 while its remediation runs, so isolation is proven
    on the live instance and not inferred after it was nuked."""

    def __init__(self, clients: Clients, instance_id: str, execution_arn: str) -> None:
        self._clients = clients
        self._instance_id = instance_id
        self._execution_arn = execution_arn
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
                time.sleep(0.05)
                continue
            entered = {e.get("stateEnteredEventDetails", {}).get("name") for e in events}
            if "StartSnapshots" in entered and "Nuke" not in entered:
                self.observed = self._groups()
                return
            if "Nuke" in entered:
                return  # too late to look: the check will say so
            time.sleep(0.05)

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


# ---------------------------------------------------------------------------- the drill
class Drill:
    """Runs the scenarios against one guard (enforce) and one dry-run guard, on one workload."""

    def __init__(
        self,
        guard: Guard,
        dry_run_guard: Guard | None,
        workload: Workload,
        attacker: Any,
        pipeline: Any,
        emitter: Any,
        config_items: Any,
        progress: Progress,
    ) -> None:
        self.guard = guard
        self.dry_run_guard = dry_run_guard
        self.workload = workload
        self.attacker = attacker
        self.pipeline = pipeline
        self.emitter = emitter
        self.config_items = config_items
        self.progress = progress
        self.clients = guard.clients
        self.touched: set[str] = set()

    # ------------------------------------------------------------------ helpers
    def group_members(self) -> list[str]:
        group = self.clients.autoscaling.describe_auto_scaling_groups(
            AutoScalingGroupNames=[self.workload.group_name]
        )
        return sorted(
            i["InstanceId"]
            for i in group["AutoScalingGroups"][0]["Instances"]
            if i["LifecycleState"] == "InService"
        )

    def fresh_member(self) -> str:
        """An in-service group member that no scenario has touched yet."""
        for instance_id in self.group_members():
            if instance_id not in self.touched:
                self.touched.add(instance_id)
                return instance_id
        raise RuntimeError(f"no untouched in-service member left in {self.workload.group_name}")

    def volumes(self, instance_id: str) -> list[str]:
        """The instance's EBS volumes now, before the attack: what the evidence must cover."""
        mappings = self.instance(instance_id).get("BlockDeviceMappings", [])
        return [m["Ebs"]["VolumeId"] for m in mappings if "Ebs" in m]

    def instance(self, instance_id: str) -> dict[str, Any]:
        reservations = self.clients.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
        return reservations[0]["Instances"][0]  # type: ignore[return-value]

    def wait_for_execution(self, guard: Guard, incident_id: str) -> dict[str, Any]:
        deadline = time.monotonic() + EXECUTION_TIMEOUT_SECONDS
        arn = guard.execution_arn(incident_id)
        while True:
            execution = guard.clients.stepfunctions.describe_execution(executionArn=arn)
            if execution["status"] != "RUNNING" or time.monotonic() > deadline:
                return dict(execution)
            time.sleep(0.1)

    # ------------------------------------------------------------------ verification of one remediation
    def verify_remediation(
        self,
        report: ScenarioReport,
        instance_id: str,
        attack_started: float,
        watch: IsolationWatch | None,
        volumes: list[str],
        replaced_by: str = "auto_scaling_group",
    ) -> None:
        guard = self.guard
        incidents = guard.incidents_for(instance_id)
        if not report.expect("one incident opened", len(incidents) == 1, f"{len(incidents)} incident(s)"):
            return
        incident = incidents[0]
        report.incidents.append(incident.incident_id)
        execution = self.wait_for_execution(guard, incident.incident_id)
        report.expect("remediation succeeded", execution["status"] == "SUCCEEDED", execution["status"])
        incident = guard.ledger.get(incident.incident_id)

        if watch is not None:
            observed = watch.observed
            isolated = (
                observed is not None
                and bool(observed)
                and all(len(groups) == 1 and groups[0] in watch.isolation_group_ids for groups in observed)
            )
            report.expect(
                "isolated (every ENI read from EC2 while quarantined)",
                isolated,
                "never observed before nuke" if observed is None else f"ENI groups {observed}",
            )

        snapshots = self.clients.ec2.describe_snapshots(
            OwnerIds=["self"], Filters=[{"Name": f"tag:{EVIDENCE_TAG}", "Values": [incident.incident_id]}]
        )["Snapshots"]
        report.expect(
            "snapshots completed for every volume",
            bool(snapshots)
            and all(s["State"] == "completed" for s in snapshots)
            and bool(volumes)
            and {s["VolumeId"] for s in snapshots} >= set(volumes),
            f"{len(snapshots)} snapshot(s) for {len(volumes)} volume(s)",
        )

        manifest_key = f"incidents/{incident.incident_id}/manifest.json"
        try:
            body = self.clients.s3.get_object(Bucket=guard.outputs["EvidenceBucketName"], Key=manifest_key)[
                "Body"
            ]
            digest = hashlib.sha256(body.read()).hexdigest()
            recorded = json.dumps(incident.details.get("evidence_complete", {}))
            report.expect("manifest stored, SHA-256 as in the ledger", digest in recorded, digest[:16])
        except Exception as exc:
            report.expect("manifest stored, SHA-256 as in the ledger", False, str(exc))

        old_state = self.instance(instance_id)["State"]["Name"]
        report.expect("old instance terminated", old_state in ("shutting-down", "terminated"), old_state)

        if replaced_by == "auto_scaling_group":
            group = self.clients.autoscaling.describe_auto_scaling_groups(
                AutoScalingGroupNames=[self.workload.group_name]
            )["AutoScalingGroups"][0]
            healthy = [
                i["InstanceId"]
                for i in group["Instances"]
                if i["LifecycleState"] == "InService" and i["HealthStatus"] == "Healthy"
            ]
            report.expect(
                "group back to desired capacity with fresh instances",
                len(healthy) >= group["DesiredCapacity"] and instance_id not in healthy,
                f"{len(healthy)}/{group['DesiredCapacity']} healthy",
            )
        else:
            resource = self.clients.cloudformation.describe_stack_resource(
                StackName=self.workload.stack_name, LogicalResourceId="StandaloneServer"
            )["StackResourceDetail"]
            new_id = resource["PhysicalResourceId"]
            new_state = self.instance(new_id)["State"]["Name"] if new_id != instance_id else "same instance"
            report.expect(
                "stack replaced the instance",
                new_id != instance_id and new_state == "running",
                f"{new_id}: {new_state}",
            )

        alerts = [a for a in guard.alerts() if a.get("incident_id") == incident.incident_id]
        stages = [a["stage"] for a in alerts]
        report.expect(
            "alerts received by a subscriber (detected, contained, closed)",
            {"detected", "contained", "closed"} <= set(stages),
            ", ".join(stages) or "none",
        )
        report.timeline_ms = timeline(incident, alerts, attack_started)

    # ------------------------------------------------------------------ scenarios
    def port_opened(self, report: ScenarioReport) -> None:
        members = self.group_members()
        self.touched.update(members)
        volumes = {i: self.volumes(i) for i in [*members, self.workload.standalone_instance_id]}
        started = time.time()
        ec2 = self.emitter.session(self.attacker).client("ec2")
        ec2.authorize_security_group_ingress(
            GroupId=self.workload.security_group_id,
            IpPermissions=[
                {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
            ],
        )
        targets = [*members, self.workload.standalone_instance_id]
        report.expect(
            "the group change reaches every immutable instance using it",
            all(self.guard.incidents_for(i) for i in targets),
            f"{sum(1 for i in targets if self.guard.incidents_for(i))}/{len(targets)} with an incident",
        )
        watch_target = members[0]
        incident = self.guard.incidents_for(watch_target)
        watch = IsolationWatch(self.clients, watch_target, self.guard.execution_arn(incident[0].incident_id))
        with watch:
            self.verify_remediation(report, watch_target, started, watch, volumes[watch_target])
        for other in members[1:]:
            sub = ScenarioReport("", "")
            self.verify_remediation(sub, other, started, None, volumes[other])
            report.expect(
                f"{other} remediated too", sub.passed, "; ".join(c.name for c in sub.checks if not c.passed)
            )
            report.incidents += sub.incidents
        standalone = ScenarioReport("", "")
        standalone_id = self.workload.standalone_instance_id
        self.verify_remediation(
            standalone, standalone_id, started, None, volumes[standalone_id], "cloudformation"
        )
        report.checks += [Check(f"standalone: {c.name}", c.passed, c.detail) for c in standalone.checks]
        report.incidents += standalone.incidents
        rules = self.clients.ec2.describe_security_groups(GroupIds=[self.workload.security_group_id])
        open_to_world = [
            p
            for p in rules["SecurityGroups"][0]["IpPermissions"]
            if p.get("FromPort") == 22 and any(r.get("CidrIp") == "0.0.0.0/0" for r in p.get("IpRanges", []))
        ]
        report.expect(
            "offending rule revoked from the group", not open_to_world, f"{len(open_to_world)} left"
        )

    def _instance_attack(self, report: ScenarioReport, attack: Callable[[str], None]) -> None:
        instance_id = self.fresh_member()
        volumes = self.volumes(instance_id)
        started = time.time()
        attack(instance_id)
        incidents = self.guard.incidents_for(instance_id)
        watch = (
            IsolationWatch(self.clients, instance_id, self.guard.execution_arn(incidents[0].incident_id))
            if incidents
            else None
        )
        if watch is None:
            report.expect("one incident opened", False, "no incident")
            return
        with watch:
            self.verify_remediation(report, instance_id, started, watch, volumes)

    def ssh_key_pushed(self, report: ScenarioReport) -> None:
        def attack(instance_id: str) -> None:
            self.emitter.emit(
                self.attacker,
                "ec2-instance-connect.amazonaws.com",
                "SendSSHPublicKey",
                {
                    "instanceId": instance_id,
                    "instanceOSUser": "ec2-user",
                    "sshPublicKey": "ssh-ed25519 AAAA attacker",
                },
            )

        self._instance_attack(report, attack)

    def shell_opened(self, report: ScenarioReport) -> None:
        def attack(instance_id: str) -> None:
            self.emitter.emit(self.attacker, "ssm.amazonaws.com", "StartSession", {"target": instance_id})

        self._instance_attack(report, attack)

    def file_changed(self, report: ScenarioReport) -> None:
        def attack(instance_id: str) -> None:
            self.guard.deliver(self.config_items.file_changed(instance_id, "/etc/ssh/sshd_config", size=3311))

        self._instance_attack(report, attack)

    def allow_listed(self, report: ScenarioReport) -> None:
        members = self.group_members()
        alerts_before = len(self.guard.alerts())
        executions_before = set(self.guard.executions())
        incidents_before = {i.incident_id for i in self.guard.ledger.list_incidents(limit=1000)}
        ec2 = self.emitter.session(self.pipeline).client("ec2")
        ec2.authorize_security_group_ingress(
            GroupId=self.workload.security_group_id,
            IpPermissions=[
                {
                    "IpProtocol": "tcp",
                    "FromPort": 8443,
                    "ToPort": 8443,
                    "IpRanges": [{"CidrIp": "10.42.0.0/16"}],
                }
            ],
        )
        new_incidents = {
            i.incident_id for i in self.guard.ledger.list_incidents(limit=1000)
        } - incidents_before
        report.expect("no incident opened", not new_incidents, ", ".join(sorted(new_incidents)))
        report.expect("no remediation started", set(self.guard.executions()) == executions_before)
        states = {m: self.instance(m)["State"]["Name"] for m in members}
        report.expect(
            "instances untouched and running", all(s == "running" for s in states.values()), str(states)
        )
        rules = self.clients.ec2.describe_security_groups(GroupIds=[self.workload.security_group_id])
        kept = any(p.get("FromPort") == 8443 for p in rules["SecurityGroups"][0]["IpPermissions"])
        report.expect("the pipeline's rule is kept", kept)
        report.expect("no alert sent", len(self.guard.alerts()) == alerts_before)

    def delivered_twice(self, report: ScenarioReport) -> None:
        instance_id = self.fresh_member()
        volumes = self.volumes(instance_id)
        started = time.time()
        # The attacker lets the server route others' traffic (a real call, recorded by CloudTrail)...
        ec2 = self.emitter.session(self.attacker).client("ec2")
        ec2.modify_instance_attribute(InstanceId=instance_id, SourceDestCheck={"Value": False})
        self.guard.deliver(self.emitter.events[-1])  # ...EventBridge delivers it a second time...
        changed = {"Configuration.SourceDestCheck": {"changeType": "UPDATE"}}
        config_report = self.config_items.instance_changed(self.instance(instance_id), changed)
        matched = self.guard.deliver(config_report)  # ...and Config reports it too
        report.expect(
            "Config's report reached Detect", bool(matched), ", ".join(matched) or "no rule matched"
        )
        incidents = self.guard.incidents_for(instance_id)
        report.expect("exactly one incident", len(incidents) == 1, f"{len(incidents)} incident(s)")
        if incidents:
            names = [n for n in self.guard.executions() if n == incidents[0].incident_id]
            report.expect("exactly one remediation", len(names) == 1, f"{len(names)} execution(s)")
            # Config's report either joins the open incident or, once Contain has tagged the instance, is
            # recognised as our own quarantine: both are right, and neither opens a second incident.
            self.verify_remediation(report, instance_id, started, None, volumes)
            report.checks = [c for c in report.checks if c.name != "one incident opened"]

    def dry_run(self, report: ScenarioReport) -> None:
        guard = self.dry_run_guard
        if guard is None:
            report.expect("dry-run guard deployed", False)
            return
        instance_id = self.fresh_member()
        before = self.instance(instance_id)
        groups_before = sorted(g["GroupId"] for eni in before["NetworkInterfaces"] for g in eni["Groups"])
        event = self.emitter.record(
            self.attacker, "ssm.amazonaws.com", "StartSession", {"target": instance_id}
        )
        guard.deliver(event)
        incidents = guard.incidents_for(instance_id)
        report.expect(
            "decided and recorded as DRY_RUN",
            len(incidents) == 1 and incidents[0].status.value == "DRY_RUN",
            ", ".join(i.status.value for i in incidents) or "no incident",
        )
        if incidents:
            report.incidents.append(incidents[0].incident_id)
            report.expect("what would be done is recorded", bool(incidents[0].details.get("would_do")))
        alerts = guard.alerts()
        report.expect(
            "alerted as dry-run",
            any(a["mode"] == "dry-run" and a["stage"] == "detected" for a in alerts),
            ", ".join(f"{a['stage']}/{a['mode']}" for a in alerts) or "no alert",
        )
        report.expect("no remediation started", guard.executions() == [])
        after = self.instance(instance_id)
        groups_after = sorted(g["GroupId"] for eni in after["NetworkInterfaces"] for g in eni["Groups"])
        report.expect(
            "instance unchanged (running, same groups, no snapshot)",
            after["State"]["Name"] == "running"
            and groups_after == groups_before
            and not self.clients.ec2.describe_snapshots(
                OwnerIds=["self"], Filters=[{"Name": "tag:immutable-guard:instance", "Values": [instance_id]}]
            )["Snapshots"],
            f"{after['State']['Name']}, groups {groups_after}",
        )
        self.touched.discard(instance_id)  # untouched: later scenarios may use it

    SCENARIOS: tuple[tuple[str, str, str], ...] = (
        ("port-opened", "port 22 opened to 0.0.0.0/0 on the workload's security group", "port_opened"),
        ("ssh-key-pushed", "an SSH key pushed through EC2 Instance Connect", "ssh_key_pushed"),
        ("shell-opened", "an SSM session started on an instance", "shell_opened"),
        ("file-changed", "a watched file changed (SSM Inventory, reported by Config)", "file_changed"),
        ("allow-listed", "the same kind of change by the allow-listed pipeline", "allow_listed"),
        ("delivered-twice", "the same event delivered twice, and Config reporting it too", "delivered_twice"),
        ("dry-run", "dry-run mode: decided and alerted, nothing changed", "dry_run"),
    )

    def run(self, only: list[str] | None = None) -> list[ScenarioReport]:
        reports = []
        for key, title, method in self.SCENARIOS:
            if only and key not in only:
                continue
            report = ScenarioReport(key, title)
            self.progress.say(f"▶ {key}: {title}")
            began = time.monotonic()
            try:
                getattr(self, method)(report)
            except Exception as exc:
                report.error = f"{type(exc).__name__}: {exc}"
                self.progress.say(traceback.format_exc())
            report.seconds = time.monotonic() - began
            for check in report.checks:
                self.progress.say(
                    f"    {'✔' if check.passed else '✘'} {check.name}"
                    + (f"  ({check.detail})" if check.detail else "")
                )
            self.progress.say(f"  {'PASS' if report.passed else 'FAIL'} in {report.seconds:.1f} s")
            reports.append(report)
        return reports


def timeline(
    incident: Incident, alerts: list[dict[str, Any]], attack_started: float
) -> dict[str, int | None]:
    """Milliseconds from the attack to each stage, from the ledger and the alerts received."""

    def ms(iso: str | None) -> int | None:
        if not iso:
            return None
        return int((datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() - attack_started) * 1000)

    sent = sorted(a.get("sent_at", "") for a in alerts if a.get("stage") == "detected")
    stamps = {
        "detected": incident.timeline.get("detected"),
        "alerted": sent[0] if sent else None,
        "contained": incident.timeline.get("contained"),
        "evidence_complete": incident.timeline.get("evidence_complete"),
        "replaced": incident.timeline.get("replaced"),
        "nuked": incident.timeline.get("nuked")
        or incident.timeline.get("stopped")
        or incident.timeline.get("kept"),
    }
    return {stage: ms(stamps[stage]) for stage in STAGES}


def render_table(reports: list[ScenarioReport]) -> str:
    header = f"{'scenario':<17} {'result':<6} " + " ".join(f"{s:>17}" for s in STAGES) + "   checks"
    lines = ["", "Timeline: milliseconds from the attack to each stage", header, "-" * len(header)]
    for r in reports:
        cells = " ".join(
            f"{r.timeline_ms.get(s):>17}" if r.timeline_ms.get(s) is not None else f"{'-':>17}"
            for s in STAGES
        )
        passed = sum(c.passed for c in r.checks)
        lines.append(f"{r.key:<17} {'PASS' if r.passed else 'FAIL':<6} {cells}   {passed}/{len(r.checks)}")
    failed = [r for r in reports if not r.passed]
    lines.append("")
    lines.append(
        f"{len(reports) - len(failed)} passed, {len(failed)} failed" if reports else "no scenario ran"
    )
    for r in failed:
        lines.append(
            f"  {r.key}: "
            + (r.error or "; ".join(f"{c.name} ({c.detail})" for c in r.checks if not c.passed))
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------- local setup
def subscribe_queue(clients: Clients, topic_arn: str, name: str) -> str:
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
    clients.sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=arn)
    return url


def deploy_workload(clients: Clients, repo_root: Path) -> Workload:
    body = (repo_root / "examples" / "golden-workload.yaml").read_text()
    clients.cloudformation.create_stack(StackName=WORKLOAD_STACK, TemplateBody=body)
    stack = clients.cloudformation.describe_stacks(StackName=WORKLOAD_STACK)["Stacks"][0]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    group = clients.cloudformation.describe_stack_resource(
        StackName=WORKLOAD_STACK, LogicalResourceId="AppSecurityGroup"
    )
    return Workload(
        stack_name=WORKLOAD_STACK,
        group_name=outputs["AutoScalingGroupName"],
        security_group_id=group["StackResourceDetail"]["PhysicalResourceId"],
        standalone_instance_id=outputs["StandaloneInstanceId"],
    )


@contextmanager
def local_drill(progress: Progress) -> Iterator[Drill]:
    """The embedded local AWS with two guards (enforce and dry-run) and the golden workload."""
    from immutable_guard.local import EventRouter, LocalAws
    from immutable_guard.local import config_items as config_module
    from immutable_guard.local.trail import Actor, CloudTrailEmitter

    with LocalAws() as aws:
        began = time.monotonic()
        clients = aws.clients()
        account = clients.sts.get_caller_identity()["Account"]
        parameters = {**LOCAL_PARAMETERS, "AllowedPrincipalArns": PIPELINE_ROLE.format(account=account)}
        deployment = aws.deploy(parameters)
        # A second stack in the same region, as a real one would be: it relies on the first one's trail
        # and Config recorder (a region allows one recorder) and inventory association.
        second_stack = {
            "CreateTrail": "false",
            "CreateConfigRecorder": "false",
            "CreateInventoryAssociation": "false",
        }
        dry_deployment = aws.deploy(
            {**parameters, **second_stack, "Mode": "dry-run"}, stack_name="immutable-guard-dry-run"
        )
        progress.say(f"local AWS on {aws.endpoint_url}: template.yaml deployed twice (enforce, dry-run)")
        routers = [EventRouter(deployment, aws.session()), EventRouter(dry_deployment, aws.session())]
        guards = [
            Guard(
                clients,
                dict(d.outputs),
                router.put,
                subscribe_queue(clients, d.outputs["AlertTopicArn"], f"team-{n}"),
            )
            for n, (d, router) in enumerate(zip((deployment, dry_deployment), routers, strict=True))
        ]
        workload = deploy_workload(clients, aws.repo_root)
        progress.say(
            f"golden workload deployed: group {workload.group_name}, "
            f"standalone {workload.standalone_instance_id} "
            f"({time.monotonic() - began:.1f} s)"
        )
        emitter = CloudTrailEmitter(routers[0].put)
        yield Drill(
            guards[0],
            guards[1],
            workload,
            attacker=Actor(arn=ATTACKER_ARN.format(account=account)),
            pipeline=Actor(arn=PIPELINE_SESSION.format(account=account), user_agent="deploy-pipeline/1.0"),
            emitter=emitter,
            config_items=_ConfigItems(config_module, clients),
            progress=progress,
        )


class _ConfigItems:
    """Config notifications as AWS Config would send them for the drill's changes."""

    def __init__(self, module: Any, clients: Clients) -> None:
        self._module = module
        self._clients = clients

    def file_changed(self, instance_id: str, path: str, size: int = 0) -> dict[str, Any]:
        return self._module.file_changed(instance_id, path, size=size)  # type: ignore[no-any-return]

    def instance_changed(self, instance: dict[str, Any], changed: dict[str, Any]) -> dict[str, Any]:
        return self._module.instance_changed(instance, changed)  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------- command
def run_drill_command(args: argparse.Namespace) -> int:
    if args.stack:
        print(
            "immutable-guard drill --stack: running against a deployed stack is not available yet; "
            "run `immutable-guard drill` for the local drill.",
            file=sys.stderr,
        )
        return 2
    from immutable_guard.local.lambda_logs import lambda_logs_to_file

    began = time.monotonic()
    with lambda_logs_to_file("drill") as (terminal, log_path):
        progress = Progress(None if args.json else terminal)
        with local_drill(progress) as drill:
            reports = drill.run(args.scenario)
    progress.say(f"Lambda logs: {log_path}")
    if args.json:
        print(
            json.dumps(
                {
                    "passed": all(r.passed for r in reports) and bool(reports),
                    "seconds": round(time.monotonic() - began, 2),
                    "scenarios": [r.as_dict() for r in reports],
                },
                indent=2,
            )
        )
    else:
        print(render_table(reports))
    return 0 if reports and all(r.passed for r in reports) else 1
