"""Starts moto's server on this machine and points boto3 at it, so the whole system runs without an AWS
account: ``with LocalAws() as aws: deployment = aws.deploy({"Mode": "enforce"})``."""

from __future__ import annotations

import json
import logging
import os
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import boto3

from immutable_guard.clients import Clients
from immutable_guard.local import lambda_runner
from immutable_guard.local.deploy import Deployer, Deployment
from immutable_guard.local.moto_fixes import apply_moto_fixes, revert_moto_fixes, wait_for_async_invocations
from immutable_guard.local.stack_credentials import function_update_stack
from immutable_guard.template import find_template

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

REGION = "us-east-1"
_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
}
# An SSM parameter only this runtime writes: gone means moto's backends were reset under us.
_MARKER = "/immutable-guard/local-runtime/marker"
# Variables that would send calls to a real account or another endpoint; cleared while running.
_CLEARED = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SECURITY_TOKEN")
# Organizations creates this role in every account it creates, trusting the management account
# (https://docs.aws.amazon.com/organizations/latest/userguide/orgs_manage_accounts_create-cross-account-role.html).
ORGANIZATION_ACCESS_ROLE = "OrganizationAccountAccessRole"
# moto's account: the one the runtime's own credentials act in.
HOME_ACCOUNT = "123456789012"
# Lambda's default concurrent executions per account and region
# (https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html).
DEFAULT_ACCOUNT_CONCURRENCY = 1_000


