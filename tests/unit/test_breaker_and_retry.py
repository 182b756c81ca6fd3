import asyncio
import random
import time
from typing import Any

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.blocks.breaker import BreakerConfig, CircuitBreaker, State
from services.blocks.downstream import Downstream
from services.blocks.retry import Backoff, RetryBudget, next_wait

CONFIG = BreakerConfig(
    window=10, minimum_calls=5, failure_rate=0.5, slow_call_seconds=1.0, open_seconds=5.0, half_open_probes=2
)


def _breaker() -> tuple[CircuitBreaker, list[tuple[State, State]]]:
    changes: list[tuple[State, State]] = []
    return CircuitBreaker("psp", CONFIG, lambda _, old, new: changes.append((old, new))), changes


def test_opens_at_the_failure_threshold_and_then_fails_fast() -> None:
    breaker, changes = _breaker()
    for i in range(5):
        assert breaker.allow(float(i))
        breaker.record(failed=i < 3, seconds=0.1, now=float(i))
    assert breaker.state == State.OPEN and changes == [(State.CLOSED, State.OPEN)]
    assert not breaker.allow(5.0)
    assert breaker.retry_after(5.0) == 4.0


def test_stays_closed_below_the_threshold_and_before_minimum_calls() -> None:
    breaker, _ = _breaker()
    for i in range(4):
        breaker.record(failed=True, seconds=0.1, now=float(i))
    assert breaker.state == State.CLOSED  # four calls are too few to judge
    steady, _ = _breaker()
    for i in range(100):
        steady.record(failed=i % 5 == 0, seconds=0.1, now=float(i))  # 20 % fail, below 50 %
    assert steady.state == State.CLOSED


def test_business_errors_never_open_it() -> None:
    breaker, _ = _breaker()
    for i in range(50):
        assert breaker.allow(float(i))
        breaker.record(failed=False, seconds=0.1, now=float(i))  # e.g. a declined card
    assert breaker.state == State.CLOSED


def test_slow_calls_open_it() -> None:
    breaker, _ = _breaker()
    for i in range(5):
        breaker.record(failed=False, seconds=1.5, now=float(i))
    assert breaker.state == State.OPEN


def test_half_open_lets_a_few_probes_through_and_closes_on_their_success() -> None:
    breaker, changes = _breaker()
    for _ in range(5):
        breaker.record(failed=True, seconds=0.1, now=0.0)
    assert not breaker.allow(4.9)
    assert breaker.allow(5.0) and breaker.state == State.HALF_OPEN
    assert breaker.allow(5.1)
    assert not breaker.allow(5.2)  # only two probes
    breaker.record(failed=False, seconds=0.1, now=5.3)
    breaker.record(failed=False, seconds=0.1, now=5.4)
    assert breaker.snapshot()["state"] == "closed"
    assert changes == [(State.CLOSED, State.OPEN), (State.OPEN, State.HALF_OPEN), (State.HALF_OPEN, State.CLOSED)]


def test_a_failed_probe_opens_it_again() -> None:
    breaker, _ = _breaker()
    for _ in range(5):
        breaker.record(failed=True, seconds=0.1, now=0.0)
    assert breaker.allow(6.0)
    breaker.record(failed=True, seconds=0.1, now=6.1)
    assert breaker.state == State.OPEN and not breaker.allow(6.2)
    assert breaker.allow(11.1)


def _half_open(config: BreakerConfig = CONFIG) -> tuple[CircuitBreaker, list[tuple[State, State]]]:
    """A breaker opened at 0.0 and half-opened at 5.0 by a first probe."""
    changes: list[tuple[State, State]] = []
    breaker = CircuitBreaker("trip", config, lambda _, old, new: changes.append((old, new)))
    for _ in range(5):
        breaker.record(failed=True, seconds=0.1, now=0.0)
    assert breaker.allow(5.0) and breaker.state == State.HALF_OPEN
    return breaker, changes


