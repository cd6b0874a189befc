"""Fixtures for the detection tests: a moto EC2 client and a small world (see detection_samples)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import boto3
import pytest
from detection_samples import World, build_world
from moto import mock_aws

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client


@pytest.fixture
def ec2() -> Iterator[EC2Client]:
    with mock_aws():
        yield boto3.client("ec2", region_name="us-east-1")


@pytest.fixture
def world(ec2: EC2Client) -> World:
    return build_world(ec2)
