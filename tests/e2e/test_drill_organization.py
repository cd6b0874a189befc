"""`immutable-guard drill --organization` (issue 14): every scenario passes on the embedded local AWS, and
what each scenario claims is read back here, independently of the drill's own checks, from the API of the
account concerned: the member's EC2 (terminated, snapshotted), the security account's S3 and EC2 (the
manifest, the locked copies), the outsider's EC2 (untouched), the ledger (registry, storm).

Each run is its own process: the drill owns its embedded AWS (one moto per process) from start to finish."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

import pytest

pytestmark = pytest.mark.slow

SCENARIOS = {
    "attack-a-us-east-1",
    "attack-a-eu-west-1",
    "attack-b-us-east-1",
    "attack-b-eu-west-1",
    "allow-listed-pipeline",
    "guard-echo",
    "outside-account",
    "organization-storm",
    "account-joins",
}

# Runs the drill through the library, keeps its world open, and reads the facts from each account's API.
_LIBRARY_RUN = """
import json, sys
from immutable_guard.drill.organization_scenarios import OrganizationDrill
from immutable_guard.drill.organization_world import OUTSIDER_ACCOUNT, organization_world
from immutable_guard.drill.report import Progress, drill_passed
from immutable_guard.ledger import IncidentLedger

with organization_world(Progress(None)) as world:
    reports = OrganizationDrill(world).run()
    security = world.security
    ledger = IncidentLedger(security.clients.dynamodb, security.outputs["IncidentLedgerName"])
    home_ec2 = security.clients.session.client("ec2", region_name=world.home_region)
    incidents = []
    for incident in ledger.list_incidents(limit=1000):
        admin = world.admin(incident.account, incident.region)
        ec2 = admin.client("ec2", region_name=incident.region)
        [reservation] = ec2.describe_instances(InstanceIds=[incident.instance_id])["Reservations"]
        instance = reservation["Instances"][0]
        snapshots = ec2.describe_snapshots(
            OwnerIds=["self"],
            Filters=[{"Name": "tag:immutable-guard:incident", "Values": [incident.incident_id]}],
        )["Snapshots"]
        key = f"{incident.account}/{incident.region}/{incident.incident_id}/manifest.json"
        try:
            bucket = security.outputs["EvidenceBucketName"]
            manifest = json.loads(security.clients.s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        except Exception:
            manifest = None
        copies = [c["custody_snapshot_id"] for c in ((manifest or {}).get("custody") or {}).get("copies", [])]
        held = home_ec2.describe_snapshots(SnapshotIds=copies)["Snapshots"] if copies else []
        locks = home_ec2.describe_locked_snapshots(SnapshotIds=copies)["Snapshots"] if copies else []
        incidents.append({
            "account": incident.account,
            "region": incident.region,
            "mode": incident.mode,
            "status": incident.status.value,
            "state": instance["State"]["Name"],
            "member_snapshots": sorted(s["State"] for s in snapshots),
            "manifest": manifest is not None,
            "held": sorted((s["OwnerId"], s["State"], s["Encrypted"]) for s in held),
            "locks": sorted(lock["LockState"] for lock in locks),
        })
    outsider = world.admin(OUTSIDER_ACCOUNT, "eu-west-1").client("ec2", region_name="eu-west-1")
    registry = {m.account_id: m.verified for m in world.registry.list()}
    print(json.dumps({
        "passed": drill_passed(reports),
        "scenarios": [r.as_dict() for r in reports],
        "security_account": world.security_account,
        "members": world.members,
        "incidents": incidents,
        "outsider_states": sorted(
            i["State"]["Name"] for r in outsider.describe_instances()["Reservations"] for i in r["Instances"]
        ),
        "registry": registry,
        "storm": ledger.storm() is not None,
    }))
"""


def _python(script: str, timeout: int = 1200) -> tuple[int, str, str]:
    run = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return run.returncode, run.stdout, run.stderr


def _cli(*args: str, prelude: str = "") -> tuple[int, dict[str, Any]]:
    script = textwrap.dedent(prelude) + textwrap.dedent(
        f"""
        import sys
        from immutable_guard.cli import main
        sys.exit(main(["drill", "--organization", "--json", *{list(args)!r}]))
        """
    )
    code, out, err = _python(script, timeout=600)
    assert out, err[-3000:]
    return code, json.loads(out)


def test_every_organisation_scenario_passes_and_each_account_shows_it() -> None:
    code, out, err = _python(_LIBRARY_RUN)
    assert code == 0 and out, err[-3000:]
    facts = json.loads(out.splitlines()[-1])
    # Then every scenario passed
    failed = [s for s in facts["scenarios"] if not s["passed"]]
    assert facts["passed"] is True, json.dumps(failed, indent=1)
    assert {s["scenario"] for s in facts["scenarios"]} == SCENARIOS

    incidents = facts["incidents"]
    members = set(facts["members"].values())
    enforced = [i for i in incidents if i["mode"] == "enforce"]
    # And an attack in each member account and region was remediated there: the member's EC2 shows the
    # server terminated and its snapshots completed; the security account's S3 and EC2 hold the manifest
    # and a locked copy of its own
    for account in members:
        for region in ("us-east-1", "eu-west-1"):
            [done] = [i for i in enforced if (i["account"], i["region"]) == (account, region)]
            assert done["status"] == "CLOSED" and done["state"] == "terminated", done
            assert done["member_snapshots"] and set(done["member_snapshots"]) == {"completed"}, done
            assert done["manifest"] is True, done
            assert done["held"] and {h[0] for h in done["held"]} == {facts["security_account"]}, done
            assert all(state == "completed" and encrypted for _, state, encrypted in done["held"]), done
            assert done["locks"] and set(done["locks"]) == {"governance"}, done
    # And the new account: one attack in dry-run before it was verified (its server left running), one
    # remediated after
    [new] = set(facts["registry"]) - members
    assert facts["registry"][new] is True
    in_new = sorted((i["mode"], i["status"], i["state"]) for i in incidents if i["account"] == new)
    assert in_new == [("dry-run", "DRY_RUN", "running"), ("enforce", "CLOSED", "terminated")]
    # And the storm's two changes were alerted only, their servers left running; the storm was cleared
    held_back = [i for i in incidents if i["mode"] == "notify-only"]
    assert len(held_back) == 2 and {i["state"] for i in held_back} == {"running"}
    assert facts["storm"] is False
    # And nothing of the outsider's was touched, nor any incident opened there
    assert facts["outsider_states"] and set(facts["outsider_states"]) == {"running"}
    assert {i["account"] for i in incidents} <= members | {new, facts["security_account"]}
    # And the benign twins opened nothing: every incident is an attack's (4 + 2 in the new account + 2 held)
    assert len(incidents) == 4 + 2 + 2


def test_a_bus_policy_that_admits_any_account_fails_the_outside_account_scenario() -> None:
    # Given an organisation bus that admits everyone (the local runtime's policy check disabled)
    sabotage = """
        from immutable_guard.local import moto_fixes
        moto_fixes.bus_policy_admits = lambda *args, **kwargs: True
    """
    # When the outsider forwards an attack
    code, report = _cli("--scenario", "outside-account", prelude=sabotage)
    # Then the drill says so, from the outsider's own dead-letter queue and the bus's answer
    assert code == 1 and report["passed"] is False
    [scenario] = report["scenarios"]
    failed = {c["name"] for c in scenario["checks"] if not c["passed"]}
    assert "its forwarding rule matched, the organisation bus's policy refused the event" in failed
    assert "the refusal is in the outsider's forwarding dead-letter queue (its SQS)" in failed
    # But Detect still refuses it: the account is not in the protected set
    assert "delivered to Detect directly, it is refused: unprotected_account" not in failed
    assert "no remediation started" not in failed


def test_a_member_without_its_quarantine_role_is_not_remediated_and_the_drill_says_so() -> None:
    # Given member b, whose ImmutableGuard-Member-Quarantine role is gone in its account
    sabotage = """
        from immutable_guard.drill import organization_world as world_module

        built = world_module.OrganizationWorld.build

        def build(self):
            built(self)
            iam = self.admin(self.members["workloads-b"], "us-east-1").client("iam")
            role = "ImmutableGuard-Member-Quarantine"
            for name in iam.list_role_policies(RoleName=role)["PolicyNames"]:
                iam.delete_role_policy(RoleName=role, PolicyName=name)
            for policy in iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"]:
                iam.detach_role_policy(RoleName=role, PolicyArn=policy["PolicyArn"])
            iam.delete_role(RoleName=role)
            return self

        world_module.OrganizationWorld.build = build
    """
    # When an attack there is drilled
    code, report = _cli("--scenario", "attack-b-eu-west-1", prelude=sabotage)
    # Then the security account cannot act there: the remediation fails, and the drill reads from the
    # member's own EC2 that the server was neither isolated nor terminated
    assert code == 1 and report["passed"] is False
    [scenario] = report["scenarios"]
    checks = {c["name"]: c for c in scenario["checks"]}
    assert checks["one incident opened"]["passed"] is True
    assert checks["remediation succeeded"]["passed"] is False
    assert checks["old instance terminated (member's EC2)"]["passed"] is False
    assert checks["old instance terminated (member's EC2)"]["detail"] == "running"
