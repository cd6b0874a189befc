"""The organisation drill's world on the embedded local AWS (issue 14): an AWS Organizations organisation
with a management account, the security account (template.yaml in organisation mode, in its home region)
and member accounts, in two regions.

Each account gets organization/member-roles.yaml once and organization/member-regional.yaml in every
region, through CloudFormation in that account (reached by AssumeRole into its
OrganizationAccountAccessRole, as the management account's administrator can), which is what the
service-managed StackSets do: one stack instance per account and region. moto has no StackSets; the world
plays their auto-deployment. The forwarding hop is the member's own default-bus rules
(local/forwarding.py), the organisation bus's policy is enforced (moto_fixes section m), and Detect's rules
on that bus are the security account's EventRouter.

The building blocks (``admin_session``, ``member_roles_stack``, ``golden_group``...) are also what the
organisation e2e tests use."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3

from immutable_guard.accounts import AccountRegistry
from immutable_guard.clients import Clients
from immutable_guard.drill.report import Progress
from immutable_guard.drill.world import LOCAL_PACE, Guard, subscribe_queue
from immutable_guard.model import Mode

if TYPE_CHECKING:
    from immutable_guard.local import EventRouter, LocalAws
    from immutable_guard.local.deploy import Deployment
    from immutable_guard.local.forwarding import AccountBus, Forwarded

ORGANIZATION_BUS = "immutable-guard-organization"
MANAGEMENT_ACCOUNT = "100000000001"  # the organisation's management account (not the security account)
OUTSIDER_ACCOUNT = "999900009999"  # an account of no organisation
REGIONS = ("us-east-1", "eu-west-1")  # the security account's home region first
MEMBER_NAMES = ("workloads-a", "workloads-b")
ORGANIZATION_ACCESS_ROLE = "OrganizationAccountAccessRole"
ROLES_STACK = "immutable-guard-member-roles"
REGIONAL_STACK = "immutable-guard-member-regional"
SCOPE_TAG = {"Key": "immutable", "Value": "true", "PropagateAtLaunch": True}
ATTACKER = "arn:aws:sts::{account}:assumed-role/attacker/stolen-session"
PIPELINE_ROLE = "arn:aws:iam::{account}:role/deploy-pipeline"
PIPELINE_SESSION = "arn:aws:sts::{account}:assumed-role/deploy-pipeline/build-2077"

# The security account's guard: enforce, fast polls, the storm over three accounts within the drill's time.
ORGANIZATION_PARAMETERS = {
    "Mode": "enforce",
    "SnapshotPollSeconds": "1",
    "ReplacementPollSeconds": "1",
    "MaxPolls": "60",
    "MaxIncidentsPerHour": "50",
    "MaxIncidentsPerAccountHour": "10",
    "MaxIncidentsPerAccountRegionHour": "10",
    "OrgStormAccounts": "3",
    "OrgStormWindowMinutes": "120",
    "PostEvidenceAction": "terminate",
    # Onboarding verifies every region the member-regional StackSet targets.
    "VerifyRegions": ",".join(REGIONS),
}


def _session(credentials: dict[str, Any], region: str) -> boto3.Session:
    return boto3.Session(
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
        region_name=region,
    )


def admin_session(management: boto3.Session, account: str, region: str) -> boto3.Session:
    """The administrator of an organisation account, as the management account reaches it: AssumeRole into
    the OrganizationAccountAccessRole that Organizations created there (trusting the management account)."""
    credentials = management.client("sts", region_name=region).assume_role(
        RoleArn=f"arn:aws:iam::{account}:role/{ORGANIZATION_ACCESS_ROLE}", RoleSessionName="org-admin"
    )["Credentials"]
    return _session(dict(credentials), region)


def create_stack(
    session: boto3.Session, region: str, name: str, body: str, parameters: dict[str, str]
) -> None:
    """One stack instance, as a StackSet creates it in an account and region; waits for it."""
    cloudformation = session.client("cloudformation", region_name=region)
    cloudformation.create_stack(
        StackName=name,
        TemplateBody=body,
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
        Capabilities=["CAPABILITY_NAMED_IAM"],
    )
    cloudformation.get_waiter("stack_create_complete").wait(
        StackName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 120}
    )


def member_roles_stack(
    session: boto3.Session, repo_root: Path, organization_id: str, security_account: str, security_region: str
) -> None:
    """organization/member-roles.yaml in the account of ``session`` (IAM is global: once per account)."""
    create_stack(
        session,
        security_region,
        ROLES_STACK,
        (repo_root / "organization" / "member-roles.yaml").read_text("utf-8"),
        {
            "SecurityAccountId": security_account,
            "SecurityRegion": security_region,
            "OrganizationId": organization_id,
        },
    )


def member_regional_stack(
    session: boto3.Session,
    repo_root: Path,
    region: str,
    security_account: str,
    security_region: str,
    forward_organization_events: bool = False,
) -> None:
    """organization/member-regional.yaml in one region of the account of ``session``. moto's CloudFormation
    creates no Config recorder or SSM association (it skips those types): the region's recorder and trail
    are made by ``prerequisites`` instead, as an organisation trail and a recorder would already be there."""
    create_stack(
        session,
        region,
        REGIONAL_STACK,
        (repo_root / "organization" / "member-regional.yaml").read_text("utf-8"),
        {
            "SecurityAccountId": security_account,
            "SecurityRegion": security_region,
            "CreateConfigRecorder": "false",
            "CreateInventoryAssociation": "false",
            # The management account's us-east-1 stack forwards the Organizations events of joined accounts.
            "ForwardOrganizationEvents": "true" if forward_organization_events else "false",
        },
    )


def prerequisites(session: boto3.Session, region: str) -> None:
    """What detection relies on in an account and region: a logging trail and a recording Config recorder
    (onboarding verifies both)."""
    account = session.client("sts", region_name=region).get_caller_identity()["Account"]
    s3 = session.client("s3", region_name=region)
    bucket = f"trail-{account}-{region}"
    if region == "us-east-1":
        s3.create_bucket(Bucket=bucket)
    else:
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region})  # type: ignore[typeddict-item]
    cloudtrail = session.client("cloudtrail", region_name=region)
    cloudtrail.create_trail(Name="organization-trail", S3BucketName=bucket)
    cloudtrail.start_logging(Name="organization-trail")
    config = session.client("config", region_name=region)
    config.put_configuration_recorder(
        ConfigurationRecorder={
            "name": "default",
            "roleARN": f"arn:aws:iam::{account}:role/aws-service-role/config.amazonaws.com/"
            "AWSServiceRoleForConfig",
            "recordingGroup": {"allSupported": True, "includeGlobalResourceTypes": False},
        }
    )
    config.put_delivery_channel(DeliveryChannel={"name": "default", "s3BucketName": bucket})
    config.start_configuration_recorder(ConfigurationRecorderName="default")


def golden_group(clients: Clients, name: str = "golden-app", size: int = 2) -> tuple[str, list[str]]:
    """An Auto Scaling group of immutable servers (scope-tagged) in the clients' account and region, so
    Replace can rebuild one; (group name, instance ids)."""
    ec2, autoscaling = clients.ec2, clients.autoscaling
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    subnet = ec2.describe_subnets()["Subnets"][0]
    template = ec2.create_launch_template(
        LaunchTemplateName=f"{name}-{uuid.uuid4().hex[:6]}",
        LaunchTemplateData={"ImageId": image, "InstanceType": "t3.micro"},
    )["LaunchTemplate"]["LaunchTemplateId"]
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName=name,
        LaunchTemplate={"LaunchTemplateId": template, "Version": "$Latest"},
        MinSize=size,
        MaxSize=size * 2,
        DesiredCapacity=size,
        VPCZoneIdentifier=subnet["SubnetId"],
        Tags=[SCOPE_TAG],  # type: ignore[list-item]
    )
    group = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[name])
    return name, [i["InstanceId"] for i in group["AutoScalingGroups"][0]["Instances"]]


def join_by_invitation(management: str, account: str, name: str) -> None:
    """``account`` joins the organisation of ``management`` as an invited account (InviteAccountToOrganization
    and AcceptHandshake). moto serves no handshakes: the account is added to moto's organisation directly,
    with the fields Organizations gives an invited account (JoinedMethod INVITED)."""
    from moto.organizations.models import FakeAccount, organizations_backends

    backend = organizations_backends[management]["aws"]
    assert backend.org is not None, f"{management} has no organisation"
    invited = FakeAccount(backend.org, AccountName=name, Email=f"{name}@example.com")
    invited.id = account
    invited.joined_method = "INVITED"
    backend.accounts.append(invited)
    organizations_backends.master_accounts[account] = (management, "aws")


@dataclass
class Place:
    """One account and region of the organisation: its administrator's clients, its default bus (with the
    member-regional stack's rules), and the golden group it runs there."""

    account: str
    region: str
    clients: Clients
    bus: AccountBus
    group_name: str = ""
    instances: list[str] = field(default_factory=list)
    touched: set[str] = field(default_factory=set)

    @property
    def key(self) -> str:
        return f"{self.account}:{self.region}"

    def in_service(self) -> list[str]:
        group = self.clients.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[self.group_name])
        return sorted(
            i["InstanceId"]
            for i in group["AutoScalingGroups"][0]["Instances"]
            if i["LifecycleState"] == "InService"
        )

    def fresh_server(self) -> str:
        for instance_id in self.in_service():
            if instance_id not in self.touched:
                self.touched.add(instance_id)
                return instance_id
        raise RuntimeError(f"no untouched server left in {self.group_name} of {self.key}")

    def instance(self, instance_id: str) -> dict[str, Any]:
        reservations = self.clients.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
        return reservations[0]["Instances"][0]  # type: ignore[return-value]


