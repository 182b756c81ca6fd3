"""WatchRide's wake-up over the real PostgreSQL (services/trip/watchers.py): a saved
transition notifies its ride's watchers when, and only if, its transaction commits, and
no other ride's."""

from __future__ import annotations

import asyncio
import uuid

import psycopg

from services.runtime.topology import INFRA
from services.trip import adapters
from services.trip.saga import Point, Ride
from services.trip.watchers import RideWatchers

TRIP_DB = f"host=127.0.0.1 port={INFRA.postgres} dbname=trip user=trip"
WAIT = 10.0


def _ride() -> Ride:
    return Ride(str(uuid.uuid4()), str(uuid.uuid4()), "tok_visa", Point(37.77, -122.42), Point(37.8, -122.41), 875)


async def _save(ride: Ride, commit: bool) -> None:
    async with await psycopg.AsyncConnection.connect(TRIP_DB) as conn:
        await adapters.save_ride(conn, ride)  # the ride row need not exist: the notice is sent anyway
        await (conn.commit() if commit else conn.rollback())


def test_a_committed_transition_wakes_its_rides_watchers_and_a_rolled_back_one_wakes_none() -> None:
    async def scenario() -> None:
        watchers = RideWatchers(TRIP_DB)
        stopping = asyncio.Event()
        mine, other, sentinel = _ride(), _ride(), _ride()
        with (
            watchers.watching(mine.ride_id) as woken,
            watchers.watching(other.ride_id) as elsewhere,
            watchers.watching(sentinel.ride_id) as done,
        ):
            listening = asyncio.create_task(watchers.listen(stopping))
            await asyncio.wait_for(woken.wait(), WAIT)  # everyone is woken once it listens
            for event in (woken, elsewhere, done):
                event.clear()
            await _save(mine, commit=False)
            await _save(sentinel, commit=True)  # notices arrive in commit order
            await asyncio.wait_for(done.wait(), WAIT)
            assert not woken.is_set(), "a rolled-back transition notifies nobody"
            await _save(mine, commit=True)
            await asyncio.wait_for(woken.wait(), WAIT)
            assert not elsewhere.is_set(), "only the changed ride's watchers wake"
            stopping.set()
            await asyncio.wait_for(listening, WAIT)

    asyncio.run(scenario())
