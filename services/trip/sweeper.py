"""The sweeper: finds sagas whose current step is past its deadline and sends each a
StepTimedOut message, which the orchestrator handles like any other (so every
transition still happens in one place, exactly once). This is what bounds the time
every saga takes to reach a terminal state, whatever crashed.

Two sweepers run; one leads, elected on ZooKeeper (services/blocks/election.py). The
leader's every sweep is a write fenced by its epoch: it succeeds only while no newer
leader has claimed the epoch row, so a leader that was paused past its session and
wakes up is refused, records the refusal and steps down. Its StepTimedOut messages carry
the epoch too, and the orchestrator ignores those older than the current one. Beside the
fence, a leader fences itself (RIDESAGA_SWEEPER_SELF_FENCE, on by default): it does not
sweep while its ZooKeeper connection is suspended, and resigns once its session is lost
(services/blocks/election.py, leader_act).

Liveness: the epoch is part of each timeout's message id, so a timeout fenced as stale
never hides the next leader's copy of it; a timeout not yet acted on is sent again every
RESEND_SECONDS; and rides already sent are left out of the next query, so a backlog of
queued timeouts never starves the rest of the overdue rides (docs/saga.md, "Liveness")."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from typing import Any

import psycopg
from opentelemetry import propagate, trace
from psycopg_pool import AsyncConnectionPool

from ridesaga.saga.v1 import saga_pb2
from services.blocks.clocks import HybridLogicalClock
from services.blocks.election import LeaderAct, Leadership, leader_act
from services.runtime import config, db
from services.runtime.messages import envelope, outgoing
from services.runtime.publisher import Publisher
from services.runtime.telemetry import ride_scope, setup_logging, setup_tracing
from services.runtime.topology import Topic
from services.trip import adapters

SWEEP_INTERVAL_SECONDS = 0.5
BATCH = 200
CLAIM_LOCK_SECONDS = 2
IDLE_IN_SWEEP_SECONDS = 2  # a sweep's transaction left idle this long (its process paused) is ended
RESEND_SECONDS = 10.0  # a timeout still overdue this long after it was sent goes out again
RESEND_MAX_SECONDS = 60.0  # ... and, sent again and again for one deadline, at most this long


def resend_after(times_sent: int) -> float:
    """How long after its last copy a timeout for an unchanged deadline goes out again: 10 s,
    then doubling, at most 60 s. A deadline still unchanged after several copies means trip
    has not read them yet; more copies would only lengthen the queue it is behind on."""
    return min(RESEND_SECONDS * 2.0 ** max(0, times_sent - 1), RESEND_MAX_SECONDS)


ELECTION_PATH = "/ridesaga/trip/sweeper"
SESSION_TIMEOUT_SECONDS = 4.0
tracer = trace.get_tracer(__name__)
log = logging.getLogger("sweeper")


def timeout_message_id(ride_id: str, state: str, attempt: int, deadline_ms: int, epoch: int) -> str:
    """One id per (deadline, leader term): a new leader's timeout is never taken for a
    copy of the one a stale leader sent (which the orchestrator fenced and recorded)."""
    return f"{ride_id}:timeout:{state}:{attempt}:{deadline_ms}:epoch:{epoch}"


class Sweeper:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        publisher: Publisher,
        clock: HybridLogicalClock,
        name: str,
        self_fence: bool = True,
    ) -> None:
        self.pool = pool
        self.publisher = publisher
        self.clock = clock
        self.name = name
        self.self_fence = self_fence
        # ride id -> (the deadline, when its timeout was last sent, copies sent for that
        # deadline), for this term only: a new term starts empty.
        self.sent: dict[str, tuple[int, float, int]] = {}

    async def claim(self, epoch: int) -> bool:
        """Records this leader's epoch, unless a newer leader already has. Gives up after
        CLAIM_LOCK_SECONDS if the row is share-locked by a transition in progress (trip
        paused inside one must not hold up the election; the campaign simply runs again)."""
        try:
            async with self.pool.connection() as conn, conn.transaction():
                await conn.execute(f"SET LOCAL lock_timeout = '{CLAIM_LOCK_SECONDS}s'".encode())
                cursor = await conn.execute(
                    "UPDATE sweeper_epoch SET epoch = %s, leader = %s, since = now() WHERE id = 1 AND epoch < %s",
                    (epoch, self.name, epoch),
                )
                return cursor.rowcount == 1
        except psycopg.errors.LockNotAvailable:
            log.warning("epoch row busy; campaigning again", extra={"fields": {"epoch": epoch}})
            return False

    async def _fence(self, conn: psycopg.AsyncConnection[Any], epoch: int) -> bool:
        """Whether `epoch` is still the newest claimed, the epoch row share-locked for the
        rest of the transaction; a refusal is recorded."""
        # A leader paused inside this transaction would hold its share lock on the
        # epoch row, and no successor could claim it: PostgreSQL ends the session.
        await conn.execute(f"SET LOCAL idle_in_transaction_session_timeout = '{IDLE_IN_SWEEP_SECONDS}s'".encode())
        row = await (await conn.execute("SELECT epoch FROM sweeper_epoch WHERE id = 1 FOR SHARE")).fetchone()
        current = int(row[0]) if row else 0
        if current != epoch:
            await conn.execute(
                "INSERT INTO sweeper_rejections (sweeper, epoch, current_epoch) VALUES (%s, %s, %s)",
                (self.name, epoch, current),
            )
        return current == epoch

    async def fence_holds(self, epoch: int) -> bool:
        """The fenced write without the sweep, made by a leader on its way out."""
        async with self.pool.connection() as conn, conn.transaction():
            return await self._fence(conn, epoch)

    async def sweep_once(self, epoch: int) -> bool:
        """One fenced sweep; False if a newer leader has taken over (the write was refused)."""
        async with self.pool.connection() as conn, conn.transaction():
            if not await self._fence(conn, epoch):
                return False
            await conn.execute(
                "INSERT INTO sweeper_runs (sweeper, epoch) VALUES (%s, %s) ON CONFLICT (sweeper) DO UPDATE"
                " SET epoch = EXCLUDED.epoch, runs = sweeper_runs.runs + 1, last_run = now()",
                (self.name, epoch),
            )
            now = time.monotonic()
            waiting = [ride for ride, (_, at, copies) in self.sent.items() if now - at < resend_after(copies)]
            due = await adapters.overdue(conn, int(time.time() * 1000), BATCH, waiting)
        for ride_id, state, attempt, deadline, traceparent in due:
            message_id = timeout_message_id(ride_id, state, attempt, deadline, epoch)
            body = saga_pb2.StepTimedOut(step=state, attempt=attempt, epoch=epoch)
            parent = propagate.extract({"traceparent": traceparent} if traceparent else {})
            with tracer.start_as_current_span(f"sweeper: {state} timed out", context=parent), ride_scope(ride_id):
                env = envelope(self.clock, message_id, ride_id, "", step_timed_out=body)
                await self.publisher.send(outgoing(Topic.TRIP_COMMANDS, env))
            last = self.sent.get(ride_id)
            copies = last[2] + 1 if last is not None and last[0] == deadline else 1
            self.sent[ride_id] = (deadline, time.monotonic(), copies)
        self.sent = {
            ride: entry for ride, entry in self.sent.items() if time.monotonic() - entry[1] < RESEND_MAX_SECONDS
        }
        return True

    async def lead(self, leadership: Leadership, epoch: int, stopping: asyncio.Event) -> None:
        """Sweeps while leading. Each round's act follows from the connection as read at
        its start (leader_act); a resigning leader's last act is a fenced write too. So
        whatever moment a pause ends, the resumed leader's next write is fenced and a
        newer leader's claim always shows as a refusal (the fault drills count on it),
        never only as a session this process noticed it had lost."""
        self.sent = {}
        while not stopping.is_set():
            act = leader_act(leadership.connection(), self.self_fence)
            try:
                if act is LeaderAct.RESIGN:
                    fenced_out = not await self.fence_holds(epoch)
                    log.warning(
                        "ZooKeeper session lost; stepping down",
                        extra={"fields": {"epoch": epoch, "fenced_out": fenced_out}},
                    )
                    return
                if act is LeaderAct.SWEEP and not await self.sweep_once(epoch):
                    log.warning("fenced out by a newer leader; stepping down", extra={"fields": {"epoch": epoch}})
                    return
            except Exception as error:
                log.warning("sweep failed", extra={"fields": {"error": repr(error), "act": str(act)}})
                if act is LeaderAct.RESIGN:
                    return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), SWEEP_INTERVAL_SECONDS)

    async def run(self, leadership: Leadership, stopping: asyncio.Event) -> None:
        await leadership.start()
        while not stopping.is_set():
            epoch = await leadership.campaign(stopping)
            if epoch is None:
                break
            if await self.claim(epoch):
                log.info("elected sweeper leader", extra={"fields": {"epoch": epoch}})
                await self.lead(leadership, epoch, stopping)
            await leadership.resign()
        await leadership.stop()


async def run() -> None:
    name = config.sweeper_id()
    settings = config.load("trip")
    setup_logging(name)
    provider = setup_tracing("trip-sweeper", settings.otlp_endpoint, settings.environment, settings.trace_sample_ratio)
    pool = await db.open_pool(settings.postgres_dsn("trip"), max_size=2)
    publisher = Publisher(settings.kafka_bootstrap)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    leadership = Leadership(
        settings.zookeeper_hosts, ELECTION_PATH, name, SESSION_TIMEOUT_SECONDS, config.zookeeper_source()
    )
    try:
        await Sweeper(pool, publisher, config.clock(), name, config.sweeper_self_fence()).run(leadership, stopping)
    finally:
        publisher.close()
        await pool.close()
        provider.shutdown()


def main() -> None:
    asyncio.run(run())


if __name__ == "__main__":
    main()
