"""Models of the EventBridge events the Detect function receives, and the one entry point that turns
untrusted input into them: anything malformed becomes `InvalidEvent`, never another exception."""

from __future__ import annotations

import json
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from immutable_guard.errors import InvalidEvent

CLOUDTRAIL_DETAIL_TYPE: Final = "AWS API Call via CloudTrail"
CONFIG_DETAIL_TYPE: Final = "Config Configuration Item Change"

# Error messages quote parts of the input; an attacker-sized string must not become a log line.
_QUOTE_LIMIT: Final = 80
# An account id is 12 digits; a region a few lower-case words (us-east-1, us-gov-west-1, eusc-de-east-1).
# Both name where the guard acts and key its ledger records: anything else is not an AWS event.
ACCOUNT_PATTERN: Final = r"^\d{12}$"
REGION_PATTERN: Final = r"^[a-z]{2,8}(-[a-z0-9]+){1,4}$"


class _AwsModel(BaseModel):
    # AWS adds fields over time; unknown ones are ignored, never a reason to reject an event.
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


# ---------------------------------------------------------------- CloudTrail


class SessionIssuer(_AwsModel):
    type: str | None = None
    principal_id: str | None = Field(default=None, alias="principalId")
    arn: str | None = None
    account_id: str | None = Field(default=None, alias="accountId")
    user_name: str | None = Field(default=None, alias="userName")


class SessionContext(_AwsModel):
    session_issuer: SessionIssuer | None = Field(default=None, alias="sessionIssuer")


class UserIdentity(_AwsModel):
    type: str | None = None
    principal_id: str | None = Field(default=None, alias="principalId")
    arn: str | None = None
    account_id: str | None = Field(default=None, alias="accountId")
    access_key_id: str | None = Field(default=None, alias="accessKeyId")
    user_name: str | None = Field(default=None, alias="userName")
    invoked_by: str | None = Field(default=None, alias="invokedBy")
    session_context: SessionContext | None = Field(default=None, alias="sessionContext")

    @property
    def session_issuer_arn(self) -> str | None:
        if self.session_context is None or self.session_context.session_issuer is None:
            return None
        return self.session_context.session_issuer.arn


class CloudTrailDetail(_AwsModel):
    """One CloudTrail record. `requestParameters` stays a dict: each API records its own shape."""

    event_version: str | None = Field(default=None, alias="eventVersion")
    user_identity: UserIdentity = Field(default_factory=UserIdentity, alias="userIdentity")
    event_time: str | None = Field(default=None, alias="eventTime")
    event_source: str = Field(alias="eventSource")
    event_name: str = Field(alias="eventName")
    aws_region: str | None = Field(default=None, alias="awsRegion", pattern=REGION_PATTERN)
    source_ip_address: str | None = Field(default=None, alias="sourceIPAddress")
    user_agent: str | None = Field(default=None, alias="userAgent")
    request_parameters: dict[str, Any] | None = Field(default=None, alias="requestParameters")
    response_elements: dict[str, Any] | None = Field(default=None, alias="responseElements")
    error_code: str | None = Field(default=None, alias="errorCode")
    error_message: str | None = Field(default=None, alias="errorMessage")
    request_id: str | None = Field(default=None, alias="requestID")
    event_id: str | None = Field(default=None, alias="eventID")
    event_type: str | None = Field(default=None, alias="eventType")
    read_only: bool | None = Field(default=None, alias="readOnly")
    recipient_account_id: str | None = Field(
        default=None, alias="recipientAccountId", pattern=ACCOUNT_PATTERN
    )
    shared_event_id: str | None = Field(default=None, alias="sharedEventID")
    vpc_endpoint_id: str | None = Field(default=None, alias="vpcEndpointId")
    # Some services put what the request acted on here (e.g. resolved targets), not in the request.
    additional_event_data: dict[str, Any] | None = Field(default=None, alias="additionalEventData")
    # [{"ARN": ..., "accountId": ..., "type": ...}] for services that name their resources.
    resources: list[dict[str, Any]] | None = None


# ---------------------------------------------------------------- Config


