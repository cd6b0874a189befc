"""Detect's first response (issue 15): the two-step isolation right after the incident's lock is taken,
so a compromised server is off the network one cold start after the event, not two cold starts and a
state-machine hop later. The workflow's Contain step then verifies and completes containment; it finds
the interfaces already isolated and leaves them so (quarantine.py is idempotent).

The safety of the workflow's isolation is kept:
- the lock and the blast-radius breaker come first: the prior state below is written in the lock's own
  transaction (with the incident), and nothing is changed unless that transaction opened an enforce
  incident (dry-run, notify-only, a full breaker, a storm, an instance already locked: nothing is touched);
- the prior state is the interfaces' groups as the judge's DescribeInstances saw them, marked partial:
  Contain completes it (attributes, profile, volumes, launch source) before its first change, keeping the
  groups recorded here, so `release` restores what the instance had before the attack was answered;
- the same two-step swap as Contain (`quarantine._swap`: all traffic for an instant, then no rules; never
  left on the passthrough group), on interfaces the instance owns only (DescribeNetworkInterfaces says
  which are requester-managed), and only onto our own groups whose rules are what their role says. A VPC
  without them (the first quarantine there) or with a group someone changed is left to Contain, which
  creates or repairs them: Detect changes no security group, it only moves interfaces;
- any failure here is logged and swallowed: the workflow, started right after, isolates.

The first incident in a VPC would find no isolation groups there. So when Detect first sees an in-scope
instance in enforce (the first scope record of it that asks for the groups:
IncidentLedger.remember_in_scope), it asks Contain, asynchronously, to make both groups in the instance's
VPCs (`prepare_ahead`): Contain holds the group permissions, Detect only invokes it, and the first incident
in that VPC then takes the steady-state path.

Organisation mode keeps isolation in the workflow: Detect reads member accounts through the Reader role
only (docs/performance.md says why).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger
from botocore.exceptions import BotoCoreError, ClientError

from immutable_guard.errors import GuardError
from immutable_guard.remediation.quarantine import (
    GROUP_NAMES,
    MAX_PREPARED_VPCS,
    PREPARE_ISOLATION_GROUPS,
    ROLE_ISOLATION,
    ROLE_PASSTHROUGH,
    TAG_ROLE,
    _has_world_all_traffic,
    _swap,
    not_owned_reason,
    partial_prior_state,
)

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_lambda import LambdaClient

    from immutable_guard.clients import Clients

logger = Logger(child=True)

STAGE_ISOLATED = "isolated"
"""Timeline stage (with details) when Detect isolated interfaces itself."""


@dataclass
class Readings:
    """What the swap needs besides the prior state, read while the lock's transaction runs."""

    interfaces: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    groups: dict[tuple[str, str], Mapping[str, Any]] = field(default_factory=dict)


@dataclass
class FirstResponse:
    """Detect's isolation of one instance; ``outcome`` says what was done and what is left to Contain."""

    isolated: list[str] = field(default_factory=list)
    left_to_workflow: list[str] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)

    def as_details(self) -> dict[str, Any]:
        return {
            "by": "detect",
            "isolated": self.isolated,
            "left_to_workflow": self.left_to_workflow,
            "actions": self.actions,
        }


