"""The canary's typed errors. A class name is the contract with canary.asl.json's Catch and with the
execution history a person reads, so each says what happened."""

from __future__ import annotations

from immutable_guard.errors import GuardError


class CanaryRefused(GuardError):
    """Preflight will not start the rollout: nothing was changed."""


class InvalidCanaryInput(CanaryRefused):
    """The execution input is malformed; the message names the field."""


class AliasChanged(GuardError):
    """The alias is not in the state this rollout left it in: someone else changed it."""


class RollbackFailed(GuardError):
    """The alias could not be put back on the stable version; a person must act."""