def test_an_abandoned_probe_is_given_back_to_the_next_call() -> None:
    breaker, _ = _half_open()
    assert breaker.allow(5.1)
    assert not breaker.allow(5.2)  # both probes are out
    breaker.abandon(5.3)  # e.g. the caller's deadline cancelled one
    assert breaker.state == State.HALF_OPEN and breaker.allow(5.4)
    assert not breaker.allow(5.5)
    breaker.record(failed=False, seconds=0.1, now=5.6)
    breaker.record(failed=False, seconds=0.1, now=5.7)
    assert breaker.snapshot()["state"] == "closed"


def test_abandoning_a_call_outside_half_open_leaves_no_trace() -> None:
    breaker, _ = _breaker()
    for i in range(20):
        assert breaker.allow(float(i))
        breaker.abandon(float(i))
    assert breaker.state == State.CLOSED and breaker.snapshot()["calls_in_window"] == 0


def test_a_probe_without_a_verdict_opens_it_again_after_its_wait() -> None:
    config = BreakerConfig(window=10, minimum_calls=5, open_seconds=5.0, half_open_probes=2, half_open_max_seconds=3.0)
    breaker, changes = _half_open(config)
    assert breaker.allow(5.1)
    breaker.record(failed=False, seconds=0.1, now=5.2)  # one verdict of the two it needs
    assert not breaker.allow(7.9)
    assert breaker.retry_after(7.9) == pytest.approx(0.2)  # until the probe of 5.1 is hung
    assert not breaker.allow(8.1) and breaker.state == State.OPEN
    assert breaker.retry_after(8.1) == pytest.approx(5.0)  # open as of the end of the wait
    assert not breaker.allow(13.0)
    assert breaker.allow(13.1) and breaker.allow(13.2)  # fresh probes
    assert changes == [
        (State.CLOSED, State.OPEN),
        (State.OPEN, State.HALF_OPEN),
        (State.HALF_OPEN, State.OPEN),
        (State.OPEN, State.HALF_OPEN),
    ]


def test_probes_that_arrive_far_apart_still_close_it() -> None:
    # A saga re-sending a few commands a minute: each probe answers, the next comes much
    # later than the wait for a hung probe. Half-open waits for it instead of expiring.
    config = BreakerConfig(window=10, minimum_calls=5, open_seconds=5.0, half_open_probes=2, half_open_max_seconds=3.0)
    breaker, changes = _half_open(config)
    breaker.record(failed=False, seconds=0.1, now=5.1)
    assert breaker.retry_after(40.0) == 0.0 and breaker.allow(40.0)
    breaker.record(failed=False, seconds=0.1, now=40.1)
    assert breaker.state == State.CLOSED
    assert changes == [(State.CLOSED, State.OPEN), (State.OPEN, State.HALF_OPEN), (State.HALF_OPEN, State.CLOSED)]


def test_probes_given_back_until_the_wait_ends_open_it_again() -> None:
    # A downstream that hangs every probe until its caller's deadline cancels it.
    config = BreakerConfig(window=10, minimum_calls=5, open_seconds=5.0, half_open_probes=2, half_open_max_seconds=3.0)
    breaker, _ = _half_open(config)
    breaker.abandon(6.0)
    assert breaker.allow(6.1)
    breaker.abandon(7.1)
    assert breaker.state == State.HALF_OPEN and breaker.allow(7.2)
    assert not breaker.allow(8.0) and breaker.snapshot()["state"] == "open"  # 3 s after the probe of 5.0


