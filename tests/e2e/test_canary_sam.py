"""The canary with `sam deploy`, on the embedded local AWS: the canary alone (Components=canary), and the
example of examples/canary-target deployed and redeployed as SAM's AutoPublishAlias does it. Each deploy's
own API calls reach the canary's rules as CloudTrail records, so a published version starts its rollout by
itself; the serving alias belongs to the canary and a redeploy never resets it."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from canary_rollouts import FAST, finish
from immutable_guard.canary.autostart import PLAN_PARAMETER_PREFIX
from immutable_guard.canary.demo import TrafficSimulator
from immutable_guard.canary.history import Entry
from immutable_guard.clients import Clients
from immutable_guard.local import Deployment, EventRouter, LocalAws, LocalSession
from immutable_guard.local.trail import Actor, CloudTrailEmitter

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "canary-target"
# CloudFormation calls Lambda for `sam deploy` with the deployer's role, from cloudformation.amazonaws.com.
CLOUDFORMATION = Actor(
    arn="arn:aws:sts::123456789012:assumed-role/orders-deploy/AWSCloudFormation",
    source_ip="cloudformation.amazonaws.com",
    user_agent="cloudformation.amazonaws.com",
)
GUARD_ONLY = (
    "AWS::CloudTrail::Trail",
    "AWS::Config::ConfigurationRecorder",
    "AWS::Config::DeliveryChannel",
    "AWS::SSM::Association",
)


@pytest.fixture
def canary_only(local_aws: LocalAws, local_session: LocalSession) -> Deployment:
    return local_session.get(
        "canary-only", lambda: local_aws.deploy({"Components": "canary"}, stack_name="canary-only")
    )


def test_the_canary_deploys_alone_without_trail_recorder_inventory_or_detection(
    canary_only: Deployment,
) -> None:
    deployed = set(canary_only.physical_ids)
    kinds = {canary_only.resource_types[logical_id] for logical_id in deployed}
    assert not kinds & set(GUARD_ONLY), kinds & set(GUARD_ONLY)
    assert not deployed & {
        "DetectFunction",
        "RemediationStateMachine",
        "EvidenceBucket",
        "OperationsDashboard",
    }
    assert {"CanaryStateMachine", "CanaryStartFunction", "CanaryRecoverFunction", "AlertTopic"} <= deployed
    assert not canary_only.skipped, canary_only.skipped
    assert "CanaryStateMachineArn" in canary_only.outputs and "DetectFunctionName" not in canary_only.outputs


@dataclass
class SamApp:
    """A team's repository with the example, deployed as `sam deploy` would, its calls seen by CloudTrail."""

    aws: LocalAws
    folder: Path
    guard: Deployment
    clients: Clients
    emitter: CloudTrailEmitter
    deployment: Deployment | None = None

    def deploy(self, behaviour: str | None = None) -> Deployment:
        template = self.folder / "template.yaml"
        if behaviour is not None:  # the change a developer commits
            text = template.read_text()
            current = next(line for line in text.splitlines() if "BEHAVIOUR:" in line)
            template.write_text(text.replace(current, current.split(":")[0] + f": {behaviour}"))
        self.deployment = self.aws.deploy(
            stack_name="orders",
            template_path=template,
            previous=self.deployment,
            session=self.emitter.session(CLOUDFORMATION),
        )
        return self.deployment

    @property
    def function(self) -> str:
        assert self.deployment is not None
        return str(self.deployment.outputs["FunctionName"])

    def alias(self, name: str) -> str:
        return str(self.clients.lambda_.get_alias(FunctionName=self.function, Name=name)["FunctionVersion"])

    def rollouts(self) -> list[str]:
        machine = str(self.guard.physical_ids["CanaryStateMachine"])
        executions = self.clients.stepfunctions.list_executions(stateMachineArn=machine)["executions"]
        return sorted(e["executionArn"] for e in executions if e["name"].startswith(f"{self.function}-live-"))

    def finish(self, arn: str) -> tuple[str, list[Entry]]:
        return finish(self.clients.stepfunctions, arn)

    def traffic(self, **options: Any) -> TrafficSimulator:
        return TrafficSimulator(
            self.clients.lambda_, self.clients.cloudwatch, self.function, "live", **options
        )


@pytest.fixture
def sam_app(local_aws: LocalAws, canary_only: Deployment, tmp_path: Path) -> Iterator[SamApp]:
    folder = tmp_path / "orders"
    shutil.copytree(EXAMPLE, folder, ignore=shutil.ignore_patterns("__pycache__"))
    router = EventRouter(canary_only, local_aws.session())
    yield SamApp(
        local_aws, folder, canary_only, local_aws.clients(), CloudTrailEmitter(router.put, local_aws.region)
    )


def test_sam_deploy_publishes_and_the_canary_rolls_out_by_itself_without_drift(sam_app: SamApp) -> None:
    # Given the example deployed once: version 1 published, `live` created on it, nothing rolled out
    first = sam_app.deploy()
    assert (sam_app.alias("published"), sam_app.alias("live")) == ("1", "1")
    assert sam_app.rollouts() == []
    assert "OrderPricingFunctionAliaspublished" in first.physical_ids
    # (the team tunes its plan for this machine's clock: no CloudWatch delay, one-second bakes)
    parameter = f"{PLAN_PARAMETER_PREFIX}{sam_app.function}"
    plan = json.loads(sam_app.clients.ssm.get_parameter(Name=parameter)["Parameter"]["Value"])
    assert plan["published_alias"] == "published" and plan["alias"] == "live"
    sam_app.clients.ssm.put_parameter(Name=parameter, Value=json.dumps({**plan, **FAST}), Overwrite=True)

    # When a developer changes the function and deploys: SAM publishes version 2 to `published`
    with sam_app.traffic(alarm=plan["alarms"][0]):
        second = sam_app.deploy(behaviour="improved")
        (rollout,) = sam_app.rollouts()
        status, entries = sam_app.finish(rollout)

    # Then the rollout started on its own, moved `live` in steps with the plan's hooks, and promoted
    assert sam_app.alias("published") == "2"
    assert status == "SUCCEEDED", [e.text for e in entries]
    assert [e.data["percent"] for e in entries if e.kind == "shift"] == [10, 20, 30, 40, 50, 60, 70, 80, 90]
    assert [e.data["status"] for e in entries if e.kind == "hook"] == ["Succeeded", "Succeeded"]
    assert sam_app.alias("live") == "2"
    assert "OrderPricingLive" in second.unchanged and "OrderPricingFunction" in second.updated

    # When the unchanged template is deployed again
    third = sam_app.deploy()
    # Then nothing changes: the serving alias keeps the canary's promotion, no rollout starts
    assert sam_app.alias("live") == "2" and sam_app.alias("published") == "2"
    assert third.updated == [] and "OrderPricingLive" in third.unchanged
    assert len(sam_app.rollouts()) == 1

    # When a buggy change is deployed: version 3 fails bulk orders
    with sam_app.traffic():
        sam_app.deploy(behaviour="buggy")
        rollouts = sam_app.rollouts()
        (buggy,) = [arn for arn in rollouts if "-live-v3-" in arn]
        status, entries = sam_app.finish(buggy)

    # Then its rollout rolls `live` back to version 2 by itself; `published` keeps the record of version 3
    assert status == "FAILED"
    rolled = next(e.data for e in entries if e.kind == "rollback")
    assert rolled["rolled_back_to"] == "2"
    assert sam_app.alias("live") == "2" and sam_app.alias("published") == "3"
