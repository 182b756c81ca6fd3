"""The sweeper leader's loop: whenever a pause ends, its next act is a fenced write; a
self-fencing leader does not sweep while its session is in doubt."""

from __future__ import annotations

import asyncio

from kazoo.protocol.states import KazooState

from services.trip.sweeper import Sweeper


class Leadership:
    def __init__(self, *states: str) -> None:
        self.states = list(states)  # the connection as each round reads it; the last one stays

    def connection(self) -> str:
        return self.states.pop(0) if len(self.states) > 1 else self.states[0]


class Fenced(Sweeper):
    """A leader whose writes pass the fence `accepted` times, then are refused."""

    def __init__(self, self_fence: bool, accepted: int = 1) -> None:
        self.self_fence = self_fence
        self.accepted = accepted
        self.writes: list[tuple[str, bool]] = []

    def _write(self, kind: str) -> bool:
        passed = len(self.writes) < self.accepted
        self.writes.append((kind, passed))
        return passed

    async def sweep_once(self, epoch: int) -> bool:
        return self._write("sweep")

    async def fence_holds(self, epoch: int) -> bool:
        return self._write("fence")


def _lead(sweeper: Sweeper, leadership: Leadership) -> None:
    asyncio.run(sweeper.lead(leadership, 7, asyncio.Event()))  # type: ignore[arg-type]


def test_a_leader_that_finds_its_session_lost_after_a_sweep_still_makes_one_more_fenced_write() -> None:
    # Paused during a sweep that had passed the fence; the session is gone when it resumes.
    sweeper = Fenced(self_fence=True)
    _lead(sweeper, Leadership(KazooState.CONNECTED, KazooState.LOST))
    # The refused write is what shows a newer leader took over (and what the drills count).
    assert sweeper.writes == [("sweep", True), ("fence", False)]


def test_a_resumed_leader_whose_view_is_stale_sweeps_once_and_is_refused() -> None:
    sweeper = Fenced(self_fence=True, accepted=0)
    _lead(sweeper, Leadership(KazooState.CONNECTED))
    assert sweeper.writes == [("sweep", False)]


def test_a_self_fencing_leader_holds_while_suspended_and_resumes_in_the_same_session() -> None:
    sweeper = Fenced(self_fence=True, accepted=2)
    suspended = [KazooState.SUSPENDED] * 3
    _lead(sweeper, Leadership(KazooState.CONNECTED, *suspended, KazooState.CONNECTED))
    assert sweeper.writes == [("sweep", True), ("sweep", True), ("sweep", False)]


def test_without_self_fencing_the_leader_sweeps_through_a_lost_session_until_the_fence_refuses() -> None:
    sweeper = Fenced(self_fence=False, accepted=3)
    _lead(sweeper, Leadership(KazooState.CONNECTED, KazooState.SUSPENDED, KazooState.LOST))
    assert sweeper.writes == [("sweep", True)] * 3 + [("sweep", False)]
