"""Test-wide environment: no real AWS is ever reachable from the suite, and every call a function or state
machine of template.yaml makes on the local runtime (with its own role, or with a member role of
organization/member-roles.yaml) is held to tests/security/observed_calls.json."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Generator, Iterator
from dataclasses import astuple
from pathlib import Path
from typing import Any

import pytest
from immutable_guard.local.call_log import CALL_LOG_VARIABLE, CallLogReader, Entry, member_roles_template

REPO_ROOT = Path(__file__).resolve().parent.parent
EVENTS_DIR = REPO_ROOT / "events"
sys.path.insert(0, str(REPO_ROOT / "tests" / "security"))
import call_manifest  # noqa: E402 (tests/security is not a package)

# The local runtime (and the drill processes tests start) log every call of a deployed principal here.
_CALL_LOG_DIR = Path(tempfile.mkdtemp(prefix="immutable-guard-calls-"))
os.environ[CALL_LOG_VARIABLE] = str(_CALL_LOG_DIR / "calls.jsonl")

# Set before any test module imports boto3 or Powertools.
os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SECURITY_TOKEN": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_METRICS_NAMESPACE": "ImmutableGuardTest",
        "POWERTOOLS_SERVICE_NAME": "immutable-guard",
        "POWERTOOLS_DEV": "false",
    }
)
os.environ.pop("AWS_PROFILE", None)
os.environ.pop("AWS_ENDPOINT_URL", None)


def _without_ecs_optimised_images() -> None:
    """moto loads about 1,200 ECS-optimised images into every region's EC2 backend, again after each
    reset (each ``mock_aws()``), and a DescribeImages for Amazon's images then serialises them all: about
    two seconds for each test that looks up an image to launch. Nothing here runs ECS; EC2 keeps moto's
    other images (the ones tests launch, the latest Amazon Linux ones SSM's public parameters name)."""
    from moto.ec2.models import amis

    load_resource = amis.load_resource
    amis.load_resource = lambda resource: [] if "ecs/optimized_amis" in resource else load_resource(resource)


_without_ecs_optimised_images()


def _one_botocore_loader() -> None:
    """Each boto3.Session reads every service model it uses from disk again (botocore caches them per
    session), and tests, handlers and the local runtime make sessions by the hundred: one loader, and so
    one cache, for the process. The models are read-only data, the same for every session."""
    import functools

    import botocore.session

    botocore.session.create_loader = functools.lru_cache(maxsize=None)(botocore.session.create_loader)


_one_botocore_loader()


def _transactions_copy_only_their_items() -> None:
    """moto deep-copies every table a DynamoDB transaction names, once per item, to undo a failed one; the
    ledger's lock is such a transaction on a table that grows with each event, so runs that open many
    incidents spent most of their time copying it. The local runtime backs up only the items a transaction
    names (moto_fixes.transactions_back_up_only_their_items); the suite's in-process moto does the same."""
    from immutable_guard.local.moto_fixes import transactions_back_up_only_their_items

    transactions_back_up_only_their_items()


_transactions_copy_only_their_items()


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture
def events_dir() -> Path:
    return EVENTS_DIR


@pytest.fixture
def aws_region() -> Iterator[str]:
    yield "us-east-1"


# ---------------------------------------------------------------------- least privilege: observed calls


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--record-calls",
        action="store_true",
        help="run only the runs tests/security/observed_calls.json is recorded from, and write it",
    )


class _ObservedCalls:
    """What the suite saw the template's principals call, test by test and in all."""

    def __init__(self, recording: bool) -> None:
        self.recording = recording
        # template.yaml's principals, and the member roles its functions act through in member accounts
        self.reader = CallLogReader(
            _CALL_LOG_DIR / "calls.jsonl",
            REPO_ROOT / "template.yaml",
            member_roles_template(REPO_ROOT / "template.yaml"),
        )
        self.manifest = call_manifest.load_manifest()
        self.entries: list[Entry] = []
        self.sources: list[str] = []
        self.ran: set[str] = set()
        self.failed: set[str] = set()

    def read(self) -> list[Entry]:
        new = self.reader.new_entries()
        self.entries += new
        return new


_OBSERVED_CALLS = pytest.StashKey[_ObservedCalls]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_OBSERVED_CALLS] = _ObservedCalls(bool(config.getoption("--record-calls")))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    observed = config.stash[_OBSERVED_CALLS]
    observed.sources = [i.nodeid for i in items if i.nodeid.startswith(call_manifest.RECORDING_SOURCES)]
    if observed.recording:
        deselected = [i for i in items if i.nodeid not in observed.sources]
        config.hook.pytest_deselected(items=deselected)
        items[:] = [i for i in items if i.nodeid in observed.sources]