class _ItemHeader(_AwsModel):
    """What a configuration item and an oversized notification's summary both say about the resource."""

    configuration_item_version: str | None = Field(default=None, alias="configurationItemVersion")
    configuration_item_capture_time: str | None = Field(default=None, alias="configurationItemCaptureTime")
    configuration_state_id: int | str | None = Field(default=None, alias="configurationStateId")
    aws_account_id: str | None = Field(default=None, alias="awsAccountId", pattern=ACCOUNT_PATTERN)
    configuration_item_status: str | None = Field(default=None, alias="configurationItemStatus")
    resource_type: str = Field(alias="resourceType")
    resource_id: str = Field(alias="resourceId")
    resource_name: str | None = Field(default=None, alias="resourceName")
    arn: str | None = Field(default=None, alias="ARN")
    aws_region: str | None = Field(default=None, alias="awsRegion", pattern=REGION_PATTERN)


class ConfigurationItem(_ItemHeader):
    availability_zone: str | None = Field(default=None, alias="availabilityZone")
    tags: dict[str, str] | None = None
    relationships: list[dict[str, Any]] | None = None
    # Null when the resource was deleted.
    configuration: dict[str, Any] | None = None
    supplementary_configuration: dict[str, Any] | None = Field(
        default=None, alias="supplementaryConfiguration"
    )
    # Ids of the CloudTrail events behind the change. Config documents it as empty since item version
    # 1.3, so an item without them is judged alone (or matched to the same change in the ledger).
    related_events: list[Any] | None = Field(default=None, alias="relatedEvents")


class ConfigurationItemSummary(_ItemHeader):
    """What an oversized notification carries instead of the item: no configuration, no tags."""

    change_type: str | None = Field(default=None, alias="changeType")


class ConfigurationItemDiff(_AwsModel):
    change_type: str | None = Field(default=None, alias="changeType")
    changed_properties: dict[str, Any] = Field(default_factory=dict, alias="changedProperties")


class S3DeliverySummary(_AwsModel):
    s3_bucket_location: str | None = Field(default=None, alias="s3BucketLocation")
    error_code: str | None = Field(default=None, alias="errorCode")
    error_message: str | None = Field(default=None, alias="errorMessage")


class ConfigDetail(_AwsModel):
    message_type: str = Field(alias="messageType")
    record_version: str | None = Field(default=None, alias="recordVersion")
    notification_creation_time: str | None = Field(default=None, alias="notificationCreationTime")
    configuration_item: ConfigurationItem | None = Field(default=None, alias="configurationItem")
    configuration_item_summary: ConfigurationItemSummary | None = Field(
        default=None, alias="configurationItemSummary"
    )
    configuration_item_diff: ConfigurationItemDiff | None = Field(default=None, alias="configurationItemDiff")
    s3_delivery_summary: S3DeliverySummary | None = Field(default=None, alias="s3DeliverySummary")

    @model_validator(mode="after")
    def _names_a_resource(self) -> ConfigDetail:
        if self.configuration_item is None and self.configuration_item_summary is None:
            raise ValueError("neither configurationItem nor configurationItemSummary is present")
        return self

    @property
    def resource_type(self) -> str:
        if self.configuration_item is not None:
            return self.configuration_item.resource_type
        assert self.configuration_item_summary is not None  # guaranteed by the validator
        return self.configuration_item_summary.resource_type

    @property
    def resource_id(self) -> str:
        if self.configuration_item is not None:
            return self.configuration_item.resource_id
        assert self.configuration_item_summary is not None
        return self.configuration_item_summary.resource_id

    @property
    def capture_time(self) -> str | None:
        if self.configuration_item is not None:
            return self.configuration_item.configuration_item_capture_time
        assert self.configuration_item_summary is not None
        return self.configuration_item_summary.configuration_item_capture_time

    @property
    def is_oversized(self) -> bool:
        return self.configuration_item is None


# ---------------------------------------------------------------- EventBridge envelope


class _Envelope(_AwsModel):
    version: str | None = None
    id: str
    detail_type: str = Field(alias="detail-type")
    source: str
    account: str = Field(pattern=ACCOUNT_PATTERN)
    time: str
    region: str = Field(pattern=REGION_PATTERN)
    resources: list[str] = Field(default_factory=list)


class CloudTrailEvent(_Envelope):
    """`detail-type: AWS API Call via CloudTrail`."""

    detail: CloudTrailDetail


class ConfigEvent(_Envelope):
    """`detail-type: Config Configuration Item Change` (normal or oversized)."""

    detail: ConfigDetail


ParsedEvent = CloudTrailEvent | ConfigEvent


