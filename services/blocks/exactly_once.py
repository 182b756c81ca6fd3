"""Exactly-once consume-transform-produce over Kafka transactions (KIP-98, KIP-447).

Property: a batch's output records and its consumed offsets commit in one Kafka
transaction, or none of them do; read_committed consumers never see the outputs of an
aborted batch. After an abort the consumer is rewound to the committed offsets and the
batch is handled again, so handlers must be idempotent (participants return their stored
reply). A record that can never be handled goes to the dead-letter topic, inside the
same transaction, so it neither blocks its partition nor disappears."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, StatusCode
from redis.exceptions import RedisError

from ridesaga.saga.v1 import saga_pb2
from services.blocks.retry import Backoff, sleep_with_jitter
from services.runtime.messages import Headers, Outgoing, Poison, decode, header_carrier
from services.runtime.telemetry import ride_scope
from services.runtime.topology import Topic

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)

Handler = Callable[[saga_pb2.Envelope], Awaitable[list[Outgoing]]]
Hook = Callable[[bool], None]

KAFKA_TIMEOUT_SECONDS = 30.0
# How long a transactional call may take before the producer is presumed stuck and
# replaced. librdkafka's send_offsets_to_transaction can ignore its own timeout when the
# group coordinator went away (seen here when Kafka restarts: it blocked for 10 minutes).
TXN_CALL_SECONDS = 5.0
STUCK_AFTER_SECONDS = TXN_CALL_SECONDS + 3
REWIND_SECONDS = 10.0  # reading the committed offsets; past it the consumer is replaced
T = TypeVar("T")


class ProducerStuck(Exception):
    """A transactional call did not return in time; its outcome is unknown."""


async def bounded(call: Callable[..., T], *args: Any, timeout: float = STUCK_AFTER_SECONDS) -> T:
    """Runs a blocking client call in a daemon thread of its own and waits at most
    `timeout` for it. A call that never returns is abandoned (its thread blocks neither
    the event loop, nor other calls, nor the process's exit) and ProducerStuck is raised."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if done.done():
            return
        if error is None:
            done.set_result(result)
        else:
            done.set_exception(error)

    def work() -> None:
        try:
            result, error = call(*args), None
        except BaseException as raised:  # handed to the awaiting coroutine
            result, error = None, raised
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits any more
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=work, name=f"kafka {getattr(call, '__name__', 'call')}", daemon=True).start()
    try:
        return await asyncio.wait_for(done, timeout)
    except TimeoutError:
        raise ProducerStuck(f"{getattr(call, '__name__', 'call')} did not return within {timeout:.0f}s") from None


# An aborted batch is handled again after a full-jitter wait; recovering the producer
# and consumer waits base, 2 * base, ... up to cap between tries.
BATCH_BACKOFF = Backoff(base_seconds=0.2, cap_seconds=5.0)
# A handler that fails for a reason that is neither the record's (Poison) nor the
# infrastructure's (TRANSIENT) is tried again in place, at once, this many times in all,
# then its record is dead-lettered. In place: aborting the batch would stall every
# partition of the consumer through the abort, the rewind and the backoff, each time.
FAILURES_BEFORE_DEAD_LETTER = 3
# "At once": every in-place retry waits a random moment under 50 ms, never longer.
IN_PLACE_BACKOFF = Backoff(base_seconds=0.05, cap_seconds=0.05)

# Failures of infrastructure, not of the record: they abort and retry the batch, and never
# count toward dead-lettering (a PostgreSQL restart must not send commands to the DLQ).
TRANSIENT: tuple[type[BaseException], ...] = (psycopg.OperationalError, RedisError)


@dataclass(frozen=True)
class LoopConfig:
    name: str
    bootstrap: str
    group_id: str
    transactional_id: str
    topics: tuple[str, ...]
    dead_letter_topic: str = Topic.DEAD_LETTERS
    batch_max: int = 100
    batch_wait_seconds: float = 0.05
    transaction_timeout_ms: int = 15_000

    @classmethod
    def for_group(cls, group: str, bootstrap: str, topics: tuple[str, ...], replica_suffix: str = "") -> LoopConfig:
        """One consumer group per loop; each process has its own transactional id (and
        static member id), so replicas share the partitions and a zombie is fenced."""
        return cls(group, bootstrap, group, f"{group}{replica_suffix}", topics)


