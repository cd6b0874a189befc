"""Event to isolated, cold, side by side with Cloud Custodian on one local AWS (moto's server, the local
runtime's, with the guard's stack deployed in enforce mode).

The same CloudTrail event (ModifyInstanceAttribute putting an attacker's group on the instance) about the
same tagged instance, in interleaved runs (the order alternates):

- Cloud Custodian 0.9.53, a `mode: cloudtrail` policy on `ec2` with the `modify-security-groups` action
  (`remove: all`, an isolation group made beforehand): its Lambda entry point
  (`c7n.handler.dispatch_event`, with the policy in `config.json` as c7n's provisioning writes it) in a
  fresh interpreter from c7n's own virtualenv;
- Immutable Guard: Detect's handler cold in a fresh interpreter, then, when Detect did not isolate the
  instance itself, Contain's handler cold in another with the execution's input (the Step Functions hop is
  not counted: Contain's process starts when Detect's ends).

Each time is from the start of the first process to the end of the AWS call that put the instance's last
interface on the isolation group (the process start is part of a Lambda cold start; the runtime's own
init, which both pay, is not). After every run the instance is read from EC2: every interface must carry
only the isolation group(s), or the run fails. Then the instance is put back as it was (groups, tags, the
ledger's lock) for the next run.

Round trips are counted from the calls each process made (a hook on botocore's `_make_api_call`): calls
whose time spans overlap make one round trip. They are counted for our path the first time in a VPC (no
isolation groups there yet; one run after Detect saw the server once, as Config reports every new
instance, which has Contain make the groups ahead; one run where the attack is the first event naming the
server) and in steady state (the groups exist; the timed runs).

Cloud Custodian is not a dependency of the project: `make bench-isolation` installs c7n==0.9.53 into
benchmarks/.venv-c7n; without it this script says how to get it.

    .venv/bin/python benchmarks/isolation_latency.py [--runs 5] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "layers" / "guard"))
C7N_PYTHON = REPO / "benchmarks" / ".venv-c7n" / "bin" / "python"
C7N_VERSION = "0.9.53"
EVENT = REPO / "events" / "cloudtrail-modify-instance-attribute-groupset.json"
PARAMETERS = {"Mode": "enforce", "MaxIncidentsPerHour": "1000", "SnapshotPollSeconds": "0"}
SCOPE = ("immutable", "true")
ISOLATING_OPERATIONS = ("ModifyNetworkInterfaceAttribute", "ModifyInstanceAttribute")

# Run in each child before anything else: every AWS call's operation, parameters that say which groups
# an interface was given, and wall-clock start and end (epoch seconds, comparable across processes).
PRELUDE = """
import atexit, json, sys, time
import botocore.client
CALLS = []
_make_api_call = botocore.client.BaseClient._make_api_call
def _timed(self, operation, params):
    start = time.time()
    try:
        return _make_api_call(self, operation, params)
    finally:
        CALLS.append({"op": operation, "start": start, "end": time.time(),
                      "eni": params.get("NetworkInterfaceId"), "groups": params.get("Groups")})
botocore.client.BaseClient._make_api_call = _timed
"""

OURS = (
    PRELUDE.replace("{", "{{").replace("}", "}}")
    + """
sys.path[:0] = [{layer!r}, {code!r}]
import app
IMPORTED = time.time()
class Context:
    function_name = {name!r}; memory_limit_in_mb = 256; aws_request_id = "bench"
    invoked_function_arn = {arn!r}
    def get_remaining_time_in_millis(self): return 900000
result = app.handler(json.loads({event!r}), Context())
print(json.dumps({{"calls": CALLS, "result": result, "imported": IMPORTED}}, default=str))
"""
)

C7N = (
    PRELUDE.replace("{", "{{").replace("}", "}}")
    + """
from c7n import handler
class Context:
    function_name = "custodian-isolate"; memory_limit_in_mb = 512; aws_request_id = "bench"
    invoked_function_arn = {arn!r}
    def get_remaining_time_in_millis(self): return 900000
