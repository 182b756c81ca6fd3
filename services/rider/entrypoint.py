"""The rider service: a thin grpc.aio servicer mapping protobuf to the rider domain."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import grpc

from ridesaga.common.v1 import common_pb2
from ridesaga.rider.v1 import rider_pb2, rider_pb2_grpc
from ridesaga.trip.v1 import trip_pb2_grpc
from services.rider.adapters import RiderStore
from services.rider.domain import Rider, new_rider
from services.shared import config, db, mesh, validation
from services.shared.errors import NotFound, grpc_errors
from services.shared.grpc_server import Context, serve
from services.shared.probe import probe
from services.shared.topology import service

SPEC = service("rider")


def _to_proto(rider: Rider) -> rider_pb2.Rider:
    return rider_pb2.Rider(rider_id=str(rider.rider_id), name=rider.name)


class RiderServicer(rider_pb2_grpc.RiderServiceServicer):
    def __init__(self, riders: RiderStore, trip: trip_pb2_grpc.TripServiceAsyncStub) -> None:
        self.riders = riders
        self.trip = trip

    @grpc_errors
    async def CreateRider(self, request: rider_pb2.CreateRiderRequest, context: Context) -> rider_pb2.Rider:
        rider = new_rider(request.name)
        await self.riders.add(rider)
        return _to_proto(rider)

    @grpc_errors
    async def GetRider(self, request: rider_pb2.GetRiderRequest, context: Context) -> rider_pb2.Rider:
        rider = await self.riders.get(validation.identifier("rider_id", request.rider_id))
        if rider is None:
            raise NotFound("rider", request.rider_id)
        return _to_proto(rider)

    async def Probe(self, request: common_pb2.ProbeRequest, context: Context) -> common_pb2.ProbeReply:
        return await probe(SPEC.name, lambda: db.ready(self.riders.pool), [("trip", self.trip.Probe)])


async def register(server: grpc.aio.Server) -> Callable[[], Awaitable[None]]:
    settings = config.load(SPEC.name)
    pool = await db.open_pool(settings.postgres_dsn(SPEC.name))
    channel = mesh.sidecar_channel(settings.egress_target)
    rider_pb2_grpc.add_RiderServiceServicer_to_server(
        RiderServicer(RiderStore(pool), trip_pb2_grpc.TripServiceStub(channel)), server
    )

    async def close() -> None:
        await channel.close()
        await pool.close()

    return close


def main() -> None:
    asyncio.run(serve(config.load(SPEC.name), SPEC.grpc_service, register))


if __name__ == "__main__":
    main()
