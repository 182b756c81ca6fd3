"""The rider service, the edge: riders, and ride requests with Stripe-style idempotency
keys and one live ride per rider. Reads and cancels are forwarded to trip."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ridesaga.common.v1 import common_pb2
from ridesaga.rider.v1 import rider_pb2, rider_pb2_grpc
from ridesaga.trip.v1 import trip_pb2, trip_pb2_grpc
from services.blocks import idempotency
from services.blocks.downstream import Downstream, Unavailable
from services.blocks.ratelimit import TokenBucket
from services.rider.adapters import RequestStore, RiderStore
from services.rider.domain import Rider, RideRequest, new_rider, ride_request
from services.runtime import config, db, mesh, validation
from services.runtime.errors import (
    DependencyUnavailable,
    DomainError,
    FailedPrecondition,
    NotFound,
    RateLimited,
    grpc_errors,
)
from services.runtime.grpc_server import Context, Lifecycle, serve
from services.runtime.periodic import every
from services.runtime.probe import probe
from services.runtime.telemetry import ride_scope
from services.runtime.topology import service

SPEC = service("rider")
R = TypeVar("R")
log = logging.getLogger(__name__)
TRIP_TIMEOUT_SECONDS = 5.0
REAP_INTERVAL_SECONDS = 60.0
# A slot whose ride trip never created is an orphan once it is this old: far past the
# deadline of the StartRide that should have created it.
ORPHANED_AFTER_SECONDS = 30.0
FREE_SLOTS_INTERVAL_SECONDS = 5.0
FREE_BATCH = 100


class Forwarded(DomainError):
    """An error answered by trip, passed on to the caller unchanged."""

    def __init__(self, error: grpc.aio.AioRpcError) -> None:
        super().__init__(error.details() or error.code().name)
        self.code = error.code()


def _to_proto(rider: Rider) -> rider_pb2.Rider:
    return rider_pb2.Rider(rider_id=str(rider.rider_id), name=rider.name, payment_method=rider.payment_method)


def _point(message: common_pb2.LatLng, present: bool) -> tuple[float, float] | None:
    return (message.lat, message.lng) if present else None


def _now_ms() -> int:
    return int(time.time() * 1000)


class RiderServicer(rider_pb2_grpc.RiderServiceServicer):
    def __init__(
        self,
        riders: RiderStore,
        requests: RequestStore,
        trip: trip_pb2_grpc.TripServiceAsyncStub,
        limiter: TokenBucket,
        trip_calls: Downstream,
    ) -> None:
        self.riders = riders
        self.requests = requests
        self.trip = trip
        self.limiter = limiter
        self.trip_calls = trip_calls

    async def _to_trip(self, method: Callable[..., Awaitable[R]], request: Any) -> R:
        """A call to trip through its breaker: while trip keeps failing, fail fast."""
        try:
            return await self.trip_calls.call(method, request, deadline_seconds=TRIP_TIMEOUT_SECONDS, idempotent=True)
        except Unavailable as refused:
            raise DependencyUnavailable(f"trip is unavailable ({refused})", refused.retry_after_seconds) from None

    async def _within_rate(self, rider_id: uuid.UUID) -> None:
        """Per-rider token bucket. If Redis is down the limit is not enforced (fail open:
        a rate limit protects capacity, not correctness) and Envoy's edge limit remains."""
        try:
            decision = await self.limiter.take(str(rider_id))
        except RedisError as error:
            log.warning("rate limiter unavailable; allowing", extra={"fields": {"error": repr(error)}})
            return
        if not decision.allowed:
            raise RateLimited(f"rider {rider_id} ride requests", decision.retry_after_seconds)

    @grpc_errors
    async def CreateRider(self, request: rider_pb2.CreateRiderRequest, context: Context) -> rider_pb2.Rider:
        rider = new_rider(request.name, request.payment_method)
        await self.riders.add(rider)
        return _to_proto(rider)

    @grpc_errors
    async def GetRider(self, request: rider_pb2.GetRiderRequest, context: Context) -> rider_pb2.Rider:
        rider = await self.riders.get(validation.identifier("rider_id", request.rider_id))
        if rider is None:
            raise NotFound("rider", request.rider_id)
        return _to_proto(rider)

    async def _trip_ride(self, ride_id: uuid.UUID) -> trip_pb2.Ride | None:
        try:
            return await self._to_trip(self.trip.GetRide, trip_pb2.GetRideRequest(ride_id=str(ride_id)))
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise Forwarded(error) from None

    async def _claim(self, want: RideRequest, ride_id: uuid.UUID) -> None:
        """Takes the rider's single live-ride slot, freeing it first if its ride has ended
        or never began (an orphan: the call to trip failed after the claim)."""
        holder, age = await self.requests.claim_live_ride(want.rider_id, ride_id)
        if holder == ride_id:
            return
        if await self._slot_is_free(want.rider_id, holder, age):
            holder, _ = await self.requests.claim_live_ride(want.rider_id, ride_id)
            if holder == ride_id:
                return
        raise FailedPrecondition(f"rider {want.rider_id} already has a live ride {holder}")

    async def _slot_is_free(self, rider_id: uuid.UUID, holder: uuid.UUID, age_seconds: float) -> bool:
        """Frees the slot if its ride is over, or if trip never heard of it and the claim is
        older than any StartRide could still be on its way (the call's deadline is 5 s)."""
        existing = await self._trip_ride(holder)
        if existing is None and age_seconds < ORPHANED_AFTER_SECONDS:
            return False
        if existing is not None and not existing.terminal:
            return False
        await self.requests.release_live_ride(rider_id, holder)
        return True

    async def free_slots(self) -> int:
        """The reaper's round: frees the slots of rides that ended or never began, so a
        rider who gave up is not locked out, and nothing is left held after faults stop."""
        freed = 0
        for rider_id, holder in await self.requests.slots_older_than(ORPHANED_AFTER_SECONDS, FREE_BATCH):
            freed += await self._slot_is_free(rider_id, holder, ORPHANED_AFTER_SECONDS)
        return freed

    @grpc_errors
    async def RequestRide(self, request: rider_pb2.RequestRideRequest, context: Context) -> rider_pb2.RideRequested:
        want = ride_request(
            request.rider_id,
            _point(request.pickup, request.HasField("pickup")),
            _point(request.dropoff, request.HasField("dropoff")),
        )
        key = idempotency.validate_key(request.idempotency_key)
        await self._within_rate(want.rider_id)
        rider = await self.riders.get(want.rider_id)
        if rider is None:
            raise NotFound("rider", request.rider_id)
        fp = idempotency.fingerprint(want.params())
        lock_until = _now_ms() + idempotency.LOCK_MS
        ride_id = uuid.uuid4()
        recovery = "started"
        if not await self.requests.create_key(want.rider_id, key, fp, ride_id, lock_until):
            decision, ride_id, stored = await self.requests.lock_existing(
                want.rider_id, key, lambda record: idempotency.on_existing_key(record, fp, _now_ms()), lock_until
            )
            if isinstance(decision, idempotency.Replay):
                assert stored is not None
                return rider_pb2.RideRequested.FromString(stored)
            recovery = decision.recovery_point
        with ride_scope(str(ride_id)):
            try:
                # Also on resuming at "ride_claimed": the slot may have been freed as an
                # orphan meanwhile, and then it must be taken again (or refused).
                await self._claim(want, ride_id)
                if recovery == "started":
                    await self.requests.advance(want.rider_id, key, "ride_claimed")
                started = await self._to_trip(
                    self.trip.StartRide,
                    trip_pb2.StartRideRequest(
                        ride_id=str(ride_id),
                        rider_id=str(want.rider_id),
                        pickup=request.pickup,
                        dropoff=request.dropoff,
                        payment_method=rider.payment_method,
                    ),
                )
            except FailedPrecondition:
                # Refused before anything happened: the key is not used up.
                await self.requests.forget(want.rider_id, key)
                raise
            except DependencyUnavailable:
                await self.requests.unlock(want.rider_id, key)
                raise
            except grpc.aio.AioRpcError as error:
                # The ride is claimed; a retry with this key resumes at StartRide.
                await self.requests.unlock(want.rider_id, key)
                raise Forwarded(error) from None
            reply = rider_pb2.RideRequested(ride_id=str(ride_id), state=started.state)
            await self.requests.finish(want.rider_id, key, reply.SerializeToString())
            return reply

    @grpc_errors
    async def GetRide(self, request: rider_pb2.RideRef, context: Context) -> trip_pb2.Ride:
        ride_id = validation.identifier("ride_id", request.ride_id)
        ride = await self._trip_ride(ride_id)
        if ride is None:
            raise NotFound("ride", request.ride_id)
        return ride

    async def WatchRide(self, request: rider_pb2.RideRef, context: Context) -> AsyncIterator[trip_pb2.Ride]:
        try:
            ride_id = validation.identifier("ride_id", request.ride_id)
        except DomainError as error:
            await context.abort(error.code, str(error))
            return
        try:
            async for ride in self.trip.WatchRide(trip_pb2.GetRideRequest(ride_id=str(ride_id))):
                yield ride
        except grpc.aio.AioRpcError as error:
            await context.abort(error.code(), error.details() or "")

    @grpc_errors
    async def CancelRide(self, request: rider_pb2.RideRef, context: Context) -> trip_pb2.Ride:
        ride_id = validation.identifier("ride_id", request.ride_id)
        with ride_scope(str(ride_id)):
            try:
                return await self._to_trip(
                    self.trip.CancelRide, trip_pb2.CancelRideRequest(ride_id=str(ride_id), reason="rider_cancelled")
                )
            except grpc.aio.AioRpcError as error:
                raise Forwarded(error) from None

    async def Probe(self, request: common_pb2.ProbeRequest, context: Context) -> common_pb2.ProbeReply:
        return await probe(SPEC.name, lambda: db.ready(self.riders.pool), [("trip", self.trip.Probe)])


