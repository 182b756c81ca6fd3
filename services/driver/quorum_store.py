"""The driver cluster's replicated store of driver positions, Dynamo-style: the rules of
services/blocks/quorum.py (preference lists, vector clocks, siblings, read repair, hints)
over the replicas' RPCs. Any replica coordinates a request; the others answer
ReplicaWrite, ReplicaRead and ReplicaDigest through the sidecars (services/driver/forwarding.py).

Keys are driver ids, not cells: a driver's key must not change as it drives, or every
crossing into a new cell would be a delete on one preference list and a write on another.
Each replica keeps its copies in memory (positions are soft state, rewritten by every
heartbeat); a restarted replica starts empty and is refilled by hints, read repair and
anti-entropy. The property of the rules holds here: with R + W > N and no concurrent
writers of a key a read returns the latest acknowledged write; a sloppy quorum stays
writable with a replica down and hands the hint back once SWIM sees it alive."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from services.blocks.clocks import HybridLogicalClock
from services.blocks.quorum import (
    Clock,
    Placement,
    Quorum,
    ReadOutcome,
    Version,
    advanced,
    merged,
    preference_list,
    read_outcome,
    resolve,
    stored,
)
from services.blocks.ring import Ring

log = logging.getLogger(__name__)

REPLICA_TIMEOUT_SECONDS = 1.0  # a replica that has not answered by then does not count
HANDOFF_EVERY_SECONDS = 0.5
ANTI_ENTROPY_EVERY_SECONDS = 5.0
POSITION_EVERY_SECONDS = 1.0  # at most this often per driver (the fleet beats every 2 s): every beat, bounded
MAX_KEY = 255
MAX_VALUE = 4096


REFUSED = "quorum not reached"  # how every refusal's message begins, for clients to tell it apart


class QuorumUnavailable(Exception):
    """Fewer than W acknowledgements or R answers arrived in time, or fewer replicas are up
    than that; the message begins with REFUSED and says how many."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"{REFUSED}: {detail}")


@dataclass
class Replica:
    """What one replica holds: its own versions of each key, and hints, versions it keeps
    for a down member until it can hand them back. No I/O."""

    data: dict[str, tuple[Version, ...]] = field(default_factory=dict)
    hints: dict[str, dict[str, tuple[Version, ...]]] = field(default_factory=dict)

    def write(self, key: str, versions: Sequence[Version], hint_for: str = "") -> None:
        if hint_for:
            held = self.hints.setdefault(hint_for, {})
            held[key] = stored(held.get(key, ()), versions)
        else:
            self.data[key] = stored(self.data.get(key, ()), versions)

    def read(self, key: str) -> tuple[Version, ...]:
        """Its own versions and any it holds as hints: a stand-in answers with what it was given."""
        hinted = [v for held in self.hints.values() for v in held.get(key, ())]
        return stored(self.data.get(key, ()), hinted)

    def digest(self, key: str) -> bytes:
        text = repr([(v.clock, v.stamp, v.value) for v in self.data.get(key, ())])
        return hashlib.blake2b(text.encode(), digest_size=16).digest()


class Remote(Protocol):
    """The other replicas, by member address (forwarding.Peers over the sidecars)."""

    async def replica_write(self, member: str, key: str, versions: Sequence[Version], hint_for: str) -> None: ...

    async def replica_read(self, member: str, key: str) -> tuple[Version, ...]: ...

    async def replica_digest(self, member: str, digests: dict[str, bytes]) -> dict[str, tuple[Version, ...]]: ...


class Members(Protocol):
    """SWIM's view: every member known (the ring keeps a down member's keys at home) and
    which of them are up."""

    @property
    def me(self) -> str: ...

    def known(self) -> list[str]: ...

    def alive(self) -> list[str]: ...


@dataclass
class Counters:
    hints_handed_back: int = 0
    read_repairs: int = 0
    anti_entropy_repairs: int = 0


@dataclass(frozen=True)
class Written:
    version: Version
    acks: int
    w: int
    placements: tuple[Placement, ...]


@dataclass(frozen=True)
class Read:
    outcome: ReadOutcome
    resolved: Version | None
    answers: int
    r: int


