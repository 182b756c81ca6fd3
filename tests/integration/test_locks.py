"""Fenced locks against the real Redis and the driver's real storage (property 5,
docs/properties.md)."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid

import psycopg
import redis.asyncio as aioredis

from services.blocks.fencing import FencedLock
from services.driver.fenced_reservations import reserve
from services.runtime.topology import INFRA
from tests.support import db_rows, status, wait_for

REDIS = f"redis://127.0.0.1:{INFRA.redis}/0"
DRIVER_DB = f"host=127.0.0.1 port={INFRA.postgres} dbname=driver user=driver"


def _new_driver() -> uuid.UUID:
    driver_id = uuid.uuid4()
    with psycopg.connect(DRIVER_DB, autocommit=True) as conn:
        conn.execute("INSERT INTO drivers (driver_id, name) VALUES (%s, 'lock test')", (driver_id,))
    return driver_id


async def _reserve(driver_id: uuid.UUID, ride_id: str, token: int) -> bool:
    async with await psycopg.AsyncConnection.connect(DRIVER_DB, autocommit=True) as conn:
        return await reserve(conn, driver_id, ride_id, token)


async def _paused_holder_is_fenced() -> None:
    client = aioredis.Redis.from_url(REDIS)
    lock = FencedLock(client)
    driver_id = _new_driver()
    resource = f"driver:{driver_id}"
    stale = await lock.acquire(resource, ttl_ms=100)
    assert stale is not None
    assert await lock.acquire(resource, ttl_ms=100) is None  # held
    # The holder "pauses" past its lease: the lock expires and someone else takes it.
    while (fresh := await lock.acquire(resource, ttl_ms=10_000)) is None:
        await asyncio.sleep(0.02)
    assert fresh.token > stale.token
    new_ride, old_ride = str(uuid.uuid4()), str(uuid.uuid4())
    assert await _reserve(driver_id, new_ride, fresh.token)
    with psycopg.connect(DRIVER_DB, autocommit=True) as conn:  # the new holder's ride ends
        conn.execute("UPDATE drivers SET ride_id = NULL WHERE driver_id = %s", (driver_id,))
    # The paused holder wakes up and writes with its old token: rejected by the storage.
    assert not await _reserve(driver_id, old_ride, stale.token)
    assert not await lock.release(stale)  # and it cannot release what it no longer holds
    assert await lock.release(fresh)
    rows = db_rows("driver", "SELECT ride_id, fence FROM drivers WHERE driver_id = %s", (driver_id,))
    assert rows == [(None, fresh.token)]
    await client.aclose()


def test_a_stale_token_write_is_rejected() -> None:
    asyncio.run(_paused_holder_is_fenced())


async def _tokens(resource: str, n: int) -> list[int]:
    client = aioredis.Redis.from_url(REDIS)
    lock = FencedLock(client)
    tokens = []
    for _ in range(n):
        lease = await lock.acquire(resource, ttl_ms=5_000)
        assert lease is not None
        tokens.append(lease.token)
        assert await lock.release(lease)
    await client.aclose()
    return tokens


def test_tokens_keep_increasing_across_a_redis_crash() -> None:
    resource = f"test:{uuid.uuid4()}"
    before = asyncio.run(_tokens(resource, 5))
    assert before == sorted(set(before))
    pid = status()["redis"]["pid"]
    os.kill(pid, signal.SIGKILL)  # no shutdown, no final save: only what is on disk survives
    wait_for(lambda: status()["redis"]["state"] == "up" and status()["redis"]["pid"] != pid, 60, "redis to restart")
    after = asyncio.run(_tokens(resource, 3))
    assert after[0] > before[-1]
    assert after == sorted(set(after))
