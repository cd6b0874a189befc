"""The incident ledger (DynamoDB): one open incident per instance, a timeline per incident, the state
needed to undo a quarantine, and the blast-radius breakers (hourly counters organisation-wide, per account
and per account-region; the organisation storm). Conditional writes make every step safe to run twice."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError
from pydantic import BaseModel, ConfigDict, Field

from immutable_guard.errors import AwsCallFailed, IncidentNotFound

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

# A lock outlives any remediation (hours) but not a forgotten one: a stale lock must not blind us forever.
LOCK_TTL_SECONDS = 7 * 24 * 3600
EVENT_TTL_SECONDS = 2 * 24 * 3600
BREAKER_TTL_SECONDS = 2 * 3600
INCIDENT_TTL_SECONDS = 400 * 24 * 3600
# A server seen in scope is remembered as long as an incident is: refreshed on every sighting.
SCOPE_TTL_SECONDS = INCIDENT_TTL_SECONDS
# On a scope record: the instance's VPCs' isolation groups were asked for (issue 15, first_response.py).
GROUPS_ASKED = "groups_asked"
# Config reports a change minutes after CloudTrail; its echo is matched to the change only this long.
ECHO_WINDOW_SECONDS = 3600
# An organisation storm keeps the organisation in notify-only this long, unless a person clears it first.
STORM_HOLD_SECONDS = 3600
_STORM_KEY = {"pk": {"S": "STORM#CURRENT"}}
_STORM_WATCH_KEY = {"pk": {"S": "STORM#WATCH"}}
_SEEN_PREFIX = "seen_"


class Status(StrEnum):
    OPEN = "OPEN"
    CONTAINED = "CONTAINED"
    EVIDENCE_COMPLETE = "EVIDENCE_COMPLETE"
    REPLACED = "REPLACED"
    CLOSED = "CLOSED"
    AWAITING_MANUAL_REPLACEMENT = "AWAITING_MANUAL_REPLACEMENT"
    FAILED = "FAILED"
    RELEASED = "RELEASED"
    DRY_RUN = "DRY_RUN"
    NOTIFIED = "NOTIFIED"


class Incident(BaseModel):
    """What the ledger holds about one incident (one instance, one compromise)."""

    incident_id: str
    instance_id: str
    status: Status = Status.OPEN
    mode: str
    decision: str
    kind: str
    severity: str
    account: str
    region: str
    created_at: str
    finding: dict[str, Any] = Field(default_factory=dict)
    timeline: dict[str, str] = Field(default_factory=dict)
    prior_state: dict[str, Any] | None = None
    details: dict[str, Any] = Field(default_factory=dict)
    related_event_ids: list[str] = Field(default_factory=list)


class Breaker(StrEnum):
    """Which blast-radius breaker demoted an incident to notify-only."""

    ORGANIZATION = "organization"  # every account together: MaxIncidentsPerHour (today's hourly breaker)
    ACCOUNT = "account"  # one account: MaxIncidentsPerAccountHour
    ACCOUNT_REGION = "account_region"  # one account in one region: MaxIncidentsPerAccountRegionHour
    STORM = "organization_storm"  # changes in OrgStormAccounts accounts within OrgStormWindowMinutes


class Cap(BaseModel):
    """One hourly counter an enforce incident must fit under: ``scope`` is "" (organisation-wide, the item
    ``BREAKER#<hour>`` as before), an account id, or ``<account>:<region>``."""

    model_config = ConfigDict(frozen=True)

    breaker: Breaker
    scope: str
    limit: int

    def key(self, hour: str) -> dict[str, Any]:
        return {"pk": {"S": f"BREAKER#{hour}#{self.scope}" if self.scope else f"BREAKER#{hour}"}}


def caps_for(
    account: str,
    region: str,
    per_hour: int,
    per_account: int | None = None,
    per_account_region: int | None = None,
) -> list[Cap]:
    """The caps an enforce incident in ``account`` and ``region`` must fit under; a limit of None has no
    counter of its own."""
    caps = [Cap(breaker=Breaker.ORGANIZATION, scope="", limit=per_hour)]
    if per_account is not None:
        caps.append(Cap(breaker=Breaker.ACCOUNT, scope=account, limit=per_account))
    if per_account_region is not None:
        caps.append(
            Cap(breaker=Breaker.ACCOUNT_REGION, scope=f"{account}:{region}", limit=per_account_region)
        )
    return caps


class Storm(BaseModel):
    """The organisation storm in force: every new incident is notify-only until ``until`` or a clear."""

    opened_at: str
    until: str
    accounts: list[str]


class OpenResult(BaseModel):
    opened: bool
    incident_id: str
    # The caps that were full: nothing was written, the incident must be opened in notify-only instead.
    tripped: list[Cap] = Field(default_factory=list)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _hour() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H")


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _incident_key(incident_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"INCIDENT#{incident_id}"}}


