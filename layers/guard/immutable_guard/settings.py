"""Settings of each function, read from its environment once at cold start. A missing or malformed
variable fails the cold start with a message naming it, instead of misbehaving later."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from immutable_guard.errors import SettingsError
from immutable_guard.model import Mode, PostEvidenceAction


def _split(value: Any) -> Any:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


class _EnvSettings(BaseModel):
    """Maps each field to an environment variable named like it, upper-cased."""

    model_config = ConfigDict(frozen=True)
    optional_env: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Self:
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name in cls.model_fields:
            variable = name.upper()
            if variable in environ:
                values[name] = environ[variable]
            elif name not in cls.optional_env:
                raise SettingsError(f"environment variable {variable} is not set ({cls.__name__})")
        try:
            return cls(**values)
        except ValidationError as exc:
            problems = "; ".join(
                f"{str(err['loc'][0]).upper()}: {err['msg']}" if err["loc"] else str(err["msg"])
                for err in exc.errors()
            )
            raise SettingsError(f"{cls.__name__}: malformed environment: {problems}") from exc


class StepSettings(_EnvSettings):
    """What every function of the pipeline needs."""

    ledger_table: str
    alert_topic_arn: str


# The id of an organization: "o-" then 10 to 32 lower-case letters or digits
# (https://docs.aws.amazon.com/organizations/latest/APIReference/API_Organization.html).
_ORGANIZATION_ID = re.compile(r"^o-[a-z0-9]{10,32}$")
# An IAM role name (https://docs.aws.amazon.com/IAM/latest/APIReference/API_Role.html) and an STS external
# id (https://docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRole.html).
_ROLE_NAME = re.compile(r"^[\w+=,.@-]{1,64}$")
_EXTERNAL_ID = re.compile(r"^[\w+=,.@:/-]{2,1224}$")


class OrganizationSettings(_EnvSettings):
    """Organisation mode (issue 14): empty ORGANIZATION_ID is single-account mode, today's behaviour.

    In organisation mode the function acts in another account (or region) through `member_role_name`,
    assumed in that account; in its own account and region it acts with its own role, as always.
    """

    organization_id: str | None = None
    member_role_name: str | None = None
    member_external_id: str | None = None

    optional_env: ClassVar[frozenset[str]] = frozenset(
        {"organization_id", "member_role_name", "member_external_id"}
    )

    @field_validator("organization_id", "member_role_name", "member_external_id", mode="before")
    @classmethod
    def _organization_empty_is_none(cls, value: Any) -> Any:
        # The template passes "" for a parameter left at its default.
        return value or None

    @field_validator("organization_id")
    @classmethod
    def _an_organization_id(cls, value: str | None) -> str | None:
        if value is not None and not _ORGANIZATION_ID.match(value):
            raise ValueError("must be an organization id (o- then 10 to 32 lower-case letters or digits)")
        return value

    @field_validator("member_role_name")
    @classmethod
    def _a_role_name(cls, value: str | None) -> str | None:
        if value is not None and not _ROLE_NAME.match(value):
            raise ValueError("must be an IAM role name")
        return value

    @field_validator("member_external_id")
    @classmethod
    def _an_external_id(cls, value: str | None) -> str | None:
        if value is not None and not _EXTERNAL_ID.match(value):
            raise ValueError("must be an STS external id (2 to 1224 of letters, digits and +=,.@:/-)")
        return value

    @model_validator(mode="after")
    def _a_role_in_organization_mode(self) -> Self:
        if self.organization_id is not None and self.member_role_name is None:
            raise ValueError("MEMBER_ROLE_NAME: required when ORGANIZATION_ID is set")
        return self

    @property
    def organization_mode(self) -> bool:
        return self.organization_id is not None


DEFAULT_STACK_NAME = "immutable-guard"
"""The stack name `sam deploy` and the local runtime use unless told otherwise (samconfig.toml)."""


class GuardIdentity(_EnvSettings):
    """How detection recognises the guard's own wiring: its rules and functions are named
    "<stack name>-<LogicalId>-<suffix>" by CloudFormation, its inventory association by id.

    The detection handlers receive no settings, so they read this from the environment; outside the
    Detect function (`explain`, tests) the default stack name stands in for the deployed one.
    """

    guard_stack_name: str = DEFAULT_STACK_NAME
    guard_inventory_association_id: str | None = None

    optional_env: ClassVar[frozenset[str]] = frozenset({"guard_stack_name", "guard_inventory_association_id"})

    @field_validator("guard_inventory_association_id", mode="before")
    @classmethod
    def _no_association_is_none(cls, value: Any) -> Any:
        # The template passes "" when the stack creates no inventory association.
        return value or None


class DetectSettings(StepSettings, GuardIdentity, OrganizationSettings):
    mode: Mode
    scope_tag_key: str
    scope_tag_value: str
    scope_stack_names: tuple[str, ...] = ()
    scope_asg_names: tuple[str, ...] = ()
    allowed_principal_arns: tuple[str, ...] = ()
    own_role_arns: tuple[str, ...] = ()
    max_incidents_per_hour: int
    post_evidence_action: PostEvidenceAction
    remediation_state_machine_arn: str
    dead_letter_queue_url: str
    expected_account: str | None = None
    # Organisation mode only (triage.py): hourly caps per account and per account-region (None: no cap of
    # its own), and the organisation storm (this many accounts with a remediable change within the window).
    max_incidents_per_account_hour: int | None = None
    max_incidents_per_account_region_hour: int | None = None
    org_storm_accounts: int = 3
    org_storm_window_minutes: int = 10
    # Single-account mode: the function that makes the isolation groups of a VPC where Detect first sees an
    # in-scope instance (Contain; first_response.prepare_ahead). Empty: no preparation ahead of time.
    isolation_groups_function: str = ""
    # The function that contains a quarantined server again when someone else changed it (Contain;
    # remediation/contain_again.py). Empty: such a change is alerted, nothing is changed.
    contain_function: str = ""

    # Empty lists are legal; CloudFormation's !Join of an empty list still sets the variable.
    optional_env: ClassVar[frozenset[str]] = frozenset(
        {
            "scope_stack_names",
            "scope_asg_names",
            "allowed_principal_arns",
            "own_role_arns",
            "expected_account",
            "max_incidents_per_account_hour",
            "max_incidents_per_account_region_hour",
            "org_storm_accounts",
            "org_storm_window_minutes",
            "isolation_groups_function",
            "contain_function",
            "guard_stack_name",
            "guard_inventory_association_id",
            *OrganizationSettings.optional_env,
        }
    )

    _split_lists = field_validator(
        "scope_stack_names", "scope_asg_names", "allowed_principal_arns", "own_role_arns", mode="before"
    )(_split)

    @field_validator("max_incidents_per_account_hour", "max_incidents_per_account_region_hour", mode="before")
    @classmethod
    def _no_cap_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator(
        "max_incidents_per_hour",
        "max_incidents_per_account_hour",
        "max_incidents_per_account_region_hour",
        "org_storm_window_minutes",
    )
    @classmethod
    def _positive(cls, value: int | None) -> int | None:
        if value is not None and value < 1:
            raise ValueError("must be at least 1")
        return value

    @field_validator("org_storm_accounts")
    @classmethod
    def _several_accounts(cls, value: int) -> int:
        # One account alone is the per-account breaker's business: a storm spans accounts.
        if value < 2:
            raise ValueError("must be at least 2")
        return value

    @field_validator("expected_account", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return value or None


class QuarantineSettings(StepSettings, OrganizationSettings):
    # remediation.quarantine.ISOLATION_DEPTHS; the template's IsolationDepth parameter.
    isolation_depth: Literal["security-groups", "network-acl"] = "security-groups"

    optional_env: ClassVar[frozenset[str]] = frozenset(
        {"isolation_depth", *OrganizationSettings.optional_env}
    )


class ReleaseSettings(StepSettings, OrganizationSettings):
    remediation_state_machine_arn: str


class EvidenceSettings(StepSettings, OrganizationSettings):
    """Besides the bucket and polling, in organisation mode the custody of a member's evidence in this
    (the security) account: the key its copies are encrypted with, and how they are locked
    (remediation/custody.py)."""

    evidence_bucket: str
    max_polls: int
    custody_key_arn: str | None = None
    custody_lock_mode: Literal["governance", "compliance"] = "governance"
    custody_lock_days: int = 90

    optional_env: ClassVar[frozenset[str]] = frozenset(
        {"custody_key_arn", "custody_lock_mode", "custody_lock_days", *OrganizationSettings.optional_env}
    )

    @field_validator("custody_key_arn", mode="before")
    @classmethod
    def _empty_key_is_none(cls, value: Any) -> Any:
        return value or None

    @model_validator(mode="after")
    def _a_custody_key_in_organization_mode(self) -> Self:
        if self.organization_id is not None and self.custody_key_arn is None:
            raise ValueError("CUSTODY_KEY_ARN: required when ORGANIZATION_ID is set")
        return self


class ReplaceSettings(StepSettings, OrganizationSettings):
    """Besides polling, which stacks Replace may update, as whom, bumping what (remediation/replace.py).
    Each may be absent (or empty): then nothing is declared and every stack is left to a person, the
    safe side. CloudFormation's !Join of an empty list still sets the variable."""

    max_polls: int
    scope_stack_names: tuple[str, ...] = ()
    replaceable_stack_tag_value: str | None = None
    replacement_stack_role_arn: str | None = None
    replacement_parameter: str = "ReplacementGeneration"

    optional_env: ClassVar[frozenset[str]] = frozenset(
        {
            "scope_stack_names",
            "replaceable_stack_tag_value",
            "replacement_stack_role_arn",
            "replacement_parameter",
            *OrganizationSettings.optional_env,
        }
    )

    _split_names = field_validator("scope_stack_names", mode="before")(_split)

    @field_validator("replaceable_stack_tag_value", "replacement_stack_role_arn", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return value or None

    @field_validator("replacement_parameter")
    @classmethod
    def _a_parameter_name(cls, value: str) -> str:
        # CloudFormation parameter names are alphanumeric.
        if not value.isalnum():
            raise ValueError("must be the name of a stack parameter (letters and digits)")
        return value


class NukeSettings(StepSettings, OrganizationSettings):
    post_evidence_action: PostEvidenceAction


class OnboardSettings(StepSettings, OrganizationSettings):
    """The Onboard function (organisation mode only): the mode a joined account is registered with (the
    stack's Mode; it acts in dry-run until verified), and which regions of each registered account it
    verifies (VERIFY_REGIONS, comma-separated; empty = the function's own region)."""

    mode: Mode
    verify_regions: tuple[str, ...] = ()

    optional_env: ClassVar[frozenset[str]] = frozenset({"verify_regions", *OrganizationSettings.optional_env})

    _split_regions = field_validator("verify_regions", mode="before")(_split)
