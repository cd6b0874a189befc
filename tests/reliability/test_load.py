"""The Detect path under a mixed, partly concurrent stream (a small version of benchmarks/load_detect.py):
every event is accounted for, and each mutated immutable server gets exactly one incident and one
remediation, however often and however concurrently its mutation is reported."""

from __future__ import annotations

from collections import Counter

from detect_load import MIX, TrafficGenerator, account_for, detect_world

EVENTS = 500


def test_every_event_is_accounted_for_and_each_mutated_server_gets_one_incident() -> None:
    with detect_world() as world:
        # Given 500 CloudTrail-shaped events, the last third delivered by 8 threads at once
        generator = TrafficGenerator(world.immutable_ids, world.mutable_ids, world.mutable_group, seed=11)
        traffic = generator.traffic(EVENTS)
        # When the Detect path processes them
        report = world.run(traffic, threads=8, concurrent_share=0.33)
        accounts = account_for(world, report, generator)

    # Then every event ends as its label says: ignored, alerted, remediated or rejected
    assert accounts["events"] == EVENTS
    assert accounts["mismatches"] == []
    assert sum(accounts["decisions"].values()) == EVENTS
    # every rejected event is parked in the dead-letter queue, none vanishes
    assert accounts["dead_letters"] == accounts["rejected"] == Counter(e.kind for e in traffic)["malformed"]
    # one incident, and one remediation, per mutated immutable server and none for anything else
    assert sorted(accounts["incidents_per_instance"]) == accounts["mutated_instances"]
    assert set(accounts["incidents_per_instance"].values()) == {1}
    assert accounts["executions"] == accounts["incident_ids"]
    # repeats were recognised, not reopened
    repeats = sum(1 for e in traffic if e.kind in ("redelivery", "second_report"))
    outcomes = accounts["instance_outcomes"]
    assert outcomes["opened"] == len(accounts["mutated_instances"])
    assert outcomes.get("duplicate", 0) + outcomes.get("resumed", 0) == repeats + (
        Counter(e.kind for e in traffic)["mutation"] - len(accounts["mutated_instances"])
    )
    assert set(MIX) >= {e.kind for e in traffic}
