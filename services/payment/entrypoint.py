"""The payment service: holds, captures and the ledger, calling the psp through Envoy.
Its work arrives as saga commands on payment.commands; its gRPC face is health and probe.
It forgets a handled command once Kafka can no longer redeliver it (reap-handled-commands)."""

from __future__ import annotations

import asyncio

import grpc
import redis.asyncio as aioredis
from psycopg_pool import AsyncConnectionPool

from ridesaga.common.v1 import common_pb2
from ridesaga.payment.v1 import payment_pb2_grpc
from ridesaga.psp.v1 import psp_pb2_grpc
from services.blocks import retention
from services.blocks.breaker import BreakerConfig
from services.blocks.downstream import Downstream
from services.blocks.exactly_once import LoopConfig, TransactionalLoop
from services.payment.adapters import Attempts, Holds, PspClient
from services.payment.handlers import Adapters
from services.payment.participant import PaymentParticipant
from services.runtime import config, db, mesh
from services.runtime.grpc_server import Context, Lifecycle, serve
from services.runtime.periodic import every
from services.runtime.probe import probe
from services.runtime.topology import Group, service

SPEC = service("payment")
# Judged over the last 10 calls, opens at half failing, probes after 5 s.
PSP_BREAKER = BreakerConfig(window=10, minimum_calls=5, failure_rate=0.5, open_seconds=5.0, half_open_probes=2)


class PaymentServicer(payment_pb2_grpc.PaymentServiceServicer):
    def __init__(self, pool: AsyncConnectionPool, psp: psp_pb2_grpc.PspServiceAsyncStub) -> None:
        self.pool = pool
        self.psp = psp

    async def Probe(self, request: common_pb2.ProbeRequest, context: Context) -> common_pb2.ProbeReply:
        return await probe(SPEC.name, lambda: db.ready(self.pool), [("psp", self.psp.Probe)])


async def register(server: grpc.aio.Server, lifecycle: Lifecycle) -> None:
    settings = config.load(SPEC.name)
    pool = await db.open_pool(settings.postgres_dsn(SPEC.name))
    channel = mesh.sidecar_channel(settings.egress_target)
    psp = psp_pb2_grpc.PspServiceStub(channel)
    client = aioredis.Redis.from_url(settings.redis_url, socket_timeout=1.0, socket_connect_timeout=1.0)
    downstream = Downstream("payment->psp", redis=client, breaker=PSP_BREAKER)
    payment_pb2_grpc.add_PaymentServiceServicer_to_server(PaymentServicer(pool, psp), server)
    adapters = Adapters(PspClient(psp, downstream), Holds(pool), Attempts(pool), config.clock())
    loop = TransactionalLoop(
        LoopConfig.for_group(Group.PAYMENT, settings.kafka_bootstrap, Group.PAYMENT.topics, config.replica_suffix()),
        PaymentParticipant(pool, adapters).handle,
    )
    lifecycle.on_close(client.aclose)
    lifecycle.on_close(pool.close)
    lifecycle.spawn("publish-breaker", lambda stopping: every(1.0, stopping, downstream.publish, "publish breaker"))
    lifecycle.on_close(channel.close)
    lifecycle.spawn(Group.PAYMENT, loop.run)
    lifecycle.spawn("reap-handled-commands", retention.reaper(pool, "handled_commands"))
    lifecycle.spawn("reap-psp-attempts", retention.reaper(pool, "psp_attempts"))


def main() -> None:
    asyncio.run(serve(config.load(SPEC.name), SPEC.grpc_service, register))


if __name__ == "__main__":
    main()
