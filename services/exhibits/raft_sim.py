"""A deterministic simulation of Raft (Ongaro & Ousterhout, 2014) to drive and watch.

N nodes follow the rules of services/blocks/raft.py; this module only moves their messages and
fires their timers. Time is a tick counter and every random choice (election timeouts, message
delays, the random schedule) comes from one random.Random(seed): the same seed gives the same
run, event by event. The history it keeps is what the safety checkers read
(services/exhibits/raft_checks.py), and a Rules value swaps in a deliberately broken rule so
that they have something to catch."""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from services.blocks import raft
from services.blocks.raft import Entry, Log, Role

ELECTION_TIMEOUT = (10, 20)  # ticks, drawn afresh whenever a node resets its timer
HEARTBEAT = 3  # ticks between a leader's rounds of AppendEntries
DELAY = (1, 3)  # ticks a message spends in the network: unequal delays reorder deliveries
# A command sent to a settled leader commits within a heartbeat and a round trip: the bound on
# PROBE, the command the crash-leader and partition scenarios send once the fault is over.
LIVENESS_BOUND = HEARTBEAT + 2 * DELAY[1]
PROBE = "after-heal"


class Rules(NamedTuple):
    """The two rules a broken variant replaces: vote granting and the leader's commit index."""

    name: str
    grant_vote: Callable[[int, int | None, Log, int, int, int, int], bool]
    commit_index: Callable[[Log, int, int, Iterable[int], int], int]


def _vote_without_log_check(
    current_term: int, voted_for: int | None, log: Log, candidate: int, term: int, last_index: int, last_term: int
) -> bool:
    """Judges every candidate against an empty log: no election restriction."""
    return raft.grant_vote(current_term, voted_for, (), candidate, term, last_index, last_term)


def _commit_by_counting(log: Log, current_term: int, commit_index: int, matches: Iterable[int], size: int) -> int:
    """Commits whatever a majority stores, whatever its term: the mistake Figure 8 shows."""
    return max(commit_index, raft.replicated_index(len(log), matches, size))


CORRECT = Rules("correct", raft.grant_vote, raft.leader_commit_index)
BROKEN_VOTE = Rules("broken-vote", _vote_without_log_check, raft.leader_commit_index)
BROKEN_COMMIT = Rules("broken-commit", raft.grant_vote, _commit_by_counting)
RULES = {rules.name: rules for rules in (CORRECT, BROKEN_VOTE, BROKEN_COMMIT)}


class RequestVote(NamedTuple):
    term: int
    last_log_index: int
    last_log_term: int


class VoteReply(NamedTuple):
    term: int
    granted: bool


class AppendEntries(NamedTuple):
    term: int
    prev_log_index: int
    prev_log_term: int
    entries: Log
    leader_commit: int


class AppendReply(NamedTuple):
    term: int
    success: bool
    last_index: int


Message = RequestVote | VoteReply | AppendEntries | AppendReply


@dataclass
class Node:
    """What a node keeps on disk (term, voted_for, log), then what a crash loses."""

    id: int
    term: int = 0
    voted_for: int | None = None
    log: Log = ()
    up: bool = True
    role: Role = "follower"
    commit_index: int = 0
    timer: int = 0  # the tick it times out at; for a leader, its next heartbeat
    votes: set[int] = field(default_factory=set)
    next_index: dict[int, int] = field(default_factory=dict)
    match_index: dict[int, int] = field(default_factory=dict)


Action = Literal["crash", "restart", "partition", "heal", "submit"]
FAULTS: tuple[Action, ...] = ("crash", "restart", "partition", "heal")


class Step(NamedTuple):
    """What a schedule does at a tick. crash: the nodes given, or the leader if none; restart:
    the nodes given, or every crashed one; partition: the nodes given from the rest; heal;
    submit: the next client command."""

    tick: int
    action: Action
    nodes: tuple[int, ...] = ()


@dataclass(frozen=True)
class Election:
    tick: int
    term: int
    node: int
    log: Log  # the new leader's log when it won


@dataclass(frozen=True)
class Commit:
    tick: int
    node: int
    term: int  # the committing node's term
    index: int
    entry: Entry