def new_transactional_producer(
    bootstrap: str,
    transactional_id: str,
    on_error: Callable[[KafkaError], None] | None = None,
    transaction_timeout_ms: int = 15_000,
) -> Producer:
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "transactional.id": transactional_id,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 2,
        # The coordinator aborts a transaction open longer than this (and bumps the epoch).
        "transaction.timeout.ms": transaction_timeout_ms,
        # A transaction begun right after the previous commit finds the coordinator still
        # writing that commit's markers (CONCURRENT_TRANSACTIONS) and is retried after
        # this backoff. At librdkafka's default of 100 ms every busy hop cost 100 ms;
        # at 5 ms a back-to-back transaction takes about 6 ms (docs/benchmarks.md).
        "retry.backoff.ms": 5,
        "logger": logging.getLogger("kafka.producer"),
    }
    if on_error is not None:
        config["error_cb"] = on_error
    producer = Producer(config)
    producer.init_transactions(KAFKA_TIMEOUT_SECONDS)
    return producer


Position = tuple[str, int, int]


def _consumer_failed(record: Message) -> bool:
    """Whether the consumer reported a fatal error: after one it never fetches again.
    (Seen when Kafka restarts: the rejoining consumer is "fenced by other consumer with
    same group.instance.id", its own earlier membership.)"""
    error = record.error()
    return error is not None and (error.fatal() or error.code() == KafkaError._FATAL)


def position(record: Message) -> Position:
    return record.topic() or "", record.partition() or 0, record.offset() or 0


