"""Names the canary's unit tests share with their conftest (a module of its own: test modules cannot import
`conftest` when other test folders have one too)."""

LEDGER_TABLE = "immutable-guard-ledger"  # the unit conftest's ledger table
EXECUTION = "arn:aws:states:us-east-1:123456789012:execution:canary:orders-live-v2-test"
