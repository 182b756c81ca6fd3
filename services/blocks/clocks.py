"""The hybrid logical clock (HLC, Kulkarni et al., 2014) that stamps every saga message
and saga-log entry.

Property: timestamps respect causality like Lamport's (a message's receiver stamps later
than its sender), while staying within the clock skew of physical time, so they read as
wall-clock times. A timestamp is (wall_ms, logical), ordered as a tuple. A maximum offset
guard (as in CockroachDB) refuses a remote timestamp too far ahead of the local wall
clock, so no clock, however wrong, drags the others further than `max_offset_ms` ahead of
physical time. Lamport and vector clocks, for contrast: services/exhibits/logical_clocks.py."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Timestamp:
    wall_ms: int
    logical: int

    def __str__(self) -> str:
        return f"{self.wall_ms}.{self.logical}"

    @classmethod
    def parse(cls, text: str) -> Timestamp:
        wall, _, logical = text.partition(".")
        if not wall.isdigit() or not logical.isdigit():
            raise ValueError(f"not an HLC timestamp: {text!r}")
        return cls(int(wall), int(logical))


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def skewed_wall_clock(skew_ms: int) -> Callable[[], int]:
    """A wall clock off by `skew_ms`, for the clock-skew drill."""
    return lambda: wall_clock_ms() + skew_ms


# How far ahead of this process's wall clock a remote timestamp may be. NTP keeps real
# clocks within milliseconds of each other, so 10 s is only reached by a broken clock or
# a corrupt stamp. It is twice the clock-skew drill's 5 s (drills/scenarios.py
# SKEW_MS: payment runs 5 s behind and so sees trip's stamps 5 s ahead), which must pass.
MAX_OFFSET_MS = 10_000


class ClockOffsetExceeded(ValueError):
    """A remote timestamp too far in this clock's future: refused, the clock unchanged.
    A ValueError, like a malformed timestamp: the saga's consumers turn it into Poison,
    so the message goes to the dead-letter topic with this text as its reason."""


class HybridLogicalClock:
    def __init__(self, physical: Callable[[], int] = wall_clock_ms, max_offset_ms: int = MAX_OFFSET_MS) -> None:
        if max_offset_ms <= 0:
            raise ValueError(f"the HLC max offset must be a positive number of ms, got {max_offset_ms}")
        self._physical = physical
        self.max_offset_ms = max_offset_ms
        self._last = Timestamp(0, 0)
        self._lock = threading.Lock()

    def wall_ms(self) -> int:
        """This process's physical clock (skewed, if configured so)."""
        return self._physical()

    def now(self) -> Timestamp:
        """Stamps a local or send event."""
        with self._lock:
            wall = max(self._last.wall_ms, self._physical())
            logical = self._last.logical + 1 if wall == self._last.wall_ms else 0
            self._last = Timestamp(wall, logical)
            return self._last

    def observe(self, remote: Timestamp) -> Timestamp:
        """Stamps the receipt of a message stamped `remote`; raises ClockOffsetExceeded,
        leaving the clock as it was, if `remote` is over `max_offset_ms` ahead of the
        local wall clock. Following it instead would carry the sender's error into every
        clock downstream, for good: an HLC never moves back."""
        with self._lock:
            physical = self._physical()
            if remote.wall_ms - physical > self.max_offset_ms:
                raise ClockOffsetExceeded(
                    f"remote HLC timestamp {remote} is {remote.wall_ms - physical} ms ahead of the local"
                    f" wall clock {physical} ms, over the maximum offset of {self.max_offset_ms} ms"
                )
            last = self._last
            wall = max(last.wall_ms, remote.wall_ms, physical)
            if wall == last.wall_ms == remote.wall_ms:
                logical = max(last.logical, remote.logical) + 1
            elif wall == last.wall_ms:
                logical = last.logical + 1
            elif wall == remote.wall_ms:
                logical = remote.logical + 1
            else:
                logical = 0
            self._last = Timestamp(wall, logical)
            return self._last