handler.dispatch_event(json.loads({event!r}), Context())
print(json.dumps({{"calls": CALLS}}, default=str))
"""
)


def child_environment(endpoint: str, variables: dict[str, str]) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    return {
        **keep,
        **variables,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
        # No X-Ray daemon here: the SDK is still imported (its cost is in the figures), nothing is sent.
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_LOG_LEVEL": "WARNING",
        "C7N_DEBUG_EVENT": "no",
    }


def run_child(python: Path, code: str, env: dict[str, str], cwd: str | None = None) -> dict[str, Any]:
    started = time.time()
    run = subprocess.run(
        [str(python), "-c", code], capture_output=True, text=True, env=env, cwd=cwd, check=False
    )
    if run.returncode:
        raise RuntimeError(f"{python} failed:\n{run.stderr[-3000:]}")
    out = json.loads(run.stdout.strip().splitlines()[-1])
    out["started"] = started
    out["ended"] = time.time()
    return out


def isolating_calls(calls: list[dict[str, Any]], isolation: set[str]) -> list[dict[str, Any]]:
    return [
        c for c in calls if c["op"] in ISOLATING_OPERATIONS and c["groups"] and set(c["groups"]) <= isolation
    ]


def round_trips(calls: list[dict[str, Any]]) -> int:
    """Calls whose spans overlap are one round trip (they ran concurrently)."""
    trips, end = 0, 0.0
    for call in sorted(calls, key=lambda c: c["start"]):
        if call["start"] >= end:
            trips += 1
        end = max(end, call["end"])
    return trips


def until_isolated(calls: list[dict[str, Any]], isolation: set[str]) -> list[dict[str, Any]]:
    done = isolating_calls(calls, isolation)
    if not done:
        return []
    last = max(c["end"] for c in done)
    return [c for c in calls if c["start"] < last]


class World:
    """The local AWS with the guard deployed, one tagged instance, Custodian's isolation group."""

    def __init__(self) -> None:
        from immutable_guard.local import LocalAws

        self.aws = LocalAws(execute_state_machines=False)

    def __enter__(self) -> World:
        self.aws.start()
        self.deployment = self.aws.deploy(PARAMETERS)
        clients = self.aws.clients()
        self.ec2, self.ddb, self.lam, self.sfn = (
            clients.ec2,
            clients.dynamodb,
            clients.lambda_,
            clients.stepfunctions,
        )
        self.functions = {}
        for logical in ("DetectFunction", "QuarantineFunction"):
            name = self.deployment.function_names[logical]
            config = self.lam.get_function_configuration(FunctionName=name)
            self.functions[logical] = (
                name,
                config["FunctionArn"],
                config.get("Environment", {}).get("Variables", {}),
            )
        self.ledger_table = self.functions["DetectFunction"][2]["LEDGER_TABLE"]
        vpc = self.ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
        self.vpc = vpc
        image = self.ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
        web = self.ec2.create_security_group(GroupName="web", Description="web servers", VpcId=vpc)["GroupId"]
        self.attacker_group = self.ec2.create_security_group(
            GroupName="open-to-me", Description="the attacker's", VpcId=vpc
        )["GroupId"]
        self.c7n_isolation = self.ec2.create_security_group(
            GroupName="c7n-isolation", Description="Cloud Custodian's isolation group", VpcId=vpc
        )["GroupId"]
        instance = self.ec2.run_instances(
            ImageId=image,
            MinCount=1,
            MaxCount=1,
            SecurityGroupIds=[web],
            TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": SCOPE[0], "Value": SCOPE[1]}]}],
        )["Instances"][0]
        self.instance_id = instance["InstanceId"]
        self.account = self.deployment.account_id
        self.original = {eni["NetworkInterfaceId"]: [web] for eni in instance["NetworkInterfaces"]}
        self.restore()
        return self

    def __exit__(self, *exc: object) -> None:
        self.aws.stop()

    # ---------------------------------------------------------------- the event and the instance
    def event(self) -> str:
        """The attacker's change as it happened just now: a new event id for every run."""
        text = EVENT.read_text()
        text = text.replace("i-0abc1234def567890", self.instance_id).replace("111122223333", self.account)
        text = text.replace("sg-0a1b2c3d4e5f67890", self.attacker_group).replace(
            "sg-0badc0ffee0ddf00d", self.attacker_group
        )
        event = json.loads(text)
        event["id"] = str(uuid.uuid4())
        event["detail"]["eventID"] = str(uuid.uuid4())
        return json.dumps(event)

    def groups_now(self) -> dict[str, list[str]]:
        interfaces = self.ec2.describe_network_interfaces(
            Filters=[{"Name": "attachment.instance-id", "Values": [self.instance_id]}]
        )["NetworkInterfaces"]
        return {eni["NetworkInterfaceId"]: [g["GroupId"] for g in eni["Groups"]] for eni in interfaces}

    def our_isolation_groups(self) -> set[str]:
        groups = self.ec2.describe_security_groups(
            Filters=[{"Name": "tag:immutable-guard:role", "Values": ["isolation"]}]
        )["SecurityGroups"]
        return {g["GroupId"] for g in groups}

    def verify(self, isolation: set[str], who: str) -> None:
        for eni, groups in self.groups_now().items():
            if not groups or not set(groups) <= isolation:
                raise SystemExit(f"{who}: {eni} is not isolated: it has {groups}")

    def restore(self) -> None:
        """As before the attack: the instance's own groups, no quarantine tags, no incident lock."""
        for eni, groups in self.original.items():
            self.ec2.modify_network_interface_attribute(NetworkInterfaceId=eni, Groups=groups)
        self.ec2.delete_tags(
            Resources=[self.instance_id],
            Tags=[{"Key": "immutable-guard:incident"}, {"Key": "immutable-guard:state"}],
        )
        self.ec2.modify_instance_attribute(
            InstanceId=self.instance_id, DisableApiTermination={"Value": False}
        )
        from immutable_guard.ledger import instance_key

        self.ddb.delete_item(
            TableName=self.ledger_table, Key=instance_key("LOCK", self.account, "us-east-1", self.instance_id)
        )

    def forget_isolation_groups(self) -> None:
        """The first quarantine in this VPC: our groups do not exist yet, and the ledger has not seen the
        instance in scope (so the next event naming it is its first sighting)."""
        for group in self.ec2.describe_security_groups(
            Filters=[{"Name": "tag-key", "Values": ["immutable-guard:role"]}]
        )["SecurityGroups"]:
            self.ec2.delete_security_group(GroupId=group["GroupId"])
        from immutable_guard.ledger import instance_key

        self.ddb.delete_item(
            TableName=self.ledger_table,
            Key=instance_key("SCOPE", self.account, "us-east-1", self.instance_id),
        )

    def seen(self) -> None:
        """Config reports the instance (a benign event): Detect, deployed on the local runtime, sees it in
        scope for the first time and asks Contain, asynchronously, for the VPC's isolation groups. Not
        timed; waits for Contain to finish."""
        from immutable_guard.local.moto_fixes import wait_for_async_invocations

        text = (REPO / "events" / "benign-config-resource-discovered.json").read_text()
        text = text.replace("i-0abc1234def567890", self.instance_id).replace("111122223333", self.account)
        event = json.loads(text)
        event["id"] = str(uuid.uuid4())
        answer = self.lam.invoke(FunctionName=self.functions["DetectFunction"][0], Payload=json.dumps(event))
        result = json.loads(answer["Payload"].read())
        if result.get("decision") != "ignore":
            raise SystemExit(f"Detect judged the sighting unexpectedly: {json.dumps(result)[:2000]}")
        wait_for_async_invocations()
        if not self.our_isolation_groups():
            raise SystemExit("no isolation group was made when Detect first saw the instance")

    # ---------------------------------------------------------------- the two paths
    def ours(self, layer: str) -> dict[str, Any]:
        env = child_environment(self.aws.endpoint_url, {})
        name, arn, variables = self.functions["DetectFunction"]
        event = self.event()
        detect = run_child(
            Path(sys.executable),
            OURS.format(
                layer=layer, code=str(REPO / "functions" / "detect"), name=name, arn=arn, event=event
            ),
            {**env, **variables, "AWS_LAMBDA_FUNCTION_NAME": name},
        )
        result = detect["result"]
        instances = result.get("instances") or []
        if result.get("decision") != "remediate" or not instances or not instances[0].get("execution_arn"):
            raise SystemExit(f"Detect did not start a remediation: {json.dumps(result)[:2000]}")
        execution = self.sfn.describe_execution(executionArn=instances[0]["execution_arn"])
        payload = json.loads(execution["input"])
        name, arn, variables = self.functions["QuarantineFunction"]
        contain = run_child(
            Path(sys.executable),
            OURS.format(
                layer=layer,
                code=str(REPO / "functions" / "quarantine"),
                name=name,
                arn=arn,
                event=json.dumps(payload),
            ),
            {**env, **variables, "AWS_LAMBDA_FUNCTION_NAME": name},
        )
        isolation = self.our_isolation_groups()
        self.verify(isolation, "Immutable Guard")
        by_detect = until_isolated(detect["calls"], isolation)
        if by_detect:
            seconds = max(c["end"] for c in by_detect) - detect["started"]
            path = by_detect
            where = "Detect"
        else:
            handed_over = max(c["end"] for c in detect["calls"] if c["op"] == "StartExecution")
            by_contain = until_isolated(contain["calls"], isolation)
            if not by_contain:
                raise SystemExit("Contain reports no isolating call, yet the instance is isolated")
            seconds = (handed_over - detect["started"]) + (
                max(c["end"] for c in by_contain) - contain["started"]
            )
            path = [c for c in detect["calls"] if c["end"] <= handed_over] + by_contain
            where = "Contain"
        trips_detect = round_trips([c for c in path if c in detect["calls"]])
        trips_contain = round_trips([c for c in path if c not in detect["calls"]])
        t0 = detect["started"]
        timeline = [("Detect imported", detect["imported"] - t0)] + [
            (c["op"], c["start"] - t0, c["end"] - t0) for c in sorted(path, key=lambda c: c["start"])
        ]
        return {
            "seconds": seconds,
            "timeline": timeline,
            "calls": len(path),
            "round_trips": trips_detect + trips_contain,
            "isolated_by": where,
            "operations": [c["op"] for c in sorted(path, key=lambda c: c["start"])],
        }

    def custodian(self, workdir: str) -> dict[str, Any]:
        env = child_environment(self.aws.endpoint_url, {"AWS_LAMBDA_FUNCTION_NAME": "custodian-isolate"})
        arn = f"arn:aws:lambda:us-east-1:{self.account}:function:custodian-isolate"
        out = run_child(C7N_PYTHON, C7N.format(arn=arn, event=self.event()), env, cwd=workdir)
        self.verify({self.c7n_isolation}, "Cloud Custodian")
        path = until_isolated(out["calls"], {self.c7n_isolation})
        if not path:
            raise SystemExit("Cloud Custodian made no isolating call")
        return {
            "seconds": max(c["end"] for c in path) - out["started"],
            "first_call": min(c["start"] for c in out["calls"]) - out["started"],
            "calls": len(path),
            "round_trips": round_trips(path),
            "operations": [c["op"] for c in sorted(path, key=lambda c: c["start"])],
        }

    def custodian_config(self, workdir: str) -> None:
        """The policy as `custodian run` provisions it: config.json beside the handler."""
        policy = {
            "name": "isolate-modified-instance",
            "resource": "ec2",
            "mode": {
                "type": "cloudtrail",
                "role": f"arn:aws:iam::{self.account}:role/custodian",
                "events": [
                    {
                        "source": "ec2.amazonaws.com",
                        "event": "ModifyInstanceAttribute",
                        "ids": "requestParameters.instanceId",
                    }
                ],
            },
            "filters": [{f"tag:{SCOPE[0]}": SCOPE[1]}],
            "actions": [
                {"type": "modify-security-groups", "isolation-group": self.c7n_isolation, "remove": "all"}
            ],
        }
        config = {
            "execution-options": {
                "account_id": self.account,
                "region": "us-east-1",
                "metrics_enabled": False,
            },
            "policies": [policy],
        }
        Path(workdir, "config.json").write_text(json.dumps(config))


