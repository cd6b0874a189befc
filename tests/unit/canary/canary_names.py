"""Names the canary's unit tests share with their conftest (a module of its own: test modules cannot import
`conftest` when other test folders have one too)."""

from dataclasses import dataclass

LEDGER_TABLE = "immutable-guard-ledger"  # the unit conftest's ledger table
EXECUTION = "arn:aws:states:us-east-1:123456789012:execution:canary:orders-live-v2-test"


@dataclass(frozen=True)
class Target:
    """A canary target: the function, its alias and the alarm the gate watches."""

    function: str
    alias: str
    alarm: str