class OrganizationWorld:
    """The organisation on the local AWS, built by ``build``. Events happen in a place (account and region)
    and reach Detect only through that place's forwarding rules and the organisation bus's policy."""

    def __init__(self, aws: LocalAws, progress: Progress) -> None:
        self.aws = aws
        self.progress = progress
        self.security_account = ""
        self.home_region = REGIONS[0]
        self.management = aws.account_session(MANAGEMENT_ACCOUNT, self.home_region)
        self.organization_id = ""
        self.members: dict[str, str] = {}  # name -> account id
        self.places: dict[str, Place] = {}
        self.deployment: Deployment | None = None
        self.router: EventRouter | None = None
        self.guard: Guard | None = None
        self._emitters: dict[str, Any] = {}

    # ------------------------------------------------------------------ accounts
    @property
    def bus_arn(self) -> str:
        return f"arn:aws:events:{self.home_region}:{self.security_account}:event-bus/{ORGANIZATION_BUS}"

    def admin(self, account: str, region: str) -> boto3.Session:
        """An administrator's session of an account in a region."""
        if account == self.security_account:
            home = self.aws.session()
            credentials = home.get_credentials()
            assert credentials is not None
            return boto3.Session(
                aws_access_key_id=credentials.access_key,
                aws_secret_access_key=credentials.secret_key,
                aws_session_token=credentials.token,
                region_name=region,
            )
        if account in (MANAGEMENT_ACCOUNT, OUTSIDER_ACCOUNT):
            # The management account's own administrator; an outsider's (the runtime's account_session).
            return self.aws.account_session(account, region)
        return admin_session(self.management, account, region)

    def create_account(self, name: str) -> str:
        """Organizations CreateAccount from the management account: the new account's id."""
        status = self.management.client("organizations").create_account(
            Email=f"{name}@example.com", AccountName=name
        )["CreateAccountStatus"]
        return str(status["AccountId"])

    def stack_sets(self, account: str, regions: tuple[str, ...] = REGIONS) -> None:
        """What the two service-managed StackSets deploy in an account: the roles once, the rules (and the
        region's trail and recorder) per region."""
        repo = self.aws.repo_root
        member_roles_stack(
            self.admin(account, self.home_region),
            repo,
            self.organization_id,
            self.security_account,
            self.home_region,
        )
        for region in regions:
            member_regional_stack(
                self.admin(account, region),
                repo,
                region,
                self.security_account,
                self.home_region,
                forward_organization_events=account == MANAGEMENT_ACCOUNT and region == "us-east-1",
            )
            if not (account == self.security_account and region == self.home_region):
                prerequisites(self.admin(account, region), region)  # (template.yaml made the home one)

    def place(self, account: str, region: str, workload: bool = True) -> Place:
        from immutable_guard.local.forwarding import AccountBus

        session = self.admin(account, region)
        clients = Clients(session, region_name=region)
        receivers = {self.bus_arn: self._to_organization_bus}
        place = Place(account, region, clients, AccountBus(session, region, receivers))
        if workload:
            place.group_name, place.instances = golden_group(clients)
        self.places[place.key] = place
        return place

    def _to_organization_bus(self, event: dict[str, Any]) -> None:
        assert self.router is not None
        self.router.put(event, bus=ORGANIZATION_BUS)

    # ------------------------------------------------------------------ what happens in a place
    def emitter(self, place: Place) -> Any:
        """The place's CloudTrail: records calls and hands each event to the place's default bus."""
        from immutable_guard.local.trail import CloudTrailEmitter

        if place.key not in self._emitters:
            self._emitters[place.key] = CloudTrailEmitter(place.bus.put, place.region)
        return self._emitters[place.key]

    def push_ssh_key(self, place: Place, instance_id: str, actor_arn: str | None = None) -> dict[str, Any]:
        """An SSH key pushed through EC2 Instance Connect in the place, as its CloudTrail records it."""
        from immutable_guard.local.trail import Actor

        actor = Actor(arn=actor_arn or ATTACKER.format(account=place.account))
        return dict(
            self.emitter(place).emit(
                actor,
                "ec2-instance-connect.amazonaws.com",
                "SendSSHPublicKey",
                {
                    "instanceId": instance_id,
                    "instanceOSUser": "ec2-user",
                    "sshPublicKey": "ssh-ed25519 AAAA x",
                },
            )
        )

    def last_forwarded(self, place: Place) -> Forwarded:
        return place.bus.history[-1][1]

    def report_instance_change(self, place: Place, instance_id: str, changed: dict[str, Any]) -> Forwarded:
        """Config's item for a change of the instance (as Config would report it now), put on the place's
        default bus."""
        from immutable_guard.local import config_items

        item = config_items.instance_changed(
            place.instance(instance_id), changed, place.region, place.account
        )
        return place.bus.put(item)

    # ------------------------------------------------------------------ the security account's view
    @property
    def security(self) -> Guard:
        assert self.guard is not None
        return self.guard

    @property
    def registry(self) -> AccountRegistry:
        return AccountRegistry(self.security.clients.dynamodb, self.security.outputs["IncidentLedgerName"])

    def security_ec2(self) -> Any:
        return self.security.clients.session.client("ec2", region_name=self.home_region)

    # ------------------------------------------------------------------ building it
    def build(self) -> OrganizationWorld:
        from immutable_guard.local import EventRouter

        began = time.monotonic()
        clients = self.aws.clients()
        self.security_account = str(clients.sts.get_caller_identity()["Account"])
        organizations = self.management.client("organizations")
        self.organization_id = str(organizations.create_organization(FeatureSet="ALL")["Organization"]["Id"])
        join_by_invitation(MANAGEMENT_ACCOUNT, self.security_account, "security")
        for name in MEMBER_NAMES:
            self.members[name] = self.create_account(name)
        self.progress.say(
            f"organisation {self.organization_id}: management {MANAGEMENT_ACCOUNT}, security "
            f"{self.security_account}, members {', '.join(self.members.values())}"
        )
        first = self.members[MEMBER_NAMES[0]]
        parameters = {
            **ORGANIZATION_PARAMETERS,
            "OrganizationId": self.organization_id,
            # The pipeline of the first member account is allow-listed (an allow-list names any account).
            "AllowedPrincipalArns": PIPELINE_ROLE.format(account=first),
        }
        self.deployment = self.aws.deploy(parameters)
        self.router = EventRouter(self.deployment, self.aws.session())
        queue_url, _ = subscribe_queue(clients, self.deployment.outputs["AlertTopicArn"], "security-team")
        self.guard = Guard(
            clients,
            dict(self.deployment.outputs),
            dict(self.deployment.parameters),
            queue_url,
            None,  # type: ignore[arg-type]  # attacks happen in places (push_ssh_key), not through a Guard
            LOCAL_PACE,
        )
        self.progress.say(
            f"security account: template.yaml deployed in organisation mode ({self.home_region})"
        )
        # The StackSets: every account of the organisation, the security and management accounts included.
        for account in (self.security_account, MANAGEMENT_ACCOUNT, *self.members.values()):
            self.stack_sets(account)
        self.progress.say("member-roles and member-regional stacks deployed in every account and region")
        registry = self.registry
        for account in self.members.values():
            registry.add(account, Mode.ENFORCE, ou="ou-workloads")
            registry.mark_verified(account)
        for account in self.members.values():
            for region in REGIONS:
                self.place(account, region)
        for region in REGIONS:
            self.place(self.security_account, region)
        # Organizations reports joined accounts in the management account's us-east-1 CloudTrail.
        self.place(MANAGEMENT_ACCOUNT, "us-east-1", workload=False)
        self.progress.say(
            f"golden groups in {len(self.places)} account-regions ({time.monotonic() - began:.1f} s)"
        )
        return self

    def outsider(self, region: str) -> Place:
        """An account outside the organisation with the member-regional stack pointing at the organisation
        bus (anyone can deploy it: only the bus policy keeps it out)."""
        key = f"{OUTSIDER_ACCOUNT}:{region}"
        if key not in self.places:
            session = self.admin(OUTSIDER_ACCOUNT, region)
            member_regional_stack(
                session, self.aws.repo_root, region, self.security_account, self.home_region
            )
            self.place(OUTSIDER_ACCOUNT, region)
        return self.places[key]

    def scheduled_event(self) -> dict[str, Any]:
        """What the Onboard function's schedule (its VerifyAccounts rule) delivers: a "Scheduled Event"."""
        return {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": "Scheduled Event",
            "source": "aws.events",
            "account": self.security_account,
            "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "region": self.home_region,
            "resources": [
                f"arn:aws:events:{self.home_region}:{self.security_account}:rule/immutable-guard-VerifyAccounts"
            ],
            "detail": {},
        }

    def alerts_of(self, incident_id: str) -> list[dict[str, Any]]:
        return [a for a in self.security.alerts() if a.get("incident_id") == incident_id]


