"""The transactional loop (services/blocks/exactly_once.py) against the real broker: it keeps
making progress when its handlers are slow or fail, which is what keeps sagas live."""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import psycopg
import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from ridesaga.saga.v1 import saga_pb2
from services.blocks.clocks import HybridLogicalClock
from services.blocks.exactly_once import LoopConfig, TransactionalLoop
from services.runtime.messages import Outgoing, envelope, outgoing
from services.runtime.topology import INFRA

BOOTSTRAP = f"127.0.0.1:{INFRA.kafka}"


@pytest.fixture
def topics() -> Iterator[tuple[str, str]]:
    name = f"test.loop.{uuid.uuid4().hex[:8]}"
    pair = (f"{name}.in", f"{name}.out")
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    for future in admin.create_topics([NewTopic(t, 1, 1) for t in pair]).values():
        future.result(30)
    yield pair
    for future in admin.delete_topics(list(pair)).values():
        future.result(30)


def _send(topic: str, count: int) -> list[str]:
    producer = Producer({"bootstrap.servers": BOOTSTRAP, "enable.idempotence": True})
    clock = HybridLogicalClock()
    ids = []
    for n in range(count):
        ride = str(uuid.uuid4())
        env = envelope(clock, f"{ride}:requested:{n}", ride, "", ride_requested=saga_pb2.RideRequested())
        producer.produce(topic, key=ride.encode(), value=env.SerializeToString())
        ids.append(env.message_id)
    assert producer.flush(10) == 0
    return ids


def _committed_ids(consumer: Consumer, seen: set[str]) -> None:
    for record in consumer.consume(50, 0.2):
        value = record.value()
        if record.error() is None and value:
            seen.add(saga_pb2.Envelope.FromString(value).causation_id)


