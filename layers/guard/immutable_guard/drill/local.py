"""The drill's world on the embedded local AWS: two guards (enforce and dry-run) deployed from
template.yaml, the golden workload, and an attacker whose calls become CloudTrail records routed
through each guard's own EventBridge rules."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING, Any

import boto3

from immutable_guard.drill.report import Progress
from immutable_guard.drill.scenarios import Drill
from immutable_guard.drill.world import (
    LOCAL_PACE,
    REPLACEABLE_STACK_TAG,
    Guard,
    deploy_workload,
    deploy_workload_role,
    subscribe_queue,
)

if TYPE_CHECKING:
    from immutable_guard.local import EventRouter
    from immutable_guard.local.trail import Actor, CloudTrailEmitter

WORKLOAD_STACK = "golden-workload"
WORKLOAD_ROLE_STACK = "golden-workload-role"
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
    # The workload stack is declared replaceable by its tag (its standalone server is rebuilt by it).
    "ReplaceableStackTagValue": "true",
}


class LocalAttacks:
    """Attacks on the local AWS: calls made through the emitter's sessions, and the calls moto does not
    serve (SSM sessions, Config) recorded as AWS would record them, all delivered to one guard's rules."""

    def __init__(
        self, router: EventRouter, emitter: CloudTrailEmitter, attacker: Actor, pipeline: Actor
    ) -> None:
        from immutable_guard.local import config_items

        self._router = router
        self._emitter = emitter
        self._attacker = attacker
        self._pipeline = pipeline
        self._config_items = config_items

    def attacker(self) -> boto3.Session:
        return self._emitter.session(self._attacker)

    def pipeline(self) -> boto3.Session:
        return self._emitter.session(self._pipeline)

    def push_ssh_key(self, instance_id: str) -> None:
        self._emitter.emit(
            self._attacker,
            "ec2-instance-connect.amazonaws.com",
            "SendSSHPublicKey",
            {
                "instanceId": instance_id,
                "instanceOSUser": "ec2-user",
                "sshPublicKey": "ssh-ed25519 AAAA attacker",
            },
        )

    def open_shell(self, instance_id: str) -> None:
        self._emitter.emit(self._attacker, "ssm.amazonaws.com", "StartSession", {"target": instance_id})

    def change_watched_file(self, instance_id: str, path: str) -> None:
        self._router.put(self._config_items.file_changed(instance_id, path, size=3311))

    def stop_trail(self, name: str) -> None:
        self.attacker().client("cloudtrail").stop_logging(Name=name)

    def deliver_again(self) -> None:
        # The attacker's last call: the trail also holds the guard's own calls, made meanwhile.
        ours = [e for e in self._emitter.events if e["detail"]["userIdentity"]["arn"] == self._attacker.arn]
        self._router.put(ours[-1])

    def report_instance_change(self, instance: dict[str, Any], changed: dict[str, Any]) -> list[str] | None:
        return list(self._router.put(self._config_items.instance_changed(instance, changed)))


@contextmanager
def local_drill(progress: Progress) -> Iterator[Drill]:
    """The embedded local AWS with two guards (enforce and dry-run) and the golden workload."""
    from immutable_guard.local import EventRouter, LocalAws
    from immutable_guard.local.config_recorder import ConfigRecorder
    from immutable_guard.local.trail import Actor, CloudTrailEmitter

    with LocalAws() as aws, ExitStack() as hearing:
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
        attacker = Actor(arn=ATTACKER_ARN.format(account=account))
        pipeline = Actor(arn=PIPELINE_SESSION.format(account=account), user_agent="deploy-pipeline/1.0")
        guards = []
        recorder: ConfigRecorder | None = None
        for n, d in enumerate((deployment, dry_deployment)):
            router = EventRouter(d, aws.session())
            # Each guard hears its own world's CloudTrail; the first stack's Config recorder reports to
            # the first guard (the dry-run guard hears no Config items: its scenario needs none).
            if n == 0:
                recorder = ConfigRecorder(aws.session(), router.put, aws.region, account)
            emitter = CloudTrailEmitter(router.put, aws.region, recorder if n == 0 else None)
            hearing.callback(emitter.hear_functions(d.function_names.values()))
            attacks = LocalAttacks(router, emitter, attacker, pipeline)
            queue_url, _ = subscribe_queue(clients, d.outputs["AlertTopicArn"], f"team-{n}")
            guards.append(Guard(clients, dict(d.outputs), dict(d.parameters), queue_url, attacks, LOCAL_PACE))
        if recorder is not None:
            recorder.start()
        examples = aws.repo_root / "examples"
        # The workload runs as its own CloudFormation service role, as a real golden workload should.
        role_arn = deploy_workload_role(
            clients, (examples / "golden-workload-role.yaml").read_text(), WORKLOAD_ROLE_STACK
        )
        workload = deploy_workload(
            clients,
            (examples / "golden-workload.yaml").read_text(),
            WORKLOAD_STACK,
            tags={REPLACEABLE_STACK_TAG: LOCAL_PARAMETERS["ReplaceableStackTagValue"]},
            role_arn=role_arn,
        )
        if recorder is not None:
            # Config discovers the workload's servers, groups and disks (ResourceDiscovered).
            discovered = recorder.observe()
            progress.say(f"AWS Config recorded {len(discovered)} new resource(s) of the workload")
        progress.say(
            f"golden workload deployed: group {workload.group_name}, "
            f"standalone {workload.standalone_instance_id} "
            f"({time.monotonic() - began:.1f} s)"
        )
        yield Drill(clients, guards[0], guards[1], workload, progress)