def created_account_event(management: str, account: str) -> dict[str, Any]:
    """Organizations' CreateAccountResult for ``account``, as the management account's CloudTrail delivers it
    to EventBridge in us-east-1 (the shape of events/organization/create-account-result.json, after
    https://docs.aws.amazon.com/organizations/latest/userguide/orgs_cloudtrail-integration.html)."""
    now = datetime.now(UTC)
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    said = now.strftime("%b %d, %Y %-I:%M:%S %p")
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "AWS Service Event via CloudTrail",
        "source": "aws.organizations",
        "account": management,
        "time": stamp,
        "region": "us-east-1",
        "resources": [],
        "detail": {
            "eventVersion": "1.08",
            "userIdentity": {"accountId": management, "invokedBy": "AWS Internal"},
            "eventTime": stamp,
            "eventSource": "organizations.amazonaws.com",
            "eventName": "CreateAccountResult",
            "awsRegion": "us-east-1",
            "sourceIPAddress": "AWS Internal",
            "userAgent": "AWS Internal",
            "requestParameters": None,
            "responseElements": None,
            "eventID": str(uuid.uuid4()),
            "readOnly": False,
            "eventType": "AwsServiceEvent",
            "managementEvent": True,
            "recipientAccountId": management,
            "serviceEventDetails": {
                "createAccountStatus": {
                    "id": f"car-{uuid.uuid4().hex[:32]}",
                    "state": "SUCCEEDED",
                    "accountName": "****",
                    "accountId": account,
                    "requestedTimestamp": said,
                    "completedTimestamp": said,
                }
            },
            "eventCategory": "Management",
        },
    }


@contextmanager
def organization_world(progress: Progress) -> Iterator[OrganizationWorld]:
    """The embedded local AWS with the organisation built."""
    from immutable_guard.local import LocalAws

    with LocalAws() as aws:
        yield OrganizationWorld(aws, progress).build()