def instance_key(kind: str, account: str, region: str, name: str) -> dict[str, Any]:
    """The key of a record about one instance (or one change) of one account and region, e.g.
    ``LOCK#111122223333:eu-west-1:i-0abc``: in an organisation, ids are only unique per account and region."""
    return {"pk": {"S": f"{kind}#{account}:{region}:{name}"}}


def _storm_in_force(item: dict[str, Any] | None) -> Storm | None:
    """The storm a ledger item holds, unless it has expired (TTL deletion lags by up to days)."""
    if not item or int(item["expires_at"]["N"]) < int(time.time()):
        return None
    return Storm(
        opened_at=item["opened_at"]["S"],
        until=item["until"]["S"],
        accounts=[a["S"] for a in item["accounts"]["L"]],
    )


class IncidentLedger:
    """Reads and writes incidents.

    Parameters
    ----------
    dynamodb:
        A DynamoDB client.
    table_name:
        The ledger table (template.yaml: IncidentLedger).
    """

    def __init__(
        self, dynamodb: DynamoDBClient, table_name: str, place: tuple[str, str] | None = None
    ) -> None:
        self._db = dynamodb
        self._table = table_name
        self._place = place

    def at(self, account: str, region: str) -> IncidentLedger:
        """This ledger for the instances of ``account`` and ``region``: the records that name an instance
        (its lock, its scope, its release) and a change are kept per account and region."""
        return IncidentLedger(self._db, self._table, (account, region))

    def _key(self, kind: str, name: str) -> dict[str, Any]:
        if self._place is None:
            raise RuntimeError(
                f"ledger {self._table}: a {kind} record names an instance of one account and region: "
                "use ledger.at(account, region)"
            )
        return instance_key(kind, *self._place, name)

    # ------------------------------------------------------------------ detection side
    def first_sighting(self, event_id: str) -> bool:
        """True the first time an event id is seen; EventBridge delivers at least once."""
        try:
            self._db.put_item(
                TableName=self._table,
                Item={
                    "pk": {"S": f"EVENT#{event_id}"},
                    "seen_at": {"S": now_iso()},
                    "expires_at": {"N": str(int(time.time()) + EVENT_TTL_SECONDS)},
                },
                ConditionExpression="attribute_not_exists(pk)",
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise AwsCallFailed(f"ledger {self._table}: cannot record event {event_id}: {exc}") from exc
        return True

    def forget_sighting(self, event_id: str) -> None:
        """Undo first_sighting when handling the event failed, so its redelivery is handled again."""
        try:
            self._db.delete_item(TableName=self._table, Key={"pk": {"S": f"EVENT#{event_id}"}})
        except ClientError as exc:
            raise AwsCallFailed(f"ledger {self._table}: cannot forget event {event_id}: {exc}") from exc

    def remember_exempt(self, event_id: str, change_key: str, reason: str) -> None:
        """Remember that a CloudTrail event (and the change it made) was judged exempt for `reason`, so
        Config's echo of it takes the same judgement: by event id (items naming `relatedEvents`), and by
        change for a short window (items naming none)."""
        now = int(time.time())
        records = [
            (f"EXEMPT#EVENT#{event_id}", now + EVENT_TTL_SECONDS, "attribute_not_exists(pk)"),
            # The latest exempt change wins: the window starts again with each one.
            (self._key("EXEMPT#CHANGE", change_key)["pk"]["S"], now + ECHO_WINDOW_SECONDS, None),
        ]
        for key, expires_at, condition in records:
            kwargs: dict[str, Any] = {
                "TableName": self._table,
                "Item": {
                    "pk": {"S": key},
                    "reason": {"S": reason},
                    "event_id": {"S": event_id},
                    "seen_at": {"S": now_iso()},
                    "expires_at": {"N": str(expires_at)},
                },
            }
            if condition:
                kwargs["ConditionExpression"] = condition
            try:
                self._db.put_item(**kwargs)
            except ClientError as exc:
                if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                    continue
                raise AwsCallFailed(
                    f"ledger {self._table}: cannot remember exempt {event_id}: {exc}"
                ) from exc

    def remember_released(self, instance_id: str, incident_id: str) -> None:
        """Remember that the guard released `instance_id` just now: Config's report of what Release
        restored (groups, profile, its own tags) is the guard's own change, even when it names no event.
        An update, not a put: the Release function may update ledger items, not create them blindly."""
        try:
            self._db.update_item(
                TableName=self._table,
                Key=self._key("RELEASED", instance_id),
                UpdateExpression="SET incident_id = :i, released_at = :now, expires_at = :exp",
                ExpressionAttributeValues={
                    ":i": {"S": incident_id},
                    ":now": {"S": now_iso()},
                    ":exp": {"N": str(int(time.time()) + ECHO_WINDOW_SECONDS)},
                },
            )
        except ClientError as exc:
            raise AwsCallFailed(
                f"ledger {self._table}: cannot record the release of {instance_id}: {exc}"
            ) from exc

    def released_recently(self, instance_id: str) -> str | None:
        """The incident that released `instance_id` within the echo window, if one did."""
        try:
            item = self._db.get_item(
                TableName=self._table, Key=self._key("RELEASED", instance_id), ConsistentRead=True
            ).get("Item")
        except ClientError as exc:
            raise AwsCallFailed(
                f"ledger {self._table}: cannot read the release of {instance_id}: {exc}"
            ) from exc
        if not item or int(item["expires_at"]["N"]) < int(time.time()):
            return None
        return item["incident_id"]["S"]

    def exempt_reason_of_event(self, event_id: str) -> str | None:
        """The reason CloudTrail event `event_id` was judged exempt, if it was (and not long ago)."""
        return self._exempt_reason(f"EXEMPT#EVENT#{event_id}")

    def exempt_reason_of_change(self, change_key: str) -> str | None:
        """The reason the same change was judged exempt within the echo window, if it was."""
        return self._exempt_reason(self._key("EXEMPT#CHANGE", change_key)["pk"]["S"])

    def _exempt_reason(self, key: str) -> str | None:
        try:
            item = self._db.get_item(TableName=self._table, Key={"pk": {"S": key}}, ConsistentRead=True).get(
                "Item"
            )
        except ClientError as exc:
            raise AwsCallFailed(f"ledger {self._table}: cannot read {key}: {exc}") from exc
        # TTL deletion lags by up to days: an expired record counts as absent.
        if not item or int(item["expires_at"]["N"]) < int(time.time()):
            return None
        return item["reason"]["S"]

    def open_incident(
        self, incident: Incident, lock_seconds: int = LOCK_TTL_SECONDS, caps: Sequence[Cap] = ()
    ) -> OpenResult:
        """Open an incident unless the instance already has an open one (lock + record, atomically).

        A dry-run or notify-only incident holds its lock briefly (`lock_seconds`): it only groups repeated
        reports of one change; nothing is remediated that the lock would protect.

        An enforce incident passes its blast-radius ``caps``: each hourly counter is raised in the same
        transaction as the lock, on condition that it is below its limit, so no two incidents can both take
        the last place. When a counter is full nothing is written and the result names the full ``tripped``
        caps (the incident is then opened again in notify-only, without caps).
        """
        now = int(time.time())
        hour = _hour()
        item = _incident_item(incident)
        counters: list[Any] = [
            {
                "Update": {
                    "TableName": self._table,
                    "Key": cap.key(hour),
                    "UpdateExpression": "ADD incidents :one SET expires_at = :exp, breaker = :b, #cap = :cap",
                    "ConditionExpression": "attribute_not_exists(incidents) OR incidents < :cap",
                    "ExpressionAttributeNames": {"#cap": "cap"},
                    "ExpressionAttributeValues": {
                        ":one": {"N": "1"},
                        ":exp": {"N": str(now + BREAKER_TTL_SECONDS)},
                        ":b": {"S": cap.breaker.value},
                        ":cap": {"N": str(cap.limit)},
                    },
                }
            }
            for cap in caps
        ]
        try:
            self._db.transact_write_items(
                TransactItems=[
                    {
                        "Put": {
                            "TableName": self._table,
                            "Item": {
                                **instance_key(
                                    "LOCK", incident.account, incident.region, incident.instance_id
                                ),
                                "incident_id": {"S": incident.incident_id},
                                "expires_at": {"N": str(now + lock_seconds)},
                            },
                            # TTL deletion lags by up to days: an expired lock counts as free.
                            "ConditionExpression": "attribute_not_exists(pk) OR expires_at < :now",
                            "ExpressionAttributeValues": {":now": {"N": str(now)}},
                        }
                    },
                    {
                        "Put": {
                            "TableName": self._table,
                            "Item": item,
                            "ConditionExpression": "attribute_not_exists(pk)",
                        }
                    },
                    *counters,
                ]
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "TransactionCanceledException":
                raise AwsCallFailed(
                    f"ledger {self._table}: cannot open incident for {incident.instance_id}: {exc}"
                ) from exc
            # One reason per item, in the order of the request; "None" where the item was not the cause
            # (https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_TransactWriteItems.html).
            codes = [r.get("Code") for r in exc.response.get("CancellationReasons", [])]
            lock_free = codes[:2] == ["None", "None"]
            tripped = [
                cap for cap, code in zip(caps, codes[2:], strict=False) if code == "ConditionalCheckFailed"
            ]
            if lock_free and tripped:
                return OpenResult(opened=False, incident_id=incident.incident_id, tripped=tripped)
            holder = self.at(incident.account, incident.region).open_incident_for(incident.instance_id)
            if holder is None:  # the lock vanished between our write and our read: try once more
                return self.open_incident(incident, lock_seconds, caps)
            return OpenResult(opened=False, incident_id=holder)
        return OpenResult(opened=True, incident_id=incident.incident_id)

    def open_incident_for(self, instance_id: str) -> str | None:
        """The id of the instance's open incident, if it has one."""
        response = self._db.get_item(
            TableName=self._table, Key=self._key("LOCK", instance_id), ConsistentRead=True
        )
        item = response.get("Item")
        if not item or int(item["expires_at"]["N"]) < int(time.time()):
            return None
        return item["incident_id"]["S"]

    def was_in_scope(self, instance_id: str, scope_tag: str) -> bool:
        """True when the instance was seen carrying `scope_tag` ("key=value") and that was not undone by
        an exempt principal since. A server seen under another scope tag (the operator changed it) is not."""
        try:
            item = self._db.get_item(TableName=self._table, Key=self._key("SCOPE", instance_id)).get("Item")
        except ClientError as exc:
            raise AwsCallFailed(
                f"ledger {self._table}: cannot read the scope of {instance_id}: {exc}"
            ) from exc
        return item is not None and item.get("scope_tag", {}).get("S") == scope_tag

    def remember_in_scope(
        self, instance_id: str, scope_tag: str, event_id: str, *, groups_wanted: bool = False
    ) -> bool:
        """Remember that the instance carried `scope_tag` when `event_id` was judged. With `groups_wanted`
        (enforce, single-account mode) the record is marked as the instance whose VPCs' isolation groups
        were asked for; True when this write is the first to mark it (its first sighting in enforce, or the
        first since dry-run or notify-only wrote it, or since its record expired). The same write returns
        the item it replaced (ReturnValues ALL_OLD, no extra round trip:
        https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_PutItem.html)."""
        item = {
            **self._key("SCOPE", instance_id),
            "scope_tag": {"S": scope_tag},
            "seen_at": {"S": now_iso()},
            "event_id": {"S": event_id},
            "expires_at": {"N": str(int(time.time()) + SCOPE_TTL_SECONDS)},
        }
        if groups_wanted:
            item[GROUPS_ASKED] = {"BOOL": True}
        try:
            response = self._db.put_item(TableName=self._table, Item=item, ReturnValues="ALL_OLD")
        except ClientError as exc:
            raise AwsCallFailed(
                f"ledger {self._table}: cannot remember the scope of {instance_id}: {exc}"
            ) from exc
        return groups_wanted and GROUPS_ASKED not in response.get("Attributes", {})

    def forget_scope(self, instance_id: str) -> None:
        """An exempt principal took the instance out of scope: it is no longer remembered as in scope."""
        try:
            self._db.delete_item(TableName=self._table, Key=self._key("SCOPE", instance_id))
        except ClientError as exc:
            raise AwsCallFailed(
                f"ledger {self._table}: cannot forget the scope of {instance_id}: {exc}"
            ) from exc

    def add_related_event(self, incident_id: str, event_id: str) -> None:
        """Remember a duplicate report (the same change seen again, or by Config after CloudTrail)."""
        self._update(
            incident_id,
            "SET related_event_ids = list_append(if_not_exists(related_event_ids, :empty), :e)",
            {":e": {"L": [{"S": event_id}]}, ":empty": {"L": []}},
        )

    def count_incident_this_hour(self) -> int:
        """Count one more incident in the current hour and return the hour's total (atomic)."""
        hour = _hour()
        try:
            response = self._db.update_item(
                TableName=self._table,
                Key={"pk": {"S": f"BREAKER#{hour}"}},
                UpdateExpression="ADD incidents :one SET expires_at = :exp",
                ExpressionAttributeValues={
                    ":one": {"N": "1"},
                    ":exp": {"N": str(int(time.time()) + BREAKER_TTL_SECONDS)},
                },
                ReturnValues="UPDATED_NEW",
            )
        except ClientError as exc:
            raise AwsCallFailed(f"ledger {self._table}: cannot count incidents: {exc}") from exc
        return int(response["Attributes"]["incidents"]["N"])

    def incidents_this_hour(self) -> int:
        """Organisation-wide: enforce incidents counted this hour, and those the breaker demoted."""
        item = self._db.get_item(TableName=self._table, Key={"pk": {"S": f"BREAKER#{_hour()}"}}).get("Item")
        if not item:
            return 0
        return sum(int(item[name]["N"]) for name in ("incidents", "demoted") if name in item)

    def mark_breaker_alerted(self) -> bool:
        """True only for the first caller in this hour: one alert says the breaker is open."""
        hour = _hour()
        try:
            self._db.update_item(
                TableName=self._table,
                Key={"pk": {"S": f"BREAKER#{hour}"}},
                UpdateExpression="SET breaker_alerted = :t",
                ConditionExpression="attribute_not_exists(breaker_alerted)",
                ExpressionAttributeValues={":t": {"S": now_iso()}},
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise AwsCallFailed(f"ledger {self._table}: cannot record breaker alert: {exc}") from exc
        return True

    def record_demotion(self, cap: Cap) -> bool:
        """Count one incident ``cap`` demoted to notify-only this hour; True only for the first one, which
        sends the one alert saying this breaker is open (one atomic update: the first sets the mark)."""
        try:
            response = self._db.update_item(
                TableName=self._table,
                Key=cap.key(_hour()),
                UpdateExpression=(
                    "ADD demoted :one SET breaker_alerted = if_not_exists(breaker_alerted, :now)"
                ),
                ExpressionAttributeValues={":one": {"N": "1"}, ":now": {"S": now_iso()}},
                # The item as it was: whether an "updated" attribute kept by if_not_exists is returned
                # by UPDATED_OLD is not documented, the whole old item is.
                ReturnValues="ALL_OLD",
            )
        except ClientError as exc:
            raise AwsCallFailed(
                f"ledger {self._table}: cannot count a demotion by {cap.breaker}: {exc}"
            ) from exc
        return "breaker_alerted" not in response.get("Attributes", {})

    # ------------------------------------------------------------------ organisation storm
    def watch_account(self, account: str, window_seconds: int) -> list[str]:
        """Remember that ``account`` had a remediable change now; return every account that had one within
        the last ``window_seconds`` (``account`` included). One attribute per account on one item, so the
        update is atomic and returns the whole window: concurrent callers see the accounts in the order
        DynamoDB applied them."""
        now = time.time()
        try:
            response = self._db.update_item(
                TableName=self._table,
                Key=_STORM_WATCH_KEY,
                UpdateExpression="SET #seen = :now, expires_at = :exp",
                ExpressionAttributeNames={"#seen": _SEEN_PREFIX + account},
                ExpressionAttributeValues={
                    ":now": {"N": f"{now:.3f}"},
                    ":exp": {"N": str(int(now) + window_seconds + BREAKER_TTL_SECONDS)},
                },
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            raise AwsCallFailed(f"ledger {self._table}: cannot watch for a storm: {exc}") from exc
        since = now - window_seconds
        return sorted(
            name.removeprefix(_SEEN_PREFIX)
            for name, value in response["Attributes"].items()
            if name.startswith(_SEEN_PREFIX) and float(value["N"]) >= since
        )

    def storm(self) -> Storm | None:
        """The organisation storm in force, if one is."""
        try:
            item = self._db.get_item(TableName=self._table, Key=_STORM_KEY, ConsistentRead=True).get("Item")
        except ClientError as exc:
            raise AwsCallFailed(f"ledger {self._table}: cannot read the storm: {exc}") from exc
        return _storm_in_force(item)

    def open_storm(self, accounts: list[str], hold_seconds: int = STORM_HOLD_SECONDS) -> Storm | None:
        """Switch the organisation to notify-only for ``hold_seconds``. The storm, for the one caller that
        opened it (it sends the one alert); None when a storm was in force already."""
        now = int(time.time())
        storm = Storm(opened_at=now_iso(), until=_iso(now + hold_seconds), accounts=accounts)
        try:
            self._db.put_item(
                TableName=self._table,
                Item={
                    **_STORM_KEY,
                    "opened_at": {"S": storm.opened_at},
                    "until": {"S": storm.until},
                    "accounts": {"L": [{"S": a} for a in accounts]},
                    "expires_at": {"N": str(now + hold_seconds)},
                },
                ConditionExpression="attribute_not_exists(pk) OR expires_at < :now",
                ExpressionAttributeValues={":now": {"N": str(now)}},
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return None
            raise AwsCallFailed(f"ledger {self._table}: cannot open the storm: {exc}") from exc
        return storm

    def clear_storm(self) -> Storm | None:
        """End the storm (a person's decision) and forget the accounts watched, so the next change starts a
        new window instead of tripping the storm again. The storm that was in force, if one was."""
        try:
            old = self._db.delete_item(TableName=self._table, Key=_STORM_KEY, ReturnValues="ALL_OLD")
            self._db.delete_item(TableName=self._table, Key=_STORM_WATCH_KEY)
        except ClientError as exc:
            raise AwsCallFailed(f"ledger {self._table}: cannot clear the storm: {exc}") from exc
        return _storm_in_force(old.get("Attributes"))

    # ------------------------------------------------------------------ remediation side
    def get(self, incident_id: str) -> Incident:
        response = self._db.get_item(
            TableName=self._table, Key=_incident_key(incident_id), ConsistentRead=True
        )
        item = response.get("Item")
        if not item:
            raise IncidentNotFound(f"incident {incident_id} is not in ledger {self._table}")
        return _incident_from_item(item)

    def record_stage(
        self,
        incident_id: str,
        stage: str,
        status: Status | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        """Stamp a stage in the timeline (first time wins, so a retried step keeps its real time)."""
        expression = "SET timeline.#stage = if_not_exists(timeline.#stage, :now)"
        values: dict[str, Any] = {":now": {"S": now_iso()}}
        names = {"#stage": stage}
        if status is not None:
            expression += ", #status = :status"
            values[":status"] = {"S": status.value}
            names["#status"] = "status"
        if details is not None:
            expression += ", details.#stage = :details"
            values[":details"] = {"S": json.dumps(details, default=str)}
        self._update(incident_id, expression, values, names)

    def record_prior_state(self, incident_id: str, prior_state: dict[str, Any]) -> None:
        """Keep what the instance looked like before we touched it; the first record is never overwritten."""
        self._update(
            incident_id,
            "SET prior_state = if_not_exists(prior_state, :p)",
            {":p": {"S": json.dumps(prior_state, default=str)}},
        )

    def complete_prior_state(self, incident_id: str, prior_state: dict[str, Any]) -> None:
        """Replace a partial prior state (Detect's: the interfaces' groups) with the whole one, which
        keeps those groups (first_response.complete_prior_state). Two runs write the same thing."""
        self._update(
            incident_id,
            "SET prior_state = :p",
            {":p": {"S": json.dumps(prior_state, default=str)}},
        )

    def record_detail_once(self, incident_id: str, key: str, value: Any) -> Any:
        """Keep ``value`` under ``details[key]`` unless a first record is there; returns the kept one.

        For state a step learns between its changes (what to undo later), so a retry keeps the first.
        """
        self._update(
            incident_id,
            "SET details.#k = if_not_exists(details.#k, :v)",
            {":v": {"S": json.dumps(value, default=str)}},
            {"#k": key},
        )
        return self.get(incident_id).details.get(key, value)

    def record_detail(self, incident_id: str, key: str, value: Any) -> None:
        """Set ``details[key]`` (no timeline stamp): bookkeeping a step keeps up to date itself."""
        self._update(
            incident_id,
            "SET details.#k = :v",
            {":v": {"S": json.dumps(value, default=str)}},
            {"#k": key},
        )

    def release_lock(self, instance_id: str, incident_id: str) -> None:
        """Free the instance for new incidents, only if this incident holds the lock."""
        try:
            self._db.delete_item(
                TableName=self._table,
                Key=self._key("LOCK", instance_id),
                ConditionExpression="incident_id = :i",
                ExpressionAttributeValues={":i": {"S": incident_id}},
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return
            raise AwsCallFailed(f"ledger {self._table}: cannot release lock of {instance_id}: {exc}") from exc

    def list_incidents(self, limit: int = 100) -> list[Incident]:
        """Newest first. A scan: the ledger holds few incidents, and this is an operator's command."""
        incidents: list[Incident] = []
        paginator = self._db.get_paginator("scan")
        for page in paginator.paginate(
            TableName=self._table,
            FilterExpression="begins_with(pk, :p)",
            ExpressionAttributeValues={":p": {"S": "INCIDENT#"}},
        ):
            incidents.extend(_incident_from_item(item) for item in page.get("Items", []))
        incidents.sort(key=lambda i: i.created_at, reverse=True)
        return incidents[:limit]

    def _update(
        self,
        incident_id: str,
        expression: str,
        values: dict[str, Any],
        names: dict[str, str] | None = None,
    ) -> None:
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "Key": _incident_key(incident_id),
            "UpdateExpression": expression,
            "ExpressionAttributeValues": values,
            "ConditionExpression": "attribute_exists(pk)",
        }
        if names:
            kwargs["ExpressionAttributeNames"] = names
        try:
            self._db.update_item(**kwargs)
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                raise IncidentNotFound(f"incident {incident_id} is not in ledger {self._table}") from exc
            raise AwsCallFailed(f"ledger {self._table}: cannot update incident {incident_id}: {exc}") from exc


def _incident_item(incident: Incident) -> dict[str, Any]:
    return {
        **_incident_key(incident.incident_id),
        "incident_id": {"S": incident.incident_id},
        "instance_id": {"S": incident.instance_id},
        "status": {"S": incident.status.value},
        "mode": {"S": incident.mode},
        "decision": {"S": incident.decision},
        "kind": {"S": incident.kind},
        "severity": {"S": incident.severity},
        "account": {"S": incident.account},
        "region": {"S": incident.region},
        "created_at": {"S": incident.created_at},
        "finding": {"S": json.dumps(incident.finding, default=str)},
        "timeline": {"M": {k: {"S": v} for k, v in incident.timeline.items()}},
        "details": {"M": {k: {"S": json.dumps(v, default=str)} for k, v in incident.details.items()}},
        "related_event_ids": {"L": [{"S": e} for e in incident.related_event_ids]},
        "expires_at": {"N": str(int(time.time()) + INCIDENT_TTL_SECONDS)},
        # Detect's first response writes the interfaces' prior groups with the lock (issue 15).
        **(
            {"prior_state": {"S": json.dumps(incident.prior_state, default=str)}}
            if incident.prior_state is not None
            else {}
        ),
    }


def _incident_from_item(item: dict[str, Any]) -> Incident:
    return Incident(
        incident_id=item["incident_id"]["S"],
        instance_id=item["instance_id"]["S"],
        status=Status(item["status"]["S"]),
        mode=item["mode"]["S"],
        decision=item["decision"]["S"],
        kind=item["kind"]["S"],
        severity=item["severity"]["S"],
        account=item["account"]["S"],
        region=item["region"]["S"],
        created_at=item["created_at"]["S"],
        finding=json.loads(item["finding"]["S"]),
        timeline={k: v["S"] for k, v in item.get("timeline", {}).get("M", {}).items()},
        prior_state=json.loads(item["prior_state"]["S"]) if "prior_state" in item else None,
        details={k: json.loads(v["S"]) for k, v in item.get("details", {}).get("M", {}).items()},
        related_event_ids=[e["S"] for e in item.get("related_event_ids", {}).get("L", [])],
    )
