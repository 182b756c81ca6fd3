"""Who is available near a pickup, in a cluster where each replica judges only the drivers
of its own cells: it alone hears their heartbeats, so only its failure detector knows them.

Matching asks every owner of a cell within the radius (Cluster.owners_near): this replica
answers from its own state, the others through one forwarded call each. An owner that
does not answer in time is left out of this attempt: its drivers are not offered now, and
the saga's re-match asks again (a driver is never offered on a guess about its health).

The nearest candidates' positions are then read through the quorum store (R from the stack,
services/driver/quorum_store.py) and the candidates ranked by them: a stale position can
cost a worse match, never a double booking, which the fenced reservation in PostgreSQL
rules out whatever a position says (services/driver/fenced_reservations.py)."""

from __future__ import annotations

import asyncio
import logging
import time

import grpc
from opentelemetry import trace

from ridesaga.common.v1 import common_pb2
from ridesaga.driver.v1 import driver_pb2
from services.blocks.failure_detectors import PhiAccrualDetector
from services.blocks.ring import RESOLUTION, cell_of
from services.driver import domain
from services.driver.adapters import DriverLocations
from services.driver.cluster import Cluster
from services.driver.forwarding import Peers
from services.driver.quorum_store import QuorumStore, QuorumUnavailable

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)
MATCHING_SPAN = "matching: ask the owners near the pickup"
MEMBER_ATTRIBUTE = "ridesaga.member"  # the replica that matched
CELL_ATTRIBUTE = "ridesaga.pickup_cell"  # H3, at services/blocks/ring.py's RESOLUTION
OWNER_ATTRIBUTE = "ridesaga.pickup_owner"  # the cell's owner in that replica's view
ASKED_ATTRIBUTE = "ridesaga.owners_asked"  # comma-separated
QUORUM_ATTRIBUTE = "ridesaga.positions_read"  # how the candidates' positions were read through the quorum
# Only the nearest few are read through the quorum (a read is two or three calls between
# replicas); the saga offers the ride to the first of them that it can reserve.
QUORUM_CANDIDATES = 5


class Matching:
    """`peers` may be None only for a cluster of one (cluster.Solo)."""

    def __init__(
        self,
        locations: DriverLocations,
        detector: PhiAccrualDetector,
        cluster: Cluster,
        peers: Peers | None = None,
        positions: QuorumStore | None = None,
    ) -> None:
        self.locations = locations
        self.detector = detector
        self.cluster = cluster
        self.peers = peers
        self.positions = positions

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
        """(driver_id, distance_km), nearest first, from every owner near the pickup. Its
        span says which replica matched, the pickup's cell and its owner in this replica's
        view, and who was asked (`ridectl explain` reads them from the trace)."""
        owners = self.cluster.owners_near(query.center, query.radius_km)
        request = driver_pb2.FindNearbyDriversRequest(
            location=common_pb2.LatLng(lat=query.center.lat, lng=query.center.lng),
            radius_km=query.radius_km,
            limit=query.limit,
        )
        with tracer.start_as_current_span(MATCHING_SPAN) as span:
            span.set_attribute(MEMBER_ATTRIBUTE, self.cluster.me)
            span.set_attribute(CELL_ATTRIBUTE, cell_of(query.center.lat, query.center.lng, RESOLUTION))
            span.set_attribute(OWNER_ATTRIBUTE, self.cluster.owner(query.center))
            span.set_attribute(ASKED_ATTRIBUTE, ",".join(owners))
            answers = await asyncio.gather(*(self._ask(member, query, request) for member in owners))
            merged = sorted((found for answer in answers for found in answer), key=lambda found: found[1])
            nearest = merged[: query.limit]
            ranked, how = await self._through_quorum(query, nearest[:QUORUM_CANDIDATES])
            span.set_attribute(QUORUM_ATTRIBUTE, how)
        return ranked + nearest[QUORUM_CANDIDATES:]

    async def _through_quorum(
        self, query: domain.NearbyQuery, candidates: list[tuple[str, float]]
    ) -> tuple[list[tuple[str, float]], str]:
        """The candidates re-ranked by their positions read through the quorum; one whose
        read is refused or finds nothing keeps the index's distance."""
        if self.positions is None or not candidates:
            return candidates, "not read"
        store = self.positions

        async def read(driver_id: str) -> domain.Position | None:
            try:
                found = await store.get(driver_id)
            except QuorumUnavailable:
                return None
            return domain.position_of(found.resolved.value) if found.resolved is not None else None

        positions = await asyncio.gather(*(read(driver_id) for driver_id, _ in candidates))
        ranked = sorted(
            (
                (driver_id, domain.distance_km(query.center, where) if where is not None else km)
                for (driver_id, km), where in zip(candidates, positions, strict=True)
            ),
            key=lambda found: found[1],
        )
        moved = sum(1 for before, after in zip(candidates, ranked, strict=True) if before[0] != after[0])
        read_count = sum(1 for where in positions if where is not None)
        how = f"R={store.quorum.r}: {read_count} of {len(candidates)} read, {moved} ranked differently"
        return ranked, how

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
