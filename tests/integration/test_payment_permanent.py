"""A payment the processor refuses for good ends the ride instead of retrying forever,
bad payment input is refused at the edge, and payment forgets its handled commands once
Kafka can no longer redeliver them; against the running stack, through the sidecars."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import grpc
import psycopg
import pytest
from confluent_kafka import Consumer, TopicPartition
from psycopg_pool import AsyncConnectionPool

from ridesaga.common.v1 import common_pb2
from ridesaga.psp.v1 import psp_pb2, psp_pb2_grpc
from ridesaga.rider.v1 import rider_pb2, rider_pb2_grpc
from ridesaga.trip.v1 import trip_pb2, trip_pb2_grpc
from services.blocks import retention
from services.psp import domain
from services.runtime.messages import PAYMENT_REJECTED, header_carrier
from services.runtime.topology import INFRA, Topic
from tests.support import request_ride, ride_story, sidecar_channel, status_of, wait_for

CALL_TIMEOUT = 10.0
ENDS_WITHIN_SECONDS = 20.0
PAYMENT_DB = f"host=127.0.0.1 port={INFRA.postgres} dbname=payment user=payment"
DOWNTOWN = common_pb2.LatLng(lat=37.7793, lng=-122.4193)
WHARF = common_pb2.LatLng(lat=37.8080, lng=-122.4177)
MALFORMED = ["cash", "visa", "tok_", "tok_visa card", "tok_" + "x" * 61]


@pytest.fixture(scope="module")
def rider() -> Iterator[rider_pb2_grpc.RiderServiceStub]:
    with sidecar_channel("rider") as channel:
        yield rider_pb2_grpc.RiderServiceStub(channel)


@pytest.fixture(scope="module")
def trip() -> Iterator[trip_pb2_grpc.TripServiceStub]:
    with sidecar_channel("trip") as channel:
        yield trip_pb2_grpc.TripServiceStub(channel)


@pytest.fixture(scope="module")
def psp() -> Iterator[psp_pb2_grpc.PspServiceStub]:
    with sidecar_channel("psp") as channel:
        yield psp_pb2_grpc.PspServiceStub(channel)


def _ended(trip: trip_pb2_grpc.TripServiceStub, ride_id: str) -> trip_pb2.Ride:
    def terminal() -> trip_pb2.Ride | None:
        ride = trip.GetRide(trip_pb2.GetRideRequest(ride_id=ride_id), timeout=CALL_TIMEOUT)
        return ride if ride.terminal else None

    return wait_for(terminal, ENDS_WITHIN_SECONDS, f"ride {ride_id} to end", explain=lambda: ride_story(ride_id))


def _dead_lettered(ride_id: str, since_ms: int) -> list[str]:
    """The errors of the records dead-lettered since `since_ms` for this ride (every saga
    record is keyed by its ride id), read committed up to the end of the topic."""
    consumer = Consumer(
        {
            "bootstrap.servers": f"127.0.0.1:{INFRA.kafka}",
            "group.id": f"test-dlq-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    found: list[str] = []
    try:
        metadata = consumer.list_topics(Topic.DEAD_LETTERS, timeout=10).topics[Topic.DEAD_LETTERS]
        wanted = [TopicPartition(Topic.DEAD_LETTERS, p, since_ms) for p in metadata.partitions]
        for start in consumer.offsets_for_times(wanted, timeout=10):
            _, high = consumer.get_watermark_offsets(start, timeout=10)
            if start.offset < 0 or start.offset >= high:
                continue
            consumer.assign([start])
            # A quiet poll: the rest up to `high` is transaction markers or not committed yet.
            while (record := consumer.poll(2)) is not None and record.error() is None:
                if record.key() == ride_id.encode():
                    found.append(header_carrier(record.headers()).get("dlq.error", ""))
                if (record.offset() or 0) >= high - 1:
                    break
    finally:
        consumer.close()
    return found


def _rejected(ride: trip_pb2.Ride) -> list[str]:
    return [s.detail for s in ride.steps if (s.step, s.status) == ("authorize_payment", "failed")]


def test_a_card_the_processor_does_not_know_ends_the_ride_cancelled_payment_rejected(
    rider: rider_pb2_grpc.RiderServiceStub, trip: trip_pb2_grpc.TripServiceStub
) -> None:
    since_ms = int(time.time() * 1000)
    created = rider.CreateRider(
        rider_pb2.CreateRiderRequest(name="Unknown Brand", payment_method="tok_unknownBrand"), timeout=CALL_TIMEOUT
    )
    assert created.payment_method == "tok_unknownBrand", "a well-shaped token passes the edge"
    ride = _ended(trip, request_ride(rider, created.rider_id).ride_id)
    assert (ride.state, ride.outcome) == ("CANCELLED", PAYMENT_REJECTED), ride_story(ride.ride_id)
    assert [d.split(": ")[:2] for d in _rejected(ride)] == [[PAYMENT_REJECTED, "INVALID_ARGUMENT"]]
    assert _dead_lettered(ride.ride_id, since_ms) == []


def test_any_permanent_refusal_of_the_authorization_ends_the_ride_cancelled_payment_rejected(
    psp: psp_pb2_grpc.PspServiceStub, trip: trip_pb2_grpc.TripServiceStub
) -> None:
    # The ride's authorization key is taken first by a request with other parameters (a
    # decline: it holds no money, and "psp-test" is no ride's charge for the checker), so
    # the processor refuses the ride's own authorization for good.
    since_ms = int(time.time() * 1000)
    ride_id = str(uuid.uuid4())
    taken = psp_pb2.AuthorizeRequest(
        idempotency_key=f"{ride_id}:authorize",
        payment_method=domain.DECLINED_TOKEN,
        amount_cents=1,
        description=f"psp-test {ride_id}",
    )
    assert psp.Authorize(taken, timeout=CALL_TIMEOUT).status == psp_pb2.DECLINED
    start = trip_pb2.StartRideRequest(
        ride_id=ride_id, rider_id=str(uuid.uuid4()), pickup=DOWNTOWN, dropoff=WHARF, payment_method="tok_visa"
    )
    trip.StartRide(start, timeout=CALL_TIMEOUT)
    ride = _ended(trip, ride_id)
    assert (ride.state, ride.outcome) == ("CANCELLED", PAYMENT_REJECTED), ride_story(ride_id)
    (reason,) = _rejected(ride)
    assert reason.startswith(f"{PAYMENT_REJECTED}: INVALID_ARGUMENT: idempotency_key") and ride_id in reason
    assert _dead_lettered(ride_id, since_ms) == []
    moved = psp.ListMovements(psp_pb2.ListMovementsRequest(description=f"ride {ride_id}"), timeout=CALL_TIMEOUT)
    assert list(moved.movements) == [], "no money moved for the ride"


@pytest.mark.parametrize("method", MALFORMED)
def test_create_rider_refuses_a_malformed_payment_method(rider: rider_pb2_grpc.RiderServiceStub, method: str) -> None:
    request = rider_pb2.CreateRiderRequest(name="Ada", payment_method=method)
    code, message = status_of(lambda: rider.CreateRider(request, timeout=CALL_TIMEOUT))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and message.startswith("payment_method: "), message


@pytest.mark.parametrize("method", MALFORMED)
def test_start_ride_refuses_a_malformed_payment_method_and_starts_nothing(
    trip: trip_pb2_grpc.TripServiceStub, method: str
) -> None:
    ride_id = str(uuid.uuid4())
    start = trip_pb2.StartRideRequest(
        ride_id=ride_id, rider_id=str(uuid.uuid4()), pickup=DOWNTOWN, dropoff=WHARF, payment_method=method
    )
    code, message = status_of(lambda: trip.StartRide(start, timeout=CALL_TIMEOUT))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and message.startswith("payment_method: "), message
    code, _ = status_of(lambda: trip.GetRide(trip_pb2.GetRideRequest(ride_id=ride_id), timeout=CALL_TIMEOUT))
    assert code == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("dbname", "table", "insert"),
    [
        (
            "payment",
            "handled_commands",
            "INSERT INTO handled_commands (message_id, handled_at) VALUES (%s, now() - %s)",
        ),
        (
            "driver",
            "handled_commands",
            "INSERT INTO handled_commands (message_id, handled_at) VALUES (%s, now() - %s)",
        ),
        (
            "payment",
            "psp_attempts",
            "INSERT INTO psp_attempts (idempotency_key, at) VALUES (%s, now() - %s)",
        ),
        (
            "trip",
            "processed_messages",
            "INSERT INTO processed_messages (message_id, topics, envelopes, processed_at) VALUES (%s, '{}', '{}', now() - %s)",
        ),
    ],
)
def test_idempotency_records_are_reaped_once_kafka_can_no_longer_redeliver_them(
    dbname: str, table: retention.Record, insert: str
) -> None:
    prefix = f"test-reap-{uuid.uuid4()}"
    old, young = f"{prefix}:old", f"{prefix}:young"
    dsn = f"host=127.0.0.1 port={INFRA.postgres} dbname={dbname} user={dbname}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        for message_id, age in ((old, retention.HANDLED_RETENTION * 1.01), (young, retention.HANDLED_RETENTION * 0.99)):
            conn.execute(insert.encode(), (message_id, age))

    async def reap() -> int:  # the service's reaper (it runs every minute), run once now
        async with AsyncConnectionPool(dsn, min_size=1, max_size=1) as pool:
            return await retention.forget_handled(pool, table)

    # (The service's own reaper may have taken the old row a moment before: the same rule.)
    asyncio.run(reap())
    with psycopg.connect(dsn, autocommit=True) as conn:
        key = "idempotency_key" if table == "psp_attempts" else "message_id"
        kept = conn.execute(f"SELECT {key} FROM {table} WHERE {key} LIKE %s".encode(), (f"{prefix}:%",))
        assert [row[0] for row in kept] == [young]
        conn.execute(f"DELETE FROM {table} WHERE {key} = %s".encode(), (young,))
