"""One service's wall clock is set 5 s behind (payment, by configuration); a ride is
booked. Ordered by the senders' wall clocks, the saga log puts effects before their
causes; ordered by hybrid logical clocks it keeps every cause before its effect."""

from __future__ import annotations

import os
import uuid
from typing import Any

import psycopg

from ridectl import rides
from ridectl.drills import Verdict
from ridectl.stack import lifecycle
from ridectl.stack.errors import StackError
from ridesaga.rider.v1 import rider_pb2
from services.shared.clocks import Timestamp
from services.shared.topology import INFRA

SKEWED = "payment"
SKEW_MS = -5000
TRIP_DB = f"host=127.0.0.1 port={INFRA.postgres} dbname=trip user=trip"


def _inversions(keys: list[Any]) -> int:
    """Pairs that a sort by these keys would put in the opposite of causal order."""
    return sum(1 for i in range(len(keys)) for j in range(i + 1, len(keys)) if keys[i] > keys[j])


def _book() -> str:
    with rides.rider_stub() as stub:
        rider = stub.CreateRider(rider_pb2.CreateRiderRequest(name="Skewed"), timeout=10)
        ride = stub.RequestRide(
            rider_pb2.RequestRideRequest(
                rider_id=rider.rider_id,
                pickup=rides.latlng("pickup", "37.7793,-122.4193"),
                dropoff=rides.latlng("dropoff", "37.8080,-122.4177"),
                idempotency_key=str(uuid.uuid4()),
            ),
            timeout=10,
        )
        ended = rides.wait_terminal(stub, ride.ride_id, 60)
    if ended is None:
        raise StackError(f"clock-skew: ride {ride.ride_id} did not end within 60 s")
    return str(ride.ride_id)


def run() -> Verdict:
    previous = os.environ.get("RIDESAGA_CLOCK_SKEW")
    os.environ["RIDESAGA_CLOCK_SKEW"] = f"{SKEWED}={SKEW_MS}"
    try:
        lifecycle.up()  # restarts payment with its skewed clock
        ride_id = _book()
    finally:
        if previous is None:
            os.environ.pop("RIDESAGA_CLOCK_SKEW", None)
        else:
            os.environ["RIDESAGA_CLOCK_SKEW"] = previous
        lifecycle.up()
    with psycopg.connect(TRIP_DB) as conn:
        # The messages that drove the saga, in the order the orchestrator handled them: each
        # was caused by the one before it (a reply to its command), so this is causal order.
        rows = conn.execute(
            "SELECT message_id, min(message_hlc), min(sender_wall_ms) FROM saga_log WHERE ride_id = %s"
            " AND message_hlc <> '' GROUP BY message_id ORDER BY min(seq)",
            (ride_id,),
        ).fetchall()
    messages = [{"message_id": m, "hlc": h, "sender_wall_ms": w} for m, h, w in rows]
    wall = _inversions([m["sender_wall_ms"] for m in messages])
    hlc = _inversions([Timestamp.parse(m["hlc"]) for m in messages])
    return {
        "scenario": "clock-skew",
        "valid": hlc == 0,
        "skewed_service": SKEWED,
        "skew_ms": SKEW_MS,
        "ride_id": ride_id,
        "messages": messages,
        "wall_clock_order_inversions": wall,
        "hlc_order_inversions": hlc,
        "explanation": (
            f"ordering by wall clock puts {wall} pair(s) of messages before their causes; HLC order has {hlc}"
        ),
    }
