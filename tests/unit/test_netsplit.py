"""The splits between network namespaces (drills/netsplit.py) as data and nft scripts, and
how the KRaft drills read a controller's Raft states from its log (drills/kraft.py)."""

from __future__ import annotations

import random

import pytest

from drills import kraft, netsplit
from drills.netsplit import HOST


def test_one_way_blocks_only_the_senders_packets() -> None:
    split = netsplit.one_way([1], [2, 3])
    assert split.blocked == {(1, 2), (1, 3)}
    assert split.receivers() == [2, 3] and split.senders_to(1) == []


def test_two_way_and_isolated_block_both_directions() -> None:
    assert netsplit.two_way([1], [2]).blocked == {(1, 2), (2, 1)}
    alone = netsplit.isolated(2, [HOST, 1, 2, 3])
    assert alone.blocked == {(2, 0), (0, 2), (2, 1), (1, 2), (2, 3), (3, 2)}
    assert alone.senders_to(2) == [HOST, 1, 3] and alone.senders_to(1) == [2]


def test_a_bridge_hears_both_sides_that_cannot_hear_each_other() -> None:
    # {1} and {3} are cut; 2 is the bridge, in touch with both.
    split = netsplit.two_way([1], [3])
    assert (1, 2) not in split.blocked and (3, 2) not in split.blocked
    assert split.receivers() == [1, 3]


def test_each_receiver_drops_on_input_what_its_blocked_senders_send() -> None:
    script = netsplit.ruleset(netsplit.isolated(2, [HOST, 1, 2, 3]), 2)
    assert "table inet ridesaga_netsplit {" in script
    assert "type filter hook input priority filter; policy accept;" in script
    assert "ip saddr { 10.77.0.254, 10.77.0.1, 10.77.0.3 } drop" in script


@pytest.mark.parametrize(
    ("blocked", "problem"),
    [({(1, 1)}, "party 1 cannot be cut from itself"), ({(-1, 2)}, "parties are node numbers or HOST")],
)
def test_a_bad_split_names_its_problem(blocked: set[tuple[int, int]], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        netsplit.Split(frozenset(blocked))


LOG = """21:04:58.101 [kafka-2-raft-io-thread] INFO org.apache.kafka.raft.QuorumState - [RaftManager id=2] Attempting durable transition to ResignedState(localId=2, epoch=3, voters=[1, 2, 3]) from LeaderState(localId=2, epoch=3)
21:04:58.102 [kafka-2-raft-io-thread] INFO org.apache.kafka.raft.QuorumState - [RaftManager id=2] Completed transition to ResignedState(localId=2, epoch=3, voters=[1, 2, 3]) from LeaderState(localId=2, epoch=3)
21:05:00.400 [kafka-2-raft-io-thread] INFO org.apache.kafka.raft.QuorumState - [RaftManager id=2] Completed transition to UnattachedState(epoch=4, leaderId=OptionalInt.empty, votedKey=Optional.empty) from ResignedState(localId=2, epoch=3)
21:05:01.100 [kafka-2-raft-io-thread] INFO org.apache.kafka.raft.QuorumState - [RaftManager id=2] Completed transition to ProspectiveState(epoch=4, leaderId=OptionalInt.empty, retries=1) from UnattachedState(epoch=4)
21:05:02.900 [kafka-2-raft-io-thread] INFO org.apache.kafka.raft.QuorumState - [RaftManager id=2] Completed transition to UnattachedState(epoch=4, leaderId=OptionalInt.empty, votedKey=Optional.empty) from ProspectiveState(epoch=4)
21:05:03.500 [kafka-2-raft-io-thread] INFO org.apache.kafka.raft.QuorumState - [RaftManager id=2] Completed transition to ProspectiveState(epoch=4, leaderId=OptionalInt.empty, retries=1) from UnattachedState(epoch=4)
21:05:09.000 [kafka-2-raft-io-thread] INFO org.apache.kafka.raft.QuorumState - [RaftManager id=2] Completed transition to FollowerState(fetchTimeoutMs=2000, epoch=4, leader=3) from ProspectiveState(epoch=4)
21:05:20.000 [kafka-2-raft-io-thread] INFO org.apache.kafka.raft.QuorumState - [RaftManager id=2] Completed transition to Leader(localVoterNode=VoterNode(voterKey=ReplicaKey(id=2, directoryId=0irTbyEkzSi7VWPj7wxM8Q), listeners=Endpoints(endpoints={ListenerName(CONTROLLER)=10.77.0.2/<unresolved>:19094})), epoch=5, epochStartOffset=285, highWatermark=Optional.empty) from CandidateState(localId=2, epoch=5)
21:05:09.001 [quorum-controller-2-event-handler] INFO org.apache.kafka.controller.QuorumController - [QuorumController id=2] In the new epoch 4, the leader is 3.
"""


def test_a_controllers_raft_states_are_read_from_its_log_in_order() -> None:
    states = kraft.raft_states(LOG)
    assert states == [
        ("Resigned", 3),
        ("Unattached", 4),
        ("Prospective", 4),
        ("Unattached", 4),
        ("Prospective", 4),
        ("Follower", 4),
        ("Leader", 5),  # logged as "Leader(...)", not "LeaderState(...)"
    ]  # "Attempting" lines and other loggers are not transitions
    assert kraft.condensed(states) == [
        "Resigned e3",
        "Unattached e4 x2",
        "Prospective e4 x2",
        "Follower e4",
        "Leader e5",
    ]


def test_the_soak_draws_every_kind_of_split_around_the_leader() -> None:
    rng = random.Random(7)
    drawn = {kraft._random_split(rng, 2, 3)[0].split(":")[0] for _ in range(200)}
    assert drawn == {
        "leader alone",
        "leader and broker in a minority",
        "a follower alone",
        "bridge",
        "one-way",
        "the broker alone",
    }
    kinds = dict(kraft._random_split(random.Random(seed), 2, 3) for seed in range(50))
    alone = kinds["leader alone"]
    assert alone == netsplit.isolated(2, [HOST, 1, 2, 3])
    assert kinds["the broker alone"].senders_to(HOST) == [1, 2, 3]


def test_two_leaders_in_one_epoch_are_told_apart_from_one_leader_per_epoch() -> None:
    one = {1: [("Leader", 3), ("Follower", 4)], 2: [("Follower", 3), ("Leader", 4)]}
    assert kraft._leaders_by_epoch(one) == {3: {1}, 4: {2}}
    two = {**one, 3: [("Leader", 4)]}
    assert kraft._leaders_by_epoch(two)[4] == {2, 3}
