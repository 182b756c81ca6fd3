"""A lock holder pauses past its lease (a GC pause) and then writes. With Redlock and no
fencing its stale write lands and double-books a driver. The fenced half runs the driver
service's own reservation path, `DriverParticipant.handle` on a ReserveDriver command
(services/driver/participant.py: the FencedLock of services/blocks/fencing.py, then
`fenced_reservations.reserve`), with the holder paused between taking its lease and writing: its
stale write is refused by the fencing token alone, the driver being free by then."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from typing import Any

import psycopg
import redis.asyncio as aioredis
from psycopg_pool import AsyncConnectionPool

from drills import Verdict
from drills.engine import DrillError
from ridesaga.common.v1 import common_pb2
from ridesaga.saga.v1 import saga_pb2
from services.blocks.clocks import HybridLogicalClock
from services.blocks.failure_detectors import PhiAccrualDetector
from services.blocks.fencing import FencedLock, Lease
from services.driver.adapters import DriverLocations, Nearby
from services.driver.cluster import Cluster, Solo
from services.driver.domain import NearbyQuery
from services.driver.matching import Matching
from services.driver.offers import OfferHub
from services.driver.participant import RESERVE_LEASE_MS, DriverParticipant
from services.exhibits.redlock import Redlock
from services.runtime.messages import envelope
from services.runtime.topology import INFRA
from services.trip import saga

DRIVER_DB = f"host=127.0.0.1 port={INFRA.postgres} dbname=driver user=driver"
LEASE_MS = 300  # the Redlock half's lease; the fenced half uses the participant's own
PAUSE_SECONDS = 0.6  # longer than the lease: the holder does not know it lost the lock
FIRST_ACQUIRE_SECONDS = 5.0
UNFENCED = "UPDATE drivers SET ride_id = %s WHERE driver_id = %s"
STEP_SECONDS = 10.0  # a bound on each step of the fenced half, never reached when it works
PICKUP = common_pb2.LatLng(lat=37.7793, lng=-122.4193)


class PausedHolder(FencedLock):
    """The real fenced lock, whose holder stops right after it got its lease and before it
    writes (the worst moment for a GC pause), until `resume` is set."""

    def __init__(self, client: aioredis.Redis) -> None:
        super().__init__(client)
        self.holding = asyncio.Event()
        self.resume = asyncio.Event()
        self.lease: Lease | None = None
        self.paused_ms = 0

    async def acquire(self, resource: str, ttl_ms: int) -> Lease | None:
        lease = await super().acquire(resource, ttl_ms)
        if lease is not None:
            self.lease = lease
            self.holding.set()
            started = time.monotonic()
            await self.resume.wait()
            self.paused_ms = int((time.monotonic() - started) * 1000)
        return lease


class PatientHolder(FencedLock):
    """The real fenced lock, asked again until it is free (the other holder's lease ran
    out), for at most the lease and STEP_SECONDS more."""

    async def acquire(self, resource: str, ttl_ms: int) -> Lease | None:
        deadline = time.monotonic() + ttl_ms / 1000 + STEP_SECONDS
        while (lease := await super().acquire(resource, ttl_ms)) is None and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return lease


class OnlyTheDrillDriver(DriverLocations):
    """The candidate search narrowed to the drill's own driver, which is not in the fleet's
    positions, so the drill never reserves a real driver nor competes with real rides."""

    def __init__(self, client: aioredis.Redis, driver_id: uuid.UUID) -> None:
        super().__init__(client)
        self.driver_id = driver_id

    async def nearby(self, query: NearbyQuery) -> list[Nearby]:
        return [Nearby(str(self.driver_id), 0.0, time.time() * 1000, query.center)]


async def _write(sql: str, params: tuple[Any, ...]) -> bool:
    async with await psycopg.AsyncConnection.connect(DRIVER_DB, autocommit=True) as conn:
        return (await conn.execute(sql.encode(), params)).rowcount == 1


async def _reservation(driver_id: uuid.UUID) -> tuple[str | None, int]:
    """(the ride the driver is reserved for, the newest fencing token it has seen)."""
    async with await psycopg.AsyncConnection.connect(DRIVER_DB, autocommit=True) as conn:
        row = await (
            await conn.execute("SELECT ride_id, fence FROM drivers WHERE driver_id = %s", (driver_id,))
        ).fetchone()
    return (str(row[0]) if row and row[0] else None, int(row[1]) if row else 0)


def _whose(holder: str | None, ride_a: str, ride_b: str) -> str | None:
    return "A" if holder == ride_a else "B" if holder == ride_b else holder


async def _unfenced(redlock: Redlock, resource: str, driver_id: uuid.UUID) -> dict[str, Any]:
    """Client A takes the lock and pauses; B takes it after A's lease ran out and books
    the driver; A wakes up believing it still holds the lock and books it too."""
    ride_a, ride_b = str(uuid.uuid4()), str(uuid.uuid4())
    # The lock is free, but an acquire slower than the 300 ms lease (the first one also
    # opens the connections, on a loaded machine) is refused by Redlock: try again.
    deadline = time.monotonic() + FIRST_ACQUIRE_SECONDS
    while await redlock.acquire(resource, LEASE_MS) is None:
        if time.monotonic() > deadline:
            raise DrillError(f"lock-pause: the drill driver's lock was not free within {FIRST_ACQUIRE_SECONDS:.0f}s")
        await asyncio.sleep(0.02)
    while await redlock.acquire(resource, LEASE_MS) is None:  # B retries until A's lease has expired
        await asyncio.sleep(0.02)
    b_wrote = await _write(UNFENCED, (ride_b, driver_id))
    await asyncio.sleep(max(0.0, PAUSE_SECONDS - LEASE_MS / 1000))  # A is still paused
    a_wrote = await _write(UNFENCED, (ride_a, driver_id))
    holder, _ = await _reservation(driver_id)
    return {
        "b_booked": b_wrote,
        "a_wrote_after_pause": a_wrote,
        "driver_now_on": _whose(holder, ride_a, ride_b),
        # B was told it had the driver; if A's write landed, two rides believe they do.
        "double_booked": b_wrote and a_wrote,
    }


def _reserve_command(clock: HybridLogicalClock, ride_id: str) -> saga_pb2.Envelope:
    body = saga_pb2.ReserveDriver(pickup=PICKUP, dropoff=PICKUP, attempt=1)
    return envelope(clock, saga.message_id(ride_id, saga.ReserveDriver(1, ())), ride_id, "", reserve_driver=body)


def _release_command(clock: HybridLogicalClock, ride_id: str, driver_id: str, fence: int) -> saga_pb2.Envelope:
    body = saga_pb2.ReleaseDriver(driver_id=driver_id, fence=fence)
    mid = saga.message_id(ride_id, saga.ReleaseDriver(driver_id, fence))
    return envelope(clock, mid, ride_id, "", release_driver=body)


async def _handled(participant: DriverParticipant, command: saga_pb2.Envelope) -> saga_pb2.Envelope:
    """The participant's reply to one command, as it would go to trip.replies."""
    replies = await asyncio.wait_for(participant.handle(command), RESERVE_LEASE_MS / 1000 + STEP_SECONDS)
    if len(replies) != 1:
        raise DrillError(f"lock-pause: the driver participant did not answer {command.message_id} (Redis down?)")
    return saga_pb2.Envelope.FromString(replies[0].value or b"")


