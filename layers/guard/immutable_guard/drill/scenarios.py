"""The drill's scenarios: attacks on a golden-image workload, and proof, read back from the AWS APIs,
that Immutable Guard detected, alerted, contained, preserved evidence, replaced and nuked — or rightly
did nothing. They run unchanged on the embedded local AWS and in a sandbox account (see world.py)."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from typing import Any

import boto3

from immutable_guard.clients import Clients
from immutable_guard.drill.report import Check, Progress, ScenarioReport, ScenarioSkipped, play, timeline
from immutable_guard.drill.world import Attacks, Guard, IsolationWatch, Workload, poll

EVIDENCE_TAG = "immutable-guard:incident"
WATCHED_FILE = "/etc/ssh/sshd_config"

# The drill's scope tag (a stack drilled in an account must use it: see account.preflight).
SCOPE_TAG = ("immutable", "true")

# What the old instance must look like once the remediation is over, per PostEvidenceAction.
FINAL_STATES = {
    "terminate": ("old instance terminated", ("shutting-down", "terminated")),
    "stop": ("old instance stopped", ("stopping", "stopped")),
    "keep": ("old instance kept for forensics", ("running",)),
}


class Drill:
    """Runs the scenarios against an enforcing guard and a dry-run guard, on one workload. A guard that
    is not there (None) makes its scenarios skip, with `missing[mode]` as the reason."""

    def __init__(
        self,
        clients: Clients,
        guard: Guard | None,
        dry_run_guard: Guard | None,
        workload: Workload,
        progress: Progress,
        missing: dict[str, str] | None = None,
    ) -> None:
        self.clients = clients
        self.guard = guard
        self.dry_run_guard = dry_run_guard
        self.workload = workload
        self.progress = progress
        self.missing = missing or {}
        self.touched: set[str] = set()
        self.volumes_seen: set[str] = set()  # every volume an attacked instance had: cleanup's to find

    # ------------------------------------------------------------------ helpers
    def enforcing(self) -> Guard:
        if self.guard is None:
            raise ScenarioSkipped(self.missing.get("enforce", "no guard in enforce mode"))
        return self.guard

    def group_members(self, group_name: str | None = None) -> list[str]:
        group = self.clients.autoscaling.describe_auto_scaling_groups(
            AutoScalingGroupNames=[group_name or self.workload.group_name]
        )
        return sorted(
            i["InstanceId"]
            for i in group["AutoScalingGroups"][0]["Instances"]
            if i["LifecycleState"] == "InService"
        )

    def fresh_member(self, group_name: str | None = None) -> str:
        """An in-service group member that no scenario has touched yet."""
        for instance_id in self.group_members(group_name):
            if instance_id not in self.touched:
                self.touched.add(instance_id)
                return instance_id
        raise RuntimeError(f"no untouched in-service member left in {group_name or self.workload.group_name}")

    def volumes(self, instance_id: str) -> list[str]:
        """The instance's EBS volumes now, before the attack: what the evidence must cover."""
        mappings = self.instance(instance_id).get("BlockDeviceMappings", [])
        volumes = [m["Ebs"]["VolumeId"] for m in mappings if "Ebs" in m]
        self.volumes_seen.update(volumes)
        return volumes

    def instance(self, instance_id: str) -> dict[str, Any]:
        reservations = self.clients.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
        return reservations[0]["Instances"][0]  # type: ignore[return-value]

    def incident_ids(self, guard: Guard) -> set[str]:
        return {i.incident_id for i in guard.ledger.list_incidents(limit=1000)}

    # ------------------------------------------------------------------ verification of one remediation
    def verify_remediation(
        self,
        report: ScenarioReport,
        guard: Guard,
        instance_id: str,
        attack_started: float,
        watch: IsolationWatch | None,
        volumes: list[str],
        replaced_by: str = "auto_scaling_group",
        group_name: str | None = None,
    ) -> None:
        incidents = guard.incidents_for(instance_id)
        if not report.expect("one incident opened", len(incidents) == 1, f"{len(incidents)} incident(s)"):
            return
        incident = incidents[0]
        report.incidents.append(incident.incident_id)
        execution = guard.wait_for_execution(incident.incident_id)
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

        name, states = FINAL_STATES[guard.post_evidence_action]
        if replaced_by == "manual":
            name, states = "old instance left isolated for a person (never nuked)", ("running",)
        old_state = self.instance(instance_id)["State"]["Name"]
        report.expect(name, old_state in states, old_state)

        if replaced_by == "manual":
            # A stack the guard may not update: the reason is recorded and alerted, the stack untouched.
            started = incident.details.get("replacement_started") or {}
            resource = self.clients.cloudformation.describe_stack_resource(
                StackName=self.workload.stack_name, LogicalResourceId="StandaloneServer"
            )["StackResourceDetail"]
            report.expect(
                "left to a person, saying why, the stack untouched",
                started.get("strategy") == "manual"
                and bool(started.get("reason"))
                and resource["PhysicalResourceId"] == instance_id,
                str(started.get("reason") or started),
            )
        elif replaced_by == "auto_scaling_group":
            group = self.clients.autoscaling.describe_auto_scaling_groups(
                AutoScalingGroupNames=[group_name or self.workload.group_name]
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

        expected = ["detected", "contained", "manual_replacement" if replaced_by == "manual" else "closed"]
        wanted = set(expected)

        def stages_of(alerts: list[dict[str, Any]]) -> list[str]:
            return [a["stage"] for a in alerts if a.get("incident_id") == incident.incident_id]

        alerts = guard.wait_for_alerts(lambda received: wanted <= set(stages_of(received)))
        stages = stages_of(alerts)
        report.expect(
            f"alerts received by a subscriber ({', '.join(expected)})",
            wanted <= set(stages),
            ", ".join(stages) or "none",
        )
        ours = [a for a in alerts if a.get("incident_id") == incident.incident_id]
        report.timeline_ms = timeline(incident, ours, attack_started)

    # ------------------------------------------------------------------ scenarios
    def port_opened(self, report: ScenarioReport) -> None:
        guard = self.enforcing()
        members = self.group_members()
        self.touched.update(members)
        standalone_id = self.workload.standalone_instance_id
        targets = [*members, standalone_id]
        volumes = {i: self.volumes(i) for i in targets}
        started = time.time()
        guard.attacks.attacker().client("ec2").authorize_security_group_ingress(
            GroupId=self.workload.security_group_id,
            IpPermissions=[
                {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
            ],
        )
        found = guard.wait_for_incidents(targets)
        reached = [i for i in targets if found[i]]
        report.expect(
            "the group change reaches every immutable instance using it",
            len(reached) == len(targets),
            f"{len(reached)}/{len(targets)} with an incident",
        )
        watch_target = members[0]
        if not found[watch_target]:
            return
        watch = IsolationWatch(
            self.clients,
            watch_target,
            guard.execution_arn(found[watch_target][0].incident_id),
            guard.pace.poll_seconds,
        )
        with watch:
            self.verify_remediation(report, guard, watch_target, started, watch, volumes[watch_target])
        for other in members[1:]:
            sub = ScenarioReport("", "")
            self.verify_remediation(sub, guard, other, started, None, volumes[other])
            report.expect(
                f"{other} remediated too", sub.passed, "; ".join(c.name for c in sub.checks if not c.passed)
            )
            report.incidents += sub.incidents
        standalone = ScenarioReport("", "")
        replaced_by = "cloudformation" if self.workload.stack_replaceable else "manual"
        self.verify_remediation(
            standalone, guard, standalone_id, started, None, volumes[standalone_id], replaced_by
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

    def _instance_attack(self, report: ScenarioReport, attack: Callable[[Attacks, str], None]) -> str | None:
        """Attack a fresh member and verify its remediation; the attacked instance, when one was."""
        guard = self.enforcing()
        instance_id = self.fresh_member()
        volumes = self.volumes(instance_id)
        started = time.time()
        try:
            attack(guard.attacks, instance_id)
        except ScenarioSkipped:
            self.touched.discard(instance_id)
            raise
        incidents = guard.wait_for_incidents([instance_id])[instance_id]
        if not incidents:
            report.expect("one incident opened", False, "no incident")
            return instance_id
        watch = IsolationWatch(
            self.clients, instance_id, guard.execution_arn(incidents[0].incident_id), guard.pace.poll_seconds
        )
        with watch:
            self.verify_remediation(report, guard, instance_id, started, watch, volumes)
        return instance_id

    def spot_behind_nlb(self, report: ScenarioReport) -> None:
        """An SSH key pushed to the Spot server behind the Network Load Balancer: EC2 gives it no
        termination protection, and its connections through the NLB are tracked whatever its groups say."""
        guard = self.enforcing()
        group_name, target_group = self.workload.spot_group_name, self.workload.balanced_target_group_arn
        if not group_name or not target_group:
            raise ScenarioSkipped("the workload has no Spot server behind a Network Load Balancer")
        instance_id = self.fresh_member(group_name)
        instance = self.instance(instance_id)
        report.expect(
            "a Spot instance, registered in the NLB target group",
            instance.get("InstanceLifecycle") == "spot" and instance_id in self.targets_of(target_group),
            f"{instance.get('InstanceLifecycle', 'on-demand')}, targets {self.targets_of(target_group)}",
        )
        volumes = self.volumes(instance_id)
        started = time.time()
        guard.attacks.push_ssh_key(instance_id)
        incidents = guard.wait_for_incidents([instance_id])[instance_id]
        if not incidents:
            report.expect("one incident opened", False, "no incident")
            return
        watch = IsolationWatch(
            self.clients, instance_id, guard.execution_arn(incidents[0].incident_id), guard.pace.poll_seconds
        )
        with watch:
            self.verify_remediation(
                report, guard, instance_id, started, watch, volumes, group_name=group_name
            )
        attributes = {
            a["Key"]: a["Value"]
            for a in self.clients.elbv2.describe_target_group_attributes(TargetGroupArn=target_group)[
                "Attributes"
            ]
        }
        report.expect(
            "left the NLB target group, which closes its connections",
            instance_id not in self.targets_of(target_group)
            and attributes.get("deregistration_delay.connection_termination.enabled") == "true",
            f"connection termination {attributes.get('deregistration_delay.connection_termination.enabled')}",
        )
        if guard.post_evidence_action == "terminate":
            # No termination protection exists for Spot: the volumes outliving the instance are the evidence.
            kept = poll(
                lambda: self.clients.ec2.describe_volumes(Filters=[{"Name": "volume-id", "Values": volumes}])[
                    "Volumes"
                ],
                lambda found: len(found) == len(volumes) and all(v["State"] == "available" for v in found),
                guard.pace.execution_seconds,
                guard.pace.poll_seconds,
            )
            report.expect(
                "its volumes outlived the terminated instance",
                bool(volumes) and len(kept) == len(volumes),
                ", ".join(f"{v['VolumeId']}: {v['State']}" for v in kept) or "none",
            )

    def targets_of(self, target_group_arn: str) -> list[str]:
        health = self.clients.elbv2.describe_target_health(TargetGroupArn=target_group_arn)
        return [d["Target"]["Id"] for d in health["TargetHealthDescriptions"]]

    def ssh_key_pushed(self, report: ScenarioReport) -> None:
        self._instance_attack(report, lambda attacks, instance_id: attacks.push_ssh_key(instance_id))

    def shell_opened(self, report: ScenarioReport) -> None:
        self._instance_attack(report, lambda attacks, instance_id: attacks.open_shell(instance_id))

    def file_changed(self, report: ScenarioReport) -> None:
        self._instance_attack(
            report, lambda attacks, instance_id: attacks.change_watched_file(instance_id, WATCHED_FILE)
        )

    def scope_tag_removed(self, report: ScenarioReport) -> None:
        def strip(attacks: Attacks, instance_id: str) -> None:
            # The workload's scope tag (preflight refuses any other), with its value, as a careful attacker
            # deletes it (EC2 deletes it only if it still has it): the record itself proves the server
            # carried it, whether or not the ledger had seen the server before.
            attacks.attacker().client("ec2").delete_tags(
                Resources=[instance_id], Tags=[{"Key": "immutable", "Value": "true"}]
            )

        instance_id = self._instance_attack(report, strip)
        self._expect_scope_tampered(report, instance_id)

    def forged_quarantine_tag(self, report: ScenarioReport) -> None:
        def forge_then_change(attacks: Attacks, instance_id: str) -> None:
            attacks.attacker().client("ec2").create_tags(
                Resources=[instance_id], Tags=[{"Key": "immutable-guard:state", "Value": "quarantined"}]
            )
            attacks.push_ssh_key(instance_id)  # the change the forged marker was meant to hide

        instance_id = self._instance_attack(report, forge_then_change)
        self._expect_scope_tampered(report, instance_id)

    def _expect_scope_tampered(self, report: ScenarioReport, instance_id: str | None) -> None:
        incidents = self.enforcing().incidents_for(instance_id) if instance_id else []
        report.expect(
            "opened as scope tampering",
            bool(incidents) and all(i.kind == "scope_tampered" for i in incidents),
            ", ".join(i.kind for i in incidents) or "no incident",
        )

    def allow_listed(self, report: ScenarioReport) -> None:
        guard = self.enforcing()
        pipeline = guard.attacks.pipeline()
        members = self.group_members()
        alerts_before = len(guard.alerts())
        executions_before = set(guard.executions())
        incidents_before = self.incident_ids(guard)
        pipeline.client("ec2").authorize_security_group_ingress(
            GroupId=self.workload.security_group_id,
            IpPermissions=[
                {
                    "IpProtocol": "tcp",
                    "FromPort": 8443,
                    "ToPort": 8443,
                    "IpRanges": [{"CidrIp": self.workload.vpc_cidr}],
                }
            ],
        )
        # Nothing may happen; in an account, give the event time to arrive before believing it.
        time.sleep(guard.pace.quiet_seconds)
        watched = f"watched {guard.pace.quiet_seconds:.0f} s" if guard.pace.quiet_seconds else ""
        new_incidents = self.incident_ids(guard) - incidents_before
        report.expect("no incident opened", not new_incidents, ", ".join(sorted(new_incidents)) or watched)
        report.expect("no remediation started", set(guard.executions()) == executions_before)
        states = {m: self.instance(m)["State"]["Name"] for m in members}
        report.expect(
            "instances untouched and running", all(s == "running" for s in states.values()), str(states)
        )
        rules = self.clients.ec2.describe_security_groups(GroupIds=[self.workload.security_group_id])
        kept = any(p.get("FromPort") == 8443 for p in rules["SecurityGroups"][0]["IpPermissions"])
        report.expect("the pipeline's rule is kept", kept)
        report.expect("no alert sent", len(guard.alerts()) == alerts_before)

    def delivered_twice(self, report: ScenarioReport) -> None:
        guard = self.enforcing()
        instance_id = self.fresh_member()
        volumes = self.volumes(instance_id)
        started = time.time()
        # The attacker lets the server route others' traffic (a real call, recorded by CloudTrail)...
        guard.attacks.attacker().client("ec2").modify_instance_attribute(
            InstanceId=instance_id, SourceDestCheck={"Value": False}
        )
        guard.attacks.deliver_again()  # ...delivered to Detect a second time...
        changed = {"Configuration.SourceDestCheck": {"changeType": "UPDATE"}}
        matched = guard.attacks.report_instance_change(self.instance(instance_id), changed)
        if matched is not None:  # ...and Config reports it too
            report.expect(
                "Config's report reached Detect", bool(matched), ", ".join(matched) or "no rule matched"
            )
        incidents = guard.wait_for_incidents([instance_id])[instance_id]
        report.expect("exactly one incident", len(incidents) == 1, f"{len(incidents)} incident(s)")
        if not incidents:
            return
        names = [n for n in guard.executions() if n == incidents[0].incident_id]
        report.expect("exactly one remediation", len(names) == 1, f"{len(names)} execution(s)")
        # Config's report either joins the open incident or, once Contain has tagged the instance, is
        # recognised as our own quarantine: both are right, and neither opens a second incident.
        self.verify_remediation(report, guard, instance_id, started, None, volumes)
        report.checks = [c for c in report.checks if c.name != "one incident opened"]
        # Deliveries that arrive late (minutes, in an account) must not have opened another one either.
        after = guard.incidents_for(instance_id)
        report.expect("still one incident at the end", len(after) == 1, f"{len(after)} incident(s)")

    def trail_stopped(self, report: ScenarioReport) -> None:
        guard = self.enforcing()
        trail = guard.outputs.get("TrailName")
        if not trail:
            raise ScenarioSkipped("the stack made no trail (CreateTrail=false)")
        incidents_before = self.incident_ids(guard)
        executions_before = set(guard.executions())
        guard.attacks.stop_trail(trail)
        try:

            def critical(alerts: list[dict[str, Any]]) -> bool:
                return any(
                    a.get("kind") == "detection_disabled" and trail in a.get("summary", "") for a in alerts
                )

            alerts = guard.wait_for_alerts(critical)
            report.expect(
                "alerted as critical: the guard may go deaf",
                any(critical([a]) and a.get("severity") == "critical" for a in alerts),
                ", ".join(f"{a.get('kind')}/{a.get('severity')}" for a in alerts) or "no alert",
            )
            report.expect("no incident opened", self.incident_ids(guard) == incidents_before)
            report.expect("no remediation started", set(guard.executions()) == executions_before)
            status = self.clients.cloudtrail.get_trail_status(Name=trail)
            report.expect("the trail really stopped (read from CloudTrail)", status["IsLogging"] is False)
        finally:
            # The operator's answer, so later scenarios (and the account) are heard again.
            self.clients.cloudtrail.start_logging(Name=trail)

    def dry_run(self, report: ScenarioReport) -> None:
        guard = self.dry_run_guard
        if guard is None:
            raise ScenarioSkipped(self.missing.get("dry-run", "no guard in dry-run mode"))
        instance_id = self.fresh_member()
        before = self.instance(instance_id)
        groups_before = sorted(g["GroupId"] for eni in before["NetworkInterfaces"] for g in eni["Groups"])
        executions_before = set(guard.executions())
        try:
            guard.attacks.push_ssh_key(instance_id)
        except ScenarioSkipped:
            self.touched.discard(instance_id)
            raise
        incidents = guard.wait_for_incidents([instance_id])[instance_id]
        report.expect(
            "decided and recorded as DRY_RUN",
            len(incidents) == 1 and incidents[0].status.value == "DRY_RUN",
            ", ".join(i.status.value for i in incidents) or "no incident",
        )
        if incidents:
            report.incidents.append(incidents[0].incident_id)
            report.expect("what would be done is recorded", bool(incidents[0].details.get("would_do")))

        def dry_run_alert(alerts: list[dict[str, Any]]) -> bool:
            return any(a["mode"] == "dry-run" and a["stage"] == "detected" for a in alerts)

        alerts = guard.wait_for_alerts(dry_run_alert)
        report.expect(
            "alerted as dry-run",
            dry_run_alert(alerts),
            ", ".join(f"{a['stage']}/{a['mode']}" for a in alerts) or "no alert",
        )
        report.expect("no remediation started", set(guard.executions()) == executions_before)
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

    # ------------------------------------------------------------------ what AWS Config reports too
    def nothing_happened(
        self,
        report: ScenarioReport,
        guard: Guard,
        incidents_before: set[str],
        executions_before: set[str],
        alerts_before: int,
    ) -> None:
        """The checks of a benign change: no incident, no remediation, no alert, once the quiet time is over
        (in an account, Config's item arrives minutes after the change)."""
        time.sleep(guard.pace.quiet_seconds)
        watched = f"watched {guard.pace.quiet_seconds:.0f} s" if guard.pace.quiet_seconds else ""
        new_incidents = self.incident_ids(guard) - incidents_before
        report.expect("no incident opened", not new_incidents, ", ".join(sorted(new_incidents)) or watched)
        report.expect("no remediation started", set(guard.executions()) == executions_before)
        report.expect("no alert sent", len(guard.alerts()) == alerts_before)

    def groups_of(self, instance_id: str) -> list[str]:
        """The security groups of the instance's network interfaces, read from EC2."""
        instance = self.instance(instance_id)
        return sorted({g["GroupId"] for eni in instance.get("NetworkInterfaces", []) for g in eni["Groups"]})

    def scale_out(self, report: ScenarioReport) -> None:
        guard = self.enforcing()
        alerts_before = len(guard.alerts())
        executions_before = set(guard.executions())
        incidents_before = self.incident_ids(guard)
        members_before = set(self.group_members())
        group = self.clients.autoscaling.describe_auto_scaling_groups(
            AutoScalingGroupNames=[self.workload.group_name]
        )["AutoScalingGroups"][0]
        # Anyone's session, not an allow-listed one: a new server is not a changed server, whoever adds it.
        guard.attacks.attacker().client("autoscaling").update_auto_scaling_group(
            AutoScalingGroupName=self.workload.group_name,
            MaxSize=group["MaxSize"] + 1,
            DesiredCapacity=group["DesiredCapacity"] + 1,
        )
        joined = poll(
            lambda: sorted(set(self.group_members()) - members_before),
            bool,
            guard.pace.execution_seconds,
            guard.pace.poll_seconds,
        )
        report.expect("a new server joined the group", bool(joined), ", ".join(joined) or "none")
        self.nothing_happened(report, guard, incidents_before, executions_before, alerts_before)
        states = {i: self.instance(i)["State"]["Name"] for i in joined}
        report.expect(
            "the new server is running, in the workload's group only",
            bool(joined)
            and all(s == "running" for s in states.values())
            and all(self.groups_of(i) == [self.workload.security_group_id] for i in joined),
            str(states),
        )

    def hand_launched(self, session: boto3.Session) -> str:
        """An immutable server launched by hand beside the group, like its members: no group or stack
        replaces it, so its remediation stops at contained and preserved (never nuked)."""
        member = self.instance(self.group_members()[0])
        launched = session.client("ec2").run_instances(
            ImageId=member["ImageId"],
            InstanceType=member["InstanceType"],
            SubnetId=member["SubnetId"],
            SecurityGroupIds=[self.workload.security_group_id],
            MinCount=1,
            MaxCount=1,
            TagSpecifications=[
                {
                    "ResourceType": "instance",
                    "Tags": [
                        {"Key": SCOPE_TAG[0], "Value": SCOPE_TAG[1]},
                        {"Key": "Name", "Value": "by-hand"},
                    ],
                }
            ],
        )
        instance_id = str(launched["Instances"][0]["InstanceId"])
        self.touched.add(instance_id)  # the account's cleanup terminates it
        return instance_id

    def contained_by_hand(self, report: ScenarioReport, guard: Guard) -> tuple[str, str, list[str]] | None:
        """A server launched by hand gets an SSH key pushed and is contained, left for a person (no group
        or stack replaces it): (instance, incident, its groups before), or None when that failed."""
        instance_id = self.hand_launched(guard.attacks.attacker())
        poll(
            lambda: self.instance(instance_id)["State"]["Name"],
            lambda state: state == "running",
            guard.pace.execution_seconds,
            guard.pace.poll_seconds,
        )
        groups_before = self.groups_of(instance_id)
        self.volumes(instance_id)
        guard.attacks.push_ssh_key(instance_id)
        incidents = guard.wait_for_incidents([instance_id])[instance_id]
        if not report.expect("one incident opened", len(incidents) == 1, f"{len(incidents)} incident(s)"):
            return None
        incident_id = incidents[0].incident_id
        report.incidents.append(incident_id)
        execution = guard.wait_for_execution(incident_id)
        contained = guard.ledger.get(incident_id)
        if not report.expect(
            "contained, evidence kept, left for a person to replace",
            "contained" in contained.timeline and execution["status"] == "SUCCEEDED",
            f"{contained.status.value}, execution {execution['status']}",
        ):
            return None
        return instance_id, incident_id, groups_before

    def released(self, report: ScenarioReport) -> None:
        guard = self.enforcing()
        contained = self.contained_by_hand(report, guard)  # the team will judge it a false positive
        if contained is None:
            return
        instance_id, incident_id, groups_before = contained
        alerts_before = len(guard.alerts())
        executions_before = set(guard.executions())
        incidents_before = self.incident_ids(guard)
        # What `immutable-guard release INCIDENT_ID` does.
        response = self.clients.lambda_.invoke(
            FunctionName=guard.outputs["ReleaseFunctionName"],
            Payload=json.dumps({"incident_id": incident_id}).encode(),
        )
        answer = response["Payload"].read().decode()
        if not report.expect("released", "FunctionError" not in response, answer[:300]):
            return
        time.sleep(guard.pace.quiet_seconds)
        watched = f"watched {guard.pace.quiet_seconds:.0f} s" if guard.pace.quiet_seconds else ""
        new_incidents = self.incident_ids(guard) - incidents_before
        report.expect(
            "not quarantined again: no incident opened",
            not new_incidents,
            ", ".join(sorted(new_incidents)) or watched,
        )
        report.expect("no remediation started", set(guard.executions()) == executions_before)
        report.expect(
            "incident released in the ledger",
            guard.ledger.get(incident_id).status.value == "RELEASED",
            guard.ledger.get(incident_id).status.value,
        )
        instance = self.instance(instance_id)
        tags = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
        report.expect(
            "the server stays running, out of isolation (read from EC2)",
            instance["State"]["Name"] == "running" and self.groups_of(instance_id) == groups_before,
            f"{instance['State']['Name']}, groups {self.groups_of(instance_id)}",
        )
        report.expect(
            "quarantine tags removed",
            not any(key.startswith("immutable-guard:") for key in tags),
            ", ".join(k for k in tags if k.startswith("immutable-guard:")) or "none",
        )
        alerts = guard.wait_for_alerts(
            lambda received: any(a.get("stage") == "released" for a in received[alerts_before:])
        )
        # The incident's own alerts only (its "contained" may still be on its way): no new one.
        others = [a for a in alerts[alerts_before:] if a.get("incident_id") != incident_id]
        stages = [str(a.get("stage")) for a in alerts[alerts_before:] if a.get("incident_id") == incident_id]
        report.expect("the release was alerted", "released" in stages, ", ".join(stages) or "none")
        report.expect(
            "no other alert sent",
            not others,
            ", ".join(f"{a.get('incident_id')}/{a.get('stage')}" for a in others) or "none",
        )

    def quarantine_undone(self, report: ScenarioReport) -> None:
        guard = self.enforcing()
        contained = self.contained_by_hand(report, guard)
        if contained is None:
            return
        instance_id, _, _ = contained
        isolation = self.groups_of(instance_id)  # the isolation group alone
        attacker = guard.attacks.attacker()
        alerts_before = len(guard.alerts())
        incidents_before = self.incident_ids(guard)
        # The attacker undoes the quarantine with their own credentials: SSH opened on the isolation group
        # (every quarantined server of the VPC sits in it), and the interface moved back to the workload's
        # group.
        ec2 = attacker.client("ec2")
        ec2.authorize_security_group_ingress(
            GroupId=isolation[0],
            IpPermissions=[
                {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
            ],
        )
        [eni] = self.instance(instance_id)["NetworkInterfaces"]
        ec2.modify_network_interface_attribute(
            NetworkInterfaceId=eni["NetworkInterfaceId"], Groups=[self.workload.security_group_id]
        )

        def isolation_rules() -> int:
            group = self.clients.ec2.describe_security_groups(GroupIds=isolation)["SecurityGroups"][0]
            return len(group["IpPermissions"]) + len(group["IpPermissionsEgress"])

        after = poll(
            lambda: (self.groups_of(instance_id), isolation_rules()),
            lambda seen: seen == (isolation, 0),
            guard.pace.execution_seconds,
            guard.pace.poll_seconds,
        )
        report.expect(
            "contained again: only the isolation group, which has no rule again (read from EC2)",
            after == (isolation, 0),
            f"groups {after[0]}, {after[1]} rule(s) on the isolation group",
        )
        new_incidents = self.incident_ids(guard) - incidents_before
        report.expect(
            "no other incident opened", not new_incidents, ", ".join(sorted(new_incidents)) or "none"
        )
        alerts = guard.wait_for_alerts(
            lambda received: sum(a.get("stage") == "tampered" for a in received[alerts_before:]) >= 2
        )
        # One alert per change; the isolation group is shared by every quarantined server of the VPC, so
        # that change's alert may name other incidents' servers too.
        tampered = [a for a in alerts[alerts_before:] if a.get("stage") == "tampered"]
        report.expect(
            "the team was told, critical, once per change",
            len(tampered) == 2
            and all(
                a.get("severity") == "critical" and instance_id in a.get("instance_ids", []) for a in tampered
            ),
            ", ".join(
                f"{a.get('event', {}).get('name')}/{a.get('severity')}/{','.join(a.get('instance_ids', []))}"
                for a in tampered
            )
            or "none",
        )

    def pipeline_via_config(self, report: ScenarioReport) -> None:
        guard = self.enforcing()
        pipeline = guard.attacks.pipeline()
        instance_id = self.fresh_member()
        alerts_before = len(guard.alerts())
        executions_before = set(guard.executions())
        incidents_before = self.incident_ids(guard)
        instance = self.instance(instance_id)
        default_group = self.clients.ec2.describe_security_groups(
            Filters=[
                {"Name": "vpc-id", "Values": [instance["VpcId"]]},
                {"Name": "group-name", "Values": ["default"]},
            ]
        )["SecurityGroups"][0]["GroupId"]
        wanted = sorted({*self.groups_of(instance_id), default_group})
        # The pipeline puts the server in one more group: CloudTrail records its call, and Config its echo
        # (the instance's groups changed, no actor in the item, the call in its relatedEvents).
        pipeline.client("ec2").modify_instance_attribute(InstanceId=instance_id, Groups=wanted)
        self.nothing_happened(report, guard, incidents_before, executions_before, alerts_before)
        state = self.instance(instance_id)["State"]["Name"]
        report.expect(
            "the pipeline's change stays (read from EC2)",
            state == "running" and self.groups_of(instance_id) == wanted,
            f"{state}, groups {self.groups_of(instance_id)}",
        )

    SCENARIOS: tuple[tuple[str, str, str], ...] = (
        ("port-opened", "port 22 opened to 0.0.0.0/0 on the workload's security group", "port_opened"),
        ("ssh-key-pushed", "an SSH key pushed through EC2 Instance Connect", "ssh_key_pushed"),
        (
            "spot-behind-nlb",
            "an SSH key pushed to a Spot server behind a Network Load Balancer",
            "spot_behind_nlb",
        ),
        ("shell-opened", "an SSM session started on an instance", "shell_opened"),
        ("file-changed", "a watched file changed (SSM Inventory, reported by Config)", "file_changed"),
        ("allow-listed", "the same kind of change by the allow-listed pipeline", "allow_listed"),
        ("delivered-twice", "the same event delivered twice, and Config reporting it too", "delivered_twice"),
        ("trail-stopped", "the trail the guard listens through stopped (StopLogging)", "trail_stopped"),
        ("dry-run", "dry-run mode: decided and alerted, nothing changed", "dry_run"),
        ("scope-tag-removed", "the immutable tag deleted from a server (DeleteTags)", "scope_tag_removed"),
        (
            "forged-quarantine-tag",
            "immutable-guard:state=quarantined set by hand on a healthy server, then an SSH key pushed",
            "forged_quarantine_tag",
        ),
        ("scale-out", "a new server joins the group (Config discovers it): nothing happens", "scale_out"),
        ("released", "a released server (Config reports the release) is not quarantined again", "released"),
        (
            "quarantine-undone",
            "an attacker opens SSH on the isolation group and moves the interface back: contained again",
            "quarantine_undone",
        ),
        (
            "pipeline-via-config",
            "the allow-listed pipeline changes a server's groups, and Config reports it: nothing happens",
            "pipeline_via_config",
        ),
    )

    def run(self, only: list[str] | None = None) -> list[ScenarioReport]:
        return [
            play(key, title, getattr(self, method), self.progress)
            for key, title, method in self.SCENARIOS
            if not only or key in only
        ]