def test_a_call_from_before_half_open_is_no_verdict_on_a_probe() -> None:
    # A call let through while closed answers only once the breaker has half-opened: its
    # success says nothing about the probes, and must not close the breaker for them.
    breaker, changes = _breaker()
    assert breaker.allow(0.0)
    early = breaker.generation
    for _ in range(5):
        breaker.record(failed=True, seconds=0.1, now=0.1)
    assert breaker.allow(5.1) and breaker.allow(5.2)  # both probes out
    probes = breaker.generation
    breaker.record(False, 0.1, 5.3, early)
    breaker.record(False, 0.1, 5.4, early)
    assert breaker.state == State.HALF_OPEN and not breaker.allow(5.5)
    breaker.record(False, 0.1, 5.6, probes)
    breaker.record(False, 0.1, 5.7, probes)
    assert changes[-1] == (State.HALF_OPEN, State.CLOSED)


# A random history of calls: each step waits a little (or past the open or half-open
# wait), then lets a call through if the breaker allows, or settles one of the calls in
# flight: reply, failure, slow reply, or abandoned (cancelled, or not an RPC error).
# Weighted so that most histories open the breaker and run out of half-open probes.
HISTORY = st.lists(
    st.tuples(
        st.sampled_from([0.0, 0.1, 0.5, 6.0, 11.0]),
        st.sampled_from(["call", "call", "call", "ok", "failed", "failed", "slow", "abandoned"]),
    ),
    min_size=20,
    max_size=100,
)


@given(HISTORY)
def test_retry_after_is_never_zero_while_calls_are_refused_and_waiting_always_ends_it(
    steps: list[tuple[float, str]],
) -> None:
    breaker, _ = _breaker()
    now, in_flight = 0.0, []  # the generation each call in flight was let through in
    for gap, step in steps:
        now += gap
        if step == "call":
            wait = breaker.retry_after(now)
            allowed = breaker.allow(now)
            assert allowed or wait > 0.0
            if allowed:
                in_flight.append(breaker.generation)
        elif in_flight:
            generation = in_flight.pop(0)
            if step == "abandoned":
                breaker.abandon(now, generation)
            else:
                breaker.record(step == "failed", 1.5 if step == "slow" else 0.1, now, generation)
    # Whatever is still in flight never comes back: no history wedges the breaker.
    assert breaker.allow(now + CONFIG.half_open_max_seconds + CONFIG.open_seconds)


async def _cancelled_probe_then_a_call(config: BreakerConfig) -> tuple[str, State]:
    trip = Downstream("rider->trip", breaker=config)
    for _ in range(config.minimum_calls):  # opened long enough ago that the next call probes
        trip.breaker.record(failed=True, seconds=0.1, now=time.monotonic() - config.open_seconds)
    probing = asyncio.Event()

    async def hanging(request: Any, *, timeout: float) -> str:
        probing.set()
        await asyncio.Event().wait()
        raise AssertionError("never answered")

    async def answering(request: Any, *, timeout: float) -> str:
        return f"reply to {request}"

    probe = asyncio.create_task(trip.call(hanging, "probe", deadline_seconds=5.0, idempotent=True))
    await probing.wait()
    probe.cancel()  # as the caller's gRPC deadline cancels its handler
    with pytest.raises(asyncio.CancelledError):
        await probe
    reply = await trip.call(answering, "next", deadline_seconds=5.0, idempotent=True)
    return reply, trip.breaker.state


def test_a_probe_cancelled_mid_call_lets_the_next_call_probe() -> None:
    config = BreakerConfig(window=10, minimum_calls=5, open_seconds=5.0, half_open_probes=1)
    assert asyncio.run(_cancelled_probe_then_a_call(config)) == ("reply to next", State.CLOSED)


async def _broken_probe_then_a_call(config: BreakerConfig) -> tuple[str, State]:
    trip = Downstream("rider->trip", breaker=config)
    for _ in range(config.minimum_calls):
        trip.breaker.record(failed=True, seconds=0.1, now=time.monotonic() - config.open_seconds)

    async def broken(request: Any, *, timeout: float) -> str:
        raise RuntimeError("the stub failed before any answer")

    async def answering(request: Any, *, timeout: float) -> str:
        return f"reply to {request}"

    with pytest.raises(RuntimeError):
        await trip.call(broken, "probe", deadline_seconds=5.0, idempotent=True)
    reply = await trip.call(answering, "next", deadline_seconds=5.0, idempotent=True)
    return reply, trip.breaker.state


