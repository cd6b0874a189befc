"""The error hierarchy. A class name is the contract with the state machines' Retry / Catch
(`ErrorEquals`), so each is named for what happened, not where."""

from __future__ import annotations


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
