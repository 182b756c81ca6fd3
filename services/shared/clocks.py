"""Hybrid logical clock (Kulkarni et al., 2014).

Property: timestamps respect causality (a message's receiver always stamps later than
its sender, whatever the two wall clocks say) while staying within the clock skew of
physical time. A timestamp is (wall_ms, logical), ordered as a tuple."""

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


class HybridLogicalClock:
    def __init__(self, physical: Callable[[], int] = wall_clock_ms) -> None:
        self._physical = physical
        self._last = Timestamp(0, 0)
        self._lock = threading.Lock()

    def now(self) -> Timestamp:
        """Stamps a local or send event."""
        with self._lock:
            wall = max(self._last.wall_ms, self._physical())
            logical = self._last.logical + 1 if wall == self._last.wall_ms else 0
            self._last = Timestamp(wall, logical)
            return self._last

    def observe(self, remote: Timestamp) -> Timestamp:
        """Stamps the receipt of a message stamped `remote`."""
        with self._lock:
            last = self._last
            wall = max(last.wall_ms, remote.wall_ms, self._physical())
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