@pytest.fixture(autouse=True)
def calls_stay_in_the_manifest(request: pytest.FixtureRequest) -> Iterator[None]:
    """A call that observed_calls.json does not hold fails the test that made it: the manifest cannot
    go stale, and the template (held to the manifest) cannot either."""
    observed = request.config.stash[_OBSERVED_CALLS]
    # Before the test: the calls of the fixtures it uses (and of anything still running from before).
    _hold_to_manifest(observed, observed.read())
    yield
    _hold_to_manifest(observed, observed.read())


def _hold_to_manifest(observed: _ObservedCalls, entries: list[Entry]) -> None:
    if observed.recording:
        return
    unexpected = call_manifest.outside(entries, observed.manifest)
    if unexpected:
        pytest.fail(
            "AWS calls that tests/security/observed_calls.json does not hold (regenerate it with "
            "`make observed-calls`, then grant them in template.yaml, a member role's in "
            "organization/member-roles.yaml):\n  " + "\n  ".join(unexpected),
            pytrace=False,
        )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    observed = item.config.stash[_OBSERVED_CALLS]
    if report.failed:
        observed.failed.add(item.nodeid)
    if report.when == "teardown":
        observed.ran.add(item.nodeid)
    return report


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    observed = session.config.stash[_OBSERVED_CALLS]
    observed.read()
    try:
        workeroutput = getattr(session.config, "workeroutput", None)
        if workeroutput is not None:
            # A pytest-xdist worker saw only its share of the runs: it hands what it saw to the controller,
            # which writes or checks the manifest from all workers' records (pytest_testnodedown below).
            workeroutput["observed_calls"] = {
                "entries": [astuple(entry) for entry in observed.entries],
                "sources": observed.sources,
                "ran": sorted(observed.ran),
                "failed": sorted(observed.failed),
            }
        elif observed.recording:
            _write_manifest(session, observed)
        else:
            _check_manifest_complete(session, observed)
    finally:
        shutil.rmtree(_CALL_LOG_DIR, ignore_errors=True)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """pytest-xdist, on the controller: a worker finished; merge its records. The manifest is a sorted
    union of (principal, action), so the order in which workers ran the recording runs does not matter."""
    record = getattr(node, "workeroutput", {}).get("observed_calls")
    if record is None:
        return  # a worker that crashed: its runs count as not run, so nothing is written or judged stale
    observed = node.config.stash[_OBSERVED_CALLS]
    observed.entries += [Entry(*fields) for fields in record["entries"]]
    observed.sources = list(record["sources"])
    observed.ran |= set(record["ran"])
    observed.failed |= set(record["failed"])


def _say(session: pytest.Session, text: str) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(text)


def _write_manifest(session: pytest.Session, observed: _ObservedCalls) -> None:
    if observed.failed or not observed.sources or not set(observed.sources) <= observed.ran:
        _say(session, "observed_calls.json NOT written: a recording run failed or did not run")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        return
    before = observed.manifest
    after = call_manifest.write_manifest(observed.entries)
    for name in sorted(set(before) | set(after)):
        added = sorted(set(after.get(name, [])) - set(before.get(name, [])))
        removed = sorted(set(before.get(name, [])) - set(after.get(name, [])))
        if added or removed:
            _say(session, f"observed_calls.json {name}: +{added} -{removed}")
    _say(
        session,
        f"observed_calls.json written: {sum(map(len, after.values()))} actions of {len(after)} principals",
    )


def _check_manifest_complete(session: pytest.Session, observed: _ObservedCalls) -> None:
    """When this session ran every recording run and all passed, the manifest must hold nothing they did
    not call (a call the code no longer makes would otherwise stay granted)."""
    every_source_ran = all(
        any(nodeid.startswith(source) for nodeid in observed.sources)
        for source in call_manifest.RECORDING_SOURCES
    )
    if (
        not every_source_ran
        or not set(observed.sources) <= observed.ran
        or observed.failed & set(observed.sources)
    ):
        return
    stale = call_manifest.stale(observed.manifest, observed.entries)
    if stale:
        _say(
            session,
            "observed_calls.json holds calls that no recording run made (regenerate it with "
            "`make observed-calls` and drop their grants):\n  " + "\n  ".join(stale),
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
