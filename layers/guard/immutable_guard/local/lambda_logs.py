"""Where our in-process Lambda handlers log on the embedded local AWS: they print JSON to stdout, as in
Lambda; here a file plays CloudWatch Logs, so a person's terminal shows only the story."""

from __future__ import annotations

import sys
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from pathlib import Path
from typing import TextIO


@contextmanager
def lambda_logs_to_file(prefix: str) -> Iterator[tuple[TextIO, Path]]:
    """Yield (the terminal's stdout, the log file's path) while stdout goes to the log file."""
    terminal = sys.stdout
    path = Path(tempfile.mkdtemp(prefix=f"immutable-guard-{prefix}-")) / "lambda.log"
    with path.open("w") as log, redirect_stdout(log), warnings.catch_warnings():
        # Powertools warns once per invocation that emitted no metric; that is expected here.
        warnings.simplefilter("ignore")
        yield terminal, path
