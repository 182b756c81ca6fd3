"""200 rides booked at once with a mix of outcomes: completed, card declined, no driver,
cancelled by the rider before pickup. Every ride ends, and the checker finds the money,
the holds and the drivers consistent."""

from __future__ import annotations

import asyncio
from collections import Counter

import grpc

from drills import checker
from ridesaga.rider.v1 import rider_pb2, rider_pb2_grpc
from services.rider.client import RETRYABLE_CODES
from tests.e2e.rides import LOS_ANGELES, Booking, book, channel, create_rider, settle

SETTLE_SECONDS = 180.0
GROUPS = {"completed": 100, "declined": 35, "no_driver": 30, "cancelled": 35}


async def _ride(stub: rider_pb2_grpc.RiderServiceAsyncStub, group: str, n: int) -> tuple[str, Booking, bool]:
    card = "tok_chargeDeclined" if group == "declined" else ""
    booking = Booking(await create_rider(stub, f"{group} rider {n}", card))
    if group == "no_driver":
        await book(stub, booking, pickup=LOS_ANGELES, dropoff=(34.06, -118.25))
    else:
        await book(stub, booking)
    cancel_refused = False
    while group == "cancelled":
        try:
            await stub.CancelRide(rider_pb2.RideRef(ride_id=booking.ride_id), timeout=10)
            break
        except grpc.aio.AioRpcError as error:
            if error.code() in RETRYABLE_CODES:
                continue  # cancelling is idempotent: a client retries it
            assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error
            cancel_refused = True  # the driver had already picked the rider up
            break
    await settle(stub, booking, SETTLE_SECONDS)
    return group, booking, cancel_refused


async def _book_all() -> list[tuple[str, Booking, bool]]:
    async with channel() as ch:
        stub = rider_pb2_grpc.RiderServiceStub(ch)
        jobs = [_ride(stub, group, n) for group, count in GROUPS.items() for n in range(count)]
        return await asyncio.gather(*jobs)


def test_two_hundred_concurrent_rides_all_end_consistently() -> None:
    results = asyncio.run(_book_all())
    assert len(results) == sum(GROUPS.values())
    outcomes: dict[str, Counter[str]] = {group: Counter() for group in GROUPS}
    for group, booking, cancel_refused in results:
        assert booking.state in ("COMPLETED", "CANCELLED"), booking
        outcomes[group][booking.outcome if not cancel_refused else "refused_after_pickup"] += 1
    print({group: dict(found) for group, found in outcomes.items()})
    assert outcomes["declined"] == Counter({"card_declined": GROUPS["declined"]})
    assert outcomes["no_driver"] == Counter({"no_driver": GROUPS["no_driver"]})
    assert outcomes["completed"] == Counter({"completed": GROUPS["completed"]})
    assert set(outcomes["cancelled"]) <= {"rider_cancelled", "refused_after_pickup"}
    assert outcomes["cancelled"]["rider_cancelled"] > 0

    snapshot = checker.collect()
    report = checker.report(snapshot)
    assert report["valid"], report["violations"]
    ours = {booking.ride_id: booking for _, booking, _ in results}
    for ride_id, booking in ours.items():
        moves = Counter(m.kind for m in snapshot.movements.get(ride_id, []))
        if booking.state == "CANCELLED":
            assert moves["AUTHORIZE"] == moves["VOID"], (ride_id, moves)  # every hold voided
        else:
            assert (moves["AUTHORIZE"], moves["CAPTURE"]) == (1, 1), (ride_id, moves)
    drivers = [snapshot.rides[r].driver_id for r in ours if snapshot.rides[r].state == "COMPLETED"]
    assert all(drivers)