async def _fenced(client: aioredis.Redis, driver_id: uuid.UUID) -> dict[str, Any]:
    """Ride A's ReserveDriver takes the lease and pauses; ride B's, handled by another
    participant, gets the lock once A's lease ran out, books the driver, and B's ride ends
    (the driver is released); then A wakes up and writes with its older token."""
    ride_a, ride_b = str(uuid.uuid4()), str(uuid.uuid4())
    clock = HybridLogicalClock()
    paused = PausedHolder(client)
    locations = OnlyTheDrillDriver(client, driver_id)
    async with AsyncConnectionPool(DRIVER_DB, min_size=1, max_size=4, open=False) as pool:

        def participant(lock: FencedLock) -> DriverParticipant:
            matching = Matching(locations, PhiAccrualDetector(), Cluster(Solo()))
            return DriverParticipant(pool, locations, lock, OfferHub(), clock, matching)

        a = asyncio.create_task(_handled(participant(paused), _reserve_command(clock, ride_a)))
        try:
            holding = asyncio.create_task(paused.holding.wait())
            await asyncio.wait([a, holding], timeout=STEP_SECONDS, return_when=asyncio.FIRST_COMPLETED)
            holding.cancel()
            if paused.lease is None:
                raise DrillError("lock-pause: ride A's reservation never took the driver's lock")
            patient = participant(PatientHolder(client))
            offer = (await _handled(patient, _reserve_command(clock, ride_b))).driver_offered
            b_booked = offer.driver_id == str(driver_id)
            if b_booked:
                await _handled(patient, _release_command(clock, ride_b, offer.driver_id, offer.fence))
            free_when_a_wrote = (await _reservation(driver_id))[0] is None
        finally:
            paused.resume.set()  # A is never left paused, whatever failed
        a_reply = await a
        holder, fence = await _reservation(driver_id)
        async with pool.connection() as conn:
            await conn.execute(
                "DELETE FROM handled_commands WHERE message_id LIKE ANY(%s)", ([f"{ride_a}:%", f"{ride_b}:%"],)
            )
    a_wrote = a_reply.WhichOneof("body") == "driver_offered"
    return {
        "path": "services/driver/participant.py DriverParticipant.handle (reserve_driver)",
        "lease_ms": RESERVE_LEASE_MS,
        "a_paused_ms": paused.paused_ms,
        "a_token": paused.lease.token,
        "b_token": offer.fence,
        "b_booked": b_booked,
        "driver_free_when_a_wrote": free_when_a_wrote,
        "a_reply": a_reply.WhichOneof("body"),
        "a_wrote_after_pause": a_wrote,
        "stale_write_rejected": not a_wrote,
        "driver_now_on": _whose(holder, ride_a, ride_b),
        "driver_fence": fence,
    }


