"""Exactly-once consume-transform-produce over Kafka transactions (KIP-98, KIP-447).

Property: a batch's output records and its consumed offsets commit in one Kafka
transaction, or none of them do; read_committed consumers never see the outputs of an
aborted batch. After an abort the consumer is rewound to the committed offsets and the
batch is handled again, so handlers must be idempotent (participants return their stored
reply). A record that can never be handled goes to the dead-letter topic, inside the
same transaction, so it neither blocks its partition nor disappears."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import psycopg
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, StatusCode
from redis.exceptions import RedisError

from ridesaga.saga.v1 import saga_pb2
from services.shared.messages import Headers, Outgoing, Poison, decode, header_carrier
from services.shared.telemetry import ride_scope

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)

Handler = Callable[[saga_pb2.Envelope], Awaitable[list[Outgoing]]]
Hook = Callable[[bool], None]

KAFKA_TIMEOUT_SECONDS = 30.0
BACKOFF_BASE_SECONDS = 0.2
BACKOFF_CAP_SECONDS = 5.0
FAILURES_BEFORE_DEAD_LETTER = 5


class Retry(Exception):
    """A transient failure (a store or a downstream is unavailable): the batch is aborted
    and handled again after a backoff."""


# Failures of infrastructure, not of the record: they abort and retry the batch, and never
# count toward dead-lettering (a PostgreSQL restart must not send commands to the DLQ).
TRANSIENT: tuple[type[BaseException], ...] = (Retry, psycopg.OperationalError, RedisError)
DEAD_LETTER_TOPIC = "ridesaga.dlq"


@dataclass(frozen=True)
class LoopConfig:
    name: str
    bootstrap: str
    group_id: str
    transactional_id: str
    topics: tuple[str, ...]
    dead_letter_topic: str = DEAD_LETTER_TOPIC
    batch_max: int = 100
    batch_wait_seconds: float = 0.05

    @classmethod
    def for_group(cls, group: str, bootstrap: str, topics: tuple[str, ...], replica_suffix: str = "") -> LoopConfig:
        """One consumer group per loop; each process has its own transactional id (and
        static member id), so replicas share the partitions and a zombie is fenced."""
        return cls(group, bootstrap, group, f"{group}{replica_suffix}", topics)


def new_transactional_producer(bootstrap: str, transactional_id: str) -> Producer:
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "transactional.id": transactional_id,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 2,
            "transaction.timeout.ms": 15000,
            "logger": logging.getLogger("kafka.producer"),
        }
    )
    producer.init_transactions(KAFKA_TIMEOUT_SECONDS)
    return producer


Position = tuple[str, int, int]


def position(record: Message) -> Position:
    return record.topic() or "", record.partition() or 0, record.offset() or 0


class TransactionalLoop:
    def __init__(self, config: LoopConfig, handle: Handler, settled: Hook | None = None) -> None:
        """`settled(committed)` runs after each batch's transaction commits (True) or
        aborts (False): the place for effects outside Kafka that must follow the commit."""
        self.config = config
        self.handle = handle
        self.settled = settled
        self.failures: dict[Position, int] = {}

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
        consumer.subscribe(list(self.config.topics))
        return consumer

    async def run(self, stopping: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        producer = await loop.run_in_executor(
            None, new_transactional_producer, self.config.bootstrap, self.config.transactional_id
        )
        consumer = self._consumer()
        attempt = 0
        log.info("transactional loop started", extra={"fields": {"loop": self.config.name}})
        try:
            while not stopping.is_set():
                records = await loop.run_in_executor(
                    None, consumer.consume, self.config.batch_max, self.config.batch_wait_seconds
                )
                records = [r for r in records if not self._transport_error(r)]
                if not records:
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
                    producer = await self._recover(producer, consumer, error)
                    await asyncio.sleep(random.uniform(0, min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2**attempt)))
        finally:
            await loop.run_in_executor(None, consumer.close)

    def _transport_error(self, record: Message) -> bool:
        error = record.error()
        if error is None:
            return False
        if error.code() != KafkaError._PARTITION_EOF:
            log.warning("consumer error", extra={"fields": {"loop": self.config.name, "error": str(error)}})
        return True

    async def _commit_batch(self, producer: Producer, consumer: Consumer, records: list[Message]) -> None:
        loop = asyncio.get_running_loop()
        producer.begin_transaction()
        offsets: dict[tuple[str, int], int] = {}
        for record in records:
            for out in await self._handle_record(record):
                producer.produce(out.topic, key=out.key, value=out.value, headers=out.headers)
            topic, partition, offset = position(record)
            offsets[(topic, partition)] = offset + 1
        positions = [TopicPartition(topic, partition, offset) for (topic, partition), offset in offsets.items()]
        await loop.run_in_executor(
            None,
            producer.send_offsets_to_transaction,
            positions,
            consumer.consumer_group_metadata(),
            KAFKA_TIMEOUT_SECONDS,
        )
        await loop.run_in_executor(None, producer.commit_transaction, KAFKA_TIMEOUT_SECONDS)
        for record in records:
            self.failures.pop(position(record), None)

    async def _handle_record(self, record: Message) -> list[Outgoing]:
        where = position(record)
        parent = propagate.extract(header_carrier(record.headers()))
        try:
            env = decode(record.value())
        except Poison as poison:
            env = None
            reason = str(poison)
        name = f"{record.topic()} process {env.type if env else 'poison'}"
        with tracer.start_as_current_span(name, context=parent, kind=SpanKind.CONSUMER) as span:
            span.set_attribute("messaging.system", "kafka")
            span.set_attribute("messaging.destination.name", record.topic())
            span.set_attribute("messaging.kafka.offset", record.offset() or 0)
            if env is None:
                span.set_status(StatusCode.ERROR, reason)
                return [self._to_dead_letter(record, reason)]
            span.set_attribute("messaging.message.id", env.message_id)
            span.set_attribute("saga.message.type", env.type)
            with ride_scope(env.ride_id):
                try:
                    return await self.handle(env)
                except Poison as poison:
                    span.set_status(StatusCode.ERROR, str(poison))
                    return [self._to_dead_letter(record, str(poison))]
                except TRANSIENT as retry:
                    span.set_status(StatusCode.ERROR, f"retry: {retry!r}")
                    raise
                except Exception as error:
                    self.failures[where] = self.failures.get(where, 0) + 1
                    if self.failures[where] >= FAILURES_BEFORE_DEAD_LETTER:
                        log.exception("giving up on a record", extra={"fields": {"message_id": env.message_id}})
                        return [self._to_dead_letter(record, f"handler failed {self.failures[where]} times: {error!r}")]
                    raise

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

    async def _recover(self, producer: Producer, consumer: Consumer, error: BaseException) -> Producer:
        """Aborts the open transaction (or replaces a fenced or broken producer) and rewinds
        the consumer to its committed offsets, so the batch is handled again."""
        loop = asyncio.get_running_loop()
        fatal = isinstance(error, KafkaException) and error.args[0].fatal()
        log.warning("batch aborted", extra={"fields": {"loop": self.config.name, "error": repr(error), "fatal": fatal}})
        if not fatal:
            try:
                await loop.run_in_executor(None, producer.abort_transaction, KAFKA_TIMEOUT_SECONDS)
            except KafkaException as abort_error:
                fatal = True
                log.warning("abort failed; replacing the producer", extra={"fields": {"error": repr(abort_error)}})
        if fatal:
            # The outcome of the last transaction is unknown or the producer is fenced: a new
            # producer's init_transactions aborts whatever the old epoch left open.
            producer = await loop.run_in_executor(
                None, new_transactional_producer, self.config.bootstrap, self.config.transactional_id
            )
        assigned = consumer.assignment()
        if assigned:
            committed = await loop.run_in_executor(None, consumer.committed, assigned, KAFKA_TIMEOUT_SECONDS)
            for tp in committed:
                offset = tp.offset if tp.offset >= 0 else -2  # OFFSET_BEGINNING
                consumer.seek(TopicPartition(tp.topic, tp.partition, offset))
        return producer
