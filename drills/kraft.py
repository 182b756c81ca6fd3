"""Faults on Kafka's KRaft controller quorum (a Raft) while rides are in flight, each
with the quorum's own evidence from Kafka's metadata-quorum tool: who led, in which epoch,
how far each side committed. With KAFKA_CONTROLLERS=3 the three voters run in network
namespaces of their own (deploy/local/netns.py) and the broker beside them, in the host's."""

from __future__ import annotations

import itertools
import os
import random
import re
import signal
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import psycopg

from deploy.local import consensus, paths
from deploy.local.consensus import KRaftView
from deploy.local.errors import StackError
from drills import netsplit
from drills.engine import STEPS, TRIP_DB, Drill, DrillError

# Followers notice a silent leader after controller.quorum.fetch.timeout.ms (2 s), then
# vote after a random election timeout of up to 1 s; the bound leaves room for the tool.
ELECTION_BOUND_SECONDS = 30.0
MINORITY_HOLD_SECONDS = 10.0  # the cut outlasts the new election by this much: the minority is seen failing to commit
POLL_SECONDS = 0.5


def _view(controllers: int, asking: tuple[int, ...] = (), inside: int | None = None) -> KRaftView | None:
    try:
        return consensus.kraft_view(controllers, asking, inside)
    except StackError:
        return None  # no controller answered


def _until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(POLL_SECONDS)
    raise DrillError(f"no {what} within {timeout:.0f}s")


def raft_states(log: str) -> list[tuple[str, int]]:
    """The Raft states a controller entered, in order, with their epochs, from the lines
    its RaftManager logs ("Completed transition to ProspectiveState(epoch=2, ...) from ...",
    and for a leader "Completed transition to Leader(localVoterNode=..., epoch=5, ...)")."""
    found = []
    for line in log.splitlines():
        _, marker, rest = line.partition("Completed transition to ")
        if not marker or "(" not in rest:
            continue
        name, _, detail = rest.partition("(")  # "ProspectiveState(...", but "Leader(..."
        state = name.removesuffix("State")
        epoch = re.search(r"(?<![A-Za-z])epoch=(\d+)", detail.split(" from ", 1)[0])
        found.append((state, int(epoch.group(1)) if epoch else -1))
    return found


def condensed(states: list[tuple[str, int]]) -> list[str]:
    """Each state and epoch with how often it was entered, in order of first entry, for a
    report: `["Resigned e3", "Unattached e4 x12", "Prospective e4 x12"]`."""
    counts = Counter(states)
    return [f"{s} e{e}" + (f" x{counts[(s, e)]}" if counts[(s, e)] > 1 else "") for s, e in dict.fromkeys(states)]


def _completed_between(since: float, until: float) -> int:
    with psycopg.connect(TRIP_DB, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM rides WHERE state = 'COMPLETED'"
            " AND updated_at >= to_timestamp(%s) AND updated_at < to_timestamp(%s)",
            (since, until),
        ).fetchone()
    return int(row[0]) if row else 0


def _controllers(d: Drill) -> int:
    return len([name for name in d.components if name.startswith("kafka-controller-")]) or 1


def _leader(d: Drill, controllers: int) -> KRaftView:
    d.wait_for_step(random.Random(d.seed).choice(STEPS))
    found = _view(controllers)
    if found is None or found.leader_id < 0:
        raise DrillError(f"{d.name}: the KRaft quorum has no leader ({found})")
    return found


def _higher_epoch(controllers: int, epoch: int, asking: tuple[int, ...] = ()) -> Callable[[], KRaftView | None]:
    def found() -> KRaftView | None:
        view = _view(controllers, asking)
        return view if view is not None and view.leader_id >= 0 and view.leader_epoch > epoch else None

    return found


