"""The rider's handlers over in-memory adapters (services/rider/handlers.py): the
idempotency-key protocol of RequestRide and the one live ride per rider, without
PostgreSQL, Redis or trip. Trip is a fake stub behind the real TripClient, so what the
handlers see of trip's answers is what they see in the running service."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, cast

import grpc
import pytest

from ridesaga.trip.v1 import trip_pb2
from services.blocks.downstream import Downstream
from services.blocks.idempotency import KeyRecord, Replay, Resume, fingerprint
from services.blocks.ratelimit import Decision
from services.rider import handlers
from services.rider.adapters import Forwarded, TripClient
from services.rider.domain import RecoveryPoint, RequestRide, RideBooked, Rider, RideRef, ride_request
from services.rider.handlers import Adapters
from services.runtime.errors import Aborted, FailedPrecondition, InvalidArgument

DOWNTOWN = (37.7793, -122.4193)
WHARF = (37.8080, -122.4177)
ELSEWHERE = (37.75, -122.45)


@dataclass
class KeyRow:
    fingerprint: str
    ride_id: uuid.UUID
    recovery_point: str
    locked_until_ms: int | None
    response: RideBooked | None = None


@dataclass
class FakeRequests:
    """RequestStore in memory: the same rows, each method one atomic step; a slot is
    (its ride, how many seconds ago it was claimed)."""

    keys: dict[tuple[uuid.UUID, str], KeyRow] = field(default_factory=dict)
    slots: dict[uuid.UUID, tuple[uuid.UUID, float]] = field(default_factory=dict)
    advanced: list[RecoveryPoint] = field(default_factory=list)

    async def create_key(
        self, rider_id: uuid.UUID, key: str, fingerprint: str, ride_id: uuid.UUID, locked_until_ms: int
    ) -> bool:
        if (rider_id, key) in self.keys:
            return False
        self.keys[rider_id, key] = KeyRow(fingerprint, ride_id, RecoveryPoint.STARTED, locked_until_ms)
        return True

    async def lock_existing(
        self,
        rider_id: uuid.UUID,
        key: str,
        decide: Callable[[KeyRecord], Replay | Resume],
        locked_until_ms: int,
    ) -> tuple[Replay | Resume, uuid.UUID, RideBooked | None]:
        row = self.keys[rider_id, key]
        record = KeyRecord(key, row.fingerprint, row.recovery_point, row.response is not None, row.locked_until_ms)
        decision = decide(record)
        if row.response is None:
            row.locked_until_ms = locked_until_ms
        return decision, row.ride_id, row.response

    async def advance(self, rider_id: uuid.UUID, key: str, recovery_point: RecoveryPoint) -> None:
        self.keys[rider_id, key].recovery_point = recovery_point
        self.advanced.append(recovery_point)

    async def finish(self, rider_id: uuid.UUID, key: str, booked: RideBooked) -> None:
        row = self.keys[rider_id, key]
        row.recovery_point, row.response, row.locked_until_ms = RecoveryPoint.FINISHED, booked, None

    async def unlock(self, rider_id: uuid.UUID, key: str) -> None:
        self.keys[rider_id, key].locked_until_ms = None

    async def forget(self, rider_id: uuid.UUID, key: str) -> None:
        del self.keys[rider_id, key]

    async def claim_live_ride(self, rider_id: uuid.UUID, ride_id: uuid.UUID) -> tuple[uuid.UUID, float]:
        return self.slots.setdefault(rider_id, (ride_id, 0.0))

    async def slots_older_than(self, seconds: float, limit: int) -> list[tuple[uuid.UUID, uuid.UUID]]:
        return [(rider, ride) for rider, (ride, age) in self.slots.items() if age > seconds][:limit]

    async def release_live_ride(self, rider_id: uuid.UUID, ride_id: uuid.UUID) -> None:
        if self.slots.get(rider_id, (None, 0.0))[0] == ride_id:
            del self.slots[rider_id]


@dataclass
class FakeRiders:
    riders: dict[uuid.UUID, Rider] = field(default_factory=dict)

    async def add(self, rider: Rider) -> None:
        self.riders[rider.rider_id] = rider

    async def get(self, rider_id: uuid.UUID) -> Rider | None:
        return self.riders.get(rider_id)


class AllowAll:
    async def take(self, key: str) -> Decision:
        return Decision(True, 0.0)


class Crash(BaseException):
    """The rider process dying mid-call: nothing of the handler's own handling runs."""


