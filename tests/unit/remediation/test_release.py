"""Release: a contained false positive gets its groups, profile, protection settings and target groups
back, loses the quarantine tags, and the incident ends RELEASED with the instance free again."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from immutable_guard.clients import Clients
from immutable_guard.errors import IncidentNotFound, InvalidEvent, ReleaseRefused
from immutable_guard.ledger import IncidentLedger, Status
from immutable_guard.remediation.quarantine import TAG_INCIDENT, TAG_STATE, quarantine_instance
from immutable_guard.remediation.release import release_incident
from remediation_world import FakeLambdaContext, GoldenWorkload, load_function

OpenIncident = Callable[[str, dict[str, Any]], str]


@pytest.fixture
def contained_member(
    aws: Clients,
    ledger: IncidentLedger,
    golden_asg_member: GoldenWorkload,
    ssh_opened_finding: dict[str, Any],
    open_incident: OpenIncident,
) -> str:
    """The ASG member, whose shutdown used to terminate it, really contained by the Contain step."""
    w = golden_asg_member
    aws.ec2.modify_instance_attribute(
        InstanceId=w.instance_id, Attribute="instanceInitiatedShutdownBehavior", Value="terminate"
    )
    incident_id = open_incident(w.instance_id, ssh_opened_finding)
    quarantine_instance(aws, ledger, incident_id, w.instance_id, ssh_opened_finding)
    return incident_id


def _instance(aws: Clients, instance_id: str) -> dict[str, Any]:
    return aws.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]


def _attribute(aws: Clients, instance_id: str, name: str) -> Any:
    response: Any = aws.ec2.describe_instance_attribute(InstanceId=instance_id, Attribute=name)
    return response[name[0].upper() + name[1:]]["Value"]


def test_release_restores_what_contain_changed(
    aws: Clients, ledger: IncidentLedger, golden_asg_member: GoldenWorkload, contained_member: str
) -> None:
    # Given a contained ASG member (a false positive)
    w = golden_asg_member

    # When a person releases it
    result = release_incident(aws, ledger, contained_member)

    # Then every ENI is back in its own group, and the profile, protection and volumes are as before
    enis = aws.ec2.describe_network_interfaces(
        Filters=[{"Name": "attachment.instance-id", "Values": [w.instance_id]}]
    )["NetworkInterfaces"]
    assert len(enis) == 2
    assert all([g["GroupId"] for g in eni["Groups"]] == [w.app_group_id] for eni in enis)
    associations = aws.ec2.describe_iam_instance_profile_associations(
        Filters=[
            {"Name": "instance-id", "Values": [w.instance_id]},
            {"Name": "state", "Values": ["associated"]},
        ]
    )["IamInstanceProfileAssociations"]
    assert [a["IamInstanceProfile"]["Arn"] for a in associations] == [w.profile_arn]
    assert _attribute(aws, w.instance_id, "disableApiTermination") is False
    assert _attribute(aws, w.instance_id, "instanceInitiatedShutdownBehavior") == "terminate"
    instance = _instance(aws, w.instance_id)
    assert [m["Ebs"]["DeleteOnTermination"] for m in instance["BlockDeviceMappings"]] == [True]
    # ... it serves traffic again, and carries no quarantine tag
    targets = aws.elbv2.describe_target_health(TargetGroupArn=w.target_group_arn)["TargetHealthDescriptions"]
    assert {"Id": w.instance_id, "Port": 8080} in [t["Target"] for t in targets]
    tags = {t["Key"] for t in instance.get("Tags", [])}
    assert not tags & {TAG_INCIDENT, TAG_STATE}
    # ... and the result says what was not undone
    assert result["auto_scaling_group_not_restored"] == w.auto_scaling_group
    assert len(result["revoked_rules_not_restored"]) == 1
    assert result["reregistered_in"] == [w.target_group_arn]
    assert result["profile_restored"] == w.profile_arn


def _profile_associations(aws: Clients, instance_id: str) -> list[str]:
    return [
        a["IamInstanceProfile"]["Arn"]
        for a in aws.ec2.describe_iam_instance_profile_associations(
            Filters=[
                {"Name": "instance-id", "Values": [instance_id]},
                {"Name": "state", "Values": ["associated", "associating"]},
            ]
        )["IamInstanceProfileAssociations"]
    ]


def test_contain_records_the_profiles_role_for_release(
    aws: Clients, ledger: IncidentLedger, golden_asg_member: GoldenWorkload, contained_member: str
) -> None:
    # Given a contained member whose profile "golden-app" holds the role "golden-app"
    recorded = ledger.get(contained_member).prior_state["iam_instance_profile"]  # type: ignore[index]
    # Then Contain recorded the profile's id and role, what Release checks before giving it back
    assert recorded["arn"] == golden_asg_member.profile_arn
    assert recorded["roles"] == ["arn:aws:iam::123456789012:role/golden-app"]
    iam = aws._session.client("iam", region_name="us-east-1")
    assert (
        recorded["id"]
        == iam.get_instance_profile(InstanceProfileName="golden-app")["InstanceProfile"]["InstanceProfileId"]
    )


def test_a_profile_whose_role_was_swapped_is_not_given_back(
    aws: Clients, ledger: IncidentLedger, golden_asg_member: GoldenWorkload, contained_member: str
) -> None:
    # Given while the server was quarantined someone put another role into its profile. Release may pass
    # any role of the account to EC2, so the profile would carry that role onto the server.
    iam = aws._session.client("iam", region_name="us-east-1")
    iam.create_role(RoleName="admin-ish", AssumeRolePolicyDocument="{}")
    iam.remove_role_from_instance_profile(InstanceProfileName="golden-app", RoleName="golden-app")
    iam.add_role_to_instance_profile(InstanceProfileName="golden-app", RoleName="admin-ish")
    # When a person releases the incident
    result = release_incident(aws, ledger, contained_member)
    # Then everything else is restored, but not the profile; the result says why
    assert result["profile_restored"] is None
    assert _profile_associations(aws, golden_asg_member.instance_id) == []
    why = next(a for a in result["actions"] if "not restored" in a)
    assert "role/admin-ish now" in why and "role/golden-app then" in why


def test_a_profile_made_again_under_the_same_name_is_not_given_back(
    aws: Clients, ledger: IncidentLedger, golden_asg_member: GoldenWorkload, contained_member: str
) -> None:
    # Given the profile was deleted and made again with the same name and role (another profile)
    iam = aws._session.client("iam", region_name="us-east-1")
    iam.remove_role_from_instance_profile(InstanceProfileName="golden-app", RoleName="golden-app")
    iam.delete_instance_profile(InstanceProfileName="golden-app")
    iam.create_instance_profile(InstanceProfileName="golden-app")
    iam.add_role_to_instance_profile(InstanceProfileName="golden-app", RoleName="golden-app")
    # When released  Then the profile is not given back
    result = release_incident(aws, ledger, contained_member)
    assert result["profile_restored"] is None
    assert any("deleted and made again" in a for a in result["actions"])


def test_a_profile_whose_role_contain_could_not_read_is_not_given_back(
    aws: Clients,
    ledger: IncidentLedger,
    golden_asg_member: GoldenWorkload,
    ssh_opened_finding: dict[str, Any],
    open_incident: OpenIncident,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given IAM refused Contain's read of the profile (Contain must isolate whatever happens)
    from botocore.exceptions import ClientError
    from immutable_guard.remediation import quarantine

    def refused(*_: Any) -> Any:
        raise ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "GetInstanceProfile")

    monkeypatch.setattr(quarantine, "instance_profile_identity", refused)
    w = golden_asg_member
    incident_id = open_incident(w.instance_id, ssh_opened_finding)
    contained = quarantine_instance(aws, ledger, incident_id, w.instance_id, ssh_opened_finding)
    assert contained["profile_detached"] == w.profile_arn
    monkeypatch.undo()
    # When a person releases it
    result = release_incident(aws, ledger, incident_id)
    # Then the profile is not given back: nothing proves it still holds the role the server had
    assert result["profile_restored"] is None
    assert any("was not recorded (ClientError" in a for a in result["actions"])


def test_release_closes_the_incident_and_frees_the_instance(
    aws: Clients, ledger: IncidentLedger, golden_asg_member: GoldenWorkload, contained_member: str
) -> None:
    # Given a contained instance holds the lock on its instance (kept per account and region)
    incident = ledger.get(contained_member)
    place = ledger.at(incident.account, incident.region)
    assert place.open_incident_for(golden_asg_member.instance_id) == contained_member

    # When it is released
    result = release_incident(aws, ledger, contained_member)

    # Then the ledger says RELEASED with the result, and a new mutation may open a new incident
    incident = ledger.get(contained_member)
    assert incident.status is Status.RELEASED
    assert incident.details["released"] == result
    assert "released" in incident.timeline
    assert place.open_incident_for(golden_asg_member.instance_id) is None


def test_releasing_twice_gives_the_same_result(
    aws: Clients, ledger: IncidentLedger, contained_member: str
) -> None:
    first = release_incident(aws, ledger, contained_member)

    second = release_incident(aws, ledger, contained_member)

    assert {k: v for k, v in second.items() if k != "actions"} == {
        k: v for k, v in first.items() if k != "actions"
    }


def test_a_stopped_instance_is_restored_but_not_registered(
    aws: Clients, ledger: IncidentLedger, golden_asg_member: GoldenWorkload, contained_member: str
) -> None:
    # Given the contained instance was stopped since (e.g. by the post-evidence action)
    w = golden_asg_member
    aws.ec2.stop_instances(InstanceIds=[w.instance_id])

    # When it is released
    result = release_incident(aws, ledger, contained_member)

    # Then load balancers are left alone (they refuse stopped targets) and the result says so
    assert result["reregistered_in"] == []
    assert any("not re-registered" in action for action in result["actions"])
    targets = aws.elbv2.describe_target_health(TargetGroupArn=w.target_group_arn)["TargetHealthDescriptions"]
    assert w.instance_id not in [t["Target"]["Id"] for t in targets]


def test_release_is_refused_when_the_incident_was_never_contained(
    aws: Clients,
    ledger: IncidentLedger,
    golden_asg_member: GoldenWorkload,
    ssh_opened_finding: dict[str, Any],
    open_incident: OpenIncident,
) -> None:
    incident_id = open_incident(golden_asg_member.instance_id, ssh_opened_finding)

    with pytest.raises(ReleaseRefused, match="never contained"):
        release_incident(aws, ledger, incident_id)
    assert ledger.get(incident_id).status is Status.OPEN


def test_release_is_refused_when_the_instance_is_gone(
    aws: Clients, ledger: IncidentLedger, golden_asg_member: GoldenWorkload, contained_member: str
) -> None:
    # Given the contained instance was terminated since
    w = golden_asg_member
    aws.ec2.modify_instance_attribute(InstanceId=w.instance_id, DisableApiTermination={"Value": False})
    aws.ec2.terminate_instances(InstanceIds=[w.instance_id])

    with pytest.raises(ReleaseRefused, match="gone"):
        release_incident(aws, ledger, contained_member)
    assert ledger.get(contained_member).status is Status.CONTAINED


def test_release_is_refused_when_another_incident_holds_the_instance(
    aws: Clients, ledger: IncidentLedger, golden_asg_member: GoldenWorkload, contained_member: str
) -> None:
    aws.ec2.create_tags(
        Resources=[golden_asg_member.instance_id], Tags=[{"Key": TAG_INCIDENT, "Value": "ig-other"}]
    )

    with pytest.raises(ReleaseRefused, match="ig-other"):
        release_incident(aws, ledger, contained_member)


def test_an_unknown_incident_is_incident_not_found(aws: Clients, ledger: IncidentLedger) -> None:
    with pytest.raises(IncidentNotFound):
        release_incident(aws, ledger, "ig-nonexistent")


def test_the_handler_releases_and_tells_the_security_team(
    aws: Clients,
    ledger: IncidentLedger,
    golden_asg_member: GoldenWorkload,
    contained_member: str,
    step_environment: pytest.MonkeyPatch,
    lambda_context: FakeLambdaContext,
) -> None:
    # Given the alert topic has a queue subscribed
    topic_arn = aws.sns.create_topic(Name="alerts")["TopicArn"]
    step_environment.setenv("ALERT_TOPIC_ARN", topic_arn)
    # and the remediation is still running when a person releases the incident
    machine = aws.stepfunctions.create_state_machine(
        name="remediation",
        definition=json.dumps(
            {"StartAt": "Wait", "States": {"Wait": {"Type": "Wait", "Seconds": 3600, "End": True}}}
        ),
        roleArn="arn:aws:iam::123456789012:role/sfn",
    )["stateMachineArn"]
    execution = aws.stepfunctions.start_execution(stateMachineArn=machine, name=contained_member)
    step_environment.setenv("REMEDIATION_STATE_MACHINE_ARN", machine)
    sqs = aws._session.client("sqs", region_name="us-east-1")
    queue_url = sqs.create_queue(QueueName="alerts")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    aws.sns.subscribe(
        TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn, Attributes={"RawMessageDelivery": "true"}
    )
    app = load_function("release")

    # When `immutable-guard release` invokes the function
    result = app.handler({"incident_id": contained_member}, lambda_context)

    # Then the incident is released and the team gets a "released" alert naming it
    assert result["instance_id"] == golden_asg_member.instance_id
    messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)["Messages"]
    alert = json.loads(messages[0]["Body"])
    assert alert["stage"] == "released"
    assert alert["incident_id"] == contained_member
    # and the remediation was stopped, so it cannot nuke what was given back
    status = aws.stepfunctions.describe_execution(executionArn=execution["executionArn"])["status"]
    assert status == "ABORTED"
    with pytest.raises(InvalidEvent):
        app.handler({"incident": contained_member}, lambda_context)