async def _run_until_committed(
    loop: TransactionalLoop, out_topic: str, expected: set[str], timeout: float
) -> tuple[set[str], bool]:
    """Runs the loop until every expected message's output is committed, or the timeout."""
    consumer = Consumer(
        {
            "bootstrap.servers": BOOTSTRAP,
            "group.id": f"reader-{uuid.uuid4().hex[:8]}",
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([out_topic])
    stopping = asyncio.Event()
    task = asyncio.create_task(loop.run(stopping))
    seen: set[str] = set()
    deadline = asyncio.get_running_loop().time() + timeout
    try:
        while not expected <= seen and asyncio.get_running_loop().time() < deadline and not task.done():
            await asyncio.get_running_loop().run_in_executor(None, _committed_ids, consumer, seen)
    finally:
        stopping.set()
        await asyncio.wait_for(task, 30)
        consumer.close()
    return seen, expected <= seen


def _loop(
    topics: tuple[str, str], handle: Callable[[saga_pb2.Envelope], Awaitable[list[Outgoing]]], batch_wait: float = 0.05
) -> TransactionalLoop:
    name = f"test-loop-{uuid.uuid4().hex[:8]}"
    config = LoopConfig(
        name,
        BOOTSTRAP,
        name,
        name,
        (topics[0],),
        dead_letter_topic=topics[1],
        batch_wait_seconds=batch_wait,
        transaction_timeout_ms=3000,
    )
    return TransactionalLoop(config, handle)


def _reply(env: saga_pb2.Envelope, out_topic: str) -> list[Outgoing]:
    reply = envelope(
        HybridLogicalClock(),
        f"{env.message_id}:out",
        env.ride_id,
        env.message_id,
        ride_requested=saga_pb2.RideRequested(),
    )
    return [outgoing(out_topic, reply)]


def test_a_batch_slower_than_the_transaction_timeout_still_commits(
    topics: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """A starved database makes every record take 1.5 s: a batch of 12 takes 18 s, far
    past the 3 s transaction timeout (the broker looks for timed-out transactions every
    10 s, so an open transaction of over 13 s is always found). Had the transaction been open while the batch was
    handled, the coordinator would abort it (and bump the epoch: "fenced by newer
    producer instance"), the batch would be handled again as slowly, and nothing would
    ever commit: the ping-pong kill-trip once ended in."""
    expected = set(_send(topics[0], 12))

    async def starved(env: saga_pb2.Envelope) -> list[Outgoing]:
        await asyncio.sleep(1.5)  # a slow dependency, not synchronisation
        return _reply(env, topics[1])

    loop = _loop(topics, starved, batch_wait=2.0)
    with caplog.at_level(logging.WARNING, logger="services.blocks.exactly_once"):
        seen, done = asyncio.run(_run_until_committed(loop, topics[1], expected, timeout=120))
    aborted = [r.getMessage() for r in caplog.records if r.getMessage() == "batch aborted"]
    assert done, f"{len(expected - seen)} of 12 outputs never committed; {len(aborted)} batches aborted"
    assert aborted == []


def test_a_failing_handler_is_retried_in_place_without_aborting_the_batch(
    topics: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    expected = set(_send(topics[0], 6))
    failing = sorted(expected)[0]
    failures: dict[str, int] = {}

    async def flaky(env: saga_pb2.Envelope) -> list[Outgoing]:
        if env.message_id == failing and failures.get(env.message_id, 0) < 2:
            failures[env.message_id] = failures.get(env.message_id, 0) + 1
            raise RuntimeError("a bug that happens twice")
        return _reply(env, topics[1])

    with caplog.at_level(logging.WARNING, logger="services.blocks.exactly_once"):
        seen, done = asyncio.run(_run_until_committed(_loop(topics, flaky), topics[1], expected, timeout=60))
    assert done, f"missing outputs for {sorted(expected - seen)}"
    assert failures == {failing: 2}
    assert not [r for r in caplog.records if r.getMessage() == "batch aborted"]


def test_a_handler_that_always_fails_is_dead_lettered_and_the_others_commit(topics: tuple[str, str]) -> None:
    expected = set(_send(topics[0], 6))
    broken = sorted(expected)[0]

    async def buggy(env: saga_pb2.Envelope) -> list[Outgoing]:
        if env.message_id == broken:
            raise RuntimeError("a bug that always happens")
        return _reply(env, topics[1])

    # The dead-letter topic is the output topic here: the dead letter is the original
    # record, whose causation id is empty; every other record's output names its cause.
    others = expected - {broken}
    seen, done = asyncio.run(_run_until_committed(_loop(topics, buggy), topics[1], others | {""}, timeout=60))
    assert done, f"missing outputs for {sorted(others - seen)} (or no dead letter)"


class OffsetsUnreadable(TransactionalLoop):
    """A loop whose consumer cannot read its committed offsets once (as after a Kafka
    restart whose group coordinator lookup never came back)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rewinds_refused = 0

    async def _rewind(self, consumer: Consumer) -> None:
        if self.rewinds_refused == 0:
            self.rewinds_refused += 1
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "Failed to get committed offsets"))
        await super()._rewind(consumer)


def test_a_consumer_that_cannot_read_its_offsets_is_replaced_and_nothing_is_lost(
    topics: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    expected = set(_send(topics[0], 6))
    first_try = True

    async def down_once(env: saga_pb2.Envelope) -> list[Outgoing]:
        nonlocal first_try
        if first_try:
            first_try = False
            raise psycopg.OperationalError("the database is down")  # aborts the batch: the loop must rewind
        return _reply(env, topics[1])

    plain = _loop(topics, down_once)
    loop = OffsetsUnreadable(plain.config, down_once)
    with caplog.at_level(logging.WARNING, logger="services.blocks.exactly_once"):
        seen, done = asyncio.run(_run_until_committed(loop, topics[1], expected, timeout=90))
    assert done, f"missing outputs for {sorted(expected - seen)}"
    assert loop.rewinds_refused == 1
    assert any(r.getMessage() == "committed offsets unreadable; replacing the consumer" for r in caplog.records)


def _fence_by_intruder(config: LoopConfig, topic: str) -> None:
    """Joins the loop's group with the loop's own group.instance.id, as a second process
    with the same static identity would: the broker fences the loop's consumer (a fatal
    error for it), then this intruder goes away."""
    intruder = Consumer(
        {
            "bootstrap.servers": BOOTSTRAP,
            "group.id": config.group_id,
            "group.instance.id": config.transactional_id,
            "session.timeout.ms": 6000,
            "enable.auto.commit": False,
        }
    )
    intruder.subscribe([topic])
    try:
        while not intruder.assignment():
            intruder.poll(0.2)
    finally:
        intruder.close()


def test_a_consumer_fenced_by_its_own_static_identity_is_replaced_and_nothing_is_lost(topics: tuple[str, str]) -> None:
    """Seen when Kafka restarts: the loop's consumer rejoins and the broker answers "static
    consumer fenced by other consumer with same group.instance.id", a fatal error after
    which that consumer never fetches again. The loop must replace it."""

    async def echo(env: saga_pb2.Envelope) -> list[Outgoing]:
        return _reply(env, topics[1])

    loop = _loop(topics, echo)
    reader = Consumer(
        {
            "bootstrap.servers": BOOTSTRAP,
            "group.id": f"reader-{uuid.uuid4().hex[:8]}",
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    reader.subscribe([topics[1]])

    async def committed(expected: set[str], seen: set[str], timeout: float) -> bool:
        deadline = asyncio.get_running_loop().time() + timeout
        while not expected <= seen and asyncio.get_running_loop().time() < deadline:
            await asyncio.get_running_loop().run_in_executor(None, _committed_ids, reader, seen)
        return expected <= seen

    replaced = threading.Event()

    class Replaced(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage() == "the consumer failed fatally; replacing it":
                replaced.set()

    async def scenario() -> tuple[set[str], bool]:
        stopping = asyncio.Event()
        task = asyncio.create_task(loop.run(stopping))  # one run throughout: one consumer unless replaced
        seen: set[str] = set()
        try:
            before = set(_send(topics[0], 3))
            assert await committed(before, seen, 60), f"missing outputs before the fence: {sorted(before - seen)}"
            await asyncio.get_running_loop().run_in_executor(None, _fence_by_intruder, loop.config, topics[0])
            # No record is in flight, so only the consumer's own fatal error can tell the
            # loop; the next records are sent once it has.
            assert await asyncio.get_running_loop().run_in_executor(None, replaced.wait, 60), "no replacement"
            after = set(_send(topics[0], 3))
            return seen, await committed(after, seen, 60)
        finally:
            stopping.set()
            await asyncio.wait_for(task, 30)
            reader.close()

    watcher = Replaced()
    logging.getLogger("services.blocks.exactly_once").addHandler(watcher)
    try:
        _, done = asyncio.run(scenario())
    finally:
        logging.getLogger("services.blocks.exactly_once").removeHandler(watcher)
    assert done, "the loop stopped consuming after its consumer was fenced"
