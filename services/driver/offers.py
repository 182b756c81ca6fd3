"""Delivers ride offers to the drivers' apps connected on WatchOffers streams.

An offer is also recorded with its reservation (`drivers.offer`) and sent first to an app
that connects while it is unanswered, so an offer made while the app's stream was down,
or while this service restarted, still reaches it. Past that, delivery is best effort:
a queue that is full drops the offer, and the orchestrator's offer timeout re-matches."""

from __future__ import annotations

import asyncio

from ridesaga.driver.v1 import driver_pb2

QUEUE_LIMIT = 16


class OfferHub:
    def __init__(self) -> None:
        self._queues: dict[str, asyncio.Queue[driver_pb2.Offer]] = {}

    def connect(self, driver_id: str) -> asyncio.Queue[driver_pb2.Offer]:
        queue: asyncio.Queue[driver_pb2.Offer] = asyncio.Queue(QUEUE_LIMIT)
        self._queues[driver_id] = queue
        return queue

    def disconnect(self, driver_id: str, queue: asyncio.Queue[driver_pb2.Offer]) -> None:
        if self._queues.get(driver_id) is queue:
            del self._queues[driver_id]

    def push(self, driver_id: str, offer: driver_pb2.Offer) -> bool:
        queue = self._queues.get(driver_id)
        if queue is None or queue.full():
            return False
        queue.put_nowait(offer)
        return True
