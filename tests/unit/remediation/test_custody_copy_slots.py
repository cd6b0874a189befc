"""Evidence custody when the region's snapshot copies are all taken.

A region runs at most 20 snapshot copies at once (not adjustable,
https://docs.aws.amazon.com/ebs/latest/userguide/ebs-resource-quotas.html); beyond that CopySnapshot fails
with ``ResourceLimitExceeded`` ("you might have too many snapshot copies in progress",
https://docs.aws.amazon.com/AWSEC2/latest/APIReference/errors-overview.html). An incident spanning several
servers of several accounts reaches that: the copy must be asked for again at the next poll, not fail the
step, and still be bounded by MaxPolls.

One moto account plays both the member (its transfer copies) and the security account (its custody copies):
what is under test is the poll's handling of a refused copy, not the sharing across accounts
(tests/e2e/test_organization_local.py covers that)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError
from immutable_guard.clients import Clients
from immutable_guard.errors import EvidenceIncomplete
from immutable_guard.ledger import IncidentLedger
from immutable_guard.local.moto_fixes import snapshots_are_shared_copied_and_locked_as_in_aws
from immutable_guard.remediation.custody import (
    LOCKED_STATES,
    WAITING_FOR_COPY_SLOT,
    CustodyPlace,
    advance_custody,
    snapshot_lock,
)
from remediation_world import make_finding

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's account


@pytest.fixture
def member_snapshot(aws: Clients, monkeypatch: pytest.MonkeyPatch) -> str:
    # The local runtime's model of copies and locks (moto has no LockSnapshot), undone after the test.
    snapshots_are_shared_copied_and_locked_as_in_aws(
        lambda target, name, value: monkeypatch.setattr(target, name, value, raising=False)
    )
    volume = aws.ec2.create_volume(AvailabilityZone=f"{REGION}a", Size=8)["VolumeId"]
    return str(aws.ec2.create_snapshot(VolumeId=volume)["SnapshotId"])


@pytest.fixture
def incident(open_incident: Callable[[str, dict[str, Any]], str]) -> str:
    return open_incident("i-0abc1234def567890", make_finding())


@pytest.fixture
def place(aws: Clients) -> CustodyPlace:
    key = aws._session.client("kms", region_name=REGION).create_key(Description="custody")["KeyMetadata"]
    return CustodyPlace(account=ACCOUNT, region=REGION, key_arn=key["Arn"], lock_days=1)


def _copy_slots_full(aws: Clients, refusals: int) -> list[str]:
    """CopySnapshot refused, `refusals` times, as AWS refuses it when the region's copies are all taken."""
    refused: list[str] = []

    def refuse(**_: Any) -> None:
        if len(refused) < refusals:
            refused.append("CopySnapshot")
            raise ClientError(
                {
                    "Error": {
                        "Code": "ResourceLimitExceeded",
                        "Message": "too many snapshot copies in progress",
                    }
                },
                "CopySnapshot",
            )

    aws.ec2.meta.events.register("before-call.ec2.CopySnapshot", refuse)
    return refused


def _poll(
    aws: Clients, ledger: IncidentLedger, place: CustodyPlace, incident: str, snapshot: str, polls: int
) -> dict[str, Any]:
    return advance_custody(
        aws, aws, place, ledger, incident, ACCOUNT, REGION, [snapshot], polls, max_polls=10
    )


def test_a_copy_refused_for_the_copy_quota_is_asked_for_again_at_the_next_poll(
    aws: Clients, ledger: IncidentLedger, place: CustodyPlace, incident: str, member_snapshot: str
) -> None:
    # Given a region whose snapshot copies are all taken for the next two CopySnapshot calls
    refused = _copy_slots_full(aws, refusals=2)
    # When custody polls
    first = _poll(aws, ledger, place, incident, member_snapshot, 0)
    second = _poll(aws, ledger, place, incident, member_snapshot, first["custody_polls"])
    # Then those polls wait for a copy slot instead of failing the step
    assert len(refused) == 2
    assert [first["copies"][0]["state"], second["copies"][0]["state"]] == [WAITING_FOR_COPY_SLOT] * 2
    assert not first["custody_complete"] and not second["custody_complete"]
    # And once slots are free, the copies are made and the custody copy is locked
    result = second
    while not result["custody_complete"]:
        result = _poll(aws, ledger, place, incident, member_snapshot, result["custody_polls"])
    [copy] = result["copies"]
    assert copy["state"] == "locked"
    lock = snapshot_lock(aws.ec2, copy["custody_snapshot_id"])
    assert lock is not None and lock["LockState"] in LOCKED_STATES


def test_copies_refused_until_the_last_poll_fail_the_step_naming_the_wait(
    aws: Clients, ledger: IncidentLedger, place: CustodyPlace, incident: str, member_snapshot: str
) -> None:
    # Given copy slots that never free up
    _copy_slots_full(aws, refusals=1000)
    # When the last allowed poll still cannot copy
    # Then the step fails (the state machine alerts and leaves the server quarantined), naming why
    with pytest.raises(EvidenceIncomplete, match=f"{member_snapshot} \\({WAITING_FOR_COPY_SLOT}\\)"):
        _poll(aws, ledger, place, incident, member_snapshot, 9)
