"""What the remediation tests share besides fixtures: the golden workload's shape, findings as Detect
writes them, and a loader for the step functions. A module of its own (not conftest) so that test modules
import it by a name no other folder uses."""

from __future__ import annotations

import importlib.util
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from immutable_guard.clients import Clients
from immutable_guard.model import Finding, Kind, Severity, Source

GOLDEN_AMI = "ami-12c6146b"  # one of moto's built-in images


@dataclass(frozen=True)
class GoldenWorkload:
    vpc_id: str
    subnet_id: str
    app_group_id: str
    auto_scaling_group: str
    target_group_arn: str
    profile_arn: str
    instance_id: str
    second_eni_id: str
    ssh_rule_id: str


def make_finding(kind: Kind = Kind.PORT_OPENED, **fields: Any) -> dict[str, Any]:
    """A finding as Detect puts it in the execution input (Finding.model_dump(mode="json"))."""
    values: dict[str, Any] = {
        "kind": kind,
        "severity": Severity.CRITICAL,
        "source": Source.CLOUDTRAIL,
        "event_name": "AuthorizeSecurityGroupIngress",
        "event_source": "ec2.amazonaws.com",
        "event_id": str(uuid.uuid4()),
        "event_time": "2026-01-01T00:00:00Z",
        "account": "123456789012",
        "region": "us-east-1",
        **fields,
    }
    return Finding(**values).model_dump(mode="json")


REGION = "us-east-1"


ACCOUNT_ID = "123456789012"  # moto's default account


FUNCTIONS_DIR = Path(__file__).resolve().parents[3] / "functions"


EVIDENCE_BUCKET = "immutable-guard-evidence-test"


@dataclass(frozen=True)
class ContainedInstance:
    """An instance as the Contain step leaves it, and the incident about it."""

    incident_id: str
    instance_id: str
    volumes: dict[str, str]  # volume id -> device


@dataclass(frozen=True)
class Network:
    vpc_id: str
    subnet_id: str


def group_members(aws: Clients, group: str) -> list[str]:
    groups = aws.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[group])["AutoScalingGroups"]
    return [member["InstanceId"] for member in groups[0]["Instances"]]


def detach_from_group(aws: Clients, group: str, instance_id: str) -> None:
    """What the Contain step does to a group member: leave the group, keep the desired capacity."""
    aws.autoscaling.detach_instances(
        AutoScalingGroupName=group, InstanceIds=[instance_id], ShouldDecrementDesiredCapacity=False
    )


@dataclass
class FakeLambdaContext:
    function_name: str = "test-function"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:test-function"
    aws_request_id: str = "00000000-0000-0000-0000-000000000000"


def load_function(name: str) -> ModuleType:
    """Import functions/<name>/app.py under a unique module name (every handler module is called app)."""
    spec = importlib.util.spec_from_file_location(f"{name}_app", FUNCTIONS_DIR / name / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
