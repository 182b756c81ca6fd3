"""The trip service's PostgreSQL adapter: rides with their saga state and the saga log.
(The processed-message records that make each transition exactly-once are the inbox's,
services/blocks/inbox.py.)"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection

from services.trip import watchers
from services.trip.saga import LogEntry, Point, Ride, State

RIDE_COLUMNS = (
    "ride_id, rider_id, payment_method, pickup_lat, pickup_lng, dropoff_lat, dropoff_lng, fare_cents, state,"
    " hold_id, driver_id, fence, match_attempt, excluded, cancel_requested, outcome, compensations, deadline_ms,"
    " resends"
)


def _ride(row: tuple[Any, ...]) -> Ride:
    return Ride(
        ride_id=str(row[0]),
        rider_id=str(row[1]),
        payment_method=row[2],
        pickup=Point(row[3], row[4]),
        dropoff=Point(row[5], row[6]),
        fare_cents=row[7],
        state=State(row[8]),
        hold_id=row[9],
        driver_id=row[10],
        fence=row[11],
        match_attempt=row[12],
        excluded=tuple(row[13]),
        cancel_requested=row[14],
        outcome=row[15],
        compensations=tuple(row[16]),
        deadline_ms=row[17],
        resends=row[18],
    )


@dataclass(frozen=True)
class StoredStep:
    step: str
    status: str
    detail: str
    hlc: str
    at_ms: int


async def insert_ride(conn: AsyncConnection[Any], ride: Ride, trace_id: str, traceparent: str) -> bool:
    """Creates the ride if it does not exist; True if this call created it."""
    cursor = await conn.execute(
        "INSERT INTO rides (ride_id, rider_id, payment_method, pickup_lat, pickup_lng, dropoff_lat, dropoff_lng,"
        " fare_cents, state, deadline_ms, trace_id, traceparent) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (ride_id) DO NOTHING",
        (
            ride.ride_id,
            ride.rider_id,
            ride.payment_method,
            ride.pickup.lat,
            ride.pickup.lng,
            ride.dropoff.lat,
            ride.dropoff.lng,
            ride.fare_cents,
            ride.state.value,
            ride.deadline_ms,
            trace_id,
            traceparent,
        ),
    )
    return cursor.rowcount == 1


async def load_ride(conn: AsyncConnection[Any], ride_id: uuid.UUID | str, *, lock: bool = False) -> Ride | None:
    sql = f"SELECT {RIDE_COLUMNS} FROM rides WHERE ride_id = %s" + (" FOR UPDATE" if lock else "")
    row = await (await conn.execute(sql.encode(), (ride_id,))).fetchone()
    return _ride(row) if row else None


async def save_ride(conn: AsyncConnection[Any], ride: Ride) -> None:
    await conn.execute(
        "UPDATE rides SET state = %s, hold_id = %s, driver_id = %s, fence = %s, match_attempt = %s, excluded = %s,"
        " cancel_requested = %s, outcome = %s, compensations = %s, deadline_ms = %s, resends = %s, updated_at = now()"
        " WHERE ride_id = %s",
        (
            ride.state.value,
            ride.hold_id,
            ride.driver_id,
            ride.fence,
            ride.match_attempt,
            list(ride.excluded),
            ride.cancel_requested,
            ride.outcome,
            list(ride.compensations),
            ride.deadline_ms,
            ride.resends,
            ride.ride_id,
        ),
    )
    # Delivered at commit, to the WatchRide streams of every trip process (services/trip/watchers.py).
    await conn.execute("SELECT pg_notify(%s, %s)", (watchers.CHANNEL, str(ride.ride_id)))


async def append_log(
    conn: AsyncConnection[Any],
    ride_id: str,
    entries: list[tuple[LogEntry, str]],
    message_id: str,
    message_hlc: str = "",
    sender_wall_ms: int = 0,
    epochs: tuple[int, int] | None = None,
) -> None:
    """`epochs`: for a timeout, (the sweeper epoch it carried, the epoch in force)."""
    sweeper_epoch, in_force = epochs or (None, None)
    async with conn.cursor() as cursor:
        await cursor.executemany(
            "INSERT INTO saga_log (ride_id, step, status, detail, hlc, message_id, message_hlc, sender_wall_ms,"
            " sweeper_epoch, epoch_in_force) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [
                (
                    ride_id,
                    e.step,
                    e.status,
                    e.detail,
                    hlc,
                    message_id,
                    message_hlc,
                    sender_wall_ms,
                    sweeper_epoch,
                    in_force,
                )
                for e, hlc in entries
            ],
        )


async def steps(conn: AsyncConnection[Any], ride_id: str) -> list[StoredStep]:
    rows = await (
        await conn.execute(
            "SELECT step, status, detail, hlc, (extract(epoch FROM at) * 1000)::bigint"
            " FROM saga_log WHERE ride_id = %s ORDER BY seq",
            (ride_id,),
        )
    ).fetchall()
    return [StoredStep(*row) for row in rows]


async def trace_id(conn: AsyncConnection[Any], ride_id: str) -> str:
    row = await (await conn.execute("SELECT trace_id FROM rides WHERE ride_id = %s", (ride_id,))).fetchone()
    return str(row[0]) if row else ""


async def traceparent(conn: AsyncConnection[Any], ride_id: str) -> str:
    """The W3C traceparent of the span that started the ride: later work joins its trace."""
    row = await (await conn.execute("SELECT traceparent FROM rides WHERE ride_id = %s", (ride_id,))).fetchone()
    return str(row[0] or "") if row else ""


async def overdue(
    conn: AsyncConnection[Any], now_ms: int, limit: int, skip: list[str]
) -> list[tuple[str, str, int, int, str]]:
    """(ride_id, state, match_attempt, deadline_ms, traceparent) of rides past a deadline,
    oldest first, leaving out `skip` (rides whose timeout was sent and is not yet due again)."""
    rows = await (
        await conn.execute(
            "SELECT ride_id, state, match_attempt, deadline_ms, traceparent FROM rides"
            " WHERE deadline_ms IS NOT NULL AND deadline_ms <= %s AND NOT (ride_id = ANY(%s::uuid[]))"
            " ORDER BY deadline_ms LIMIT %s",
            (now_ms, skip, limit),
        )
    ).fetchall()
    return [(str(r[0]), r[1], r[2], r[3], r[4]) for r in rows]


async def sweeper_epoch_in_force(conn: AsyncConnection[Any]) -> int:
    """The current sweeper leader's epoch, share-locked until the transaction ends, so no
    new leader can claim an epoch between this read and the transition it guards."""
    row = await (await conn.execute("SELECT epoch FROM sweeper_epoch WHERE id = 1 FOR SHARE")).fetchone()
    return int(row[0]) if row else 0


async def entries_of(conn: AsyncConnection[Any], ride_id: str, message_id: str) -> list[tuple[str, str, str]]:
    """(step, status, detail) of the saga-log entries one message caused, in order."""
    rows = await (
        await conn.execute(
            "SELECT step, status, detail FROM saga_log WHERE ride_id = %s AND message_id = %s ORDER BY seq",
            (ride_id, message_id),
        )
    ).fetchall()
    return [(str(r[0]), str(r[1]), str(r[2])) for r in rows]