def test_a_probe_that_fails_without_an_rpc_error_lets_the_next_call_probe() -> None:
    config = BreakerConfig(window=10, minimum_calls=5, open_seconds=5.0, half_open_probes=1)
    assert asyncio.run(_broken_probe_then_a_call(config)) == ("reply to next", State.CLOSED)


ANSWERS = [code for code in grpc.StatusCode if code != grpc.StatusCode.OK]


def _failing(code: grpc.StatusCode, times: int) -> tuple[Any, list[Any]]:
    """A method that fails `times` times with `code`, then answers; and its calls."""
    calls: list[Any] = []

    async def method(request: Any, *, timeout: float) -> str:
        calls.append(request)
        if len(calls) <= times:
            raise grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=code.name)
        return "answer"

    return method, calls


async def _attempts(code: grpc.StatusCode) -> int:
    method, calls = _failing(code, times=1)
    psp = Downstream("payment->psp", backoff=Backoff(base_seconds=0.001, cap_seconds=0.001))
    try:
        await psp.call(method, "authorize", deadline_seconds=5.0, idempotent=True)
    except grpc.aio.AioRpcError as error:
        assert error.code() == code
    return len(calls)


@pytest.mark.parametrize("code", ANSWERS, ids=lambda code: code.name)
def test_an_idempotent_call_is_retried_at_once_only_when_the_callee_turned_it_away(code: grpc.StatusCode) -> None:
    retried = code in {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED}
    assert asyncio.run(_attempts(code)) == (2 if retried else 1)


async def _probe_fails_with(code: grpc.StatusCode) -> State:
    config = BreakerConfig(window=10, minimum_calls=5, open_seconds=5.0, half_open_probes=1)
    psp = Downstream("payment->psp", breaker=config)
    for _ in range(config.minimum_calls):  # opened long enough ago that the next call probes
        psp.breaker.record(failed=True, seconds=0.1, now=time.monotonic() - config.open_seconds)
    method, _ = _failing(code, times=1)
    with pytest.raises(grpc.aio.AioRpcError):
        await psp.call(method, "authorize", deadline_seconds=5.0, idempotent=False)
    return psp.breaker.state


@pytest.mark.parametrize("code", ANSWERS, ids=lambda code: code.name)
def test_the_breaker_counts_what_says_the_callee_is_unhealthy(code: grpc.StatusCode) -> None:
    unhealthy = {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
    assert asyncio.run(_probe_fails_with(code)) == (State.OPEN if code in unhealthy else State.CLOSED)


@given(st.integers(0, 30), st.integers(0, 2**32))
def test_full_jitter_stays_within_the_capped_exponential(attempt: int, seed: int) -> None:
    backoff = Backoff(base_seconds=0.05, cap_seconds=2.0)
    wait = backoff.wait(attempt, random.Random(seed))
    assert 0.0 <= wait <= min(2.0, 0.05 * 2**attempt)


def test_no_wait_past_the_deadline() -> None:
    rng = random.Random(1)
    assert next_wait(10, Backoff(1.0, 1.0), rng, now=0.0, deadline=0.0) is None
    wait = next_wait(0, Backoff(0.05, 1.0), rng, now=0.0, deadline=10.0)
    assert wait is not None and wait <= 0.05


def test_the_budget_caps_retries_at_a_share_of_calls() -> None:
    budget = RetryBudget(ratio=0.2, min_per_second=0.0, window_seconds=10.0)
    for i in range(100):
        budget.record_call(float(i) / 100)
    granted = sum(budget.try_spend(1.0) for _ in range(100))
    assert granted == 20
    assert budget.try_spend(12.0) is False  # the calls aged out of the window, so did the allowance
