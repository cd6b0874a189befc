"""The drill's world in a sandbox account: the deployed stack named on the command line, a disposable
copy of the golden workload created for this run, and the caller as the attacker. CloudTrail carries the
caller's calls to the stack's own EventBridge rules, so what is proven is the deployment itself.
Everything the drill created is deleted at the end, whatever happened."""

from __future__ import annotations

import base64
import json
import os
import secrets
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError, WaiterError

from immutable_guard.clients import Clients
from immutable_guard.detection.policy import principal_key
from immutable_guard.drill.report import Progress, ScenarioSkipped
from immutable_guard.drill.scenarios import EVIDENCE_TAG, Drill
from immutable_guard.drill.world import (
    ACCOUNT_PACE,
    REPLACEABLE_STACK_TAG,
    Guard,
    Pace,
    Workload,
    deploy_workload,
    deploy_workload_role,
    poll,
    subscribe_queue,
)
from immutable_guard.errors import GuardError
from immutable_guard.remediation.quarantine import GROUP_NAMES
from immutable_guard.stack import GuardStack, read_stack
from immutable_guard.template import find_template

DRILL_TAG = "immutable-guard:drill"
REQUIRED_OUTPUTS = (
    "AlertTopicArn",
    "IncidentLedgerName",
    "EvidenceBucketName",
    "RemediationStateMachineArn",
    "DetectFunctionName",
)
# The incidents a full drill opens in enforce mode: three behind the opened port, one per instance attack.
INCIDENTS_PER_DRILL = 9


def read_guard_stack(clients: Clients, name: str) -> GuardStack:
    stack = read_stack(clients.cloudformation, name, clients.region)
    missing = [key for key in REQUIRED_OUTPUTS if key not in stack.outputs]
    if missing:
        raise GuardError(
            f"stack {name} lacks the outputs {', '.join(missing)}: is it a stack of template.yaml?"
        )
    return stack


def preflight(stack: GuardStack, caller_arn: str) -> dict[str, str]:
    """Refuse a drill that cannot prove anything; return the reasons some scenarios will skip."""
    allowed = [a for a in stack.parameters.get("AllowedPrincipalArns", "").split(",") if a.strip()]
    if principal_key(caller_arn) in {principal_key(a) for a in allowed}:
        raise GuardError(
            f"you ({caller_arn}) are allow-listed by stack {stack.name}: the guard rightly ignores your "
            "changes, so the drill would prove nothing. Run it as a principal that is not allow-listed."
        )
    tag = (stack.parameters.get("ScopeTagKey", "immutable"), stack.parameters.get("ScopeTagValue", "true"))
    if tag != ("immutable", "true"):
        raise GuardError(
            f"stack {stack.name} protects instances tagged {tag[0]}={tag[1]}; the drill's workload "
            "(examples/golden-workload.yaml) is tagged immutable=true, so the guard would ignore it."
        )
    mode = stack.parameters.get("Mode", "dry-run")
    if mode == "enforce":
        return {
            "dry-run": f"stack {stack.name} enforces; this scenario needs a stack deployed with Mode=dry-run"
        }
    if mode == "dry-run":
        return {
            "enforce": f"stack {stack.name} is in dry-run mode (it decides and alerts, changes nothing); "
            "this scenario needs a sandbox stack deployed with Mode=enforce"
        }
    raise GuardError(f"stack {stack.name} is in {mode} mode: it only alerts, there is nothing to drill")


def throwaway_public_key() -> str:
    """An ed25519 public key in OpenSSH form whose private half was never made: pushing it proves the
    guard reacts, and nobody can log in with it."""
    kind = b"ssh-ed25519"
    blob = struct.pack(">I", len(kind)) + kind + struct.pack(">I", 32) + secrets.token_bytes(32)
    return f"ssh-ed25519 {base64.b64encode(blob).decode()} immutable-guard-drill"


