"""Driver's side of the saga: reserve the nearest available driver under a fenced lock,
release a reservation only if its token still matches, and learn of the pivot
(ConfirmDriver) the same fenced way (the writes are fenced_reservations.py).

Property: a driver is reserved for at most one ride, and a holder paused past its lease
cannot overwrite a newer reservation; a stale release (an older token) changes nothing.
Each command's effect and its inbox record (`handled_commands`, services/blocks/inbox.py)
commit together; a redelivered command gets the stored reply."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any

import grpc
from opentelemetry import propagate
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool
from redis.exceptions import RedisError

from ridesaga.driver.v1 import driver_pb2
from ridesaga.saga.v1 import saga_pb2
from services.blocks.clocks import HybridLogicalClock
from services.blocks.fencing import FencedLock, Lease
from services.blocks.inbox import Inbox
from services.driver import domain, fenced_reservations
from services.driver.adapters import DriverLocations, DriverRegistry
from services.driver.matching import Matching
from services.driver.offers import OfferHub
from services.runtime.messages import Outgoing, Poison, envelope, observe, outgoing
from services.runtime.topology import Topic

INBOX = Inbox("handled_commands")
log = logging.getLogger(__name__)
MATCH_RADIUS_KM = 15.0
CANDIDATES = 20
RESERVE_LEASE_MS = 5_000


class DriverParticipant:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        locations: DriverLocations,
        lock: FencedLock,
        hub: OfferHub,
        clock: HybridLogicalClock,
        matching: Matching,
    ) -> None:
        self.pool = pool
        self.lock = lock
        self.matching = matching
        self.locations = locations
        self.hub = hub
        self.clock = clock
        self.pending: list[tuple[str, driver_pb2.Offer]] = []
        self.delivering: set[asyncio.Task[None]] = set()
        self.registry = DriverRegistry(pool)

    def settled(self, committed: bool) -> None:
        """Offers go out only once the DriverOffered reply is committed: the trip must
        learn of the reservation before it can learn of the answer."""
        if committed and self.pending:
            task = asyncio.get_running_loop().create_task(self._deliver(list(self.pending)))
            self.delivering.add(task)
            task.add_done_callback(self.delivering.discard)
        self.pending.clear()

    async def _deliver(self, offers: list[tuple[str, driver_pb2.Offer]]) -> None:
        """Records each offer with its reservation (an app that connects later is sent
        it), then pushes it to the app if it is connected now."""
        for driver_id, offer in offers:
            try:
                standing = await self.registry.keep_offer(
                    uuid.UUID(driver_id), offer.SerializeToString(), offer.ride_id, offer.fence
                )
            except Exception as error:  # best effort, as before: the offer timeout re-matches
                log.warning("offer not recorded", extra={"fields": {"ride_id": offer.ride_id, "error": repr(error)}})
                standing = True
            if standing:
                await self._push(driver_id, offer)

    async def _push(self, driver_id: str, offer: driver_pb2.Offer) -> None:
        """To the app's stream, which the owner of the driver's cell serves (one hop)."""
        where = await self.locations.where(driver_id)
        owner = self.matching.cluster.owner(where) if where is not None else self.matching.cluster.me
        if owner == self.matching.cluster.me or self.matching.peers is None:
            self.hub.push(driver_id, offer)
            return
        try:
            await self.matching.peers.deliver_offer(owner, driver_id, offer)
        except grpc.aio.AioRpcError as error:  # the app is sent it when it reconnects
            log.warning(
                "offer not forwarded",
                extra={"fields": {"ride_id": offer.ride_id, "member": owner, "code": error.code().name}},
            )

    async def handle(self, env: saga_pb2.Envelope) -> list[Outgoing]:
        observe(self.clock, env)
        match env.WhichOneof("body"):
            case "reserve_driver":
                return await self._reserve_once(env)
            # Database work only: the inbox's replay, the effect and its record in one transaction.
            case "release_driver":
                return await INBOX.once(self.pool, env.message_id, lambda conn: self._release(conn, env))
            case "confirm_driver":
                return await INBOX.once(self.pool, env.message_id, lambda conn: self._confirm(conn, env))
            case kind:
                raise Poison(f"driver does not handle messages of type {kind!r}")

    async def _reserve_once(self, env: saga_pb2.Envelope) -> list[Outgoing]:
        """A reservation takes Redis locks between the inbox's replay and its record. A
        redelivered ReserveDriver gets its stored reply, and its offer is queued again."""
        sent = await INBOX.replay_from(self.pool, env.message_id)
        if sent is None:
            try:
                sent = await self._reserve(env)
            except RedisError as error:
                # Matching pauses while Redis (positions, fencing tokens) is down: no reply,
                # nothing recorded; the saga's MATCHING timeout re-sends the same command,
                # and the partition keeps flowing for releases and other rides meanwhile.
                log.warning("redis unavailable; matching paused", extra={"fields": {"error": repr(error)}})
                return []
        for record in sent:
            reply = saga_pb2.Envelope.FromString(record.value or b"")
            if reply.WhichOneof("body") == "driver_offered":
                await self._offer(env, reply.driver_offered)
        return sent

    async def _reserve(self, env: saga_pb2.Envelope) -> list[Outgoing]:
        cmd = env.reserve_driver
        center = domain.position("pickup", cmd.pickup.lat, cmd.pickup.lng)
        query = domain.nearby_query(center, MATCH_RADIUS_KM, CANDIDATES)
        excluded = set(cmd.exclude_driver_ids)
        # Each replica judges the drivers of its own cells: the owners near the pickup are asked.
        candidates = [driver_id for driver_id, _ in await self.matching.available(query) if driver_id not in excluded]
        reply_id = f"{env.message_id}:reply"
        leases: list[Lease] = []
        try:
            async with self.pool.connection() as conn, conn.transaction():
                reply = envelope(
                    self.clock,
                    reply_id,
                    env.ride_id,
                    env.message_id,
                    no_driver_available=saga_pb2.NoDriverAvailable(attempt=cmd.attempt),
                )
                for driver_id in candidates:
                    lease = await self.lock.acquire(f"driver:{driver_id}", RESERVE_LEASE_MS)
                    if lease is None:
                        continue  # someone else is reserving this driver right now
                    leases.append(lease)
                    if await fenced_reservations.reserve(conn, uuid.UUID(driver_id), env.ride_id, lease.token):
                        offered = saga_pb2.DriverOffered(driver_id=driver_id, fence=lease.token, attempt=cmd.attempt)
                        reply = envelope(self.clock, reply_id, env.ride_id, env.message_id, driver_offered=offered)
                        break
                sent = [outgoing(Topic.TRIP_REPLIES, reply)]
                await INBOX.record(conn, env.message_id, sent)
        finally:
            for lease in leases:
                with contextlib.suppress(RedisError):
                    await self.lock.release(lease)
        return sent

    async def _release(self, conn: AsyncConnection[Any], env: saga_pb2.Envelope) -> list[Outgoing]:
        cmd = env.release_driver
        await fenced_reservations.release(conn, uuid.UUID(cmd.driver_id), env.ride_id, cmd.fence)
        reply = envelope(
            self.clock,
            f"{env.message_id}:reply",
            env.ride_id,
            env.message_id,
            driver_released=saga_pb2.DriverReleased(driver_id=cmd.driver_id),
        )
        return [outgoing(Topic.TRIP_REPLIES, reply)]

    async def _confirm(self, conn: AsyncConnection[Any], env: saga_pb2.Envelope) -> list[Outgoing]:
        """The pivot: the saga took this driver's acceptance. Nothing is sent back."""
        cmd = env.confirm_driver
        await fenced_reservations.confirm(conn, uuid.UUID(cmd.driver_id), env.ride_id, cmd.fence)
        return []

    async def _offer(self, env: saga_pb2.Envelope, offered: saga_pb2.DriverOffered) -> None:
        """Queues the offer for the driver's app, if the reservation still stands."""
        if not await self.registry.holds(uuid.UUID(offered.driver_id), uuid.UUID(env.ride_id), offered.fence):
            return
        cmd = env.reserve_driver
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        offer = driver_pb2.Offer(
            ride_id=env.ride_id,
            fence=offered.fence,
            attempt=offered.attempt,
            pickup=cmd.pickup,
            dropoff=cmd.dropoff,
            traceparent=carrier.get("traceparent", ""),
        )
        self.pending.append((offered.driver_id, offer))
