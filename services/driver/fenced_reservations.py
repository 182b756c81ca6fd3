"""The fencing check on a driver's reservation (Kleppmann's fencing token, "How to do
distributed locking", 2016): the lock of services/blocks/fencing.py alone cannot stop a
holder paused past its lease, so the driver's row itself refuses a write whose token is
stale.

Property: a driver is reserved for at most one ride, and only under a token no older than
the newest its row has seen, so a paused holder waking up after someone else reserved the
driver changes nothing; a release or a confirmation counts only for the reservation it
names (ride and token), so one for a reservation that no longer stands changes nothing.
Each runs on the caller's connection, inside the transaction that records the command."""

from __future__ import annotations

import uuid
from typing import Any

from psycopg import AsyncConnection


async def reserve(conn: AsyncConnection[Any], driver_id: uuid.UUID, ride_id: str, token: int) -> bool:
    """Reserves a free driver for the ride under `token`; False if the driver is taken or
    has seen a newer token (a stale lock holder)."""
    cursor = await conn.execute(
        "UPDATE drivers SET ride_id = %s, fence = %s, offer = NULL, confirmed = false"
        " WHERE driver_id = %s AND ride_id IS NULL AND fence <= %s",
        (ride_id, token, driver_id, token),
    )
    return cursor.rowcount == 1


async def release(conn: AsyncConnection[Any], driver_id: uuid.UUID, ride_id: str, token: int) -> None:
    """Frees the driver of this ride's reservation under `token`, if it still stands."""
    await conn.execute(
        "UPDATE drivers SET ride_id = NULL, offer = NULL, confirmed = false"
        " WHERE driver_id = %s AND ride_id = %s AND fence = %s",
        (driver_id, ride_id, token),
    )


async def confirm(conn: AsyncConnection[Any], driver_id: uuid.UUID, ride_id: str, token: int) -> None:
    """Marks the reservation as taken by the saga (the pivot), if it still stands."""
    await conn.execute(
        "UPDATE drivers SET confirmed = true WHERE driver_id = %s AND ride_id = %s AND fence = %s",
        (driver_id, ride_id, token),
    )
