"""Checks of onboarding.py whose AWS side the local AWS does not model, on botocore's Stubber: an organisation
trail seen from a member account, and `doctor --organization` invoking the Onboard function."""

from __future__ import annotations

import io
import json
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from immutable_guard import organization_doctor
from immutable_guard.clients import Clients
from immutable_guard.errors import AwsCallFailed
from immutable_guard.onboarding import check_trail

MANAGEMENT_TRAIL = "arn:aws:cloudtrail:us-east-1:111122223333:trail/organization-audit"


def _clients_with(cloudtrail: Any) -> Clients:
    clients = Clients(
        boto3.Session(region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="y")
    )
    clients.__dict__["cloudtrail"] = cloudtrail  # the cached_property's slot
    return clients


def test_an_organisation_trail_of_the_management_account_counts_in_a_member_region() -> None:
    # Given a member account that sees only the organisation trail the management account created in every
    # account ("the trail will be created in all Amazon Web Services accounts that belong to the
    # organization", CreateTrail/UpdateTrail IsOrganizationTrail,
    # https://docs.aws.amazon.com/awscloudtrail/latest/APIReference/API_UpdateTrail.html), whose event
    # selectors a member may not read
    cloudtrail = boto3.client(
        "cloudtrail", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="y"
    )
    with Stubber(cloudtrail) as stub:
        stub.add_response(
            "describe_trails",
            {
                "trailList": [
                    {
                        "Name": "organization-audit",
                        "TrailARN": MANAGEMENT_TRAIL,
                        "HomeRegion": "us-east-1",
                        "IsMultiRegionTrail": True,
                        "IsOrganizationTrail": True,
                    }
                ]
            },
            {"includeShadowTrails": True},
        )
        stub.add_response("get_trail_status", {"IsLogging": True}, {"Name": MANAGEMENT_TRAIL})
        stub.add_client_error("get_event_selectors", "AccessDeniedException", expected_params=None)
        # When the trail check runs in eu-west-1
        check = check_trail(_clients_with(cloudtrail), "eu-west-1")
    # Then it passes, naming the organisation trail
    assert check.ok and "organisation trail organization-audit" in check.reason


def test_a_trail_of_another_region_does_not_cover_this_one() -> None:
    cloudtrail = boto3.client(
        "cloudtrail", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="y"
    )
    with Stubber(cloudtrail) as stub:
        stub.add_response(
            "describe_trails",
            {"trailList": [{"Name": "t", "TrailARN": MANAGEMENT_TRAIL, "HomeRegion": "us-east-1"}]},
            {"includeShadowTrails": True},
        )
        check = check_trail(_clients_with(cloudtrail), "eu-west-1")
    assert not check.ok and "no trail logs the write management events of eu-west-1" in check.reason


def _lambda_with(payload: dict[str, Any], function_error: bool = False) -> Any:
    client = boto3.client("lambda", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y")
    stub = Stubber(client)
    response: dict[str, Any] = {"StatusCode": 200, "Payload": io.BytesIO(json.dumps(payload).encode())}
    if function_error:
        response["FunctionError"] = "Unhandled"
    stub.add_response("invoke", response, None)
    stub.activate()
    return client


def test_doctor_organization_asks_the_onboard_function_and_prints_its_rows() -> None:
    result = {
        "registered": ["222233334444"],
        "failing": {"222233334444": ["eu-west-1: recorder: Config recorder default is STOPPED"]},
        "marked": False,
        "rows": [
            {
                "account": "222233334444",
                "region": "eu-west-1",
                "ok": False,
                "checks": [
                    {"check": "trail", "ok": True, "reason": "trail t logs write management events"},
                    {"check": "recorder", "ok": False, "reason": "Config recorder default is STOPPED"},
                ],
            }
        ],
    }
    invoke = organization_doctor.lambda_invoke(_lambda_with(result), "onboard")
    text, code = organization_doctor.run(invoke, ["eu-west-1"], mark_verified=False, as_json=False)
    assert code == 1
    assert "FAIL  222233334444  eu-west-1" in text and "recorder: Config recorder default is STOPPED" in text
    assert "nothing changed" in text


def test_a_failed_onboard_function_is_an_error_not_a_pass() -> None:
    invoke = organization_doctor.lambda_invoke(_lambda_with({"errorMessage": "boom"}, True), "onboard")
    with pytest.raises(AwsCallFailed, match="onboard failed"):
        organization_doctor.run(invoke, None, mark_verified=False, as_json=False)


def test_the_request_names_the_regions_and_whether_to_mark() -> None:
    assert organization_doctor.doctor_request(["eu-west-1"], True) == {
        "doctor": {"regions": ["eu-west-1"], "mark_verified": True}
    }
