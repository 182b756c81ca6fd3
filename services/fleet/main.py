"""The simulated driver fleet: registers drivers once (their ids survive restarts in a
state file), streams each driver's heartbeats to the driver service through its
sidecar, and answers ride offers: most are accepted, and an accepted ride is driven and
reported complete a moment later. Broken streams reconnect with jittered backoff."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc
from opentelemetry import propagate, trace

from ridesaga.common.v1 import common_pb2
from ridesaga.driver.v1 import driver_pb2, driver_pb2_grpc
from services.blocks.retry import TRANSIENT_CODES, Backoff, next_wait, sleep_with_jitter
from services.fleet.sim import SAN_FRANCISCO, spawn, wander
from services.runtime import mesh
from services.runtime.config import FleetSettings, fleet_settings, telemetry_target, trace_sample_ratio
from services.runtime.telemetry import setup_logging, setup_tracing

log = logging.getLogger("fleet")
tracer = trace.get_tracer("fleet")

HEARTBEAT_SECONDS = 2.0
CALL_TIMEOUT_SECONDS = 5.0
# A broken heartbeat or offer stream is opened again after a full-jitter wait, so drivers
# cut off together (the driver service restarted) do not all come back at once.
STREAM_BACKOFF = Backoff(base_seconds=0.5, cap_seconds=10.0)
ANSWER_RETRY_SECONDS = 30.0
ANSWER_BACKOFF = Backoff(base_seconds=0.2, cap_seconds=3.0)


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
        await sleep_with_jitter(STREAM_BACKOFF, attempt, rng)


async def _answer(
    stub: driver_pb2_grpc.DriverServiceAsyncStub,
    driver_id: str,
    offer: driver_pb2.Offer,
    accept: bool,
    rng: random.Random,
    fleet: FleetSettings,
) -> None:
    # The app's work joins the ride's trace, whose context came with the offer.
    parent = propagate.extract({"traceparent": offer.traceparent} if offer.traceparent else {})
    with tracer.start_as_current_span("driver app: answer offer", context=parent) as span:
        span.set_attribute("ride.id", offer.ride_id)
        span.set_attribute("driver.accepts", accept)
        await _respond(stub, driver_id, offer, accept, rng, fleet)


async def _respond(
    stub: driver_pb2_grpc.DriverServiceAsyncStub,
    driver_id: str,
    offer: driver_pb2.Offer,
    accept: bool,
    rng: random.Random,
    fleet: FleetSettings,
) -> None:
    await asyncio.sleep(rng.uniform(*fleet.think_seconds))
    answer = driver_pb2.OfferResponse(
        ride_id=offer.ride_id, driver_id=driver_id, fence=offer.fence, attempt=offer.attempt, accept=accept
    )
    await _until_answered(lambda: stub.RespondToOffer(answer, timeout=CALL_TIMEOUT_SECONDS), rng)
    if accept:
        await asyncio.sleep(rng.uniform(*fleet.ride_seconds))
        done = driver_pb2.CompleteTripRequest(ride_id=offer.ride_id, driver_id=driver_id, fence=offer.fence)
        await _until_answered(lambda: stub.CompleteTrip(done, timeout=CALL_TIMEOUT_SECONDS), rng)


async def _until_answered(call: Callable[[], Awaitable[object]], rng: random.Random) -> None:
    """Sends the app's answer again, with full-jitter backoff, while the driver service
    answers "not now" (TRANSIENT_CODES: it crashed, or its sidecar did, and the answer may
    not have reached it), for up to ANSWER_RETRY_SECONDS.
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
            if error.code() not in TRANSIENT_CODES or wait is None:
                raise
        attempt += 1
        await asyncio.sleep(wait)


async def _take_offers(
    stub: driver_pb2_grpc.DriverServiceAsyncStub, driver_id: str, fleet: FleetSettings, rng: random.Random
) -> None:
    attempt = 0
    while True:
        try:
            async for offer in stub.WatchOffers(driver_pb2.WatchOffersRequest(driver_id=driver_id)):
                attempt = 0
                try:
                    await _answer(stub, driver_id, offer, rng.random() < fleet.accept_rate, rng, fleet)
                except grpc.aio.AioRpcError as error:
                    log.warning(
                        "answering an offer failed",
                        extra={"fields": {"driver_id": driver_id, "ride_id": offer.ride_id, "code": error.code().name}},
                    )
        except grpc.aio.AioRpcError as error:
            log.warning("offer stream broke", extra={"fields": {"driver_id": driver_id, "code": error.code().name}})
        attempt += 1
        await sleep_with_jitter(STREAM_BACKOFF, attempt, rng)


async def run() -> None:
    fleet = fleet_settings()
    setup_logging("fleet")
    provider = setup_tracing("fleet", *telemetry_target(), trace_sample_ratio())
    rng = random.Random()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    async with mesh.sidecar_channel(fleet.driver_target) as channel:
        stub = driver_pb2_grpc.DriverServiceStub(channel)
        ids = await _registered(stub, fleet.size, fleet.state, rng)
        log.info("fleet on the road", extra={"fields": {"drivers": len(ids)}})
        drivers = [asyncio.create_task(_drive(stub, driver_id, random.Random(driver_id))) for driver_id in ids]
        drivers += [
            asyncio.create_task(_take_offers(stub, driver_id, fleet, random.Random(f"offers-{driver_id}")))
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
