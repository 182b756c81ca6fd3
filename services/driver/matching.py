"""Who is available near a pickup, in a cluster where each replica judges only the drivers
of its own cells: it alone hears their heartbeats, so only its failure detector knows them.

Matching asks every owner of a cell within the radius (Cluster.owners_near): this replica
answers from its own state, the others through one forwarded call each. An owner that
does not answer in time is left out of this attempt: its drivers are not offered now, and
the saga's re-match asks again (a driver is never offered on a guess about its health)."""

from __future__ import annotations

import asyncio
import logging
import time

import grpc

from ridesaga.common.v1 import common_pb2
from ridesaga.driver.v1 import driver_pb2
from services.blocks.failure_detectors import PhiAccrualDetector
from services.driver import domain
from services.driver.adapters import DriverLocations
from services.driver.cluster import Cluster
from services.driver.forwarding import Peers

log = logging.getLogger(__name__)


class Matching:
    """`peers` may be None only for a cluster of one (cluster.Solo)."""

    def __init__(
        self, locations: DriverLocations, detector: PhiAccrualDetector, cluster: Cluster, peers: Peers | None = None
    ) -> None:
        self.locations = locations
        self.detector = detector
        self.cluster = cluster
        self.peers = peers

    async def owned(self, query: domain.NearbyQuery) -> list[tuple[str, float]]:
        """(driver_id, distance_km), nearest first: the available drivers of this replica's
        cells, by the time they were last heard and by this replica's detector."""
        now, monotonic = time.time() * 1000, time.monotonic() * 1000
        return [
            (near.driver_id, near.distance_km)
            for near in await self.locations.nearby(query)
            if self.cluster.owns(near.where)
            and domain.is_available(near.heard_ms, now, self.detector.suspect(near.driver_id, monotonic))
        ]

    async def available(self, query: domain.NearbyQuery) -> list[tuple[str, float]]:
        """(driver_id, distance_km), nearest first, from every owner near the pickup."""
        owners = self.cluster.owners_near(query.center, query.radius_km)
        request = driver_pb2.FindNearbyDriversRequest(
            location=common_pb2.LatLng(lat=query.center.lat, lng=query.center.lng),
            radius_km=query.radius_km,
            limit=query.limit,
        )
        answers = await asyncio.gather(*(self._ask(member, query, request) for member in owners))
        merged = sorted((found for answer in answers for found in answer), key=lambda found: found[1])
        return merged[: query.limit]

    async def _ask(
        self, member: str, query: domain.NearbyQuery, request: driver_pb2.FindNearbyDriversRequest
    ) -> list[tuple[str, float]]:
        if member == self.cluster.me or self.peers is None:
            return await self.owned(query)
        try:
            return [(d.driver_id, d.distance_km) for d in await self.peers.find_nearby(member, request)]
        except grpc.aio.AioRpcError as error:
            log.warning(
                "an owner did not answer matching", extra={"fields": {"member": member, "code": error.code().name}}
            )
            return []
