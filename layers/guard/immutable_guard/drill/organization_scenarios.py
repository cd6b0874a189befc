"""The organisation drill's scenarios (`immutable-guard drill --organization`, issue 14): attacks in each
member account and region, remediated through the member roles with the evidence taken into the security
account's custody; an account outside the organisation refused; benign twins that must not remediate; the
organisation-storm breaker; a new account joining. Every effect is read back from the API of the account
concerned (the member's EC2 and Auto Scaling, the security account's S3, EC2 and ledger)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from immutable_guard.drill.organization_world import (
    ATTACKER,
    MANAGEMENT_ACCOUNT,
    MEMBER_NAMES,
    PIPELINE_ROLE,
    PIPELINE_SESSION,
    REGIONS,
    OrganizationWorld,
    Place,
    created_account_event,
)
from immutable_guard.drill.report import ScenarioReport, ScenarioSkipped, play, timeline
from immutable_guard.drill.world import ISOLATION_GROUP_NAME, IsolationWatch
from immutable_guard.ledger import IncidentLedger

EVIDENCE_TAG = "immutable-guard:incident"
OUTSIDE_REGION = REGIONS[1]
ECHO_SESSION = "ig-drill-guard-echo"  # the session name the guard's member role acts under (an incident id)


def _attack_key(name: str, region: str) -> str:
    return f"attack-{name.rsplit('-', 1)[-1]}-{region}"


ATTACKS = tuple((_attack_key(name, region), name, region) for name in MEMBER_NAMES for region in REGIONS)
SCENARIOS: tuple[tuple[str, str], ...] = (
    *(
        (key, f"an SSH key pushed in member account {name} ({region}): remediated through its member roles")
        for key, name, region in ATTACKS
    ),
    (
        "allow-listed-pipeline",
        "the allow-listed pipeline of a member account changes a server: nothing happens",
    ),
    ("guard-echo", "Config's echo of the guard's own change in a member account: nothing happens"),
    ("outside-account", "an account outside the organisation forwards an attack: refused"),
    ("organization-storm", "changes in three accounts within the window: the organisation turns notify-only"),
    ("account-joins", "a new account joins: dry-run until verified, then protected"),
)
SCENARIO_NAMES = tuple(key for key, _ in SCENARIOS)


class OrganizationDrill:
    """Runs the scenarios in an OrganizationWorld."""

    def __init__(self, world: OrganizationWorld) -> None:
        self.world = world
        self.progress = world.progress

    # ------------------------------------------------------------------ helpers
    @property
    def ledger(self) -> IncidentLedger:
        return self.world.security.ledger

    def member(self, name: str, region: str) -> Place:
        return self.world.places[f"{self.world.members[name]}:{region}"]

    def incident_ids(self) -> set[str]:
        return {i.incident_id for i in self.ledger.list_incidents(limit=1000)}

    def started(self) -> dict[str, dict[str, Any]]:
        """Every remediation started: execution name -> its input."""
        security = self.world.security
        sfn = security.clients.stepfunctions
        found = {}
        for name in security.executions():
            described = sfn.describe_execution(executionArn=security.execution_arn(name))
            found[name] = json.loads(described.get("input") or "{}")
        return found

    def untouched(self, place: Place, instance_id: str) -> tuple[bool, str]:
        """Read from the place's own EC2: running, out of isolation, no guard tags."""
        instance = place.instance(instance_id)
        groups = {g["GroupName"] for g in instance.get("SecurityGroups", [])}
        tags = {t["Key"] for t in instance.get("Tags", []) if t["Key"].startswith("immutable-guard:")}
        state = instance["State"]["Name"]
        ok = state == "running" and ISOLATION_GROUP_NAME not in groups and not tags
        return ok, f"{state}, groups {sorted(groups)}, guard tags {sorted(tags) or 'none'}"

    def judged(self, event: dict[str, Any]) -> tuple[str, str]:
        """Detect's decision and reason for a CloudTrail event it judged exempt, read from the security
        account's ledger (what Detect remembers for Config's echo: its answer is not observable when Detect
        reads a queue), or ("", "") when it remembers none."""
        event_id = str((event.get("detail") or {}).get("eventID") or "")
        reason = self.ledger.exempt_reason_of_event(event_id) if event_id else None
        return ("ignore", reason) if reason else ("", "")

    def nothing_happened(
        self,
        report: ScenarioReport,
        incidents_before: set[str],
        executions_before: set[str],
        alerts_before: int,
    ) -> None:
        security = self.world.security
        new = self.incident_ids() - incidents_before
        report.expect("no incident opened", not new, ", ".join(sorted(new)))
        started = set(security.executions()) - executions_before
        report.expect("no remediation started", not started, ", ".join(sorted(started)))
        alerts = security.alerts()[alerts_before:]
        report.expect("no alert sent", not alerts, ", ".join(str(a.get("stage")) for a in alerts))

    # ------------------------------------------------------------------ an attack in a member
    def attack(self, report: ScenarioReport, place: Place) -> None:
        world, security = self.world, self.world.security
        region = place.region
        instance_id = place.fresh_server()
        mappings = place.instance(instance_id).get("BlockDeviceMappings", [])
        volumes = [m["Ebs"]["VolumeId"] for m in mappings if "Ebs" in m]
        alerts_before = len(security.alerts())
        began = time.time()
        # The watch reads the member's EC2 while the security account's state machine runs.
        probe = SimpleNamespace(stepfunctions=security.clients.stepfunctions, ec2=place.clients.ec2)
        event = world.push_ssh_key(place, instance_id)
        forwarded = world.last_forwarded(place)
        report.expect(
            "forwarded by the member's own rule to the organisation bus",
            forwarded.delivered == [world.bus_arn] and len(forwarded.rules) == 1,
            f"rules {forwarded.rules}, delivered {forwarded.delivered}, refused {forwarded.refused}",
        )
        incidents = security.incidents_for(instance_id)
        if not report.expect("one incident opened", len(incidents) == 1, f"{len(incidents)} incident(s)"):
            return
        incident = incidents[0]
        report.incidents.append(incident.incident_id)
        report.expect(
            "the incident names the member's account and region",
            (incident.account, incident.region, incident.mode) == (place.account, region, "enforce"),
            f"{incident.account}/{incident.region} {incident.mode}",
        )
        with IsolationWatch(
            probe,  # type: ignore[arg-type]
            instance_id,
            security.execution_arn(incident.incident_id),
            security.pace.poll_seconds,
        ) as watch:
            execution = security.wait_for_execution(incident.incident_id)
        given = json.loads(execution.get("input") or "{}")
        report.expect(
            "remediation started for the member's account and region",
            (given.get("account"), given.get("region")) == (place.account, region),
            f"{given.get('account')}/{given.get('region')}",
        )
        report.expect("remediation succeeded", execution["status"] == "SUCCEEDED", execution["status"])
        observed = watch.observed
        report.expect(
            "isolated (every ENI read from the member's EC2 while quarantined)",
            bool(observed)
            and all(len(groups) == 1 and groups[0] in watch.isolation_group_ids for groups in observed or []),
            "never observed before nuke" if observed is None else f"ENI groups {observed}",
        )
        snapshots = place.clients.ec2.describe_snapshots(
            OwnerIds=["self"], Filters=[{"Name": f"tag:{EVIDENCE_TAG}", "Values": [incident.incident_id]}]
        )["Snapshots"]
        report.expect(
            "snapshots completed for every volume (member's EC2)",
            bool(snapshots)
            and all(s["State"] == "completed" for s in snapshots)
            and {s["VolumeId"] for s in snapshots} >= set(volumes) > set(),
            f"{len(snapshots)} snapshot(s) for {len(volumes)} volume(s)",
        )
        self.custody(report, place, incident.incident_id, len(volumes))
        state = place.instance(instance_id)["State"]["Name"]
        report.expect(
            "old instance terminated (member's EC2)", state in ("shutting-down", "terminated"), state
        )
        in_service = place.in_service()
        report.expect(
            "replaced: the member's group is back to full strength without it",
            len(in_service) == len(place.instances) and instance_id not in in_service,
            f"in service {in_service}",
        )
        final = self.ledger.get(incident.incident_id)
        report.expect(
            "incident closed in the ledger, replaced and nuked",
            final.status.value == "CLOSED" and {"replaced", "nuked"} <= set(final.timeline),
            f"{final.status.value}, {', '.join(final.timeline)}",
        )
        alerts = security.wait_for_alerts(
            lambda received: any(
                a.get("incident_id") == incident.incident_id and a.get("stage") == "detected"
                for a in received[alerts_before:]
            )
        )
        mine = [a for a in alerts[alerts_before:] if a.get("incident_id") == incident.incident_id]
        report.expect(
            "the team was alerted, naming the member account",
            any(a.get("stage") == "detected" and a.get("account") == place.account for a in mine),
            ", ".join(f"{a.get('stage')}@{a.get('account')}" for a in mine) or "none",
        )
        report.timeline_ms = timeline(final, mine, began)
        del event

    def custody(self, report: ScenarioReport, place: Place, incident_id: str, volumes: int) -> None:
        """The evidence in the security account: the manifest under account/region/incident, and copies
        owned, encrypted and locked there (read from the security account's S3 and EC2)."""
        security = self.world.security
        key = f"{place.account}/{place.region}/{incident_id}/manifest.json"
        try:
            body = security.clients.s3.get_object(Bucket=security.outputs["EvidenceBucketName"], Key=key)
            manifest = json.loads(body["Body"].read())
        except Exception as exc:
            report.expect(
                "manifest stored in the security account under account/region/incident", False, str(exc)
            )
            return
        report.expect("manifest stored in the security account under account/region/incident", True, key)
        copies = (manifest.get("custody") or {}).get("copies") or []
        ids = [c.get("custody_snapshot_id") for c in copies if c.get("custody_snapshot_id")]
        ec2 = self.world.security_ec2()
        held = ec2.describe_snapshots(SnapshotIds=ids)["Snapshots"] if ids else []
        report.expect(
            "evidence copied into the security account (its own, completed, encrypted)",
            len(held) == volumes > 0
            and all(
                (s["OwnerId"], s["State"], s["Encrypted"]) == (self.world.security_account, "completed", True)
                for s in held
            ),
            f"{len(held)} copy(ies) of {volumes} volume(s)",
        )
        locks = ec2.describe_locked_snapshots(SnapshotIds=ids)["Snapshots"] if ids else []
        report.expect(
            "the copies are locked in the security account",
            len(locks) == len(ids) > 0
            and all(lock["LockState"] in ("governance", "compliance") for lock in locks),
            ", ".join(str(lock["LockState"]) for lock in locks) or "no lock",
        )

    # ------------------------------------------------------------------ benign twins
    def allow_listed_pipeline(self, report: ScenarioReport) -> None:
        world, security = self.world, self.world.security
        place = self.member(MEMBER_NAMES[0], REGIONS[1])
        instance_id = place.fresh_server()
        incidents, executions, alerts = (
            self.incident_ids(),
            set(security.executions()),
            len(security.alerts()),
        )
        # The member's own pipeline (allow-listed by its role ARN, in its account) does what the attacker did.
        event = world.push_ssh_key(place, instance_id, PIPELINE_SESSION.format(account=place.account))
        forwarded = world.last_forwarded(place)
        report.expect(
            "forwarded to the organisation bus (Detect judged it)",
            forwarded.delivered == [world.bus_arn],
            f"delivered {forwarded.delivered}",
        )
        report.expect(
            "the allow-list names the member's role",
            PIPELINE_ROLE.format(account=place.account) in security.parameters["AllowedPrincipalArns"],
        )
        report.expect(
            "Detect ignored it: allow_listed_principal",
            self.judged(event) == ("ignore", "allow_listed_principal"),
            "/".join(self.judged(event)),
        )
        self.nothing_happened(report, incidents, executions, alerts)
        ok, detail = self.untouched(place, instance_id)
        report.expect("the server is untouched (member's EC2)", ok, detail)

    def guard_echo(self, report: ScenarioReport) -> None:
        from immutable_guard.local.config_recorder import ConfigRecorder
        from immutable_guard.local.trail import Actor

        world, security = self.world, self.world.security
        place = self.member(MEMBER_NAMES[1], REGIONS[1])
        instance_id = place.fresh_server()
        # The member's Config recorder, started now (what existed before is its starting point).
        recorder = ConfigRecorder(
            world.admin(place.account, place.region), place.bus.put, place.region, place.account
        )
        recorder.start()
        incidents, executions, alerts = (
            self.incident_ids(),
            set(security.executions()),
            len(security.alerts()),
        )
        # The guard's member role, as the Quarantine function assumes it from the security account.
        role_arn = f"arn:aws:iam::{place.account}:role/ImmutableGuard-Member-Quarantine"
        credentials = security.clients.sts.assume_role(RoleArn=role_arn, RoleSessionName=ECHO_SESSION)[
            "Credentials"
        ]
        actor = Actor(
            arn=f"arn:aws:sts::{place.account}:assumed-role/ImmutableGuard-Member-Quarantine/{ECHO_SESSION}"
        )
        emitter = type(world.emitter(place))(place.bus.put, place.region, recorder)
        guard = emitter.session(actor, place.region, credentials)
        instance = place.instance(instance_id)
        extra = place.clients.ec2.create_security_group(
            GroupName=f"guard-echo-{instance_id}", Description="one more group", VpcId=instance["VpcId"]
        )["GroupId"]
        wanted = sorted({*(g["GroupId"] for g in instance["SecurityGroups"]), extra})
        # The guard changes the server's groups: CloudTrail records the member role's call, Config its echo.
        mark = len(place.bus.history)
        guard.client("ec2").modify_instance_attribute(InstanceId=instance_id, Groups=wanted)
        echoes = [i for i in recorder.items if i["detail"]["configurationItem"]["resourceId"] == instance_id]
        report.expect(
            "Config reported the change, naming the guard's call in relatedEvents",
            bool(echoes)
            and any(
                emitter.events[-1]["detail"]["eventID"] in i["detail"]["configurationItem"]["relatedEvents"]
                for i in echoes
            ),
            f"{len(echoes)} item(s)",
        )
        heard = place.bus.history[mark:]
        report.expect(
            "the call and its echo were forwarded to the organisation bus",
            len(heard) >= 2 and all(f.delivered == [world.bus_arn] for _, f in heard),
            f"{len(heard)} event(s)",
        )
        # Detect judged the member role's call the guard's own (remembered in the ledger for its echo); the
        # echo, an immutable server's groups changed with no actor, would be remediated on its own.
        call = emitter.events[-1]
        report.expect(
            "Detect judged the member role's call: own_change",
            self.judged(call) == ("ignore", "own_change"),
            "/".join(self.judged(call)) or "not judged exempt",
        )
        self.nothing_happened(report, incidents, executions, alerts)
        groups = sorted(g["GroupId"] for g in place.instance(instance_id)["SecurityGroups"])
        report.expect("the guard's change stays (member's EC2)", groups == wanted, f"groups {groups}")

    # ------------------------------------------------------------------ outside the organisation
    def outside_account(self, report: ScenarioReport) -> None:
        world, security = self.world, self.world.security
        outsider = world.outsider(OUTSIDE_REGION)
        instance_id = outsider.fresh_server()
        incidents, executions, alerts = (
            self.incident_ids(),
            set(security.executions()),
            len(security.alerts()),
        )
        judged = len(world.router.delivered) if world.router else 0
        event = world.push_ssh_key(outsider, instance_id)
        forwarded = world.last_forwarded(outsider)
        report.expect(
            "its forwarding rule matched, the organisation bus's policy refused the event",
            bool(forwarded.rules) and forwarded.refused == [world.bus_arn] and not forwarded.delivered,
            f"delivered {forwarded.delivered}, refused {forwarded.refused}",
        )
        sqs = outsider.clients.sqs
        queues = [u for u in sqs.list_queues().get("QueueUrls", []) if "ForwardingDeadLetterQueue" in u]
        parked = (
            sqs.receive_message(
                QueueUrl=queues[0], MaxNumberOfMessages=10, MessageAttributeNames=["All"]
            ).get("Messages", [])
            if queues
            else []
        )
        report.expect(
            "the refusal is in the outsider's forwarding dead-letter queue (its SQS)",
            any(m["MessageAttributes"]["ERROR_CODE"]["StringValue"] == "NO_PERMISSIONS" for m in parked),
            f"{len(parked)} message(s)",
        )
        report.expect(
            "Detect never heard it",
            (len(world.router.delivered) if world.router else 0) == judged,
        )
        # Were the bus policy ever to admit it, Detect refuses an account outside the protected set.
        answer = security.clients.lambda_.invoke(
            FunctionName=security.outputs["DetectFunctionName"], Payload=json.dumps(event).encode()
        )
        result = json.loads(answer["Payload"].read() or b"{}")
        report.expect(
            "delivered to Detect directly, it is refused: unprotected_account",
            (result.get("decision"), result.get("reason")) == ("reject", "unprotected_account"),
            f"{result.get('decision')}/{result.get('reason')}",
        )
        self.nothing_happened(report, incidents, executions, alerts)
        ok, detail = self.untouched(outsider, instance_id)
        report.expect("the outsider's server is untouched (its EC2)", ok, detail)

    # ------------------------------------------------------------------ the storm
    def organization_storm(self, report: ScenarioReport) -> None:
        world, security = self.world, self.world.security
        threshold = int(security.parameters["OrgStormAccounts"])
        recent = {
            i.account
            for i in self.ledger.list_incidents(limit=1000)
            if i.mode == "enforce" and i.account and i.account != world.security_account
        }
        if len(recent) != threshold - 1:
            raise ScenarioSkipped(
                f"needs changes in {threshold - 1} accounts first (the attack scenarios); found {len(recent)}"
            )
        alerts_before = len(security.alerts())
        executions = set(security.executions())
        # A change in one more account within the window: the security account's own workload.
        place = world.places[f"{world.security_account}:{REGIONS[1]}"]
        third = place.fresh_server()
        world.push_ssh_key(place, third)
        incident = next(iter(security.incidents_for(third)), None)
        report.expect(
            f"account number {threshold}'s change is alerted, not remediated (notify-only)",
            incident is not None and incident.mode == "notify-only",
            incident.mode if incident else "no incident",
        )
        if incident is not None:
            report.incidents.append(incident.incident_id)
        # And a later change in an account already seen is alerted only too.
        again = self.member(MEMBER_NAMES[0], REGIONS[0])
        later = again.fresh_server()
        world.push_ssh_key(again, later)
        followed = next(iter(security.incidents_for(later)), None)
        report.expect(
            "a later change in a member is notify-only too",
            followed is not None and followed.mode == "notify-only",
            followed.mode if followed else "no incident",
        )
        report.expect("no remediation started", set(security.executions()) == executions)
        for where, server in ((place, third), (again, later)):
            ok, detail = self.untouched(where, server)
            report.expect(f"the server in {where.key} is untouched (its EC2)", ok, detail)
        storms = [
            a
            for a in security.wait_for_alerts(
                lambda received: any(a.get("stage") == "breaker_open" for a in received[alerts_before:])
            )[alerts_before:]
            if a.get("stage") == "breaker_open"
        ]
        named = [(a.get("severity"), (a.get("details") or {}).get("breaker")) for a in storms]
        report.expect(
            "exactly one critical alert: organization_storm",
            named == [("critical", "organization_storm")],
            str(named),
        )
        storm = self.ledger.storm()
        report.expect(
            "the storm names the accounts",
            storm is not None and place.account in (storm.accounts or []),
            str(storm),
        )
        # A person clears it (`immutable-guard accounts storm clear`): remediation resumes.
        self.ledger.clear_storm()
        report.expect("cleared by a person", self.ledger.storm() is None)

    # ------------------------------------------------------------------ a new account
    def account_joins(self, report: ScenarioReport) -> None:
        world, security = self.world, self.world.security
        if "OnboardFunction" not in (world.deployment.function_names if world.deployment else {}):
            raise ScenarioSkipped("this template has no OnboardFunction")
        registry = world.registry
        alerts_before = len(security.alerts())
        new = world.create_account("workloads-new")
        # Organizations reports it in the management account's us-east-1 CloudTrail (an AWS service event,
        # events/organization/create-account-result.json); the management account's stack forwards it.
        management = world.places[f"{MANAGEMENT_ACCOUNT}:us-east-1"]
        forwarded = management.bus.put(created_account_event(MANAGEMENT_ACCOUNT, new))
        report.expect(
            "Organizations' CreateAccountResult forwarded from the management account",
            forwarded.delivered == [world.bus_arn],
            f"rules {forwarded.rules}, delivered {forwarded.delivered}",
        )
        joined = registry.get(new)
        report.expect(
            "registered in dry-run, not verified (security account's ledger)",
            joined is not None and not joined.verified and joined.effective_mode.value == "dry-run",
            f"{joined.effective_mode.value if joined else 'not registered'}, "
            f"verified_at {joined.verified_at if joined else '-'}",
        )
        said = [
            a
            for a in security.wait_for_alerts(
                lambda received: any(a.get("stage") == "account_joined" for a in received[alerts_before:])
            )[alerts_before:]
            if a.get("stage") == "account_joined"
        ]
        report.expect("the team was told it joined", len(said) == 1, f"{len(said)} alert(s)")
        # The StackSets' automatic deployment reaches the new account; it has a trail and a recorder.
        world.stack_sets(new)
        place = world.place(new, REGIONS[1])
        # An attack before it is verified: decided and alerted, nothing done.
        executions = set(security.executions())
        first = place.fresh_server()
        world.push_ssh_key(place, first)
        early = security.incidents_for(first)
        report.expect(
            "an attack before verification is a dry run",
            len(early) == 1 and early[0].mode == "dry-run" and early[0].status.value == "DRY_RUN",
            ", ".join(f"{i.mode}/{i.status.value}" for i in early) or "no incident",
        )
        report.incidents.extend(i.incident_id for i in early)
        report.expect("no remediation started", set(security.executions()) == executions)
        ok, detail = self.untouched(place, first)
        report.expect("the server is untouched (the new account's EC2)", ok, detail)
        # The Onboard function's schedule verifies every registered account and region.
        answer = security.clients.lambda_.invoke(
            FunctionName=world.deployment.function_names["OnboardFunction"],  # type: ignore[union-attr]
            Payload=json.dumps(world.scheduled_event()).encode(),
        )
        result = json.loads(answer["Payload"].read() or b"{}")
        report.expect(
            "the schedule verified it (trail, recorder, rules, roles in every region)",
            new in (result.get("newly_verified") or []) and new not in (result.get("failing") or {}),
            f"newly verified {result.get('newly_verified')}, failing {result.get('failing')}",
        )
        members = sorted(world.members.values())
        report.expect(
            "the other members stay verified",
            all(m in (result.get("verified") or []) for m in members),
            f"verified {result.get('verified')}",
        )
        verified = registry.get(new)
        report.expect(
            "verified in the ledger: it acts in enforce",
            verified is not None and verified.verified and verified.effective_mode.value == "enforce",
            f"{verified.effective_mode.value if verified else '-'}",
        )
        # Then protected: an attack is remediated through its member roles.
        self.attack(report, place)

    # ------------------------------------------------------------------ running them
    def run(self, only: list[str] | None = None) -> list[ScenarioReport]:
        return [
            play(key, title, self._scenario(key), self.progress)
            for key, title in SCENARIOS
            if not only or key in only
        ]

    def _scenario(self, key: str) -> Callable[[ScenarioReport], None]:
        """An attack scenario is one method for every member account and region; the others are named."""
        attack = next(((name, region) for k, name, region in ATTACKS if k == key), None)
        if attack is not None:
            place = attack
            return lambda report: self.attack(report, self.member(*place))
        scenario: Callable[[ScenarioReport], None] = getattr(self, key.replace("-", "_"))
        return scenario


__all__ = ["ATTACKER", "SCENARIOS", "SCENARIO_NAMES", "OrganizationDrill"]
