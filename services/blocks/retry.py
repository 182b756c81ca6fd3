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
