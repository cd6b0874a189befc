"""Delivers events to functions by the template's EventBridge rules, because moto's EventBridge cannot
invoke Lambda targets and its matcher cannot look into lists of objects."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import boto3

from immutable_guard.local.deploy import Deployment
from immutable_guard.patterns import matches
from immutable_guard.template import EventRule, event_rules

logger = logging.getLogger(__name__)


class EventRouter:
    """Matches events against the deployed template's rules and invokes each matching rule's function.

    A function that raises is treated like an asynchronous invocation whose retries are exhausted: the
    event goes to the function's dead-letter queue with the error, as Lambda sends it.

    Parameters
    ----------
    deployment:
        The local deployment whose rules and functions are used.
    session:
        boto3 session for the local AWS; a default session (AWS_ENDPOINT_URL) when omitted.
    """

    def __init__(self, deployment: Deployment, session: boto3.Session | None = None) -> None:
        self.deployment = deployment
        self._session = session or boto3.Session(region_name=deployment.region)
        self._lambda: Any = None
        self._sqs: Any = None
        self._sns: Any = None
        deployed = set(deployment.physical_ids)
        self.rules: list[EventRule] = [
            rule for rule in event_rules(deployment.template) if rule.logical_id in deployed
        ]
        # Each rule listens on one bus: the default one unless the deployed rule names another (organisation
        # mode puts Detect's rules on its own bus); an event reaches only the rules of the bus it is put on.
        self.buses: dict[str, str] = {
            rule.logical_id: str(
                (deployment.properties.get(rule.logical_id) or {}).get("EventBusName", "default")
            )
            for rule in self.rules
        }
        self.delivered: list[tuple[str, dict[str, Any]]] = []
        self.failures: list[tuple[str, dict[str, Any], dict[str, Any]]] = []

    def _client(self, name: str) -> Any:
        attribute = f"_{name}"
        if getattr(self, attribute) is None:
            setattr(self, attribute, self._session.client(name, region_name=self.deployment.region))  # type: ignore[call-overload]
        return getattr(self, attribute)

    def envelope(self, event: dict[str, Any]) -> dict[str, Any]:
        """The event with the fields EventBridge adds (id, time, account, region, resources)."""
        return {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": event.get("detail-type", ""),
            "source": event.get("source", ""),
            "account": self.deployment.account_id,
            "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "region": self.deployment.region,
            "resources": [],
            "detail": {},
            **event,
        }

    def put(self, event: dict[str, Any], bus: str = "default") -> list[str]:
        """Route one event put on ``bus`` (a name); return the logical ids of the rules that matched it."""
        event = self.envelope(event)
        matched = []
        for rule in self.rules:
            if self.buses[rule.logical_id] != bus or not matches(rule.pattern, event):
                continue
            matched.append(rule.logical_id)
            if rule.function_logical_id:
                self._invoke(rule, event)
        return matched

    def hear_executions(self) -> Callable[[], None]:
        """Route every "Step Functions Execution Status Change" of the local Step Functions, as Step
        Functions sends them to EventBridge; returns the function that stops it."""
        from immutable_guard.local.moto_fixes import listen_to_executions

        return listen_to_executions(self.put)

    def put_entry(self, source: str, detail_type: str, detail: dict[str, Any], **fields: Any) -> list[str]:
        """``PutEvents``-style convenience: route an event built from its parts."""
        return self.put({"source": source, "detail-type": detail_type, "detail": detail, **fields})

    def _invoke(self, rule: EventRule, event: dict[str, Any]) -> None:
        function_name = self.deployment.function_names[rule.function_logical_id]
        response = self._client("lambda").invoke(
            FunctionName=function_name, InvocationType="RequestResponse", Payload=json.dumps(event).encode()
        )
        payload_text = response["Payload"].read().decode() or "null"
        if "FunctionError" not in response:
            self.delivered.append((rule.logical_id, event))
            return
        error = json.loads(payload_text)
        logger.warning("%s failed on %s: %s", function_name, event.get("id"), error.get("errorMessage"))
        self.failures.append((rule.logical_id, event, error))
        request_id = response["ResponseMetadata"].get("RequestId", "")
        self._dead_letter(rule.function_logical_id, event, error, request_id)

    def _dead_letter(
        self, function_logical_id: str, event: dict[str, Any], error: dict[str, Any], request_id: str
    ) -> None:
        function_name = self.deployment.function_names[function_logical_id]
        target = self.deployment.dead_letter_targets.get(function_logical_id)
        if not target:
            logger.warning("%s has no dead-letter queue: event %s is lost", function_name, event.get("id"))
            return
        attributes = {
            "RequestID": {"DataType": "String", "StringValue": request_id or str(uuid.uuid4())},
            "ErrorCode": {"DataType": "Number", "StringValue": "200"},
            "ErrorMessage": {
                "DataType": "String",
                "StringValue": f"{error.get('errorType', 'Error')}: {error.get('errorMessage', '')}"[:1024],
            },
        }
        body = json.dumps(event)
        if ":sqs:" in target:
            queue_name = target.rsplit(":", 1)[1]
            account = target.split(":")[4]
            url = self._client("sqs").get_queue_url(QueueName=queue_name, QueueOwnerAWSAccountId=account)[
                "QueueUrl"
            ]
            self._client("sqs").send_message(QueueUrl=url, MessageBody=body, MessageAttributes=attributes)
        else:
            self._client("sns").publish(TopicArn=target, Message=body, MessageAttributes=attributes)
