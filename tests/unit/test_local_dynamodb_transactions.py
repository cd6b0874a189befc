"""moto's TransactWriteItems with the local runtime's backup of only the items a transaction names
(moto_fixes.transactions_back_up_only_their_items): all or nothing as in DynamoDB, without copying the
table. DynamoDB: "TransactWriteItems is a synchronous write operation that groups up to 100 action
requests ... The actions are completed atomically so that either all of them succeed, or all of them fail"
(https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_TransactWriteItems.html)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from immutable_guard.local import moto_fixes
from moto import mock_aws
from moto.dynamodb.models.dynamo_type import Item


@pytest.fixture
def table(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    moto_fixes.transactions_back_up_only_their_items(monkeypatch.setattr)
    with mock_aws():
        db = boto3.client("dynamodb", region_name="us-east-1")
        db.create_table(
            TableName="ledger",
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            BillingMode="PAY_PER_REQUEST",
        )
        for n in range(50):
            db.put_item(TableName="ledger", Item={"pk": {"S": f"old-{n}"}, "n": {"N": str(n)}})
        yield db


def _lock_and_count(lock_condition: str) -> list[dict[str, Any]]:
    """A transaction like the ledger's: a new lock, an update of an existing counter, a checked item."""
    return [
        {
            "Put": {
                "TableName": "ledger",
                "Item": {"pk": {"S": "LOCK"}, "owner": {"S": "me"}},
                "ConditionExpression": "attribute_not_exists(pk)",
            }
        },
        {
            "Update": {
                "TableName": "ledger",
                "Key": {"pk": {"S": "old-1"}},
                "UpdateExpression": "ADD n :one",
                "ExpressionAttributeValues": {":one": {"N": "1"}},
            }
        },
        {
            "ConditionCheck": {
                "TableName": "ledger",
                "Key": {"pk": {"S": "old-2"}},
                "ConditionExpression": lock_condition,
            }
        },
    ]


def _items(db: Any) -> dict[str, dict[str, Any]]:
    return {i["pk"]["S"]: i for i in db.scan(TableName="ledger")["Items"]}


def test_a_transaction_whose_last_item_fails_writes_nothing(table: Any) -> None:
    before = _items(table)
    with pytest.raises(ClientError) as refused:
        table.transact_write_items(TransactItems=_lock_and_count("attribute_not_exists(pk)"))
    assert refused.value.response["Error"]["Code"] == "TransactionCanceledException"
    # Then neither the new lock nor the counter's update is there, and every other item is as it was
    assert _items(table) == before


def test_a_transaction_that_passes_writes_every_item(table: Any) -> None:
    table.transact_write_items(TransactItems=_lock_and_count("attribute_exists(pk)"))
    items = _items(table)
    assert items["LOCK"]["owner"] == {"S": "me"}
    assert items["old-1"]["n"] == {"N": "2"}
    assert len(items) == 51


def test_a_transaction_copies_the_items_it_names_not_the_table(
    table: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a table of 50 items, and a count of the items deep-copied
    copied: list[str] = []
    deepcopy = Item.__deepcopy__

    def counted(self: Item, memo: dict[int, Any]) -> Item:
        copied.append(str(self.hash_key.value))
        return deepcopy(self, memo)

    monkeypatch.setattr(Item, "__deepcopy__", counted)
    # When a transaction of three items fails (and so is rolled back)
    with pytest.raises(ClientError):
        table.transact_write_items(TransactItems=_lock_and_count("attribute_not_exists(pk)"))
    # Then only the items it names were copied (moto copied all 50, once per item of the transaction)
    assert set(copied) <= {"old-1", "old-2"}
    assert len(copied) <= 4
