"""The tool cannot be turned against the account: changes by allow-listed principals, by CloudFormation
and by Immutable Guard's own roles never remediate; forged events (another account, a custom source, a
user agent posing as CloudFormation) are refused; a burst over many servers trips the breaker, so only
MaxIncidentsPerHour of them are remediated."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_lambda_powertools import Metrics
from detect_load import ACCOUNT, EVENTS, OTHER_ACCOUNT, SAMPLE_INSTANCE, DetectWorld, detect_world
from immutable_guard.pipeline import process_event

OWN_ROLE = "arn:aws:iam::111122223333:role/immutable-guard-QuarantineFunctionRole-ABC"


def _ssh_key_event(instance_id: str, **detail: Any) -> dict[str, Any]:
    text = (
        (EVENTS / "cloudtrail-send-ssh-public-key.json")
        .read_text("utf-8")
        .replace(SAMPLE_INSTANCE, instance_id)
    )
    event: dict[str, Any] = json.loads(text)
    event["detail"].update(detail)
    return event


def _process(world: DetectWorld, event: Any) -> Any:
    return process_event(
        event, world.settings, world.clients, Metrics(namespace="x"), expected_account=ACCOUNT
    )


def _as(arn: str) -> dict[str, Any]:
    role = arn.replace(":sts::", ":iam::").replace("assumed-role/", "role/").rsplit("/", 1)[0]
    return {
        "type": "AssumedRole",
        "arn": arn,
        "accountId": ACCOUNT,
        "sessionContext": {"sessionIssuer": {"type": "Role", "arn": role, "accountId": ACCOUNT}},
    }


@pytest.mark.parametrize(
    ("who", "reason"),
    [
        (
            {"userIdentity": _as("arn:aws:sts::111122223333:assumed-role/deploy-pipeline/build-1")},
            "allow_listed_principal",
        ),
        (
            {
                "userIdentity": _as(
                    "arn:aws:sts::111122223333:assumed-role/immutable-guard-QuarantineFunctionRole-ABC/i"
                )
            },
            "own_change",
        ),
    ],
)
def test_known_changers_never_open_an_incident(who: dict[str, Any], reason: str) -> None:
    with detect_world(immutable=1, mutable=0) as world:
        result = _process(world, _ssh_key_event(world.immutable_ids[0], **who))
        assert (result.decision, result.reason) == ("ignore", reason)
        assert world.executions() == [] and world.ledger.list_incidents() == []


THROUGH_CLOUDFORMATION = {
    "sourceIPAddress": "cloudformation.amazonaws.com",
    "userAgent": "cloudformation.amazonaws.com",
}


@pytest.mark.parametrize(
    ("declared", "decision", "reason"),
    [
        (("web-stack",), "ignore", "cloudformation_change"),
        ((), "remediate", "mutation_of_immutable_instance"),
        (("another-stack",), "remediate", "mutation_of_immutable_instance"),
    ],
    ids=["declared", "nothing-declared", "another-stack-declared"],
)
def test_only_a_stack_the_operator_declared_may_change_its_servers_through_cloudformation(
    declared: tuple[str, ...], decision: str, reason: str
) -> None:
    # An attacker allowed to create a stack would otherwise have CloudFormation make any change for them.
    with detect_world(immutable=1, mutable=0) as world:
        server = world.immutable_ids[0]
        world.clients.ec2.create_tags(
            Resources=[server], Tags=[{"Key": "aws:cloudformation:stack-name", "Value": "web-stack"}]
        )
        world.settings = world.settings.model_copy(update={"scope_stack_names": declared})
        result = _process(world, _ssh_key_event(server, **THROUGH_CLOUDFORMATION))
        assert (result.decision, result.reason) == (decision, reason)
        assert len(world.executions()) == (decision == "remediate")


def test_a_user_agent_posing_as_cloudformation_is_not_trusted() -> None:
    with detect_world(immutable=1, mutable=0) as world:
        result = _process(
            world, _ssh_key_event(world.immutable_ids[0], userAgent="cloudformation.amazonaws.com")
        )
        assert result.decision == "remediate"


@pytest.mark.parametrize(
    "forge",
    [
        lambda e: json.loads(json.dumps(e).replace(ACCOUNT, OTHER_ACCOUNT)),  # another account's event
        pytest.param(
            lambda e: {**e, "source": "custom.attacker"},  # PutEvents by anyone, posing as CloudTrail
            id="custom-source",
        ),
        lambda e: {**e, "detail-type": "AWS API Call via CloudTrail (forged)"},
    ],
)
def test_forged_events_are_refused(forge: Any) -> None:
    with detect_world(immutable=1, mutable=0) as world:
        result = _process(world, forge(_ssh_key_event(world.immutable_ids[0])))
        assert result.decision in ("ignore", "reject"), result
        assert world.executions() == [] and world.ledger.list_incidents() == []


def test_a_burst_over_fifty_servers_remediates_only_the_hourly_cap() -> None:
    cap = 5
    with detect_world(immutable=50, mutable=0, max_incidents_per_hour=cap) as world:
        # Given a change pushed to 50 immutable servers at once (an attack, or a bad rollout)
        results = [_process(world, _ssh_key_event(i)) for i in world.immutable_ids]
        # Then only the cap is remediated; every other server is alerted on, not touched
        modes = [r.instances[0].mode for r in results]
        assert modes.count("enforce") == cap
        assert modes.count("notify-only") == 50 - cap
        assert len(world.executions()) == cap
        assert sum(r.breaker_open for r in results) == 50 - cap
        alerts = world.clients.sqs.receive_message(QueueUrl=world.subscriber_url, MaxNumberOfMessages=10)
        assert alerts.get("Messages")
        incidents = world.ledger.list_incidents(limit=100)
        assert len(incidents) == 50  # nothing lost: the rest are recorded as notified
