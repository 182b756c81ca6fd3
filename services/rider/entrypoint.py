"""The rider service, the edge: riders, and ride requests with Stripe-style idempotency
keys and one live ride per rider (handlers.py). Reads and cancels are forwarded to trip.
The servicer only maps protobuf to commands and results back to protobuf."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import redis.asyncio as aioredis
from psycopg_pool import AsyncConnectionPool

from ridesaga.common.v1 import common_pb2
from ridesaga.rider.v1 import rider_pb2, rider_pb2_grpc
from ridesaga.trip.v1 import trip_pb2, trip_pb2_grpc
from services.blocks.downstream import Downstream
from services.blocks.ratelimit import TokenBucket
from services.rider import handlers
from services.rider.adapters import RequestStore, RiderStore, TripClient, ride_requested
from services.rider.domain import CreateRider, GetRider, RequestRide, Rider, RideRef
from services.rider.handlers import Adapters
from services.runtime import config, db, mesh
from services.runtime.errors import DomainError, grpc_errors
from services.runtime.grpc_server import Context, Lifecycle, serve
from services.runtime.periodic import every
from services.runtime.probe import probe
from services.runtime.topology import service

SPEC = service("rider")
REAP_INTERVAL_SECONDS = 60.0
FREE_SLOTS_INTERVAL_SECONDS = 5.0


def _to_proto(rider: Rider) -> rider_pb2.Rider:
    return rider_pb2.Rider(rider_id=str(rider.rider_id), name=rider.name, payment_method=rider.payment_method)


def _point(message: common_pb2.LatLng, present: bool) -> tuple[float, float] | None:
    return (message.lat, message.lng) if present else None


class RiderServicer(rider_pb2_grpc.RiderServiceServicer):
    def __init__(self, adapters: Adapters, pool: AsyncConnectionPool, trip: trip_pb2_grpc.TripServiceAsyncStub) -> None:
        self.adapters = adapters
        # For Probe only: this service's own readiness, and trip's.
        self.pool = pool
        self.trip = trip

    @grpc_errors
    async def CreateRider(self, request: rider_pb2.CreateRiderRequest, context: Context) -> rider_pb2.Rider:
        command = CreateRider(request.name, request.payment_method)
        return _to_proto(await handlers.create_rider(command, self.adapters))

    @grpc_errors
    async def GetRider(self, request: rider_pb2.GetRiderRequest, context: Context) -> rider_pb2.Rider:
        return _to_proto(await handlers.get_rider(GetRider(request.rider_id), self.adapters))

    @grpc_errors
    async def RequestRide(self, request: rider_pb2.RequestRideRequest, context: Context) -> rider_pb2.RideRequested:
        command = RequestRide(
            request.rider_id,
            _point(request.pickup, request.HasField("pickup")),
            _point(request.dropoff, request.HasField("dropoff")),
            request.idempotency_key,
        )
        return ride_requested(await handlers.request_ride(command, self.adapters))

    @grpc_errors
    async def GetRide(self, request: rider_pb2.RideRef, context: Context) -> trip_pb2.Ride:
        return await handlers.get_ride(RideRef(request.ride_id), self.adapters)

    async def WatchRide(self, request: rider_pb2.RideRef, context: Context) -> AsyncIterator[trip_pb2.Ride]:
        try:
            async for ride in handlers.watch_ride(RideRef(request.ride_id), self.adapters):
                yield ride
        except DomainError as error:
            await context.abort(error.code, str(error))

    @grpc_errors
    async def CancelRide(self, request: rider_pb2.RideRef, context: Context) -> trip_pb2.Ride:
        return await handlers.cancel_ride(RideRef(request.ride_id), self.adapters)

    async def Probe(self, request: common_pb2.ProbeRequest, context: Context) -> common_pb2.ProbeReply:
        return await probe(SPEC.name, lambda: db.ready(self.pool), [("trip", self.trip.Probe)])


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
    trip = TripClient(trip_pb2_grpc.TripServiceStub(channel), trip_calls)
    adapters = Adapters(RiderStore(pool), requests, trip, limiter)
    servicer = RiderServicer(adapters, pool, trip.stub)
    rider_pb2_grpc.add_RiderServiceServicer_to_server(servicer, server)
    lifecycle.on_close(client.aclose)
    lifecycle.spawn("publish-breaker", lambda stopping: every(1.0, stopping, trip_calls.publish, "publish breaker"))
    lifecycle.on_close(pool.close)
    lifecycle.on_close(channel.close)
    lifecycle.spawn("reap-keys", lambda stopping: reap_keys(requests, stopping))
    lifecycle.spawn(
        "free-slots",
        lambda stopping: every(
            FREE_SLOTS_INTERVAL_SECONDS, stopping, lambda: handlers.free_slots(adapters), "freeing live-ride slots"
        ),
    )


def main() -> None:
    asyncio.run(serve(config.load(SPEC.name), SPEC.grpc_service, register))


if __name__ == "__main__":
    main()
