"""Reading the driver cluster from outside: each replica's view of the membership, asked
of every replica through its sidecar (`ridectl members`, the cluster drills, the tests)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import grpc

from ridesaga.driver.v1 import driver_pb2, driver_pb2_grpc
from services.runtime.mesh import sidecar_channel

VIEW_TIMEOUT_SECONDS = 2.0


@dataclass(frozen=True)
class Seen:
    member: str
    state: str
    incarnation: int
    changed_at_ms: int


@dataclass(frozen=True)
class ReplicaView:
    replica: str  # the address asked
    members: tuple[Seen, ...] = ()
    error: str = ""  # why it did not answer; then members is empty

    def states(self) -> dict[str, str]:
        return {m.member: m.state for m in self.members}


async def _view(address: str) -> ReplicaView:
    async with sidecar_channel(address) as channel:
        stub = driver_pb2_grpc.DriverServiceStub(channel)
        try:
            reply = await stub.Members(driver_pb2.MembersRequest(), timeout=VIEW_TIMEOUT_SECONDS)
        except grpc.aio.AioRpcError as error:
            return ReplicaView(address, error=f"{error.code().name}: {error.details()}")
    seen = tuple(Seen(m.member, m.state, m.incarnation, m.changed_at_ms) for m in reply.members)
    return ReplicaView(address, seen)


async def views(addresses: list[str]) -> list[ReplicaView]:
    return list(await asyncio.gather(*(_view(address) for address in addresses)))


def agreed(found: list[ReplicaView], expected_alive: set[str] | None = None) -> bool:
    """Every replica answered, and all see the same members alive (the expected ones, if
    given); a member gone from one view and suspect in another counts as disagreement."""
    if not found or any(v.error for v in found):
        return False
    alive = [{m for m, state in v.states().items() if state == "alive"} for v in found]
    same = all(a == alive[0] for a in alive)
    return same and (expected_alive is None or alive[0] == expected_alive)
