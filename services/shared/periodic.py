"""Periodic background work that stops promptly: the pause between runs ends as soon as
the service starts shutting down."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


async def every(seconds: float, stopping: asyncio.Event, work: Callable[[], Awaitable[object]], name: str) -> None:
    """Runs `work` every `seconds` until `stopping` is set; a failed run is logged and retried."""
    while not stopping.is_set():
        try:
            await work()
        except Exception as error:
            log.warning("%s failed; retrying", name, extra={"fields": {"error": repr(error)}})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), seconds)
