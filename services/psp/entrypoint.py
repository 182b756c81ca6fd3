"""The psp: a simulated external card processor."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import grpc
from psycopg_pool import AsyncConnectionPool

from ridesaga.common.v1 import common_pb2
from ridesaga.psp.v1 import psp_pb2_grpc
from services.shared import config, db
from services.shared.grpc_server import Context, serve
from services.shared.probe import probe
from services.shared.topology import service

SPEC = service("psp")


class PspServicer(psp_pb2_grpc.PspServiceServicer):
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    async def Probe(self, request: common_pb2.ProbeRequest, context: Context) -> common_pb2.ProbeReply:
        return await probe(SPEC.name, lambda: db.ready(self.pool), [])


async def register(server: grpc.aio.Server) -> Callable[[], Awaitable[None]]:
    pool = await db.open_pool(config.load(SPEC.name).postgres_dsn(SPEC.name))
    psp_pb2_grpc.add_PspServiceServicer_to_server(PspServicer(pool), server)
    return pool.close


def main() -> None:
    asyncio.run(serve(config.load(SPEC.name), SPEC.grpc_service, register))


if __name__ == "__main__":
    main()