@dataclass
class History:
    """Everything a checker needs, in the order it happened."""

    events: list[str] = field(default_factory=list)
    elections: list[Election] = field(default_factory=list)
    logs: list[tuple[int, Log]] = field(default_factory=list)  # (node, log): every version of every log
    commits: list[Commit] = field(default_factory=list)  # each node's, in order, again after a restart
    submitted: dict[str, int] = field(default_factory=dict)  # command: the tick the client sent it
    sent: int = 0
    dropped: int = 0


class Simulation:
    """The nodes, the network between them and the clock. The public methods are what a
    learner or a schedule does; the private ones are Raft's messages and timers."""

    def __init__(self, nodes: int = 5, seed: int = 1, rules: Rules = CORRECT) -> None:
        self.rng = random.Random(seed)
        self.rules = rules
        self.tick = 0
        self.nodes = {i: Node(i, timer=self._timeout()) for i in range(1, nodes + 1)}
        self.groups = [frozenset(self.nodes)]  # who can talk to whom
        self.history = History()
        self._network: list[tuple[int, int, int, int, Message]] = []  # (due, seq, src, dst, message)
        self._waiting: list[tuple[str, int | None]] = []  # commands no leader has taken yet

    def leader(self) -> int | None:
        """The live node that believes it leads, in the highest term: where a client's command goes."""
        leaders = [n for n in self.nodes.values() if n.up and n.role == "leader"]
        return max(leaders, key=lambda n: n.term).id if leaders else None

    def submit(self, command: str, to: int | None = None) -> None:
        """The command goes to the leader, or only ever to `to`, and waits while there is none."""
        self.history.submitted[command] = self.tick
        self._waiting.append((command, to))
        self._offer_commands()

    def crash(self, node: int) -> None:
        if self.nodes[node].up:
            self.nodes[node].up = False
            self._say(f"n{node} crashes")

    def restart(self, node: int) -> None:
        old = self.nodes[node]
        if not old.up:
            self.nodes[node] = Node(node, old.term, old.voted_for, old.log, timer=self._timeout())
            self._say(f"n{node} restarts from disk: term {old.term}, {len(old.log)} entries")

    def partition(self, *groups: Iterable[int]) -> None:
        self.groups = [frozenset(g) for g in groups if g]
        self._say("partition " + " | ".join("{" + ",".join(map(str, sorted(g))) + "}" for g in self.groups))

    def heal(self) -> None:
        self.groups = [frozenset(self.nodes)]
        self._say("heal")

    def run(self, ticks: int) -> None:
        for _ in range(ticks):
            self.step()

    def await_leader(self, other_than: int | None = None, limit: int = 300) -> int:
        for _ in range(limit):
            if (found := self.leader()) is not None and found != other_than:
                return found
            self.step()
        raise RuntimeError(f"no leader within {limit} ticks")

    def follow(self, schedule: Sequence[Step], ticks: int) -> None:
        due = sorted(schedule, key=lambda s: s.tick)
        for _ in range(ticks):
            self.step()
            while due and due[0].tick <= self.tick:
                self._do(due.pop(0))

    def _do(self, step: Step) -> None:
        if step.action == "crash":
            leader = self.leader()
            for node in step.nodes or ([] if leader is None else [leader]):
                self.crash(node)
        elif step.action == "restart":
            for node in step.nodes or list(self.nodes):
                self.restart(node)
        elif step.action == "partition":
            self.partition(step.nodes, set(self.nodes) - set(step.nodes))
        elif step.action == "heal":
            self.heal()
        else:
            self.submit(f"c{len(self.history.submitted) + 1}")

    def step(self) -> None:
        """One tick: waiting commands to the leader, the messages due, then the timers."""
        self.tick += 1
        self._offer_commands()
        while self._network and self._network[0][0] <= self.tick:
            _, _, src, dst, message = heapq.heappop(self._network)
            if self.nodes[dst].up and any(src in g and dst in g for g in self.groups):
                self._receive(self.nodes[dst], src, message)
            else:
                self.history.dropped += 1
        for node in self.nodes.values():
            if node.up and self.tick >= node.timer:
                self._replicate(node) if node.role == "leader" else self._campaign(node)

    def _timeout(self) -> int:
        return self.tick + self.rng.randint(*ELECTION_TIMEOUT)

    def _say(self, text: str) -> None:
        self.history.events.append(f"t={self.tick} {text}")

    def _send(self, src: int, dst: int, message: Message) -> None:
        self.history.sent += 1
        heapq.heappush(self._network, (self.tick + self.rng.randint(*DELAY), self.history.sent, src, dst, message))

    def _set_log(self, node: Node, log: Log) -> None:
        if log != node.log:
            node.log = log
            self.history.logs.append((node.id, log))

    def _offer_commands(self) -> None:
        waiting, self._waiting = self._waiting, []
        for command, to in waiting:
            found = self.leader() if to is None else to
            target = None if found is None else self.nodes[found]
            if target is None or not target.up or target.role != "leader":
                self._waiting.append((command, to))
                continue
            self._set_log(target, (*target.log, Entry(target.term, command)))
            self._say(f"n{target.id} accepts {command} at index {len(target.log)} (term {target.term})")

    def _campaign(self, node: Node) -> None:
        node.term, node.voted_for, node.role = raft.become_candidate(node.term, node.id)
        node.votes = {node.id}
        node.timer = self._timeout()
        self._say(f"n{node.id} times out, becomes candidate for term {node.term}")
        for peer in self.nodes:
            if peer != node.id:
                self._send(node.id, peer, RequestVote(node.term, len(node.log), raft.term_at(node.log, len(node.log))))

    def _replicate(self, node: Node) -> None:
        node.timer = self.tick + HEARTBEAT
        for peer, next_index in node.next_index.items():
            prev = next_index - 1
            entries = node.log[prev:]
            self._send(
                node.id, peer, AppendEntries(node.term, prev, raft.term_at(node.log, prev), entries, node.commit_index)
            )

    def _commit(self, node: Node, index: int) -> None:
        if index > node.commit_index:
            for i in range(node.commit_index + 1, index + 1):
                self.history.commits.append(Commit(self.tick, node.id, node.term, i, node.log[i - 1]))
            node.commit_index = index
            entry = node.log[index - 1]
            self._say(f"n{node.id} commits index {index} ({entry.command}, term {entry.term})")

    def _receive(self, node: Node, src: int, message: Message) -> None:
        was = node.role
        node.term, node.voted_for, node.role = raft.observe_term(
            node.term, node.voted_for, node.role, message.term, isinstance(message, AppendEntries)
        )
        if node.role != was:  # a deposed leader's timer was its next heartbeat: now it waits for a leader
            node.timer = self._timeout()
            self._say(f"n{node.id} steps down from {was}: n{src} is in term {message.term}")
        match message:
            case RequestVote():
                self._vote(node, src, message)
            case VoteReply():
                self._count_vote(node, src, message)
            case AppendEntries():
                self._follow(node, src, message)
            case AppendReply():
                self._advance(node, src, message)

    def _vote(self, node: Node, src: int, m: RequestVote) -> None:
        granted = self.rules.grant_vote(
            node.term, node.voted_for, node.log, src, m.term, m.last_log_index, m.last_log_term
        )
        if granted:
            node.voted_for, node.timer = src, self._timeout()
        self._say(f"n{node.id} {'grants' if granted else 'refuses'} vote to n{src} (term {m.term})")
        self._send(node.id, src, VoteReply(node.term, granted))

    def _count_vote(self, node: Node, src: int, m: VoteReply) -> None:
        if node.role == "candidate" and m.term == node.term and m.granted:
            node.votes.add(src)
            if len(node.votes) >= raft.majority(len(self.nodes)):
                self._lead(node)

    def _advance(self, node: Node, src: int, m: AppendReply) -> None:
        if node.role == "leader" and m.term == node.term:
            node.next_index[src], node.match_index[src] = raft.after_reply(
                node.next_index[src], node.match_index[src], m.success, m.last_index
            )
            matches = node.match_index.values()
            index = self.rules.commit_index(node.log, node.term, node.commit_index, matches, len(self.nodes))
            self._commit(node, index)

    def _lead(self, node: Node) -> None:
        node.role = "leader"
        node.next_index = {peer: len(node.log) + 1 for peer in self.nodes if peer != node.id}
        node.match_index = dict.fromkeys(node.next_index, 0)
        self.history.elections.append(Election(self.tick, node.term, node.id, node.log))
        self._say(f"n{node.id} leader of term {node.term}")
        self._replicate(node)

    def _follow(self, node: Node, src: int, m: AppendEntries) -> None:
        result = raft.append_entries(
            node.term,
            node.log,
            node.commit_index,
            m.term,
            m.prev_log_index,
            m.prev_log_term,
            m.entries,
            m.leader_commit,
        )
        if m.term == node.term:  # from this term's leader: no election needed
            node.timer = self._timeout()
        if result.dropped:
            first, last = len(node.log) - result.dropped + 1, len(node.log)
            where = f"entry {last}" if first == last else f"entries {first}..{last}"
            self._say(f"n{node.id} drops {where}, in conflict with n{src}'s log")
        self._set_log(node, result.log)
        self._commit(node, result.commit_index)
        self._send(node.id, src, AppendReply(node.term, result.success, result.last_index))


