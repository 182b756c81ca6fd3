"""The simulated driver fleet: registers drivers once (their ids survive restarts in a
state file), streams each driver's heartbeats to the driver service through its
sidecar, and answers ride offers: most are accepted, and an accepted ride is driven and
reported complete a moment later. Broken streams reconnect with jittered backoff."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
from opentelemetry import propagate, trace

from ridesaga.common.v1 import common_pb2
from ridesaga.driver.v1 import driver_pb2, driver_pb2_grpc
from services.blocks.retry import Backoff, next_wait
from services.fleet.sim import SAN_FRANCISCO, spawn, wander
from services.runtime import mesh
from services.runtime.config import telemetry_target, trace_sample_ratio
from services.runtime.telemetry import setup_logging, setup_tracing
from services.runtime.topology import service

log = logging.getLogger("fleet")
tracer = trace.get_tracer("fleet")

HEARTBEAT_SECONDS = 2.0
THINK_SECONDS = (0.1, 0.6)
RIDE_SECONDS = (0.5, 2.0)
# Answers that may not have reached the driver service: the app sends them again.
UNREACHED = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}
)
ANSWER_RETRY_SECONDS = 30.0
ANSWER_BACKOFF = Backoff(base_seconds=0.2, cap_seconds=3.0)


def _seconds_range(name: str, default: tuple[float, float]) -> tuple[float, float]:
    """A "MIN,MAX" pair of seconds from the environment (the benchmarks set 0,0)."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        low, high = (float(part) for part in raw.split(","))
    except ValueError:
        raise SystemExit(f"fleet: {name} must be MIN,MAX seconds, got {raw!r}") from None
    if not 0 <= low <= high:
        raise SystemExit(f"fleet: {name} must satisfy 0 <= MIN <= MAX, got {raw!r}")
    return low, high


CALL_TIMEOUT_SECONDS = 5.0
BACKOFF_CAP_SECONDS = 10.0


@dataclass(frozen=True)
class Pace:
    """How long a simulated driver thinks about an offer, and how long a ride lasts."""

    think: tuple[float, float]
    ride: tuple[float, float]


def _settings() -> tuple[int, float, Path, str, Pace]:
    raw = os.environ.get("RIDESAGA_FLEET_SIZE", "30")
    if not raw.isdigit() or not 0 < int(raw) <= 1000:
        raise SystemExit(f"fleet: RIDESAGA_FLEET_SIZE must be an integer in 1..1000, got {raw!r}")
    rate = os.environ.get("RIDESAGA_FLEET_ACCEPT_RATE", "0.9")
    try:
        accept_rate = float(rate)
    except ValueError:
        accept_rate = -1.0
    if not 0.0 <= accept_rate <= 1.0:
        raise SystemExit(f"fleet: RIDESAGA_FLEET_ACCEPT_RATE must be a number in 0..1, got {rate!r}")
    state = Path(os.environ.get("RIDESAGA_FLEET_STATE", "fleet.json"))
    target = os.environ.get("RIDESAGA_DRIVER_TARGET", f"127.0.0.1:{service('driver').ingress_port}")
    pace = Pace(
        _seconds_range("RIDESAGA_FLEET_THINK_SECONDS", THINK_SECONDS),
        _seconds_range("RIDESAGA_FLEET_RIDE_SECONDS", RIDE_SECONDS),
    )
    return int(raw), accept_rate, state, target, pace


async def _registered(
    stub: driver_pb2_grpc.DriverServiceAsyncStub, size: int, state: Path, rng: random.Random
) -> list[str]:
    ids: list[str] = json.loads(state.read_text()) if state.exists() else []
    while len(ids) < size:
        where = spawn(SAN_FRANCISCO, rng)
        reply = await stub.RegisterDriver(
            driver_pb2.RegisterDriverRequest(
                name=f"sim-driver-{len(ids):03d}", location=common_pb2.LatLng(lat=where.lat, lng=where.lng)
            ),
            timeout=CALL_TIMEOUT_SECONDS,
        )
        ids.append(reply.driver_id)
        state.write_text(json.dumps(ids))
    return ids[:size]


async def _drive(stub: driver_pb2_grpc.DriverServiceAsyncStub, driver_id: str, rng: random.Random) -> None:
    where = spawn(SAN_FRANCISCO, rng)
    attempt = 0

    async def beats() -> AsyncIterator[driver_pb2.Heartbeat]:
        nonlocal where, attempt
        while True:
            yield driver_pb2.Heartbeat(
                driver_id=driver_id,
                location=common_pb2.LatLng(lat=where.lat, lng=where.lng),
                sent_at_ms=int(time.time() * 1000),
            )
            attempt = 0
            where = wander(where, SAN_FRANCISCO, rng)
            await asyncio.sleep(HEARTBEAT_SECONDS * rng.uniform(0.8, 1.2))

    while True:
        try:
            await stub.StreamHeartbeats(beats())
        except grpc.aio.AioRpcError as error:
            log.warning("heartbeat stream broke", extra={"fields": {"driver_id": driver_id, "code": error.code().name}})
        attempt += 1
        await asyncio.sleep(rng.uniform(0, min(BACKOFF_CAP_SECONDS, 0.5 * 2**attempt)))


