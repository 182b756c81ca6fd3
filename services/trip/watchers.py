"""Ride watchers woken by PostgreSQL's LISTEN/NOTIFY instead of polling.

Every transition the orchestrator saves sends `NOTIFY ride_changed, '<ride id>'` in its own
transaction (services/trip/adapters.py, save_ride), which PostgreSQL delivers only if and
when that transaction commits. One connection per trip process listens and wakes the
WatchRide streams of that ride, which then read it once.

Property: a watch costs nothing while its ride does not change, and sees a committed change
at once; if notifications are lost (the listening connection broke, PostgreSQL restarted),
every watcher still looks again within FALLBACK_SECONDS. Why it matters: watches used to
poll every 0.2 s with three queries each, on the event loop the saga's transitions also
run on. A burst of slow rides meant more watchers, whose polling starved the transitions
that would have ended them: the system stayed slow after the burst (a metastable failure,
seen in the restart-kafka drill with hundreds of rides in flight)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Iterator

import psycopg

from services.blocks.retry import Backoff

CHANNEL = "ride_changed"
FALLBACK_SECONDS = 5.0
RECONNECT = Backoff(base_seconds=0.2, cap_seconds=5.0)
log = logging.getLogger(__name__)
_RNG = random.Random()


class RideWatchers:
    def __init__(self, conninfo: str) -> None:
        self.conninfo = conninfo
        self._waiting: dict[str, set[asyncio.Event]] = {}

    @contextlib.contextmanager
    def watching(self, ride_id: str) -> Iterator[asyncio.Event]:
        """An event set whenever the ride may have changed; clear it before each read."""
        event = asyncio.Event()
        self._waiting.setdefault(ride_id, set()).add(event)
        try:
            yield event
        finally:
            waiting = self._waiting.get(ride_id, set())
            waiting.discard(event)
            if not waiting:
                self._waiting.pop(ride_id, None)

    @staticmethod
    async def changed(event: asyncio.Event) -> None:
        """Returns when the ride was notified as changed, or after FALLBACK_SECONDS."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), FALLBACK_SECONDS)

    def wake(self, ride_id: str | None = None) -> None:
        """Wakes the watchers of one ride, or all of them (notifications may have been lost)."""
        groups = [self._waiting.get(ride_id, set())] if ride_id is not None else list(self._waiting.values())
        for group in groups:
            for event in group:
                event.set()

    async def listen(self, stopping: asyncio.Event) -> None:
        """Listens until `stopping`, reconnecting after any failure."""
        attempt = 0
        while not stopping.is_set():
            try:
                async with await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}".encode())
                    attempt = 0
                    self.wake()  # anything committed while nobody listened is read now
                    while not stopping.is_set():  # notifies() returns every FALLBACK_SECONDS
                        async for notify in conn.notifies(timeout=FALLBACK_SECONDS):
                            self.wake(notify.payload)
                    return
            except psycopg.Error as error:
                log.warning("ride notifications lost; reconnecting", extra={"fields": {"error": repr(error)}})
            self.wake()
            attempt += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), RECONNECT.wait(attempt, _RNG))
