"""Retries with capped exponential backoff and full jitter, a retry budget, and the
caller's deadline respected.

Properties: the n-th wait is uniform in [0, min(cap, base * 2**n)] (full jitter: retries
of many clients spread out instead of arriving in waves); a retry is only taken while the
budget allows it (retries stay under `ratio` of calls, plus a small floor), so a failing
downstream sees at most (1 + ratio) times its normal load instead of a retry storm; no
wait or attempt goes past the deadline. Only idempotent calls may be retried."""

from __future__ import annotations

import asyncio
import random
from collections import deque
from dataclasses import dataclass, field

import grpc

# The gRPC answers that say "not now" rather than "no": the call may not have happened (or
# happened and its answer was lost), so an idempotent call may be made again. INTERNAL is
# what Envoy answers when the upstream's stream was reset mid-call.
TRANSIENT_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
    }
)
# The narrower "not now" of a caller that settles something on every other answer
# (payment: a refused authorization ends the ride, a refused capture is written off;
# docs/saga.md, "Permanent payment errors"): only the codes that say in so many words
# that the processor could not answer yet. INTERNAL and UNKNOWN are taken as its final
# answer there, as they always have been; counting them transient would change what
# payment does, e.g. an authorization failed with INTERNAL would wait for the saga's
# re-send instead of ending the ride with outcome payment_rejected.
NOT_NOW_CODES = TRANSIENT_CODES - {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}

# The transient answers `Downstream` retries at once, within the caller's deadline: the
# callee turned the call away (UNAVAILABLE: not reached, one of its stores down, or its
# own breaker open; ABORTED: a request with the same idempotency key is still in flight).
# DEADLINE_EXCEEDED is not among them because each attempt already gets all the time that
# is left; INTERNAL and UNKNOWN are left to the caller, which may take them as the
# callee's answer (payment does, see NOT_NOW_CODES) and would otherwise see them late.
RETRY_NOW_CODES = TRANSIENT_CODES - {
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
}


@dataclass(frozen=True)
class Backoff:
    base_seconds: float = 0.05
    cap_seconds: float = 2.0

    def wait(self, attempt: int, rng: random.Random) -> float:
        """Full jitter: sleep = random(0, min(cap, base * 2**attempt))."""
        return rng.uniform(0.0, min(self.cap_seconds, self.base_seconds * 2**attempt))


@dataclass
class RetryBudget:
    """At most `ratio` retries per call over the last `window_seconds`, plus
    `min_per_second` so that a quiet client can still retry."""

    ratio: float = 0.2
    min_per_second: float = 1.0
    window_seconds: float = 10.0
    _calls: deque[float] = field(default_factory=deque)
    _retries: deque[float] = field(default_factory=deque)

    def _trim(self, now: float) -> None:
        for events in (self._calls, self._retries):
            while events and now - events[0] > self.window_seconds:
                events.popleft()

    def record_call(self, now: float) -> None:
        self._calls.append(now)

    def try_spend(self, now: float) -> bool:
        self._trim(now)
        allowed = self.ratio * len(self._calls) + self.min_per_second * self.window_seconds
        if len(self._retries) + 1 > allowed:
            return False
        self._retries.append(now)
        return True


async def sleep_with_jitter(backoff: Backoff, attempt: int, rng: random.Random | None = None) -> None:
    """The one full-jitter sleep: waits backoff.wait(attempt) seconds."""
    await asyncio.sleep(backoff.wait(attempt, rng or _RNG))


_RNG = random.Random()


def next_wait(attempt: int, backoff: Backoff, rng: random.Random, now: float, deadline: float) -> float | None:
    """The wait before retry `attempt`, or None if waiting would leave no time to call."""
    wait = backoff.wait(attempt, rng)
    return wait if now + wait < deadline else None