class AccountAttacks:
    """The caller's own calls, heard through the account's CloudTrail; the pipeline is an allow-listed
    role the caller assumes, when one is given."""

    def __init__(
        self, session: boto3.Session, clients: Clients, detect_function: str, pipeline_role: str | None
    ) -> None:
        self._session = session
        self._clients = clients
        self._detect_function = detect_function
        self._pipeline_role = pipeline_role
        self._last_call: dict[str, Any] | None = None
        from immutable_guard.local.trail import remember_params

        session.events.register("before-parameter-build.*.*", remember_params)
        session.events.register("after-call.*.*", self._remember_call)

    def attacker(self) -> boto3.Session:
        return self._session

    def pipeline(self) -> boto3.Session:
        if not self._pipeline_role:
            raise ScenarioSkipped(
                "needs --pipeline-role ARN: a role listed in the stack's AllowedPrincipalArns "
                "that you may assume"
            )
        credentials = self._session.client("sts").assume_role(
            RoleArn=self._pipeline_role, RoleSessionName="immutable-guard-drill"
        )["Credentials"]
        return boto3.Session(
            aws_access_key_id=credentials["AccessKeyId"],
            aws_secret_access_key=credentials["SecretAccessKey"],
            aws_session_token=credentials["SessionToken"],
            region_name=self._session.region_name,
        )

    def push_ssh_key(self, instance_id: str) -> None:
        self._session.client("ec2-instance-connect").send_ssh_public_key(
            InstanceId=instance_id, InstanceOSUser="ec2-user", SSHPublicKey=throwaway_public_key()
        )

    def open_shell(self, instance_id: str) -> None:
        ssm = self._session.client("ssm")
        try:
            found = ssm.describe_instance_information(
                Filters=[{"Key": "InstanceIds", "Values": [instance_id]}]
            )["InstanceInformationList"]
        except (ClientError, BotoCoreError) as exc:
            reason = str(exc).splitlines()[0][:200]
            raise ScenarioSkipped(
                f"cannot tell whether the SSM agent on {instance_id} is online: {reason}"
            ) from exc
        if not any(i.get("PingStatus") == "Online" for i in found):
            raise ScenarioSkipped(
                f"the SSM agent on {instance_id} is not online (the golden workload has no instance profile "
                "or route to Systems Manager), so no session can start; a failed call is rightly ignored"
            )
        session = ssm.start_session(Target=instance_id)
        ssm.terminate_session(SessionId=session["SessionId"])

    def change_watched_file(self, instance_id: str, path: str) -> None:
        raise ScenarioSkipped(
            "SSM Inventory collects files on its schedule (every 30 minutes at the shortest) and Config "
            "reports the change after that: too slow for a drill. The local drill covers this path."
        )

    def stop_trail(self, name: str) -> None:
        raise ScenarioSkipped(
            "stopping the account's trail would blind the guard for the rest of the drill and leave a gap "
            "in the account's audit record; the local drill covers this path"
        )

    def deliver_again(self) -> None:
        """EventBridge's own duplicate cannot be ordered, so the last call's CloudTrail record is handed to
        the deployed Detect function twice, as a redelivery would: same event, same id."""
        from immutable_guard.local.trail import Actor, CloudTrailEmitter, request_parameters

        call = self._last_call
        if call is None:
            raise RuntimeError("no call to deliver again")
        caller = self._session.client("sts").get_caller_identity()["Arn"]
        emitter = CloudTrailEmitter(lambda event: None, region=self._clients.region)
        model = call["model"]
        event = emitter.record(
            Actor(arn=caller, source_ip="immutable-guard-drill"),
            f"{model.service_model.endpoint_prefix}.amazonaws.com",
            model.name,
            request_parameters(model, call["params"]),
        )
        for _ in range(2):
            response = self._clients.lambda_.invoke(
                FunctionName=self._detect_function, Payload=json.dumps(event).encode()
            )
            if response.get("FunctionError"):
                raise RuntimeError(f"Detect failed on the redelivered event: {response['Payload'].read()!r}")

    def report_instance_change(self, instance: dict[str, Any], changed: dict[str, Any]) -> list[str] | None:
        return None  # the account's own Config recorder reports it

    def _remember_call(self, model: Any, context: Any, http_response: Any, **_: Any) -> None:
        if getattr(http_response, "status_code", 500) < 300 and not model.name.startswith(
            ("Describe", "Get", "List")
        ):
            self._last_call = {"model": model, "params": (context or {}).get("immutable_guard_params") or {}}


