"""The rider service's adapters: PostgreSQL (riders, idempotency keys and live rides) and
the trip service, called through its breaker."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from psycopg_pool import AsyncConnectionPool

from ridesaga.common.v1 import common_pb2
from ridesaga.rider.v1 import rider_pb2
from ridesaga.trip.v1 import trip_pb2, trip_pb2_grpc
from services.blocks.downstream import Downstream, Unavailable
from services.blocks.idempotency import KEEP_MS, KeyRecord, Replay, Resume
from services.rider.domain import RecoveryPoint, RideBooked, Rider, RideRequest
from services.runtime.errors import DependencyUnavailable, DomainError

R = TypeVar("R")
TRIP_TIMEOUT_SECONDS = 5.0


class RiderStore:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    async def add(self, rider: Rider) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(
                "INSERT INTO riders (rider_id, name, payment_method) VALUES (%s, %s, %s)",
                (rider.rider_id, rider.name, rider.payment_method),
            )

    async def get(self, rider_id: uuid.UUID) -> Rider | None:
        async with self.pool.connection() as conn:
            row = await (
                await conn.execute("SELECT rider_id, name, payment_method FROM riders WHERE rider_id = %s", (rider_id,))
            ).fetchone()
        return Rider(rider_id=row[0], name=row[1], payment_method=row[2]) if row else None


class RequestStore:
    """Idempotency keys and live-ride claims; each method is one short transaction."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    async def create_key(
        self, rider_id: uuid.UUID, key: str, fingerprint: str, ride_id: uuid.UUID, locked_until_ms: int
    ) -> bool:
        async with self.pool.connection() as conn:
            cursor = await conn.execute(
                "INSERT INTO idempotency_keys (rider_id, key, fingerprint, ride_id, recovery_point, locked_until_ms)"
                " VALUES (%s, %s, %s, %s, 'started', %s) ON CONFLICT DO NOTHING",
                (rider_id, key, fingerprint, ride_id, locked_until_ms),
            )
            return cursor.rowcount == 1

    async def lock_existing(
        self,
        rider_id: uuid.UUID,
        key: str,
        decide: Callable[[KeyRecord], Replay | Resume],
        locked_until_ms: int,
    ) -> tuple[Replay | Resume, uuid.UUID, RideBooked | None]:
        """Reads the key under a row lock, lets `decide(record)` judge it (it raises for
        refusals), and takes the lock if the decision is to resume."""
        async with self.pool.connection() as conn, conn.transaction():
            row = await (
                await conn.execute(
                    "SELECT fingerprint, recovery_point, response, locked_until_ms, ride_id FROM idempotency_keys"
                    " WHERE rider_id = %s AND key = %s FOR UPDATE",
                    (rider_id, key),
                )
            ).fetchone()
            if row is None:
                raise LookupError(key)
            record = KeyRecord(key, row[0], row[1], row[2] is not None, row[3])
            decision = decide(record)
            if row[2] is None:
                await conn.execute(
                    "UPDATE idempotency_keys SET locked_until_ms = %s WHERE rider_id = %s AND key = %s",
                    (locked_until_ms, rider_id, key),
                )
            return decision, row[4], None if row[2] is None else _booked(row[2])

    async def advance(self, rider_id: uuid.UUID, key: str, recovery_point: RecoveryPoint) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(
                "UPDATE idempotency_keys SET recovery_point = %s WHERE rider_id = %s AND key = %s",
                (recovery_point.value, rider_id, key),
            )

    async def finish(self, rider_id: uuid.UUID, key: str, booked: RideBooked) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(
                "UPDATE idempotency_keys SET recovery_point = 'finished', response = %s, locked_until_ms = NULL"
                " WHERE rider_id = %s AND key = %s",
                (ride_requested(booked).SerializeToString(), rider_id, key),
            )

    async def unlock(self, rider_id: uuid.UUID, key: str) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(
                "UPDATE idempotency_keys SET locked_until_ms = NULL WHERE rider_id = %s AND key = %s", (rider_id, key)
            )

    async def forget(self, rider_id: uuid.UUID, key: str) -> None:
        async with self.pool.connection() as conn:
            await conn.execute("DELETE FROM idempotency_keys WHERE rider_id = %s AND key = %s", (rider_id, key))

    async def claim_live_ride(self, rider_id: uuid.UUID, ride_id: uuid.UUID) -> tuple[uuid.UUID, float]:
        """Claims the rider's one live-ride slot for ride_id; returns whoever holds it, and
        how many seconds ago it was claimed."""
        async with self.pool.connection() as conn:
            await conn.execute(
                "INSERT INTO live_rides (rider_id, ride_id) VALUES (%s, %s) ON CONFLICT DO NOTHING", (rider_id, ride_id)
            )
            row = await (
                await conn.execute(
                    "SELECT ride_id, extract(epoch FROM now() - claimed_at) FROM live_rides WHERE rider_id = %s",
                    (rider_id,),
                )
            ).fetchone()
        assert row is not None
        return row[0], float(row[1])

    async def slots_older_than(self, seconds: float, limit: int) -> list[tuple[uuid.UUID, uuid.UUID]]:
        """(rider_id, ride_id) of live-ride slots claimed more than `seconds` ago, oldest first."""
        async with self.pool.connection() as conn:
            rows = await (
                await conn.execute(
                    "SELECT rider_id, ride_id FROM live_rides WHERE claimed_at < now() - make_interval(secs => %s)"
                    " ORDER BY claimed_at LIMIT %s",
                    (seconds, limit),
                )
            ).fetchall()
        return [(r[0], r[1]) for r in rows]

    async def release_live_ride(self, rider_id: uuid.UUID, ride_id: uuid.UUID) -> None:
        async with self.pool.connection() as conn:
            await conn.execute("DELETE FROM live_rides WHERE rider_id = %s AND ride_id = %s", (rider_id, ride_id))

    async def reap_keys(self) -> int:
        async with self.pool.connection() as conn:
            cursor = await conn.execute(
                "DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(secs => %s)", (KEEP_MS / 1000,)
            )
            return cursor.rowcount


