"""Resilience with the real psp and the real Envoy: the payment -> psp circuit breaker
under an outage and under declines, and the retry budget under a half-failing psp.
Afterwards every ride has ended and the checker finds the system consistent."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from deploy.local import paths
from deploy.local.supervisor import Supervisor
from drills import checker
from ridesaga.psp.v1 import psp_pb2, psp_pb2_grpc
from ridesaga.rider.v1 import rider_pb2_grpc
from services.blocks.downstream import BREAKERS_KEY
from services.runtime.topology import INFRA
from services.trip.saga import TERMINAL
from tests.e2e.rides import Booking, book, channel, create_rider, settle
from tests.support import db_rows, ridectl, sidecar_channel, wait_for

BREAKER = "payment->psp"


def _breaker() -> dict[str, Any]:
    """As payment publishes it (what `ridectl status --json` shows under "breakers")."""
    client = redis.Redis(host="127.0.0.1", port=INFRA.redis, decode_responses=True)
    try:
        found: dict[str, Any] = json.loads(client.hget(BREAKERS_KEY, BREAKER) or "{}")
    finally:
        client.close()
    return found


def _set_faults(**faults: Any) -> None:
    with sidecar_channel("psp") as ch:
        psp_pb2_grpc.PspServiceStub(ch).SetFaults(psp_pb2.Faults(**faults), timeout=5)


def _attempts(ride_ids: list[str]) -> dict[str, int]:
    with sidecar_channel("psp") as ch:
        counts = psp_pb2_grpc.PspServiceStub(ch).CountCalls(psp_pb2.CountCallsRequest(), timeout=5).attempts
    return {ride: counts.get(f"{ride}:authorize", 0) for ride in ride_ids}


# How long a ride may stay live once the psp is healthy again: a re-sent command waits at
# most its step's timeout plus MAX_RESEND_EXTRA_MS (services/trip/saga.py), and a refused
# re-send (the breaker still half-open, every probe out) waits for the next one.
LIVENESS_BOUND_SECONDS = 180.0


def _live_rides() -> int:
    rows = db_rows("trip", "SELECT count(*) FROM rides WHERE NOT (state = ANY(%s))", ([s.value for s in TERMINAL],))
    return int(rows[0][0])


@pytest.fixture(autouse=True)
def healthy_psp_afterwards() -> Iterator[None]:
    """After each test the psp is healthy again, and every ride of it has ended within the
    liveness bound, so the next test's check judges its own rides, not this one's tail."""
    yield
    _set_faults()
    wait_for(lambda: _live_rides() == 0, LIVENESS_BOUND_SECONDS, "every ride to end once the psp is healthy")


async def _rides(n: int, card: str = "") -> list[Booking]:
    async with channel() as ch:
        stub = rider_pb2_grpc.RiderServiceStub(ch)
        bookings = [Booking(await create_rider(stub, f"resilience rider {i}", card)) for i in range(n)]
        await asyncio.gather(*(book(stub, b) for b in bookings))
        return list(await asyncio.gather(*(settle(stub, b, 120) for b in bookings)))


def _transitions(since: float = 0.0) -> list[tuple[str, str]]:
    """The breaker's last transitions (payment keeps 20), those at or after `since`."""
    return [(t["from"], t["to"]) for t in _breaker()["transitions"] if t["at"] >= since]


def test_declines_never_open_the_breaker() -> None:
    before = _transitions()
    _set_faults(decline_rate=1.0)
    rides = asyncio.run(_rides(12))
    assert {(b.state, b.outcome) for b in rides} == {("CANCELLED", "card_declined")}
    assert _breaker()["state"] == "closed" and _transitions() == before


def test_an_outage_opens_the_breaker_then_it_fails_fast_probes_and_closes() -> None:
    seen = time.time()
    _set_faults(outage=True)
    # Rides booked during the outage: payment's calls fail until the breaker opens.
    waiting = asyncio.run(_outage_rides())
    wait_for(lambda: ("closed", "open") in _transitions(seen), 60, "the breaker to open")
    # While it is open, new rides are refused at once without a call to the psp.
    refused = asyncio.run(_rides(3))
    assert {b.outcome for b in refused} == {"payment_unavailable"}
    assert set(_attempts([b.ride_id for b in refused]).values()) == {0}
    # After its wait it lets probes through (they fail: still down), then the psp recovers.
    wait_for(lambda: ("open", "half_open") in _transitions(seen), 60, "the breaker to half-open")
    _set_faults()
    wait_for(
        lambda: ("half_open", "closed") in _transitions(seen),
        90,
        "the breaker to close",
        explain=lambda: json.dumps(_breaker()),
    )
    after = asyncio.run(_rides(3))
    assert {b.outcome for b in after} == {"completed"}
    # The rides caught in the outage had calls out: they waited for the psp, then went on.
    assert {b.outcome for b in asyncio.run(_settle_all(waiting))} <= {"completed", "payment_unavailable"}
    report = checker.report(checker.collect())
    assert report["valid"], report["violations"]


async def _outage_rides() -> list[Booking]:
    """Rides whose authorization is attempted while the psp is down: they wait (the hold's
    outcome is unknown once a call went out) and complete after recovery."""
    return await _book(6)


async def _book(n: int) -> list[Booking]:
    async with channel() as ch:
        stub = rider_pb2_grpc.RiderServiceStub(ch)
        bookings = [Booking(await create_rider(stub, f"budget rider {i}")) for i in range(n)]
        await asyncio.gather(*(book(stub, b) for b in bookings))
        return bookings


