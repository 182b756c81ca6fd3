"""The driver service: registration, heartbeat streams, nearby-driver search, offers to
the drivers' apps and their answers; and the saga participant that reserves drivers."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator

import grpc
import redis.asyncio as aioredis
from opentelemetry.instrumentation.redis import RedisInstrumentor

from ridesaga.common.v1 import common_pb2
from ridesaga.driver.v1 import driver_pb2, driver_pb2_grpc
from ridesaga.saga.v1 import saga_pb2
from services.blocks import retention
from services.blocks.clocks import HybridLogicalClock
from services.blocks.exactly_once import LoopConfig, TransactionalLoop
from services.blocks.failure_detectors import PhiAccrualDetector
from services.blocks.fencing import FencedLock
from services.driver import domain
from services.driver.adapters import DriverLocations, DriverRegistry
from services.driver.offers import OfferHub
from services.driver.participant import DriverParticipant
from services.runtime import config, db, validation
from services.runtime.errors import DependencyUnavailable, FailedPrecondition, InvalidArgument, NotFound, grpc_errors
from services.runtime.grpc_server import Context, Lifecycle, serve
from services.runtime.messages import envelope, outgoing
from services.runtime.periodic import decided
from services.runtime.probe import probe
from services.runtime.publisher import Publisher
from services.runtime.telemetry import ride_scope
from services.runtime.topology import Group, Topic, service

SPEC = service("driver")
# An acceptance is answered once the saga has taken it; the app calls with a 5 s deadline.
ACCEPT_WAIT_SECONDS = 3.0
ACCEPT_POLL_SECONDS = 0.02
log = logging.getLogger(__name__)


def _now_ms() -> int:
    return int(time.time() * 1000)


class DriverServicer(driver_pb2_grpc.DriverServiceServicer):
    def __init__(
        self,
        registry: DriverRegistry,
        locations: DriverLocations,
        hub: OfferHub,
        publisher: Publisher,
        clock: HybridLogicalClock,
        detector: PhiAccrualDetector,
    ) -> None:
        self.registry = registry
        self.locations = locations
        self.detector = detector
        self.hub = hub
        self.publisher = publisher
        self.clock = clock

    async def WatchOffers(
        self, request: driver_pb2.WatchOffersRequest, context: Context
    ) -> AsyncIterator[driver_pb2.Offer]:
        try:
            driver_id = validation.identifier("driver_id", request.driver_id)
            if not await self.registry.exists(driver_id):
                raise NotFound("driver", request.driver_id)
        except (InvalidArgument, NotFound) as error:
            await context.abort(error.code, str(error))
            return
        queue = self.hub.connect(str(driver_id))
        try:
            # An offer made while this app was away is sent first; it may also be on its
            # way through the queue, and then it is sent once.
            try:
                pending = await self.registry.pending_offer(driver_id)
            except Exception as error:  # the database is down: new offers still come through
                log.warning("pending offer unreadable", extra={"fields": {"error": repr(error)}})
                pending = None
            sent = driver_pb2.Offer.FromString(pending) if pending else None
            if sent is not None:
                yield sent
            while True:
                offer = await queue.get()
                if offer != sent:
                    yield offer
                sent = None
        finally:
            self.hub.disconnect(str(driver_id), queue)

    async def _reserved(self, ride_id: str, driver_id: str, fence: int) -> tuple[uuid.UUID, uuid.UUID]:
        ride = validation.identifier("ride_id", ride_id)
        driver = validation.identifier("driver_id", driver_id)
        if fence <= 0:
            raise InvalidArgument("fence", "must be the positive token of the offer")
        if not await self.registry.holds(driver, ride, fence):
            raise FailedPrecondition(f"driver {driver_id} holds no reservation for ride {ride_id} with fence {fence}")
        return ride, driver

    @grpc_errors
    async def RespondToOffer(self, request: driver_pb2.OfferResponse, context: Context) -> driver_pb2.OfferResponseAck:
        ride, driver = await self._reserved(request.ride_id, request.driver_id, request.fence)
        with ride_scope(str(ride)):
            # One message id per offer: whatever the app sends twice, the first answer counts.
            message_id = domain.answer_message_id(ride, driver, request.fence)
            if request.accept:
                accepted = saga_pb2.DriverAccepted(driver_id=str(driver), fence=request.fence, attempt=request.attempt)
                env = envelope(self.clock, message_id, str(ride), "", driver_accepted=accepted)
            else:
                declined = saga_pb2.DriverDeclined(
                    driver_id=str(driver), fence=request.fence, attempt=request.attempt, reason="declined"
                )
                env = envelope(self.clock, message_id, str(ride), "", driver_declined=declined)
            await self.publisher.send(outgoing(Topic.TRIP_REPLIES, env))
            await self.registry.answered(driver, request.fence)
            if request.accept:
                await self._taken(driver, str(ride), request.fence)
        return driver_pb2.OfferResponseAck()

    async def _taken(self, driver: uuid.UUID, ride_id: str, fence: int) -> None:
        """Answers an acceptance only once the saga has decided it (the pivot race: the
        offer's timeout or the rider's cancel may reach trip first). Confirmed: OK. The
        saga released the driver instead: FAILED_PRECONDITION, the app is not on the ride.
        Undecided within ACCEPT_WAIT_SECONDS: UNAVAILABLE, and the app sends it again
        (the same message id, so the saga still counts it once)."""

        async def look() -> domain.Acceptance | None:
            found = domain.acceptance(await self.registry.reservation(driver), ride_id, fence)
            return None if found == domain.Acceptance.PENDING else found

        match await decided(look, ACCEPT_WAIT_SECONDS, ACCEPT_POLL_SECONDS):
            case domain.Acceptance.CONFIRMED:
                return
            case domain.Acceptance.WITHDRAWN:
                raise FailedPrecondition(
                    f"the offer of ride {ride_id} (fence {fence}) was withdrawn before the trip took the"
                    " acceptance: the driver is not on this ride"
                )
        raise DependencyUnavailable(f"the trip has not yet taken the acceptance of ride {ride_id}", 0.5)

    @grpc_errors
    async def CompleteTrip(
        self, request: driver_pb2.CompleteTripRequest, context: Context
    ) -> driver_pb2.CompleteTripAck:
        ride, driver = await self._reserved(request.ride_id, request.driver_id, request.fence)
        with ride_scope(str(ride)):
            done = saga_pb2.TripCompleted(driver_id=str(driver), fence=request.fence)
            env = envelope(
                self.clock,
                domain.completion_message_id(ride, driver, request.fence),
                str(ride),
                "",
                trip_completed=done,
            )
            await self.publisher.send(outgoing(Topic.TRIP_REPLIES, env))
        return driver_pb2.CompleteTripAck()

    @grpc_errors
    async def RegisterDriver(self, request: driver_pb2.RegisterDriverRequest, context: Context) -> driver_pb2.Driver:
        driver = domain.new_driver(request.name)
        where = domain.position("location", request.location.lat, request.location.lng)
        await self.registry.add(driver)
        await self.locations.record(driver.driver_id, where, _now_ms())
        return driver_pb2.Driver(driver_id=str(driver.driver_id), name=driver.name)

    @grpc_errors
    async def StreamHeartbeats(
        self, request_iterator: AsyncIterator[driver_pb2.Heartbeat], context: Context
    ) -> driver_pb2.HeartbeatSummary:
        received = 0
        known: set[str] = set()
        async for beat in request_iterator:
            driver_id = validation.identifier("driver_id", beat.driver_id)
            where = domain.position("location", beat.location.lat, beat.location.lng)
            if beat.driver_id not in known:
                if not await self.registry.exists(driver_id):
                    raise NotFound("driver", beat.driver_id)
                known.add(beat.driver_id)
            await self.locations.record(driver_id, where, _now_ms())
            self.detector.heartbeat(str(driver_id), time.monotonic() * 1000)
            received += 1
        return driver_pb2.HeartbeatSummary(received=received)

    @grpc_errors
    async def FindNearbyDrivers(
        self, request: driver_pb2.FindNearbyDriversRequest, context: Context
    ) -> driver_pb2.FindNearbyDriversReply:
        if not request.HasField("location"):
            raise InvalidArgument("location", "is required")
        query = domain.nearby_query(
            domain.position("location", request.location.lat, request.location.lng),
            request.radius_km,
            request.limit,
        )
        now, monotonic = _now_ms(), time.monotonic() * 1000
        available = [
            driver_pb2.NearbyDriver(driver_id=driver_id, distance_km=distance)
            for driver_id, distance, heard in await self.locations.nearby(query)
            if domain.is_available(heard, now, self.detector.suspect(driver_id, monotonic))
        ]
        return driver_pb2.FindNearbyDriversReply(drivers=available[: query.limit])

    async def Probe(self, request: common_pb2.ProbeRequest, context: Context) -> common_pb2.ProbeReply:
        async def ready() -> bool:
            stores = await asyncio.gather(db.ready(self.registry.pool), self.locations.ready())
            return all(stores)

        return await probe(SPEC.name, ready, [])


async def register(server: grpc.aio.Server, lifecycle: Lifecycle) -> None:
    settings = config.load(SPEC.name)
    RedisInstrumentor().instrument()
    pool = await db.open_pool(settings.postgres_dsn(SPEC.name))
    # health_check_interval: an idle pooled connection is PINGed before reuse, so a Redis
    # restart is noticed and the connection replaced instead of failing the next call.
    client = aioredis.Redis.from_url(
        settings.redis_url, socket_timeout=2.0, socket_connect_timeout=2.0, health_check_interval=5
    )
    clock = config.clock()
    hub = OfferHub()
    publisher = Publisher(settings.kafka_bootstrap)
    registry, locations = DriverRegistry(pool), DriverLocations(client)
    detector = PhiAccrualDetector()
    driver_pb2_grpc.add_DriverServiceServicer_to_server(
        DriverServicer(registry, locations, hub, publisher, clock, detector), server
    )
    participant = DriverParticipant(pool, locations, FencedLock(client), hub, clock, detector)
    loop = TransactionalLoop(
        LoopConfig.for_group(Group.DRIVER, settings.kafka_bootstrap, Group.DRIVER.topics, config.replica_suffix()),
        participant.handle,
        participant.settled,
    )
    lifecycle.on_close(pool.close)
    lifecycle.on_close(client.aclose)
    lifecycle.on_close(publisher.close)
    lifecycle.spawn(Group.DRIVER, loop.run)
    lifecycle.spawn("reap-handled-commands", retention.reaper(pool, "handled_commands"))


def main() -> None:
    asyncio.run(serve(config.load(SPEC.name), SPEC.grpc_service, register))


if __name__ == "__main__":
    main()
