"""The security suites reuse the Detect world of the reliability suites (one fleet builder, not two)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reliability"))