class QuorumStore:
    def __init__(
        self,
        members: Members,
        remote: Remote,
        clock: HybridLogicalClock,
        quorum: Quorum,
        sloppy: bool,
        rng: random.Random | None = None,
    ) -> None:
        self.members = members
        self.remote = remote
        self.clock = clock
        self.quorum = quorum
        self.sloppy = sloppy
        self.replica = Replica()
        self.counters = Counters()
        self._rng = rng or random.Random()
        self._background: set[asyncio.Task[None]] = set()
        self._last_recorded: dict[str, float] = {}
        self._known_ring: Ring | None = None

    @property
    def me(self) -> str:
        return self.members.me

    def _ring(self) -> Ring:
        """The ring of every member known, up or down, rebuilt only when that set changes
        (every request asks it; a down member keeps its keys' home)."""
        known = tuple(sorted({*self.members.known(), self.me}))
        if self._known_ring is None or self._known_ring.members != known:
            self._known_ring = Ring.of(known)
        return self._known_ring

    def _placements(self, key: str, strict: bool) -> tuple[Placement, ...]:
        ring = self._ring()
        down = set(ring.members) - {*self.members.alive(), self.me}
        n = min(self.quorum.n, len(ring.members))
        return preference_list(ring, key, n, down, sloppy=self.sloppy and not strict)

    def _home(self, key: str) -> tuple[str, ...]:
        """The first N members of the key's preference list, up or down."""
        ring = self._ring()
        return ring.owners(key, min(self.quorum.n, len(ring.members)))

    def _bounded(self, wanted: int, name: str) -> int:
        chosen = wanted or (self.quorum.w if name == "W" else self.quorum.r)
        if not 1 <= chosen <= self.quorum.n:
            raise ValueError(f"{name} must be in 1..N={self.quorum.n}, got {chosen}")
        return chosen

    async def put(self, key: str, value: str, w: int = 0, strict: bool = False, context: Clock = ()) -> Written:
        """Writes a new version of `key` to its preference list and returns once W copies
        are acknowledged; the other copies go on being written after it returns."""
        need = self._bounded(w, "W")
        placements = self._placements(key, strict)
        base = context or merged(v.clock for v in self.replica.data.get(key, ()))
        stamp = self.clock.now()
        version = Version(value, advanced(base, self.me), (stamp.wall_ms, stamp.logical))

        def one(placement: Placement) -> Callable[[], Awaitable[None]]:
            async def send() -> None:
                if placement.member == self.me:
                    self.replica.write(key, [version], placement.hint_for or "")
                    return
                try:
                    await self.remote.replica_write(placement.member, key, [version], placement.hint_for or "")
                except Exception:
                    if placement.hint_for is None:  # a home replica that did not take it
                        self.replica.write(key, [version], hint_for=placement.member)
                    raise

            return send

        # A home replica that is down and has no stand-in (a strict quorum, or no healthy
        # member beyond the first N) gets its copy later: the coordinator keeps a hint, as
        # Cassandra's coordinators do. Such a hint never counts towards W.
        home = self._home(key)
        placed = {p.hint_for or p.member for p in placements}
        for member in home:
            if member not in placed and member != self.me:
                self.replica.write(key, [version], hint_for=member)
        self._enough(placements, need, f"write of {key!r}", "W")
        acks = await self._gather([one(p) for p in placements], need)
        if acks < need:
            raise QuorumUnavailable(
                f"write of {key!r}: {acks} of W={need} acknowledgements within {REPLICA_TIMEOUT_SECONDS:.0f} s"
                f" ({len(placements)} replicas reachable of N={self.quorum.n})"
            )
        return Written(version, acks, need, placements)

    async def get(self, key: str, r: int = 0, strict: bool = False) -> Read:
        """Reads `key` from its preference list and returns once R replicas have answered:
        their versions merged, the newest resolved; any that answered with less are sent
        what they lack (read repair)."""
        need = self._bounded(r, "R")
        placements = self._placements(key, strict)
        answers: dict[str, tuple[Version, ...]] = {}

        def one(placement: Placement) -> Callable[[], Awaitable[None]]:
            async def ask() -> None:
                if placement.member == self.me:
                    answers[self.me] = self.replica.read(key)
                else:
                    answers[placement.member] = await self.remote.replica_read(placement.member, key)

            return ask

        self._enough(placements, need, f"read of {key!r}", "R")
        got = await self._gather([one(p) for p in placements], need)
        if got < need:
            raise QuorumUnavailable(
                f"read of {key!r}: {got} of R={need} answers within {REPLICA_TIMEOUT_SECONDS:.0f} s"
                f" ({len(placements)} replicas reachable of N={self.quorum.n})"
            )
        outcome = read_outcome(dict(answers))
        home = {p.member for p in placements if p.hint_for is None}
        for member in outcome.behind:
            if member in home:
                self._repair(member, key, outcome.versions)
        resolved = resolve(outcome.versions) if outcome.versions else None
        return Read(outcome, resolved, got, need)

    def record(self, key: str, value: str, now: float) -> None:
        """A heartbeat's position, written through the quorum in the background, at most
        once per POSITION_EVERY_SECONDS per key (`now`: monotonic seconds); a refused write
        is left to the next one."""
        if now - self._last_recorded.get(key, -POSITION_EVERY_SECONDS) < POSITION_EVERY_SECONDS:
            return
        self._last_recorded[key] = now

        async def write() -> None:
            with contextlib.suppress(QuorumUnavailable):
                await self.put(key, value)

        self._spawn(write())

    def _enough(self, placements: tuple[Placement, ...], need: int, what: str, name: str) -> None:
        """Refuses at once, without trying, when fewer replicas are up than the quorum
        needs (Cassandra's UnavailableException): waiting could not change the answer."""
        if len(placements) < need:
            raise QuorumUnavailable(
                f"{what}: {len(placements)} replicas up of N={self.quorum.n}, fewer than {name}={need}; nothing tried"
            )

    def _repair(self, member: str, key: str, versions: tuple[Version, ...]) -> None:
        self.counters.read_repairs += 1
        if member == self.me:
            self.replica.write(key, versions)
        else:
            self._spawn(self.remote.replica_write(member, key, versions, ""))

    async def _gather(self, calls: list[Callable[[], Awaitable[None]]], need: int) -> int:
        """Runs `calls` at once and counts those that succeed, returning at `need`
        successes, when all have ended, or at the timeout; the rest run on."""
        tasks = [asyncio.ensure_future(call()) for call in calls]
        done_ok = 0
        pending: set[asyncio.Future[None]] = set(tasks)
        deadline = asyncio.get_running_loop().time() + REPLICA_TIMEOUT_SECONDS
        while pending and done_ok < need:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                break
            finished, pending = await asyncio.wait(pending, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            done_ok += sum(1 for task in finished if not task.cancelled() and task.exception() is None)
        for task in pending:
            self._keep(task)
        return done_ok

    def _keep(self, task: asyncio.Future[None]) -> None:
        async def finish() -> None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, REPLICA_TIMEOUT_SECONDS * 5)

        self._spawn(finish())

    def _spawn(self, work: Awaitable[None]) -> None:
        async def run() -> None:
            try:
                await work
            except Exception as error:  # a replica that fails to take a repair is repaired later
                log.debug("background replica call failed", extra={"fields": {"error": repr(error)}})

        task = asyncio.create_task(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- hinted handoff and anti-entropy --------------------------------------------------

    async def hand_back(self) -> int:
        """Sends each hint to its member if SWIM sees it alive; a hint delivered is dropped."""
        alive = set(self.members.alive())
        delivered = 0
        for member in [m for m in self.replica.hints if m in alive]:
            held = self.replica.hints[member]
            for key in list(held):
                try:
                    await self.remote.replica_write(member, key, held[key], "")
                except Exception as error:
                    log.debug("hint not handed back", extra={"fields": {"to": member, "error": repr(error)}})
                    break
                del held[key]
                delivered += 1
            if not held:
                del self.replica.hints[member]
        self.counters.hints_handed_back += delivered
        return delivered

    async def exchange(self) -> int:
        """One round of anti-entropy with a random alive member: a digest of every key both
        should hold; the keys whose digests differ are merged both ways. Returns how many
        keys were repaired. (A digest per key, not Merkle trees: a few hundred positions fit
        in one message; a Merkle tree is what lets Dynamo and Cassandra compare millions.)"""
        others = [m for m in self.members.alive() if m != self.me]
        if not others:
            return 0
        peer = self._rng.choice(others)
        shared = [k for k in self.replica.data if peer in {p.member for p in self._placements(k, strict=True)}]
        theirs = await self.remote.replica_digest(peer, {k: self.replica.digest(k) for k in shared})
        for key, versions in theirs.items():
            self.replica.write(key, versions)
            await self.remote.replica_write(peer, key, self.replica.data.get(key, ()), "")
        self.counters.anti_entropy_repairs += len(theirs)
        return len(theirs)

    def differing(self, digests: dict[str, bytes]) -> dict[str, tuple[Version, ...]]:
        """The answer to a peer's digests: this replica's versions of each key that differs."""
        return {k: self.replica.data.get(k, ()) for k, d in digests.items() if self.replica.digest(k) != d}

    async def run(self, stopping: asyncio.Event) -> None:
        """Hands hints back twice a second and runs anti-entropy every few seconds."""
        rounds = 0
        per_exchange = round(ANTI_ENTROPY_EVERY_SECONDS / HANDOFF_EVERY_SECONDS)
        while not stopping.is_set():
            try:
                await self.hand_back()
                rounds += 1
                if rounds % per_exchange == 0:
                    await self.exchange()
            except Exception as error:
                log.warning("quorum maintenance round failed", extra={"fields": {"error": repr(error)}})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), HANDOFF_EVERY_SECONDS)
