"""A local AWS Config recorder, because moto records nothing: it snapshots the EC2 resources Config records
and, when told to observe, emits one "Configuration Item Change" per resource that changed since the last
observation, with the status, diff and relatedEvents Config would give it.

Config items carry no actor. What caused a change is in ``relatedEvents``: the ids of the CloudTrail events
that named the resource since the last observation (``note``). A change and its note happen under ``lock``,
and so does a snapshot, so an observation never sees a change whose event it has not heard of yet.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterable
from typing import Any

import boto3

from immutable_guard.local import config_items
from immutable_guard.local.config_items import ConfigRecord

logger = logging.getLogger(__name__)

# Ids of the resources this recorder records, as they appear in CloudTrail request and response elements.
_RESOURCE_ID = re.compile(r"^(?:i|sg|eni|vol|eipalloc)-[0-9a-f]{8,17}$")

Snapshot = dict[tuple[str, str], ConfigRecord]


def _instances(ec2: Any, region: str, account_id: str) -> list[ConfigRecord]:
    pages = ec2.get_paginator("describe_instances").paginate()
    return [
        config_items.instance_record(instance, region, account_id)
        for page in pages
        for reservation in page["Reservations"]
        for instance in reservation["Instances"]
    ]


def _security_groups(ec2: Any, region: str, account_id: str) -> list[ConfigRecord]:
    pages = ec2.get_paginator("describe_security_groups").paginate()
    return [
        config_items.security_group_record(group, region, account_id)
        for page in pages
        for group in page["SecurityGroups"]
    ]


def _network_interfaces(ec2: Any, region: str, account_id: str) -> list[ConfigRecord]:
    pages = ec2.get_paginator("describe_network_interfaces").paginate()
    return [
        config_items.network_interface_record(eni, region, account_id)
        for page in pages
        for eni in page["NetworkInterfaces"]
    ]


def _volumes(ec2: Any, region: str, account_id: str) -> list[ConfigRecord]:
    pages = ec2.get_paginator("describe_volumes").paginate()
    return [
        config_items.volume_record(volume, region, account_id) for page in pages for volume in page["Volumes"]
    ]


def _addresses(ec2: Any, region: str, account_id: str) -> list[ConfigRecord]:
    return [
        config_items.address_record(address, region, account_id)
        for address in ec2.describe_addresses()["Addresses"]
    ]


# What this recorder can record, and how it reads each type (SSM inventory items are emitted by whoever
# changes a watched file: moto has no SSM Inventory).
READERS: dict[str, Callable[[Any, str, str], list[ConfigRecord]]] = {
    config_items.INSTANCE: _instances,
    config_items.SECURITY_GROUP: _security_groups,
    config_items.NETWORK_INTERFACE: _network_interfaces,
    config_items.VOLUME: _volumes,
    config_items.ELASTIC_IP: _addresses,
}


def resource_ids(event: dict[str, Any]) -> list[str]:
    """The recorded resources a CloudTrail event names in its request or response elements."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)
        elif isinstance(value, str) and _RESOURCE_ID.match(value) and value not in found:
            found.append(value)

    detail = event.get("detail") or {}
    walk(detail.get("requestParameters"))
    walk(detail.get("responseElements"))
    return found


