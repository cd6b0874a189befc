"""Clients for the account and region an event or incident is in (organisation mode, issue 14).

In its own account and region a function acts with its own role, as in single-account mode. Anywhere else
it assumes its member role in that account (``ImmutableGuard-Member-<X>``), through the STS endpoint of
that region, with the incident id as the session name so the member's CloudTrail names the incident that
acted. The guard's own resources (ledger, alert topic, evidence bucket, state machine) stay the home
account's: only the services that act on the member's servers go through the member role.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlparse

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from immutable_guard.clients import _RETRY_CONFIG, Clients
from immutable_guard.errors import MemberRoleUnavailable, error_code

if TYPE_CHECKING:
    from mypy_boto3_cloudwatch import CloudWatchClient
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_lambda import LambdaClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sns import SNSClient
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_stepfunctions import SFNClient

# "Role chaining limits your AWS CLI or AWS API role session to a maximum of one hour"; a Lambda function's
# credentials are themselves a role session, so the member role is chained
# (https://docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRole.html, DurationSeconds).
SESSION_SECONDS: Final = 3600
# Credentials are used again until this long before they expire, so no call starts on expiring ones.
RENEW_BEFORE: Final = timedelta(minutes=5)
# RoleSessionName: 2 to 64 characters of [\w+=,.@-] (API_AssumeRole.html, RoleSessionName).
_NOT_IN_SESSION_NAME: Final = re.compile(r"[^\w+=,.@-]")
_SESSION_NAME_MAX: Final = 64
# The global STS endpoint issues tokens that opt-in regions reject unless the account changed a setting;
# a regional endpoint's tokens are valid in every region
# (https://docs.aws.amazon.com/IAM/latest/UserGuide/id_credentials_temp_region-endpoints.html).
_GLOBAL_STS_HOST: Final = "sts.amazonaws.com"
# The role names of the guard itself in an organisation (org.md): central function roles in the security
# account, member roles in every protected account.
GUARD_ROLE_PREFIXES: Final = ("ImmutableGuard-Member-", "ImmutableGuard-Central-")


@dataclass(frozen=True)
class FunctionPlace:
    """Where a function runs: its partition, account and region (read from its own ARN)."""

    partition: str
    account: str
    region: str

    @classmethod
    def of_arn(cls, function_arn: str) -> FunctionPlace:
        """From ``arn:PARTITION:lambda:REGION:ACCOUNT:function:NAME`` (the Lambda context's ARN)."""
        _, partition, _, region, account, *_ = function_arn.split(":")
        return cls(partition, account, region)


def session_name(text: str) -> str:
    """``text`` as an STS role session name: characters STS refuses become "-", and a name too long keeps
    its start and a digest of the whole, so two long names stay apart."""
    name = _NOT_IN_SESSION_NAME.sub("-", text) or "immutable-guard"
    if len(name) > _SESSION_NAME_MAX:
        digest = hashlib.sha256(text.encode()).hexdigest()[:12]
        name = f"{name[: _SESSION_NAME_MAX - len(digest) - 1]}-{digest}"
    return name.ljust(2, "-")


class MemberClients(Clients):
    """The clients of a member account and region, through an assumed role: EC2, Auto Scaling, load
    balancers, IAM, CloudFormation, SSM, CloudTrail and STS act there. The guard's own resources are the
    home account's, so DynamoDB, SNS, SQS, S3, Step Functions, Lambda and CloudWatch are ``home``'s."""

    def __init__(
        self,
        session: boto3.Session,
        region_name: str,
        home: Clients,
        *,
        account: str,
        role_arn: str,
        session_name: str,
    ) -> None:
        super().__init__(session, region_name=region_name)
        self.home = home
        self.account = account
        self.role_arn = role_arn
        self.session_name = session_name

    @cached_property
    def dynamodb(self) -> DynamoDBClient:
        return self.home.dynamodb

    @cached_property
    def sns(self) -> SNSClient:
        return self.home.sns

    @cached_property
    def sqs(self) -> SQSClient:
        return self.home.sqs

    @cached_property
    def s3(self) -> S3Client:
        return self.home.s3

    @cached_property
    def stepfunctions(self) -> SFNClient:
        return self.home.stepfunctions

    @cached_property
    def lambda_(self) -> LambdaClient:
        return self.home.lambda_

    @cached_property
    def cloudwatch(self) -> CloudWatchClient:
        return self.home.cloudwatch


def regional_sts(session: boto3.Session, region: str) -> Any:
    """An STS client on ``region``'s own endpoint. Current SDKs choose it; older ones chose the global
    endpoint for the older regions. An endpoint set for the environment (the local runtime) is kept."""
    sts = session.client("sts", region_name=region, config=_RETRY_CONFIG)
    if urlparse(sts.meta.endpoint_url).hostname == _GLOBAL_STS_HOST:
        sts = session.client(
            "sts",
            region_name=region,
            config=_RETRY_CONFIG,
            endpoint_url=f"https://sts.{region}.amazonaws.com",
        )
    return sts


class MemberAccess:
    """Gives the clients for an account and region, assuming the member role where needed.

    Parameters
    ----------
    home:
        The function's own clients (its role, its region).
    role_name:
        The member role this function assumes in other accounts (MEMBER_ROLE_NAME); None in
        single-account mode, where the function acts only where it runs.
    external_id:
        The external id the member roles' trust policies require, if any (MEMBER_EXTERNAL_ID).
    clock:
        The current time (tests move it).
    """

    def __init__(
        self,
        home: Clients,
        role_name: str | None,
        external_id: str | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.home = home
        self.role_name = role_name
        self.external_id = external_id
        self._clock = clock
        self._lock = threading.Lock()
        # (account, region, role, session name) -> (clients, when their credentials expire)
        self._cache: dict[tuple[str, str, str, str], tuple[MemberClients, datetime]] = {}

    def clients_for(
        self, here: FunctionPlace, account: str | None, region: str | None, session: str
    ) -> Clients:
        """The clients to act in ``account`` and ``region`` (None: where the function runs).

        The same account and region as ``here`` give the function's own clients; any other, the member
        role's, assumed with the session name ``session`` (sanitised) and kept until five minutes before
        the credentials expire. The session name is part of what is kept: the member's CloudTrail must name
        the incident that acted, not an earlier one of the same account.

        Raises
        ------
        MemberRoleUnavailable
            The role cannot be assumed (one line naming the role and what to check), or no member role is
            configured (single-account mode) for a place that is not the function's own.
        """
        account = account or here.account
        region = region or here.region
        if (account, region) == (here.account, here.region):
            return self.home
        if self.role_name is None:
            raise MemberRoleUnavailable(
                f"cannot act in account {account} region {region}: this function acts only in its own "
                f"account {here.account} region {here.region} (ORGANIZATION_ID is not set)"
            )
        name = session_name(session)
        key = (account, region, self.role_name, name)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and self._clock() < cached[1] - RENEW_BEFORE:
                return cached[0]
        clients, expires = self._assume(here, account, region, name)
        with self._lock:
            self._cache[key] = (clients, expires)
            # Expired sessions of finished incidents are dropped, so a warm container does not grow.
            now = self._clock()
            for old in [k for k, (_, until) in self._cache.items() if until <= now]:
                del self._cache[old]
        return clients

    def role_arn(self, here: FunctionPlace, account: str) -> str:
        return f"arn:{here.partition}:iam::{account}:role/{self.role_name}"

    def _assume(
        self, here: FunctionPlace, account: str, region: str, name: str
    ) -> tuple[MemberClients, datetime]:
        role_arn = self.role_arn(here, account)
        request: dict[str, Any] = {
            "RoleArn": role_arn,
            "RoleSessionName": name,
            "DurationSeconds": SESSION_SECONDS,
        }
        if self.external_id:
            request["ExternalId"] = self.external_id
        session = self.home.session
        try:
            credentials = regional_sts(session, region).assume_role(**request)["Credentials"]
        except ClientError as exc:
            message = exc.response.get("Error", {}).get("Message") or str(exc)
            hint = (
                f"; is the member-roles stack deployed in {account}?"
                if error_code(exc) in ("AccessDenied", "AccessDeniedException")
                else ""
            )
            raise MemberRoleUnavailable(f"cannot assume {role_arn}: {message}{hint}") from exc
        except BotoCoreError as exc:
            raise MemberRoleUnavailable(f"cannot assume {role_arn}: {exc}") from exc
        member_session = boto3.Session(
            aws_access_key_id=credentials["AccessKeyId"],
            aws_secret_access_key=credentials["SecretAccessKey"],
            aws_session_token=credentials["SessionToken"],
            region_name=region,
        )
        clients = MemberClients(
            member_session, region, self.home, account=account, role_arn=role_arn, session_name=name
        )
        expires = credentials["Expiration"]
        if expires.tzinfo is None:
            expires = expires.replace(tzinfo=UTC)
        return clients, expires
