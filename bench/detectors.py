"""Failure detectors compared on a simulated, jittery driver fleet (no I/O, seeded).

Every driver heartbeats every 2 s +-20%; each driver draws its own pause rate (0-4% of
heartbeats, a worse network for some), and a paused heartbeat comes 0.5-4 s late (a GC
pause, a retransmission). About a quarter of the drivers crash at a random time. One
detector per setting (phi with its defaults otherwise) watches the whole fleet for 10
simulated minutes and is asked about every driver every `check_ms`, as matching would.

- detection time: from a crash to the first check that suspects the crashed node;
- false suspicions per node-hour: episodes on live nodes (a check suspects a node that
  the previous check trusted, and it was alive), per hour of live time watched;
- live checks suspected: the share of checks on live nodes that said "suspect"."""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from services.blocks.failure_detectors import FailureDetector, FixedTimeoutDetector, PhiAccrualDetector

NOMINAL_MS = 2000.0
JITTER = 0.2
MAX_PAUSE_RATE = 0.04
PAUSE_MS = (500.0, 4000.0)
CRASH_FRACTION = 0.25

SETTINGS: list[tuple[str, str, Callable[[], FailureDetector]]] = [
    ("fixed timeout", "3 s", lambda: FixedTimeoutDetector(3000)),
    ("fixed timeout", "5 s", lambda: FixedTimeoutDetector(5000)),
    ("fixed timeout", "7 s", lambda: FixedTimeoutDetector(7000)),  # tuned by hand: just above the longest gap here
    ("fixed timeout", "10 s", lambda: FixedTimeoutDetector(10_000)),
    ("phi accrual", "phi > 3", lambda: PhiAccrualDetector(threshold=3)),
    ("phi accrual", "phi > 8", lambda: PhiAccrualDetector(threshold=8)),
    ("phi accrual", "phi > 12", lambda: PhiAccrualDetector(threshold=12)),
]


@dataclass(frozen=True)
class Node:
    beats: list[float]
    crash_ms: float | None


def fleet(rng: random.Random, nodes: int, duration_ms: float) -> list[Node]:
    result = []
    for _ in range(nodes):
        pause_rate = rng.uniform(0, MAX_PAUSE_RATE)
        # Crashes leave a minute of history before and a minute to be detected after.
        crash_ms = rng.uniform(60_000, duration_ms - 60_000) if rng.random() < CRASH_FRACTION else None
        beats, t = [], rng.uniform(0, NOMINAL_MS)
        while t < (duration_ms if crash_ms is None else crash_ms):
            beats.append(t)
            t += NOMINAL_MS * rng.uniform(1 - JITTER, 1 + JITTER)
            if rng.random() < pause_rate:
                t += rng.uniform(*PAUSE_MS)
        result.append(Node(beats, crash_ms))
    return result


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


def measure(detector: FailureDetector, nodes: list[Node], duration_ms: float, check_ms: float) -> dict[str, Any]:
    detections: list[float] = []
    live_checks = suspected_checks = episodes = 0
    for name, node in enumerate(nodes):
        pending, was_suspected = iter(node.beats), False
        next_beat = next(pending, math.inf)
        for k in range(math.ceil(node.beats[0] / check_ms), math.ceil(duration_ms / check_ms)):
            now = k * check_ms
            while next_beat <= now:
                detector.heartbeat(name, next_beat)
                next_beat = next(pending, math.inf)
            suspected = detector.suspect(name, now)
            if node.crash_ms is not None and now >= node.crash_ms:
                if suspected:
                    detections.append(now - node.crash_ms)
                    break
                continue
            live_checks += 1
            suspected_checks += suspected
            episodes += suspected and not was_suspected
            was_suspected = suspected
    crashed = sum(node.crash_ms is not None for node in nodes)
    return {
        "crashed": crashed,
        "detected": len(detections),
        "detection_ms_mean": round(statistics.fmean(detections)) if detections else None,
        "detection_ms_p95": round(_percentile(detections, 0.95)) if detections else None,
        "false_suspicions_per_node_hour": round(episodes / (live_checks * check_ms / 3_600_000), 3),
        "live_checks_suspected_pct": round(100 * suspected_checks / live_checks, 3),
    }


def run(seed: int = 1, nodes: int = 200, minutes: float = 10, check_ms: float = 100) -> list[dict[str, Any]]:
    duration_ms = minutes * 60_000
    simulated = fleet(random.Random(seed), nodes, duration_ms)
    return [
        {"detector": detector, "setting": setting, **measure(make(), simulated, duration_ms, check_ms)}
        for detector, setting, make in SETTINGS
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.detectors",
        description="Failure detectors compared on a simulated, jittery driver fleet.",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--nodes", type=int, default=200)
    parser.add_argument("--minutes", type=float, default=10, help="simulated time")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.nodes < 1 or args.minutes < 3:
        parser.error("need --nodes >= 1 and --minutes >= 3 (a minute of history before a crash, a minute to detect it)")
    results = run(args.seed, args.nodes, args.minutes)
    if args.json:
        print(json.dumps({"benchmark": "failure_detectors", "seed": args.seed, "results": results}))
        return 0
    print(
        "| detector | setting | crashed nodes detected | detection mean ms | detection p95 ms | false suspicions per node-hour | live checks suspected % |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['detector']} | {r['setting']} | {r['detected']}/{r['crashed']} | {r['detection_ms_mean']} |"
            f" {r['detection_ms_p95']} | {r['false_suspicions_per_node_hour']} | {r['live_checks_suspected_pct']} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
