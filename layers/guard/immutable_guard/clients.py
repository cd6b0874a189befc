"""A lazy bundle of boto3 clients, so logic receives its clients and nothing is created at import time."""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar, cast

import boto3
from botocore.config import Config

if TYPE_CHECKING:
    from mypy_boto3_autoscaling import AutoScalingClient
    from mypy_boto3_cloudformation import CloudFormationClient
    from mypy_boto3_cloudwatch import CloudWatchClient
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_elbv2 import ElasticLoadBalancingv2Client
    from mypy_boto3_iam import IAMClient
    from mypy_boto3_lambda import LambdaClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sns import SNSClient
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_stepfunctions import SFNClient
    from mypy_boto3_sts import STSClient

_C = TypeVar("_C")


class _MadeAtFirstUse:
    """Stands for a client until something is asked of it: the client is made then (in that thread)."""

    def __init__(self, make: Callable[[], Any]) -> None:
        self._make = make
        self._client: Any = None

    def __getattr__(self, name: str) -> Any:
        if self._client is None:
            self._client = self._make()
        return getattr(self._client, name)


def at_first_use(make: Callable[[], _C]) -> _C:
    """``make()``'s client, made when first used. Making a client parses its service model (about 0.1 s
    of a cold start): an event judged without AWS, or without the ledger, does not pay for it."""
    return cast(_C, _MadeAtFirstUse(make))


# Standard retry mode with a few attempts: throttling inside one step is absorbed here; longer
# outages surface as errors that the state machine's Retry handles with back-off.
_RETRY_CONFIG = Config(retries={"mode": "standard", "max_attempts": 4})


class Clients:
    """boto3 clients created on first use from one session.

    Parameters
    ----------
    session:
        The boto3 session to use; a default session when omitted.
    region_name:
        Region override; the session's region when omitted.
    """

    def __init__(self, session: boto3.Session | None = None, region_name: str | None = None) -> None:
        self._session = session or boto3.Session()
        self._region = region_name

    def _client(self, name: str) -> Any:
        return self._session.client(name, region_name=self._region, config=_RETRY_CONFIG)  # type: ignore[call-overload]

    @property
    def session(self) -> boto3.Session:
        """The session the clients are created from (its credentials are the caller's)."""
        return self._session

    @property
    def region(self) -> str:
        return self._region or self._session.region_name or "us-east-1"

    @cached_property
    def ec2(self) -> EC2Client:
        return self._client("ec2")  # type: ignore[no-any-return]

    @cached_property
    def autoscaling(self) -> AutoScalingClient:
        return self._client("autoscaling")  # type: ignore[no-any-return]

    @cached_property
    def elbv2(self) -> ElasticLoadBalancingv2Client:
        return self._client("elbv2")  # type: ignore[no-any-return]

    @cached_property
    def cloudformation(self) -> CloudFormationClient:
        return self._client("cloudformation")  # type: ignore[no-any-return]

    @cached_property
    def dynamodb(self) -> DynamoDBClient:
        return self._client("dynamodb")  # type: ignore[no-any-return]

    @cached_property
    def sns(self) -> SNSClient:
        return self._client("sns")  # type: ignore[no-any-return]

    @cached_property
    def sqs(self) -> SQSClient:
        return self._client("sqs")  # type: ignore[no-any-return]

    @cached_property
    def s3(self) -> S3Client:
        return self._client("s3")  # type: ignore[no-any-return]

    @cached_property
    def stepfunctions(self) -> SFNClient:
        return self._client("stepfunctions")  # type: ignore[no-any-return]

    @cached_property
    def lambda_(self) -> LambdaClient:
        return self._client("lambda")  # type: ignore[no-any-return]

    @cached_property
    def cloudwatch(self) -> CloudWatchClient:
        return self._client("cloudwatch")  # type: ignore[no-any-return]

    @cached_property
    def sts(self) -> STSClient:
        return self._client("sts")  # type: ignore[no-any-return]

    @cached_property
    def iam(self) -> IAMClient:
        return self._client("iam")  # type: ignore[no-any-return]

    @cached_property
    def ssm(self) -> Any:
        return self._client("ssm")

    @cached_property
    def cloudtrail(self) -> Any:
        return self._client("cloudtrail")
