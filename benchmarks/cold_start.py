"""Cold start, side by side with Cloud Custodian: each measurement is a fresh `python -c` process timed
from process start. For each of our handlers: import of functions/<name>/app.py (with the layer on the
path), then, for Detect, the first event handled on in-process moto. For c7n (the `c7n` package, installed
by this script in benchmarks/.venv-c7n): import, load and validate a `mode: cloudtrail` policy on `ec2`
with the `modify-security-groups` isolation action, and resolve the resource ids of the same CloudTrail
event. No AWS call is made on either side in the "ready" figure, so the ratio compares like with like.

    .venv/bin/python benchmarks/cold_start.py [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
C7N_VENV = REPO / "benchmarks" / ".venv-c7n"
HANDLERS = ["detect", "quarantine", "evidence", "replace", "nuke", "notify", "release"]
EVENT = REPO / "events" / "cloudtrail-send-ssh-public-key.json"

IMPORT_HANDLER = """
import time, sys
t0 = time.perf_counter()
sys.path[:0] = [{layer!r}, {code!r}]
import app
print(time.perf_counter() - t0)
"""

FIRST_DETECT_EVENT = """
import time, sys, json, os
t0 = time.perf_counter()
sys.path[:0] = [{layer!r}, {code!r}]
import app
ready = time.perf_counter() - t0
from moto import mock_aws
with mock_aws():
    import boto3
    ec2 = boto3.client("ec2", region_name="us-east-1")
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    tags = [{{"ResourceType": "instance", "Tags": [{{"Key": "immutable", "Value": "true"}}]}}]
    iid = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, TagSpecifications=tags)["Instances"][0][
        "InstanceId"]
    boto3.client("dynamodb", region_name="us-east-1").create_table(TableName="ledger",
        AttributeDefinitions=[{{"AttributeName": "pk", "AttributeType": "S"}}],
        KeySchema=[{{"AttributeName": "pk", "KeyType": "HASH"}}], BillingMode="PAY_PER_REQUEST")
    topic = boto3.client("sns", region_name="us-east-1").create_topic(Name="t")["TopicArn"]
    dlq = boto3.client("sqs", region_name="us-east-1").create_queue(QueueName="d")["QueueUrl"]
    os.environ.update(LEDGER_TABLE="ledger", ALERT_TOPIC_ARN=topic, MODE="dry-run", SCOPE_TAG_KEY="immutable",
        SCOPE_TAG_VALUE="true", MAX_INCIDENTS_PER_HOUR="5", POST_EVIDENCE_ACTION="terminate",
        REMEDIATION_STATE_MACHINE_ARN="arn:aws:states:us-east-1:111122223333:stateMachine:x",
        DEAD_LETTER_QUEUE_URL=dlq)
    event = json.loads(open({event!r}).read().replace("i-0abc1234def567890", iid))
    class Context:
        function_name = "detect"; memory_limit_in_mb = 256; aws_request_id = "1"
        invoked_function_arn = "arn:aws:lambda:us-east-1:111122223333:function:detect"
    t1 = time.perf_counter()
    result = app.handler(event, Context())
    first = time.perf_counter() - t1
assert result["decision"] == "remediate", result
print(json.dumps({{"ready": ready, "first_event": first}}))
"""

C7N_READY = """
import time, json
t0 = time.perf_counter()
from c7n.config import Config
from c7n.policy import Policy
from c7n.resources import load_resources
from c7n.cwe import CloudWatchEvents
load_resources(("aws.ec2",))
data = {{"name": "isolate-ssh-key-pushed", "resource": "ec2",
    "mode": {{"type": "cloudtrail", "role": "arn:aws:iam::111122223333:role/custodian",
        "events": [{{"source": "ec2-instance-connect.amazonaws.com", "event": "SendSSHPublicKey",
                    "ids": "requestParameters.instanceId"}}]}},
    "filters": [{{"tag:immutable": "true"}}],
    "actions": [{{"type": "modify-security-groups", "isolation-group": "sg-0123456789abcdef0",
                 "remove": "all"}}]}}
policy = Policy(data, Config.empty(region="us-east-1", account_id="111122223333"))
policy.validate()
event = json.load(open({event!r}))
ids = CloudWatchEvents.get_ids(event, data["mode"])
ready = time.perf_counter() - t0
assert ids == ["i-0abc1234def567890"], ids
print(ready)
"""


def c7n_python() -> Path:
    python = C7N_VENV / "bin" / "python"
    if not python.exists():
        interpreter = shutil.which("python3.12") or sys.executable
        subprocess.run([interpreter, "-m", "venv", str(C7N_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "c7n"], check=True)
    return python


def timed(python: str, code: str) -> tuple[float, str]:
    """Wall time of the whole process (interpreter start included) and its output."""
    import time

    env = {
        **os.environ,
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_LOG_LEVEL": "CRITICAL",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "POWERTOOLS_METRICS_NAMESPACE": "Bench",
        "POWERTOOLS_SERVICE_NAME": "bench",
    }
    env.pop("AWS_ENDPOINT_URL", None)
    started = time.perf_counter()
    run = subprocess.run([python, "-c", code], capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - started
    if run.returncode:
        raise RuntimeError(run.stderr[-2000:])
    return wall, run.stdout.strip().splitlines()[-1]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    ours = str(REPO / ".venv" / "bin" / "python")
    layer = str(REPO / "layers" / "guard")
    rows = {}
    for name in HANDLERS:
        code = IMPORT_HANDLER.format(layer=layer, code=str(REPO / "functions" / name))
        samples = [timed(ours, code) for _ in range(args.runs)]
        rows[name] = {
            "process_ms": round(statistics.median(s[0] for s in samples) * 1000),
            "import_ms": round(statistics.median(float(s[1]) for s in samples) * 1000),
        }
    detect = [
        timed(
            ours,
            FIRST_DETECT_EVENT.format(layer=layer, code=str(REPO / "functions" / "detect"), event=str(EVENT)),
        )
        for _ in range(args.runs)
    ]
    first = [json.loads(s[1]) for s in detect]
    rows["detect"]["first_event_ms_on_moto"] = round(
        statistics.median(f["first_event"] for f in first) * 1000
    )
    c7n = str(c7n_python())
    c7n_samples = [timed(c7n, C7N_READY.format(event=str(EVENT))) for _ in range(args.runs)]
    c7n_row = {
        "process_ms": round(statistics.median(s[0] for s in c7n_samples) * 1000),
        "import_ms": round(statistics.median(float(s[1]) for s in c7n_samples) * 1000),
    }
    version = subprocess.run(
        [c7n, "-c", "import c7n.version as v; print(v.version)"], capture_output=True, text=True, check=False
    ).stdout.strip()
    print(f"{'handler':<12} {'process ms':>10} {'ready ms':>9} {'first event ms':>15}")
    for name, row in rows.items():
        print(
            f"{name:<12} {row['process_ms']:>10} {row['import_ms']:>9} "
            f"{row.get('first_event_ms_on_moto', ''):>15}"
        )
    print(f"{'c7n ' + version:<12} {c7n_row['process_ms']:>10} {c7n_row['import_ms']:>9}")
    ratio = c7n_row["process_ms"] / rows["detect"]["process_ms"]
    print(f"ratio c7n / detect (process start to ready, median of {args.runs}): {ratio:.2f}")
    print(json.dumps({"ours": rows, "c7n": {**c7n_row, "version": version}, "ratio_c7n_over_detect": ratio}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
