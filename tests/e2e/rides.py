"""Booking rides from the tests that share a channel and a mutable `Booking`: a thin shim
over services/rider/client.py (one attempt's key kept across retries, a broken watch
resumed), patient enough for a stack whose services are being killed."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field

import grpc

from ridesaga.rider.v1 import rider_pb2_grpc
from services.blocks.retry import Backoff
from services.rider.client import DOWNTOWN, WHARF, AsyncRiderClient, Place, Retry, rider_address
from tests.support import ride_story

LOS_ANGELES = (34.0522, -118.2437)  # no driver there
# Through a service's crash and restart: about two minutes of retries.
PATIENT = Retry(give_up_after_seconds=120.0, backoff=Backoff(base_seconds=0.2, cap_seconds=2.0))


def channel() -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(rider_address())


def _client(stub: rider_pb2_grpc.RiderServiceAsyncStub) -> AsyncRiderClient:
    return AsyncRiderClient(stub=stub, retry=PATIENT)


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
    return (await _client(stub).create_rider(name, card)).rider_id


async def book(
    stub: rider_pb2_grpc.RiderServiceAsyncStub, booking: Booking, pickup: Place = DOWNTOWN, dropoff: Place = WHARF
) -> Booking:
    """Requests the ride, retrying transient failures with the booking's key."""
    booked = await _client(stub).book(booking.rider_id, pickup, dropoff, key=booking.key)
    booking.ride_id, booking.state = booked.ride_id, booked.state
    booking.attempts, booking.errors = booked.attempts, list(booked.errors)
    return booking


async def settle(stub: rider_pb2_grpc.RiderServiceAsyncStub, booking: Booking, timeout: float) -> Booking:
    """Follows the ride (resuming its watch if it breaks) until terminal; fails after `timeout`."""
    followed = await _client(stub).follow(booking.ride_id, timeout)
    if followed.ride is not None:
        booking.state, booking.outcome = followed.ride.state, followed.ride.outcome
    if not followed.terminal:
        # The database's account too: a ride stuck in the saga and a watch that stopped
        # delivering look the same from here.
        raise AssertionError(
            f"ride {booking.ride_id} still {booking.state} after {timeout}s (as watched)\n{ride_story(booking.ride_id)}"
        )
    return booking


async def ride_many(n: int, label: str, timeout: float = 120) -> list[Booking]:
    """n new riders each book one ride at once; every ride followed until terminal."""
    async with channel() as ch:
        stub = rider_pb2_grpc.RiderServiceStub(ch)
        bookings = [Booking(await create_rider(stub, f"{label} {i}")) for i in range(n)]
        await asyncio.gather(*(book(stub, b) for b in bookings))
        return list(await asyncio.gather(*(settle(stub, b, timeout) for b in bookings)))
