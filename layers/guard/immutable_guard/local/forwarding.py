"""The forwarding hop of organisation mode, played as EventBridge plays it: an event on an account's default
bus in one region goes through THAT account's rules (read from its own EventBridge API, as its
member-regional stack created them); a rule whose target is another account's bus puts the event there
(PutEvents on the bus ARN, with the account's credentials: the bus policy decides, moto_fixes section m),
and an event the bus admitted is handed to whoever routes that bus (the security account's EventRouter).

What the local runtime cannot be is events.amazonaws.com acting as the rule's RoleArn
(ImmutableGuard-Member-EventForwarder): the account's own credentials put the event, so the bus policy sees
the same account and organisation as it would see for the role. A refused delivery goes to the target's
dead-letter queue, as EventBridge sends it when a target cannot be reached for lack of permissions
(https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-rule-dlq.html: the message attributes
ERROR_CODE, ERROR_MESSAGE, RULE_ARN, TARGET_ARN).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.exceptions import ClientError

from immutable_guard.patterns import matches

logger = logging.getLogger(__name__)

Receiver = Callable[[dict[str, Any]], Any]


@dataclass
class Forwarded:
    """What became of one event on an account's default bus."""

    rules: list[str] = field(default_factory=list)  # the account's rules that matched it
    delivered: list[str] = field(default_factory=list)  # bus ARNs that admitted it
    refused: list[str] = field(default_factory=list)  # bus ARNs whose policy refused it


class AccountBus:
    """The default event bus of one account in one region, with the rules that account has on it.

    Parameters
    ----------
    session:
        A session of the account (its administrator), for its EventBridge and SQS APIs.
    region:
        The region of the bus.
    receivers:
        bus ARN -> function routing an event that bus admitted (e.g. the security account's
        ``EventRouter.put`` on its organisation bus).
    """

    def __init__(self, session: boto3.Session, region: str, receivers: Mapping[str, Receiver]) -> None:
        self.region = region
        self.receivers = receivers
        self._events = session.client("events", region_name=region)
        self._sqs = session.client("sqs", region_name=region)
        self.account = str(session.client("sts", region_name=region).get_caller_identity()["Account"])
        self.history: list[tuple[dict[str, Any], Forwarded]] = []

    def _rules(self) -> list[tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]]:
        """Each enabled rule of the default bus: (rule, pattern, targets), read now (a disabled or deleted
        rule forwards nothing from then on, as in EventBridge)."""
        found = []
        for page in self._events.get_paginator("list_rules").paginate(EventBusName="default"):
            for rule in page["Rules"]:
                if rule.get("State") != "ENABLED" or not rule.get("EventPattern"):
                    continue
                targets = self._events.list_targets_by_rule(Rule=rule["Name"], EventBusName="default")
                found.append(
                    (dict(rule), json.loads(rule["EventPattern"]), [dict(t) for t in targets["Targets"]])
                )
        return found

    def put(self, event: dict[str, Any]) -> Forwarded:
        """Route one event of this account and region (its envelope names them) through its rules."""
        if (event.get("account"), event.get("region")) != (self.account, self.region):
            raise ValueError(
                f"an event of {event.get('account')}/{event.get('region')} put on the default bus of "
                f"{self.account}/{self.region}"
            )
        outcome = Forwarded()
        for rule, pattern, targets in self._rules():
            if not matches(pattern, event):
                continue
            outcome.rules.append(rule["Name"])
            for target in targets:
                if ":event-bus/" in target["Arn"]:
                    self._to_bus(rule, target, event, outcome)
        self.history.append((event, outcome))
        return outcome

    def _to_bus(
        self, rule: dict[str, Any], target: dict[str, Any], event: dict[str, Any], outcome: Forwarded
    ) -> None:
        bus_arn = target["Arn"]
        entry: Any = {
            "Source": event["source"],
            "DetailType": event["detail-type"],
            "Detail": json.dumps(event["detail"]),
            "Resources": list(event.get("resources") or []),
            "EventBusName": bus_arn,
        }
        try:
            self._events.put_events(Entries=[entry])
        except ClientError as refused:
            error = refused.response["Error"]
            logger.warning("%s refused an event of %s: %s", bus_arn, self.account, error.get("Message"))
            outcome.refused.append(bus_arn)
            self._dead_letter(rule, target, event, "NO_PERMISSIONS", str(error.get("Message", "")))
            return
        outcome.delivered.append(bus_arn)
        receiver = self.receivers.get(bus_arn)
        if receiver is not None:
            # The event keeps its envelope (the source account and region), as a bus receiving from
            # another account's rule sees it.
            receiver(event)

    def _dead_letter(
        self, rule: dict[str, Any], target: dict[str, Any], event: dict[str, Any], code: str, message: str
    ) -> None:
        queue_arn = (target.get("DeadLetterConfig") or {}).get("Arn")
        if not queue_arn:
            return
        url = self._sqs.get_queue_url(QueueName=queue_arn.rsplit(":", 1)[1])["QueueUrl"]
        attributes = {
            "ERROR_CODE": code,
            "ERROR_MESSAGE": message[:1024],
            "RULE_ARN": rule["Arn"],
            "TARGET_ARN": target["Arn"],
        }
        self._sqs.send_message(
            QueueUrl=url,
            MessageBody=json.dumps(event),
            MessageAttributes={k: {"DataType": "String", "StringValue": v} for k, v in attributes.items()},
        )