@dataclass
class Cleanup:
    """What the drill made, deleted in an order AWS accepts; what could not be deleted is said."""

    clients: Clients
    progress: Progress
    stack_name: str | None = None
    role_stack_name: str | None = None
    workload: Workload | None = None
    queue_url: str | None = None
    subscription_arn: str | None = None
    left_behind: list[str] = field(default_factory=list)

    def run(self, drill: Drill | None, guard: Guard | None) -> None:
        self.progress.say("cleaning up what the drill created…")
        if self.stack_name is not None:
            vpc_id = self._step("find the workload's VPC", self._vpc_id) or None
            if vpc_id and guard is not None:
                self._step("stop remediations still running", lambda: self._stop_executions(guard, vpc_id))
            if vpc_id and self.workload is not None:
                self._step(
                    "terminate instances the stack would not",
                    lambda: self._terminate_leftovers(vpc_id, guard),
                )
                self._step("delete the guard's isolation groups", lambda: self._delete_groups(vpc_id))
            self._step(f"delete stack {self.stack_name}", lambda: self._delete_stack(str(self.stack_name)))
        if self.role_stack_name is not None:
            # After the workload: CloudFormation deletes the workload as this role.
            self._step(
                f"delete stack {self.role_stack_name}", lambda: self._delete_stack(str(self.role_stack_name))
            )
        if drill is not None:
            self._step("delete volumes kept as evidence", lambda: self._delete_volumes(drill))
            self._step("delete the drill's snapshots", lambda: self._delete_snapshots(drill))
        if self.subscription_arn:
            self._step(
                "unsubscribe the drill's queue",
                lambda: self.clients.sns.unsubscribe(SubscriptionArn=self.subscription_arn or ""),
            )
        if self.queue_url:
            self._step(
                "delete the drill's queue",
                lambda: self.clients.sqs.delete_queue(QueueUrl=self.queue_url or ""),
            )
        self.progress.say(
            "evidence manifests stay in the evidence bucket (Object Lock) and incidents in the ledger (TTL)"
        )
        for item in self.left_behind:
            self.progress.say(f"  LEFT BEHIND: {item}")

    def _step(self, what: str, action: Any) -> Any:
        try:
            return action()
        except Exception as exc:  # one failed step must not keep the others from running
            self.left_behind.append(f"{what}: {type(exc).__name__}: {exc}")
            return None

    def _vpc_id(self) -> str:
        resource = self.clients.cloudformation.describe_stack_resource(
            StackName=str(self.stack_name), LogicalResourceId="Vpc"
        )["StackResourceDetail"]
        return str(resource["PhysicalResourceId"])

    def _instances(self, vpc_id: str, *filters: Any) -> list[dict[str, Any]]:
        pages = self.clients.ec2.get_paginator("describe_instances").paginate(
            Filters=[
                {"Name": "vpc-id", "Values": [vpc_id]},
                {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]},
                *filters,
            ]
        )
        return [i for page in pages for r in page["Reservations"] for i in r["Instances"]]  # type: ignore[misc]

    def _stop_executions(self, guard: Guard, vpc_id: str) -> None:
        sfn = self.clients.stepfunctions
        for instance in self._instances(vpc_id):
            for incident in guard.incidents_for(instance["InstanceId"]):
                arn = guard.execution_arn(incident.incident_id)
                try:
                    running = sfn.describe_execution(executionArn=arn)["status"] == "RUNNING"
                except ClientError:
                    continue  # dry-run incidents have no execution
                if running:
                    sfn.stop_execution(executionArn=arn, error="DrillCleanup", cause="the drill is over")

    def _terminate_leftovers(self, vpc_id: str, guard: Guard | None) -> None:
        """Every instance the stack will not delete itself (quarantined ones have left their group and are
        protected, and a Contain that failed half-way may have protected the standalone server), terminated.
        The group's current members go with the group.

        Lifting termination protection is a change the guard watches, so it is made only where the guard
        knows it as its own business: while the instance's incident is open (its quarantine marker is
        trusted then, and any other report joins that incident), or by the guard's own Release function for
        an incident that is over. A marker set by hand would be a forgery, itself scope tampering."""
        assert self.workload is not None
        group = self.clients.autoscaling.describe_auto_scaling_groups(
            AutoScalingGroupNames=self.workload.group_names
        )["AutoScalingGroups"]
        members = {i["InstanceId"] for g in group for i in g["Instances"]}
        ids = [i["InstanceId"] for i in self._instances(vpc_id) if i["InstanceId"] not in members]
        if not ids:
            return
        ec2 = self.clients.ec2
        for instance_id in ids:
            protected = ec2.describe_instance_attribute(
                InstanceId=instance_id, Attribute="disableApiTermination"
            )
            if protected.get("DisableApiTermination", {}).get("Value"):
                self._lift_protection(instance_id, guard)
        ec2.terminate_instances(InstanceIds=ids)
        ec2.get_waiter("instance_terminated").wait(
            InstanceIds=ids, WaiterConfig={"Delay": 5, "MaxAttempts": 120}
        )

    def _lift_protection(self, instance_id: str, guard: Guard | None) -> None:
        release_function = guard.outputs.get("ReleaseFunctionName") if guard is not None else None
        incidents = guard.incidents_for(instance_id) if guard is not None else []
        # The lock is kept per account and region: each incident says where its instance is.
        held = guard is not None and any(
            guard.ledger.at(i.account, i.region).open_incident_for(instance_id) for i in incidents
        )
        if guard is not None and release_function and not held:
            contained = [i for i in incidents if i.prior_state is not None]
            if contained:
                incident_id = max(contained, key=lambda i: i.created_at).incident_id
                response = self.clients.lambda_.invoke(
                    FunctionName=release_function, Payload=json.dumps({"incident_id": incident_id}).encode()
                )
                if not response.get("FunctionError"):
                    return  # Release restored the protection as it was before Contain: off
                self.left_behind.append(f"release of {incident_id} failed: {response['Payload'].read()!r}")
        self.clients.ec2.modify_instance_attribute(
            InstanceId=instance_id, DisableApiTermination={"Value": False}
        )

    def _delete_groups(self, vpc_id: str) -> None:
        groups = self.clients.ec2.describe_security_groups(
            Filters=[
                {"Name": "vpc-id", "Values": [vpc_id]},
                {"Name": "group-name", "Values": list(GROUP_NAMES.values())},
            ]
        )["SecurityGroups"]
        for group in groups:
            self.clients.ec2.delete_security_group(GroupId=group["GroupId"])

    def _delete_stack(self, name: str) -> None:
        cloudformation = self.clients.cloudformation
        cloudformation.delete_stack(StackName=name)
        try:
            cloudformation.get_waiter("stack_delete_complete").wait(
                StackName=name, WaiterConfig={"Delay": 10, "MaxAttempts": 180}
            )
        except WaiterError as exc:
            raise GuardError(f"stack {name} was not deleted: {exc}") from exc

    def _delete_volumes(self, drill: Drill) -> None:
        """Contain keeps a quarantined instance's volumes on termination; the snapshots hold the evidence."""
        if not drill.volumes_seen:
            return
        volumes = self.clients.ec2.describe_volumes(
            Filters=[
                {"Name": "volume-id", "Values": sorted(drill.volumes_seen)},
                {"Name": "status", "Values": ["available"]},
            ]
        )["Volumes"]
        for volume in volumes:
            self.clients.ec2.delete_volume(VolumeId=volume["VolumeId"])

    def _delete_snapshots(self, drill: Drill) -> None:
        if not drill.volumes_seen:
            return
        snapshots = self.clients.ec2.describe_snapshots(
            OwnerIds=["self"],
            Filters=[
                {"Name": "volume-id", "Values": sorted(drill.volumes_seen)},
                {"Name": "tag-key", "Values": [EVIDENCE_TAG]},
            ],
        )["Snapshots"]
        for snapshot in snapshots:
            self.clients.ec2.delete_snapshot(SnapshotId=snapshot["SnapshotId"])


