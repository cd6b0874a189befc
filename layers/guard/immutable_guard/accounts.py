"""The account registry of organisation mode (issue 14): which accounts the guard protects, and in which
mode. One ledger item per account, ``ACCOUNT#<account id>``: mode, joined_at, verified_at, ou.

An account joins unverified and acts in dry-run whatever its mode says, until it is verified: by a person
(``immutable-guard accounts verify``), or by the Onboard function's schedule and ``doctor --organization
--mark-verified``, which check its trail, recorder, rules and roles (onboarding.py). The home account (where
the stack runs) needs no item: it is protected with the stack's Mode.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Final

from botocore.exceptions import ClientError
from pydantic import BaseModel, ConfigDict

from immutable_guard.errors import AccountAlreadyRegistered, AccountNotRegistered, AwsCallFailed, error_code
from immutable_guard.ledger import now_iso
from immutable_guard.model import Mode

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

_PREFIX: Final = "ACCOUNT#"
_ACCOUNT_ID: Final = re.compile(r"^\d{12}$")


class MemberAccount(BaseModel):
    """What the registry holds about one protected account."""

    model_config = ConfigDict(frozen=True)

    account_id: str
    mode: Mode
    joined_at: str
    verified_at: str | None = None
    ou: str | None = None
    # When the team was told it joined (the Onboard function): a retried join event alerts only until then.
    joined_alert_at: str | None = None

    @property
    def verified(self) -> bool:
        return self.verified_at is not None

    @property
    def effective_mode(self) -> Mode:
        """The mode its events are handled in: dry-run until the account is verified."""
        return self.mode if self.verified else Mode.DRY_RUN


def account_id(value: str) -> str:
    """``value`` if it is an AWS account id (12 digits), else ValueError."""
    value = value.strip()
    if not _ACCOUNT_ID.match(value):
        raise ValueError(f"{value!r} is not an AWS account id (12 digits)")
    return value


class AccountRegistry:
    """Reads and writes the registry items of the ledger table.

    Parameters
    ----------
    dynamodb:
        A DynamoDB client.
    table_name:
        The ledger table (template.yaml: IncidentLedger).
    """

    def __init__(self, dynamodb: DynamoDBClient, table_name: str) -> None:
        self._db = dynamodb
        self._table = table_name

    def get(self, account: str) -> MemberAccount | None:
        """The account's item, or None when the account is not registered."""
        try:
            item = self._db.get_item(
                TableName=self._table, Key={"pk": {"S": _PREFIX + account}}, ConsistentRead=True
            ).get("Item")
        except ClientError as exc:
            raise AwsCallFailed(f"ledger {self._table}: cannot read account {account}: {exc}") from exc
        return _account_from_item(item) if item else None

    def list(self) -> list[MemberAccount]:
        """Every registered account, by id. A scan: an operator's command over a small table."""
        accounts: list[MemberAccount] = []
        try:
            for page in self._db.get_paginator("scan").paginate(
                TableName=self._table,
                FilterExpression="begins_with(pk, :p)",
                ExpressionAttributeValues={":p": {"S": _PREFIX}},
            ):
                accounts.extend(_account_from_item(item) for item in page.get("Items", []))
        except ClientError as exc:
            raise AwsCallFailed(f"ledger {self._table}: cannot list accounts: {exc}") from exc
        return sorted(accounts, key=lambda a: a.account_id)

    def add(self, account: str, mode: Mode = Mode.DRY_RUN, ou: str | None = None) -> MemberAccount:
        """Register an account, unverified (it acts in dry-run until verified).

        Raises
        ------
        AccountAlreadyRegistered
            The account has an item already (its mode is changed with ``set_mode``).
        """
        account = account_id(account)
        item: dict[str, Any] = {
            "pk": {"S": _PREFIX + account},
            "account_id": {"S": account},
            "mode": {"S": Mode(mode).value},
            "joined_at": {"S": now_iso()},
        }
        if ou:
            item["ou"] = {"S": ou}
        try:
            self._db.put_item(
                TableName=self._table, Item=item, ConditionExpression="attribute_not_exists(pk)"
            )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                raise AccountAlreadyRegistered(f"account {account} is registered already") from exc
            raise AwsCallFailed(f"ledger {self._table}: cannot add account {account}: {exc}") from exc
        return _account_from_item(item)

    def set_mode(self, account: str, mode: Mode) -> MemberAccount:
        """Change a registered account's mode (it still acts in dry-run while unverified)."""
        return self._update(account, "SET #mode = :m", {":m": {"S": Mode(mode).value}}, {"#mode": "mode"})

    def mark_verified(self, account: str) -> MemberAccount:
        """Record that the account was verified now: from then on it acts in its own mode."""
        return self._update(account, "SET verified_at = :now", {":now": {"S": now_iso()}})

    def mark_joined_alert_sent(self, account: str) -> MemberAccount:
        """Record that the team was told the account joined."""
        return self._update(account, "SET joined_alert_at = :now", {":now": {"S": now_iso()}})

    def mark_unverified(self, account: str) -> bool:
        """Send a verified account back to dry-run (its verification failed); True when it was verified.
        Conditional, so that of two checks racing only one reports the change (and alerts)."""
        account = account_id(account)
        try:
            self._db.update_item(
                TableName=self._table,
                Key={"pk": {"S": _PREFIX + account}},
                UpdateExpression="REMOVE verified_at",
                ConditionExpression="attribute_exists(verified_at)",
            )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise AwsCallFailed(f"ledger {self._table}: cannot update account {account}: {exc}") from exc
        return True

    def _update(
        self, account: str, expression: str, values: dict[str, Any], names: dict[str, str] | None = None
    ) -> MemberAccount:
        account = account_id(account)
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "Key": {"pk": {"S": _PREFIX + account}},
            "UpdateExpression": expression,
            "ExpressionAttributeValues": values,
            "ConditionExpression": "attribute_exists(pk)",
            "ReturnValues": "ALL_NEW",
        }
        if names:
            kwargs["ExpressionAttributeNames"] = names
        try:
            response = self._db.update_item(**kwargs)
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                raise AccountNotRegistered(
                    f"account {account} is not registered (add it with `immutable-guard accounts add`)"
                ) from exc
            raise AwsCallFailed(f"ledger {self._table}: cannot update account {account}: {exc}") from exc
        return _account_from_item(response["Attributes"])


