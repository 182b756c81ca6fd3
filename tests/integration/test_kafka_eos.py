"""Kafka's transactional guarantees that the saga relies on, against the real broker:
zombie fencing, read_committed isolation, and the dead-letter topic."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from ridesaga.rider.v1 import rider_pb2, rider_pb2_grpc
from ridesaga.saga.v1 import saga_pb2
from services.blocks.clocks import HybridLogicalClock
from services.blocks.exactly_once import new_transactional_producer
from services.runtime.messages import envelope
from services.runtime.topology import INFRA, Topic
from tests.support import book_ride, ride_story, sidecar_channel, wait_for

BOOTSTRAP = f"127.0.0.1:{INFRA.kafka}"


@pytest.fixture
def topic() -> Iterator[str]:
    name = f"test.eos.{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    admin.create_topics([NewTopic(name, 1, 1)])[name].result(30)
    yield name
    admin.delete_topics([name])[name].result(30)


def _read_committed(topic: str, group: str, expect: int) -> list[bytes]:
    consumer = Consumer(
        {
            "bootstrap.servers": BOOTSTRAP,
            "group.id": group,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    seen: list[bytes] = []
    try:

        def enough() -> bool:
            for record in consumer.consume(10, 0.5):
                if record.error() is None and record.value() is not None:
                    seen.append(record.value() or b"")
            return len(seen) >= expect

        wait_for(enough, 30, f"{expect} committed records on {topic}", interval=0)
    finally:
        consumer.close()
    return seen


def test_a_zombie_producer_with_the_same_transactional_id_is_fenced(topic: str) -> None:
    tid = f"test-zombie-{uuid.uuid4().hex[:8]}"
    zombie = new_transactional_producer(BOOTSTRAP, tid)
    zombie.begin_transaction()
    zombie.produce(topic, key=b"k", value=b"from the zombie")
    successor = new_transactional_producer(BOOTSTRAP, tid)  # bumps the epoch, aborts the zombie's open transaction
    with pytest.raises(KafkaException) as error:
        zombie.commit_transaction(30)
    assert error.value.args[0].code() in (
        KafkaError._FENCED,
        KafkaError.PRODUCER_FENCED,
        KafkaError.INVALID_PRODUCER_EPOCH,
    )
    successor.begin_transaction()
    successor.produce(topic, key=b"k", value=b"from the successor")
    successor.commit_transaction(30)
    assert _read_committed(topic, f"g-{tid}", 1) == [b"from the successor"]


def test_read_committed_never_sees_aborted_records(topic: str) -> None:
    producer: Producer = new_transactional_producer(BOOTSTRAP, f"test-abort-{uuid.uuid4().hex[:8]}")
    producer.begin_transaction()
    producer.produce(topic, value=b"aborted")
    producer.flush(10)
    producer.abort_transaction(30)
    producer.begin_transaction()
    producer.produce(topic, value=b"committed")
    producer.commit_transaction(30)
    assert _read_committed(topic, f"g-{uuid.uuid4().hex[:8]}", 1) == [b"committed"]


def _dead_letters(marker: bytes) -> list[dict[str, bytes]]:
    consumer = Consumer(
        {
            "bootstrap.servers": BOOTSTRAP,
            "group.id": f"test-dlq-{uuid.uuid4().hex[:8]}",
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([Topic.DEAD_LETTERS])
    found: list[dict[str, bytes]] = []
    try:

        def ours() -> bool:
            for record in consumer.consume(50, 0.5):
                raw = record.headers() or []
                pairs = raw.items() if isinstance(raw, dict) else raw
                headers = {k: v for k, v in pairs if isinstance(v, bytes)}
                if record.error() is None and headers.get("test.marker") == marker:
                    found.append(headers)
            return len(found) >= 2

        wait_for(ours, 60, "both poison records on the dead-letter topic", interval=0)
    finally:
        consumer.close()
    return found


def test_poison_records_go_to_the_dead_letter_topic_and_the_partition_keeps_flowing() -> None:
    with sidecar_channel("rider") as channel:
        stub = rider_pb2_grpc.RiderServiceStub(channel)
        ride = book_ride(stub, "Poison Ivy")
        # Keyed by the live ride: the poison sits on the very partition the ride's replies use.
        marker = str(uuid.uuid4()).encode()
        producer = Producer({"bootstrap.servers": BOOTSTRAP, "enable.idempotence": True})
        key = ride.ride_id.encode()
        producer.produce(Topic.TRIP_REPLIES, key=key, value=b"\xff\xfe not protobuf", headers=[("test.marker", marker)])
        unknown = envelope(
            HybridLogicalClock(), f"{ride.ride_id}:poison", ride.ride_id, "", reserve_driver=saga_pb2.ReserveDriver()
        )
        producer.produce(
            Topic.TRIP_REPLIES, key=key, value=unknown.SerializeToString(), headers=[("test.marker", marker)]
        )
        assert producer.flush(10) == 0
        letters = _dead_letters(marker)
        reasons = sorted(h["dlq.error"].decode() for h in letters)
        assert any("not a saga envelope" in r for r in reasons), reasons
        assert any("does not handle messages of type 'reserve_driver'" in r for r in reasons), reasons
        assert all(h["dlq.source"].startswith(f"{Topic.TRIP_REPLIES}/".encode()) for h in letters)
        wait_for(
            lambda: stub.GetRide(rider_pb2.RideRef(ride_id=ride.ride_id), timeout=10).terminal,
            60,
            "the ride to end",
            explain=lambda: ride_story(ride.ride_id),
        )
        assert stub.GetRide(rider_pb2.RideRef(ride_id=ride.ride_id), timeout=10).state == "COMPLETED"