def crash_leader(nodes: int = 5, seed: int = 1, rules: Rules = CORRECT) -> Simulation:
    """The leader commits a1..a3, takes a4 and crashes before sending it on; a leader of a
    higher term is elected and commits b1 at a4's index; the old leader restarts from its disk
    and catches up: a4, never committed, is lost, and a1..a3 never are."""
    sim = Simulation(nodes, seed, rules)
    first = sim.await_leader()
    for command in ("a1", "a2", "a3"):
        sim.submit(command)
    sim.run(15)
    sim.submit("a4")
    sim.crash(first)
    sim.await_leader()
    sim.submit("b1")
    sim.run(15)
    sim.restart(first)
    sim.submit(PROBE)
    sim.run(2 * LIVENESS_BOUND)
    return sim


def partition(nodes: int = 5, seed: int = 1, rules: Rules = CORRECT) -> Simulation:
    """The leader ends up in a minority: it keeps accepting commands and commits none, while the
    majority elects a leader of a higher term that does. After the heal the old leader steps
    down on seeing that term and its uncommitted entries are overwritten."""
    sim = Simulation(nodes, seed, rules)
    old = sim.await_leader()
    sim.submit("a1")
    sim.submit("a2")
    sim.run(15)
    minority = {old, *[n for n in sim.nodes if n != old][: (nodes - 1) // 2 - 1]}
    sim.partition(minority, set(sim.nodes) - minority)
    sim.submit("minority-1", to=old)
    sim.await_leader(other_than=old)
    sim.submit("minority-2", to=old)
    sim.submit("majority-1")
    sim.run(15)
    sim.heal()
    sim.submit(PROBE)
    sim.run(2 * LIVENESS_BOUND)
    return sim


def random_schedule(rng: random.Random, nodes: int, ticks: int) -> list[Step]:
    """A command every 5 ticks and a fault every 20, on average; half the crashes hit the leader,
    and a restart brings back every crashed node."""
    steps = []
    for tick in range(1, ticks + 1):
        if rng.random() < 0.2:
            steps.append(Step(tick, "submit"))
        if rng.random() < 0.05:
            action = rng.choice(FAULTS)
            chosen: tuple[int, ...] = ()
            if action == "crash" and rng.random() < 0.5:
                chosen = (rng.randint(1, nodes),)
            elif action == "partition":
                chosen = tuple(sorted(rng.sample(range(1, nodes + 1), rng.randint(1, nodes // 2))))
            steps.append(Step(tick, action, chosen))
    return steps


def random_run(nodes: int = 5, seed: int = 1, rules: Rules = CORRECT, ticks: int = 300) -> Simulation:
    """A random schedule of commands, crashes, restarts, partitions and heals, drawn from the seed
    before the run starts, so the same seed gives the same schedule whatever the rules."""
    sim = Simulation(nodes, seed, rules)
    sim.follow(random_schedule(sim.rng, nodes, ticks), ticks)
    return sim