def kill_leader(d: Drill) -> dict[str, Any]:
    """SIGKILL the leader of Kafka's KRaft controller quorum. With KAFKA_CONTROLLERS=3 the
    two other voters elect a new leader in a higher epoch while the broker, a process of
    its own, keeps serving the saga's transactions; with one combined node the only
    controller (and the broker with it) dies and leads again in a new epoch once it is back."""
    controllers = _controllers(d)
    before = _leader(d, controllers)
    name = f"kafka-controller-{before.leader_id}" if controllers > 1 else "kafka"
    old_pid = d.pid(name)
    wall = time.time()
    with d.window("kill", name, leader_id=before.leader_id, leader_epoch=before.leader_epoch, voters=controllers):
        killed = time.monotonic()
        os.kill(old_pid, signal.SIGKILL)
        after = _until(
            _higher_epoch(controllers, before.leader_epoch), ELECTION_BOUND_SECONDS, "leader in a higher epoch"
        )
        elected = round(time.monotonic() - killed, 2)
        d.wait_healthy(name, old_pid=old_pid)
    quorum = consensus.kraft(controllers)
    return {
        "kafka_controllers": controllers,
        "old_leader": {"id": before.leader_id, "epoch": before.leader_epoch},
        "new_leader": {"id": after.leader_id, "epoch": after.leader_epoch},
        "seconds_to_new_leader": elected,
        "rides_completed_from_the_kill_to_the_new_leader": _completed_between(wall, wall + elected),
        "voters_after": [vars(v) for v in quorum.voters],
        "checks": {
            "the leader epoch rose": after.leader_epoch > before.leader_epoch,
            f"a new leader within {ELECTION_BOUND_SECONDS:.0f} s": elected <= ELECTION_BOUND_SECONDS,
            "every voter is back in the quorum": len(quorum.voters) == controllers,
        },
    }


def partition_leader(d: Drill) -> dict[str, Any]:
    """Cut the KRaft leader off, both ways, from the other two voters and the broker
    (KAFKA_CONTROLLERS=3): a minority of one. The majority elects a new leader in a higher
    epoch and goes on committing; the old leader, as its own log tells, gives up leading
    once no follower has fetched from it for a while (KRaft's check-quorum) and, stuck in
    pre-vote, never leads again nor drives the epoch up; after the heal it follows the
    new leader."""
    controllers = _controllers(d)
    if controllers < 3:
        raise DrillError(f"{d.name}: needs the KRaft quorum of `make up KAFKA_CONTROLLERS=3`")
    before = _leader(d, controllers)
    old = before.leader_id
    majority = tuple(n for n in range(1, controllers + 1) if n != old)
    split = netsplit.isolated(old, [netsplit.HOST, *range(1, controllers + 1)])
    log = paths.RUN / "logs" / f"kafka-controller-{old}.log"
    wall = time.time()
    with d.window("partition", f"kafka-controller-{old}", leader_id=old, leader_epoch=before.leader_epoch):
        offset = log.stat().st_size
        netsplit.apply(split)
        try:
            cut = time.monotonic()
            after = _until(
                _higher_epoch(controllers, before.leader_epoch, majority), ELECTION_BOUND_SECONDS, "majority leader"
            )
            elected = round(time.monotonic() - cut, 2)
            time.sleep(MINORITY_HOLD_SECONDS)  # the fault's length, as the schedule says, not a wait for anything
            majority_at_end = _view(controllers, majority)
        finally:
            netsplit.clear()
        with log.open("rb") as f:
            f.seek(offset)
            minority = raft_states(f.read().decode(errors="replace"))
    rejoined = _until(
        lambda: (v := _view(controllers, (old,))) and v.leader_epoch >= after.leader_epoch and v.leader_id != old and v,
        ELECTION_BOUND_SECONDS,
        f"kafka-controller-{old} following the new epoch",
    )
    quorum = consensus.kraft(controllers)
    old_role = next((v.role for v in quorum.voters if v.node_id == old), "missing")
    while_cut = minority[: next((i for i, (s, _) in enumerate(minority) if s == "Follower"), len(minority))]
    return {
        "old_leader": {"id": old, "epoch": before.leader_epoch, "high_watermark": before.high_watermark},
        "new_leader": {"id": after.leader_id, "epoch": after.leader_epoch, "high_watermark": after.high_watermark},
        "seconds_to_majority_leader": elected,
        "majority_high_watermark_at_heal": majority_at_end.high_watermark if majority_at_end else None,
        "old_leader_states_while_cut_off": condensed(while_cut),
        "old_leader_after_heal": {"follows": rejoined.leader_id, "epoch": rejoined.leader_epoch, "role": old_role},
        "rides_completed_during_the_cut": _completed_between(wall, time.time()),
        "checks": {
            "the majority elected a leader in a higher epoch": after.leader_epoch > before.leader_epoch,
            "the old leader gave up leading while cut off": bool(while_cut) and while_cut[0][0] == "Resigned",
            "the old leader never led again while cut off": all(s != "Leader" for s, _ in while_cut),
            "the majority went on committing": majority_at_end is not None
            and majority_at_end.high_watermark > after.high_watermark,
            "after the heal the old leader follows the new epoch": old_role == "Follower",
        },
    }


