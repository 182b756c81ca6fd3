"""The bounded wait for a decision made elsewhere (services/runtime/periodic.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from services.runtime.periodic import decided


def _looks(answers: list[str | None]) -> tuple[list[int], Callable[[], Awaitable[str | None]]]:
    calls = [0]

    async def look() -> str | None:
        calls[0] += 1
        return answers[min(calls[0], len(answers)) - 1]

    return calls, look


def test_a_decision_is_returned_as_soon_as_it_is_seen() -> None:
    calls, look = _looks([None, None, "confirmed"])
    assert asyncio.run(decided(look, 60, 0)) == "confirmed"
    assert calls == [3]


def test_no_decision_within_the_wait_is_none_never_a_guess() -> None:
    calls, look = _looks([None])
    assert asyncio.run(decided(look, 0, 0)) is None
    assert calls == [1]