async def _drill() -> Verdict:
    driver_id = uuid.uuid4()
    async with await psycopg.AsyncConnection.connect(DRIVER_DB, autocommit=True) as conn:
        await conn.execute("INSERT INTO drivers (driver_id, name) VALUES (%s, 'lock-pause drill')", (driver_id,))
    lock_clients = [aioredis.Redis(host="127.0.0.1", port=port) for port in INFRA.redlock]
    main = aioredis.Redis(host="127.0.0.1", port=INFRA.redis)
    try:
        unsafe = await _unfenced(Redlock(lock_clients), f"driver:{driver_id}", driver_id)
        await _write("UPDATE drivers SET ride_id = NULL WHERE driver_id = %s", (driver_id,))
        safe = await _fenced(main, driver_id)
    finally:
        await _write("DELETE FROM drivers WHERE driver_id = %s", (driver_id,))
        for client in [*lock_clients, main]:
            with contextlib.suppress(Exception):
                await client.aclose()
    held = safe["b_booked"] and safe["driver_free_when_a_wrote"] and safe["stale_write_rejected"]
    return {
        "scenario": "lock-pause",
        "valid": bool(held and safe["a_token"] < safe["b_token"]),
        "pause_ms": int(PAUSE_SECONDS * 1000),
        "lease_ms": LEASE_MS,
        "redlock_without_fencing": unsafe,
        "fenced_lock": safe,
        "explanation": (
            "Redlock lets the paused holder write after its lease expired: the driver is double-booked."
            if unsafe["double_booked"]
            else "Redlock happened not to double-book this time."
        )
        + (
            " The driver service's reservation refused the paused holder's older token, though the driver was free."
            if held
            else " The driver service's fenced reservation FAILED to refuse the stale write."
        ),
    }


def run() -> Verdict:
    return asyncio.run(_drill())
