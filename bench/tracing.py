"""`ridectl bench tracing`: what tracing costs, measured in one run.

Books the same load of rides with every trace sampled and with none, alternating the two
settings round by round, with the simulated drivers answering at once (so the numbers are
the system's, not the drivers' thinking). Latency is the saga's own duration from its
log (first step to last, server-side clock); throughput is rides ended per second of
wall time for the whole batch."""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass
from typing import Any

from deploy.local import lifecycle
from deploy.local.stack import INSTANT
from drills.stats import percentile
from ridesaga.trip.v1 import trip_pb2
from services.rider.client import DOWNTOWN, ONCE, WHARF, AsyncRiderClient


@dataclass(frozen=True)
class Result:
    label: str
    rides: int
    completed: int
    wall_seconds: float
    latencies_ms: list[float]

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.latencies_ms)

        return {
            "label": self.label,
            "rides": self.rides,
            "completed": self.completed,
            "throughput_rides_per_s": round(self.completed / self.wall_seconds, 2),
            "latency_ms_p50": round(percentile(ordered, 0.50), 1),
            "latency_ms_p95": round(percentile(ordered, 0.95), 1),
            "latency_ms_p99": round(percentile(ordered, 0.99), 1),
            "latency_ms_mean": round(statistics.fmean(ordered), 1) if ordered else 0.0,
        }


def bench_client() -> AsyncRiderClient:
    """No retries: under overload the failures are what the benchmark counts."""
    return AsyncRiderClient(retry=ONCE)


async def book_and_follow(client: AsyncRiderClient, rider_id: str) -> tuple[trip_pb2.Ride, float]:
    """Requests a ride and follows it to its end: its last view and the client's milliseconds.
    Raises RideNotEnded if it is not terminal within 120 s."""
    started = time.perf_counter()
    booked = await client.book(rider_id, DOWNTOWN, WHARF)
    followed = await client.follow(booked.ride_id, 120)
    if followed.ride is None or not followed.terminal:
        raise RideNotEnded(f"ride {booked.ride_id} did not end")
    return followed.ride, (time.perf_counter() - started) * 1000


class RideNotEnded(Exception):
    pass


async def _one(client: AsyncRiderClient, rider_id: str) -> tuple[str, float]:
    """The ride's state and the saga's own duration (first step to last, server clock)."""
    ride, _ = await book_and_follow(client, rider_id)
    steps = ride.steps
    return ride.state, float(steps[-1].at_ms - steps[0].at_ms) if steps else 0.0


async def _batch(label: str, rides: int, concurrency: int) -> Result:
    async with bench_client() as client:
        riders = [(await client.create_rider(f"bench {i}")).rider_id for i in range(concurrency)]
        queue: asyncio.Queue[int] = asyncio.Queue()
        for n in range(rides):
            queue.put_nowait(n)
        outcomes: list[tuple[str, float]] = []

        async def worker(rider_id: str) -> None:
            # One rider per worker: a rider has at most one live ride.
            while not queue.empty():
                queue.get_nowait()
                outcomes.append(await _one(client, rider_id))

        started = time.monotonic()
        await asyncio.gather(*(worker(r) for r in riders))
        wall = time.monotonic() - started
    completed = [ms for state, ms in outcomes if state == "COMPLETED"]
    return Result(label, rides, len(completed), wall, completed)


def tracing(rides: int, concurrency: int, rounds: int) -> list[dict[str, Any]]:
    results: dict[str, list[Result]] = {"tracing on (ratio 1.0)": [], "tracing off (ratio 0.0)": []}
    with lifecycle.reconfigured(lambda s: s.replace(fleet_pace=INSTANT)) as instant:
        for _ in range(rounds):
            for label, ratio in (("tracing on (ratio 1.0)", 1.0), ("tracing off (ratio 0.0)", 0.0)):
                lifecycle.up(stack=instant.replace(trace_sample_ratio=ratio))
                asyncio.run(_batch("warm-up", concurrency, concurrency))
                results[label].append(asyncio.run(_batch(label, rides, concurrency)))
    merged = []
    for label, runs in results.items():
        merged.append(
            Result(
                label,
                sum(r.rides for r in runs),
                sum(r.completed for r in runs),
                sum(r.wall_seconds for r in runs),
                [ms for r in runs for ms in r.latencies_ms],
            ).summary()
        )
    return merged
