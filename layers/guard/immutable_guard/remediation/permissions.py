"""The IAM actions each remediation function needs, keyed by its logical id in template.yaml. A test holds
the template to exactly these: a grant nobody uses is attack surface, a missing one an outage."""

from __future__ import annotations

_LEDGER_STEP = frozenset({"dynamodb:GetItem", "dynamodb:UpdateItem"})

PERMISSIONS: dict[str, frozenset[str]] = {
    "QuarantineFunction": frozenset(
        {
            # Reading the prior state (and finding our isolation groups) before anything changes.
            "ec2:DescribeInstances",
            "ec2:DescribeInstanceAttribute",
            "ec2:DescribeIamInstanceProfileAssociations",
            "ec2:DescribeSecurityGroups",
            "elasticloadbalancing:DescribeTargetGroups",
            "elasticloadbalancing:DescribeTargetHealth",
            # Whether an NLB target group already closes a deregistered target's connections, else on.
            "elasticloadbalancing:DescribeTargetGroupAttributes",
            "elasticloadbalancing:ModifyTargetGroupAttributes",
            # The launch source in force when the incident opens, for Replace to compare.
            "autoscaling:DescribeAutoScalingGroups",
            "ec2:DescribeLaunchTemplateVersions",
            # Isolation groups: get-or-create per VPC, kept free of rules we did not put there.
            "ec2:CreateSecurityGroup",
            "ec2:CreateTags",
            "ec2:AuthorizeSecurityGroupIngress",
            "ec2:AuthorizeSecurityGroupEgress",
            "ec2:RevokeSecurityGroupIngress",
            "ec2:RevokeSecurityGroupEgress",
            # Isolating every ENI, then reading them back.
            "ec2:ModifyNetworkInterfaceAttribute",
            "ec2:DescribeNetworkInterfaces",
            # The offending rule's direction when the finding names it by rule id only.
            "ec2:DescribeSecurityGroupRules",
            # A network ACL allow entry the attacker created: checked, then deleted.
            "ec2:DescribeNetworkAcls",
            "ec2:DeleteNetworkAclEntry",
            # IsolationDepth=network-acl: deny entries for the instance's addresses.
            "ec2:CreateNetworkAclEntry",
            # Evidence protection, leaving service, dropping the instance's credentials.
            "ec2:ModifyInstanceAttribute",
            "autoscaling:DetachInstances",
            "elasticloadbalancing:DeregisterTargets",
            "ec2:DisassociateIamInstanceProfile",
            # The dropped profile's id and role, for Release to give back only that.
            "iam:GetInstanceProfile",
            *_LEDGER_STEP,
        }
    ),
    "ReleaseFunction": frozenset(
        {
            "ec2:DescribeInstances",
            "ec2:DescribeIamInstanceProfileAssociations",
            "ec2:ModifyNetworkInterfaceAttribute",
            "ec2:ModifyInstanceAttribute",
            "ec2:AssociateIamInstanceProfile",
            # AssociateIamInstanceProfile passes the profile's role to EC2; the profile must still hold
            # the role Contain recorded.
            "iam:PassRole",
            "iam:GetInstanceProfile",
            "ec2:DeleteTags",
            "elasticloadbalancing:RegisterTargets",
            # The network-ACL deny entries of the quarantine, removed.
            "ec2:DescribeNetworkAcls",
            "ec2:DeleteNetworkAclEntry",
            *_LEDGER_STEP,
            # The running remediation is stopped first, so it cannot nuke what is being given back.
            "states:DescribeExecution",
            "states:StopExecution",
            # The instance's lock is deleted so a later mutation can open a new incident.
            "dynamodb:DeleteItem",
            # The "released" alert, on the KMS-encrypted topic.
            "sns:Publish",
            "kms:Decrypt",
            "kms:GenerateDataKey",
        }
    ),
    "EvidenceFunction": frozenset(
        {
            "ec2:DescribeInstances",
            # Re-runs find the incident's snapshots by tag instead of creating new ones.
            "ec2:DescribeSnapshots",
            "ec2:CreateSnapshots",
            # Tag-on-create, then the volume and device of each snapshot.
            "ec2:CreateTags",
            "ec2:GetConsoleOutput",
            "s3:PutObject",
            *_LEDGER_STEP,
        }
    ),
    "ReplaceFunction": frozenset(
        {
            "ec2:DescribeInstances",
            # What the owner would launch, compared with what Contain recorded.
            "ec2:DescribeLaunchTemplateVersions",
            "autoscaling:DescribeAutoScalingGroups",
            "autoscaling:DescribeAutoScalingInstances",
            "cloudformation:DescribeStacks",
            "cloudformation:DescribeStackResource",
            # Only on declared stacks (by name or tag), as their own service role (not passed) ...
            "cloudformation:UpdateStack",
            # ... or the operator's named role, passable only when ReplacementStackRoleArn is set.
            "iam:PassRole",
            *_LEDGER_STEP,
        }
    ),
    "NukeFunction": frozenset(
        {
            "ec2:DescribeInstances",
            "ec2:DescribeSnapshots",
            # Re-reading the replacement's health from its owner.
            "autoscaling:DescribeAutoScalingGroups",
            "cloudformation:DescribeStacks",
            "cloudformation:DescribeStackResource",
            # Lifting our own termination / stop protection, then acting.
            "ec2:ModifyInstanceAttribute",
            "ec2:TerminateInstances",
            "ec2:StopInstances",
            # A terminated instance's addresses are free for others: its network-ACL deny entries go.
            "ec2:DescribeNetworkAcls",
            "ec2:DeleteNetworkAclEntry",
            *_LEDGER_STEP,
        }
    ),
}
