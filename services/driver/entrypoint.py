"""The driver service: registration, heartbeat streams, nearby-driver search, offers to
the drivers' apps and their answers; and the saga participant that reserves drivers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator

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
from services.blocks.ring import RESOLUTION
from services.driver import domain
from services.driver.adapters import DriverLocations, DriverRegistry
from services.driver.cluster import Cluster
from services.driver.forwarding import Peers, forwarded
from services.driver.matching import Matching
from services.driver.membership import Membership, resolved_member
from services.driver.offers import OfferHub
from services.driver.participant import DriverParticipant
from services.driver.quorum_rpc import QuorumMethods
from services.driver.quorum_store import QuorumStore
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
# How often an offer stream checks that its driver's cell is still its replica's.
OWNER_CHECK_SECONDS = 1.0
log = logging.getLogger(__name__)


def _now_ms() -> int:
    return int(time.time() * 1000)


class DriverServicer(QuorumMethods, driver_pb2_grpc.DriverServiceServicer):
    def __init__(
        self,
        registry: DriverRegistry,
        locations: DriverLocations,
        hub: OfferHub,
        publisher: Publisher,
        clock: HybridLogicalClock,
        detector: PhiAccrualDetector,
        membership: Membership,
        peers: Peers,
        store: QuorumStore,
    ) -> None:
        self.registry = registry
        self.locations = locations
        self.detector = detector
        self.hub = hub
        self.publisher = publisher
        self.clock = clock
        self.membership = membership
        self.cluster = Cluster(membership)
        self.peers = peers
        self.store = store
        self.matching = Matching(locations, detector, self.cluster, peers, store)

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
        owner = await self._owner(str(driver_id))
        if owner != self.cluster.me and not forwarded(context.invocation_metadata()):
            offers = self._relayed(owner, str(driver_id), context)  # one hop to the owner
        else:
            offers = self._offers_here(driver_id)
        moved = asyncio.ensure_future(self._moved(str(driver_id), owner))
        following: asyncio.Future[driver_pb2.Offer] | None = None
        try:
            while True:
                following = asyncio.ensure_future(anext(offers))
                await asyncio.wait({following, moved}, return_when=asyncio.FIRST_COMPLETED)
                if not following.done():
                    following.cancel()
                    await context.abort(
                        grpc.StatusCode.UNAVAILABLE,
                        f"driver {request.driver_id} is now served by replica {moved.result()}: watch offers again",
                    )
                try:
                    yield following.result()
                except StopAsyncIteration:
                    return
        finally:
            # The app went away (or ownership moved): the pending read is cancelled first,
            # so the generator's own cleanup runs (the hub forgets the stream) before it closes.
            moved.cancel()
            if following is not None and not following.done():
                following.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration, grpc.aio.AioRpcError):
                    await following
            await offers.aclose()

    async def _owner(self, driver_id: str) -> str:
        """The replica owning the driver's cell; this one for a driver never located."""
        where = await self.locations.where(driver_id)
        return self.cluster.owner(where) if where is not None else self.cluster.me

    async def _moved(self, driver_id: str, owner: str) -> str:
        """Returns the new owner once the driver's cell is no longer `owner`'s (membership
        changed, or the driver crossed into another replica's cell): the stream moves."""
        while (now := await self._owner(driver_id)) == owner:
            await asyncio.sleep(OWNER_CHECK_SECONDS)
        log.info("offer stream handed over", extra={"fields": {"driver_id": driver_id, "from": owner, "to": now}})
        return now

    async def _relayed(self, owner: str, driver_id: str, context: Context) -> AsyncGenerator[driver_pb2.Offer]:
        try:
            async for offer in self.peers.watch_offers(owner, driver_id):
                yield offer
        except grpc.aio.AioRpcError as error:
            await context.abort(error.code(), f"replica {owner}, serving driver {driver_id}: {error.details()}")

    async def _offers_here(self, driver_id: uuid.UUID) -> AsyncGenerator[driver_pb2.Offer]:
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

    @grpc_errors
    async def DeliverOffer(
        self, request: driver_pb2.DeliverOfferRequest, context: Context
    ) -> driver_pb2.DeliverOfferReply:
        driver_id = validation.identifier("driver_id", request.driver_id)
        return driver_pb2.DeliverOfferReply(delivered=self.hub.push(str(driver_id), request.offer))

    async def Members(self, request: driver_pb2.MembersRequest, context: Context) -> driver_pb2.MembersReply:
        return driver_pb2.MembersReply(
            me=self.cluster.me,
            members=[
                driver_pb2.Member(
                    member=m.member, state=m.state, incarnation=m.incarnation, changed_at_ms=int(m.changed_at * 1000)
                )
                for m in self.membership.view()
            ],
            cell_resolution=RESOLUTION,
        )

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
        """Any replica takes a driver's heartbeats and records the position; the owner of
        the driver's cell alone feeds its failure detector with them, so each is passed on
        to the owner (one hop: a relayed heartbeat is never passed on again)."""
        received = 0
        known: set[str] = set()
        relayed = forwarded(context.invocation_metadata())
        async for beat in request_iterator:
            driver_id = validation.identifier("driver_id", beat.driver_id)
            where = domain.position("location", beat.location.lat, beat.location.lng)
            if not relayed:
                if beat.driver_id not in known:
                    if not await self.registry.exists(driver_id):
                        raise NotFound("driver", beat.driver_id)
                    known.add(beat.driver_id)
                heard = _now_ms()
                await self.locations.record(driver_id, where, heard)
                self.store.record(str(driver_id), domain.position_value(where, heard), time.monotonic())
            owner = self.cluster.owner(where)
            if relayed or owner == self.cluster.me:
                self.detector.heartbeat(str(driver_id), time.monotonic() * 1000)
            else:
                self.peers.relay_heartbeat(owner, beat)
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
        if request.owned_only:
            found = await self.matching.owned(query)
        else:
            found = await self.matching.available(query)
        available = [driver_pb2.NearbyDriver(driver_id=driver_id, distance_km=km) for driver_id, km in found]
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
    named, seeds = config.membership()
    me = await resolved_member(named)
    membership = Membership(me, seeds)
    await membership.start()
    peers = Peers(me, settings.egress_target)
    store = QuorumStore(membership, peers, clock, *config.quorum())
    servicer = DriverServicer(registry, locations, hub, publisher, clock, detector, membership, peers, store)
    driver_pb2_grpc.add_DriverServiceServicer_to_server(servicer, server)
    participant = DriverParticipant(pool, locations, FencedLock(client), hub, clock, servicer.matching)
    loop = TransactionalLoop(
        LoopConfig.for_group(Group.DRIVER, settings.kafka_bootstrap, Group.DRIVER.topics, config.replica_suffix()),
        participant.handle,
        participant.settled,
    )
    lifecycle.on_close(pool.close)
    lifecycle.on_close(client.aclose)
    lifecycle.on_close(publisher.close)
    lifecycle.on_close(peers.close)
    lifecycle.on_close(membership.close)
    lifecycle.on_stop(membership.leave)  # at SIGTERM, before draining: the others route around it at once
    lifecycle.spawn(Group.DRIVER, loop.run)
    lifecycle.spawn("reap-handled-commands", retention.reaper(pool, "handled_commands"))
    lifecycle.spawn("quorum-maintenance", store.run)


def main() -> None:
    asyncio.run(serve(config.load(SPEC.name), SPEC.grpc_service, register))


if __name__ == "__main__":
    main()
