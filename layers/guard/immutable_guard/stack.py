"""A deployed stack of template.yaml as CloudFormation describes it: how the operator's commands
(incidents, release, doctor, drill --stack) find the guard's resources and the settings it runs with."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from immutable_guard.errors import AwsCallFailed


@dataclass(frozen=True)
class GuardStack:
    name: str
    outputs: dict[str, str]
    parameters: dict[str, str]  # in force: resolved values for SSM-typed parameters


def read_stack(cloudformation: Any, name: str, region: str) -> GuardStack:
    """The stack's outputs and parameters; AwsCallFailed naming the stack and region if it cannot be read."""
    try:
        stack = cloudformation.describe_stacks(StackName=name)["Stacks"][0]
    except (ClientError, BotoCoreError) as exc:
        raise AwsCallFailed(f"cannot read stack {name} in {region}: {exc}") from exc
    return GuardStack(
        name=name,
        outputs={o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])},
        parameters={
            p["ParameterKey"]: str(p.get("ResolvedValue", p.get("ParameterValue", "")))
            for p in stack.get("Parameters", [])
        },
    )
