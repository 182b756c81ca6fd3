"""The sweeper: finds sagas whose current step is past its deadline and sends each a
StepTimedOut message, which the orchestrator handles like any other (so every
transition still happens in one place, exactly once). This is what bounds the time
every saga takes to reach a terminal state, whatever crashed."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict

from opentelemetry import propagate, trace
from psycopg_pool import AsyncConnectionPool

from ridesaga.saga.v1 import saga_pb2
from services.shared.clocks import HybridLogicalClock
from services.shared.messages import envelope, outgoing
from services.shared.periodic import every
from services.shared.publisher import Publisher
from services.shared.telemetry import ride_scope
from services.trip import adapters

SWEEP_INTERVAL_SECONDS = 0.5
BATCH = 200
REMEMBERED = 10_000
TRIP_COMMANDS = "trip.commands"
tracer = trace.get_tracer(__name__)


class Sweeper:
    def __init__(self, pool: AsyncConnectionPool, publisher: Publisher, clock: HybridLogicalClock) -> None:
        self.pool = pool
        self.publisher = publisher
        self.clock = clock
        self.sent: OrderedDict[str, None] = OrderedDict()

    async def sweep_once(self) -> int:
        async with self.pool.connection() as conn:
            due = await adapters.overdue(conn, int(time.time() * 1000), BATCH)
        sent = 0
        for ride_id, state, attempt, deadline, traceparent in due:
            message_id = f"{ride_id}:timeout:{state}:{attempt}:{deadline}"
            if message_id in self.sent:
                continue
            body = saga_pb2.StepTimedOut(step=state, attempt=attempt)
            parent = propagate.extract({"traceparent": traceparent} if traceparent else {})
            with tracer.start_as_current_span(f"sweeper: {state} timed out", context=parent), ride_scope(ride_id):
                env = envelope(self.clock, message_id, ride_id, "", step_timed_out=body)
                await self.publisher.send(outgoing(TRIP_COMMANDS, env))
            self.sent[message_id] = None
            if len(self.sent) > REMEMBERED:
                self.sent.popitem(last=False)
            sent += 1
        return sent

    async def run(self, stopping: asyncio.Event) -> None:
        await every(SWEEP_INTERVAL_SECONDS, stopping, self.sweep_once, "sweep")
