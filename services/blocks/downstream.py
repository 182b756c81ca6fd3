"""One synchronous dependency, called through its own bulkhead, circuit breaker and
retry budget, within the caller's deadline.

Properties: at most `max_concurrency` calls are in flight to it (a slow dependency
cannot take every task of the caller); while its breaker is open, calls fail at once
without reaching it; an idempotent call is retried with full jitter only while the retry
budget and the remaining deadline allow; each attempt gets only the time that is left
(the deadline propagates to the callee in grpc-timeout); every attempt the breaker let
through ends in a verdict or is given back, so a cancelled probe cannot wedge it
half-open. Breaker changes are logged, recorded as span events and published to Redis
for `ridectl status`."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
import redis.asyncio as aioredis
from opentelemetry import trace
from redis.exceptions import RedisError

from services.blocks.breaker import BreakerConfig, CircuitBreaker, State
from services.blocks.retry import RETRY_NOW_CODES, TRANSIENT_CODES, Backoff, RetryBudget, next_wait

log = logging.getLogger(__name__)
R = TypeVar("R")

BREAKERS_KEY = "breakers"
# What the breaker counts as a failure: a different question from "may this call be made
# again?" (retry.py), namely "is the callee healthy?". ABORTED is a healthy callee's answer
# about one request (its idempotency key is in flight), so it is no failure; an overloaded
# callee's RESOURCE_EXHAUSTED is one, though it is never retried at once.
FAILURES = (TRANSIENT_CODES - {grpc.StatusCode.ABORTED}) | {grpc.StatusCode.RESOURCE_EXHAUSTED}
QUEUE_SECONDS = 1.0  # how long a call may wait for a free slot in the bulkhead


class Unavailable(Exception):
    """Refused without calling: the breaker is open or the bulkhead is full."""

    def __init__(self, name: str, reason: str, retry_after_seconds: float, sent: bool) -> None:
        super().__init__(f"{name}: {reason}; retry after {retry_after_seconds:.1f} s")
        self.retry_after_seconds = retry_after_seconds
        # Whether an earlier attempt of this call went out: then its outcome is unknown.
        self.sent = sent


class Downstream:
    def __init__(
        self,
        name: str,
        *,
        redis: aioredis.Redis | None = None,
        breaker: BreakerConfig | None = None,
        backoff: Backoff | None = None,
        budget: RetryBudget | None = None,
        max_concurrency: int = 32,
        rng: random.Random | None = None,
    ) -> None:
        self.name = name
        self.redis = redis
        self.breaker = CircuitBreaker(name, breaker or BreakerConfig(), self._changed)
        self.backoff = backoff or Backoff()
        self.budget = budget or RetryBudget()
        self.slots = asyncio.Semaphore(max_concurrency)
        self.rng = rng or random.Random()
        self.calls = 0
        self.refused = 0
        self.attempts = 0
        self.retries = 0
        self.transitions: list[dict[str, object]] = []

    def _changed(self, name: str, old: State, new: State) -> None:
        self.transitions = [*self.transitions[-19:], {"from": old.value, "to": new.value, "at": time.time()}]
        log.warning("circuit breaker %s: %s -> %s", name, old.value, new.value, extra={"fields": {"breaker": name}})
        trace.get_current_span().add_event("circuit_breaker.state_change", {"breaker": name, "from": old, "to": new})
        asyncio.get_running_loop().create_task(self.publish())

    async def publish(self) -> None:
        if self.redis is None:
            return
        state = {
            **self.breaker.snapshot(),
            "published": time.time(),
            "calls": self.calls,
            "refused": self.refused,
            "attempts": self.attempts,
            "retries": self.retries,
            "transitions": self.transitions,
        }
        try:
            await self.redis.hset(BREAKERS_KEY, self.name, json.dumps(state))
        except RedisError as error:
            log.warning("could not publish breaker state", extra={"fields": {"error": repr(error)}})

    async def call(
        self, method: Callable[..., Awaitable[R]], request: Any, *, deadline_seconds: float, idempotent: bool
    ) -> R:
        deadline = time.monotonic() + deadline_seconds
        self.calls += 1
        self.budget.record_call(time.monotonic())
        attempt = 0
        while True:
            now = time.monotonic()
            # The slot first: a half-open probe, once allowed, must be able to go out.
            try:
                await asyncio.wait_for(self.slots.acquire(), min(QUEUE_SECONDS, max(0.001, deadline - now)))
            except TimeoutError:
                self.refused += 1
                raise Unavailable(self.name, "bulkhead full", QUEUE_SECONDS, attempt > 0) from None
            now = time.monotonic()
            if not self.breaker.allow(now):
                self.slots.release()
                self.refused += 1
                raise Unavailable(self.name, "circuit breaker open", self.breaker.retry_after(now), attempt > 0)
            generation = self.breaker.generation
            try:
                self.attempts += 1
                started = time.monotonic()
                try:
                    reply = await method(request, timeout=max(0.001, deadline - started))
                except grpc.aio.AioRpcError as error:
                    ended = time.monotonic()
                    self.breaker.record(error.code() in FAILURES, ended - started, ended, generation)
                    if not idempotent or error.code() not in RETRY_NOW_CODES:
                        raise
                    wait = next_wait(attempt, self.backoff, self.rng, ended, deadline)
                    if wait is None or not self.budget.try_spend(ended):
                        raise
                except BaseException:
                    # No answer from the downstream: the caller was cancelled (its
                    # deadline ended its task) or the call failed on this side. No
                    # verdict on the downstream's health, but a probe must be given back.
                    self.breaker.abandon(time.monotonic(), generation)
                    raise
                else:
                    ended = time.monotonic()
                    self.breaker.record(False, ended - started, ended, generation)
                    return reply
            finally:
                self.slots.release()
            attempt += 1
            self.retries += 1
            await asyncio.sleep(wait)