def _decided(ride_ids: list[str]) -> bool:
    rows = db_rows(
        "trip",
        "SELECT count(*) FROM rides WHERE ride_id = ANY(%s::uuid[]) AND state IN ('PENDING', 'AUTHORIZING')",
        (ride_ids,),
    )
    return int(rows[0][0]) == 0


async def _settle_all(bookings: list[Booking]) -> list[Booking]:
    async with channel() as ch:
        stub = rider_pb2_grpc.RiderServiceStub(ch)
        return list(await asyncio.gather(*(settle(stub, b, 120) for b in bookings)))


def test_a_half_failing_psp_gets_retries_only_within_the_budget() -> None:
    before = _breaker()
    _set_faults(error_rate=0.5)
    bookings = asyncio.run(_book(20))
    # While the psp fails half its calls, every ride's authorization is decided.
    # Each wave of re-sent authorizations meets a breaker that lets 2 probes through and
    # refuses the rest, which wait for their next, later re-send: deciding all 20 can take
    # several waves.
    wait_for(lambda: _decided([b.ride_id for b in bookings]), 240, "every authorization to be decided", interval=1.0)
    after = _breaker()
    _set_faults()
    rides = asyncio.run(_settle_all(bookings))
    calls, retries = after["calls"] - before["calls"], after["retries"] - before["retries"]
    attempts, refused = after["attempts"] - before["attempts"], after["refused"] - before["refused"]
    # Every call either went out (then maybe again, as retries) or was refused by the breaker.
    assert attempts + refused == calls + retries
    # The budget: retries at most 20 % of calls plus 1 per second of its 10 s window.
    assert retries <= 0.2 * calls + 10, (calls, retries)
    per_ride = _attempts([b.ride_id for b in rides])
    assert max(per_ride.values()) <= 1 + retries  # no call was multiplied by another retry layer
    print({"calls": calls, "refused": refused, "retries": retries, "psp_attempts": sorted(per_ride.values())})
    assert all(b.state in ("COMPLETED", "CANCELLED") for b in rides)
    report = checker.report(checker.collect())
    assert report["valid"], report["violations"]


def test_status_shows_the_breakers() -> None:
    breakers = json.loads(ridectl("status", "--json").stdout)["breakers"]
    assert breakers[BREAKER]["state"] in ("closed", "open", "half_open")


def test_a_rider_in_good_standing_rides_on_a_deferred_authorization_while_the_psp_is_down() -> None:
    async def scenario() -> tuple[Booking, Booking, list[Booking]]:
        async with channel() as ch:
            stub = rider_pb2_grpc.RiderServiceStub(ch)
            regular = Booking(await create_rider(stub, "regular rider"))
            await book(stub, regular)
            assert (await settle(stub, regular, 120)).outcome == "completed"
            _set_faults(outage=True)
            # Newcomers' calls fail until the breaker opens; their rides wait for the psp.
            waiting = [Booking(await create_rider(stub, f"newcomer {i}")) for i in range(6)]
            await asyncio.gather(*(book(stub, b) for b in waiting))
            await asyncio.to_thread(wait_for, lambda: _breaker()["state"] == "open", 60, "the breaker to open")
            again = Booking(regular.rider_id)
            await book(stub, again)
            newcomer = Booking(await create_rider(stub, "late newcomer"))
            await book(stub, newcomer)
            assert (await settle(stub, newcomer, 60)).outcome == "payment_unavailable"
            # The regular's ride goes on to its driver and waits only to be settled.
            await asyncio.to_thread(
                wait_for,
                lambda: _state(again.ride_id) in ("CAPTURING", "COMPLETED"),
                90,
                "the deferred ride to reach capture",
            )
            _set_faults()
            await settle(stub, again, 120)
            return again, newcomer, [await settle(stub, b, 120) for b in waiting]

    again, newcomer, waiting = asyncio.run(scenario())
    assert again.outcome == "completed"
    snapshot = checker.collect()
    moves = sorted(m.kind for m in snapshot.movements[again.ride_id])
    assert moves == ["AUTHORIZE", "CAPTURE"]  # authorized and captured once the psp was back
    assert newcomer.ride_id not in snapshot.movements  # nothing was ever sent for the refused ride
    assert all(b.state in ("COMPLETED", "CANCELLED") for b in waiting)
    report = checker.report(snapshot)
    assert report["valid"], report["violations"]


def _state(ride_id: str) -> str:
    rows = db_rows("trip", "SELECT state FROM rides WHERE ride_id = %s", (ride_id,))
    return str(rows[0][0]) if rows else ""


def test_matching_pauses_while_redis_is_down_and_resumes_after() -> None:
    supervisor = Supervisor(paths.RUN)

    async def scenario() -> Booking:
        async with channel() as ch:
            stub = rider_pb2_grpc.RiderServiceStub(ch)
            booking = Booking(await create_rider(stub, "patient rider"))
            supervisor.stop("redis")
            try:
                await book(stub, booking)  # the edge's rate limit fails open without Redis
                await asyncio.to_thread(
                    wait_for, lambda: _state(booking.ride_id) == "MATCHING", 60, "the ride to wait in MATCHING"
                )
            finally:
                supervisor.start("redis")
            return await settle(stub, booking, 120)

    assert asyncio.run(scenario()).outcome == "completed"
    report = checker.report(checker.collect())
    assert report["valid"], report["violations"]