def _not_found(ride_id: str) -> grpc.aio.AioRpcError:
    metadata = grpc.aio.Metadata()
    return grpc.aio.AioRpcError(grpc.StatusCode.NOT_FOUND, metadata, metadata, details=f"ride {ride_id!r} not found")


@dataclass
class FakeTripStub:
    """Trip's gRPC methods over a table of rides; StartRide is idempotent on the ride id,
    as trip's is. `crash_on_start` makes the next StartRide crash instead of answering."""

    rides: dict[str, trip_pb2.Ride] = field(default_factory=dict)
    starts: list[str] = field(default_factory=list)
    crash_on_start: bool = False

    async def StartRide(self, request: trip_pb2.StartRideRequest, timeout: float) -> trip_pb2.Ride:
        self.starts.append(request.ride_id)
        if self.crash_on_start:
            self.crash_on_start = False
            raise Crash
        new = trip_pb2.Ride(ride_id=request.ride_id, rider_id=request.rider_id, state="PENDING")
        return self.rides.setdefault(request.ride_id, new)

    async def GetRide(self, request: trip_pb2.GetRideRequest, timeout: float) -> trip_pb2.Ride:
        if request.ride_id not in self.rides:
            raise _not_found(request.ride_id)
        return self.rides[request.ride_id]

    async def CancelRide(self, request: trip_pb2.CancelRideRequest, timeout: float) -> trip_pb2.Ride:
        if request.ride_id not in self.rides:
            raise _not_found(request.ride_id)
        self.rides[request.ride_id] = trip_pb2.Ride(ride_id=request.ride_id, state="CANCELLED", terminal=True)
        return self.rides[request.ride_id]

    def end(self, ride_id: uuid.UUID) -> None:
        self.rides[str(ride_id)] = trip_pb2.Ride(ride_id=str(ride_id), state="COMPLETED", terminal=True)


@dataclass
class World:
    requests: FakeRequests = field(default_factory=FakeRequests)
    riders: FakeRiders = field(default_factory=FakeRiders)
    trip: FakeTripStub = field(default_factory=FakeTripStub)

    @property
    def adapters(self) -> Adapters:
        client = TripClient(cast(Any, self.trip), Downstream("rider->trip"))
        return Adapters(self.riders, self.requests, client, AllowAll())

    def rider(self) -> uuid.UUID:
        rider = Rider(uuid.uuid4(), "Ada", "tok_visa")
        self.riders.riders[rider.rider_id] = rider
        return rider.rider_id

    def request(self, rider_id: uuid.UUID, key: str, dropoff: tuple[float, float] = WHARF) -> RideBooked:
        command = RequestRide(str(rider_id), DOWNTOWN, dropoff, key)
        return asyncio.run(handlers.request_ride(command, self.adapters))


def test_a_finished_key_replays_its_stored_answer_and_starts_nothing_again() -> None:
    world = World()
    rider = world.rider()
    first = world.request(rider, "k1")
    assert world.request(rider, "k1") == first
    world.trip.end(first.ride_id)
    assert world.request(rider, "k1") == first, "the stored answer, even after the ride ended"
    assert world.trip.starts == [str(first.ride_id)]
    assert world.requests.keys[rider, "k1"].recovery_point == RecoveryPoint.FINISHED


