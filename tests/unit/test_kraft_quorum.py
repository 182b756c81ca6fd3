"""The KRaft controller quorum of `make up KAFKA_CONTROLLERS=3` as configured (three
controller-only voters and a broker of their own, each with its own storage) and as
`ridectl quorum status` reads it from Kafka's own metadata-quorum tool."""

from __future__ import annotations

from pathlib import Path

from deploy.local import components, consensus
from deploy.local.files import kafka_nodes, kafka_properties
from deploy.local.stack import Stack


def _properties(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def test_three_controllers_are_voters_and_the_broker_is_not() -> None:
    nodes = kafka_nodes(Path("/run"), 3)
    assert [(n.name, n.node_id, n.roles) for n in nodes] == [
        ("kafka-controller-1", 1, "controller"),
        ("kafka-controller-2", 2, "controller"),
        ("kafka-controller-3", 3, "controller"),
        ("kafka", 4, "broker"),
    ]
    configs = [_properties(kafka_properties(n, 3)) for n in nodes]
    # Each controller at the address of its own network namespace (deploy/local/netns.py).
    voters = "1@10.77.0.1:19093,2@10.77.0.2:19094,3@10.77.0.3:19095"
    assert {c["controller.quorum.voters"] for c in configs} == {voters}
    assert [c["listeners"] for c in configs] == [
        "CONTROLLER://10.77.0.1:19093",
        "CONTROLLER://10.77.0.2:19094",
        "CONTROLLER://10.77.0.3:19095",
        "PLAINTEXT://127.0.0.1:19092",
    ]
    assert len({c["log.dirs"] for c in configs}) == 4  # storage of its own each
    assert "transaction.state.log.replication.factor" not in configs[0]  # a broker setting


def test_one_controller_is_the_combined_node_of_the_default_stack(tmp_path: Path) -> None:
    (node,) = kafka_nodes(tmp_path, 1)
    config = _properties(kafka_properties(node, 1))
    assert config["process.roles"] == "broker,controller"
    assert config["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert config["log.dirs"] == str(tmp_path / "kafka" / "data")
    kafkas = [c for c in components.all_components(tmp_path, Stack(kafka_controllers=3)) if c.name.startswith("kafka")]
    assert [c.name for c in kafkas] == ["kafka-controller-1", "kafka-controller-2", "kafka-controller-3", "kafka"]
    assert [c.command[:4] for c in kafkas[:3]] == [["ip", "netns", "exec", f"ridesaga-kraft-{i}"] for i in (1, 2, 3)]
    assert kafkas[3].command[0] != "ip"  # the broker stays in the host's namespace, on loopback


# What Kafka 4.4's MetadataQuorumCommand printed for a three-controller stack.
STATUS = """ClusterId:              Nb8KNOIUQYi5I8kNe2PSlA
LeaderId:               2
LeaderEpoch:            2
HighWatermark:          308
MaxFollowerLag:         0
MaxFollowerLagTimeMs:   0
CurrentVoters:          [{"id": 1, "endpoints": ["CONTROLLER://127.0.0.1:19093"]}]
CurrentObservers:       [{"id": 4, "directoryId": "ry3RUx9IrJ3KR58ERfFlkQ"}]
"""
REPLICATION = """NodeId\tDirectoryId           \tLogEndOffset\tLag\tLastFetchTimestamp\tLastCaughtUpTimestamp\tStatus  \t
2     \tAAAAAAAAAAAAAAAAAAAAAA\t308         \t0  \t1796417744246     \t1796417744246        \tLeader  \t
1     \tAAAAAAAAAAAAAAAAAAAAAA\t301         \t7  \t1796417744021     \t1796417744021        \tFollower\t
4     \try3RUx9IrJ3KR58ERfFlkQ\t308         \t0  \t1796417744012     \t1796417744012        \tObserver\t
"""


def test_the_tools_answer_is_read_field_by_field() -> None:
    status = consensus.parse_status(STATUS)
    assert (status["LeaderId"], status["LeaderEpoch"], status["HighWatermark"]) == ("2", "2", "308")
    assert status["CurrentVoters"].startswith('[{"id": 1')  # a value with colons in it stays whole
    assert consensus.parse_replication(REPLICATION) == [
        consensus.Voter(2, "Leader", 308, 0),
        consensus.Voter(1, "Follower", 301, 7),
        consensus.Voter(4, "Observer", 308, 0),
    ]
    assert consensus.parse_replication("Error: no controller answered") == []


def test_zookeepers_epoch_is_the_high_half_of_the_leaders_zxid() -> None:
    nodes = [
        consensus.ZooKeeperNode("zookeeper-1", 12181, "follower", 0x400000006),
        consensus.ZooKeeperNode("zookeeper-2", 12182, "leader", 0x500000001),
        consensus.ZooKeeperNode("zookeeper-3", 12183, "down", 0),
    ]
    found = consensus.zookeeper_json(nodes)
    assert found["leader"] == "zookeeper-2" and found["epoch"] == 5
    assert [n["zxid"] for n in found["nodes"]] == ["0x400000006", "0x500000001", "0x0"]
    # Two nodes claiming to lead (a split seen from outside) name no leader.
    assert consensus.zookeeper_json([*nodes[:2], consensus.ZooKeeperNode("z", 1, "leader", 0)])["leader"] is None
