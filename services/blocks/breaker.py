"""Circuit breaker (Nygard, "Release It!"), with a count-based sliding window as in
resilience4j.

Property: while the downstream keeps failing (or answering slowly) the caller stops
calling it and fails fast, which protects both sides; after `open_seconds` a limited
number of probe calls are let through (half-open); their success closes the breaker,
a failure opens it again. Business outcomes (a declined card) are successes for the
breaker: they show the downstream is healthy. Half-open never wedges: a probe abandoned
without an answer is given back, and a half-open without a verdict within
`half_open_max_seconds` opens again (resilience4j's maxWaitDurationInHalfOpenState).
Pure state machine: time is passed in."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum


class State(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class BreakerConfig:
    window: int = 20  # the last N calls are judged
    minimum_calls: int = 10  # no verdict on fewer calls
    failure_rate: float = 0.5  # open at this share of failed calls
    slow_call_rate: float = 0.8  # or at this share of slow calls
    slow_call_seconds: float = 2.0
    open_seconds: float = 5.0  # stay open this long, then let probes through
    half_open_probes: int = 3  # this many probes decide
    # No verdict within this long reopens the breaker. Twice the longest call deadline
    # in the project (5 s), so a probe that answers only at its deadline still counts.
    half_open_max_seconds: float = 10.0


@dataclass
class CircuitBreaker:
    name: str
    config: BreakerConfig = field(default_factory=BreakerConfig)
    on_change: Callable[[str, State, State], None] = lambda name, old, new: None
    state: State = State.CLOSED
    _calls: deque[tuple[bool, bool]] = field(default_factory=deque)  # (failed, slow)
    _opened_at: float = 0.0
    _half_opened_at: float = 0.0
    _probes_started: int = 0
    _probe_results: list[bool] = field(default_factory=list)

    def _move(self, new: State, now: float) -> None:
        old, self.state = self.state, new
        self._calls.clear()
        self._probes_started = 0
        self._probe_results.clear()
        if new == State.OPEN:
            self._opened_at = now
        if new == State.HALF_OPEN:
            self._half_opened_at = now
        if old != new:
            self.on_change(self.name, old, new)

    def _advance(self, now: float) -> None:
        """The transitions that time alone makes. A half-open past its wait opens as of
        the moment the wait ended, so a breaker nobody called for a while half-opens
        again at once, with fresh probes."""
        if self.state == State.HALF_OPEN and now >= self._half_open_ends():
            self._move(State.OPEN, self._half_open_ends())
        if self.state == State.OPEN and now >= self._open_ends():
            self._move(State.HALF_OPEN, now)

    def _open_ends(self) -> float:
        return self._opened_at + self.config.open_seconds

    def _half_open_ends(self) -> float:
        return self._half_opened_at + self.config.half_open_max_seconds

    def allow(self, now: float) -> bool:
        """Whether a call may go out now; a refused call must fail fast, uncalled. A
        call let through must end in `record` or `abandon`."""
        self._advance(now)
        if self.state == State.OPEN:
            return False
        if self.state == State.HALF_OPEN:
            if self._probes_started >= self.config.half_open_probes:
                return False
            self._probes_started += 1
        return True

    def retry_after(self, now: float) -> float:
        """Seconds until the breaker may let a call through; 0 only if `allow(now)` would.
        With every half-open probe out, that is when the half-open wait ends (a probe's
        success may close it sooner)."""
        self._advance(now)
        if self.state == State.OPEN:
            return self._open_ends() - now
        if self.state == State.HALF_OPEN and self._probes_started >= self.config.half_open_probes:
            return self._half_open_ends() - now
        return 0.0

    def abandon(self, now: float) -> None:
        """A call that `allow` let through ended with no answer from the downstream: its
        caller was cancelled (a deadline), or it failed on this side. In half-open its
        probe is given back, so the next call probes; elsewhere it is forgotten.

        It is not counted as a failure: a caller's impatience or a local bug says
        nothing about the downstream's health, and counting it would let short client
        deadlines open the breaker against a healthy service. A downstream that hangs
        every probe until its caller gives up is still caught: no verdict within
        `half_open_max_seconds` opens the breaker again."""
        self._advance(now)
        if self.state == State.HALF_OPEN and self._probes_started > len(self._probe_results):
            self._probes_started -= 1

    def record(self, failed: bool, seconds: float, now: float) -> None:
        """The outcome of a call that `allow` let through. `failed` means the downstream
        failed (unavailable, timed out, internal error), not a business refusal."""
        slow = seconds >= self.config.slow_call_seconds
        if self.state == State.HALF_OPEN:
            self._probe_results.append(failed or slow)
            if failed or slow:
                self._move(State.OPEN, now)
            elif len(self._probe_results) >= self.config.half_open_probes:
                self._move(State.CLOSED, now)
            return
        if self.state == State.OPEN:
            return  # a call let through before the breaker opened
        self._calls.append((failed, slow))
        if len(self._calls) > self.config.window:
            self._calls.popleft()
        if len(self._calls) < self.config.minimum_calls:
            return
        failures = sum(f for f, _ in self._calls) / len(self._calls)
        slows = sum(s for _, s in self._calls) / len(self._calls)
        if failures >= self.config.failure_rate or slows >= self.config.slow_call_rate:
            self._move(State.OPEN, now)

    def snapshot(self) -> dict[str, object]:
        failed = sum(f for f, _ in self._calls)
        return {"state": self.state.value, "calls_in_window": len(self._calls), "failures_in_window": failed}
