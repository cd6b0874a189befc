"""Detect's first response (issue 15): in single-account mode and enforce, Detect performs the two-step
isolation right after taking the incident's lock, and the workflow's Contain verifies and completes it.
On moto: what is isolated, what is never touched (dry-run, our own changes, a lock or a breaker refused),
what release gives back, and that a failed first response leaves the isolation to the workflow."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aws_lambda_powertools import Metrics
from botocore.exceptions import ClientError
from immutable_guard.clients import Clients
from immutable_guard.drill.world import server_in_new_vpc
from immutable_guard.ledger import IncidentLedger, Status
from immutable_guard.local import lambda_runner, moto_fixes
from immutable_guard.model import Mode
from immutable_guard.pipeline import process_event
from immutable_guard.remediation.first_response import STAGE_ISOLATED, prepare_ahead
from immutable_guard.remediation.quarantine import (
    PARTIAL,
    PREPARE_ISOLATION_GROUPS,
    ROLE_ISOLATION,
    ROLE_PASSTHROUGH,
    _get_or_create_group,
    prepare_request_vpcs,
    quarantine_instance,
)
from immutable_guard.remediation.release import release_incident
from immutable_guard.settings import DetectSettings

EVENTS = Path(__file__).resolve().parents[2] / "events"
ACCOUNT = "111122223333"
OWN_ROLE = "arn:aws:iam::111122223333:role/immutable-guard-QuarantineFunctionRole-ABC"
PASS_MACHINE = json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}})
# The attacker's change: ModifyInstanceAttribute putting other groups on the instance.
EVENT = "cloudtrail-modify-instance-attribute-groupset.json"


@dataclass
class World:
    aws: Clients
    ledger: IncidentLedger
    settings: DetectSettings
    vpc: str
    web: str
    instance_id: str
    enis: list[str]

    def event(self, **principal: str) -> dict[str, Any]:
        text = (EVENTS / EVENT).read_text().replace("i-0abc1234def567890", self.instance_id)
        event: dict[str, Any] = json.loads(text)
        if "arn" in principal:
            identity = event["detail"]["userIdentity"]
            identity["arn"] = principal["arn"]
            identity["sessionContext"]["sessionIssuer"]["arn"] = principal["arn"]
        return event

    def detect(self, event: dict[str, Any], **overrides: Any) -> dict[str, Any]:
        settings = self.settings.model_copy(update=overrides)
        result = process_event(
            event, settings, self.aws, Metrics(namespace="ImmutableGuardTest"), expected_account=ACCOUNT
        )
        return result.model_dump(mode="json")

    def groups(self) -> dict[str, list[str]]:
        interfaces = self.aws.ec2.describe_network_interfaces(
            Filters=[{"Name": "attachment.instance-id", "Values": [self.instance_id]}]
        )["NetworkInterfaces"]
        return {eni["NetworkInterfaceId"]: [g["GroupId"] for g in eni["Groups"]] for eni in interfaces}

    def isolation_groups(self) -> tuple[str, str]:
        """Our groups in the VPC, as Contain makes them the first time."""
        return (
            _get_or_create_group(self.aws.ec2, self.vpc, ROLE_PASSTHROUGH, {}, []),
            _get_or_create_group(self.aws.ec2, self.vpc, ROLE_ISOLATION, {}, []),
        )

    def executions(self) -> list[str]:
        arn = self.settings.remediation_state_machine_arn
        return [e["name"] for e in self.aws.stepfunctions.list_executions(stateMachineArn=arn)["executions"]]

    def contain(self, incident_id: str) -> dict[str, Any]:
        incident = self.ledger.get(incident_id)
        return quarantine_instance(self.aws, self.ledger, incident_id, self.instance_id, incident.finding)


@pytest.fixture
def world(aws: Clients, ledger: IncidentLedger, monkeypatch: pytest.MonkeyPatch) -> World:
    # EC2 replaces an interface's groups with the ones given (local runtime's fix, for this test only).
    moto_fixes.eni_groups_as_in_aws(
        lambda target, name, value: monkeypatch.setattr(target, name, value, raising=False)
    )
    ec2 = aws.ec2
    server = server_in_new_vpc(ec2, "10.0.0.0/16", ("web", "admin"))
    vpc, subnet, instance_id = server.vpc_id, server.subnet_id, server.instance_id
    web, admin = server.groups["web"], server.groups["admin"]
    # A second interface with other groups: every interface is isolated, and each gets its own back.
    second = ec2.create_network_interface(SubnetId=subnet, Groups=[admin])["NetworkInterface"]
    ec2.attach_network_interface(
        NetworkInterfaceId=second["NetworkInterfaceId"], InstanceId=instance_id, DeviceIndex=1
    )
    topic = aws.sns.create_topic(Name="alerts")["TopicArn"]
    dlq = aws.sqs.create_queue(QueueName="detect-dlq")["QueueUrl"]
    role = aws._session.client("iam").create_role(RoleName="sfn", AssumeRolePolicyDocument="{}")["Role"][
        "Arn"
    ]
    machine = aws.stepfunctions.create_state_machine(
        name="remediation", definition=PASS_MACHINE, roleArn=role
    )
    settings = DetectSettings(
        ledger_table="immutable-guard-ledger",
        alert_topic_arn=topic,
        mode=Mode.ENFORCE,
        scope_tag_key="immutable",
        scope_tag_value="true",
        own_role_arns=(OWN_ROLE,),
        max_incidents_per_hour=5,
        post_evidence_action="terminate",
        remediation_state_machine_arn=machine["stateMachineArn"],
        dead_letter_queue_url=dlq,
    )
    world = World(aws, ledger, settings, vpc, web, instance_id, [])
    world.enis = sorted(world.groups())
    return world


def test_detect_isolates_every_interface_right_after_the_lock_and_records_what_it_replaced(
    world: World,
) -> None:
    # Given our isolation groups exist in the VPC (a quarantine happened there before)
    _, isolation = world.isolation_groups()
    before = world.groups()
    # When Detect judges the attacker's change
    result = world.detect(world.event())
    # Then every interface is on the isolation group alone, before the workflow ran at all
    [outcome] = result["instances"]
    assert outcome["outcome"] == "opened"
    assert sorted(outcome["isolated"]) == world.enis
    assert world.groups() == {eni: [isolation] for eni in world.enis}
    # and the workflow was started to complete containment
    assert world.executions() == [outcome["incident_id"]]
    # and the groups it replaced were written with the lock, before the change
    incident = world.ledger.get(outcome["incident_id"])
    assert incident.prior_state is not None and incident.prior_state[PARTIAL] is True
    assert {eni["eni"]: eni["groups"] for eni in incident.prior_state["network_interfaces"]} == before
    assert incident.details[STAGE_ISOLATED]["by"] == "detect"


def test_dry_run_touches_nothing(world: World) -> None:
    world.isolation_groups()
    before = world.groups()
    result = world.detect(world.event(), mode=Mode.DRY_RUN)
    assert result["instances"][0]["isolated"] == []
    assert world.groups() == before
    assert world.executions() == []


def test_our_own_changes_touch_nothing(world: World) -> None:
    world.isolation_groups()
    before = world.groups()
    result = world.detect(world.event(arn=OWN_ROLE))
    assert result["decision"] == "ignore"
    assert world.groups() == before


def test_an_instance_already_locked_is_not_touched_again(world: World) -> None:
    # Given an open incident holds the instance, and its interfaces were given their groups back by hand
    world.isolation_groups()
    first = world.detect(world.event())
    for eni, groups in {eni: [world.web] for eni in world.enis}.items():
        world.aws.ec2.modify_network_interface_attribute(NetworkInterfaceId=eni, Groups=groups)
    before = world.groups()
    # When another change to it arrives
    event = world.event()
    event["id"] = event["detail"]["eventID"] = "another-change"
    second = world.detect(event)
    # Then it joins the open incident and Detect changes nothing (the open incident's workflow acts)
    assert second["instances"][0]["outcome"] == "duplicate"
    assert second["instances"][0]["incident_id"] == first["instances"][0]["incident_id"]
    assert world.groups() == before


def test_a_full_breaker_touches_nothing(world: World) -> None:
    world.isolation_groups()
    before = world.groups()
    # Given this hour's incidents reached the cap
    world.aws.dynamodb.put_item(
        TableName=world.settings.ledger_table,
        Item={"pk": {"S": f"BREAKER#{datetime.now(UTC):%Y-%m-%dT%H}"}, "incidents": {"N": "5"}},
    )
    result = world.detect(world.event())
    assert result["breaker_open"] is True
    assert result["instances"][0]["mode"] == "notify-only"
    assert world.groups() == before
    assert world.executions() == []


def test_the_workflow_completes_containment_after_detect_and_release_gives_every_group_back(
    world: World,
) -> None:
    # Given Detect isolated the instance
    _, isolation = world.isolation_groups()
    before = world.groups()
    incident_id = world.detect(world.event())["instances"][0]["incident_id"]
    # When the workflow's Contain runs (twice: a retry finds everything done)
    first = world.contain(incident_id)
    again = world.contain(incident_id)
    # Then it verified the isolation without undoing it, and reports the groups from before the attack
    assert world.groups() == {eni: [isolation] for eni in world.enis}
    assert sum("already isolated" in action for action in first["actions"]) == len(world.enis)
    assert {eni["eni"]: eni["previous_groups"] for eni in first["network_interfaces"]} == before
    assert again["network_interfaces"] == first["network_interfaces"]
    incident = world.ledger.get(incident_id)
    assert incident.status is Status.CONTAINED
    prior = incident.prior_state or {}
    assert not prior.get(PARTIAL) and "disable_api_termination" in prior
    # When a person releases it  Then each interface has its own groups again
    release_incident(world.aws, world.ledger, incident_id)
    assert world.groups() == before


def test_release_after_detect_alone_gives_the_groups_back_and_nothing_else(world: World) -> None:
    # Given Detect isolated the instance and the workflow never ran (e.g. it could not start)
    world.isolation_groups()
    before = world.groups()
    world.aws.ec2.modify_instance_attribute(
        InstanceId=world.instance_id, DisableApiTermination={"Value": True}
    )
    incident_id = world.detect(world.event())["instances"][0]["incident_id"]
    # When released
    result = release_incident(world.aws, world.ledger, incident_id)
    # Then the groups are back, and what Contain would have changed is left as it was
    assert world.groups() == before
    attribute = world.aws.ec2.describe_instance_attribute(
        InstanceId=world.instance_id, Attribute="disableApiTermination"
    )
    assert attribute["DisableApiTermination"]["Value"] is True
    assert any("Contain never ran" in action for action in result["actions"])


def test_without_isolation_groups_in_the_vpc_the_workflow_isolates(world: World) -> None:
    # Given the first quarantine in this VPC: Detect creates no groups, it hands over
    before = world.groups()
    incident_id = world.detect(world.event())["instances"][0]["incident_id"]
    assert world.groups() == before
    assert world.executions() == [incident_id]
    # When the workflow's Contain runs  Then it makes the groups and isolates, recording the real groups
    result = world.contain(incident_id)
    isolation = result["isolation_group_ids"]
    assert world.groups() == {eni: isolation for eni in world.enis}
    release_incident(world.aws, world.ledger, incident_id)
    assert world.groups() == before


def test_an_isolation_group_someone_opened_is_not_used_by_detect(world: World) -> None:
    # Given someone added a rule to our isolation group
    _, isolation = world.isolation_groups()
    world.aws.ec2.authorize_security_group_ingress(
        GroupId=isolation,
        IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
        ],
    )
    before = world.groups()
    # When Detect judges a change  Then it leaves the isolation to Contain, which repairs the group first
    incident_id = world.detect(world.event())["instances"][0]["incident_id"]
    assert world.groups() == before
    world.contain(incident_id)
    group = world.aws.ec2.describe_security_groups(GroupIds=[isolation])["SecurityGroups"][0]
    assert group["IpPermissions"] == [] and group["IpPermissionsEgress"] == []
    assert world.groups() == {eni: [isolation] for eni in world.enis}


def test_a_failed_first_response_leaves_the_isolation_to_the_workflow(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given EC2 refuses Detect's interface changes
    _, isolation = world.isolation_groups()
    before = world.groups()
    ec2 = world.aws.ec2

    def refused(**kwargs: Any) -> None:
        raise ClientError(
            {"Error": {"Code": "UnauthorizedOperation", "Message": "no"}}, "ModifyNetworkInterfaceAttribute"
        )

    # When Detect judges the change
    with monkeypatch.context() as patched:
        patched.setattr(ec2, "modify_network_interface_attribute", refused)
        result = world.detect(world.event())
    # Then nothing is isolated yet, and the workflow was started all the same
    [outcome] = result["instances"]
    assert outcome["isolated"] == [] and outcome["execution_arn"]
    assert world.groups() == before
    # and the workflow's Contain isolates
    world.contain(outcome["incident_id"])
    assert world.groups() == {eni: [isolation] for eni in world.enis}


def test_failed_reads_leave_the_isolation_to_the_workflow(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.isolation_groups()
    before = world.groups()

    def refused(**kwargs: Any) -> None:
        raise ClientError(
            {"Error": {"Code": "RequestLimitExceeded", "Message": "slow down"}}, "DescribeSecurityGroups"
        )

    monkeypatch.setattr(world.aws.ec2, "describe_security_groups", refused)
    result = world.detect(world.event())
    assert result["instances"][0]["isolated"] == [] and result["instances"][0]["execution_arn"]
    assert world.groups() == before


# ---------------------------------------------------------------- the groups made ahead of the first incident

FUNCTIONS = Path(__file__).resolve().parents[2] / "functions"


@pytest.fixture
def contain_function(world: World) -> Iterator[str]:
    """Contain deployed on moto, its real handler run in this process when invoked (the local runtime's
    Lambda runner); Detect is told its ARN, as template.yaml does in single-account mode."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("app.py", "")
    role = world.aws._session.client("iam").create_role(RoleName="contain", AssumeRolePolicyDocument="{}")
    arn = world.aws.lambda_.create_function(
        FunctionName="contain",
        Role=role["Role"]["Arn"],
        Runtime="python3.12",
        Handler="app.handler",
        Code={"ZipFile": archive.getvalue()},
        Environment={
            "Variables": {
                "LEDGER_TABLE": world.settings.ledger_table,
                "ALERT_TOPIC_ARN": world.settings.alert_topic_arn,
                "POWERTOOLS_METRICS_NAMESPACE": "ImmutableGuardTest",
            }
        },
    )["FunctionArn"]
    lambda_runner.register("contain", FUNCTIONS / "quarantine")
    lambda_runner.install()
    world.settings = world.settings.model_copy(update={"isolation_groups_function": arn})
    try:
        yield arn
    finally:
        lambda_runner.uninstall()


