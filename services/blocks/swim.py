"""SWIM membership (Das, Gupta and Motivala, 2002): every member learns who else is alive,
with a constant load per member per protocol period, however large the group.

Failure detection. Each period a member pings the next member of a shuffled round-robin
list (so every member is probed within 2N - 1 periods); without an ack within
`ack_timeout_ms` it asks `indirect_probes` others to ping the target for it (ping-req),
which tells a dead member from a lossy link between two live ones. Still nothing by the
period's end: the target becomes *suspect*, not dead. A suspect that says nothing for the
suspicion timeout is declared dead.

Dissemination. A change of state travels as a rumour piggy-backed on the pings and acks
the protocol sends anyway, each rumour about `retransmit_mult * log2(N + 1)` times, so it
reaches every member in O(log N) periods (infection-style, no extra messages).

Incarnations order the rumours about one member: only that member raises its own
incarnation, to refute a suspicion of itself (it gossips alive with a higher number). The
property kept: **a rumour never overrides a newer one**. Alive(i) beats Suspect(j) only if
i > j, Suspect(i) beats Alive(j) if i >= j, Dead(i) or Left(i) beats both if i >= j, and a
dead member comes back only with an incarnation above the one it died with: an old alive
rumour still circulating cannot revive it.

Two refinements from Lifeguard (HashiCorp memberlist) are adopted: the suspicion timeout
grows with log(N) (a larger group needs longer to carry the refutation back), and the
"buddy system": a ping to a suspect carries the suspicion first, so the suspect learns of
it, and refutes, at the next probe instead of by chance. Lifeguard's local health
multiplier (a member that misses acks slows its own timeouts) is not: it guards against
a member's own overload, which the lab does not produce.

No I/O and no clock: the caller passes monotonic milliseconds to `tick` and `receive`, and
sends the returned messages over a real transport (services/driver) or a simulated one
(bench/gossip.py). The random source is injected, so a run can be replayed."""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum


class State(StrEnum):
    ALIVE = "alive"
    SUSPECT = "suspect"
    DEAD = "dead"
    LEFT = "left"


GONE = frozenset({State.DEAD, State.LEFT})


@dataclass(frozen=True)
class Rumour:
    """What one member is, at one incarnation: the unit gossip carries."""

    member: str
    state: State
    incarnation: int


def overrides(new: Rumour, old: Rumour) -> bool:
    """True when `new` is newer knowledge about the member than `old` (SWIM's rules, with
    Left as a voluntary Dead)."""
    if new.member != old.member:
        raise ValueError(f"rumours about {new.member} and {old.member} do not compare")
    if old.state in GONE:
        return new.state == State.ALIVE and new.incarnation > old.incarnation
    match new.state:
        case State.ALIVE:
            return new.incarnation > old.incarnation
        case State.SUSPECT:
            return new.incarnation > old.incarnation or (
                new.incarnation == old.incarnation and old.state == State.ALIVE
            )
        case _:  # DEAD or LEFT
            return new.incarnation >= old.incarnation


# The messages. `rumours` rides on every one of them.
@dataclass(frozen=True)
class Ping:
    sender: str
    seq: int
    rumours: tuple[Rumour, ...] = ()


@dataclass(frozen=True)
class Ack:
    sender: str
    seq: int
    rumours: tuple[Rumour, ...] = ()


@dataclass(frozen=True)
class PingReq:
    """Ask the receiver to ping `target` and pass its ack back under `seq`."""

    sender: str
    seq: int
    target: str
    rumours: tuple[Rumour, ...] = ()


@dataclass(frozen=True)
class Join:
    sender: str
    incarnation: int


@dataclass(frozen=True)
class Sync:
    """The whole view, dead members included: the answer to a Join, and every
    `sync_periods` periods a push-pull exchange with a random known member (`answer`
    asks for the receiver's view back). Sent to dead members too, this is what merges two
    sides of a healed partition: each side learns the other declared it dead, and refutes."""

    sender: str
    members: tuple[Rumour, ...]
    answer: bool = False


Message = Ping | Ack | PingReq | Join | Sync


@dataclass(frozen=True)
class Send:
    to: str
    message: Message


@dataclass(frozen=True)
class Config:
    period_ms: int = 500
    ack_timeout_ms: int = 150
    indirect_probes: int = 3
    suspicion_mult: float = 4.0  # suspicion timeout = mult * max(1, log10 N) * period
    retransmit_mult: int = 4  # each rumour is sent about mult * log2(N + 1) times
    max_piggyback: int = 8
    sync_periods: int = 10  # a push-pull exchange of whole views every this many periods

    def __post_init__(self) -> None:
        if not 0 < self.ack_timeout_ms < self.period_ms:
            raise ValueError(f"ack_timeout_ms must be in (0, period_ms), got {self.ack_timeout_ms}")
        if self.indirect_probes < 0 or self.max_piggyback < 1 or self.retransmit_mult < 1:
            raise ValueError("indirect_probes >= 0, max_piggyback >= 1 and retransmit_mult >= 1 are required")

    def suspicion_ms(self, members: int) -> float:
        return self.suspicion_mult * max(1.0, math.log10(max(members, 1))) * self.period_ms

    def retransmits(self, members: int) -> int:
        return self.retransmit_mult * math.ceil(math.log2(members + 1))


