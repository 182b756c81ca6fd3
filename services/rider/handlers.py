"""The rider service's use cases, one handler each: a command in, a domain result out,
the adapters passed in (adapters.py, or fakes in tests/unit/test_rider_handlers.py).

RequestRide follows Stripe's idempotency-key protocol (services/blocks/idempotency.py):
one key books at most one ride, whatever the retries and crashes, and a rider holds at
most one live ride (the live_rides slot) whatever the keys."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol

from redis.exceptions import RedisError

from ridesaga.trip.v1 import trip_pb2
from services.blocks import idempotency
from services.blocks.idempotency import KeyRecord, Replay, Resume
from services.blocks.ratelimit import Decision
from services.rider.domain import (
    CreateRider,
    GetRider,
    RecoveryPoint,
    RequestRide,
    RideBooked,
    Rider,
    RideRef,
    RideRequest,
    new_rider,
    ride_request,
)
from services.runtime import validation
from services.runtime.errors import DependencyUnavailable, DomainError, FailedPrecondition, NotFound, RateLimited
from services.runtime.telemetry import ride_scope

log = logging.getLogger(__name__)
# A slot whose ride trip never created is an orphan once it is this old: far past the
# deadline of the StartRide that should have created it.
ORPHANED_AFTER_SECONDS = 30.0
FREE_BATCH = 100

TripRide = trip_pb2.Ride
"""A ride as trip describes it. The rider is trip's edge: it passes trip's answer on
unchanged and reads of it only whether the ride has ended."""


class Riders(Protocol):
    async def add(self, rider: Rider) -> None: ...

    async def get(self, rider_id: uuid.UUID) -> Rider | None: ...


class Requests(Protocol):
    """Idempotency keys and live-ride slots (adapters.RequestStore)."""

    async def create_key(
        self, rider_id: uuid.UUID, key: str, fingerprint: str, ride_id: uuid.UUID, locked_until_ms: int
    ) -> bool: ...

    async def lock_existing(
        self,
        rider_id: uuid.UUID,
        key: str,
        decide: Callable[[KeyRecord], Replay | Resume],
        locked_until_ms: int,
    ) -> tuple[Replay | Resume, uuid.UUID, RideBooked | None]: ...

    async def advance(self, rider_id: uuid.UUID, key: str, recovery_point: RecoveryPoint) -> None: ...

    async def finish(self, rider_id: uuid.UUID, key: str, booked: RideBooked) -> None: ...

    async def unlock(self, rider_id: uuid.UUID, key: str) -> None: ...

    async def forget(self, rider_id: uuid.UUID, key: str) -> None: ...

    async def claim_live_ride(self, rider_id: uuid.UUID, ride_id: uuid.UUID) -> tuple[uuid.UUID, float]: ...

    async def slots_older_than(self, seconds: float, limit: int) -> list[tuple[uuid.UUID, uuid.UUID]]: ...

    async def release_live_ride(self, rider_id: uuid.UUID, ride_id: uuid.UUID) -> None: ...


class Trip(Protocol):
    """The trip service (adapters.TripClient); its refusals arrive as DomainErrors."""

    async def start_ride(self, ride_id: uuid.UUID, want: RideRequest, payment_method: str) -> str: ...

    async def get_ride(self, ride_id: uuid.UUID) -> TripRide | None: ...

    async def cancel_ride(self, ride_id: uuid.UUID) -> TripRide: ...

    def watch_ride(self, ride_id: uuid.UUID) -> AsyncIterator[TripRide]: ...


class Limiter(Protocol):
    async def take(self, key: str) -> Decision: ...


@dataclass(frozen=True)
class Adapters:
    riders: Riders
    requests: Requests
    trip: Trip
    limiter: Limiter


def _now_ms() -> int:
    return int(time.time() * 1000)


async def create_rider(command: CreateRider, adapters: Adapters) -> Rider:
    rider = new_rider(command.name, command.payment_method)
    await adapters.riders.add(rider)
    return rider


async def get_rider(command: GetRider, adapters: Adapters) -> Rider:
    rider = await adapters.riders.get(validation.identifier("rider_id", command.rider_id))
    if rider is None:
        raise NotFound("rider", command.rider_id)
    return rider


async def request_ride(command: RequestRide, adapters: Adapters) -> RideBooked:
    want = ride_request(command.rider_id, command.pickup, command.dropoff)
    key = idempotency.validate_key(command.idempotency_key)
    await _within_rate(adapters.limiter, want.rider_id)
    rider = await adapters.riders.get(want.rider_id)
    if rider is None:
        raise NotFound("rider", command.rider_id)
    taken = await _take_key(adapters.requests, want, key)
    if isinstance(taken, RideBooked):
        return taken
    ride_id, recovery = taken
    with ride_scope(str(ride_id)):
        return await _book(adapters, want, key, ride_id, recovery, rider.payment_method)


async def _within_rate(limiter: Limiter, rider_id: uuid.UUID) -> None:
    """Per-rider token bucket. If Redis is down the limit is not enforced (fail open:
    a rate limit protects capacity, not correctness) and Envoy's edge limit remains."""
    try:
        decision = await limiter.take(str(rider_id))
    except RedisError as error:
        log.warning("rate limiter unavailable; allowing", extra={"fields": {"error": repr(error)}})
        return
    if not decision.allowed:
        raise RateLimited(f"rider {rider_id} ride requests", decision.retry_after_seconds)


