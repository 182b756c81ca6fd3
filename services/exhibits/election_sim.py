"""Bully and ring leader election as deterministic simulations, for contrast with ZooKeeper.

Both elect the highest live id and tell every live process, provided no process fails and
the network does not split during the run. With n members, crashed ones included, bully
(Garcia-Molina, 1982) costs at most n^2 - 1 messages (the lowest id starts, nobody crashed)
and n - 1 when the highest live id starts; ring costs 2n, whoever starts.

A run is a FIFO message queue drained one delivery at a time; each delivery may send more
messages. Every message sent is counted, including one to a crashed process, which is lost.
No I/O, threads, clocks or randomness: the same input gives the same run."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

ELECTION = "ELECTION"
OK = "OK"
COORDINATOR = "COORDINATOR"


@dataclass(frozen=True)
class ElectionResult:
    leader: int
    messages: dict[str, int]  # sent, by type
    coordinator_of: dict[int, int]  # whom each live process takes as leader after the run
    events: tuple[str, ...]  # deliveries and timeouts, in order

    @property
    def total(self) -> int:
        return sum(self.messages.values())


@dataclass(frozen=True)
class _Message:
    sender: int
    receiver: int
    kind: str
    ids: tuple[int, ...] = ()  # ring: the ids collected, or the leader announced

    def __str__(self) -> str:
        carried = f" {list(self.ids)}" if self.ids else ""
        return f"{self.sender} -> {self.receiver} {self.kind}{carried}"


class _Network:
    def __init__(self, crashed: frozenset[int], kinds: Iterable[str]) -> None:
        self.crashed = crashed
        self.sent = dict.fromkeys(kinds, 0)
        self.events: list[str] = []
        self._queue: deque[_Message] = deque()

    def send(self, message: _Message) -> None:
        self.sent[message.kind] += 1
        self._queue.append(message)

    def deliveries(self) -> Iterator[_Message]:
        """Deliver in FIFO order until the queue is empty, including messages sent meanwhile."""
        while self._queue:
            message = self._queue.popleft()
            if message.receiver in self.crashed:
                self.events.append(f"{message} (lost: {message.receiver} is down)")
                continue
            self.events.append(str(message))
            yield message

    def result(self, leader: int, coordinator_of: dict[int, int]) -> ElectionResult:
        return ElectionResult(leader, dict(self.sent), dict(sorted(coordinator_of.items())), tuple(self.events))


def _checked(ids: Iterable[int], crashed: Iterable[int], initiator: int) -> tuple[list[int], frozenset[int]]:
    group = sorted(ids)
    down = frozenset(crashed)
    if duplicates := sorted({p for p in group if group.count(p) > 1}):
        raise ValueError(f"duplicate process ids: {duplicates}")
    if unknown := sorted(down.difference(group)):
        raise ValueError(f"crashed ids that are not processes: {unknown}")
    if initiator not in group:
        raise ValueError(f"initiator {initiator} is not one of the processes {group}")
    if down.issuperset(group):
        raise ValueError("every process is crashed: there is no one to elect")
    if initiator in down:
        raise ValueError(f"initiator {initiator} is crashed: only a live process can start an election")
    return group, down


def bully(ids: Iterable[int], crashed: Iterable[int], initiator: int) -> ElectionResult:
    """`initiator` noticed the coordinator is gone and starts an election."""
    group, down = _checked(ids, crashed, initiator)
    net = _Network(down, (ELECTION, OK, COORDINATOR))
    electing: list[int] = []
    answered: set[int] = set()

    def hold_election(process: int) -> None:
        electing.append(process)
        for higher in group:
            if higher > process:
                net.send(_Message(process, higher, ELECTION))

    hold_election(initiator)
    for message in net.deliveries():
        if message.kind == ELECTION:
            net.send(_Message(message.receiver, message.sender, OK))
            if message.receiver not in electing:
                hold_election(message.receiver)
        else:
            answered.add(message.receiver)
    # The queue is empty, so every answer that will ever come has come: this is the timeout.
    # Exactly one caller heard no OK, the highest live id; every other one asked it.
    [leader] = [p for p in electing if p not in answered]
    net.events.append(f"timeout: {leader} heard no OK and becomes coordinator")
    coordinator_of = {leader: leader}
    for lower in group:
        if lower < leader:
            net.send(_Message(leader, lower, COORDINATOR))
    for message in net.deliveries():
        coordinator_of[message.receiver] = message.sender
    return net.result(leader, coordinator_of)


def ring(ids: Iterable[int], crashed: Iterable[int], initiator: int) -> ElectionResult:
    """`initiator` noticed the coordinator is gone and sends ELECTION around the ring.

    The ring is the ids in ascending order, wrapping around. A send to a crashed successor
    fails and the sender tries the next one; the failed attempt counts as a message, so each
    round costs one message per member, live or not, and the run costs 2n."""
    group, down = _checked(ids, crashed, initiator)
    net = _Network(down, (ELECTION, COORDINATOR))
    coordinator_of: dict[int, int] = {}

    def forward(sender: int, kind: str, carried: tuple[int, ...]) -> None:
        start = group.index(sender)
        for step in range(1, len(group) + 1):
            successor = group[(start + step) % len(group)]
            net.send(_Message(sender, successor, kind, carried))
            if successor not in down:
                return

    forward(initiator, ELECTION, (initiator,))
    for message in net.deliveries():
        here = message.receiver
        if message.kind == COORDINATOR:
            coordinator_of[here] = message.ids[0]
            if here != initiator:
                forward(here, COORDINATOR, message.ids)
        elif here == initiator:  # the ELECTION came back round: it has every live id
            forward(here, COORDINATOR, (max(message.ids),))
        else:
            forward(here, ELECTION, (*message.ids, here))
    return net.result(coordinator_of[initiator], coordinator_of)