async def reap_keys(requests: RequestStore, stopping: asyncio.Event) -> None:
    """Deletes idempotency keys older than 24 hours (kept at least that long)."""
    await every(REAP_INTERVAL_SECONDS, stopping, requests.reap_keys, "reaping idempotency keys")


async def register(server: grpc.aio.Server, lifecycle: Lifecycle) -> None:
    settings = config.load(SPEC.name)
    pool = await db.open_pool(settings.postgres_dsn(SPEC.name), max_size=16)
    channel = mesh.sidecar_channel(settings.egress_target)
    requests = RequestStore(pool)
    client = aioredis.Redis.from_url(settings.redis_url, socket_timeout=1.0, socket_connect_timeout=1.0)
    limiter = TokenBucket(client, "ratelimit:ride-requests", *config.ride_request_limit())
    trip_calls = Downstream("rider->trip", redis=client)
    servicer = RiderServicer(RiderStore(pool), requests, trip_pb2_grpc.TripServiceStub(channel), limiter, trip_calls)
    rider_pb2_grpc.add_RiderServiceServicer_to_server(servicer, server)
    lifecycle.on_close(client.aclose)
    lifecycle.spawn("publish-breaker", lambda stopping: every(1.0, stopping, trip_calls.publish, "publish breaker"))
    lifecycle.on_close(pool.close)
    lifecycle.on_close(channel.close)
    lifecycle.spawn("reap-keys", lambda stopping: reap_keys(requests, stopping))
    lifecycle.spawn(
        "free-slots",
        lambda stopping: every(FREE_SLOTS_INTERVAL_SECONDS, stopping, servicer.free_slots, "freeing live-ride slots"),
    )


def main() -> None:
    asyncio.run(serve(config.load(SPEC.name), SPEC.grpc_service, register))


if __name__ == "__main__":
    main()
