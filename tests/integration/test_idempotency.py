"""Idempotency keys on RequestRide (docs/saga.md, "Idempotency keys at the edge") and one
live ride per rider (property 11, docs/properties.md), against the running stack."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator

import grpc
import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from drills import checker
from ridesaga.common.v1 import common_pb2
from ridesaga.rider.v1 import rider_pb2, rider_pb2_grpc
from services.blocks.idempotency import fingerprint
from services.rider.adapters import RequestStore
from services.rider.domain import ride_request
from services.runtime.topology import INFRA
from tests.support import db_rows, ride_story, sidecar_channel, wait_for

DOWNTOWN = common_pb2.LatLng(lat=37.7793, lng=-122.4193)
WHARF = common_pb2.LatLng(lat=37.8080, lng=-122.4177)
TIMEOUT = 10.0
RIDER_DB = f"host=127.0.0.1 port={INFRA.postgres} dbname=rider user=rider"


@pytest.fixture(scope="module")
def rider() -> Iterator[rider_pb2_grpc.RiderServiceStub]:
    with sidecar_channel("rider") as channel:
        yield rider_pb2_grpc.RiderServiceStub(channel)


def _new_rider(stub: rider_pb2_grpc.RiderServiceStub) -> str:
    return str(stub.CreateRider(rider_pb2.CreateRiderRequest(name="Idem Potent"), timeout=TIMEOUT).rider_id)


def _request(rider_id: str, key: str, dropoff: common_pb2.LatLng = WHARF) -> rider_pb2.RequestRideRequest:
    return rider_pb2.RequestRideRequest(rider_id=rider_id, pickup=DOWNTOWN, dropoff=dropoff, idempotency_key=key)


def _rides_of(rider_id: str) -> list[str]:
    return [str(r[0]) for r in db_rows("trip", "SELECT ride_id FROM rides WHERE rider_id = %s", (rider_id,))]


def _terminal(stub: rider_pb2_grpc.RiderServiceStub, ride_id: str) -> bool:
    return bool(stub.GetRide(rider_pb2.RideRef(ride_id=ride_id), timeout=TIMEOUT).terminal)


def _concurrently(calls: list[Callable[[], rider_pb2.RideRequested]]) -> list[rider_pb2.RideRequested | grpc.RpcError]:
    barrier = threading.Barrier(len(calls))
    results: list[rider_pb2.RideRequested | grpc.RpcError] = [grpc.RpcError()] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = calls[i]()
        except grpc.RpcError as error:
            results[i] = error

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_a_replayed_key_returns_the_same_ride_and_holds_money_once(rider: rider_pb2_grpc.RiderServiceStub) -> None:
    rider_id, key = _new_rider(rider), str(uuid.uuid4())
    first = rider.RequestRide(_request(rider_id, key), timeout=TIMEOUT)
    again = rider.RequestRide(_request(rider_id, key), timeout=TIMEOUT)
    assert again.ride_id == first.ride_id
    wait_for(lambda: _terminal(rider, first.ride_id), 60, "the ride to end", explain=lambda: ride_story(first.ride_id))
    third = rider.RequestRide(_request(rider_id, key), timeout=TIMEOUT)
    assert third == first  # the stored answer, even after the ride ended
    assert _rides_of(rider_id) == [first.ride_id]
    moves = Counter(m.kind for m in checker.collect().movements[first.ride_id])
    assert moves["AUTHORIZE"] == 1


def test_the_same_key_with_other_parameters_fails_and_executes_nothing(
    rider: rider_pb2_grpc.RiderServiceStub,
) -> None:
    rider_id, key = _new_rider(rider), str(uuid.uuid4())
    first = rider.RequestRide(_request(rider_id, key), timeout=TIMEOUT)
    elsewhere = common_pb2.LatLng(lat=37.75, lng=-122.45)
    with pytest.raises(grpc.RpcError) as error:
        rider.RequestRide(_request(rider_id, key, dropoff=elsewhere), timeout=TIMEOUT)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert key in (error.value.details() or "") and "idempotency_key" in (error.value.details() or "")
    assert _rides_of(rider_id) == [first.ride_id]


def test_ten_concurrent_requests_with_one_key_make_one_ride(rider: rider_pb2_grpc.RiderServiceStub) -> None:
    rider_id, key = _new_rider(rider), str(uuid.uuid4())
    results = _concurrently([lambda: rider.RequestRide(_request(rider_id, key), timeout=TIMEOUT)] * 10)
    rides = {r.ride_id for r in results if isinstance(r, rider_pb2.RideRequested)}
    refused = [r.code() for r in results if isinstance(r, grpc.RpcError)]
    assert len(rides) == 1
    # Those that met the first one in flight were refused; any that came after it had
    # finished got its stored answer. Which ones did depends on scheduling.
    assert set(refused) <= {grpc.StatusCode.ABORTED}
    assert _rides_of(rider_id) == list(rides)


def _key_in_flight(rider_id: str, key: str, locked_for_ms: int) -> str:
    """A key row as a request leaves it when it has claimed the key and not finished yet
    (or crashed: then its lock runs out)."""
    ride_id = str(uuid.uuid4())
    params = ride_request(rider_id, (DOWNTOWN.lat, DOWNTOWN.lng), (WHARF.lat, WHARF.lng)).params()
    with psycopg.connect(RIDER_DB, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO idempotency_keys (rider_id, key, fingerprint, ride_id, recovery_point, locked_until_ms)"
            " VALUES (%s, %s, %s, %s, 'started', %s)",
            (rider_id, key, fingerprint(params), ride_id, int(time.time() * 1000) + locked_for_ms),
        )
    return ride_id


def test_a_key_in_flight_is_aborted_and_a_crashed_one_is_taken_over(rider: rider_pb2_grpc.RiderServiceStub) -> None:
    rider_id, key = _new_rider(rider), str(uuid.uuid4())
    _key_in_flight(rider_id, key, locked_for_ms=60_000)
    with pytest.raises(grpc.RpcError) as error:
        rider.RequestRide(_request(rider_id, key), timeout=TIMEOUT)
    assert error.value.code() == grpc.StatusCode.ABORTED and "in progress" in (error.value.details() or "")
    assert _rides_of(rider_id) == []

    other, crashed_key = _new_rider(rider), str(uuid.uuid4())
    ride_id = _key_in_flight(other, crashed_key, locked_for_ms=-1)  # its holder died
    resumed = rider.RequestRide(_request(other, crashed_key), timeout=TIMEOUT)
    assert resumed.ride_id == ride_id  # the retry finished the crashed request's work
    assert _rides_of(other) == [ride_id]


def test_ten_concurrent_requests_with_different_keys_make_at_most_one_live_ride(
    rider: rider_pb2_grpc.RiderServiceStub,
) -> None:
    rider_id = _new_rider(rider)
    calls = [
        (lambda key: lambda: rider.RequestRide(_request(rider_id, key), timeout=TIMEOUT))(str(uuid.uuid4()))
        for _ in range(10)
    ]
    results = _concurrently(calls)
    accepted = [r for r in results if isinstance(r, rider_pb2.RideRequested)]
    refused = [r for r in results if isinstance(r, grpc.RpcError)]
    assert len(accepted) == 1
    assert {r.code() for r in refused} == {grpc.StatusCode.FAILED_PRECONDITION}
    assert all("already has a live ride" in (r.details() or "") for r in refused)
    assert _rides_of(rider_id) == [accepted[0].ride_id]
    # Once that ride has ended the rider may book again.
    wait_for(
        lambda: _terminal(rider, accepted[0].ride_id),
        60,
        "the live ride to end",
        explain=lambda: ride_story(accepted[0].ride_id),
    )
    again = rider.RequestRide(_request(rider_id, str(uuid.uuid4())), timeout=TIMEOUT)
    assert again.ride_id != accepted[0].ride_id


def test_an_oversize_key_is_refused_naming_the_field(rider: rider_pb2_grpc.RiderServiceStub) -> None:
    rider_id = _new_rider(rider)
    with pytest.raises(grpc.RpcError) as error:
        rider.RequestRide(_request(rider_id, "k" * 256), timeout=TIMEOUT)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (error.value.details() or "").startswith("idempotency_key:")
    assert _rides_of(rider_id) == []


def test_keys_are_kept_24_hours_then_reaped_and_a_reaped_key_is_new_again(
    rider: rider_pb2_grpc.RiderServiceStub,
) -> None:
    old_rider, young_rider = _new_rider(rider), _new_rider(rider)
    old_key, young_key = str(uuid.uuid4()), str(uuid.uuid4())
    forgotten = _key_in_flight(old_rider, old_key, locked_for_ms=-1)
    _key_in_flight(young_rider, young_key, locked_for_ms=60_000)
    with psycopg.connect(RIDER_DB, autocommit=True) as conn:
        for key, hours in ((old_key, 24.5), (young_key, 23.5)):
            conn.execute(
                "UPDATE idempotency_keys SET created_at = created_at - %s * interval '1 hour' WHERE key = %s",
                (hours, key),
            )

    async def reap() -> int:  # the rider service's reaper (it runs every minute), run once now
        async with AsyncConnectionPool(RIDER_DB, min_size=1, max_size=1) as pool:
            return await RequestStore(pool).reap_keys()

    assert asyncio.run(reap()) >= 1
    kept = db_rows("rider", "SELECT key FROM idempotency_keys WHERE key = ANY(%s)", ([old_key, young_key],))
    assert [row[0] for row in kept] == [young_key]
    fresh = rider.RequestRide(_request(old_rider, old_key), timeout=TIMEOUT)
    assert fresh.ride_id != forgotten, "a reaped key is new again: it books a new ride"
    assert _rides_of(old_rider) == [fresh.ride_id]
