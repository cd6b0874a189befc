"""A world for fault injection: template.yaml deployed in-process on moto, the remediation state machine
executed by moto, our handlers run by the lambda runner, and AWS faults injected per step and call.

Faults are raised from botocore's ``before-call`` event, which fires once per API call and before the SDK's
own retries: a cell therefore tests what happens once boto3 has given up (throttling that outlasts it,
a refusal, a 500, a timeout), i.e. the state machine's Retry / Catch level. Retry waits of the state
machine are recorded, not slept, so a cell with five back-offs still runs in a second.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import botocore.handlers
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKLOAD_TEMPLATE = REPO_ROOT / "examples" / "golden-workload.yaml"
PARAMETERS = {
    "Mode": "enforce",
    "SnapshotPollSeconds": "0",
    "ReplacementPollSeconds": "0",
    "MaxPolls": "30",
    "MaxIncidentsPerHour": "1000",
    # The workload stacks carry immutable-guard-replaceable=true and run as their own service role.
    "ReplaceableStackTagValue": "true",
}
FAULTS = ("throttling", "access_denied", "internal_error", "timeout")
STEP_FUNCTIONS = (
    "QuarantineFunction",
    "NotifyFunction",
    "EvidenceFunction",
    "ReplaceFunction",
    "NukeFunction",
)
ISOLATION_GROUP = "immutable-guard-isolation"
EXECUTION_DEADLINE_SECONDS = 90

# The code each service really answers with (a cell must exercise the code path a real refusal takes).
_THROTTLING = {"ec2": "RequestLimitExceeded", "dynamodb": "ThrottlingException", "s3": "SlowDown"}
_DENIED = {
    "ec2": "UnauthorizedOperation",
    "dynamodb": "AccessDeniedException",
    "sns": "AuthorizationError",
    "elastic-load-balancing-v2": "AccessDenied",
}
_INTERNAL = {"dynamodb": "InternalServerError", "sns": "InternalError", "ec2": "InternalError"}


def injected_error(fault: str, service: str, operation: str) -> Exception:
    """The exception botocore raises for ``fault`` on ``service.operation``."""
    if fault == "timeout":
        return ReadTimeoutError(endpoint_url=f"https://{service}.us-east-1.amazonaws.com/")
    if fault == "connection":
        return EndpointConnectionError(endpoint_url=f"https://{service}.us-east-1.amazonaws.com/")
    code, status = {
        "throttling": (_THROTTLING.get(service, "Throttling"), 503 if service == "s3" else 400),
        "access_denied": (_DENIED.get(service, "AccessDenied"), 403),
        "internal_error": (_INTERNAL.get(service, "InternalFailure"), 500),
    }[fault]
    return ClientError(
        {
            "Error": {"Code": code, "Message": f"injected {fault}"},
            "ResponseMetadata": {"HTTPStatusCode": status, "RequestId": "injected"},
        },
        operation,
    )


@dataclass(frozen=True)
class FaultPlan:
    """Fail the ``nth`` call (1-based) of ``operation`` made by ``function``, or every call from it on."""

    function: str  # logical id in template.yaml
    operation: str  # "<service id>.<Operation>", as in botocore's event names
    fault: str
    nth: int = 1
    always: bool = False

    @property
    def label(self) -> str:
        when = f"always from call {self.nth}" if self.always else f"call {self.nth} only"
        return f"{self.function} {self.operation} {self.fault} ({when})"


@dataclass
class Call:
    function: str
    operation: str
    injected: str | None = None
    # Made from a thread the handler started (its concurrent reads), not from the handler's own thread.
    pooled: bool = False
    at: float = 0.0


@dataclass
class TerminateCheck:
    """What was true at the moment a TerminateInstances call left our code."""

    snapshots_completed: bool
    volumes_covered: bool
    manifest_recorded: bool
    manifest_stored: bool
    replacement_healthy: bool

    @property
    def safe(self) -> bool:
        return all(vars(self).values())


class FaultInjector:
    """The ``before-call`` hook: attributes every call to the Lambda function making it, injects faults."""

    def __init__(self) -> None:
        self.plan: FaultPlan | None = None
        self.calls: list[Call] = []
        self.names: dict[str, str] = {}  # function name -> logical id
        self.current_function: str | None = None  # the step Step Functions is running now
        self._last_function: str | None = None  # the last function whose own thread made a call
        self.on_terminate: Any = None
        self._seen: dict[tuple[str, str], int] = {}
        self._harness = threading.local()
        self._lock = threading.Lock()

    @contextmanager
    def harness(self) -> Iterator[None]:
        """Calls made by the test itself are neither faulted nor counted, nor taken for a function's (the
        terminate check runs inside Nuke's TerminateInstances call)."""
        from immutable_guard.local import lambda_runner

        previous = getattr(self._harness, "on", False)
        self._harness.on = True
        try:
            with lambda_runner.acting_as(None):
                yield
        finally:
            self._harness.on = previous

    def reset(self, plan: FaultPlan | None = None) -> None:
        with self._lock:
            self.plan = plan
            self.calls = []
            self._seen = {}
            self._last_function = None

    def _function(self) -> str | None:
        # The lambda runner gives a handler's thread, and the workers of its thread pools, its function's
        # environment; a thread with none belongs to the step being run.
        if getattr(self._harness, "on", False):
            return None
        name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME")
        if name:
            self._last_function = self.names.get(name, name)
            return self._last_function
        # Steps run one at a time here, so a pool thread's calls are those of the last function heard,
        # also when another test of this process left moto invoking functions without the wrapper that
        # sets current_function.
        return self.current_function or self._last_function

    def __call__(self, event_name: str, **_: Any) -> None:
        operation = event_name.split(".", 1)[1]
        if operation.startswith("lambda."):  # moto's Step Functions invoking our functions
            return
        function = self._function()
        if function is None:
            return
        with self._lock:
            key = (function, operation)
            self._seen[key] = count = self._seen.get(key, 0) + 1
            pooled = threading.current_thread().name.startswith("ThreadPoolExecutor")
            call = Call(function, operation, pooled=pooled, at=time.perf_counter())
            self.calls.append(call)
            plan = self.plan
            hit = (
                plan is not None
                and plan.function == function
                and plan.operation == operation
                and (count == plan.nth or (plan.always and count >= plan.nth))
            )
            if hit and plan is not None:
                call.injected = plan.fault
        if operation == "ec2.TerminateInstances" and self.on_terminate is not None:
            self.on_terminate()
        if hit and plan is not None:
            service, name = operation.split(".", 1)
            raise injected_error(plan.fault, service, name)


