"""The error hierarchy. A class name is the contract with the state machines' Retry / Catch
(`ErrorEquals`), so each is named for what happened, not where."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from botocore.exceptions import ClientError

_Handler = TypeVar("_Handler", bound=Callable[..., Any])


class GuardError(Exception):
    """Base of every error Immutable Guard raises on purpose."""


class SettingsError(GuardError):
    """An environment variable is missing or malformed (raised at cold start)."""


class InvalidEvent(GuardError):
    """An event is not JSON, not an EventBridge event, or not one we understand."""


class InstanceNotFound(GuardError):
    """The instance an incident is about does not exist (any more)."""


class IsolationFailed(GuardError):
    """The instance could not be isolated, or verification found other groups still attached."""


class EvidenceIncomplete(GuardError):
    """Snapshots are missing or not completed; nothing may be nuked."""


class SnapshotNotReady(GuardError):
    """Snapshots are still pending; the state machine polls again."""


class SnapshotFailed(GuardError):
    """A snapshot ended in the `error` state."""


class ReplacementNotReady(GuardError):
    """The replacement is not healthy yet; the state machine polls again."""


class ReplacementFailed(GuardError):
    """The owner of the instance could not replace it (stack rolled back, group failed)."""


class LaunchTemplateChanged(GuardError):
    """The launch template (or launch configuration) the owner would replace the instance from changed
    after the incident opened: the replacement could be built from an attacker's image."""


class NukeRefused(GuardError):
    """The safety checks before terminating did not pass."""


class IncidentNotFound(GuardError):
    """No incident with that id is in the ledger."""


class ReleaseRefused(GuardError):
    """The incident cannot be released (instance gone, or never contained)."""


class AwsCallFailed(GuardError):
    """An AWS call failed in a way that no retry will fix; wraps the ClientError."""


class ScopeResolutionFailed(GuardError):
    """EC2 could not tell which instances a change reaches (describe call refused or failed)."""


class MemberRoleUnavailable(GuardError):
    """The role the guard acts through in another account (organisation mode) could not be assumed."""


class AccountNotRegistered(GuardError):
    """No account registry item names that account (organisation mode)."""


class AccountAlreadyRegistered(GuardError):
    """The account registry already holds that account."""


class AwsCallThrottled(AwsCallFailed):
    """An AWS call failed for a passing reason (throttling, a 5xx, a timeout) after boto3's own retries.
    The state machines retry this one with back-off; every other AwsCallFailed goes to the failure path."""


# Error codes that say "try again later", not "you may not" or "that does not exist".
TRANSIENT_ERROR_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "TransactionInProgressException",
        "SlowDown",
        "InternalError",
        "InternalFailure",
        "InternalServerError",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "Unavailable",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)


def error_code(exc: ClientError) -> str:
    """The AWS error code of a ClientError ("" when the response carries none)."""
    return str(exc.response.get("Error", {}).get("Code", ""))


def is_transient(error: BaseException | None) -> bool:
    """True for an AWS failure that a later retry may fix."""
    from botocore.exceptions import ClientError, ConnectionError, HTTPClientError

    if isinstance(error, ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return code in TRANSIENT_ERROR_CODES or status >= 500
    return isinstance(error, ConnectionError | HTTPClientError)


def retry_transient_aws_errors(handler: _Handler) -> _Handler:
    """Let the state machine tell passing AWS failures from lasting ones by the error's class name.

    A step raises a GuardError caused by an AWS failure (or lets a ClientError escape); this re-raises a
    transient one as AwsCallThrottled, which the ASL retries with back-off, and a lasting one unchanged
    (an escaped ClientError as AwsCallFailed).
    """
    from botocore.exceptions import BotoCoreError, ClientError

    @functools.wraps(handler)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return handler(*args, **kwargs)
        except AwsCallThrottled:
            raise
        except GuardError as exc:
            # e.g. IsolationFailed because one call was throttled: worth another try, not an incident failure
            if is_transient(exc.__cause__):
                raise AwsCallThrottled(f"{type(exc).__name__}: {exc}") from exc.__cause__
            raise
        except (ClientError, BotoCoreError) as exc:
            kind = AwsCallThrottled if is_transient(exc) else AwsCallFailed
            raise kind(str(exc)) from exc

    return wrapper  # type: ignore[return-value]
