"""Calls from one driver replica to another (Ringpop's forwarding): one hop, through this
replica's sidecar, which routes by MEMBER_HEADER to the named replica's sidecar
(deploy/envoy/render.py). Each forwarded call is a gRPC client span of the ride's trace.

A forwarded call carries FORWARDED_HEADER: its receiver answers from its own state and
never forwards again, even when its view of the ring differs (a hop, never a loop)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable, Sequence

import grpc

from ridesaga.driver.v1 import driver_pb2, driver_pb2_grpc
from services.blocks.quorum import Version, clock
from services.runtime.mesh import sidecar_channel
from services.runtime.topology import MEMBER_HEADER

FORWARDED_HEADER = "x-ridesaga-forwarded-by"
FORWARD_TIMEOUT_SECONDS = 2.0
RELAY_QUEUE = 1024  # heartbeats waiting for one owner's stream; past it they are dropped
log = logging.getLogger(__name__)


def forwarded(metadata: Iterable[tuple[str, str | bytes]] | None) -> bool:
    """Whether a call's invocation metadata says another replica forwarded it."""
    return any(key == FORWARDED_HEADER for key, _ in metadata or ())


class Peers:
    def __init__(self, me: str, egress: str) -> None:
        self.me = me
        self.channel = sidecar_channel(egress)
        self.stub: driver_pb2_grpc.DriverServiceAsyncStub = driver_pb2_grpc.DriverServiceStub(self.channel)
        self._relays: dict[str, _Relay] = {}

    def _to(self, member: str) -> tuple[tuple[str, str], ...]:
        return ((MEMBER_HEADER, member), (FORWARDED_HEADER, self.me))

    async def deliver_offer(self, member: str, driver_id: str, offer: driver_pb2.Offer) -> bool:
        reply = await self.stub.DeliverOffer(
            driver_pb2.DeliverOfferRequest(driver_id=driver_id, offer=offer),
            metadata=self._to(member),
            timeout=FORWARD_TIMEOUT_SECONDS,
        )
        return bool(reply.delivered)

    async def find_nearby(
        self, member: str, request: driver_pb2.FindNearbyDriversRequest
    ) -> list[driver_pb2.NearbyDriver]:
        owned = driver_pb2.FindNearbyDriversRequest()
        owned.CopyFrom(request)
        owned.owned_only = True
        reply = await self.stub.FindNearbyDrivers(owned, metadata=self._to(member), timeout=FORWARD_TIMEOUT_SECONDS)
        return list(reply.drivers)

    def watch_offers(self, member: str, driver_id: str) -> AsyncIterator[driver_pb2.Offer]:
        call = self.stub.WatchOffers(driver_pb2.WatchOffersRequest(driver_id=driver_id), metadata=self._to(member))
        return call.__aiter__()

    async def replica_write(self, member: str, key: str, versions: Sequence[Version], hint_for: str) -> None:
        request = driver_pb2.ReplicaWriteRequest(key=key, versions=[version_message(v) for v in versions])
        request.hint_for = hint_for
        await self.stub.ReplicaWrite(request, metadata=self._to(member), timeout=FORWARD_TIMEOUT_SECONDS)

    async def replica_read(self, member: str, key: str) -> tuple[Version, ...]:
        reply = await self.stub.ReplicaRead(
            driver_pb2.ReplicaReadRequest(key=key), metadata=self._to(member), timeout=FORWARD_TIMEOUT_SECONDS
        )
        return tuple(version_of(v) for v in reply.versions)

    async def replica_digest(self, member: str, digests: dict[str, bytes]) -> dict[str, tuple[Version, ...]]:
        request = driver_pb2.ReplicaDigestRequest(
            digests=[driver_pb2.KeyDigest(key=k, digest=d) for k, d in sorted(digests.items())]
        )
        reply = await self.stub.ReplicaDigest(request, metadata=self._to(member), timeout=FORWARD_TIMEOUT_SECONDS)
        return {item.key: tuple(version_of(v) for v in item.versions) for item in reply.differing}

    def relay_heartbeat(self, member: str, beat: driver_pb2.Heartbeat) -> None:
        """Passes a heartbeat on to the driver's owner, on one long stream per owner."""
        relay = self._relays.get(member)
        if relay is None or relay.done():
            relay = self._relays[member] = _Relay(self.stub, self._to(member), member)
        relay.put(beat)

    async def close(self) -> None:
        for relay in self._relays.values():
            await relay.stop()
        await self.channel.close()


def version_message(version: Version) -> driver_pb2.StoredVersion:
    return driver_pb2.StoredVersion(
        value=version.value,
        clock=[driver_pb2.ClockEntry(replica=r, counter=c) for r, c in version.clock],
        stamp_ms=version.stamp[0],
        stamp_logical=version.stamp[1],
    )


def clock_of(entries: Iterable[driver_pb2.ClockEntry]) -> tuple[tuple[str, int], ...]:
    """A vector clock from its message; ValueError names a replica given twice or a
    negative counter."""
    counts: dict[str, int] = {}
    for entry in entries:
        if entry.replica in counts:
            raise ValueError(f"vector clock names replica {entry.replica!r} twice")
        counts[entry.replica] = entry.counter
    return clock(counts)


def version_of(message: driver_pb2.StoredVersion) -> Version:
    return Version(message.value, clock_of(message.clock), (message.stamp_ms, message.stamp_logical))


class _Relay:
    """One StreamHeartbeats call to an owner, fed from a queue. When the stream breaks
    (the owner died) the relay ends and the next heartbeat for that owner starts another."""

    def __init__(
        self, stub: driver_pb2_grpc.DriverServiceAsyncStub, metadata: tuple[tuple[str, str], ...], member: str
    ):
        self.queue: asyncio.Queue[driver_pb2.Heartbeat | None] = asyncio.Queue(RELAY_QUEUE)
        self.member = member
        self.task = asyncio.get_running_loop().create_task(self._run(stub, metadata))

    def done(self) -> bool:
        return self.task.done()

    def put(self, beat: driver_pb2.Heartbeat) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(beat)

    async def _beats(self) -> AsyncIterator[driver_pb2.Heartbeat]:
        while (beat := await self.queue.get()) is not None:
            yield beat

    async def _run(self, stub: driver_pb2_grpc.DriverServiceAsyncStub, metadata: tuple[tuple[str, str], ...]) -> None:
        try:
            await stub.StreamHeartbeats(self._beats(), metadata=metadata)
        except grpc.aio.AioRpcError as error:
            log.warning("heartbeat relay broke", extra={"fields": {"member": self.member, "code": error.code().name}})

    async def stop(self) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(None)
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
