"""The driver cluster's replicated positions (services/driver/quorum_store.py) on the real
three-replica cluster: a write reaches every replica; while one replica is stopped, writes
at W=2 still succeed and the coordinator keeps hints for it; once it is back the hints are
handed back, each within HANDOFF_BOUND_SECONDS; a read at R=3 with a replica behind
repairs it; heartbeats write the drivers' positions and matching reads its candidates'
through the quorum; bad requests are refused naming the field."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator

import grpc
import pytest

from deploy.local import paths
from deploy.local.supervisor import Supervisor
from ridesaga.common.v1 import common_pb2
from ridesaga.driver.v1 import driver_pb2, driver_pb2_grpc
from services.driver.client import agreed, views
from tests.e2e.rides import ride_many
from tests.support import ridectl, status_of, wait_for

FIRST, SECOND, THIRD = "127.0.0.1:7003", "127.0.0.1:7103", "127.0.0.1:7203"
# Once the replica serves again: SWIM sees it alive at once (it joins through its seeds),
# and hints go out every 0.5 s (HANDOFF_EVERY_SECONDS). Ten seconds is that with ample slack.
HANDOFF_BOUND_SECONDS = 10.0


def stub(address: str) -> driver_pb2_grpc.DriverServiceStub:
    return driver_pb2_grpc.DriverServiceStub(grpc.insecure_channel(address))


def held(address: str, key: str) -> list[str]:
    """The values one replica holds itself for `key` (ReplicaRead is served locally)."""
    reply = stub(address).ReplicaRead(driver_pb2.ReplicaReadRequest(key=key), timeout=5)
    return [v.value for v in reply.versions]


def hints_at(address: str) -> set[tuple[str, str]]:
    reply = stub(address).QuorumStatus(driver_pb2.QuorumStatusRequest(), timeout=5)
    return {(h.for_member, h.key) for h in reply.hints}


def all_alive() -> bool:
    return agreed(asyncio.run(views([FIRST, SECOND, THIRD])), {FIRST, SECOND, THIRD})


@pytest.fixture
def third_stopped() -> Iterator[Supervisor]:
    supervisor = Supervisor(paths.RUN)
    wait_for(all_alive, 30, "three agreed views")
    supervisor.stop("driver-3")
    try:
        yield supervisor
    finally:
        supervisor.start("driver-3")
        wait_for(all_alive, 30, "three agreed views again")


def test_heartbeats_write_positions_and_matching_ranks_candidates_by_them() -> None:
    (booking,) = asyncio.run(ride_many(1, "quorum rider"))
    assert booking.outcome == "completed"

    def positions_line() -> str | None:
        told = ridectl("explain", booking.ride_id, "--json")
        if told.returncode != 0:
            return None
        attempts = json.loads(told.stdout)["matchings"]
        return next((a["positions"] for a in attempts if a.get("positions")), None)

    line = wait_for(positions_line, 30, "the matching span in the ride's trace")
    assert re.fullmatch(r"R=2: [1-9]\d* of [1-9]\d* read, \d+ ranked differently", line), line
    driver_id = json.loads(ridectl("ride", "show", booking.ride_id, "--json").stdout)["driver_id"]
    reply = stub(SECOND).QuorumGet(driver_pb2.QuorumGetRequest(key=driver_id), timeout=5)
    assert reply.found and {"lat", "lng", "at_ms"} <= set(json.loads(reply.resolved.value))


def test_a_write_is_on_every_replica() -> None:
    key = f"everywhere-{time.time_ns()}"
    reply = stub(FIRST).QuorumPut(driver_pb2.QuorumPutRequest(key=key, value="here"), timeout=5)
    assert reply.acks >= 2 and reply.w == 2
    assert {p.member for p in reply.placements} == {FIRST, SECOND, THIRD}
    for address in (FIRST, SECOND, THIRD):
        wait_for(lambda a=address: held(a, key) == ["here"], 5, f"{key} on {address}")  # type: ignore[misc]


def test_writes_while_a_replica_is_down_are_handed_back_when_it_returns(third_stopped: Supervisor) -> None:
    # The stopped replica said goodbye (left): the others know it is down at once.
    wait_for(lambda: THIRD not in _alive_at(FIRST), 10, "the stopped replica seen as down")
    keys = [f"handoff-{time.time_ns()}-{i}" for i in range(5)]
    for key in keys:
        reply = stub(FIRST).QuorumPut(driver_pb2.QuorumPutRequest(key=key, value=f"v-{key}"), timeout=5)
        assert reply.acks == 2, "W=2 from the two replicas up"
        assert THIRD not in {p.member for p in reply.placements}
    assert {(THIRD, key) for key in keys} <= hints_at(FIRST), "the coordinator keeps a hint per write"
    third_stopped.start("driver-3")
    wait_for(lambda: _answers(THIRD), 60, "the restarted replica serving")
    back = time.monotonic()  # it is back: the bound runs from here
    for key in keys:
        wait_for(lambda k=key: held(THIRD, k) == [f"v-{k}"], HANDOFF_BOUND_SECONDS, f"{key} handed back")  # type: ignore[misc]
    took = time.monotonic() - back
    assert not {h for h in hints_at(FIRST) if h[0] == THIRD and h[1] in keys}, "delivered hints are dropped"
    print(f"hints handed back {took:.2f} s after the replica served again")


def _answers(address: str) -> bool:
    try:
        stub(address).Probe(common_pb2.ProbeRequest(), timeout=2)
    except grpc.RpcError:
        return False
    return True


def _alive_at(address: str) -> set[str]:
    reply = stub(address).Members(driver_pb2.MembersRequest(), timeout=5)
    return {m.member for m in reply.members if m.state == "alive"}


def test_a_read_of_every_replica_repairs_the_one_behind() -> None:
    key = f"repair-{time.time_ns()}"
    first = stub(FIRST).QuorumPut(driver_pb2.QuorumPutRequest(key=key, value="old"), timeout=5)
    # A newer version only on the first replica, as if the others had missed it.
    newer = driver_pb2.StoredVersion(
        value="new", clock=[driver_pb2.ClockEntry(replica=FIRST, counter=2)], stamp_ms=first.version.stamp_ms + 1
    )
    stub(FIRST).ReplicaWrite(driver_pb2.ReplicaWriteRequest(key=key, versions=[newer]), timeout=5)
    wait_for(lambda: held(SECOND, key) == ["old"], 5, "the old version on the second replica")
    read = stub(SECOND).QuorumGet(driver_pb2.QuorumGetRequest(key=key, r=3), timeout=5)
    assert read.resolved.value == "new" and read.answers == 3
    assert set(read.repaired) == {SECOND, THIRD}
    for address in (SECOND, THIRD):
        wait_for(lambda a=address: held(a, key) == ["new"], 5, f"{address} repaired")  # type: ignore[misc]


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (driver_pb2.QuorumPutRequest(key="", value="x"), "key: is required"),
        (driver_pb2.QuorumPutRequest(key="k" * 256, value="x"), "key: must be at most 255 characters, got 256"),
        (driver_pb2.QuorumPutRequest(key="k", value="x", w=4), r"w: must be in 1..N=3 \(0: the stack's\), got 4"),
        (driver_pb2.QuorumGetRequest(key="k", r=-1), r"r: must be in 1..N=3 \(0: the stack's\), got -1"),
        (
            driver_pb2.QuorumPutRequest(key="k", value="x", context=[driver_pb2.ClockEntry(replica="a", counter=-2)]),
            "context: vector clock counter for 'a' must be >= 0, got -2",
        ),
    ],
)
def test_a_bad_quorum_request_is_refused_naming_the_field(request_: object, message: str) -> None:
    call = stub(FIRST).QuorumPut if isinstance(request_, driver_pb2.QuorumPutRequest) else stub(FIRST).QuorumGet
    code, details = status_of(lambda: call(request_, timeout=5))  # type: ignore[arg-type]
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert re.search(message, details), details