def read_for_isolation(ec2: EC2Client, instance_id: str) -> Readings:
    """The instance's attached interfaces and our groups, concurrently (one round trip)."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        interfaces = pool.submit(
            ec2.describe_network_interfaces,
            Filters=[{"Name": "attachment.instance-id", "Values": [instance_id]}],
        )
        groups = pool.submit(
            ec2.describe_security_groups,
            Filters=[{"Name": f"tag:{TAG_ROLE}", "Values": [ROLE_PASSTHROUGH, ROLE_ISOLATION]}],
        )
        readings = Readings(
            interfaces={eni["NetworkInterfaceId"]: eni for eni in interfaces.result()["NetworkInterfaces"]}
        )
        for group in groups.result()["SecurityGroups"]:
            role = next((t["Value"] for t in group.get("Tags", []) if t["Key"] == TAG_ROLE), None)
            if role in GROUP_NAMES and group.get("GroupName") == GROUP_NAMES[role]:
                readings.groups[(group.get("VpcId", ""), role)] = group
    return readings


def _as_their_role_says(passthrough: Mapping[str, Any], isolation: Mapping[str, Any]) -> bool:
    """Isolation: no rule at all. Passthrough: all traffic from and to everywhere (IPv4 and IPv6)."""
    if isolation.get("IpPermissions") or isolation.get("IpPermissionsEgress"):
        return False
    return all(_has_world_all_traffic(passthrough.get("IpPermissions", []))) and all(
        _has_world_all_traffic(passthrough.get("IpPermissionsEgress", []))
    )


def isolate(
    ec2: EC2Client, prior: Mapping[str, Any], readings: Readings, *, workers: int = 4
) -> FirstResponse:
    """The two-step swap on every interface recorded in ``prior`` that the instance owns, concurrently.
    Raises nothing: whatever is not isolated here is the workflow's."""
    response = FirstResponse()
    swaps: list[tuple[str, str, str, list[str]]] = []
    for recorded in prior.get("network_interfaces", []):
        eni_id = recorded["eni"]
        described = readings.interfaces.get(eni_id)
        if described is None:
            response.left_to_workflow.append(f"{eni_id}: no longer attached")
            continue
        if (reason := not_owned_reason(described)) is not None:
            response.left_to_workflow.append(f"{eni_id}: {reason}")
            continue
        vpc_id = str(described.get("VpcId", ""))
        passthrough = readings.groups.get((vpc_id, ROLE_PASSTHROUGH))
        isolation = readings.groups.get((vpc_id, ROLE_ISOLATION))
        if passthrough is None or isolation is None:
            response.left_to_workflow.append(f"{eni_id}: no isolation groups in {vpc_id} yet")
            continue
        if not _as_their_role_says(passthrough, isolation):
            response.left_to_workflow.append(f"{eni_id}: the isolation groups of {vpc_id} need repair")
            continue
        current = [group["GroupId"] for group in described.get("Groups", [])]
        if current == [isolation["GroupId"]]:
            response.actions.append(f"{eni_id} already isolated")
            continue
        swaps.append((eni_id, str(passthrough["GroupId"]), str(isolation["GroupId"]), current))
    if not swaps:
        return response

    def swap(eni_id: str, passthrough: str, isolation: str, current: list[str]) -> list[str]:
        actions: list[str] = []
        _swap(ec2, eni_id, passthrough, isolation, current, actions)
        return [*actions, f"isolated {eni_id} (was {', '.join(current) or 'no group'})"]

    with ThreadPoolExecutor(max_workers=min(workers, len(swaps))) as pool:
        futures = [(args[0], pool.submit(swap, *args)) for args in swaps]
        for eni_id, future in futures:
            try:
                response.actions.extend(future.result())
                response.isolated.append(eni_id)
            except (GuardError, ClientError, BotoCoreError) as exc:
                logger.warning("first response could not isolate", extra={"eni": eni_id, "error": str(exc)})
                response.left_to_workflow.append(f"{eni_id}: {exc}")
    return response


@dataclass
class Responder:
    """What Triage needs to isolate: the clients where the instance is, and the judge's descriptions."""

    clients: Clients
    described: Mapping[str, Mapping[str, Any]]

    @property
    def ec2(self) -> EC2Client:
        # Made by the judge already when an instance was described (boto3 sessions are not thread-safe:
        # ask for it in the triage's thread before handing it to a reader thread).
        return self.clients.ec2

    def prior_state(self, instance_id: str) -> dict[str, Any] | None:
        instance = self.described.get(instance_id)
        return partial_prior_state(instance) if instance is not None else None


def vpcs_of(instance_ids: Iterable[str], described: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The VPCs of the instances' interfaces as the judge's DescribeInstances saw them (an interface can
    be in another VPC than the instance's primary one only through a multi-VPC attachment)."""
    vpcs: set[str] = set()
    for instance_id in instance_ids:
        instance = described.get(instance_id)
        if instance is None:
            continue
        if instance.get("VpcId"):
            vpcs.add(str(instance["VpcId"]))
        vpcs.update(str(eni["VpcId"]) for eni in instance.get("NetworkInterfaces", []) if eni.get("VpcId"))
    return sorted(vpcs)


def prepare_ahead(lambda_: LambdaClient, function: str, vpc_ids: list[str]) -> bool:
    """Ask ``function`` (Contain) to make the isolation groups of ``vpc_ids``, asynchronously
    (InvocationType Event: Lambda queues the event and answers 202 at once,
    https://docs.aws.amazon.com/lambda/latest/api/API_Invoke.html). Off the event's path: called after the
    triage. Raises nothing: without the groups, the first incident there is isolated by Contain, which
    makes them then. True when Lambda accepted a request."""
    asked = False
    # Contain takes at most MAX_PREPARED_VPCS per request.
    for start in range(0, len(vpc_ids), MAX_PREPARED_VPCS):
        chunk = vpc_ids[start : start + MAX_PREPARED_VPCS]
        try:
            lambda_.invoke(
                FunctionName=function,
                InvocationType="Event",
                Payload=json.dumps({PREPARE_ISOLATION_GROUPS: {"vpc_ids": chunk}}).encode(),
            )
        except (ClientError, BotoCoreError) as exc:
            logger.warning("isolation groups not prepared ahead", extra={"vpc_ids": chunk, "error": str(exc)})
            continue
        logger.info("isolation groups requested ahead of the first incident", extra={"vpc_ids": chunk})
        asked = True
    return asked
