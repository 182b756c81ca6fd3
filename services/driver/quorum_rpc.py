"""The quorum store's gRPC methods, mixed into the driver servicer: validation and the
mapping between messages and services/driver/quorum_store.py, nothing else."""

from __future__ import annotations

from collections.abc import Iterable

from ridesaga.driver.v1 import driver_pb2
from services.blocks.quorum import Version
from services.driver.forwarding import clock_of, version_message, version_of
from services.driver.quorum_store import MAX_KEY, MAX_VALUE, QuorumStore, QuorumUnavailable
from services.runtime.errors import DependencyUnavailable, InvalidArgument, grpc_errors
from services.runtime.grpc_server import Context

RETRY_AFTER_SECONDS = 0.5


def _key(key: str) -> str:
    if not key:
        raise InvalidArgument("key", "is required")
    if len(key) > MAX_KEY:
        raise InvalidArgument("key", f"must be at most {MAX_KEY} characters, got {len(key)}")
    return key


def _count(field: str, value: int, n: int) -> int:
    if not 0 <= value <= n:
        raise InvalidArgument(field, f"must be in 1..N={n} (0: the stack's), got {value}")
    return value


def _versions(messages: Iterable[driver_pb2.StoredVersion]) -> list[Version]:
    try:
        return [version_of(m) for m in messages]
    except ValueError as error:
        raise InvalidArgument("versions", str(error)) from None


class QuorumMethods:
    store: QuorumStore

    @grpc_errors
    async def QuorumPut(self, request: driver_pb2.QuorumPutRequest, context: Context) -> driver_pb2.QuorumPutReply:
        key = _key(request.key)
        if len(request.value) > MAX_VALUE:
            raise InvalidArgument("value", f"must be at most {MAX_VALUE} characters, got {len(request.value)}")
        w = _count("w", request.w, self.store.quorum.n)
        try:
            base = clock_of(request.context)
        except ValueError as error:
            raise InvalidArgument("context", str(error)) from None
        try:
            written = await self.store.put(key, request.value, w, request.strict, base)
        except QuorumUnavailable as error:
            raise DependencyUnavailable(str(error), RETRY_AFTER_SECONDS) from None
        return driver_pb2.QuorumPutReply(
            version=version_message(written.version),
            acks=written.acks,
            w=written.w,
            placements=[driver_pb2.Placement(member=p.member, hint_for=p.hint_for or "") for p in written.placements],
            coordinator=self.store.me,
        )

    @grpc_errors
    async def QuorumGet(self, request: driver_pb2.QuorumGetRequest, context: Context) -> driver_pb2.QuorumGetReply:
        key = _key(request.key)
        r = _count("r", request.r, self.store.quorum.n)
        try:
            read = await self.store.get(key, r, request.strict)
        except QuorumUnavailable as error:
            raise DependencyUnavailable(str(error), RETRY_AFTER_SECONDS) from None
        reply = driver_pb2.QuorumGetReply(
            siblings=[version_message(v) for v in read.outcome.versions],
            found=read.resolved is not None,
            answers=read.answers,
            r=read.r,
            repaired=list(read.outcome.behind),
            coordinator=self.store.me,
        )
        if read.resolved is not None:
            reply.resolved.CopyFrom(version_message(read.resolved))
        return reply

    async def QuorumStatus(
        self, request: driver_pb2.QuorumStatusRequest, context: Context
    ) -> driver_pb2.QuorumStatusReply:
        store = self.store
        return driver_pb2.QuorumStatusReply(
            me=store.me,
            n=store.quorum.n,
            r=store.quorum.r,
            w=store.quorum.w,
            sloppy=store.sloppy,
            keys=len(store.replica.data),
            hints=[
                driver_pb2.HeldHint(for_member=member, key=key)
                for member, held in sorted(store.replica.hints.items())
                for key in sorted(held)
            ],
            hints_handed_back=store.counters.hints_handed_back,
            read_repairs=store.counters.read_repairs,
            anti_entropy_repairs=store.counters.anti_entropy_repairs,
        )

    @grpc_errors
    async def ReplicaWrite(
        self, request: driver_pb2.ReplicaWriteRequest, context: Context
    ) -> driver_pb2.ReplicaWriteReply:
        self.store.replica.write(_key(request.key), _versions(request.versions), request.hint_for)
        return driver_pb2.ReplicaWriteReply()

    @grpc_errors
    async def ReplicaRead(
        self, request: driver_pb2.ReplicaReadRequest, context: Context
    ) -> driver_pb2.ReplicaReadReply:
        versions = self.store.replica.read(_key(request.key))
        return driver_pb2.ReplicaReadReply(versions=[version_message(v) for v in versions])

    @grpc_errors
    async def ReplicaDigest(
        self, request: driver_pb2.ReplicaDigestRequest, context: Context
    ) -> driver_pb2.ReplicaDigestReply:
        digests = {_key(item.key): item.digest for item in request.digests}
        differing = self.store.differing(digests)
        return driver_pb2.ReplicaDigestReply(
            differing=[
                driver_pb2.KeyVersions(key=k, versions=[version_message(v) for v in vs])
                for k, vs in sorted(differing.items())
            ]
        )
