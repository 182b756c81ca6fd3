"""Sends single records from request handlers (not from a consume loop) with Kafka's
idempotent producer, and returns only once the broker has acknowledged them (acks=all),
so a gRPC call that answered OK never loses the message it promised."""

from __future__ import annotations

import asyncio
import logging
import threading

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from services.runtime.messages import Outgoing

DELIVERY_TIMEOUT_SECONDS = 10.0


class Publisher:
    def __init__(self, bootstrap: str) -> None:
        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 1,
                "delivery.timeout.ms": int(DELIVERY_TIMEOUT_SECONDS * 1000),
                "logger": logging.getLogger("kafka.publisher"),
            }
        )
        self._stopping = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="kafka-publisher", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        while not self._stopping.is_set():
            self._producer.poll(0.1)

    async def send(self, record: Outgoing) -> None:
        loop = asyncio.get_running_loop()
        delivered: asyncio.Future[None] = loop.create_future()

        def on_delivery(error: KafkaError | None, _: Message) -> None:
            def settle() -> None:
                if delivered.done():
                    return
                if error is None:
                    delivered.set_result(None)
                else:
                    delivered.set_exception(KafkaException(error))

            loop.call_soon_threadsafe(settle)

        self._producer.produce(
            record.topic, key=record.key, value=record.value, headers=record.headers, on_delivery=on_delivery
        )
        await asyncio.wait_for(delivered, DELIVERY_TIMEOUT_SECONDS + 1)

    def close(self) -> None:
        self._producer.flush(DELIVERY_TIMEOUT_SECONDS)
        self._stopping.set()
        self._poller.join()