@contextmanager
def account_drill(
    stack_name: str,
    progress: Progress,
    session: boto3.Session,
    attacker: boto3.Session | None = None,
    pipeline_role: str | None = None,
    pace: Pace = ACCOUNT_PACE,
) -> Iterator[Drill]:
    """A drill on `stack_name` in the session's account and region, with its own disposable workload.

    The drill observes and cleans up with `session`, and attacks with `attacker`: a session of the same
    credentials by default, kept apart so that only the attacks are remembered for redelivery."""
    clients = Clients(session)
    attacker = attacker or _same_credentials(session)
    stack = read_guard_stack(clients, stack_name)
    caller = clients.sts.get_caller_identity()["Arn"]
    missing = preflight(stack, caller)
    limit = int(stack.parameters.get("MaxIncidentsPerHour", "0") or 0)
    if stack.parameters.get("Mode") == "enforce" and limit < INCIDENTS_PER_DRILL:
        progress.say(
            f"warning: MaxIncidentsPerHour={limit} is below the {INCIDENTS_PER_DRILL} incidents a full drill "
            "opens; past it the guard only alerts, and the later scenarios will fail"
        )
    run_id = f"{int(time.time())}-{secrets.token_hex(3)}"
    name = f"immutable-guard-drill-{run_id}"
    progress.say(f"drill {run_id} on stack {stack.name} ({clients.region}) as {caller}")
    cleanup = Cleanup(clients, progress)
    drill: Drill | None = None
    guard: Guard | None = None
    try:
        cleanup.queue_url, cleanup.subscription_arn = subscribe_queue(
            clients, stack.outputs["AlertTopicArn"], name
        )
        attacks = AccountAttacks(attacker, clients, stack.outputs["DetectFunctionName"], pipeline_role)
        guard = Guard(clients, stack.outputs, stack.parameters, cleanup.queue_url, attacks, pace)
        progress.say(f"creating the disposable workload {name} and its service role (a few minutes)…")
        # Both deleted at the end even if their creation fails half-way.
        cleanup.role_stack_name, cleanup.stack_name = f"{name}-role", name
        examples = find_template().parent / "examples"
        # The stack is declared replaceable when the guard declares a tag for it; otherwise its standalone
        # server is rightly left to a person (manual_replacement), and the drill checks that instead.
        tag_value = stack.parameters.get("ReplaceableStackTagValue", "")
        tags = {DRILL_TAG: run_id, **({REPLACEABLE_STACK_TAG: tag_value} if tag_value else {})}
        try:
            role_arn = deploy_workload_role(
                clients,
                (examples / "golden-workload-role.yaml").read_text(),
                f"{name}-role",
                {DRILL_TAG: run_id},
            )
            cleanup.workload = deploy_workload(
                clients, (examples / "golden-workload.yaml").read_text(), name, tags, role_arn
            )
        except (ClientError, BotoCoreError, WaiterError, StopIteration) as exc:
            raise GuardError(f"the disposable workload {name} could not be created: {exc}") from exc
        cleanup.workload.stack_replaceable = bool(tag_value)
        wait_until_in_service(clients, cleanup.workload, pace)
        enforcing = guard if stack.parameters.get("Mode") == "enforce" else None
        dry_run = guard if enforcing is None else None
        drill = Drill(clients, enforcing, dry_run, cleanup.workload, progress, missing)
        yield drill
    finally:
        cleanup.run(drill, guard)