async def _take_key(requests: Requests, want: RideRequest, key: str) -> RideBooked | tuple[uuid.UUID, str]:
    """Locks the key for this request: a new key starts a new ride; a known one is
    replayed (its stored answer), refused, or resumed from its recovery point."""
    fp = idempotency.fingerprint(want.params())
    lock_until = _now_ms() + idempotency.LOCK_MS
    ride_id = uuid.uuid4()
    if await requests.create_key(want.rider_id, key, fp, ride_id, lock_until):
        return ride_id, RecoveryPoint.STARTED
    decision, ride_id, stored = await requests.lock_existing(
        want.rider_id, key, lambda record: idempotency.on_existing_key(record, fp, _now_ms()), lock_until
    )
    if isinstance(decision, Replay):
        assert stored is not None
        return stored
    return ride_id, decision.recovery_point


async def _book(
    adapters: Adapters, want: RideRequest, key: str, ride_id: uuid.UUID, recovery: str, payment_method: str
) -> RideBooked:
    """The work under a locked key, from its recovery point: claim the rider's slot, ask
    trip to start the ride, store the answer."""
    requests = adapters.requests
    try:
        # Also on resuming at "ride_claimed": the slot may have been freed as an orphan
        # meanwhile, and then it must be taken again (or refused).
        await _claim(adapters, want.rider_id, ride_id)
        if recovery == RecoveryPoint.STARTED:
            await requests.advance(want.rider_id, key, RecoveryPoint.RIDE_CLAIMED)
    except FailedPrecondition:
        # Refused before anything happened: the key is not used up.
        await requests.forget(want.rider_id, key)
        raise
    except DependencyUnavailable:
        await requests.unlock(want.rider_id, key)
        raise
    try:
        state = await adapters.trip.start_ride(ride_id, want, payment_method)
    except DomainError:
        # The ride is claimed; a retry with this key resumes at StartRide.
        await requests.unlock(want.rider_id, key)
        raise
    booked = RideBooked(ride_id, state)
    await requests.finish(want.rider_id, key, booked)
    return booked


async def _claim(adapters: Adapters, rider_id: uuid.UUID, ride_id: uuid.UUID) -> None:
    """Takes the rider's single live-ride slot, freeing it first if its ride has ended
    or never began (an orphan: the call to trip failed after the claim)."""
    holder, age = await adapters.requests.claim_live_ride(rider_id, ride_id)
    if holder == ride_id:
        return
    if await _slot_is_free(adapters, rider_id, holder, age):
        holder, _ = await adapters.requests.claim_live_ride(rider_id, ride_id)
        if holder == ride_id:
            return
    raise FailedPrecondition(f"rider {rider_id} already has a live ride {holder}")


async def _slot_is_free(adapters: Adapters, rider_id: uuid.UUID, holder: uuid.UUID, age_seconds: float) -> bool:
    """Frees the slot if its ride is over, or if trip never heard of it and the claim is
    older than any StartRide could still be on its way (the call's deadline is 5 s)."""
    existing = await adapters.trip.get_ride(holder)
    if existing is None and age_seconds < ORPHANED_AFTER_SECONDS:
        return False
    if existing is not None and not existing.terminal:
        return False
    await adapters.requests.release_live_ride(rider_id, holder)
    return True


async def free_slots(adapters: Adapters) -> int:
    """The reaper's round: frees the slots of rides that ended or never began, so a
    rider who gave up is not locked out, and nothing is left held after faults stop."""
    freed = 0
    for rider_id, holder in await adapters.requests.slots_older_than(ORPHANED_AFTER_SECONDS, FREE_BATCH):
        freed += await _slot_is_free(adapters, rider_id, holder, ORPHANED_AFTER_SECONDS)
    return freed


async def get_ride(command: RideRef, adapters: Adapters) -> TripRide:
    ride_id = validation.identifier("ride_id", command.ride_id)
    ride = await adapters.trip.get_ride(ride_id)
    if ride is None:
        raise NotFound("ride", command.ride_id)
    return ride


async def watch_ride(command: RideRef, adapters: Adapters) -> AsyncIterator[TripRide]:
    ride_id = validation.identifier("ride_id", command.ride_id)
    async for ride in adapters.trip.watch_ride(ride_id):
        yield ride


async def cancel_ride(command: RideRef, adapters: Adapters) -> TripRide:
    ride_id = validation.identifier("ride_id", command.ride_id)
    with ride_scope(str(ride_id)):
        return await adapters.trip.cancel_ride(ride_id)
