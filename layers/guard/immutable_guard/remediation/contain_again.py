"""Containment tampered with: someone other than the guard changed a server the guard holds in quarantine
(a rule added to the isolation group, an interface moved back to open groups, an interface or an instance
profile attached), which undoes the containment while the server waits for its replacement or a person.
Detect asks Contain, asynchronously, to contain it again (triage.Triage, Reason.CONTAINMENT_TAMPERED).

Only the containment is done again, with the code of the first quarantine: both isolation groups repaired
(rules back to what their role says) and every owned interface back on the isolation group by the two-step
swap, then verified; the rule the change added revoked; an instance profile attached since detached;
termination protection and a shutdown that stops set again while the evidence is still being taken (after
that, Nuke turns protection off to terminate: setting it again would race it). The prior state stays what
the first containment recorded (so `release` still restores the server as it was before the attack), and
load balancers and the Auto Scaling group are the workflow's. Nothing is done once the incident has ended
(its lock is released or expired): the server was released or nuked meanwhile.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from immutable_guard.errors import InvalidEvent
from immutable_guard.remediation.evidence import STAGE_EVIDENCE_COMPLETE
from immutable_guard.remediation.offending_rules import offending_rules, revoke_offending_rules
from immutable_guard.remediation.quarantine import (
    CONTAIN_AGAIN,
    ContainRequest,
    detach_instance_profile,
    isolate_network_interfaces,
    observe_instance,
    protect_evidence,
    verify_isolated,
)

if TYPE_CHECKING:
    from immutable_guard.clients import Clients
    from immutable_guard.ledger import IncidentLedger

# The incident's timeline stage (with details) each time it is done.
STAGE_CONTAINED_AGAIN: Final = "contained_again"


def contain_again_request(event: object) -> ContainRequest | None:
    """The request in ``event``, or None when it is not one (then it is a step of the workflow or another
    request). Raises InvalidEvent for a request that is malformed."""
    if not isinstance(event, Mapping) or CONTAIN_AGAIN not in event:
        return None
    if set(event) != {CONTAIN_AGAIN} or not isinstance(event[CONTAIN_AGAIN], Mapping):
        raise InvalidEvent(f"malformed {CONTAIN_AGAIN} request: {str(event)[:300]}")
    try:
        return ContainRequest.model_validate(event[CONTAIN_AGAIN])
    except ValueError as exc:
        raise InvalidEvent(f"malformed {CONTAIN_AGAIN} request: {exc}") from exc


def contain_again(
    clients: Clients, ledger: IncidentLedger, incident_id: str, instance_id: str, finding: Mapping[str, Any]
) -> dict[str, Any]:
    """Put a quarantined server back into containment; safe to run again (and concurrently: every
    interface ends on the isolation group, or the run fails and says which).

    Parameters
    ----------
    clients:
        Clients in the incident's account and region.
    ledger:
        The incident ledger (the incident's lock is read where the incident says the instance is).
    incident_id, instance_id:
        The open incident and its instance.
    finding:
        The tampering change (``Finding.model_dump(mode="json")``): a port_opened finding names the rule
        to revoke.

    Raises
    ------
    InstanceNotFound
        The instance does not exist or is terminating.
    IsolationFailed, AwsCallFailed
        As the first quarantine raises them.
    """
    incident = ledger.get(incident_id)
    holder = ledger.at(incident.account, incident.region).open_incident_for(instance_id)
    if holder != incident_id:
        return {
            "instance_id": instance_id,
            "skipped": f"incident {incident_id} no longer holds {instance_id} (now: {holder or 'none'})",
            "actions": [],
        }
    ec2 = clients.ec2
    observed = observe_instance(clients, instance_id)
    actions: list[str] = []
    isolation_by_vpc = isolate_network_interfaces(ec2, observed, actions)
    verify_isolated(ec2, instance_id, isolation_by_vpc)
    revoke_offending_rules(ec2, offending_rules(finding), actions)
    detach_instance_profile(ec2, observed, actions)
    if STAGE_EVIDENCE_COMPLETE not in incident.timeline:
        # Termination protection and a shutdown that stops, again, while the evidence is still being
        # taken (someone may have turned them off first). Not after: Nuke turns protection off to terminate.
        protect_evidence(ec2, incident_id, observed, actions)
    details = {"event_id": finding.get("event_id"), "actions": actions}
    ledger.record_stage(incident_id, STAGE_CONTAINED_AGAIN, details=details)
    return {"instance_id": instance_id, "isolation_group_ids": sorted(isolation_by_vpc.values()), **details}