def ride_requested(booked: RideBooked) -> rider_pb2.RideRequested:
    """The answer to RequestRide as it is sent and as it is stored with its key: one
    message, so a replay answers exactly what the first request did."""
    return rider_pb2.RideRequested(ride_id=str(booked.ride_id), state=booked.state)


def _booked(stored: bytes) -> RideBooked:
    reply = rider_pb2.RideRequested.FromString(stored)
    return RideBooked(uuid.UUID(reply.ride_id), reply.state)


class Forwarded(DomainError):
    """An error answered by trip, passed on to the caller unchanged."""

    def __init__(self, error: grpc.aio.AioRpcError) -> None:
        super().__init__(error.details() or error.code().name)
        self.code = error.code()


class TripClient:
    """The trip service as the rider calls it: through its breaker, so while trip keeps
    failing a call fails fast (DependencyUnavailable); trip's own refusals are Forwarded."""

    def __init__(self, stub: trip_pb2_grpc.TripServiceAsyncStub, calls: Downstream) -> None:
        self.stub = stub
        self.calls = calls

    async def _call(self, method: Callable[..., Awaitable[R]], request: Any) -> R:
        try:
            return await self.calls.call(method, request, deadline_seconds=TRIP_TIMEOUT_SECONDS, idempotent=True)
        except Unavailable as refused:
            raise DependencyUnavailable(f"trip is unavailable ({refused})", refused.retry_after_seconds) from None
        except grpc.aio.AioRpcError as error:
            raise Forwarded(error) from None

    async def start_ride(self, ride_id: uuid.UUID, want: RideRequest, payment_method: str) -> str:
        """Starts the ride (idempotent on its id); returns the state trip gave it."""
        started = await self._call(
            self.stub.StartRide,
            trip_pb2.StartRideRequest(
                ride_id=str(ride_id),
                rider_id=str(want.rider_id),
                pickup=_lat_lng(want.pickup),
                dropoff=_lat_lng(want.dropoff),
                payment_method=payment_method,
            ),
        )
        return started.state

    async def get_ride(self, ride_id: uuid.UUID) -> trip_pb2.Ride | None:
        """The ride as trip sees it; None if trip never heard of it."""
        try:
            return await self._call(self.stub.GetRide, trip_pb2.GetRideRequest(ride_id=str(ride_id)))
        except Forwarded as error:
            if error.code == grpc.StatusCode.NOT_FOUND:
                return None
            raise

    async def cancel_ride(self, ride_id: uuid.UUID) -> trip_pb2.Ride:
        return await self._call(
            self.stub.CancelRide, trip_pb2.CancelRideRequest(ride_id=str(ride_id), reason="rider_cancelled")
        )

    async def watch_ride(self, ride_id: uuid.UUID) -> AsyncIterator[trip_pb2.Ride]:
        """Every change of the ride, as trip streams it. Not through the breaker, which
        bounds unary calls by a deadline: a watch lasts as long as the ride."""
        try:
            async for ride in self.stub.WatchRide(trip_pb2.GetRideRequest(ride_id=str(ride_id))):
                yield ride
        except grpc.aio.AioRpcError as error:
            raise Forwarded(error) from None


def _lat_lng(point: tuple[float, float]) -> common_pb2.LatLng:
    return common_pb2.LatLng(lat=point[0], lng=point[1])
