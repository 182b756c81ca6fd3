"""Liveness against the real stack: work that a fault interrupted comes unstuck by itself
(docs/saga.md, "Liveness"). Each test recreates one way a ride or a rider used to stay
stuck forever."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import Iterator

import grpc
import pytest
from confluent_kafka import KafkaError, KafkaException, Producer
from psycopg_pool import AsyncConnectionPool

from deploy.envoy.faults import set_faults
from ridesaga.common.v1 import common_pb2
from ridesaga.rider.v1 import rider_pb2, rider_pb2_grpc
from ridesaga.trip.v1 import trip_pb2
from services.blocks.clocks import HybridLogicalClock
from services.runtime.messages import Outgoing
from services.runtime.topology import INFRA
from services.trip.entrypoint import TripServicer
from services.trip.sweeper import Sweeper
from services.trip.watchers import RideWatchers
from tests.support import db_rows, ride_story, sidecar_channel, status, wait_for

TRIP_DB = f"host=127.0.0.1 port={INFRA.postgres} dbname=trip user=trip"
DOWNTOWN = common_pb2.LatLng(lat=37.7793, lng=-122.4193)
WHARF = common_pb2.LatLng(lat=37.8080, lng=-122.4177)
LOS_ANGELES = common_pb2.LatLng(lat=34.0522, lng=-118.2437)  # no driver there
TIMEOUT = 10.0


def _state(ride_id: str) -> str:
    rows = db_rows("trip", "SELECT state FROM rides WHERE ride_id = %s", (ride_id,))
    return str(rows[0][0]) if rows else ""


class KafkaDown:
    """A publisher whose broker is unreachable: the ride row is written, its start is not."""

    async def send(self, record: Outgoing) -> None:
        raise KafkaException(KafkaError(KafkaError._ALL_BROKERS_DOWN))


def test_a_ride_whose_start_never_reached_kafka_is_started_by_the_sweeper() -> None:
    ride_id = str(uuid.uuid4())

    async def start_while_kafka_is_down() -> None:
        async with AsyncConnectionPool(TRIP_DB, min_size=1, max_size=1) as pool:
            servicer = TripServicer(pool, KafkaDown(), HybridLogicalClock(), None, None, RideWatchers(TRIP_DB))  # type: ignore[arg-type]
            request = trip_pb2.StartRideRequest(
                ride_id=ride_id, rider_id=str(uuid.uuid4()), pickup=DOWNTOWN, dropoff=WHARF, payment_method="tok_visa"
            )
            with pytest.raises(KafkaException):
                await TripServicer.StartRide.__wrapped__(servicer, request, None)  # type: ignore[attr-defined]

    asyncio.run(start_while_kafka_is_down())
    assert _state(ride_id) == "PENDING"
    wait_for(
        lambda: _state(ride_id) in ("COMPLETED", "CANCELLED"),
        60,
        "the PENDING ride to end",
        explain=lambda: ride_story(ride_id),
    )


def test_a_slot_orphaned_by_a_failed_call_to_trip_is_freed_and_the_rider_can_book_again() -> None:
    with sidecar_channel("rider") as channel:
        riders = rider_pb2_grpc.RiderServiceStub(channel)
        rider = riders.CreateRider(rider_pb2.CreateRiderRequest(name="Gave Up"), timeout=TIMEOUT)

        def request() -> rider_pb2.RideRequested:
            want = rider_pb2.RequestRideRequest(
                rider_id=rider.rider_id, pickup=DOWNTOWN, dropoff=WHARF, idempotency_key=str(uuid.uuid4())
            )
            return riders.RequestRide(want, timeout=TIMEOUT)

        set_faults("trip", abort_percent=100)
        try:
            with pytest.raises(grpc.RpcError) as failed:
                request()  # the slot is claimed, then the call to trip fails; the rider gives up
        finally:
            set_faults("trip")
        assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
        assert db_rows("rider", "SELECT count(*) FROM live_rides WHERE rider_id = %s", (rider.rider_id,)) == [(1,)]
        wait_for(
            lambda: (
                db_rows("rider", "SELECT count(*) FROM live_rides WHERE rider_id = %s", (rider.rider_id,)) == [(0,)]
            ),
            60,
            "the orphaned slot to be freed",
        )
        booked = request()
        wait_for(lambda: _state(booked.ride_id) in ("COMPLETED", "CANCELLED"), 60, "the new ride to end")


@pytest.fixture
def sweepers_paused() -> Iterator[None]:
    """Stops both sweeper processes, so the test plays the leaders itself; always resumed
    (they then lose their ZooKeeper sessions, and elect a leader with a newer epoch)."""
    pids = [status()[name]["pid"] for name in ("trip-sweeper-1", "trip-sweeper-2")]
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


class Captured:
    def __init__(self) -> None:
        self.records: list[Outgoing] = []

    async def send(self, record: Outgoing) -> None:
        self.records.append(record)


def test_a_timeout_fenced_as_stale_never_hides_the_new_leaders_timeout(sweepers_paused: None) -> None:
    """The old leader's timeout for a ride is handled first and fenced (its epoch is
    stale); the new leader's timeout for the same deadline must still move the ride."""
    with sidecar_channel("rider") as channel:
        riders = rider_pb2_grpc.RiderServiceStub(channel)
        rider = riders.CreateRider(rider_pb2.CreateRiderRequest(name="Far Away"), timeout=TIMEOUT)
        ride = riders.RequestRide(
            rider_pb2.RequestRideRequest(
                rider_id=rider.rider_id, pickup=LOS_ANGELES, dropoff=DOWNTOWN, idempotency_key=str(uuid.uuid4())
            ),
            timeout=TIMEOUT,
        )
        wait_for(
            lambda: _state(ride.ride_id) == "MATCH_BACKOFF",
            30,
            "no driver, a backoff",
            explain=lambda: ride_story(ride.ride_id),
        )
        overdue = f"SELECT count(*) FROM rides WHERE ride_id = '{ride.ride_id}' AND deadline_ms < extract(epoch FROM now()) * 1000"
        wait_for(lambda: db_rows("trip", overdue) == [(1,)], 10, "the backoff to be overdue")

        async def two_leaders() -> list[Outgoing]:
            async with AsyncConnectionPool(TRIP_DB, min_size=1, max_size=1) as pool:
                epoch = int(db_rows("trip", "SELECT epoch FROM sweeper_epoch WHERE id = 1")[0][0])
                old, new = Captured(), Captured()
                assert await Sweeper(pool, old, HybridLogicalClock(), "test-old").sweep_once(epoch)  # type: ignore[arg-type]
                successor = Sweeper(pool, new, HybridLogicalClock(), "test-new")  # type: ignore[arg-type]
                assert await successor.claim(epoch + 1)
                assert await successor.sweep_once(epoch + 1)
                mine = [r for r in old.records + new.records if r.key == ride.ride_id.encode()]
                assert len(mine) == 2, "each leader sent the ride's timeout once"
                return mine

        stale_then_current = asyncio.run(two_leaders())
        producer = Producer({"bootstrap.servers": f"127.0.0.1:{INFRA.kafka}", "enable.idempotence": True})
        for record in stale_then_current:  # in this order, on the ride's one partition
            producer.produce(record.topic, key=record.key, value=record.value, headers=record.headers)
        assert producer.flush(10) == 0
        second_attempt = (
            "SELECT count(*) FROM saga_log WHERE ride_id = %s AND step = 'match_driver' AND detail = 'attempt 2'"
        )
        wait_for(
            lambda: db_rows("trip", second_attempt, (ride.ride_id,)) == [(1,)],
            20,
            "the new leader's timeout to start attempt 2",
            explain=lambda: ride_story(ride.ride_id),
        )
        riders.CancelRide(rider_pb2.RideRef(ride_id=ride.ride_id), timeout=TIMEOUT)
    wait_for(
        lambda: _state(ride.ride_id) == "CANCELLED",
        60,
        "the ride to be cancelled",
        explain=lambda: ride_story(ride.ride_id),
    )