class LocalAws:
    """moto's server on 127.0.0.1 with Lambda handlers run in this process.

    Parameters
    ----------
    template_path:
        template.yaml to deploy; found with ``find_template()`` when omitted.
    region:
        Region of every client.
    execute_state_machines:
        Let moto run ASL definitions (Wait states sleep in real time: keep waits parameters).
    """

    def __init__(
        self,
        template_path: Path | None = None,
        region: str = REGION,
        execute_state_machines: bool = True,
    ) -> None:
        self.template_path = Path(template_path) if template_path else find_template()
        self.repo_root = self.template_path.resolve().parent
        self.region = region
        self.execute_state_machines = execute_state_machines
        self._server: Any = None
        self._saved_environ: dict[str, str | None] = {}
        self._saved_sfn_config: Any = None
        self._marker = ""
        self._stop_checks: Callable[[], None] | None = None
        self.port = 0

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> LocalAws:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        from moto.core.config import default_user_config
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        # Port 0: the OS picks a free port, so parallel runs never collide.
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        self.port = int(self._server.get_host_and_port()[1])
        self._saved_sfn_config = default_user_config.get("stepfunctions")
        environment = {
            **_CREDENTIALS,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            "AWS_ENDPOINT_URL": self.endpoint_url,
            # moto's Step Functions interpreter calls Lambda at localhost:$MOTO_PORT.
            "MOTO_PORT": str(self.port),
            # Lambda refuses a reservation that leaves the account under 100 unreserved concurrent
            # executions; moto checks it only when given the account's quota (AWS's default is 1,000,
            # new accounts start lower). Set the variable beforehand to play a new account.
            "MOTO_LAMBDA_CONCURRENCY_QUOTA": os.environ.get(
                "MOTO_LAMBDA_CONCURRENCY_QUOTA", str(DEFAULT_ACCOUNT_CONCURRENCY)
            ),
        }
        for name in (*environment, *_CLEARED):
            self._saved_environ[name] = os.environ.get(name)
        for name in _CLEARED:
            os.environ.pop(name, None)
        os.environ.update(environment)
        lambda_runner.install(self.repo_root)
        # moto authorizes nothing; a function's stack update is authorized as AWS would (its role).
        self._stop_checks = lambda_runner.check_calls(function_update_stack)
        # The server runs in this process: patching moto's classes here changes what it serves.
        apply_moto_fixes()
        self._configure()
        logger.info("local AWS listening on %s", self.endpoint_url)

    def stop(self) -> None:
        if self._server is None:
            return
        if self._stop_checks is not None:
            self._stop_checks()
            self._stop_checks = None
        # Asynchronous invocations end before the runtime that runs them goes.
        wait_for_async_invocations()
        lambda_runner.uninstall()
        revert_moto_fixes()
        try:
            self._post("/moto-api/config", {"stepfunctions": self._saved_sfn_config or {}})
        finally:
            self._server.stop()
            self._server = None
            for name, value in self._saved_environ.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            self._saved_environ.clear()

    def reset(self) -> None:
        """Forget every resource (moto's reset), keeping the server and its configuration."""
        self._post("/moto-api/reset", {})
        self._configure()

    def intact(self) -> bool:
        """False once moto's backends were reset by someone else (e.g. ``mock_aws()`` started in this
        process, which resets the same in-process backends the server serves): every deployed resource
        is gone then. ``reset()`` makes the runtime usable again."""
        ssm = self.session().client("ssm", endpoint_url=self.endpoint_url)
        try:
            value = ssm.get_parameter(Name=_MARKER)["Parameter"]["Value"]
        except ssm.exceptions.ParameterNotFound:
            return False
        return bool(value == self._marker)

    def _configure(self) -> None:
        config = {"stepfunctions": {"execute_state_machine": self.execute_state_machines}}
        self._post("/moto-api/config", config)
        self._marker = uuid.uuid4().hex
        self.session().client("ssm", endpoint_url=self.endpoint_url).put_parameter(
            Name=_MARKER, Value=self._marker, Type="String", Overwrite=True
        )

    def _post(self, path: str, body: Mapping[str, Any]) -> None:
        request = urllib.request.Request(
            self.endpoint_url + path,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()

    # ------------------------------------------------------------------ clients and deploy
    def session(self) -> boto3.Session:
        """A boto3 session for the local AWS (its clients use AWS_ENDPOINT_URL)."""
        return boto3.Session(
            aws_access_key_id=_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            aws_session_token=_CREDENTIALS["AWS_SESSION_TOKEN"],
            region_name=self.region,
        )

    def clients(self) -> Clients:
        return Clients(self.session(), region_name=self.region)

    def account_session(self, account_id: str, region: str | None = None) -> boto3.Session:
        """An administrator's session in another account of the local AWS, as a member account's admin
        reaches it: through the OrganizationAccountAccessRole that Organizations creates in the accounts it
        creates (made here on first use). moto keeps every account's resources apart and scopes assumed-role
        credentials to the role's account; no process-wide account variable is set, which would switch
        every thread of the in-process server."""
        from moto.iam.models import iam_backends

        iam = iam_backends[account_id]["global"]
        if not any(role.name == ORGANIZATION_ACCESS_ROLE for role in iam.roles.values()):
            trust = {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"AWS": f"arn:aws:iam::{HOME_ACCOUNT}:root"},
                        "Action": "sts:AssumeRole",
                    }
                ],
            }
            iam.create_role(
                role_name=ORGANIZATION_ACCESS_ROLE,
                assume_role_policy_document=json.dumps(trust),
                path="/",
                permissions_boundary=None,
                description="the organisation's administrator access (created by Organizations in AWS)",
                tags=[],
                max_session_duration="3600",
            )
        credentials = (
            self.session()
            .client("sts")
            .assume_role(
                RoleArn=f"arn:aws:iam::{account_id}:role/{ORGANIZATION_ACCESS_ROLE}",
                RoleSessionName="local-administrator",
            )["Credentials"]
        )
        return boto3.Session(
            aws_access_key_id=credentials["AccessKeyId"],
            aws_secret_access_key=credentials["SecretAccessKey"],
            aws_session_token=credentials["SessionToken"],
            region_name=region or self.region,
        )

    def deploy(
        self,
        parameters: Mapping[str, str] | None = None,
        stack_name: str = "immutable-guard",
        template_path: Path | None = None,
        allow_missing_code: bool = False,
        previous: Deployment | None = None,
        session: boto3.Session | None = None,
    ) -> Deployment:
        """Create every resource of the template; ``parameters`` override the defaults.

        ``previous``: this stack's earlier deployment, to update it as ``sam deploy`` would (only what
        changed). ``session``: whose calls the deploy makes, e.g. a CloudTrailEmitter's session, so the
        deploy's own API calls reach the template's rules as CloudTrail would deliver them.
        """
        deployer = Deployer(
            session or self.session(),
            template_path or self.template_path,
            stack_name=stack_name,
            endpoint_url=self.endpoint_url,
            allow_missing_code=allow_missing_code,
        )
        deployment = deployer.deploy(parameters, previous=previous)
        for skipped in deployment.skipped:
            logger.warning(
                "not deployed locally: %s (%s) %s", skipped.logical_id, skipped.resource_type, skipped.reason
            )
        return deployment


class LocalSession:
    """What was built on a LocalAws (deployments, workloads), built again after moto's backends were reset.

    ``mock_aws()`` started anywhere in this process resets the backends the server serves; whoever keeps
    resources across tests asks for them here, and gets them rebuilt on a fresh runtime after a reset.
    """

    def __init__(self, aws: LocalAws) -> None:
        self.aws = aws
        self._built: dict[str, Any] = {}

    def get(self, key: str, build: Callable[[], _T]) -> _T:
        """The thing built under ``key``; ``build()`` runs the first time and after every reset."""
        if self._built and not self.aws.intact():
            logger.warning("moto's backends were reset: resetting the local AWS and building again")
            self.aws.reset()
            self._built.clear()
        if key not in self._built:
            self._built[key] = build()
        return self._built[key]  # type: ignore[no-any-return]
