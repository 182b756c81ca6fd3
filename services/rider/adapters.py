"""The rider service's PostgreSQL adapter."""

from __future__ import annotations

import uuid

from psycopg_pool import AsyncConnectionPool

from services.rider.domain import Rider


class RiderStore:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    async def add(self, rider: Rider) -> None:
        async with self.pool.connection() as conn:
            await conn.execute("INSERT INTO riders (rider_id, name) VALUES (%s, %s)", (rider.rider_id, rider.name))

    async def get(self, rider_id: uuid.UUID) -> Rider | None:
        async with self.pool.connection() as conn:
            row = await (
                await conn.execute("SELECT rider_id, name FROM riders WHERE rider_id = %s", (rider_id,))
            ).fetchone()
        return Rider(rider_id=row[0], name=row[1]) if row else None
