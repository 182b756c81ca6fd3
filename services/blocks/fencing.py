"""A lease lock on Redis with a fencing token (Kleppmann, "How to do distributed locking").

A lock alone cannot stop a holder that was paused (GC, SIGSTOP, a slow disk) past its
lease from writing after someone else took the lock. So every acquisition also draws a
fencing token, strictly increasing per resource, and the storage accepts a write only if
its token is not older than the newest one it has seen (`... WHERE fence <= :token`).

Property: tokens for one resource strictly increase, also across a Redis restart,
because the counter lives in Redis's append-only file written with `appendfsync always`
(the stack starts Redis that way): an INCR is on disk before its reply leaves Redis."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import redis.asyncio as aioredis

# Take the lock and draw the next token in one atomic step.
_ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return redis.call('INCR', KEYS[2])
end
return 0
"""
# Release only a lock we still hold (compare-and-delete).
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


@dataclass(frozen=True)
class Lease:
    resource: str
    holder: str
    token: int


class FencedLock:
    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self._acquire = client.register_script(_ACQUIRE)
        self._release = client.register_script(_RELEASE)

    @staticmethod
    def _keys(resource: str) -> list[str]:
        return [f"lock:{resource}", f"fence:{resource}"]

    async def acquire(self, resource: str, ttl_ms: int) -> Lease | None:
        """The lease and its fencing token, or None if someone else holds the lock."""
        holder = secrets.token_hex(16)
        token = int(await self._acquire(keys=self._keys(resource), args=[holder, ttl_ms]))
        return Lease(resource, holder, token) if token else None

    async def release(self, lease: Lease) -> bool:
        return bool(await self._release(keys=self._keys(lease.resource)[:1], args=[lease.holder]))
