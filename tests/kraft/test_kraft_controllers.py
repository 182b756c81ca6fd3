"""With `make up KAFKA_CONTROLLERS=3` Kafka's metadata is kept by a KRaft quorum of three
controller voters with one leader, and the broker follows it as an observer;
`ridectl quorum status --json` shows it beside ZooKeeper's ensemble."""

from __future__ import annotations

import json

from tests.support import ridectl, status


def test_quorum_status_shows_three_voters_one_leader_and_zookeepers_leader() -> None:
    assert {"kafka-controller-1", "kafka-controller-2", "kafka-controller-3", "kafka"} <= set(status())
    found = json.loads(ridectl("quorum", "status", "--json").stdout)
    kraft = found["kraft"]
    assert sorted(v["node_id"] for v in kraft["voters"]) == [1, 2, 3]
    leaders = [v["node_id"] for v in kraft["voters"] if v["role"] == "Leader"]
    assert leaders == [kraft["leader_id"]] and kraft["leader_epoch"] >= 1
    assert [o["node_id"] for o in kraft["observers"]] == [4]  # the broker
    zookeeper = found["zookeeper"]
    assert zookeeper["leader"] in ("zookeeper-1", "zookeeper-2", "zookeeper-3") and zookeeper["epoch"] >= 1
    assert sorted(n["mode"] for n in zookeeper["nodes"]) == ["follower", "follower", "leader"]
