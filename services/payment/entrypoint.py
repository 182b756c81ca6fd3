"""The payment service: holds, captures and the ledger, calling the psp through Envoy.
Its work arrives as saga commands on payment.commands; its gRPC face is health and probe."""

from __future__ import annotations

import asyncio

import grpc
from psycopg_pool import AsyncConnectionPool

from ridesaga.common.v1 import common_pb2
from ridesaga.payment.v1 import payment_pb2_grpc
from ridesaga.psp.v1 import psp_pb2_grpc
from services.payment.participant import PaymentParticipant
from services.shared import config, db, mesh
from services.shared.eos import LoopConfig, TransactionalLoop
from services.shared.grpc_server import Context, Lifecycle, serve
from services.shared.probe import probe
from services.shared.topology import service

SPEC = service("payment")


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
    payment_pb2_grpc.add_PaymentServiceServicer_to_server(PaymentServicer(pool, psp), server)
    loop = TransactionalLoop(
        LoopConfig(
            name="payment-participant",
            bootstrap=settings.kafka_bootstrap,
            group_id="payment-participant",
            transactional_id="payment-participant",
            topics=("payment.commands",),
            dead_letter_topic="ridesaga.dlq",
        ),
        PaymentParticipant(pool, psp, config.clock()).handle,
    )
    lifecycle.on_close(pool.close)
    lifecycle.on_close(channel.close)
    lifecycle.spawn("payment-participant", loop.run)


def main() -> None:
    asyncio.run(serve(config.load(SPEC.name), SPEC.grpc_service, register))


if __name__ == "__main__":
    main()
