"""The card processor goes down for a while under steady load: payment's circuit breaker
opens, rides fail fast instead of hanging, it half-opens, and closes once the processor
is back. Writes a plot of breaker state, ride latency and failure rate over time."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import redis.asyncio as aioredis

from ridectl import checker
from ridectl.drills import Verdict
from ridectl.stack import paths
from ridesaga.common.v1 import common_pb2
from ridesaga.psp.v1 import psp_pb2, psp_pb2_grpc
from ridesaga.rider.v1 import rider_pb2, rider_pb2_grpc
from services.shared.downstream import BREAKERS_KEY
from services.shared.topology import INFRA, service

BREAKER = "payment->psp"
OUTAGE_STARTS, OUTAGE_ENDS, LOAD_ENDS = 8.0, 20.0, 32.0
ARRIVAL_SECONDS = 0.5
LEVEL = {"closed": 0, "half_open": 1, "open": 2}


@dataclass
class Ride:
    requested_at: float
    ended_at: float
    outcome: str


async def _psp_outage(on: bool) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service('psp').ingress_port}") as ch:
        await psp_pb2_grpc.PspServiceStub(ch).SetFaults(psp_pb2.Faults(outage=on), timeout=5)


async def _one_ride(stub: rider_pb2_grpc.RiderServiceAsyncStub, start: float, rides: list[Ride]) -> None:
    requested = time.monotonic() - start
    try:
        rider = await stub.CreateRider(rider_pb2.CreateRiderRequest(name="outage drill"), timeout=10)
        reply = await stub.RequestRide(
            rider_pb2.RequestRideRequest(
                rider_id=rider.rider_id,
                pickup=common_pb2.LatLng(lat=37.7793, lng=-122.4193),
                dropoff=common_pb2.LatLng(lat=37.8080, lng=-122.4177),
                idempotency_key=str(uuid.uuid4()),
            ),
            timeout=10,
        )
        async for ride in stub.WatchRide(rider_pb2.RideRef(ride_id=reply.ride_id), timeout=120):
            if ride.terminal:
                rides.append(Ride(requested, time.monotonic() - start, ride.outcome))
                return
    except grpc.aio.AioRpcError as error:
        rides.append(Ride(requested, time.monotonic() - start, error.code().name))


async def _arrivals(stub: rider_pb2_grpc.RiderServiceAsyncStub, start: float, rides: list[Ride]) -> None:
    """Open-loop load: a new rider books every ARRIVAL_SECONDS, whatever the others wait for."""
    tasks = []
    while time.monotonic() - start < LOAD_ENDS:
        tasks.append(asyncio.create_task(_one_ride(stub, start, rides)))
        await asyncio.sleep(ARRIVAL_SECONDS)
    await asyncio.gather(*tasks)


async def _sample(start: float, samples: list[tuple[float, str]], done: asyncio.Event) -> None:
    client = aioredis.Redis(host="127.0.0.1", port=INFRA.redis, decode_responses=True)
    while not done.is_set():
        raw = await client.hget(BREAKERS_KEY, BREAKER)
        samples.append((time.monotonic() - start, json.loads(raw)["state"] if raw else "closed"))
        await asyncio.sleep(0.25)  # the sampling period of the plot
    await client.aclose()


async def _drill() -> tuple[list[Ride], list[tuple[float, str]]]:
    rides: list[Ride] = []
    samples: list[tuple[float, str]] = []
    done = asyncio.Event()
    start = time.monotonic()
    sampler = asyncio.create_task(_sample(start, samples, done))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service('rider').ingress_port}") as ch:
        stub = rider_pb2_grpc.RiderServiceStub(ch)
        load = asyncio.create_task(_arrivals(stub, start, rides))
        await asyncio.sleep(OUTAGE_STARTS)
        await _psp_outage(True)
        await asyncio.sleep(OUTAGE_ENDS - OUTAGE_STARTS)
        await _psp_outage(False)
        await load
    done.set()
    await sampler
    return rides, samples


def plot(rides: list[Ride], samples: list[tuple[float, str]], target: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (state, latency, failures) = plt.subplots(3, 1, sharex=True, figsize=(9, 7))
    for axis in (state, latency, failures):
        axis.axvspan(OUTAGE_STARTS, OUTAGE_ENDS, color="#f4c7c3", label="psp outage")
    state.step([t for t, _ in samples], [LEVEL[s] for _, s in samples], where="post", color="#1f4e79")
    state.set_yticks([0, 1, 2], ["closed", "half-open", "open"])
    state.set_title("payment -> psp circuit breaker")
    ok = [r for r in rides if r.outcome == "completed"]
    bad = [r for r in rides if r.outcome != "completed"]
    latency.scatter([r.ended_at for r in ok], [r.ended_at - r.requested_at for r in ok], s=10, label="completed")
    latency.scatter(
        [r.ended_at for r in bad], [r.ended_at - r.requested_at for r in bad], s=10, c="#c0392b", label="failed"
    )
    latency.set_ylabel("ride latency (s)")
    latency.legend(loc="upper right")
    buckets = range(0, int(max((r.ended_at for r in rides), default=LOAD_ENDS)) + 2, 2)
    rates = []
    for b in buckets:
        ended = [r for r in rides if b <= r.ended_at < b + 2]
        rates.append(100 * sum(r.outcome != "completed" for r in ended) / len(ended) if ended else 0)
    failures.bar(list(buckets), rates, width=1.8, align="edge", color="#c0392b")
    failures.set_ylabel("rides failed (%)")
    failures.set_xlabel("seconds since the drill started")
    fig.tight_layout()
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, dpi=90)
    plt.close(fig)


def run(report: Path | None = None) -> Verdict:
    rides, samples = asyncio.run(_drill())
    states = [s for _, s in samples]
    opened = "open" in states
    closed_after = bool(states) and states[-1] == "closed"
    target = (report or paths.REPO / "reports") / "psp-outage.png"
    plot(rides, samples, target)
    consistent = checker.report(checker.collect())
    during = [r for r in rides if OUTAGE_STARTS + 2 <= r.requested_at < OUTAGE_ENDS]
    fast = [r for r in during if r.outcome == "payment_unavailable"]
    summary: dict[str, Any] = {
        "rides": len(rides),
        "completed": sum(r.outcome == "completed" for r in rides),
        "refused_fast_during_outage": len(fast),
        "median_refusal_seconds": sorted(r.ended_at - r.requested_at for r in fast)[len(fast) // 2] if fast else None,
    }
    return {
        "scenario": "psp-outage",
        "valid": opened and closed_after and consistent["valid"],
        "breaker_opened": opened,
        "breaker_closed_after_recovery": closed_after,
        "checker": {"valid": consistent["valid"], "violations": consistent["violations"]},
        "plot": str(target),
        **summary,
    }
