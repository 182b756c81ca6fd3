"""The driver service's adapters: the registry in PostgreSQL, positions in Redis GEO.
(The saga's fenced writes to a reservation are fenced_reservations.py.)"""

from __future__ import annotations

import uuid
from typing import Any, NamedTuple

import redis.asyncio as aioredis
from psycopg_pool import AsyncConnectionPool

from services.driver.domain import Driver, NearbyQuery, Position


class Nearby(NamedTuple):
    driver_id: str
    distance_km: float
    heard_ms: float | None  # when the driver was last heard from, by any replica
    where: Position


GEO_KEY = "drivers:geo"
HEARD_KEY = "drivers:last_heard_ms"


class DriverRegistry:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    async def add(self, driver: Driver) -> None:
        async with self.pool.connection() as conn:
            await conn.execute("INSERT INTO drivers (driver_id, name) VALUES (%s, %s)", (driver.driver_id, driver.name))

    async def holds(self, driver_id: uuid.UUID, ride_id: uuid.UUID, fence: int) -> bool:
        """Whether the driver's current reservation is this ride's, under this token."""
        async with self.pool.connection() as conn:
            row = await (
                await conn.execute(
                    "SELECT 1 FROM drivers WHERE driver_id = %s AND ride_id = %s AND fence = %s",
                    (driver_id, ride_id, fence),
                )
            ).fetchone()
        return row is not None

    async def reservation(self, driver_id: uuid.UUID) -> tuple[str | None, int, bool] | None:
        """The driver's current (ride_id, fence, confirmed), or None for an unknown driver."""
        async with self.pool.connection() as conn:
            row = await (
                await conn.execute("SELECT ride_id, fence, confirmed FROM drivers WHERE driver_id = %s", (driver_id,))
            ).fetchone()
        return (str(row[0]) if row[0] else None, int(row[1]), bool(row[2])) if row else None

    async def keep_offer(self, driver_id: uuid.UUID, offer: bytes, ride_id: str, fence: int) -> bool:
        """Records the offer sent for the driver's current reservation; False if that
        reservation no longer stands (then the offer is not sent at all)."""
        async with self.pool.connection() as conn:
            cursor = await conn.execute(
                "UPDATE drivers SET offer = %s WHERE driver_id = %s AND ride_id = %s AND fence = %s",
                (offer, driver_id, ride_id, fence),
            )
        return cursor.rowcount == 1

    async def pending_offer(self, driver_id: uuid.UUID) -> bytes | None:
        """The offer the driver has not answered yet, if any."""
        async with self.pool.connection() as conn:
            row = await (
                await conn.execute(
                    "SELECT offer FROM drivers WHERE driver_id = %s AND ride_id IS NOT NULL AND offer IS NOT NULL",
                    (driver_id,),
                )
            ).fetchone()
        return bytes(row[0]) if row else None

    async def answered(self, driver_id: uuid.UUID, fence: int) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(
                "UPDATE drivers SET offer = NULL WHERE driver_id = %s AND fence = %s", (driver_id, fence)
            )

    async def exists(self, driver_id: uuid.UUID) -> bool:
        async with self.pool.connection() as conn:
            row = await (await conn.execute("SELECT 1 FROM drivers WHERE driver_id = %s", (driver_id,))).fetchone()
        return row is not None


class DriverLocations:
    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client

    async def record(self, driver_id: uuid.UUID, where: Position, heard_ms: int) -> None:
        member = str(driver_id)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.geoadd(GEO_KEY, (where.lng, where.lat, member))
            pipe.zadd(HEARD_KEY, {member: heard_ms})
            await pipe.execute()

    async def nearby(self, query: NearbyQuery) -> list[Nearby]:
        """The drivers within the query's radius, nearest first."""
        found: list[Any] = await self.client.geosearch(
            GEO_KEY,
            longitude=query.center.lng,
            latitude=query.center.lat,
            radius=query.radius_km,
            unit="km",
            sort="ASC",
            withdist=True,
            withcoord=True,
        )
        if not found:
            return []
        members = [str(m.decode() if isinstance(m, bytes) else m) for m, _, _ in found]
        heard = await self.client.zmscore(HEARD_KEY, members)
        return [
            Nearby(member, float(dist), when, Position(float(lat), float(lng)))
            for member, (_, dist, (lng, lat)), when in zip(members, found, heard, strict=True)
        ]

    async def where(self, driver_id: str) -> Position | None:
        """The driver's last known position, None for a driver never located."""
        found: list[Any] = await self.client.geopos(GEO_KEY, driver_id)
        if not found or found[0] is None:
            return None
        lng, lat = found[0]
        return Position(float(lat), float(lng))

    async def ready(self) -> bool:
        try:
            return bool(await self.client.ping())
        except aioredis.RedisError:
            return False