def _seen(world: World, event_id: str = "seen-1") -> dict[str, Any]:
    """Config reports the instance (CREATE): a benign event that names it, with its scope tag."""
    text = (EVENTS / "benign-config-resource-discovered.json").read_text()
    event: dict[str, Any] = json.loads(text.replace("i-0abc1234def567890", world.instance_id))
    event["id"] = event_id
    return event


def _our_groups(world: World) -> list[tuple[str, str]]:
    groups = world.aws.ec2.describe_security_groups(
        Filters=[{"Name": "tag-key", "Values": ["immutable-guard:role"]}]
    )["SecurityGroups"]
    return sorted(
        (g["VpcId"], next(t["Value"] for t in g["Tags"] if t["Key"] == "immutable-guard:role"))
        for g in groups
    )


def test_the_first_incident_in_a_vpc_where_the_instance_was_seen_is_isolated_by_detect(
    world: World, contain_function: str
) -> None:
    # Given a VPC without our groups, and an in-scope instance there that Detect sees for the first time
    assert _our_groups(world) == []
    seen = world.detect(_seen(world))
    assert seen["decision"] == "ignore"
    # Then Contain made both groups there (Detect asked; Detect itself creates no group). The invocation is
    # asynchronous: where the local runtime runs it on a thread of its own, as AWS does, wait for it.
    moto_fixes.wait_for_async_invocations()
    assert _our_groups(world) == [(world.vpc, ROLE_ISOLATION), (world.vpc, ROLE_PASSTHROUGH)]
    # When the first incident in that VPC comes  Then Detect's first response isolates every interface
    result = world.detect(world.event())
    [outcome] = result["instances"]
    assert sorted(outcome["isolated"]) == world.enis
    isolation = next(
        g["GroupId"]
        for g in world.aws.ec2.describe_security_groups(
            Filters=[{"Name": "tag:immutable-guard:role", "Values": [ROLE_ISOLATION]}]
        )["SecurityGroups"]
    )
    assert world.groups() == {eni: [isolation] for eni in world.enis}


