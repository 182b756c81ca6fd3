"""The trip service: the saga orchestrator's gRPC face."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import grpc
from psycopg_pool import AsyncConnectionPool

from ridesaga.common.v1 import common_pb2
from ridesaga.driver.v1 import driver_pb2_grpc
from ridesaga.payment.v1 import payment_pb2_grpc
from ridesaga.trip.v1 import trip_pb2_grpc
from services.shared import config, db, mesh
from services.shared.grpc_server import Context, serve
from services.shared.probe import probe
from services.shared.topology import service

SPEC = service("trip")


class TripServicer(trip_pb2_grpc.TripServiceServicer):
    def __init__(
        self,
        pool: AsyncConnectionPool,
        driver: driver_pb2_grpc.DriverServiceAsyncStub,
        payment: payment_pb2_grpc.PaymentServiceAsyncStub,
    ) -> None:
        self.pool = pool
        self.driver = driver
        self.payment = payment

    async def Probe(self, request: common_pb2.ProbeRequest, context: Context) -> common_pb2.ProbeReply:
        return await probe(
            SPEC.name,
            lambda: db.ready(self.pool),
            [("driver", self.driver.Probe), ("payment", self.payment.Probe)],
        )


async def register(server: grpc.aio.Server) -> Callable[[], Awaitable[None]]:
    settings = config.load(SPEC.name)
    pool = await db.open_pool(settings.postgres_dsn(SPEC.name))
    channel = mesh.sidecar_channel(settings.egress_target)
    trip_pb2_grpc.add_TripServiceServicer_to_server(
        TripServicer(pool, driver_pb2_grpc.DriverServiceStub(channel), payment_pb2_grpc.PaymentServiceStub(channel)),
        server,
    )

    async def close() -> None:
        await channel.close()
        await pool.close()

    return close


def main() -> None:
    asyncio.run(serve(config.load(SPEC.name), SPEC.grpc_service, register))


if __name__ == "__main__":
    main()
