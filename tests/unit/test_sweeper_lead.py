"""The sweeper leader's loop: whenever a pause ends, its next act is a fenced write."""

from __future__ import annotations

import asyncio

from services.trip.sweeper import Sweeper


class Leadership:
    def __init__(self) -> None:
        self.lost = False

    def still_leading(self) -> bool:
        return not self.lost


class PausedInItsSweep(Sweeper):
    """A leader paused during a sweep that had already passed the fence; while it slept
    its session expired and a newer leader claimed the epoch row."""

    def __init__(self, leadership: Leadership) -> None:
        self.leadership = leadership
        self.writes: list[bool] = []

    async def sweep_once(self, epoch: int) -> bool:
        accepted = not self.writes  # the first write passed the fence; any later one is refused
        self.writes.append(accepted)
        self.leadership.lost = True  # the pause: the session is gone when it resumes
        return accepted


def test_a_leader_that_finds_its_session_lost_after_a_sweep_still_makes_one_more_fenced_write() -> None:
    leadership = Leadership()
    sweeper = PausedInItsSweep(leadership)
    asyncio.run(sweeper.lead(leadership, 7, asyncio.Event()))  # type: ignore[arg-type]
    # The refused write is what shows a newer leader took over (and what the drills count).
    assert sweeper.writes == [True, False]