def row(name: str, runs: list[dict[str, Any]]) -> None:
    seconds = [r["seconds"] for r in runs]
    low, middle, high = min(seconds), statistics.median(seconds), max(seconds)
    last = runs[-1]
    print(f"{name:<34} {low:>6.2f} {middle:>9.2f} {high:>6.2f} {last['calls']:>6} {last['round_trips']:>12}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    parser.add_argument("--timeline", action="store_true", help="when each call of our last run started")
    args = parser.parse_args()
    if not C7N_PYTHON.exists():
        print(
            f"Cloud Custodian is not installed: `make bench-isolation` installs c7n=={C7N_VERSION} into "
            f"{C7N_PYTHON.parent.parent.relative_to(REPO)} (python3.12 -m venv benchmarks/.venv-c7n && "
            f"benchmarks/.venv-c7n/bin/pip install c7n=={C7N_VERSION})",
            file=sys.stderr,
        )
        return 2
    logging.disable(logging.WARNING)
    layer = str(REPO / "layers" / "guard")
    ours: list[dict[str, Any]] = []
    custodian: list[dict[str, Any]] = []
    # The functions the local runtime runs in this process (Detect's sighting, Contain's group preparation)
    # log their metrics to stdout: to stderr with them, so that stdout is the figures alone.
    with (
        contextlib.redirect_stdout(sys.stderr),
        World() as world,
        tempfile.TemporaryDirectory() as workdir,
    ):
        world.custodian_config(workdir)
        # The first quarantine in the VPC when the attack is the first event naming the server: Contain
        # makes our isolation groups on the way.
        world.forget_isolation_groups()
        unseen = world.ours(layer)
        world.restore()
        # The first quarantine in the VPC after Detect saw the server once (Config's report of it): Contain
        # made the groups then, off the event's path (issue 15).
        world.forget_isolation_groups()
        world.seen()
        first = world.ours(layer)
        world.restore()
        for run in range(args.runs):
            order = [world.custodian, world.ours] if run % 2 == 0 else [world.ours, world.custodian]
            for path in order:
                if path == world.custodian:
                    custodian.append(world.custodian(workdir))
                else:
                    ours.append(world.ours(layer))
                world.restore()
    c_med = statistics.median(r["seconds"] for r in custodian)
    o_med = statistics.median(r["seconds"] for r in ours)
    ratio = o_med / c_med
    steady = ours[-1]
    print(f"event -> every ENI isolated, cold, {args.runs} interleaved runs, {os.cpu_count()} cores")
    print(f"{'path':<34} {'min s':>6} {'median s':>9} {'max s':>6} {'calls':>6} {'round trips':>12}")
    row(f"Cloud Custodian {C7N_VERSION}", custodian)
    row(f"Immutable Guard ({steady['isolated_by']} isolates)", ours)
    row("  first time in the VPC, seen before", [first])
    row("  first time in the VPC, never seen", [unseen])
    print(f"ratio of medians, Immutable Guard / Cloud Custodian: {ratio:.2f}")
    print("Immutable Guard's calls (steady state): " + ", ".join(steady["operations"]))
    print("Immutable Guard's calls (first time):   " + ", ".join(first["operations"]))
    print("Immutable Guard's calls (never seen):   " + ", ".join(unseen["operations"]))
    print("Cloud Custodian's calls:                " + ", ".join(custodian[-1]["operations"]))
    if args.timeline:
        first_call = statistics.median(r["first_call"] for r in custodian)
        print(f"Cloud Custodian's first AWS call, median, seconds from its process start: {first_call:.3f}")
        print("Immutable Guard, last run, seconds from Detect's process start:")
        for step in steady["timeline"]:
            print("  " + " ".join(f"{x:.3f}" if isinstance(x, float) else x for x in step))
    if args.json:
        print(
            json.dumps(
                {
                    "cores": os.cpu_count(),
                    "runs": args.runs,
                    "ratio": ratio,
                    "ours": ours,
                    "first_time": first,
                    "first_time_never_seen": unseen,
                    "custodian": custodian,
                }
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