def _account_from_item(item: dict[str, Any]) -> MemberAccount:
    return MemberAccount(
        account_id=item["account_id"]["S"],
        mode=Mode(item["mode"]["S"]),
        joined_at=item["joined_at"]["S"],
        verified_at=item["verified_at"]["S"] if "verified_at" in item else None,
        ou=item["ou"]["S"] if "ou" in item else None,
        joined_alert_at=item["joined_alert_at"]["S"] if "joined_alert_at" in item else None,
    )


class Protection(BaseModel):
    """How an event's account is protected: the mode its incidents take, and why."""

    model_config = ConfigDict(frozen=True)

    mode: Mode
    why: str


def protection_of(
    account: str, home_account: str | None, home_mode: Mode, registry: AccountRegistry
) -> Protection | None:
    """The protection of ``account`` in organisation mode, or None when it is not protected (refused).

    The home account is protected with the stack's Mode; any other only when registered, and in dry-run
    until verified."""
    if home_account is not None and account == home_account:
        return Protection(mode=home_mode, why=f"the security account {account}: the stack's Mode")
    member = registry.get(account)
    if member is None:
        return None
    if not member.verified:
        return Protection(
            mode=Mode.DRY_RUN, why=f"account {account} is not verified yet: dry-run (its mode: {member.mode})"
        )
    return Protection(mode=member.mode, why=f"account {account}: its registered mode")
