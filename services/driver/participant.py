"""Driver's side of the saga: reserve the nearest available driver under a fenced lock,
release a reservation only if its token still matches, and learn of the pivot
(ConfirmDriver) the same fenced way.

Property: a driver is reserved for at most one ride (the reservation is a conditional
UPDATE of its row, guarded by the lock's fencing token, so a holder paused past its lease
cannot overwrite a newer reservation); a stale release (an older token) changes nothing. The reservation
and the handled-command record commit together; a redelivered command gets the stored
reply."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid

from opentelemetry import propagate
from psycopg_pool import AsyncConnectionPool
from redis.exceptions import RedisError

from ridesaga.driver.v1 import driver_pb2
from ridesaga.saga.v1 import saga_pb2
from services.blocks.clocks import HybridLogicalClock, Timestamp
from services.blocks.failure_detectors import PhiAccrualDetector
from services.blocks.fencing import FencedLock, Lease
from services.driver import domain
from services.driver.adapters import DriverLocations, DriverRegistry, reserve
from services.driver.offers import OfferHub
from services.runtime.messages import Outgoing, Poison, envelope, outgoing

REPLIES = "trip.replies"
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
        detector: PhiAccrualDetector,
    ) -> None:
        self.pool = pool
        self.lock = lock
        self.detector = detector
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
                self.hub.push(driver_id, offer)

    async def handle(self, env: saga_pb2.Envelope) -> list[Outgoing]:
        try:
            self.clock.observe(Timestamp.parse(env.hlc))
        except ValueError as error:
            raise Poison(str(error)) from None
        kind = env.WhichOneof("body")
        if kind not in ("reserve_driver", "release_driver", "confirm_driver"):
            raise Poison(f"driver does not handle messages of type {kind!r}")
        async with self.pool.connection() as conn:
            row = await (
                await conn.execute("SELECT reply FROM handled_commands WHERE message_id = %s", (env.message_id,))
            ).fetchone()
        if row is not None:
            if not row[0]:
                return []  # a command that has no reply (ConfirmDriver)
            reply = saga_pb2.Envelope.FromString(row[0])
        elif kind == "confirm_driver":
            await self._confirm(env)
            return []
        elif kind == "reserve_driver":
            try:
                reply = await self._reserve(env)
            except RedisError as error:
                # Matching pauses while Redis (positions, fencing tokens) is down: no reply,
                # nothing recorded; the saga's MATCHING timeout re-sends the same command,
                # and the partition keeps flowing for releases and other rides meanwhile.
                log.warning("redis unavailable; matching paused", extra={"fields": {"error": repr(error)}})
                return []
        else:
            reply = await self._release(env)
        if reply.WhichOneof("body") == "driver_offered":
            await self._offer(env, reply.driver_offered)
        return [outgoing(REPLIES, reply)]

    async def _reserve(self, env: saga_pb2.Envelope) -> saga_pb2.Envelope:
        cmd = env.reserve_driver
        center = domain.position("pickup", cmd.pickup.lat, cmd.pickup.lng)
        query = domain.nearby_query(center, MATCH_RADIUS_KM, CANDIDATES)
        now, monotonic = time.time() * 1000, time.monotonic() * 1000
        excluded = set(cmd.exclude_driver_ids)
        candidates = [
            driver_id
            for driver_id, _, heard in await self.locations.nearby(query)
            if domain.is_available(heard, now, self.detector.suspect(driver_id, monotonic))
            and driver_id not in excluded
        ]
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
                    if await reserve(conn, uuid.UUID(driver_id), env.ride_id, lease.token):
                        offered = saga_pb2.DriverOffered(driver_id=driver_id, fence=lease.token, attempt=cmd.attempt)
                        reply = envelope(self.clock, reply_id, env.ride_id, env.message_id, driver_offered=offered)
                        break
                await conn.execute(
                    "INSERT INTO handled_commands (message_id, reply) VALUES (%s, %s)",
                    (env.message_id, reply.SerializeToString()),
                )
        finally:
            for lease in leases:
                with contextlib.suppress(RedisError):
                    await self.lock.release(lease)
        return reply

    async def _release(self, env: saga_pb2.Envelope) -> saga_pb2.Envelope:
        cmd = env.release_driver
        async with self.pool.connection() as conn, conn.transaction():
            # Fenced: only the holder of the current token releases the reservation.
            await conn.execute(
                "UPDATE drivers SET ride_id = NULL, offer = NULL, confirmed = false"
                " WHERE driver_id = %s AND ride_id = %s AND fence = %s",
                (uuid.UUID(cmd.driver_id), env.ride_id, cmd.fence),
            )
            reply = envelope(
                self.clock,
                f"{env.message_id}:reply",
                env.ride_id,
                env.message_id,
                driver_released=saga_pb2.DriverReleased(driver_id=cmd.driver_id),
            )
            await conn.execute(
                "INSERT INTO handled_commands (message_id, reply) VALUES (%s, %s)",
                (env.message_id, reply.SerializeToString()),
            )
        return reply

    async def _confirm(self, env: saga_pb2.Envelope) -> None:
        """The pivot: the saga took this driver's acceptance. Fenced like the release: a
        confirmation for a reservation that no longer stands changes nothing."""
        cmd = env.confirm_driver
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute(
                "UPDATE drivers SET confirmed = true WHERE driver_id = %s AND ride_id = %s AND fence = %s",
                (uuid.UUID(cmd.driver_id), env.ride_id, cmd.fence),
            )
            await conn.execute(
                "INSERT INTO handled_commands (message_id, reply) VALUES (%s, %s)", (env.message_id, b"")
            )

    async def _offer(self, env: saga_pb2.Envelope, offered: saga_pb2.DriverOffered) -> None:
        """Queues the offer for the driver's app, if the reservation still stands."""
        async with self.pool.connection() as conn:
            row = await (
                await conn.execute(
                    "SELECT 1 FROM drivers WHERE driver_id = %s AND ride_id = %s AND fence = %s",
                    (uuid.UUID(offered.driver_id), env.ride_id, offered.fence),
                )
            ).fetchone()
        if row is not None and env.WhichOneof("body") == "reserve_driver":
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