def test_only_the_first_sighting_in_enforce_asks_for_the_groups_also_after_a_dry_run(
    world: World, contain_function: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[dict[str, Any]] = []
    invoke = world.aws.lambda_.invoke

    def recorded(**kwargs: Any) -> Any:
        asked.append({"type": kwargs["InvocationType"], "payload": json.loads(kwargs["Payload"])})
        return invoke(**kwargs)

    monkeypatch.setattr(world.aws.lambda_, "invoke", recorded)
    # Dry-run and notify-only change nothing in the account: no group is asked for while the stack runs so
    world.detect(_seen(world, "seen-dry"), mode=Mode.DRY_RUN)
    world.detect(_seen(world, "seen-notify"), mode=Mode.NOTIFY_ONLY)
    assert asked == [] and _our_groups(world) == []
    # When the stack is switched to enforce, the next sighting asks Contain, asynchronously, for its VPC
    world.detect(_seen(world, "seen-1"))
    moto_fixes.wait_for_async_invocations()
    assert asked == [{"type": "Event", "payload": {PREPARE_ISOLATION_GROUPS: {"vpc_ids": [world.vpc]}}}]
    assert _our_groups(world) == [(world.vpc, ROLE_ISOLATION), (world.vpc, ROLE_PASSTHROUGH)]
    # and later sightings of the same instance ask nothing more
    world.detect(_seen(world, "seen-2"))
    world.detect(world.event())
    assert len(asked) == 1


def test_a_failed_request_for_the_groups_leaves_them_to_the_first_incident(
    world: World, contain_function: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refused(**kwargs: Any) -> None:
        raise ClientError({"Error": {"Code": "AccessDeniedException", "Message": "no"}}, "Invoke")

    monkeypatch.setattr(world.aws.lambda_, "invoke", refused)
    seen = world.detect(_seen(world))
    assert seen["decision"] == "ignore" and _our_groups(world) == []
    # The first incident is then Contain's, as before: Detect hands over and moves nothing
    before = world.groups()
    result = world.detect(world.event())
    assert result["instances"][0]["isolated"] == [] and world.groups() == before


@pytest.mark.parametrize(
    "event",
    [
        {PREPARE_ISOLATION_GROUPS: {"vpc_ids": []}},
        {PREPARE_ISOLATION_GROUPS: {"vpc_ids": ["sg-12345678"]}},
        {PREPARE_ISOLATION_GROUPS: {"vpc_ids": ["vpc-1234567"]}},
        {PREPARE_ISOLATION_GROUPS: {"vpc_ids": "vpc-12345678"}},
        {PREPARE_ISOLATION_GROUPS: {"vpc_ids": ["vpc-12345678"]}, "incident_id": "ig-i-1-abc"},
    ],
)
def test_contain_refuses_a_malformed_preparation_request(event: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="malformed"):
        prepare_request_vpcs(event)


def test_many_vpcs_are_asked_for_in_requests_contain_accepts() -> None:
    class Recorder:
        def __init__(self) -> None:
            self.payloads: list[dict[str, Any]] = []

        def invoke(self, **kwargs: Any) -> dict[str, Any]:
            self.payloads.append(json.loads(kwargs["Payload"]))
            return {"StatusCode": 202}

    vpcs = [f"vpc-{n:08x}" for n in range(20)]
    recorder = Recorder()
    assert prepare_ahead(recorder, "contain", vpcs) is True  # type: ignore[arg-type]
    accepted = [prepare_request_vpcs(payload) for payload in recorder.payloads]
    assert [len(chunk or []) for chunk in accepted] == [16, 4]
    assert sorted(v for chunk in accepted for v in chunk or []) == vpcs
    assert prepare_ahead(recorder, "contain", []) is False  # type: ignore[arg-type]


def test_a_step_of_the_workflow_is_not_a_preparation_request() -> None:
    assert prepare_request_vpcs({"incident_id": "ig-i-1-abc", "instance_id": "i-1"}) is None
    assert prepare_request_vpcs({PREPARE_ISOLATION_GROUPS: {"vpc_ids": ["vpc-0a1b2c3d4e5f60719"]}}) == [
        "vpc-0a1b2c3d4e5f60719"
    ]


# ---------------------------------------------------------------- what a cold start pays for


class _CountingClients(Clients):
    """Clients that remember which service clients were made."""

    def __init__(self, inner: Clients) -> None:
        super().__init__(inner.session, region_name=inner.region)
        self.made: list[str] = []

    def _client(self, name: str) -> Any:
        self.made.append(name)
        return super()._client(name)


def test_an_event_judged_without_aws_makes_no_ec2_or_dynamodb_client(world: World) -> None:
    # Given a cold Detect (no client made yet) and an event the detector rejects on its own
    clients = _CountingClients(world.aws)
    event = json.loads((EVENTS / "benign-disable-rule-not-the-guards.json").read_text())
    # When it is judged
    result = process_event(event, world.settings, clients, Metrics(namespace="ImmutableGuardTest"), ACCOUNT)
    # Then neither client was made: making one parses its service model, a large part of a cold start
    assert result.decision == "ignore"
    assert "ec2" not in clients.made and "dynamodb" not in clients.made


def test_detect_does_not_import_the_x_ray_sdk() -> None:
    # Creating a Powertools Tracer imports the X-Ray SDK, the largest part of Detect's cold start (issue 15)
    repo = Path(__file__).resolve().parents[2]
    code = (
        "import sys; sys.path[:0] = [sys.argv[1], sys.argv[2]]; import app; "
        "assert 'aws_xray_sdk' not in sys.modules, 'X-Ray SDK imported'"
    )
    run = subprocess.run(
        [sys.executable, "-c", code, str(repo / "layers" / "guard"), str(repo / "functions" / "detect")],
        capture_output=True,
        text=True,
        env={**os.environ, "AWS_DEFAULT_REGION": "us-east-1"},
        check=False,
    )
    assert run.returncode == 0, run.stderr[-2000:]
