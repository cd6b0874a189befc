"""The drill in a process of its own (it owns its embedded AWS from start to finish), and the one run of
every scenario that the tests reading it share."""

from __future__ import annotations

import fcntl
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any


def run_drill(*args: str, prelude: str = "") -> tuple[int, dict[str, Any]]:
    script = textwrap.dedent(prelude) + textwrap.dedent(
        f"""
        import sys
        from immutable_guard.cli import main
        sys.exit(main(["drill", "--json", *{list(args)!r}]))
        """
    )
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=600, check=False
    )
    return run.returncode, json.loads(run.stdout)


def every_scenario_once(shared: Path | None) -> tuple[int, dict[str, Any]]:
    """`drill` with every scenario, run once for the test run. Under pytest-xdist each worker is a process
    of its own: the first worker to ask runs the drill and leaves its exit code and report in ``shared``
    (a file in the run's temporary directory, which every worker of the run sees); the others wait for it
    and read it. The pattern is pytest-xdist's "Making session-scoped fixtures execute only once"
    (https://pytest-xdist.readthedocs.io/en/stable/how-to.html), with the standard library's lock."""
    if shared is None:
        return run_drill()
    with shared.with_suffix(".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if shared.exists():
            code, report = json.loads(shared.read_text("utf-8"))
            return int(code), report
        code, report = run_drill()
        shared.write_text(json.dumps([code, report]), "utf-8")
        return code, report