class ConfigRecorder:
    """Records EC2 resources as AWS Config does and delivers each configuration item change.

    Parameters
    ----------
    session:
        boto3 session for the local AWS; its calls are reads and are not recorded.
    deliver:
        Called with each item's EventBridge event (the EventRouter's ``put``).
    region, account_id:
        Where the items say the resources are.
    resource_types:
        The types to record. When omitted, those of the account's configuration recorder (read from
        moto's Config at each observation), and nothing while that recorder is stopped or absent.
    """

    def __init__(
        self,
        session: boto3.Session,
        deliver: Callable[[dict[str, Any]], Any],
        region: str,
        account_id: str,
        resource_types: Iterable[str] | None = None,
    ) -> None:
        self._ec2 = session.client("ec2", region_name=region)
        self._config = session.client("config", region_name=region)
        self.deliver = deliver
        self.region = region
        self.account_id = account_id
        self.resource_types = None if resource_types is None else tuple(resource_types)
        # Held by a recorded change until its CloudTrail event is noted, and by a snapshot.
        self.lock = threading.RLock()
        self._pending: dict[str, list[str]] = {}
        self._snapshot: Snapshot | None = None
        self.items: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ what caused a change
    def note(self, event: dict[str, Any]) -> None:
        """Remember a CloudTrail event for the resources it names; a failed call changes nothing."""
        detail = event.get("detail") or {}
        if detail.get("errorCode") or detail.get("readOnly"):
            return
        event_id = str(detail.get("eventID") or "")
        with self.lock:
            for resource_id in resource_ids(event):
                self._pending.setdefault(resource_id, []).append(event_id)

    # ------------------------------------------------------------------ observation
    def recorded_types(self) -> tuple[str, ...]:
        """The types recorded now: none while the account's recorder is stopped, as in AWS."""
        if self.resource_types is not None:
            return tuple(t for t in self.resource_types if t in READERS)
        recorders = self._config.describe_configuration_recorders().get("ConfigurationRecorders", [])
        statuses = self._config.describe_configuration_recorder_status().get(
            "ConfigurationRecordersStatus", []
        )
        if not recorders or not any(status.get("recording") for status in statuses):
            return ()
        group = recorders[0].get("recordingGroup") or {}
        if group.get("allSupported"):
            return tuple(READERS)
        return tuple(t for t in group.get("resourceTypes") or [] if t in READERS)

    def _take(self, types: tuple[str, ...]) -> Snapshot:
        snapshot: Snapshot = {}
        for resource_type in types:
            for record in READERS[resource_type](self._ec2, self.region, self.account_id):
                snapshot[(record.resource_type, record.resource_id)] = record
        return snapshot

    def start(self) -> None:
        """Take the first snapshot without emitting: what exists now is the recorder's starting point."""
        with self.lock:
            self._snapshot = self._take(self.recorded_types())
            self._pending.clear()

    def observe(self) -> list[dict[str, Any]]:
        """Snapshot the recorded resources, deliver one item per change since the last observation, and
        return them. A first observation (no ``start``) discovers every resource."""
        with self.lock:
            types = self.recorded_types()
            if not types:
                return []  # a stopped recorder records nothing; what changed meanwhile is seen on restart
            current = self._take(types)
            previous = {key: record for key, record in (self._snapshot or {}).items() if key[0] in types}
            pending, self._pending = self._pending, {}
            items = self._changes(previous, current, pending)
            self._snapshot = current
            self.items.extend(items)
        for item in items:
            self.deliver(item)
        return items

    def _related(self, records: Iterable[ConfigRecord | None], pending: dict[str, list[str]]) -> list[str]:
        events: list[str] = []
        for record in records:
            if record is None:
                continue
            for resource_id in (record.resource_id, *record.related_ids()):
                events += [e for e in pending.get(resource_id, []) if e not in events]
        return events

    def _changes(
        self, previous: Snapshot, current: Snapshot, pending: dict[str, list[str]]
    ) -> list[dict[str, Any]]:
        items = []
        for key, record in current.items():
            before = previous.get(key)
            if before is None:
                status, changed = config_items.RESOURCE_DISCOVERED, {}
            else:
                changed = config_items.changed_properties(before, record)
                if not changed:
                    continue
                status = config_items.OK
            related = self._related((before, record), pending)
            items.append(
                config_items.record_event(record, status, changed, related, self.region, self.account_id)
            )
        for key, gone in previous.items():
            if key in current:
                continue
            changed = {
                "Configuration": {
                    "previousValue": gone.configuration,
                    "updatedValue": None,
                    "changeType": "DELETE",
                },
                **config_items.list_changes("Relationships", gone.relationships, []),
            }
            related = self._related((gone,), pending)
            items.append(
                config_items.record_event(
                    gone, config_items.RESOURCE_DELETED, changed, related, self.region, self.account_id
                )
            )
        return items
