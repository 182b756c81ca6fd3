"""A lock holder pauses past its lease (a GC pause) and then writes: with Redlock and no
fencing it double-books a driver; with the fenced lock its stale write is rejected."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
import redis.asyncio as aioredis

from ridectl.drills import Verdict
from services.shared.locks import FencedLock
from services.shared.redlock import Redlock
from services.shared.topology import INFRA

DRIVER_DB = f"host=127.0.0.1 port={INFRA.postgres} dbname=driver user=driver"
LEASE_MS = 300
PAUSE_SECONDS = 0.6  # longer than the lease: the holder does not know it lost the lock
UNFENCED = "UPDATE drivers SET ride_id = %s WHERE driver_id = %s"
FENCED = "UPDATE drivers SET ride_id = %s, fence = %s WHERE driver_id = %s AND fence <= %s"


async def _write(sql: str, params: tuple[Any, ...]) -> bool:
    async with await psycopg.AsyncConnection.connect(DRIVER_DB, autocommit=True) as conn:
        return (await conn.execute(sql.encode(), params)).rowcount == 1


async def _holder(driver_id: uuid.UUID) -> str | None:
    async with await psycopg.AsyncConnection.connect(DRIVER_DB, autocommit=True) as conn:
        row = await (await conn.execute("SELECT ride_id FROM drivers WHERE driver_id = %s", (driver_id,))).fetchone()
    return str(row[0]) if row and row[0] else None


async def _scenario(
    acquire: Callable[[], Awaitable[Any]], write: Callable[[str, Any], Awaitable[bool]], driver_id: uuid.UUID
) -> dict[str, Any]:
    """Client A takes the lock and pauses; B takes it after A's lease ran out and books
    the driver; A wakes up believing it still holds the lock and books it too."""
    ride_a, ride_b = str(uuid.uuid4()), str(uuid.uuid4())
    lease_a = await acquire()
    assert lease_a is not None, "the lock must be free when the drill starts"
    lease_b = None
    while lease_b is None:  # B retries until A's lease has expired
        lease_b = await acquire()
        if lease_b is None:
            await asyncio.sleep(0.02)
    b_wrote = await write(ride_b, lease_b)
    await asyncio.sleep(max(0.0, PAUSE_SECONDS - LEASE_MS / 1000))  # A is still paused
    a_wrote = await write(ride_a, lease_a)
    holder = await _holder(driver_id)
    return {
        "b_booked": b_wrote,
        "a_wrote_after_pause": a_wrote,
        "driver_now_on": "A" if holder == ride_a else "B" if holder == ride_b else holder,
        # B was told it had the driver; if A's write landed, two rides believe they do.
        "double_booked": b_wrote and a_wrote,
    }


async def _drill() -> Verdict:
    driver_id = uuid.uuid4()
    async with await psycopg.AsyncConnection.connect(DRIVER_DB, autocommit=True) as conn:
        await conn.execute("INSERT INTO drivers (driver_id, name) VALUES (%s, 'lock-pause drill')", (driver_id,))
    resource = f"driver:{driver_id}"

    lock_clients = [aioredis.Redis(host="127.0.0.1", port=port) for port in INFRA.redlock]
    redlock = Redlock(lock_clients)

    async def redlock_write(ride: str, lease: Any) -> bool:
        return await _write(UNFENCED, (ride, driver_id))

    unsafe = await _scenario(lambda: redlock.acquire(resource, LEASE_MS), redlock_write, driver_id)
    async with await psycopg.AsyncConnection.connect(DRIVER_DB, autocommit=True) as conn:
        await conn.execute("UPDATE drivers SET ride_id = NULL WHERE driver_id = %s", (driver_id,))

    main = aioredis.Redis(host="127.0.0.1", port=INFRA.redis)
    fenced = FencedLock(main)

    async def fenced_write(ride: str, lease: Any) -> bool:
        return await _write(FENCED, (ride, lease.token, driver_id, lease.token))

    safe = await _scenario(lambda: fenced.acquire(resource, LEASE_MS), fenced_write, driver_id)
    async with await psycopg.AsyncConnection.connect(DRIVER_DB, autocommit=True) as conn:
        await conn.execute("DELETE FROM drivers WHERE driver_id = %s", (driver_id,))
    for client in [*lock_clients, main]:
        await client.aclose()
    return {
        "scenario": "lock-pause",
        "valid": not safe["a_wrote_after_pause"] and not safe["double_booked"],
        "pause_ms": int(PAUSE_SECONDS * 1000),
        "lease_ms": LEASE_MS,
        "redlock_without_fencing": unsafe,
        "fenced_lock": {**safe, "stale_write_rejected": not safe["a_wrote_after_pause"]},
        "explanation": (
            "Redlock lets the paused holder write after its lease expired: the driver is double-booked."
            if unsafe["double_booked"]
            else "Redlock happened not to double-book this time."
        )
        + (
            " With the fenced lock the storage refused the stale token."
            if not safe["a_wrote_after_pause"]
            else " The fenced lock FAILED to refuse the stale write."
        ),
    }


def run() -> Verdict:
    return asyncio.run(_drill())
