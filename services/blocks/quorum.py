"""Dynamo-style replication rules (DeCandia et al., SOSP 2007, sections 4.3 to 4.6): a key's
preference list on the ring, vector-clock versions and their siblings, quorum counting,
read repair and hinted handoff. Pure: the replicas, their RPCs and their timers live in
services/driver/quorum_store.py; a simulation can drive the same rules.

Properties:
- Strict quorum: the write goes to the first N members of the key's preference list and
  succeeds on W acknowledgements, a read asks them and waits for R answers. With
  R + W > N every read quorum shares a replica with every write quorum, so with no
  concurrent writers a read returns the latest acknowledged write.
- Sloppy quorum: a down member of the first N is stood in for by the next healthy member
  of the ring, which keeps the write with a hint naming the member it was meant for and
  hands it back when that member is up. Writes stay available, at the price of the
  overlap: until the hints are home a read quorum may miss the newest write. (Without a
  stand-in, the coordinator keeps the hint itself, as Cassandra does; such a hint never
  counts towards W.)
- Versions are vector clocks, one counter per coordinating replica: a version that
  descends from another replaces it; concurrent versions are siblings, kept side by side
  until a write or `resolve` merges them, so no acknowledged write is lost silently."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum

from services.blocks.ring import Ring

Clock = tuple[tuple[str, int], ...]  # a vector clock: (replica, counter), sorted by replica


class Order(Enum):
    BEFORE = "before"  # a happened before b: b supersedes a
    AFTER = "after"
    EQUAL = "equal"
    CONCURRENT = "concurrent"  # neither: siblings


def clock(counts: Mapping[str, int]) -> Clock:
    """The canonical form of a vector clock: zero entries dropped, sorted by replica."""
    for replica, count in counts.items():
        if count < 0:
            raise ValueError(f"vector clock counter for {replica!r} must be >= 0, got {count}")
    return tuple(sorted((replica, count) for replica, count in counts.items() if count > 0))


def compare(a: Clock, b: Clock) -> Order:
    left, right = dict(a), dict(b)
    replicas = left.keys() | right.keys()
    below = any(left.get(r, 0) < right.get(r, 0) for r in replicas)
    above = any(left.get(r, 0) > right.get(r, 0) for r in replicas)
    if below and above:
        return Order.CONCURRENT
    if below:
        return Order.BEFORE
    return Order.AFTER if above else Order.EQUAL


def merged(clocks: Iterable[Clock]) -> Clock:
    """The least clock that descends from every one of `clocks` (entrywise maximum)."""
    top: dict[str, int] = {}
    for each in clocks:
        for replica, count in each:
            top[replica] = max(top.get(replica, 0), count)
    return clock(top)


def advanced(base: Clock, coordinator: str) -> Clock:
    """The clock of a new write coordinated by `coordinator` over the versions it read."""
    counts = dict(base)
    counts[coordinator] = counts.get(coordinator, 0) + 1
    return clock(counts)


@dataclass(frozen=True)
class Version:
    """One value of a key with its vector clock, and the HLC timestamp (ms, logical) of the
    write that made it, which only `resolve` reads."""

    value: str
    clock: Clock
    stamp: tuple[int, int]


def siblings(versions: Iterable[Version]) -> tuple[Version, ...]:
    """What a replica keeps of `versions`: every version no other one supersedes, each once,
    in a stable order. A single version means the history is linear."""
    found: list[Version] = []
    for version in versions:
        if any(_covered(version, kept) for kept in found):
            continue
        found = [kept for kept in found if not _covered(kept, version)]
        found.append(version)
    return tuple(sorted(found, key=lambda v: (v.clock, v.stamp, v.value)))


def _covered(version: Version, by: Version) -> bool:
    """Whether keeping `by` makes `version` redundant. Equal clocks name one write; should
    two ever carry different values, the larger (stamp, value) is kept, on every replica."""
    order = compare(version.clock, by.clock)
    return order is Order.BEFORE or (order is Order.EQUAL and (version.stamp, version.value) <= (by.stamp, by.value))


def resolve(versions: Sequence[Version]) -> Version:
    """One version for a reader that needs one: the sibling with the newest HLC stamp wins
    (ties broken by the value, so every replica picks the same). Safe for a position, where
    the newest report is the truth and an older one is merely stale; never for money, where
    two concurrent debits must both count (the saga keeps money out of quorums). Its clock
    is the siblings' merge, so it supersedes them all when written back."""
    if not versions:
        raise ValueError("nothing to resolve: no versions")
    newest = max(versions, key=lambda v: (v.stamp, v.value))
    return Version(newest.value, merged(v.clock for v in versions), newest.stamp)


@dataclass(frozen=True)
class Placement:
    """Where one copy of a write goes: `member` keeps it, for itself when `hint_for` is
    None, else on behalf of the down member `hint_for` (a hint)."""

    member: str
    hint_for: str | None = None


def preference_list(
    ring: Ring, key: str, n: int, down: Iterable[str] = (), sloppy: bool = False
) -> tuple[Placement, ...]:
    """The replicas for `key`: the first n members of the ring from the key, less the down
    ones. With `sloppy`, each down one is stood in for by the next healthy member after
    the first n, carrying a hint for it; with too few healthy members, fewer placements.
    The ring holds every member known, up or down: a member's being down must not move
    the key's home, only who stands in for it."""
    if n < 1:
        raise ValueError(f"N must be at least 1, got {n}")
    gone = set(down)
    order = ring.owners(key, len(ring.members))
    home, beyond = order[:n], [m for m in order[n:] if m not in gone]
    placements = []
    for member in home:
        if member not in gone:
            placements.append(Placement(member))
        elif sloppy and beyond:
            placements.append(Placement(beyond.pop(0), hint_for=member))
    return tuple(placements)


@dataclass(frozen=True)
class Quorum:
    """N copies, W acknowledgements for a write, R answers for a read."""

    n: int
    r: int
    w: int

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"N must be at least 1, got {self.n}")
        for name, value in (("R", self.r), ("W", self.w)):
            if not 1 <= value <= self.n:
                raise ValueError(f"{name} must be in 1..N={self.n}, got {value}")

    @property
    def overlapping(self) -> bool:
        """R + W > N: every read quorum meets every write quorum."""
        return self.r + self.w > self.n

    def __str__(self) -> str:
        return f"N={self.n} R={self.r} W={self.w}"


@dataclass(frozen=True)
class ReadOutcome:
    """What R answers say: the key's siblings and which answering replicas are behind them
    (read repair sends them the siblings)."""

    versions: tuple[Version, ...]
    behind: tuple[str, ...] = field(default=())


def read_outcome(answers: Mapping[str, Sequence[Version]]) -> ReadOutcome:
    """Merges the answering replicas' versions; a replica is behind when some sibling of
    the merge is missing from what it holds (not superseded by it)."""
    everything = siblings(v for held in answers.values() for v in held)
    behind = []
    for member, held in sorted(answers.items()):
        if any(not any(compare(s.clock, h.clock) in (Order.BEFORE, Order.EQUAL) for h in held) for s in everything):
            behind.append(member)
    return ReadOutcome(everything, tuple(behind))


def stored(held: Sequence[Version], incoming: Sequence[Version]) -> tuple[Version, ...]:
    """What a replica holds after receiving `incoming` (a write, a repair, a hint handed
    back): the siblings of both. Applying the same versions twice changes nothing."""
    return siblings([*held, *incoming])