# ---------------------------------------------------------------- where the change happened
# The record says which account and region a change happened in; the EventBridge envelope says which
# account's bus and which region it came from ("account": the 12-digit account, "region": the Region where
# the event originated, https://docs.aws.amazon.com/eventbridge/latest/ref/overiew-event-structure.html).
# - CloudTrail: recipientAccountId "Represents the account ID that received this event" and awsRegion "The
#   AWS Region that the request was made to"
#   (https://docs.aws.amazon.com/awscloudtrail/latest/userguide/cloudtrail-event-reference-record-contents.html).
# - Config: the item's awsAccountId and awsRegion, "The region where the resource resides"
#   (https://docs.aws.amazon.com/config/latest/developerguide/config-item-table.html; the API's
#   ConfigurationItem calls the first accountId, the change notification awsAccountId).
# A field the record leaves out is taken from the envelope.


def _record_header(event: ParsedEvent) -> tuple[str | None, str | None]:
    if isinstance(event, CloudTrailEvent):
        return event.detail.recipient_account_id, event.detail.aws_region
    header = event.detail.configuration_item or event.detail.configuration_item_summary
    assert header is not None  # guaranteed by ConfigDetail's validator
    return header.aws_account_id, header.aws_region


def record_account(event: ParsedEvent) -> str:
    """The account the change happened in, as the record says (else the envelope)."""
    return _record_header(event)[0] or event.account


def record_region(event: ParsedEvent) -> str:
    """The region the change happened in, as the record says (else the envelope)."""
    return _record_header(event)[1] or event.region


def origin_mismatch(event: ParsedEvent) -> str | None:
    """A sentence when the record's account or region disagrees with the envelope's, else None.

    In an organisation the guard acts where the record says; an event whose envelope says otherwise was
    routed wrongly (or built by hand) and is refused rather than acted on in either place."""
    account, region = _record_header(event)
    problems = []
    if account is not None and account != event.account:
        problems.append(f"the record's account {quote(account)} is not the envelope's {quote(event.account)}")
    if region is not None and region != event.region:
        problems.append(f"the record's region {quote(region)} is not the envelope's {quote(event.region)}")
    return "; ".join(problems) or None


_MODELS: Final[dict[str, type[CloudTrailEvent] | type[ConfigEvent]]] = {
    CLOUDTRAIL_DETAIL_TYPE: CloudTrailEvent,
    CONFIG_DETAIL_TYPE: ConfigEvent,
}


def quote(value: object) -> str:
    """A short single-line rendering of untrusted input for error messages."""
    text = value if isinstance(value, str) else type(value).__name__
    text = " ".join(text.split())
    if len(text) > _QUOTE_LIMIT:
        text = text[: _QUOTE_LIMIT - 3] + "..."
    return repr(text)


def _first_error(error: ValidationError) -> str:
    first = error.errors(include_url=False, include_input=False)[0]
    location = ".".join(str(part) for part in first["loc"]) or "(root)"
    return " ".join(f"{location}: {first['msg']}".split())


def parse_event(raw: object) -> ParsedEvent:
    """Validate an EventBridge event (a dict, or its JSON text) into a typed model.

    Parameters
    ----------
    raw:
        The event as Lambda received it.

    Returns
    -------
    CloudTrailEvent | ConfigEvent

    Raises
    ------
    InvalidEvent
        With a one-line message naming the problem, for anything that is not a supported event.
    """
    if isinstance(raw, str | bytes | bytearray):
        try:
            raw = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise InvalidEvent("not JSON: the event text could not be decoded") from exc
    if not isinstance(raw, dict):
        raise InvalidEvent(f"not an EventBridge event: expected a JSON object, got {type(raw).__name__}")
    for key in ("detail-type", "source", "detail"):
        if key not in raw:
            raise InvalidEvent(f"not an EventBridge event: missing {key!r}")
    source = raw["source"]
    # Only AWS services can put events with an "aws." source; anyone can PutEvents any other source
    # (or invoke the function directly). The rules filter on it too; this is the second lock.
    if not isinstance(source, str) or not source.startswith("aws."):
        raise InvalidEvent(f"refused: source {str(source)[:80]!r} is not an AWS service")
    detail_type = raw["detail-type"]
    if not isinstance(detail_type, str):
        raise InvalidEvent(f"not an EventBridge event: 'detail-type' is a {type(detail_type).__name__}")
    model = _MODELS.get(detail_type)
    if model is None:
        raise InvalidEvent(f"unsupported detail-type {quote(detail_type)}")
    if not isinstance(raw["detail"], dict):
        raise InvalidEvent(f"malformed {detail_type} event: 'detail' is not an object")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise InvalidEvent(f"malformed {detail_type} event: {_first_error(exc)}") from exc
    except RecursionError as exc:
        raise InvalidEvent(f"malformed {detail_type} event: nested too deeply") from exc
