"""The trip service: the saga orchestrator. Its gRPC face starts, reads, watches and
cancels rides; its transactional loop runs the saga. Its sweeper, which times out stuck
steps, runs as separate processes with a leader elected on ZooKeeper (sweeper.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
from opentelemetry import propagate, trace
from psycopg_pool import AsyncConnectionPool

from ridesaga.common.v1 import common_pb2
from ridesaga.driver.v1 import driver_pb2_grpc
from ridesaga.payment.v1 import payment_pb2_grpc
from ridesaga.saga.v1 import saga_pb2
from ridesaga.trip.v1 import trip_pb2, trip_pb2_grpc
from services.blocks import retention
from services.blocks.clocks import HybridLogicalClock
from services.blocks.exactly_once import LoopConfig, TransactionalLoop
from services.runtime import config, db, mesh, validation
from services.runtime.errors import DependencyUnavailable, FailedPrecondition, InvalidArgument, NotFound, grpc_errors
from services.runtime.grpc_server import Context, Lifecycle, serve
from services.runtime.messages import envelope, outgoing
from services.runtime.periodic import decided
from services.runtime.probe import probe
from services.runtime.publisher import Publisher
from services.runtime.telemetry import ride_scope
from services.runtime.topology import Group, Topic, service
from services.trip import adapters, fares, saga
from services.trip.orchestrator import Orchestrator
from services.trip.watchers import RideWatchers

tracer = trace.get_tracer(__name__)

SPEC = service("trip")
CANCEL_WAIT_SECONDS = 3.0  # within rider's 5 s deadline for the call
CANCEL_POLL_SECONDS = 0.02
SAGA_POOL_SIZE = 4


def _point(field: str, where: common_pb2.LatLng, present: bool) -> saga.Point:
    if not present:
        raise InvalidArgument(field, "is required")
    lat, lng = validation.coordinates(field, where.lat, where.lng)
    return saga.Point(lat, lng)


class TripServicer(trip_pb2_grpc.TripServiceServicer):
    def __init__(
        self,
        pool: AsyncConnectionPool,
        publisher: Publisher,
        clock: HybridLogicalClock,
        driver: driver_pb2_grpc.DriverServiceAsyncStub,
        payment: payment_pb2_grpc.PaymentServiceAsyncStub,
        watchers: RideWatchers,
    ) -> None:
        self.pool = pool
        self.publisher = publisher
        self.clock = clock
        self.driver = driver
        self.payment = payment
        self.watchers = watchers

    async def _view(self, ride_id: str) -> trip_pb2.Ride:
        async with self.pool.connection() as conn:
            ride = await adapters.load_ride(conn, ride_id)
            if ride is None:
                raise NotFound("ride", ride_id)
            steps = await adapters.steps(conn, ride_id)
            trace_id = await adapters.trace_id(conn, ride_id)
        return trip_pb2.Ride(
            ride_id=ride.ride_id,
            rider_id=ride.rider_id,
            state=ride.state.value,
            fare_cents=ride.fare_cents,
            driver_id=ride.driver_id,
            hold_id=ride.hold_id,
            outcome=ride.outcome,
            pickup=common_pb2.LatLng(lat=ride.pickup.lat, lng=ride.pickup.lng),
            dropoff=common_pb2.LatLng(lat=ride.dropoff.lat, lng=ride.dropoff.lng),
            steps=[
                trip_pb2.SagaStep(step=s.step, status=s.status, detail=s.detail, hlc=s.hlc, at_ms=s.at_ms)
                for s in steps
            ],
            trace_id=trace_id,
            terminal=ride.state in saga.TERMINAL,
        )

    @grpc_errors
    async def StartRide(self, request: trip_pb2.StartRideRequest, context: Context) -> trip_pb2.Ride:
        ride_id = str(validation.identifier("ride_id", request.ride_id))
        rider_id = str(validation.identifier("rider_id", request.rider_id))
        pickup = _point("pickup", request.pickup, request.HasField("pickup"))
        dropoff = _point("dropoff", request.dropoff, request.HasField("dropoff"))
        # The token's shape only; whether the processor knows it is the processor's answer.
        method = validation.payment_method("payment_method", request.payment_method or "tok_visa")
        fare = fares.estimate_cents(pickup, dropoff)
        ride = saga.new_ride(ride_id, rider_id, method, pickup, dropoff, fare, int(time.time() * 1000))
        with ride_scope(ride_id):
            span_context = trace.get_current_span().get_span_context()
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
            async with self.pool.connection() as conn:
                await adapters.insert_ride(conn, ride, f"{span_context.trace_id:032x}", carrier.get("traceparent", ""))
            # Sent even if the ride existed: a retry after a crash between the insert and
            # this send still starts the saga; the orchestrator ignores a second start.
            body = saga_pb2.RideRequested(
                rider_id=rider_id,
                pickup=request.pickup,
                dropoff=request.dropoff,
                fare_cents=ride.fare_cents,
                payment_method=method,
            )
            env = envelope(self.clock, f"{ride_id}:requested", ride_id, "", ride_requested=body)
            await self.publisher.send(outgoing(Topic.TRIP_COMMANDS, env))
            return await self._view(ride_id)

    @grpc_errors
    async def GetRide(self, request: trip_pb2.GetRideRequest, context: Context) -> trip_pb2.Ride:
        return await self._view(str(validation.identifier("ride_id", request.ride_id)))

    async def WatchRide(self, request: trip_pb2.GetRideRequest, context: Context) -> AsyncIterator[trip_pb2.Ride]:
        """Sends the ride, then each new state: read again when trip's own transition
        notifies it, or every watchers.FALLBACK_SECONDS (services/trip/watchers.py)."""
        try:
            ride_id = str(validation.identifier("ride_id", request.ride_id))
        except InvalidArgument as error:
            await context.abort(error.code, str(error))
            return
        with self.watchers.watching(ride_id) as changed:  # before the first read: no change is missed
            try:
                last = await self._view(ride_id)
            except NotFound as error:
                await context.abort(error.code, str(error))
                return
            yield last
            while not last.terminal:
                await self.watchers.changed(changed)
                changed.clear()  # a change committed during the read below sets it again
                current = await self._view(ride_id)
                if current.state != last.state:
                    yield current
                last = current

    @grpc_errors
    async def CancelRide(self, request: trip_pb2.CancelRideRequest, context: Context) -> trip_pb2.Ride:
        ride_id = str(validation.identifier("ride_id", request.ride_id))
        with ride_scope(ride_id):
            current = await self._view(ride_id)
            if current.terminal:
                return current
            if saga.State(current.state) not in saga.BEFORE_PIVOT:
                raise FailedPrecondition(f"ride {ride_id} is {current.state}: it can no longer be cancelled")
            body = saga_pb2.CancelRequested(reason=request.reason or "rider_cancelled")
            env = envelope(self.clock, f"{ride_id}:cancel", ride_id, "", cancel_requested=body)
            # One ride, one trace: the cancel and the compensations it starts join the
            # ride's trace, linked to the rider's call that asked for them.
            async with self.pool.connection() as conn:
                stored = await adapters.traceparent(conn, ride_id)
            parent = propagate.extract({"traceparent": stored} if stored else {})
            asked = trace.Link(trace.get_current_span().get_span_context())
            with tracer.start_as_current_span("cancel requested", context=parent, links=[asked]):
                await self.publisher.send(outgoing(Topic.TRIP_COMMANDS, env))
            return await self._cancel_outcome(ride_id, env.message_id)

    async def _cancel_outcome(self, ride_id: str, message_id: str) -> trip_pb2.Ride:
        """Answers a cancel only once the saga has decided it: the driver may accept (the
        pivot) between the check above and the cancel's turn, and then the cancel is
        refused; the rider must hear that, not an OK. Undecided within CANCEL_WAIT_SECONDS:
        UNAVAILABLE, and a retry (the same message id, counted once) asks again."""

        async def look() -> list[tuple[str, str, str]] | None:
            async with self.pool.connection() as conn:
                return await adapters.entries_of(conn, ride_id, message_id) or None

        entries = await decided(look, CANCEL_WAIT_SECONDS, CANCEL_POLL_SECONDS)
        if entries is None:
            raise DependencyUnavailable(f"the cancel of ride {ride_id} is not decided yet; ask again", 0.5)
        refused = next((detail for step, status, detail in entries if (step, status) == ("cancel", "refused")), None)
        if refused is not None:
            raise FailedPrecondition(f"ride {ride_id} was not cancelled: {refused}")
        return await self._view(ride_id)

    async def Probe(self, request: common_pb2.ProbeRequest, context: Context) -> common_pb2.ProbeReply:
        return await probe(
            SPEC.name,
            lambda: db.ready(self.pool),
            [("driver", self.driver.Probe), ("payment", self.payment.Probe)],
        )


async def register(server: grpc.aio.Server, lifecycle: Lifecycle) -> None:
    settings = config.load(SPEC.name)
    pool = await db.open_pool(settings.postgres_dsn(SPEC.name), max_size=12)
    channel = mesh.sidecar_channel(settings.egress_target)
    clock = config.clock()
    publisher = Publisher(settings.kafka_bootstrap)
    watchers = RideWatchers(settings.postgres_dsn(SPEC.name))
    trip_pb2_grpc.add_TripServiceServicer_to_server(
        TripServicer(
            pool,
            publisher,
            clock,
            driver_pb2_grpc.DriverServiceStub(channel),
            payment_pb2_grpc.PaymentServiceStub(channel),
            watchers,
        ),
        server,
    )
    # A bulkhead: the saga has connections of its own, so riders watching their rides can
    # never take the connections the transitions that end those rides need.
    saga_pool = await db.open_pool(settings.postgres_dsn(SPEC.name), max_size=SAGA_POOL_SIZE)
    loop = TransactionalLoop(
        LoopConfig.for_group(
            Group.ORCHESTRATOR, settings.kafka_bootstrap, Group.ORCHESTRATOR.topics, config.replica_suffix()
        ),
        Orchestrator(saga_pool, clock).handle,
    )
    lifecycle.on_close(pool.close)
    lifecycle.on_close(saga_pool.close)
    lifecycle.on_close(channel.close)
    lifecycle.on_close(publisher.close)
    lifecycle.spawn("orchestrator", loop.run)
    lifecycle.spawn("ride-watchers", watchers.listen)
    lifecycle.spawn("reap-processed-messages", retention.reaper(pool, "processed_messages"))


def main() -> None:
    asyncio.run(serve(config.load(SPEC.name), SPEC.grpc_service, register))


if __name__ == "__main__":
    main()
