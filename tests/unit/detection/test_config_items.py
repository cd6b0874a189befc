"""Config items judged as Config means them: statuses and state transitions that record no mutation, revoked
rules and deny entries that open nothing, the kind following what changed, files changed by content, the
interface, volume and address items, and Config's echo of a change already judged from CloudTrail.

Record shapes:
- the EventBridge envelope and item fields: EventBridge "AWS Config events" (docs.aws.amazon.com/eventbridge/
  latest/ref/events-ref-config.html) and the Config Developer Guide "Components of a Configuration Item"
  (awsdocs/aws-config-developer-guide doc_source/config-item-table.md: `relatedEvents` is empty since item
  version 1.3);
- changedProperties, list elements diffed as DELETE of the old element and CREATE of the new one, the
  security-group swap on an instance (Configuration.SecurityGroups.N, Configuration.NetworkInterfaces.N,
  Relationships.N) and the volume attachment (Configuration.State, Configuration.Attachments.0 in PascalCase):
  Config Developer Guide "Example Configuration Item Change Notifications" (awsdocs/aws-config-developer-guide
  doc_source/example-sns-notification.md);
- the instance state path "Configuration.State.Name": ManageIQ/manageiq-providers-amazon's Config event
  parser (parse_instance_state_change);
- configurationItemStatus values: AWS Config API Reference, ConfigurationItem (OK | ResourceDiscovered |
  ResourceNotRecorded | ResourceDeleted | ResourceDeletedNotRecorded);
- network ACL entries, ENI, volume and address configurations: the EC2 Describe APIs' shapes in lowerCamel,
  as Config records every EC2 type (DescribeNetworkAcls, DescribeNetworkInterfaces, DescribeAddresses);
- SSM Inventory AWS:File records (Name, Size, InstalledDir, LastAccessTime, ModificationTime): the SSM
  inventory schema, as events/config-inventory-file-changed.json.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from detection_samples import SAMPLE_ACL, SAMPLE_ENI, SAMPLE_GROUP, SAMPLE_INSTANCE, load_sample
from immutable_guard.detection import normalise, parse_event
from immutable_guard.detection.config import NOT_A_CHANGE_EVIDENCE_KEY, PREVIOUS_TAGS_EVIDENCE_KEY
from immutable_guard.detection.policy import Policy, Reason, judge
from immutable_guard.detection.readers import TAG_CHANGES_EVIDENCE_KEY, TAGS_ONLY_EVIDENCE_KEY
from immutable_guard.detection.scope import InstanceInfo
from immutable_guard.model import Decision, Finding, Kind, Severity

IMMUTABLE = InstanceInfo(instance_id=SAMPLE_INSTANCE, state="running", tags={"immutable": "true"})
ALLOW_LISTED_EVENT = "b1c2d3e4-f5a6-4b7c-8d9e-000000000017"


def finding_of(raw: dict[str, Any]) -> Finding:
    return normalise(parse_event(raw))


def decided(raw: dict[str, Any], memory: Any = None) -> tuple[Decision, str]:
    judgement = judge(finding_of(raw), [IMMUTABLE], Policy(), memory)
    return judgement.decision, judgement.reason


def with_diff(name: str, changed: dict[str, Any], **item: Any) -> dict[str, Any]:
    raw = copy.deepcopy(load_sample(name))
    raw["detail"]["configurationItemDiff"] = {"changedProperties": changed, "changeType": "UPDATE"}
    raw["detail"]["configurationItem"].update(item)
    return raw


def change(previous: Any, updated: Any) -> dict[str, Any]:
    kind = "CREATE" if previous is None else "DELETE" if updated is None else "UPDATE"
    return {"previousValue": previous, "updatedValue": updated, "changeType": kind}


IGNORED = (Decision.IGNORE, Reason.CONFIG_NOT_A_CHANGE)
REMEDIATED = (Decision.REMEDIATE, Reason.MUTATION_OF_IMMUTABLE_INSTANCE)


# ---------------------------------------------------------------- statuses


@pytest.mark.parametrize(
    "status", ["ResourceDiscovered", "ResourceNotRecorded", "ResourceDeleted", "ResourceDeletedNotRecorded"]
)
def test_an_item_whose_status_records_no_change_is_not_a_mutation(status: str) -> None:
    # Given the item of an immutable instance whose diff adds a group, but whose status is not a change
    raw = load_sample("config-instance-changed.json")
    raw["detail"]["configurationItem"]["configurationItemStatus"] = status
    # When it is judged / Then it is ignored with the status as the reason
    finding = finding_of(raw)
    assert status in finding.evidence[NOT_A_CHANGE_EVIDENCE_KEY]
    assert decided(raw) == IGNORED


def test_the_discovery_of_a_new_immutable_server_opens_nothing_and_its_twin_does() -> None:
    # Given the discovery item of a new server (a scale-out, or the guard's own replacement)
    assert decided(load_sample("benign-config-resource-discovered.json")) == IGNORED
    # And its twin: the same server's item with status OK and a group added
    assert decided(load_sample("config-instance-changed.json"))[0] is Decision.REMEDIATE


def test_an_oversized_item_whose_summary_says_discovered_is_not_a_mutation() -> None:
    raw = load_sample("config-oversized-item-changed.json")
    raw["detail"]["configurationItemSummary"]["configurationItemStatus"] = "ResourceDiscovered"
    assert decided(raw) == IGNORED
    # The same summary with status OK cannot be read, and counts as a change.
    assert decided(load_sample("config-oversized-item-changed.json"))[0] is Decision.REMEDIATE


# ---------------------------------------------------------------- state transitions


def test_a_start_with_its_new_auto_assigned_public_ip_is_not_a_mutation() -> None:
    raw = load_sample("benign-config-instance-state-change.json")
    assert decided(raw) == IGNORED


@pytest.mark.parametrize(
    ("previous", "updated"), [("pending", "running"), ("running", "stopping"), ("stopping", "stopped")]
)
def test_every_state_transition_alone_is_not_a_mutation(previous: str, updated: str) -> None:
    raw = with_diff(
        "config-instance-changed.json",
        {
            "Configuration.State.Name": change(previous, updated),
            "Configuration.State.Code": change(0, 16),
            "Configuration.StateTransitionReason": change("", "User initiated"),
        },
    )
    assert decided(raw) == IGNORED


def test_an_elastic_ip_arriving_with_a_start_is_a_port_opened() -> None:
    # Given the start item where the interface's new address is an Elastic IP (owned by the account)
    raw = load_sample("benign-config-instance-state-change.json")
    created = raw["detail"]["configurationItemDiff"]["changedProperties"]["Configuration.NetworkInterfaces.1"]
    created["updatedValue"]["association"]["ipOwnerId"] = "111122223333"
    # Then it is no transition: the address opens the server
    finding = finding_of(raw)
    assert finding.kind is Kind.PORT_OPENED
    assert decided(raw) == REMEDIATED


def test_a_state_change_together_with_a_new_profile_is_judged_on_the_profile() -> None:
    raw = with_diff(
        "config-instance-changed.json",
        {
            "Configuration.State.Name": change("stopped", "running"),
            "Configuration.IamInstanceProfile": change(
                {"arn": "arn:aws:iam::111122223333:instance-profile/web-tier"},
                {"arn": "arn:aws:iam::111122223333:instance-profile/admin"},
            ),
        },
    )
    assert finding_of(raw).kind is Kind.IAM_PROFILE_CHANGED
    assert decided(raw) == REMEDIATED


# ---------------------------------------------------------------- tags


def test_a_tag_only_item_carries_its_tag_changes_and_says_tags_only() -> None:
    finding = finding_of(load_sample("benign-config-instance-tag-change.json"))
    assert finding.kind is Kind.INSTANCE_MODIFIED
    assert finding.evidence[TAG_CHANGES_EVIDENCE_KEY] == {
        "cost-center": {"previous": None, "updated": "cc-1234"}
    }
    assert finding.evidence[TAGS_ONLY_EVIDENCE_KEY] is True
    # The tags as of the change: the item's tags with the change undone.
    assert "cost-center" not in finding.evidence[PREVIOUS_TAGS_EVIDENCE_KEY]
    assert finding.evidence[PREVIOUS_TAGS_EVIDENCE_KEY]["immutable"] == "true"


def test_the_scope_tag_removed_shows_its_previous_value_and_the_tags_before() -> None:
    raw = with_diff(
        "config-instance-changed.json",
        {"Configuration.Tags.1": change({"key": "immutable", "value": "true"}, None)},
        tags={"Name": "web-1", "aws:autoscaling:groupName": "web-asg"},
    )
    finding = finding_of(raw)
    assert finding.evidence[TAG_CHANGES_EVIDENCE_KEY] == {"immutable": {"previous": "true", "updated": None}}
    assert finding.evidence[PREVIOUS_TAGS_EVIDENCE_KEY]["immutable"] == "true"


def test_a_tag_value_changed_by_element_rewrite_is_one_change() -> None:
    raw = with_diff(
        "config-instance-changed.json",
        {
            "Configuration.Tags.1": change({"key": "immutable", "value": "true"}, None),
            "Configuration.Tags.3": change(None, {"key": "immutable", "value": "false"}),
        },
    )
    assert finding_of(raw).evidence[TAG_CHANGES_EVIDENCE_KEY] == {
        "immutable": {"previous": "true", "updated": "false"}
    }


def test_tags_changed_with_groups_are_in_the_evidence_but_not_tags_only() -> None:
    raw = load_sample("config-instance-changed.json")
    raw["detail"]["configurationItemDiff"]["changedProperties"]["Configuration.Tags.3"] = change(
        None, {"key": "owner", "value": "mallory"}
    )
    finding = finding_of(raw)
    assert finding.kind is Kind.PORT_OPENED
    assert finding.evidence[TAG_CHANGES_EVIDENCE_KEY] == {"owner": {"previous": None, "updated": "mallory"}}
    assert finding.evidence[TAGS_ONLY_EVIDENCE_KEY] is False


# ---------------------------------------------------------------- security groups


def test_a_revoked_rule_opens_nothing_and_its_twin_opens_ssh() -> None:
    assert decided(load_sample("benign-config-sg-rule-revoked.json")) == IGNORED
    twin = finding_of(load_sample("config-security-group-changed.json"))
    assert (twin.kind, twin.severity) == (Kind.PORT_OPENED, Severity.CRITICAL)
    assert decided(load_sample("config-security-group-changed.json")) == REMEDIATED


def _ssh(cidrs: list[str]) -> dict[str, Any]:
    return {
        "fromPort": 22,
        "ipProtocol": "tcp",
        "toPort": 22,
        "userIdGroupPairs": [],
        "ipv4Ranges": [{"cidrIp": c} for c in cidrs],
        "ipRanges": cidrs,
    }


def test_a_range_added_to_an_existing_rule_names_only_the_new_range() -> None:
    raw = with_diff(
        "config-security-group-changed.json",
        {"Configuration.IpPermissions.0": change(_ssh(["10.0.0.0/8"]), _ssh(["10.0.0.0/8", "0.0.0.0/0"]))},
    )
    finding = finding_of(raw)
    assert [p["cidr"] for p in finding.evidence["permissions"]] == ["0.0.0.0/0"]
    assert finding.severity is Severity.CRITICAL


def test_a_rule_element_rewritten_unchanged_or_narrowed_opens_nothing() -> None:
    raw = with_diff(
        "config-security-group-changed.json",
        {
            "Configuration.IpPermissions.0": change(_ssh(["10.0.0.0/8", "0.0.0.0/0"]), None),
            "Configuration.IpPermissions.2": change(None, _ssh(["10.0.0.0/8"])),
        },
    )
    assert decided(raw) == IGNORED


def test_an_egress_rule_added_is_a_port_opened() -> None:
    raw = with_diff(
        "config-security-group-changed.json",
        {"Configuration.IpPermissionsEgress.1": change(None, _ssh(["198.51.100.0/24"]))},
    )
    finding = finding_of(raw)
    assert finding.evidence["permissions"][0]["direction"] == "egress"
    assert finding.resource_ids == (SAMPLE_GROUP,)


# ---------------------------------------------------------------- network ACLs


def test_a_deny_entry_opens_nothing_and_an_allow_entry_opens_a_port() -> None:
    assert decided(load_sample("benign-config-network-acl-deny-added.json")) == IGNORED
    allow = finding_of(load_sample("config-network-acl-allow-added.json"))
    assert (allow.kind, allow.severity) == (Kind.PORT_OPENED, Severity.CRITICAL)
    assert allow.resource_ids == (SAMPLE_ACL,)
    assert decided(load_sample("config-network-acl-allow-added.json")) == REMEDIATED


def test_a_subnet_moved_onto_an_acl_is_a_network_path_change() -> None:
    raw = load_sample("benign-config-network-acl-deny-added.json")
    raw["detail"]["configurationItemDiff"]["changedProperties"] = {
        "Configuration.Associations.1": change(
            None, {"networkAclId": SAMPLE_ACL, "subnetId": "subnet-0fedcba9876543210"}
        )
    }
    finding = finding_of(raw)
    assert finding.kind is Kind.NETWORK_PATH_CHANGED
    assert finding.evidence["subnet_ids"] == ["subnet-0fedcba9876543210"]


# ---------------------------------------------------------------- the kind follows what changed


@pytest.mark.parametrize(
    ("changed", "kind", "severity"),
    [
        (
            {"Configuration.SecurityGroups.1": change(None, {"groupName": "debug", "groupId": "sg-0bad"})},
            Kind.PORT_OPENED,
            Severity.HIGH,
        ),
        ({"Configuration.PublicIpAddress": change(None, "198.51.100.7")}, Kind.PORT_OPENED, Severity.HIGH),
        (
            {"Configuration.IamInstanceProfile": change(None, {"arn": "arn:aws:iam::1:instance-profile/x"})},
            Kind.IAM_PROFILE_CHANGED,
            Severity.HIGH,
        ),
        (
            {
                "Configuration.BlockDeviceMappings.1": change(
                    None, {"deviceName": "/dev/sdf", "ebs": {"volumeId": "vol-0c1d2e3f4a5b6c7d8"}}
                )
            },
            Kind.DISK_CHANGED,
            Severity.HIGH,
        ),
        (
            {"Configuration.MetadataOptions.HttpTokens": change("required", "optional")},
            Kind.INSTANCE_MODIFIED,
            Severity.HIGH,
        ),
        (
            {
                "Configuration.NetworkInterfaces.1": change(
                    None, {"networkInterfaceId": "eni-0new", "groups": []}
                )
            },
            Kind.NETWORK_PATH_CHANGED,
            Severity.HIGH,
        ),
        (
            {"Configuration.InstanceType": change("t3.micro", "t3.large")},
            Kind.INSTANCE_MODIFIED,
            Severity.MEDIUM,
        ),
    ],
)
def test_the_kind_of_an_instance_item_follows_what_changed(
    changed: dict[str, Any], kind: Kind, severity: Severity
) -> None:
    raw = with_diff("config-instance-changed.json", changed)
    finding = finding_of(raw)
    assert (finding.kind, finding.severity) == (kind, severity)
    assert finding.instance_ids == (SAMPLE_INSTANCE,)
    assert decided(raw) == REMEDIATED


def test_groups_changed_on_an_interface_element_are_a_port_opened() -> None:
    # The documented swap: the interface element deleted and created again with another group.
    before = {"networkInterfaceId": SAMPLE_ENI, "groups": [{"groupId": SAMPLE_GROUP}]}
    after = {"networkInterfaceId": SAMPLE_ENI, "groups": [{"groupId": "sg-0badc0ffee0ddf00d"}]}
    raw = with_diff(
        "config-instance-changed.json",
        {
            "Configuration.NetworkInterfaces.0": change(before, None),
            "Configuration.NetworkInterfaces.1": change(None, after),
        },
    )
    finding = finding_of(raw)
    assert finding.kind is Kind.PORT_OPENED
    assert finding.evidence["groups_added"] == ["sg-0badc0ffee0ddf00d"]


# ---------------------------------------------------------------- files


def test_only_the_access_time_moving_is_not_a_file_change_and_its_twin_is() -> None:
    assert decided(load_sample("benign-config-inventory-access-time-only.json")) == IGNORED
    real = finding_of(load_sample("config-inventory-file-changed.json"))
    assert (real.kind, real.evidence["paths"]) == (Kind.FILE_CHANGED, ["/etc/ssh/sshd_config"])
    assert decided(load_sample("config-inventory-file-changed.json")) == REMEDIATED


def test_a_watched_file_created_or_deleted_is_a_file_change() -> None:
    raw = load_sample("config-inventory-file-changed.json")
    record = raw["detail"]["configurationItemDiff"]["changedProperties"][
        "Configuration.AWS:File.Content./etc/ssh/sshd_config"
    ]
    raw["detail"]["configurationItemDiff"]["changedProperties"] = {
        "Configuration.AWS:File.Content./root/.ssh/authorized_keys": change(
            None, {**record["updatedValue"], "Name": "authorized_keys", "InstalledDir": "/root/.ssh"}
        )
    }
    assert finding_of(raw).evidence["paths"] == ["/root/.ssh/authorized_keys"]


def test_a_field_level_diff_of_the_access_time_is_not_a_file_change() -> None:
    raw = with_diff(
        "config-inventory-file-changed.json",
        {
            "Configuration.AWS:File.Content./etc/ssh/sshd_config.LastAccessTime": change(
                "2026-03-13T23:59:59Z", "2026-03-14T09:20:02Z"
            ),
            "Configuration.AWS:InstanceInformation.Content.i-0abc1234def567890.AgentVersion": change(
                "3.3.131.0", "3.3.987.0"
            ),
        },
    )
    assert decided(raw) == IGNORED


def test_a_hash_collected_and_changed_is_a_file_change() -> None:
    raw = load_sample("benign-config-inventory-access-time-only.json")
    record = raw["detail"]["configurationItemDiff"]["changedProperties"][
        "Configuration.AWS:File.Content./etc/ssh/sshd_config"
    ]
    record["previousValue"]["Sha256"] = "aa" * 32
    record["updatedValue"]["Sha256"] = "bb" * 32
    assert finding_of(raw).kind is Kind.FILE_CHANGED
    assert decided(raw) == REMEDIATED


# ---------------------------------------------------------------- interfaces, volumes, addresses


def test_a_group_added_to_an_interface_names_the_interface_and_its_instance() -> None:
    raw = load_sample("config-network-interface-groups-changed.json")
    finding = finding_of(raw)
    assert (finding.kind, finding.resource_ids, finding.instance_ids) == (
        Kind.PORT_OPENED,
        (SAMPLE_ENI,),
        (SAMPLE_INSTANCE,),
    )
    assert decided(raw) == REMEDIATED


def test_an_interface_attached_to_a_server_is_a_network_path_change_and_a_status_change_is_not() -> None:
    raw = with_diff(
        "config-network-interface-groups-changed.json",
        {"Configuration.Attachment": change(None, {"instanceId": SAMPLE_INSTANCE, "status": "attached"})},
    )
    finding = finding_of(raw)
    assert (finding.kind, finding.instance_ids) == (Kind.NETWORK_PATH_CHANGED, (SAMPLE_INSTANCE,))
    same = with_diff(
        "config-network-interface-groups-changed.json",
        {
            "Configuration.Attachment": change(
                {"instanceId": SAMPLE_INSTANCE, "status": "attaching"},
                {"instanceId": SAMPLE_INSTANCE, "status": "attached"},
            ),
            "Configuration.Status": change("available", "in-use"),
        },
    )
    assert decided(same) == IGNORED


def test_a_volume_attached_names_its_instance_and_an_attachment_settling_does_not() -> None:
    raw = load_sample("config-volume-attached.json")
    finding = finding_of(raw)
    assert (finding.kind, finding.instance_ids) == (Kind.DISK_CHANGED, (SAMPLE_INSTANCE,))
    assert decided(raw) == REMEDIATED
    attaching = {"instanceId": SAMPLE_INSTANCE, "state": "attaching", "device": "/dev/sdf"}
    settled = with_diff(
        "config-volume-attached.json",
        {
            "Configuration.Attachments.0": change(attaching, None),
            "Configuration.Attachments.1": change(None, {**attaching, "state": "attached"}),
        },
    )
    assert decided(settled) == IGNORED


def test_an_elastic_ip_associated_names_the_instance_and_interface_and_a_disassociation_does_not() -> None:
    raw = load_sample("config-eip-associated.json")
    finding = finding_of(raw)
    assert finding.kind is Kind.PORT_OPENED
    assert set(finding.resource_ids) == {SAMPLE_ENI, SAMPLE_INSTANCE}
    assert decided(raw) == REMEDIATED
    gone = with_diff(
        "config-eip-associated.json",
        {
            "Configuration.InstanceId": change(SAMPLE_INSTANCE, None),
            "Configuration.AssociationId": change("eipassoc-0a1b2c3d4e5f67890", None),
        },
    )
    assert decided(gone) == IGNORED


# ---------------------------------------------------------------- Config's echo of a judged change


class Remembers:
    """A ledger that judged some CloudTrail events and changes exempt."""

    def __init__(self, events: dict[str, str] | None = None, changes: dict[str, str] | None = None) -> None:
        self.events, self.changes = events or {}, changes or {}

    def open_incident_for(self, instance_id: str) -> str | None:
        return None

    def was_in_scope(self, instance_id: str, scope_tag: str) -> bool:
        return False

    def exempt_reason_of_event(self, event_id: str) -> str | None:
        return self.events.get(event_id)

    def exempt_reason_of_change(self, change_key: str) -> str | None:
        return self.changes.get(change_key)


def test_an_item_naming_an_allow_listed_event_takes_its_judgement_and_alone_is_judged_alone() -> None:
    raw = load_sample("config-echo-of-pipeline-change.json")
    memory = Remembers(events={ALLOW_LISTED_EVENT: Reason.ALLOW_LISTED_PRINCIPAL})
    assert decided(raw, memory) == (Decision.IGNORE, Reason.ALLOW_LISTED_PRINCIPAL)
    # With no memory of the event, the item is judged alone.
    assert decided(raw, Remembers()) == REMEDIATED


def test_an_item_naming_an_event_judged_otherwise_is_judged_alone() -> None:
    raw = load_sample("config-echo-of-pipeline-change.json")
    memory = Remembers(events={ALLOW_LISTED_EVENT: Reason.MUTATION_OF_IMMUTABLE_INSTANCE})
    assert decided(raw, memory) == REMEDIATED


@pytest.mark.parametrize("reason", [Reason.OWN_CHANGE, Reason.CLOUDFORMATION_CHANGE])
def test_an_item_without_related_events_takes_the_judgement_of_the_same_change(reason: str) -> None:
    # Config leaves relatedEvents empty: the guard's own revoke-and-swap, or a stack's change, is matched
    # by the change itself (its kind and resource) in the ledger's short window.
    raw = load_sample("config-instance-changed.json")
    memory = Remembers(changes={f"port_opened:{SAMPLE_INSTANCE}": reason})
    assert decided(raw, memory) == (Decision.IGNORE, reason)
    # A different change on the same server is not covered.
    other = Remembers(changes={f"file_changed:{SAMPLE_INSTANCE}": reason})
    assert decided(raw, other) == REMEDIATED


def test_a_cloudtrail_record_is_never_excused_by_the_memory_of_a_change() -> None:
    raw = load_sample("cloudtrail-modify-instance-attribute-groupset.json")
    finding = finding_of(raw)
    memory = Remembers(changes={finding.change_key: Reason.ALLOW_LISTED_PRINCIPAL})
    assert judge(finding, [IMMUTABLE], Policy(), memory).decision is Decision.REMEDIATE


def test_a_second_interface_attached_to_the_server_is_a_network_path_change() -> None:
    raw = load_sample("config-network-interface-attached.json")
    finding = finding_of(raw)
    assert (finding.kind, finding.instance_ids) == (Kind.NETWORK_PATH_CHANGED, (SAMPLE_INSTANCE,))
    assert finding.resource_ids == ("eni-0fedcba9876543210",)
    assert decided(raw) == REMEDIATED
