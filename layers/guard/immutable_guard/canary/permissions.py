"""The IAM actions each canary function needs, keyed by its logical id in template.yaml; a test holds the
template to exactly these."""

from __future__ import annotations

# DynamoDB actions only on the ledger's rollout-lock items (dynamodb:LeadingKeys CANARY#*, in the template).
_LOCK = frozenset({"dynamodb:GetItem", "dynamodb:UpdateItem"})
_ALERT = frozenset({"sns:Publish", "kms:Decrypt", "kms:GenerateDataKey"})

PERMISSIONS: dict[str, frozenset[str]] = {
    "CanaryPreflightFunction": frozenset(
        {"lambda:GetAlias", "lambda:GetFunctionConfiguration", "lambda:ListTags", "cloudwatch:DescribeAlarms"}
    )
    | _LOCK
    | {"dynamodb:PutItem", "dynamodb:DeleteItem"},
    # UpdateAlias only on functions tagged immutable-guard:canary=allowed (condition in the template).
    "CanaryShiftFunction": frozenset(
        {"lambda:GetAlias", "lambda:UpdateAlias", "dynamodb:UpdateItem", "dynamodb:DeleteItem"}
    ),
    "CanaryGateFunction": frozenset(
        {"cloudwatch:DescribeAlarms", "cloudwatch:GetMetricData", "lambda:GetAlias"}
    ),
    "CanaryRollbackFunction": frozenset({"lambda:GetAlias", "lambda:UpdateAlias"}) | _LOCK,
    "CanaryNotifyFunction": _ALERT,
    # InvokeFunction only on functions tagged immutable-guard:canary=allowed.
    "CanaryHookFunction": frozenset({"lambda:InvokeFunction"}),
    "CanaryRecoverFunction": frozenset({"lambda:GetAlias", "lambda:UpdateAlias", "dynamodb:DeleteItem"})
    | _LOCK
    | _ALERT,
    # Plans only under parameter/immutable-guard/canary/*, executions only of the canary state machine.
    "CanaryStartFunction": frozenset({"lambda:GetAlias", "ssm:GetParameter", "states:StartExecution"}),
}

# Invoked by the state machine (the recovery and start functions are EventBridge targets, not states).
STATE_MACHINE_FUNCTIONS = frozenset(PERMISSIONS) - {"CanaryRecoverFunction", "CanaryStartFunction"}
