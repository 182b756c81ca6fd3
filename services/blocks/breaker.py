"""Circuit breaker (Nygard, "Release It!"), with a count-based sliding window as in
resilience4j.

Property: while the downstream keeps failing (or answering slowly) the caller stops
calling it and fails fast, which protects both sides; after `open_seconds` a limited
number of probe calls are let through (half-open); their success closes the breaker,
a failure opens it again. Business outcomes (a declined card) are successes for the
breaker: they show the downstream is healthy. Half-open never wedges: a probe abandoned
without an answer is given back, and a probe with no verdict within
`half_open_max_seconds` of going out opens the breaker again. Half-open ends only on a
verdict or a hung probe, never by time alone: under sparse traffic (a saga re-sending a
few commands a minute) the probes it needs may arrive far apart, and a half-open that
expired between them would never close. Pure state machine: time is passed in."""

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
    # A probe with no verdict this long after it went out reopens the breaker. Twice the
    # longest call deadline in the project (5 s), so a probe that answers only at its
    # deadline still counts.
    half_open_max_seconds: float = 10.0


@dataclass
class CircuitBreaker:
    name: str
    config: BreakerConfig = field(default_factory=BreakerConfig)
    on_change: Callable[[str, State, State], None] = lambda name, old, new: None
    state: State = State.CLOSED
    _calls: deque[tuple[bool, bool]] = field(default_factory=deque)  # (failed, slow)
    _opened_at: float = 0.0
    _probes_started: int = 0
    _probe_results: list[bool] = field(default_factory=list)
    _probes_out: deque[float] = field(default_factory=deque)  # when each probe in flight went out
    _abandoned_since: float | None = None  # the first probe given back since the last verdict
    # Bumped by every change of state. A call's verdict counts only in the generation that
    # let it through: a call from before a change (let through while closed, answering in
    # half-open) is neither a probe nor a verdict on one, so the probes counted out and in
    # always match and half-open cannot wedge with every probe slot taken and none out.
    generation: int = 0

    def _move(self, new: State, now: float) -> None:
        old, self.state = self.state, new
        self.generation += 1
        self._calls.clear()
        self._probes_started = 0
        self._probe_results.clear()
        self._probes_out.clear()
        self._abandoned_since = None
        if new == State.OPEN:
            self._opened_at = now
        if old != new:
            self.on_change(self.name, old, new)

    def _advance(self, now: float) -> None:
        """The transitions that time makes. A half-open with a hung probe opens as of the
        moment the probe's wait ended, so a breaker nobody called for a while after that
        half-opens again at once, with fresh probes."""
        hung = self._hung_at()
        if self.state == State.HALF_OPEN and hung is not None and now >= hung:
            self._move(State.OPEN, hung)
        if self.state == State.OPEN and now >= self._open_ends():
            self._move(State.HALF_OPEN, now)

    def _open_ends(self) -> float:
        return self._opened_at + self.config.open_seconds

    def _hung_at(self) -> float | None:
        """When the oldest probe without a verdict counts as hung: one still out, or one
        given back since the last verdict (a downstream that hangs every probe until its
        caller gives up is caught too). None while every probe has had its verdict."""
        starts = [
            start
            for start in (self._probes_out[0] if self._probes_out else None, self._abandoned_since)
            if start is not None
        ]
        return min(starts) + self.config.half_open_max_seconds if starts else None

    def allow(self, now: float) -> bool:
        """Whether a call may go out now; a refused call must fail fast, uncalled. A
        call let through must end in `record` or `abandon`, with the `generation` read
        right after this returned True (None: the current one, for a caller that knows
        nothing changed meanwhile)."""
        self._advance(now)
        if self.state == State.OPEN:
            return False
        if self.state == State.HALF_OPEN:
            if self._probes_started >= self.config.half_open_probes:
                return False
            self._probes_started += 1
            self._probes_out.append(now)
        return True

    def retry_after(self, now: float) -> float:
        """Seconds until the breaker may let a call through; 0 only if `allow(now)` would.
        With every half-open probe started, that is when the oldest one still out counts
        as hung, or the open wait after it if none is out (a probe's success may close it
        sooner)."""
        self._advance(now)
        if self.state == State.OPEN:
            return self._open_ends() - now
        if self.state == State.HALF_OPEN and self._probes_started >= self.config.half_open_probes:
            hung = self._hung_at()
            return hung - now if hung is not None else self.config.open_seconds
        return 0.0

    def abandon(self, now: float, generation: int | None = None) -> None:
        """A call that `allow` let through ended with no answer from the downstream: its
        caller was cancelled (a deadline), or it failed on this side. In half-open its
        probe is given back, so the next call probes; elsewhere it is forgotten.

        It is not counted as a failure: a caller's impatience or a local bug says
        nothing about the downstream's health, and counting it would let short client
        deadlines open the breaker against a healthy service. A downstream that hangs
        every probe until its caller gives up is still caught: no verdict within
        `half_open_max_seconds` of the first probe given back opens the breaker again."""
        self._advance(now)
        if generation not in (None, self.generation):
            return  # let through before the last change: no probe of this half-open
        if self.state == State.HALF_OPEN and self._probes_out:
            self._probes_started -= 1
            started = self._probes_out.popleft()
            if self._abandoned_since is None:
                self._abandoned_since = started

    def record(self, failed: bool, seconds: float, now: float, generation: int | None = None) -> None:
        """The outcome of a call that `allow` let through. `failed` means the downstream
        failed (unavailable, timed out, internal error), not a business refusal."""
        if generation not in (None, self.generation) or self.state == State.OPEN:
            return  # let through before the last change: it says nothing about this state
        slow = seconds >= self.config.slow_call_seconds
        if self.state == State.HALF_OPEN:
            if self._probes_out:
                self._probes_out.popleft()
            self._abandoned_since = None
            self._probe_results.append(failed or slow)
            if failed or slow:
                self._move(State.OPEN, now)
            elif len(self._probe_results) >= self.config.half_open_probes:
                self._move(State.CLOSED, now)
            return
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