@dataclass
class Member:
    rumour: Rumour
    changed_ms: float

    @property
    def state(self) -> State:
        return self.rumour.state


@dataclass(frozen=True)
class Change:
    """A state change as this member saw it: for logs, traces and `ridectl members`."""

    at_ms: float
    member: str
    before: State | None
    after: State
    incarnation: int


@dataclass
class _Probe:
    target: str
    seq: int
    sent_ms: float
    indirect_sent: bool = False
    acked: bool = False


@dataclass
class Node:
    """One member's side of the protocol."""

    name: str
    config: Config = field(default_factory=Config)
    rng: random.Random = field(default_factory=random.Random)
    incarnation: int = 0
    members: dict[str, Member] = field(default_factory=dict)
    changes: list[Change] = field(default_factory=list)
    left: bool = False
    _queue: dict[str, tuple[Rumour, int]] = field(default_factory=dict)  # member -> (rumour, times sent)
    _order: list[str] = field(default_factory=list)
    _probe: _Probe | None = None
    _next_probe_ms: float = 0.0
    _seq: int = 0
    _relays: dict[int, tuple[str, int]] = field(default_factory=dict)  # our seq -> (asker, its seq)
    _periods: int = 0
    _alive: list[str] | None = None  # cached; dropped on every change of state
    _suspects: dict[str, float] = field(default_factory=dict)  # suspect -> since when

    @classmethod
    def in_group(cls, name: str, group: Iterable[str], config: Config, rng: random.Random) -> Node:
        """A member of a group already formed: it knows every other member, alive at
        incarnation 0, with nothing left to gossip (the simulation starts from here)."""
        node = cls(name, config, rng)
        node.members = {m: Member(Rumour(m, State.ALIVE, 0), 0.0) for m in group if m != name}
        node._next_probe_ms = config.period_ms * rng.random()
        return node

    # -- the view -------------------------------------------------------------------

    def view(self) -> dict[str, Rumour]:
        own = Rumour(self.name, State.LEFT if self.left else State.ALIVE, self.incarnation)
        return {self.name: own, **{m: member.rumour for m, member in self.members.items()}}

    def alive(self) -> list[str]:
        """The members not known to be gone (suspects included), sorted."""
        if self._alive is None:
            self._alive = sorted(m for m, member in self.members.items() if member.state not in GONE)
        return self._alive

    def size(self) -> int:
        return 1 + len(self.alive())

    # -- joining and leaving --------------------------------------------------------

    def join(self, seeds: Iterable[str], now_ms: float) -> list[Send]:
        self._next_probe_ms = now_ms + self.config.period_ms * self.rng.random()
        return [Send(seed, Join(self.name, self.incarnation)) for seed in seeds if seed != self.name]

    def leave(self, now_ms: float) -> list[Send]:
        """Tell a few members, who gossip it on; then stop answering."""
        self.left = True
        bye = (Rumour(self.name, State.LEFT, self.incarnation),)
        return [Send(m, Ping(self.name, self._next_seq(), bye)) for m in self._some(self.alive(), 3)]

    # -- time -----------------------------------------------------------------------

    def tick(self, now_ms: float) -> list[Send]:
        if self.left:
            return []
        out: list[Send] = []
        self._expire_suspicions(now_ms)
        probe = self._probe
        if probe and not probe.acked:
            if not probe.indirect_sent and now_ms >= probe.sent_ms + self.config.ack_timeout_ms:
                probe.indirect_sent = True
                helpers = self._some([m for m in self.alive() if m != probe.target], self.config.indirect_probes)
                out += [Send(h, PingReq(self.name, probe.seq, probe.target, self._gossip(h))) for h in helpers]
            if now_ms >= probe.sent_ms + self.config.period_ms:
                self._suspect(probe.target, now_ms)
                self._probe = None
        if now_ms >= self._next_probe_ms:
            self._next_probe_ms = now_ms + self.config.period_ms
            self._periods += 1
            if self._periods % self.config.sync_periods == 0:
                known = [m for m, member in self.members.items() if member.state != State.LEFT]
                out += [
                    Send(m, Sync(self.name, tuple(self.view().values()), answer=True)) for m in self._some(known, 1)
                ]
            target = self._next_target()
            if target is not None:
                self._probe = _Probe(target, self._next_seq(), now_ms)
                out.append(Send(target, Ping(self.name, self._probe.seq, self._gossip(target))))
        return out

    # -- messages -------------------------------------------------------------------

    def receive(self, message: Message, now_ms: float) -> list[Send]:
        if self.left:
            return []
        match message:
            case Join(sender=sender, incarnation=incarnation):
                self._learn(Rumour(sender, State.ALIVE, incarnation), now_ms)
                return [Send(sender, Sync(self.name, tuple(self.view().values())))]
            case Sync(sender=sender, members=members, answer=answer):
                for rumour in members:
                    self._learn(rumour, now_ms)
                return [Send(sender, Sync(self.name, tuple(self.view().values())))] if answer else []
            case Ping(sender=sender, seq=seq, rumours=rumours):
                self._hear(sender, rumours, now_ms)
                return [Send(sender, Ack(self.name, seq, self._gossip(sender)))]
            case PingReq(sender=sender, seq=seq, target=target, rumours=rumours):
                self._hear(sender, rumours, now_ms)
                ours = self._next_seq()
                self._relays[ours] = (sender, seq)
                return [Send(target, Ping(self.name, ours, self._gossip(target)))]
            case Ack(sender=sender, seq=seq, rumours=rumours):
                self._hear(sender, rumours, now_ms)
                if self._probe and self._probe.seq == seq:
                    self._probe.acked = True
                relay = self._relays.pop(seq, None)
                if relay is not None:
                    asker, its_seq = relay
                    return [Send(asker, Ack(self.name, its_seq, self._gossip(asker)))]
                return []
        raise TypeError(f"not a SWIM message: {message!r}")

    # -- the rules ------------------------------------------------------------------

    def _hear(self, sender: str, rumours: tuple[Rumour, ...], now_ms: float) -> None:
        for rumour in rumours:
            self._learn(rumour, now_ms)
        known = self.members.get(sender)
        if known is None:
            # A first message from someone we never heard of: alive at the lowest incarnation,
            # which any rumour about them overrides.
            self._learn(Rumour(sender, State.ALIVE, 0), now_ms)

    def _learn(self, rumour: Rumour, now_ms: float) -> None:
        if rumour.member == self.name:
            if rumour.state != State.ALIVE and rumour.incarnation >= self.incarnation and not self.left:
                # Refute: only this member raises its own incarnation.
                self.incarnation = rumour.incarnation + 1
                self._spread(Rumour(self.name, State.ALIVE, self.incarnation))
            return
        known = self.members.get(rumour.member)
        if known is not None and not overrides(rumour, known.rumour):
            return
        before = known.state if known else None
        self.members[rumour.member] = Member(rumour, now_ms)
        if rumour.state == State.SUSPECT:
            self._suspects[rumour.member] = now_ms  # a newer suspicion restarts the timer
        else:
            self._suspects.pop(rumour.member, None)
        if before != rumour.state:
            self._alive = None
            self.changes.append(Change(now_ms, rumour.member, before, rumour.state, rumour.incarnation))
            if rumour.state == State.ALIVE and rumour.member not in self._order:
                self._order.insert(self.rng.randrange(len(self._order) + 1), rumour.member)
        self._spread(rumour)

    def _suspect(self, target: str, now_ms: float) -> None:
        known = self.members.get(target)
        if known is not None and known.state == State.ALIVE:
            self._learn(Rumour(target, State.SUSPECT, known.rumour.incarnation), now_ms)

    def _expire_suspicions(self, now_ms: float) -> None:
        timeout = self.config.suspicion_ms(self.size())
        for name in [m for m, since in self._suspects.items() if now_ms - since >= timeout]:
            self._learn(Rumour(name, State.DEAD, self.members[name].rumour.incarnation), now_ms)

    # -- dissemination --------------------------------------------------------------

    def _spread(self, rumour: Rumour) -> None:
        self._queue[rumour.member] = (rumour, 0)

    def _gossip(self, to: str) -> tuple[Rumour, ...]:
        """The least-sent rumours, the one about the receiver first (Lifeguard's buddy
        system: a suspect hears of its suspicion from the member probing it)."""
        limit = self.config.retransmits(self.size())
        order = sorted(self._queue.items(), key=lambda item: (item[0] != to, item[1][1]))
        picked = []
        for member, (rumour, sent) in order[: self.config.max_piggyback]:
            picked.append(rumour)
            if sent + 1 >= limit:
                del self._queue[member]
            else:
                self._queue[member] = (rumour, sent + 1)
        return tuple(picked)

    # -- helpers --------------------------------------------------------------------

    def _next_target(self) -> str | None:
        """Round-robin over a shuffled list, reshuffled each pass (SWIM's time-bounded
        completeness); a member that comes alive is inserted at a random place (_learn)."""
        alive = set(self.alive())
        self._order = [m for m in self._order if m in alive]
        if not self._order:
            self._order = sorted(alive)
            self.rng.shuffle(self._order)
        return self._order.pop(0) if self._order else None

    def _some(self, names: list[str], k: int) -> list[str]:
        return self.rng.sample(names, min(k, len(names)))

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq


def agreed(nodes: Iterable[Node]) -> bool:
    """True when every live node sees the same members in the same states."""
    views = [{m: r.state for m, r in n.view().items() if r.state not in GONE} for n in nodes if not n.left]
    return all(v == views[0] for v in views)
