"""Rate limiters on Redis, each one atomic Lua script on Redis's own clock (so every
process of a service shares one limit, and client clocks do not matter).

- Token bucket: holds up to `burst` tokens, refilled at `rate` per second; a request
  takes one. A burst up to `burst` passes at once, then requests pass at `rate`.
- Leaky bucket (as a meter, GCRA): requests are admitted at most every 1/`rate` seconds,
  with `burst` extra allowed early. With burst 1 it smooths a burst into a steady drip.
- Sliding-window log: at most `limit` requests in any `window` seconds; exact, but it
  keeps one entry per admitted request.

Each answers (allowed, retry_after_seconds): when refused, how long until a request
would pass, for the RESOURCE_EXHAUSTED answer's retry-after."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import redis.asyncio as aioredis

_NOW = "local t = redis.call('TIME'); local now = tonumber(t[1]) + tonumber(t[2]) / 1e6\n"

_TOKEN_BUCKET = (
    _NOW
    + """
local burst, rate = tonumber(ARGV[1]), tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens, at = tonumber(state[1]) or burst, tonumber(state[2]) or now
tokens = math.min(burst, tokens + (now - at) * rate)
local allowed, wait = 0, (1 - tokens) / rate
if tokens >= 1 then tokens = tokens - 1; allowed = 1; wait = 0 end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'at', now)
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 1)
return {allowed, tostring(wait)}
"""
)

_LEAKY_BUCKET = (
    _NOW
    + """
local interval, tolerance = 1 / tonumber(ARGV[2]), (tonumber(ARGV[1]) - 1) / tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
tat = math.max(tat, now)
if tat - now > tolerance then return {0, tostring(tat - now - tolerance)} end
redis.call('SET', KEYS[1], tat + interval, 'EX', math.ceil(tolerance + interval) + 1)
return {1, '0'}
"""
)

_SLIDING_WINDOW = (
    _NOW
    + """
local limit, window = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
if count >= limit then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {0, tostring(tonumber(oldest[2]) + window - now)}
end
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('EXPIRE', KEYS[1], math.ceil(window) + 1)
return {1, '0'}
"""
)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after_seconds: float


class _Limiter:
    script_source = ""

    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self.prefix = prefix
        self._script = client.register_script(self.script_source)

    async def _run(self, key: str, *args: str | int | float) -> Decision:
        allowed, wait = await self._script(keys=[f"{self.prefix}:{key}"], args=list(args))
        return Decision(bool(allowed), max(0.0, float(wait)))


class TokenBucket(_Limiter):
    script_source = _TOKEN_BUCKET

    def __init__(self, client: aioredis.Redis, prefix: str, burst: int, rate_per_second: float) -> None:
        super().__init__(client, prefix)
        self.burst, self.rate = burst, rate_per_second

    async def take(self, key: str) -> Decision:
        return await self._run(key, self.burst, self.rate)


class LeakyBucket(_Limiter):
    script_source = _LEAKY_BUCKET

    def __init__(self, client: aioredis.Redis, prefix: str, burst: int, rate_per_second: float) -> None:
        super().__init__(client, prefix)
        self.burst, self.rate = burst, rate_per_second

    async def take(self, key: str) -> Decision:
        return await self._run(key, self.burst, self.rate)


class SlidingWindow(_Limiter):
    script_source = _SLIDING_WINDOW

    def __init__(self, client: aioredis.Redis, prefix: str, limit: int, window_seconds: float) -> None:
        super().__init__(client, prefix)
        self.limit, self.window = limit, window_seconds

    async def take(self, key: str) -> Decision:
        member = uuid.uuid4().hex  # unique per admitted request, across processes
        return await self._run(key, self.limit, self.window, member)
