"""The rider service's PostgreSQL adapter: riders, idempotency keys and live rides."""

from __future__ import annotations

import uuid
from typing import Any

from psycopg_pool import AsyncConnectionPool

from services.blocks.idempotency import KEEP_MS, KeyRecord
from services.rider.domain import Rider


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
        self, rider_id: uuid.UUID, key: str, decide: Any, locked_until_ms: int
    ) -> tuple[Any, uuid.UUID, bytes | None]:
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
            return decision, row[4], row[2]

    async def advance(self, rider_id: uuid.UUID, key: str, recovery_point: str) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(
                "UPDATE idempotency_keys SET recovery_point = %s WHERE rider_id = %s AND key = %s",
                (recovery_point, rider_id, key),
            )

    async def finish(self, rider_id: uuid.UUID, key: str, response: bytes) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(
                "UPDATE idempotency_keys SET recovery_point = 'finished', response = %s, locked_until_ms = NULL"
                " WHERE rider_id = %s AND key = %s",
                (response, rider_id, key),
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
