"""The simulated driver app sends an answer again while the driver service cannot be
reached, and stops at a refusal or when its time is up."""

from __future__ import annotations

import asyncio
import random

import grpc
import pytest

from services.blocks.retry import TRANSIENT_CODES, Backoff
from services.fleet import main as fleet


def _error(code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=code.name)


class Service:
    """Answers with the given failures first, then succeeds."""

    def __init__(self, *failures: grpc.StatusCode) -> None:
        self.failures = list(failures)
        self.calls = 0

    async def __call__(self) -> object:
        self.calls += 1
        if self.failures:
            raise _error(self.failures.pop(0))
        return "ack"


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fleet, "ANSWER_BACKOFF", Backoff(base_seconds=0.001, cap_seconds=0.005))


def test_an_answer_is_sent_again_until_the_driver_service_is_back() -> None:
    down = Service(grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE)
    asyncio.run(fleet._until_answered(down, random.Random(1)))
    assert down.calls == 4


@pytest.mark.parametrize("code", sorted(TRANSIENT_CODES, key=str), ids=str)
def test_every_not_now_answer_is_sent_again(code: grpc.StatusCode) -> None:
    once = Service(code)
    asyncio.run(fleet._until_answered(once, random.Random(1)))
    assert once.calls == 2


def test_a_refusal_is_final() -> None:
    refusing = Service(grpc.StatusCode.FAILED_PRECONDITION)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        asyncio.run(fleet._until_answered(refusing, random.Random(1)))
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION and refusing.calls == 1


def test_the_app_gives_up_when_its_time_is_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fleet, "ANSWER_RETRY_SECONDS", 0.05)
    gone = Service(*[grpc.StatusCode.UNAVAILABLE] * 10_000)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        asyncio.run(fleet._until_answered(gone, random.Random(1)))
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE and 1 < gone.calls < 10_000
