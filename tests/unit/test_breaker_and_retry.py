import random

from hypothesis import given
from hypothesis import strategies as st

from services.shared.breaker import BreakerConfig, CircuitBreaker, State
from services.shared.retry import Backoff, RetryBudget, next_wait

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
