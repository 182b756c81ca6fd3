"""Periodic background work that stops promptly: the pause between runs ends as soon as
the service starts shutting down; and a request handler's bounded wait for a decision
made elsewhere (the saga's verdict on a cancel or an acceptance)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


async def every(seconds: float, stopping: asyncio.Event, work: Callable[[], Awaitable[object]], name: str) -> None:
    """Runs `work` every `seconds` until `stopping` is set; a failed run is logged and retried."""
    while not stopping.is_set():
        try:
            await work()
        except Exception as error:
            log.warning("%s failed; retrying", name, extra={"fields": {"error": repr(error)}})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), seconds)


async def decided(look: Callable[[], Awaitable[T | None]], seconds: float, poll_seconds: float) -> T | None:
    """Looks every `poll_seconds` until `look` returns a decision (not None), for at most
    `seconds`; None if nothing was decided by then (the caller says so, never guesses)."""
    deadline = time.monotonic() + seconds
    while True:
        found = await look()
        if found is not None or time.monotonic() >= deadline:
            return found
        await asyncio.sleep(poll_seconds)
