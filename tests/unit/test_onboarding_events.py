"""Which account an AWS Organizations event says joined (onboarding.account_joined).

The samples in events/organization/ follow AWS's records ("Logging API calls with AWS CloudTrail for AWS
Organizations", https://docs.aws.amazon.com/organizations/latest/userguide/orgs_cloudtrail-integration.html):
CreateAccountResult is an AwsServiceEvent of the management account in us-east-1, its
serviceEventDetails.createAccountStatus holding state SUCCEEDED and the new accountId (or FAILED and a
failureReason, no accountId). AWS prints no AcceptHandshake record; ours is the API call made by the invited
account (the caller is the account that joins: AcceptHandshake "Only a member account can accept ...
Invitation to join (INVITE)", https://docs.aws.amazon.com/organizations/latest/APIReference/API_AcceptHandshake.html)
with the handshake of the response in CloudTrail's shape, as the page's InviteAccountToOrganization record
prints it. EventBridge delivers a service event as "AWS Service Event via CloudTrail" and an API call as
"AWS API Call via CloudTrail", with source aws.organizations.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from immutable_guard.onboarding import MalformedOrganizationsEvent, account_joined

SAMPLES = Path(__file__).resolve().parents[2] / "events" / "organization"


def sample(name: str) -> dict[str, Any]:
    return dict(json.loads((SAMPLES / name).read_text("utf-8")))


def test_a_created_account_is_the_account_id_of_the_create_account_status() -> None:
    joined = account_joined(sample("create-account-result.json"))
    assert joined is not None
    assert (joined.account, joined.how, joined.region) == ("444455556666", "created", "us-east-1")


def test_a_failed_creation_names_no_account() -> None:
    assert account_joined(sample("create-account-failed.json")) is None


def test_an_accepted_invitation_is_the_account_that_accepted_it() -> None:
    joined = account_joined(sample("accept-handshake.json"))
    assert joined is not None
    assert (joined.account, joined.how) == ("222233334444", "invited")


def test_a_handshake_other_than_an_invitation_names_no_account() -> None:
    event = sample("accept-handshake.json")
    event["detail"]["responseElements"]["handshake"]["action"] = "ENABLE_ALL_FEATURES"
    assert account_joined(event) is None


def test_service_event_details_carried_as_a_json_string_are_read() -> None:
    event = sample("create-account-result.json")
    event["detail"]["serviceEventDetails"] = json.dumps(event["detail"]["serviceEventDetails"])
    joined = account_joined(event)
    assert joined is not None and joined.account == "444455556666"


def _broken(name: str, change: Any) -> dict[str, Any]:
    event = copy.deepcopy(sample(name))
    change(event)
    return event


MALFORMED = {
    "no_detail": _broken("create-account-result.json", lambda e: e.pop("detail")),
    "not_organizations": _broken("create-account-result.json", lambda e: e.update(source="aws.ec2")),
    "account_mismatch": _broken("accept-handshake.json", lambda e: e.update(account="999988887777")),
    "no_create_account_status": _broken(
        "create-account-result.json", lambda e: e["detail"].update(serviceEventDetails={})
    ),
    "no_account_id": _broken(
        "create-account-result.json",
        lambda e: e["detail"]["serviceEventDetails"]["createAccountStatus"].update(accountId="12345"),
    ),
    "no_handshake": _broken("accept-handshake.json", lambda e: e["detail"].update(responseElements=None)),
    "unexpected_event": _broken(
        "accept-handshake.json", lambda e: e["detail"].update(eventName="LeaveOrganization")
    ),
}


@pytest.mark.parametrize("reason", sorted(MALFORMED))
def test_a_malformed_event_is_refused_naming_why(reason: str) -> None:
    with pytest.raises(MalformedOrganizationsEvent) as refused:
        account_joined(MALFORMED[reason])
    assert refused.value.reason == reason


def test_garbage_is_refused_not_crashed_on() -> None:
    for garbage in (None, [], "text", {"source": "aws.organizations", "detail": "x"}):
        with pytest.raises(MalformedOrganizationsEvent):
            account_joined(garbage)  # type: ignore[arg-type]