def wait_until_in_service(clients: Clients, workload: Workload, pace: Pace) -> None:
    """CloudFormation is done before the group's servers are: every scenario needs them in service."""

    def in_service() -> tuple[int, int]:
        groups = clients.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=workload.group_names)[
            "AutoScalingGroups"
        ]
        ready = [i for group in groups for i in group["Instances"] if i["LifecycleState"] == "InService"]
        return len(ready), sum(int(group["DesiredCapacity"]) for group in groups)

    ready, desired = poll(
        in_service, lambda counts: counts[0] >= counts[1], pace.event_seconds, pace.poll_seconds
    )
    if ready < desired:
        raise GuardError(
            f"the workload's groups {', '.join(workload.group_names)} have {ready} of {desired} servers "
            "in service"
        )


def _same_credentials(session: boto3.Session) -> boto3.Session:
    credentials = session.get_credentials()
    if credentials is None:
        raise GuardError(
            "no AWS credentials: configure a sandbox account's credentials to drill a deployed stack"
        )
    frozen = credentials.get_frozen_credentials()
    return boto3.Session(
        aws_access_key_id=frozen.access_key,
        aws_secret_access_key=frozen.secret_key,
        aws_session_token=frozen.token,
        region_name=session.region_name,
    )


def default_session(region: str | None) -> boto3.Session:
    """The caller's session; a clear error when there are no credentials to drill with."""
    session = boto3.Session(region_name=region or os.environ.get("AWS_REGION") or None)
    if session.get_credentials() is None:
        raise GuardError(
            "no AWS credentials: configure a sandbox account's credentials to drill a deployed stack"
        )
    if session.region_name is None:
        raise GuardError("no region: pass --region or set AWS_REGION")
    return session