SOAK_ROUNDS = 6
SOAK_CUT_SECONDS = (4.0, 8.0)  # each cut lasts a random time in this range, then a heal of HEAL_SECONDS
SOAK_HEAL_SECONDS = (3.0, 6.0)


def _random_split(rng: random.Random, leader: int, controllers: int) -> tuple[str, netsplit.Split]:
    """One of the partitions Jepsen's nemeses make, around the current leader."""
    everyone = [netsplit.HOST, *range(1, controllers + 1)]
    a, b = [n for n in range(1, controllers + 1) if n != leader][:2]
    kinds = {
        "leader alone": netsplit.isolated(leader, everyone),
        "leader and broker in a minority": netsplit.two_way([leader, netsplit.HOST], [a, b]),
        "a follower alone": netsplit.isolated(rng.choice([a, b]), everyone),
        f"bridge: {b} hears {leader} and {a}, who cannot hear each other": netsplit.two_way([leader], [a]),
        "one-way: the leader's packets lost": netsplit.one_way([leader], [a, b, netsplit.HOST]),
        "the broker alone": netsplit.isolated(netsplit.HOST, everyone),
    }
    kind = rng.choice(sorted(kinds))
    return kind, kinds[kind]


def _leaders_by_epoch(states: dict[int, list[tuple[str, int]]]) -> dict[int, set[int]]:
    found: dict[int, set[int]] = {}
    for node, entered in states.items():
        for state, epoch in entered:
            if state == "Leader":
                found.setdefault(epoch, set()).add(node)
    return found


def partition_soak(d: Drill) -> dict[str, Any]:
    """A Jepsen-style random schedule (seeded) of partitions of the KRaft quorum
    (KAFKA_CONTROLLERS=3) while rides go on: the leader alone, the leader with the broker in
    a minority, a follower alone, a bridge, a one-way cut, the broker alone; each cut a few
    seconds, then healed. Judged from the controllers' own logs: at most one leader per
    epoch, and no controller's epoch ever went back; and within 30 s of the last heal one
    leader with every voter following it (else the drill fails)."""
    controllers = _controllers(d)
    if controllers < 3:
        raise DrillError(f"{d.name}: needs the KRaft quorum of `make up KAFKA_CONTROLLERS=3`")
    rng = random.Random(d.seed)
    logs = {n: paths.RUN / "logs" / f"kafka-controller-{n}.log" for n in range(1, controllers + 1)}
    offsets = {n: log.stat().st_size for n, log in logs.items()}
    d.wait_for_step(rng.choice(STEPS))
    schedule = []
    leader = _leader(d, controllers).leader_id
    for round_number in range(SOAK_ROUNDS):
        kind, split = _random_split(rng, leader, controllers)
        with d.window("partition", kind, round=round_number, leader_before=leader):
            netsplit.apply(split)
            try:
                time.sleep(rng.uniform(*SOAK_CUT_SECONDS))  # the schedule's cut length
            finally:
                netsplit.clear()
        time.sleep(rng.uniform(*SOAK_HEAL_SECONDS))  # the schedule's heal length
        now = _view(controllers)
        schedule.append({"split": kind, "leader_before": leader, "leader_after": now and now.leader_id})
        leader = now.leader_id if now is not None and now.leader_id > 0 else leader
    settled = _until(
        lambda: (
            (q := _quorum(controllers)) and sorted(v.role for v in q.voters) == ["Follower", "Follower", "Leader"] and q
        ),
        ELECTION_BOUND_SECONDS,
        "one leader with every voter following after the last heal",
    )
    states = {}
    for node, log in logs.items():
        with log.open("rb") as f:
            f.seek(offsets[node])
            states[node] = raft_states(f.read().decode(errors="replace"))
    leaders = _leaders_by_epoch(states)
    rising = {node: all(x[1] <= y[1] for x, y in itertools.pairwise(seen)) for node, seen in states.items()}
    return {
        "schedule": schedule,
        "leaders_by_epoch": {epoch: sorted(nodes) for epoch, nodes in sorted(leaders.items())},
        "final": {"leader": settled.leader_id, "epoch": settled.leader_epoch},
        "checks": {
            "at most one leader per epoch": all(len(nodes) == 1 for nodes in leaders.values()),
            "no controller's epoch went back": all(rising.values()),
        },
    }


def _quorum(controllers: int) -> consensus.KRaftQuorum | None:
    try:
        return consensus.kraft(controllers)
    except StackError:
        return None