async def _answer(
    stub: driver_pb2_grpc.DriverServiceAsyncStub,
    driver_id: str,
    offer: driver_pb2.Offer,
    accept: bool,
    rng: random.Random,
    pace: Pace,
) -> None:
    # The app's work joins the ride's trace, whose context came with the offer.
    parent = propagate.extract({"traceparent": offer.traceparent} if offer.traceparent else {})
    with tracer.start_as_current_span("driver app: answer offer", context=parent) as span:
        span.set_attribute("ride.id", offer.ride_id)
        span.set_attribute("driver.accepts", accept)
        await _respond(stub, driver_id, offer, accept, rng, pace)


async def _respond(
    stub: driver_pb2_grpc.DriverServiceAsyncStub,
    driver_id: str,
    offer: driver_pb2.Offer,
    accept: bool,
    rng: random.Random,
    pace: Pace,
) -> None:
    await asyncio.sleep(rng.uniform(*pace.think))
    answer = driver_pb2.OfferResponse(
        ride_id=offer.ride_id, driver_id=driver_id, fence=offer.fence, attempt=offer.attempt, accept=accept
    )
    await _until_answered(lambda: stub.RespondToOffer(answer, timeout=CALL_TIMEOUT_SECONDS), rng)
    if accept:
        await asyncio.sleep(rng.uniform(*pace.ride))
        done = driver_pb2.CompleteTripRequest(ride_id=offer.ride_id, driver_id=driver_id, fence=offer.fence)
        await _until_answered(lambda: stub.CompleteTrip(done, timeout=CALL_TIMEOUT_SECONDS), rng)


async def _until_answered(call: Callable[[], Awaitable[object]], rng: random.Random) -> None:
    """Sends the app's answer again, with full-jitter backoff, while the driver service
    cannot be reached (it crashed, or its sidecar did), for up to ANSWER_RETRY_SECONDS.
    Safe to repeat: the driver service gives each answer one message id, so the saga
    counts it once. A refusal (FAILED_PRECONDITION: the reservation is gone) is final."""
    deadline = time.monotonic() + ANSWER_RETRY_SECONDS
    attempt = 0
    while True:
        try:
            await call()
            return
        except grpc.aio.AioRpcError as error:
            wait = next_wait(attempt, ANSWER_BACKOFF, rng, time.monotonic(), deadline)
            if error.code() not in UNREACHED or wait is None:
                raise
        attempt += 1
        await asyncio.sleep(wait)


async def _take_offers(
    stub: driver_pb2_grpc.DriverServiceAsyncStub, driver_id: str, accept_rate: float, pace: Pace, rng: random.Random
) -> None:
    attempt = 0
    while True:
        try:
            async for offer in stub.WatchOffers(driver_pb2.WatchOffersRequest(driver_id=driver_id)):
                attempt = 0
                try:
                    await _answer(stub, driver_id, offer, rng.random() < accept_rate, rng, pace)
                except grpc.aio.AioRpcError as error:
                    log.warning(
                        "answering an offer failed",
                        extra={"fields": {"driver_id": driver_id, "ride_id": offer.ride_id, "code": error.code().name}},
                    )
        except grpc.aio.AioRpcError as error:
            log.warning("offer stream broke", extra={"fields": {"driver_id": driver_id, "code": error.code().name}})
        attempt += 1
        await asyncio.sleep(rng.uniform(0, min(BACKOFF_CAP_SECONDS, 0.5 * 2**attempt)))


async def run() -> None:
    size, accept_rate, state, target, pace = _settings()
    setup_logging("fleet")
    provider = setup_tracing("fleet", *telemetry_target(), trace_sample_ratio())
    rng = random.Random()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    async with mesh.sidecar_channel(target) as channel:
        stub = driver_pb2_grpc.DriverServiceStub(channel)
        ids = await _registered(stub, size, state, rng)
        log.info("fleet on the road", extra={"fields": {"drivers": len(ids)}})
        drivers = [asyncio.create_task(_drive(stub, driver_id, random.Random(driver_id))) for driver_id in ids]
        drivers += [
            asyncio.create_task(_take_offers(stub, driver_id, accept_rate, pace, random.Random(f"offers-{driver_id}")))
            for driver_id in ids
        ]
        await stopping.wait()
        for task in drivers:
            task.cancel()
        await asyncio.gather(*drivers, return_exceptions=True)
    provider.shutdown()


def main() -> None:
    asyncio.run(run())


if __name__ == "__main__":
    main()
