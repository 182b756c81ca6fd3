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
import uuid
from dataclasses import dataclass
from typing import Any

import grpc

from deploy.local import lifecycle
from deploy.local.stack import INSTANT
from drills.stats import percentile
from ridesaga.common.v1 import common_pb2
from ridesaga.rider.v1 import rider_pb2, rider_pb2_grpc
from ridesaga.trip.v1 import trip_pb2
from services.runtime.topology import service

PICKUP = common_pb2.LatLng(lat=37.7793, lng=-122.4193)
DROPOFF = common_pb2.LatLng(lat=37.8080, lng=-122.4177)


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


async def book_and_follow(stub: rider_pb2_grpc.RiderServiceAsyncStub, rider_id: str) -> tuple[trip_pb2.Ride, float]:
    """Requests a ride and follows it to its end: its last view and the client's milliseconds.
    Raises RideNotEnded if it is not terminal within 120 s."""
    started = time.perf_counter()
    reply = await stub.RequestRide(
        rider_pb2.RequestRideRequest(
            rider_id=rider_id, pickup=PICKUP, dropoff=DROPOFF, idempotency_key=str(uuid.uuid4())
        ),
        timeout=10,
    )
    async for ride in stub.WatchRide(rider_pb2.RideRef(ride_id=reply.ride_id), timeout=120):
        if ride.terminal:
            return ride, (time.perf_counter() - started) * 1000
    raise RideNotEnded(f"ride {reply.ride_id} did not end")


class RideNotEnded(Exception):
    pass


async def _one(stub: rider_pb2_grpc.RiderServiceAsyncStub, rider_id: str) -> tuple[str, float]:
    """The ride's state and the saga's own duration (first step to last, server clock)."""
    ride, _ = await book_and_follow(stub, rider_id)
    steps = ride.steps
    return ride.state, float(steps[-1].at_ms - steps[0].at_ms) if steps else 0.0


async def _batch(label: str, rides: int, concurrency: int) -> Result:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service('rider').ingress_port}") as channel:
        stub = rider_pb2_grpc.RiderServiceStub(channel)
        riders = [
            (await stub.CreateRider(rider_pb2.CreateRiderRequest(name=f"bench {i}"), timeout=10)).rider_id
            for i in range(concurrency)
        ]
        queue: asyncio.Queue[int] = asyncio.Queue()
        for n in range(rides):
            queue.put_nowait(n)
        outcomes: list[tuple[str, float]] = []

        async def worker(rider_id: str) -> None:
            # One rider per worker: a rider has at most one live ride.
            while not queue.empty():
                queue.get_nowait()
                outcomes.append(await _one(stub, rider_id))

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
