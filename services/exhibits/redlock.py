"""Redlock: a lock held on a majority of independent Redis instances (the algorithm from
the Redis documentation), kept here as the contrast the course asks for.

Property it offers: while every process runs on time and clocks drift little, at most one
client holds the lock during its validity. Property it lacks: there is no fencing token,
so a holder that is paused past the validity (GC, SIGSTOP, a page fault storm) cannot
know it and writes anyway; `ridectl drill run lock-pause` shows the double booking that
follows, and the fenced lock (services/blocks/fencing.py) that prevents it."""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
CLOCK_DRIFT_FACTOR = 0.01
INSTANCE_TIMEOUT_SECONDS = 0.05


@dataclass(frozen=True)
class RedlockLease:
    resource: str
    holder: str
    validity_ms: int


class Redlock:
    def __init__(self, clients: list[aioredis.Redis]) -> None:
        if len(clients) < 3:
            raise ValueError("Redlock needs at least three independent Redis instances")
        self.clients = clients
        self.quorum = len(clients) // 2 + 1

    async def _lock_one(self, client: aioredis.Redis, key: str, holder: str, ttl_ms: int) -> bool:
        try:
            return bool(await asyncio.wait_for(client.set(key, holder, nx=True, px=ttl_ms), INSTANCE_TIMEOUT_SECONDS))
        except (RedisError, TimeoutError):
            return False

    async def acquire(self, resource: str, ttl_ms: int) -> RedlockLease | None:
        holder, key = secrets.token_hex(16), f"redlock:{resource}"
        started = time.monotonic()
        locked = await asyncio.gather(*(self._lock_one(c, key, holder, ttl_ms) for c in self.clients))
        elapsed_ms = (time.monotonic() - started) * 1000
        validity = int(ttl_ms - elapsed_ms - ttl_ms * CLOCK_DRIFT_FACTOR - 2)
        if sum(locked) >= self.quorum and validity > 0:
            return RedlockLease(resource, holder, validity)
        await self.release(RedlockLease(resource, holder, 0))
        return None

    async def release(self, lease: RedlockLease) -> None:
        key = f"redlock:{lease.resource}"
        for client in self.clients:
            try:
                await client.eval(_RELEASE, 1, key, lease.holder)
            except RedisError:
                continue