def test_a_key_reused_with_other_parameters_is_refused_and_executes_nothing() -> None:
    world = World()
    rider = world.rider()
    first = world.request(rider, "k1")
    stored = replace(world.requests.keys[rider, "k1"])
    with pytest.raises(InvalidArgument, match=r"^idempotency_key: 'k1' was already used with other parameters"):
        world.request(rider, "k1", dropoff=ELSEWHERE)
    assert world.trip.starts == [str(first.ride_id)]
    assert world.requests.keys[rider, "k1"] == stored


def test_a_key_in_progress_is_refused_and_its_lock_left_to_its_holder() -> None:
    world = World()
    rider = world.rider()
    params = ride_request(str(rider), DOWNTOWN, WHARF).params()
    in_flight = KeyRow(fingerprint(params), uuid.uuid4(), RecoveryPoint.STARTED, locked_until_ms=2**62)
    world.requests.keys[rider, "k1"] = in_flight
    before = replace(in_flight)
    with pytest.raises(Aborted, match=r"^idempotency_key 'k1': a request with this key is in progress"):
        world.request(rider, "k1")
    assert world.trip.starts == []
    assert world.requests.slots == {}
    assert world.requests.keys[rider, "k1"] == before, "still its holder's, locked as it left it"


def test_a_retry_after_a_crash_resumes_from_the_recovery_point_with_the_same_ride() -> None:
    world = World()
    rider = world.rider()
    world.trip.crash_on_start = True
    with pytest.raises(Crash):
        world.request(rider, "k1")
    crashed = world.requests.keys[rider, "k1"]
    assert crashed.recovery_point == RecoveryPoint.RIDE_CLAIMED
    with pytest.raises(Aborted, match="in progress"):
        world.request(rider, "k1")  # the crashed request's lock has not run out yet
    crashed.locked_until_ms = 0  # now it has
    resumed = world.request(rider, "k1")
    assert resumed.ride_id == crashed.ride_id
    assert world.trip.starts == [str(crashed.ride_id)] * 2, "StartRide again, on the ride id of the first attempt"
    assert world.requests.advanced == [RecoveryPoint.RIDE_CLAIMED], "resumed past the claim, not from the start"
    assert world.requests.slots[rider] == (crashed.ride_id, 0.0)


def test_a_rider_with_a_live_ride_is_refused_another_and_the_refused_key_is_not_used_up() -> None:
    world = World()
    rider = world.rider()
    live = world.request(rider, "k1")
    with pytest.raises(FailedPrecondition, match=f"^rider {rider} already has a live ride {live.ride_id}$"):
        world.request(rider, "k2")
    assert (rider, "k2") not in world.requests.keys
    assert world.trip.starts == [str(live.ride_id)]
    world.trip.end(live.ride_id)
    again = world.request(rider, "k2")
    assert again.ride_id != live.ride_id
    assert world.requests.slots[rider] == (again.ride_id, 0.0)


def test_a_slot_whose_ride_trip_never_heard_of_is_freed_only_once_it_is_an_orphan() -> None:
    world = World()
    rider, never_started = world.rider(), uuid.uuid4()
    world.requests.slots[rider] = (never_started, handlers.ORPHANED_AFTER_SECONDS - 1)
    with pytest.raises(FailedPrecondition, match="already has a live ride"):
        world.request(rider, "k1")
    world.requests.slots[rider] = (never_started, handlers.ORPHANED_AFTER_SECONDS + 1)
    assert asyncio.run(handlers.free_slots(world.adapters)) == 1
    booked = world.request(rider, "k1")
    assert world.requests.slots[rider] == (booked.ride_id, 0.0)


def test_cancelling_an_unknown_ride_passes_on_trips_not_found() -> None:
    world = World()
    unknown = str(uuid.uuid4())
    with pytest.raises(InvalidArgument, match=r"^ride_id: "):
        asyncio.run(handlers.cancel_ride(RideRef("nope"), world.adapters))
    with pytest.raises(Forwarded) as error:
        asyncio.run(handlers.cancel_ride(RideRef(unknown), world.adapters))
    assert error.value.code == grpc.StatusCode.NOT_FOUND
    assert str(error.value) == f"ride {unknown!r} not found"
    assert world.trip.rides == {}
