"""`bounded` gives up on a blocking client call that ignores its own timeout (as
librdkafka's send_offsets_to_transaction can) without blocking the event loop."""

from __future__ import annotations

import asyncio
import threading

import pytest

from services.blocks.exactly_once import ProducerStuck, bounded


def test_a_call_that_returns_gives_its_result() -> None:
    assert asyncio.run(bounded(sum, [1, 2, 3], timeout=5)) == 6


def test_a_call_that_raises_passes_its_error_on() -> None:
    def broken() -> None:
        raise ValueError("broker said no")

    with pytest.raises(ValueError, match="broker said no"):
        asyncio.run(bounded(broken, timeout=5))


def test_a_call_that_never_returns_is_abandoned() -> None:
    never = threading.Event()

    async def scenario() -> int:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        task = asyncio.create_task(ticker())
        with pytest.raises(ProducerStuck, match="wait did not return within 0s"):
            await bounded(never.wait, timeout=0.3)
        task.cancel()
        return ticks

    assert asyncio.run(scenario()) > 5  # the event loop kept running meanwhile
    never.set()
