"""Booking rides from tests: asyncio clients of rider's public address, with retries
under the same idempotency key (what a real client does when a call fails)."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field

import grpc

from ridesaga.common.v1 import common_pb2
from ridesaga.rider.v1 import rider_pb2, rider_pb2_grpc
from services.runtime.topology import service

DOWNTOWN = (37.7793, -122.4193)
WHARF = (37.8080, -122.4177)
LOS_ANGELES = (34.0522, -118.2437)  # no driver there
CALL_TIMEOUT = 10.0
# INTERNAL: Envoy resets a stream whose upstream died mid-call; with an idempotency key a
# retry is safe whatever happened.
RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.RESOURCE_EXHAUSTED,  # rate limited: wait and retry
}


def latlng(point: tuple[float, float]) -> common_pb2.LatLng:
    return common_pb2.LatLng(lat=point[0], lng=point[1])


def channel() -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(f"127.0.0.1:{service('rider').ingress_port}")


@dataclass
class Booking:
    rider_id: str
    key: str = field(default_factory=lambda: str(uuid.uuid4()))
    ride_id: str = ""
    state: str = ""
    outcome: str = ""
    attempts: int = 0
    errors: list[str] = field(default_factory=list)


async def create_rider(stub: rider_pb2_grpc.RiderServiceAsyncStub, name: str, card: str = "") -> str:
    for _ in range(30):
        try:
            rider = await stub.CreateRider(
                rider_pb2.CreateRiderRequest(name=name, payment_method=card), timeout=CALL_TIMEOUT
            )
            return rider.rider_id
        except grpc.aio.AioRpcError as error:
            if error.code() not in RETRYABLE:
                raise
            await asyncio.sleep(0.5)
    raise AssertionError("could not create a rider")


async def book(
    stub: rider_pb2_grpc.RiderServiceAsyncStub,
    booking: Booking,
    pickup: tuple[float, float] = DOWNTOWN,
    dropoff: tuple[float, float] = WHARF,
    max_attempts: int = 60,
) -> Booking:
    """Requests the ride, retrying transient failures with the same idempotency key."""
    request = rider_pb2.RequestRideRequest(
        rider_id=booking.rider_id, pickup=latlng(pickup), dropoff=latlng(dropoff), idempotency_key=booking.key
    )
    while booking.attempts < max_attempts:
        booking.attempts += 1
        try:
            reply = await stub.RequestRide(request, timeout=CALL_TIMEOUT)
            booking.ride_id, booking.state = reply.ride_id, reply.state
            return booking
        except grpc.aio.AioRpcError as error:
            booking.errors.append(error.code().name)
            if error.code() not in RETRYABLE:
                raise
            await asyncio.sleep(min(2.0, 0.2 * booking.attempts))
    raise AssertionError(f"ride request failed {max_attempts} times: {booking.errors[-5:]}")


async def settle(stub: rider_pb2_grpc.RiderServiceAsyncStub, booking: Booking, timeout: float) -> Booking:
    """Waits (following the ride's WatchRide stream, reconnecting if it breaks) until terminal."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        try:
            async for ride in stub.WatchRide(
                rider_pb2.RideRef(ride_id=booking.ride_id), timeout=deadline - loop.time()
            ):
                booking.state, booking.outcome = ride.state, ride.outcome
                if ride.terminal:
                    return booking
        except grpc.aio.AioRpcError as error:
            if error.code() not in RETRYABLE:
                raise
            await asyncio.sleep(0.5)
    raise AssertionError(f"ride {booking.ride_id} still {booking.state} after {timeout}s")
