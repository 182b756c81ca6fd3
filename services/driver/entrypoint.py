"""The driver service: registration, heartbeat streams and nearby-driver search."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
import redis.asyncio as aioredis
from opentelemetry.instrumentation.redis import RedisInstrumentor

from ridesaga.common.v1 import common_pb2
from ridesaga.driver.v1 import driver_pb2, driver_pb2_grpc
from services.driver import domain
from services.driver.adapters import DriverLocations, DriverRegistry
from services.shared import config, db, validation
from services.shared.errors import InvalidArgument, NotFound, grpc_errors
from services.shared.grpc_server import Context, serve
from services.shared.probe import probe
from services.shared.topology import service

SPEC = service("driver")


def _now_ms() -> int:
    return int(time.time() * 1000)


class DriverServicer(driver_pb2_grpc.DriverServiceServicer):
    def __init__(self, registry: DriverRegistry, locations: DriverLocations) -> None:
        self.registry = registry
        self.locations = locations

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
        now = _now_ms()
        available = [
            driver_pb2.NearbyDriver(driver_id=driver_id, distance_km=distance)
            for driver_id, distance, heard in await self.locations.nearby(query)
            if domain.is_available(heard, now)
        ]
        return driver_pb2.FindNearbyDriversReply(drivers=available[: query.limit])

    async def Probe(self, request: common_pb2.ProbeRequest, context: Context) -> common_pb2.ProbeReply:
        async def ready() -> bool:
            stores = await asyncio.gather(db.ready(self.registry.pool), self.locations.ready())
            return all(stores)

        return await probe(SPEC.name, ready, [])


async def register(server: grpc.aio.Server) -> Callable[[], Awaitable[None]]:
    settings = config.load(SPEC.name)
    RedisInstrumentor().instrument()
    pool = await db.open_pool(settings.postgres_dsn(SPEC.name))
    # health_check_interval: an idle pooled connection is PINGed before reuse, so a Redis
    # restart is noticed and the connection replaced instead of failing the next call.
    client = aioredis.Redis.from_url(
        settings.redis_url, socket_timeout=2.0, socket_connect_timeout=2.0, health_check_interval=5
    )
    driver_pb2_grpc.add_DriverServiceServicer_to_server(
        DriverServicer(DriverRegistry(pool), DriverLocations(client)), server
    )

    async def close() -> None:
        await client.aclose()
        await pool.close()

    return close


def main() -> None:
    asyncio.run(serve(config.load(SPEC.name), SPEC.grpc_service, register))


if __name__ == "__main__":
    main()
