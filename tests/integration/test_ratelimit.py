"""Rate limits against the real Redis: how each limiter treats a burst, and the
per-rider limit at the edge (RESOURCE_EXHAUSTED with retry-after; others unaffected)."""

from __future__ import annotations

import asyncio
import math
import time
import uuid

import grpc
import pytest
import redis.asyncio as aioredis

from ridesaga.rider.v1 import rider_pb2, rider_pb2_grpc
from services.blocks.ratelimit import Decision, LeakyBucket, SlidingWindow, TokenBucket
from services.runtime.topology import INFRA
from tests.support import request_ride, sidecar_channel

BURST = 20


async def _burst(make: object) -> list[Decision]:
    client = aioredis.Redis(host="127.0.0.1", port=INFRA.redis)
    limiter = make(client)  # type: ignore[operator]
    key = str(uuid.uuid4())
    decisions = [await limiter.take(key) for _ in range(BURST)]
    await client.aclose()
    return decisions


@pytest.mark.parametrize(
    ("name", "make", "admitted", "max_wait"),
    [
        ("token bucket 5 + 1/s", lambda c: TokenBucket(c, "test:tb", burst=5, rate_per_second=1.0), 5, 1.0),
        ("leaky bucket 1/s, no burst", lambda c: LeakyBucket(c, "test:lb", burst=1, rate_per_second=1.0), 1, 1.0),
        ("leaky bucket 1/s, burst 5", lambda c: LeakyBucket(c, "test:lb5", burst=5, rate_per_second=1.0), 5, 1.0),
        ("sliding window 5 per 2 s", lambda c: SlidingWindow(c, "test:sw", limit=5, window_seconds=2.0), 5, 2.0),
    ],
)
def test_how_each_limiter_treats_a_burst(name: str, make: object, admitted: int, max_wait: float) -> None:
    decisions = asyncio.run(_burst(make))
    allowed = [d.allowed for d in decisions]
    assert allowed == [True] * admitted + [False] * (BURST - admitted), name
    waits = [d.retry_after_seconds for d in decisions if not d.allowed]
    assert all(0.0 < w <= max_wait for w in waits), (name, waits)


def _request(stub: rider_pb2_grpc.RiderServiceStub, rider_id: str) -> grpc.RpcError | rider_pb2.RideRequested:
    try:
        reply: rider_pb2.RideRequested = request_ride(stub, rider_id)
        return reply
    except grpc.RpcError as error:
        return error


def test_a_burst_over_a_riders_limit_is_refused_with_retry_after_and_others_are_unaffected() -> None:
    with sidecar_channel("rider") as channel:
        stub = rider_pb2_grpc.RiderServiceStub(channel)
        greedy = stub.CreateRider(rider_pb2.CreateRiderRequest(name="Greedy"), timeout=10).rider_id
        polite = stub.CreateRider(rider_pb2.CreateRiderRequest(name="Polite"), timeout=10).rider_id
        started = time.monotonic()
        results = [_request(stub, greedy) for _ in range(30)]
        elapsed = time.monotonic() - started
        limited = [
            r for r in results if isinstance(r, grpc.RpcError) and r.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        ]
        # A burst of 10 passes, then 1 more for each second the burst took.
        assert len(limited) >= 30 - (10 + math.ceil(elapsed)), (len(limited), elapsed)
        assert limited
        for refusal in limited:
            metadata = {item.key: item.value for item in refusal.trailing_metadata() or ()}
            assert 0 < int(metadata["retry-after-ms"]) <= 1000
            assert "rate limit" in (refusal.details() or "")
        other = _request(stub, polite)
        assert isinstance(other, rider_pb2.RideRequested), other
