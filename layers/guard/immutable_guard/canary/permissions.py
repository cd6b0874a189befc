"""The IAM actions each canary function needs, keyed by its logical id in template.yaml; a test holds the
template to exactly these."""

from __future__ import annotations

PERMISSIONS: dict[str, frozenset[str]] = {
    "CanaryPreflightFunction": frozenset(
        {"lambda:GetAlias", "lambda:GetFunctionConfiguration", "lambda:ListTags", "cloudwatch:DescribeAlarms"}
    ),
    # UpdateAlias only on functions tagged immutable-guard:canary=allowed (condition in the template).
    "CanaryShiftFunction": frozenset({"lambda:GetAlias", "lambda:UpdateAlias"}),
    "CanaryGateFunction": frozenset({"cloudwatch:DescribeAlarms", "cloudwatch:GetMetricData"}),
    "CanaryRollbackFunction": frozenset({"lambda:GetAlias", "lambda:UpdateAlias"}),
    "CanaryNotifyFunction": frozenset({"sns:Publish", "kms:Decrypt", "kms:GenerateDataKey"}),
}