class TransactionalLoop:
    def __init__(self, config: LoopConfig, handle: Handler, settled: Hook | None = None) -> None:
        """`settled(committed)` runs after each batch's transaction commits (True) or
        aborts (False): the place for effects outside Kafka that must follow the commit."""
        self.config = config
        self.handle = handle
        self.settled = settled
        # Set when the producer lost its brokers: after Kafka restarts, a producer that
        # lived through it can block in send_offsets_to_transaction, so it is replaced
        # before its next transaction (and the watchdog in `bounded` is the backstop).
        self.kafka_lost = threading.Event()
        self.generation = 0

    async def _new_producer(self) -> Producer:
        """A producer whose errors count only while it is the current one: a replaced
        producer, still alive in an abandoned call's thread, must not be able to make the
        loop replace its successor (each replacement fences the one before)."""
        self.generation += 1
        generation = self.generation

        def on_error(error: KafkaError) -> None:
            if generation == self.generation and error.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT):
                self.kafka_lost.set()

        self.kafka_lost.clear()
        return await bounded(
            new_transactional_producer,
            self.config.bootstrap,
            self.config.transactional_id,
            on_error,
            self.config.transaction_timeout_ms,
            timeout=60,
        )

    def _consumer(self) -> Consumer:
        consumer = Consumer(
            {
                "bootstrap.servers": self.config.bootstrap,
                "group.id": self.config.group_id,
                # Static membership: a restarted process takes its partitions back at once
                # instead of waiting out the dead member's session; a zombie is fenced.
                "group.instance.id": self.config.transactional_id,
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "auto.offset.reset": "earliest",
                "session.timeout.ms": 10000,
                "logger": logging.getLogger("kafka.consumer"),
            }
        )
        consumer.subscribe([str(topic) for topic in self.config.topics])
        return consumer

    async def run(self, stopping: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        producer = await self._new_producer()
        consumer = self._consumer()
        attempt = 0
        log.info("transactional loop started", extra={"fields": {"loop": self.config.name}})
        try:
            while not stopping.is_set():
                records = await loop.run_in_executor(None, self._fetch, consumer)
                if any(_consumer_failed(r) for r in records):
                    # A fatal consumer error ends that consumer: it never fetches again.
                    # Nothing of this batch was committed; a new consumer starts from the
                    # committed offsets.
                    log.warning(
                        "the consumer failed fatally; replacing it", extra={"fields": {"loop": self.config.name}}
                    )
                    consumer = await self._replace_consumer(consumer)
                    continue
                records = [r for r in records if not self._transport_error(r)]
                if not records:
                    continue
                producer.poll(0)  # serves the error callback
                if self.kafka_lost.is_set():
                    log.warning(
                        "Kafka was unreachable; replacing the producer", extra={"fields": {"loop": self.config.name}}
                    )
                    producer, consumer = await self._recover(producer, consumer, ProducerStuck("brokers were down"))
                    continue
                try:
                    await self._commit_batch(producer, consumer, records)
                    attempt = 0
                    if self.settled:
                        self.settled(True)
                except Exception as error:
                    attempt += 1
                    if self.settled:
                        self.settled(False)
                    producer, consumer = await self._recover(producer, consumer, error)
                    await sleep_with_jitter(BATCH_BACKOFF, attempt)
        finally:
            await loop.run_in_executor(None, consumer.close)

    def _fetch(self, consumer: Consumer) -> list[Message]:
        """Waits up to batch_wait_seconds for the first record, then takes at once whatever
        else is already fetched, up to batch_max. (consume(n, timeout) would wait the
        whole timeout for n records: 50 ms added to every hop of every saga.)"""
        first = consumer.poll(self.config.batch_wait_seconds)
        if first is None:
            return []
        return [first, *consumer.consume(self.config.batch_max - 1, 0)]

    async def _replace_consumer(self, consumer: Consumer) -> Consumer:
        with contextlib.suppress(KafkaException, ProducerStuck, RuntimeError):
            await bounded(consumer.close, timeout=REWIND_SECONDS)
        return self._consumer()

    def _transport_error(self, record: Message) -> bool:
        error = record.error()
        if error is None:
            return False
        if error.code() != KafkaError._PARTITION_EOF:
            log.warning("consumer error", extra={"fields": {"loop": self.config.name, "error": str(error)}})
        return True

    async def _commit_batch(self, producer: Producer, consumer: Consumer, records: list[Message]) -> None:
        """Handles the whole batch first, then opens the Kafka transaction only to produce
        its outputs and offsets and commit: however slowly the handlers run (a database
        starved by other work), the transaction stays far inside transaction.timeout.ms.
        (Opened before handling, a slow batch outlived it, the coordinator aborted it and
        bumped the epoch, the producer found itself "fenced by newer producer instance",
        and the same slow batch came round again: docs/saga.md, "Liveness".)"""
        outputs: list[Outgoing] = []
        offsets: dict[tuple[str, int], int] = {}
        for record in records:
            outputs += await self._handle_record(record)
            topic, partition, offset = position(record)
            offsets[(topic, partition)] = offset + 1
        producer.begin_transaction()
        for out in outputs:
            producer.produce(out.topic, key=out.key, value=out.value, headers=out.headers)
        positions = [TopicPartition(topic, partition, offset) for (topic, partition), offset in offsets.items()]
        metadata = consumer.consumer_group_metadata()
        await bounded(producer.send_offsets_to_transaction, positions, metadata, TXN_CALL_SECONDS)
        await bounded(producer.commit_transaction, TXN_CALL_SECONDS)

    async def _handle_record(self, record: Message) -> list[Outgoing]:
        parent = propagate.extract(header_carrier(record.headers()))
        reason = ""
        try:
            env: saga_pb2.Envelope | None = decode(record.value())
        except Poison as poison:
            env = None
            reason = str(poison)
        name = f"{record.topic()} process {env.type if env else 'poison'}"
        # The producer's whole context becomes current (not only its span): its baggage,
        # such as a load generator's synthetic mark, then reaches every span below.
        token = otel_context.attach(parent)
        try:
            return await self._handle_in_context(record, name, env, reason)
        finally:
            otel_context.detach(token)

    async def _handle_in_context(
        self, record: Message, name: str, env: saga_pb2.Envelope | None, reason: str
    ) -> list[Outgoing]:
        with tracer.start_as_current_span(name, kind=SpanKind.CONSUMER) as span:
            span.set_attribute("messaging.system", "kafka")
            span.set_attribute("messaging.destination.name", record.topic())
            span.set_attribute("messaging.kafka.offset", record.offset() or 0)
            if env is None:
                span.set_status(StatusCode.ERROR, reason)
                return [self._to_dead_letter(record, reason)]
            span.set_attribute("messaging.message.id", env.message_id)
            span.set_attribute("saga.message.type", env.type)
            with ride_scope(env.ride_id):
                attempt = 0
                while True:
                    attempt += 1
                    try:
                        return await self.handle(env)
                    except Poison as poison:
                        span.set_status(StatusCode.ERROR, str(poison))
                        return [self._to_dead_letter(record, str(poison))]
                    except TRANSIENT as retry:
                        span.set_status(StatusCode.ERROR, f"retry: {retry!r}")
                        raise
                    except Exception as error:
                        span.add_event("handler failed", {"attempt": attempt, "error": repr(error)})
                        if attempt >= FAILURES_BEFORE_DEAD_LETTER:
                            log.exception("giving up on a record", extra={"fields": {"message_id": env.message_id}})
                            span.set_status(StatusCode.ERROR, repr(error))
                            return [self._to_dead_letter(record, f"handler failed {attempt} times: {error!r}")]
                    await sleep_with_jitter(IN_PLACE_BACKOFF, attempt)

    def _to_dead_letter(self, record: Message, reason: str) -> Outgoing:
        log.warning(
            "dead-lettered a record",
            extra={"fields": {"topic": record.topic(), "offset": record.offset(), "reason": reason}},
        )
        original = record.headers()
        headers: Headers = list(original.items()) if isinstance(original, dict) else list(original or [])
        headers += [
            ("dlq.error", reason.encode()),
            ("dlq.source", f"{record.topic()}/{record.partition()}/{record.offset()}".encode()),
        ]
        return Outgoing(self.config.dead_letter_topic, record.key(), record.value(), headers)

    async def _recover(self, producer: Producer, consumer: Consumer, error: BaseException) -> tuple[Producer, Consumer]:
        """Aborts the open transaction (or replaces a fenced, broken or stuck producer) and
        rewinds the consumer to its committed offsets, so the batch is handled again. While
        Kafka is unreachable it keeps trying, with backoff, rather than giving up. A
        consumer that cannot read its committed offsets (seen after a Kafka restart: its
        group coordinator lookup never came back) is replaced by a new one, which starts
        from the committed offsets by itself."""
        replace = isinstance(error, ProducerStuck) or (isinstance(error, KafkaException) and error.args[0].fatal())
        log.warning(
            "batch aborted", extra={"fields": {"loop": self.config.name, "error": repr(error), "replace": replace}}
        )
        pause = BATCH_BACKOFF.base_seconds
        while True:
            try:
                producer = await self._abort_or_replace(producer, replace)
                break
            except (KafkaException, ProducerStuck) as again:
                replace = True
                log.warning(
                    "recovery failed; retrying", extra={"fields": {"loop": self.config.name, "error": repr(again)}}
                )
                await asyncio.sleep(pause)
                pause = min(BATCH_BACKOFF.cap_seconds, pause * 2)
        try:
            await self._rewind(consumer)
        except (KafkaException, ProducerStuck) as lost:
            log.warning(
                "committed offsets unreadable; replacing the consumer",
                extra={"fields": {"loop": self.config.name, "error": repr(lost)}},
            )
            consumer = await self._replace_consumer(consumer)
        return producer, consumer

    async def _abort_or_replace(self, producer: Producer, replace: bool) -> Producer:
        if not replace:
            try:
                await bounded(producer.abort_transaction, TXN_CALL_SECONDS)
                return producer
            except (KafkaException, ProducerStuck) as abort_error:
                log.warning("abort failed; replacing the producer", extra={"fields": {"error": repr(abort_error)}})
        # The outcome of the last transaction is unknown or the producer is fenced or
        # stuck: a new producer's init_transactions fences the old one and aborts whatever
        # its epoch left open.
        return await self._new_producer()

    async def _rewind(self, consumer: Consumer) -> None:
        assigned = consumer.assignment()
        if assigned:
            committed = await bounded(consumer.committed, assigned, REWIND_SECONDS, timeout=REWIND_SECONDS + 3)
            for tp in committed:
                offset = tp.offset if tp.offset >= 0 else -2  # OFFSET_BEGINNING
                consumer.seek(TopicPartition(tp.topic, tp.partition, offset))
