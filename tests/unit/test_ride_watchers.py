"""WatchRide's bookkeeping (services/trip/watchers.py), without PostgreSQL: a notice wakes
only its ride's watchers, a lost connection wakes everyone, and a watcher that leaves is
forgotten. (The notices themselves: tests/integration/test_ride_watchers.py.)"""

from __future__ import annotations

import asyncio

from services.trip.watchers import RideWatchers


def test_a_notice_wakes_only_its_rides_watchers_and_a_lost_connection_wakes_all() -> None:
    async def scenario() -> None:
        watchers = RideWatchers("unused")
        with watchers.watching("r1") as a, watchers.watching("r1") as b, watchers.watching("r2") as c:
            watchers.wake("r1")
            assert (a.is_set(), b.is_set(), c.is_set()) == (True, True, False)
            watchers.wake("nobody")  # a ride nobody watches: nothing happens
            for event in (a, b):
                event.clear()
            watchers.wake()
            assert a.is_set() and b.is_set() and c.is_set()
            await watchers.changed(a)  # already set: returns at once
        assert watchers._waiting == {}, "watchers that left are forgotten"

    asyncio.run(scenario())
