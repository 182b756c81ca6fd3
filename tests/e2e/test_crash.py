"""Crash recovery: while 100 rides are in flight, the orchestrator and the participants
are SIGKILLed again and again (each kill triggered by the rides' progress, not a timer).
Afterwards every ride has ended, no rider paid twice, the ledger balances."""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter

from drills import checker
from ridesaga.rider.v1 import rider_pb2_grpc
from tests.e2e.rides import Booking, book, channel, create_rider, settle
from tests.support import db_rows, status

RIDES = 100
VICTIMS = ["trip", "payment", "driver", "rider", "trip", "payment", "driver", "trip"]
SETTLE_SECONDS = 240.0


def _ended(ride_ids: list[str]) -> int:
    if not ride_ids:
        return 0
    rows = db_rows(
        "trip",
        "SELECT count(*) FROM rides WHERE ride_id = ANY(%s::uuid[]) AND state IN ('COMPLETED','CANCELLED')",
        (ride_ids,),
    )
    return int(rows[0][0])


async def _killer(bookings: list[Booking], kills: list[tuple[str, int]]) -> None:
    """Kills the next victim each time another tenth of the rides has ended."""
    for n, victim in enumerate(VICTIMS, start=1):
        threshold = n * RIDES // (len(VICTIMS) + 2)
        while _ended([b.ride_id for b in bookings if b.ride_id]) < threshold:
            await asyncio.sleep(0.2)
        pid = status()[victim]["pid"]
        if pid:
            os.kill(pid, signal.SIGKILL)
            kills.append((victim, threshold))


async def _scenario() -> tuple[list[Booking], list[tuple[str, int]]]:
    async with channel() as ch:
        stub = rider_pb2_grpc.RiderServiceStub(ch)
        bookings = [Booking(await create_rider(stub, f"crash rider {i}")) for i in range(RIDES)]
        kills: list[tuple[str, int]] = []
        killer = asyncio.create_task(_killer(bookings, kills))

        async def ride(i: int, booking: Booking) -> Booking:
            await asyncio.sleep(i * 0.1)  # spread the requests so sagas are always in flight
            await book(stub, booking)
            return await settle(stub, booking, SETTLE_SECONDS)

        await asyncio.gather(*(ride(i, b) for i, b in enumerate(bookings)))
        await killer
        return bookings, kills


def test_sigkill_mid_saga_loses_nothing_and_charges_nobody_twice() -> None:
    bookings, kills = asyncio.run(_scenario())
    assert [victim for victim, _ in kills] == VICTIMS
    assert all(b.state in ("COMPLETED", "CANCELLED") for b in bookings)
    snapshot = checker.collect()
    for b in bookings:
        moves = Counter(m.kind for m in snapshot.movements.get(b.ride_id, []))
        assert moves["CAPTURE"] <= 1 and moves["AUTHORIZE"] <= 1, (b.ride_id, moves)
    print(
        {
            "kills": kills,
            "outcomes": dict(Counter(b.outcome for b in bookings)),
            "retries": sum(b.attempts - 1 for b in bookings),
        }
    )
    report = checker.report(snapshot)
    assert report["valid"], report["violations"]
