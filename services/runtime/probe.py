"""The mesh probe: each service reports its own readiness and asks the services it
depends on, through its sidecar, so one call proves the whole path."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import grpc

from ridesaga.common.v1 import common_pb2

Downstream = grpc.aio.UnaryUnaryMultiCallable[common_pb2.ProbeRequest, common_pb2.ProbeReply]

PROBE_TIMEOUT_SECONDS = 3.0


async def probe(
    service: str,
    ready: Callable[[], Awaitable[bool]],
    downstream: Sequence[tuple[str, Downstream]],
) -> common_pb2.ProbeReply:
    async def ask(name: str, call: Downstream) -> common_pb2.ProbeReply:
        try:
            reply: common_pb2.ProbeReply = await call(common_pb2.ProbeRequest(), timeout=PROBE_TIMEOUT_SECONDS)
            return reply
        except grpc.aio.AioRpcError:
            return common_pb2.ProbeReply(service=name, ready=False)

    own, answers = await asyncio.gather(ready(), asyncio.gather(*(ask(name, call) for name, call in downstream)))
    return common_pb2.ProbeReply(service=service, ready=own, downstream=answers)


def reached(reply: common_pb2.ProbeReply) -> dict[str, bool]:
    """Flattens a probe tree into {service: ready}."""
    found = {reply.service: reply.ready}
    for child in reply.downstream:
        found.update(reached(child))
    return found