@dataclass
class CellResult:
    plan: FaultPlan | None
    execution_status: str
    outcome: str  # recovered | failure_path | unaffected
    failed_step: str | None
    error: str | None
    ledger_status: str | None
    instance_state: str
    isolated: bool
    alerts: list[str]
    retry_waits: list[float]
    calls: list[Call] = field(default_factory=list)
    terminate_checks: list[TerminateCheck] = field(default_factory=list)
    invariants: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "function": self.plan.function if self.plan else None,
            "operation": self.plan.operation if self.plan else None,
            "fault": self.plan.fault if self.plan else None,
            "nth": self.plan.nth if self.plan else None,
            "always": self.plan.always if self.plan else None,
            "execution_status": self.execution_status,
            "outcome": self.outcome,
            "failed_step": self.failed_step,
            "error": self.error,
            "ledger_status": self.ledger_status,
            "instance_state": self.instance_state,
            "isolated": self.isolated,
            "alerts": self.alerts,
            "state_machine_retries": len(self.retry_waits),
            "injected_calls": sum(1 for c in self.calls if c.injected),
            "invariants": self.invariants,
        }


class FaultWorld:
    """template.yaml on in-process moto, with a golden workload per cell. Use as a context manager."""

    def __init__(self, parameters: dict[str, str] | None = None) -> None:
        self.parameters = {**PARAMETERS, **(parameters or {})}
        self.injector = FaultInjector()
        self.retry_waits: list[float] = []
        self._undo: list[Any] = []
        self._cells = 0
        self._target_stack = ""
        self._role_arn = ""

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> FaultWorld:
        from immutable_guard.local import lambda_runner
        from immutable_guard.local.deploy import Deployer
        from immutable_guard.local.moto_fixes import apply_moto_fixes, revert_moto_fixes
        from moto import mock_aws
        from moto.awslambda.models import LambdaFunction
        from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl

        # Before any client exists: every client of every session copies the built-in handlers.
        botocore.handlers.BUILTIN_HANDLERS.append(("before-call", self.injector))
        self._undo.append(lambda: botocore.handlers.BUILTIN_HANDLERS.remove(("before-call", self.injector)))
        os.environ.setdefault("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
        # moto logs every failed state at ERROR with its whole parse tree: failures are the point here.
        logging.getLogger("moto").setLevel(logging.CRITICAL)
        self._mock = mock_aws(config={"stepfunctions": {"execute_state_machine": True}})
        self._mock.start()
        self._undo.append(self._mock.stop)
        apply_moto_fixes()
        self._undo.append(revert_moto_fixes)
        lambda_runner.install(REPO_ROOT)
        self._undo.append(lambda_runner.uninstall)
        from immutable_guard.local.stack_credentials import function_update_stack

        # A function's stack update is authorized against its role, as on the local runtime.
        self._undo.append(lambda_runner.check_calls(function_update_stack))

        installed = LambdaFunction._invoke_lambda
        injector = self.injector

        def invoke(function: Any, event: Any = None) -> Any:
            injector.current_function = injector.names.get(function.function_name, function.function_name)
            try:
                return installed(function, event)
            finally:
                injector.current_function = None

        LambdaFunction._invoke_lambda = invoke
        self._undo.append(lambda: setattr(LambdaFunction, "_invoke_lambda", installed))

        class _RecordedSleep:
            @staticmethod
            def sleep(seconds: float) -> None:
                self.retry_waits.append(float(seconds))

        real_time = retrier_decl.time
        retrier_decl.time = _RecordedSleep  # type: ignore[assignment]
        self._undo.append(lambda: setattr(retrier_decl, "time", real_time))

        self.session = boto3.Session(region_name="us-east-1")
        with self.injector.harness():
            self.deployment = Deployer(self.session, REPO_ROOT / "template.yaml").deploy(self.parameters)
            self.injector.names = {name: lid for lid, name in self.deployment.function_names.items()}
            from immutable_guard.clients import Clients
            from immutable_guard.ledger import IncidentLedger
            from immutable_guard.local import EventRouter
            from immutable_guard.local.trail import CloudTrailEmitter

            self.clients = Clients(self.session)
            self._no_groups_ahead()
            self.ledger = IncidentLedger(self.clients.dynamodb, self.deployment.outputs["IncidentLedgerName"])
            self.router = EventRouter(self.deployment, self.session)
            self.emitter = CloudTrailEmitter(self.router.put)
            self.subscriber = self._subscribe()
        return self

    def _no_groups_ahead(self) -> None:
        """The matrix injects faults into the workflow's steps, Contain's first quarantine in a fresh VPC
        included. Detect's request for isolation groups ahead (issue 15) would have Contain make them on a
        thread of its own whenever a sighting of the server reaches Detect first, racing the workflow's
        Contain for the same calls: it is off here (tests/unit/test_first_response.py and
        tests/e2e/test_first_response_local.py cover it)."""
        name = self.deployment.function_names["DetectFunction"]
        lambda_ = self.clients.lambda_
        variables = lambda_.get_function_configuration(FunctionName=name)["Environment"]["Variables"]
        variables["ISOLATION_GROUPS_FUNCTION"] = ""
        lambda_.update_function_configuration(FunctionName=name, Environment={"Variables": variables})

    def __exit__(self, *exc: object) -> None:
        while self._undo:
            self._undo.pop()()

    def _subscribe(self) -> str:
        sqs = self.clients.sqs
        url = sqs.create_queue(QueueName="security-team")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        self.clients.sns.subscribe(
            TopicArn=self.deployment.outputs["AlertTopicArn"], Protocol="sqs", Endpoint=arn
        )
        return str(url)

    def _workload_role(self) -> str:
        """The golden workload's CloudFormation service role, made once per world."""
        if not self._role_arn:
            from immutable_guard.drill.world import deploy_workload_role

            body = (REPO_ROOT / "examples" / "golden-workload-role.yaml").read_text("utf-8")
            self._role_arn = deploy_workload_role(self.clients, body, "golden-workload-role")
        return self._role_arn

    # ------------------------------------------------------------------ one cell
    def new_target(self, target: str = "auto_scaling_group") -> tuple[str, str, str]:
        """A fresh golden workload; returns (instance id, its own extra group, stack name). `target` picks
        a member of its Auto Scaling group or ("stack") its standalone server, which the stack replaces."""
        self._cells += 1
        stack = f"golden-{self._cells}-{uuid.uuid4().hex[:6]}"
        cfn, ec2 = self.clients.cloudformation, self.clients.ec2
        cfn.create_stack(
            StackName=stack,
            TemplateBody=WORKLOAD_TEMPLATE.read_text("utf-8"),
            Parameters=[
                {"ParameterKey": "VpcCidr", "ParameterValue": "10.42.0.0/16"},
                {"ParameterKey": "SubnetCidr", "ParameterValue": "10.42.1.0/24"},
            ],
            RoleARN=self._workload_role(),
            Tags=[{"Key": "immutable-guard-replaceable", "Value": "true"}],
        )
        outputs = {
            o["OutputKey"]: o["OutputValue"]
            for o in cfn.describe_stacks(StackName=stack)["Stacks"][0]["Outputs"]
        }
        group = self.clients.autoscaling.describe_auto_scaling_groups(
            AutoScalingGroupNames=[outputs["AutoScalingGroupName"]]
        )["AutoScalingGroups"][0]
        instance_id = (
            outputs["StandaloneInstanceId"]
            if target == "stack"
            else sorted(m["InstanceId"] for m in group["Instances"])[0]
        )
        self._target_stack = stack
        instance = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
        # A group only this instance uses, so the attack below reaches exactly one instance.
        extra = ec2.create_security_group(
            GroupName=f"debug-{uuid.uuid4().hex[:8]}", Description="only the target", VpcId=instance["VpcId"]
        )["GroupId"]
        eni = instance["NetworkInterfaces"][0]["NetworkInterfaceId"]
        ec2.modify_network_interface_attribute(
            NetworkInterfaceId=eni, Groups=[outputs["SecurityGroupId"], extra]
        )
        return instance_id, extra, stack

    def attack(self, group_id: str) -> None:
        """Someone opens SSH to the world on the target's group (recorded by CloudTrail, routed to Detect)."""
        from immutable_guard.local.trail import Actor

        self.emitter.session(Actor()).client("ec2").authorize_security_group_ingress(
            GroupId=group_id,
            IpPermissions=[
                {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
            ],
        )

    def run(self, plan: FaultPlan | None, target: str = "auto_scaling_group") -> CellResult:
        with self.injector.harness():
            instance_id, group_id, _ = self.new_target(target)
            self._drain_alerts()
            terminate_checks: list[TerminateCheck] = []
            self.injector.on_terminate = lambda: terminate_checks.append(self._terminate_check(instance_id))
            self.retry_waits.clear()
            self.injector.reset(plan)
        # Outside the harness: Detect runs in this thread (the router invokes it synchronously).
        self.attack(group_id)
        with self.injector.harness():
            incidents = [i for i in self.ledger.list_incidents(limit=10_000) if i.instance_id == instance_id]
            execution = self._wait(incidents[0].incident_id) if len(incidents) == 1 else {"status": "NONE"}
            self.injector.plan = None
            return self._judge(plan, instance_id, incidents, execution, terminate_checks)

    # ------------------------------------------------------------------ reading the end state
    def _wait(self, incident_id: str) -> dict[str, Any]:
        machine = self.deployment.outputs["RemediationStateMachineArn"]
        arn = f"{machine.replace(':stateMachine:', ':execution:')}:{incident_id}"
        deadline = time.monotonic() + EXECUTION_DEADLINE_SECONDS
        sfn = self.clients.stepfunctions
        while True:
            execution = sfn.describe_execution(executionArn=arn)
            if execution["status"] != "RUNNING" or time.monotonic() > deadline:
                history = sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"]
                execution["failed_step"] = _failed_step(history)
                return dict(execution)
            time.sleep(0.02)

    def _drain_alerts(self) -> list[dict[str, Any]]:
        alerts = []
        while True:
            messages = self.clients.sqs.receive_message(
                QueueUrl=self.subscriber, MaxNumberOfMessages=10, WaitTimeSeconds=0
            ).get("Messages", [])
            if not messages:
                return alerts
            for message in messages:
                alerts.append(json.loads(json.loads(message["Body"])["Message"]))
                self.clients.sqs.delete_message(
                    QueueUrl=self.subscriber, ReceiptHandle=message["ReceiptHandle"]
                )

    def _instance(self, instance_id: str) -> dict[str, Any]:
        reservations = self.clients.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
        return dict(reservations[0]["Instances"][0])

    def isolated(self, instance_id: str) -> bool:
        enis = self.clients.ec2.describe_network_interfaces(
            Filters=[{"Name": "attachment.instance-id", "Values": [instance_id]}]
        )["NetworkInterfaces"]
        if not enis:
            return False
        names = {
            g["GroupId"]: g["GroupName"]
            for g in self.clients.ec2.describe_security_groups()["SecurityGroups"]
        }
        return all([names.get(g["GroupId"]) for g in eni["Groups"]] == [ISOLATION_GROUP] for eni in enis)

    def open_to_world(self, instance_id: str) -> bool:
        """True when an ENI of the instance carries a group allowing all traffic from anywhere."""
        ec2 = self.clients.ec2
        enis = ec2.describe_network_interfaces(
            Filters=[{"Name": "attachment.instance-id", "Values": [instance_id]}]
        )["NetworkInterfaces"]
        ids = sorted({g["GroupId"] for eni in enis for g in eni["Groups"]})
        if not ids:
            return False
        for group in ec2.describe_security_groups(GroupIds=ids)["SecurityGroups"]:
            for perm in group.get("IpPermissions", []):
                if perm.get("IpProtocol") == "-1" and any(
                    r.get("CidrIp") == "0.0.0.0/0" for r in perm.get("IpRanges", [])
                ):
                    return True
        return False

    def _terminate_check(self, instance_id: str) -> TerminateCheck:
        with self.injector.harness():
            incident = next(
                i for i in self.ledger.list_incidents(limit=10_000) if i.instance_id == instance_id
            )
            instance = self._instance(instance_id)
            volumes = {m["Ebs"]["VolumeId"] for m in instance.get("BlockDeviceMappings", []) if "Ebs" in m}
            snapshots = self.clients.ec2.describe_snapshots(
                OwnerIds=["self"],
                Filters=[{"Name": "tag:immutable-guard:incident", "Values": [incident.incident_id]}],
            )["Snapshots"]
            evidence = incident.details.get("evidence_complete") or {}
            stored = False
            if evidence.get("key"):
                try:
                    body = self.clients.s3.get_object(Bucket=evidence["bucket"], Key=evidence["key"])[
                        "Body"
                    ].read()
                    stored = hashlib.sha256(body).hexdigest() == evidence.get("sha256")
                except ClientError:
                    stored = False
            healthy = False
            group_name = (incident.prior_state or {}).get("auto_scaling_group")
            if group_name:
                group = self.clients.autoscaling.describe_auto_scaling_groups(
                    AutoScalingGroupNames=[group_name]
                )["AutoScalingGroups"][0]
                fresh = [
                    m
                    for m in group["Instances"]
                    if m["InstanceId"] != instance_id
                    and m["LifecycleState"] == "InService"
                    and m["HealthStatus"] == "Healthy"
                ]
                healthy = len(fresh) >= max(group["DesiredCapacity"], 1)
            else:  # the stack's own server: CloudFormation must have put a running one in its place
                resource = self.clients.cloudformation.describe_stack_resource(
                    StackName=self._target_stack, LogicalResourceId="StandaloneServer"
                )["StackResourceDetail"]["PhysicalResourceId"]
                healthy = resource != instance_id and self._instance(resource)["State"]["Name"] == "running"
            return TerminateCheck(
                snapshots_completed=bool(snapshots) and all(s["State"] == "completed" for s in snapshots),
                volumes_covered=bool(volumes) and volumes <= {s["VolumeId"] for s in snapshots},
                manifest_recorded=bool(evidence.get("sha256")),
                manifest_stored=stored,
                replacement_healthy=healthy,
            )

    def _judge(
        self,
        plan: FaultPlan | None,
        instance_id: str,
        incidents: list[Any],
        execution: dict[str, Any],
        terminate_checks: list[TerminateCheck],
    ) -> CellResult:
        alerts = [a for a in self._drain_alerts() if a.get("instance_ids") == [instance_id]]
        stages = [str(a.get("stage")) for a in alerts]
        incident = self.ledger.get(incidents[0].incident_id) if len(incidents) == 1 else None
        instance = self._instance(instance_id)
        state = str(instance["State"]["Name"])
        isolated = state != "terminated" and self.isolated(instance_id)
        status = str(execution["status"])
        injected = any(c.injected for c in self.injector.calls)
        if not injected:
            outcome = "unaffected"
        elif status == "SUCCEEDED" and (incident is None or incident.status.value != "FAILED"):
            outcome = "recovered"
        else:
            outcome = "failure_path"
        failed = status != "SUCCEEDED" or (incident is not None and incident.status.value == "FAILED")
        failed_state = (execution.get("failed_step") or {}).get("state")
        contained_recorded = incident is not None and "contained" in incident.timeline
        invariants = {
            "no_terminate_without_evidence": "held"
            if all(check.safe for check in terminate_checks)
            else f"BROKEN: {[vars(c) for c in terminate_checks if not c.safe]}",
            "no_lost_incident": "held"
            if incident is not None
            else f"BROKEN: {len(incidents)} incidents in ledger",
            "alert_for_every_failure": "held"
            if not failed or "failed" in stages
            # The failure alert needs SNS and the ledger: with one of them down for Notify, the
            # execution fails and the ExecutionsFailed alarm is what tells a person.
            else (
                "alarm only (execution FAILED)"
                if status == "FAILED"
                else f"BROKEN: status {status}, alerts {stages}"
            ),
            "never_open_while_contained": "held"
            if not contained_recorded or state == "terminated" or isolated
            else "BROKEN: contained in the ledger but not isolated",
            "never_left_open_to_world": "held"
            if state == "terminated" or not self.open_to_world(instance_id)
            else "BROKEN: an ENI is left on the all-traffic passthrough group",
            "no_terminate_on_failure": "held"
            # Close runs after Nuke: a failed Close alert comes after a legitimate termination.
            if not failed or state != "terminated" or failed_state == "Close"
            else f"BROKEN: terminated although {failed_state} failed",
        }
        error = (execution.get("failed_step") or {}).get("error")
        return CellResult(
            plan=plan,
            execution_status=status,
            outcome=outcome,
            failed_step=failed_state,
            error=error,
            ledger_status=incident.status.value if incident else None,
            instance_state=state,
            isolated=isolated,
            alerts=stages,
            retry_waits=list(self.retry_waits),
            calls=list(self.injector.calls),
            terminate_checks=terminate_checks,
            invariants=invariants,
        )


def _failed_step(history: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The step the execution's Catch sent to the failure path, and the error, from the history."""
    for event in history:
        details = event.get("stateEnteredEventDetails") or {}
        if details.get("name", "").endswith("Failed") and details.get("name") != "RemediationFailed":
            data = json.loads(details.get("input") or "{}")
            return {
                "state": (data.get("failed_step") or {}).get("state") or details["name"][: -len("Failed")],
                "error": (data.get("error") or {}).get("Error"),
            }
    for event in history:
        if event.get("type") == "ExecutionFailed":
            return {"state": None, "error": (event.get("executionFailedEventDetails") or {}).get("error")}
    return None


def discover_calls(world: FaultWorld) -> list[tuple[str, str]]:
    """Every (step function, AWS call) a clean remediation makes, in first-call order."""
    result = world.run(None)
    if result.execution_status != "SUCCEEDED":
        raise AssertionError(f"the clean run did not succeed: {result.as_dict()}")
    seen: dict[tuple[str, str], None] = {}
    for call in result.calls:
        if call.function in STEP_FUNCTIONS:
            seen.setdefault((call.function, call.operation), None)
    return list(seen)
