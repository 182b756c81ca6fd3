"""Heartbeat failure detectors: a fixed timeout, and phi accrual (Hayashibara et al., 2004).

Phi adapts to each node's observed heartbeat distribution: suspicion grows continuously
with silence, so one threshold trades detection time against false positives, while a fixed
timeout is tuned by hand and is slow or trigger-happy under jitter. Neither can tell a dead
node from a slow one. No I/O: times are monotonic milliseconds, passed in."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Collection, Hashable
from dataclasses import dataclass
from typing import Protocol

PHI_MAX = 30.0
"""phi is capped here (a heartbeat that late has probability 1e-30): it stays finite when
the normal tail underflows to zero; a threshold must lie below it."""


class FailureDetector(Protocol):
    def heartbeat(self, node: Hashable, now_ms: float) -> None: ...

    def suspect(self, node: Hashable, now_ms: float) -> bool: ...

    def forget(self, node: Hashable) -> None: ...


def _in_order(node: Hashable, last_ms: float, now_ms: float) -> None:
    if now_ms < last_ms:
        raise ValueError(
            f"heartbeat from {node} at {now_ms} ms is before its last one at {last_ms} ms: use a monotonic clock"
        )


class FixedTimeoutDetector:
    """Suspects a node once it has been silent for longer than `timeout_ms`. A node never
    heard from is not suspected: the detector has no opinion on it."""

    def __init__(self, timeout_ms: float) -> None:
        if timeout_ms <= 0:
            raise ValueError(f"timeout_ms must be positive, got {timeout_ms}")
        self.timeout_ms = timeout_ms
        self._last_ms: dict[Hashable, float] = {}

    def heartbeat(self, node: Hashable, now_ms: float) -> None:
        if node in self._last_ms:
            _in_order(node, self._last_ms[node], now_ms)
        self._last_ms[node] = now_ms

    def suspect(self, node: Hashable, now_ms: float) -> bool:
        last_ms = self._last_ms.get(node)
        return last_ms is not None and now_ms - last_ms > self.timeout_ms

    def forget(self, node: Hashable) -> None:
        self._last_ms.pop(node, None)


@dataclass
class _History:
    last_ms: float
    mean_ms: float
    stddev_ms: float
    intervals: deque[float]


class PhiAccrualDetector:
    """phi(now) = -log10(P(an interval longer than now - last heartbeat)), under a normal
    distribution fitted to the node's last `window` inter-arrival intervals, as in Akka and
    Cassandra. The mean is shifted by `acceptable_pause_ms` (silence tolerated on top of
    the usual interval: a GC pause, a retransmission) and the standard deviation is at
    least `min_stddev_ms`, so a perfectly regular node is not suspected after a few ms of
    lateness. phi = 1 means a 10% chance that the node is merely late, phi = 8 one in 10^8.

    Bootstrap: until a node has `min_samples` intervals, its distribution is assumed to be
    mean `bootstrap_interval_ms` (the fleet's nominal heartbeat interval) with a standard
    deviation of a quarter of that (Akka's first-heartbeat estimate); then the window's own
    statistics replace it. Defaults: threshold 8, window 100, minimum stddev 100 ms,
    acceptable pause 2000 ms (one heartbeat of the fleet: a single lost or late heartbeat
    alone raises little suspicion), bootstrap interval 2000 ms, 3 samples."""

    def __init__(
        self,
        threshold: float = 8.0,
        window: int = 100,
        min_stddev_ms: float = 100.0,
        acceptable_pause_ms: float = 2000.0,
        bootstrap_interval_ms: float = 2000.0,
        min_samples: int = 3,
    ) -> None:
        if not 0 < threshold < PHI_MAX:
            raise ValueError(f"threshold must be in (0, {PHI_MAX}), got {threshold}")
        if not 1 <= min_samples <= window:
            raise ValueError(f"need 1 <= min_samples <= window, got {min_samples} and {window}")
        if min_stddev_ms <= 0 or bootstrap_interval_ms <= 0 or acceptable_pause_ms < 0:
            raise ValueError(
                "min_stddev_ms and bootstrap_interval_ms must be positive, acceptable_pause_ms not negative"
            )
        self.threshold = threshold
        self.window = window
        self.min_stddev_ms = min_stddev_ms
        self.acceptable_pause_ms = acceptable_pause_ms
        self.bootstrap_interval_ms = bootstrap_interval_ms
        self.min_samples = min_samples
        self._nodes: dict[Hashable, _History] = {}

    def heartbeat(self, node: Hashable, now_ms: float) -> None:
        history = self._nodes.get(node)
        if history is None:
            mean_ms, stddev_ms = self._estimate(())
            self._nodes[node] = _History(now_ms, mean_ms, stddev_ms, deque(maxlen=self.window))
            return
        _in_order(node, history.last_ms, now_ms)
        history.intervals.append(now_ms - history.last_ms)
        history.last_ms = now_ms
        # Estimated once per heartbeat, not per check: checks are the more frequent call.
        history.mean_ms, history.stddev_ms = self._estimate(history.intervals)

    def _estimate(self, intervals: Collection[float]) -> tuple[float, float]:
        if len(intervals) < self.min_samples:
            mean_ms, stddev_ms = self.bootstrap_interval_ms, self.bootstrap_interval_ms / 4
        else:
            mean_ms = math.fsum(intervals) / len(intervals)
            stddev_ms = math.sqrt(math.fsum((x - mean_ms) ** 2 for x in intervals) / len(intervals))
        return mean_ms, max(stddev_ms, self.min_stddev_ms)

    def phi(self, node: Hashable, now_ms: float) -> float:
        """0.0 for a node never heard from; otherwise in [0, PHI_MAX], non-decreasing with
        silence."""
        history = self._nodes.get(node)
        if history is None:
            return 0.0
        silence_ms = now_ms - history.last_ms
        y = (silence_ms - history.mean_ms - self.acceptable_pause_ms) / history.stddev_ms
        late = 0.5 * math.erfc(y / math.sqrt(2))  # P(interval > silence) = 1 - CDF
        if late <= 10**-PHI_MAX:
            return PHI_MAX
        return max(0.0, -math.log10(late))

    def suspect(self, node: Hashable, now_ms: float) -> bool:
        return self.phi(node, now_ms) > self.threshold

    def forget(self, node: Hashable) -> None:
        self._nodes.pop(node, None)
