"""The drill's clients: open-loop arrivals of riders, each booking one ride through
rider's public address and following it until it ends, recording every operation in
the history. A client does what a real app does, through services/rider/client.py: a
request that fails in an unknown way (or is rate limited) is retried with the same
idempotency key, and a broken watch is resumed.

A drill's `Mix` changes what some riders do. Stranded riders book where no driver is
and cancel while their ride waits for one (so the saga goes through MATCH_BACKOFF and
COMPENSATING). Riders who give up send their request once and, on any error, abandon it
for good (no retry with its key) and book a new ride with a new key: the property is that
an abandoned request never locks a rider out (`history.locked_out`)."""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc

from drills.checker import STUCK_BOUND_MS
from drills.history import FAIL, INFO, INVOKE, OK, History
from services.blocks.retry import Backoff
from services.rider.client import DOWNTOWN, ONCE, WHARF, AsyncRiderClient, Attempt, OnAttempt, Place, Retry, definite

CALL_TIMEOUT_SECONDS = 5.0
REQUEST_GIVE_UP_SECONDS = 90.0  # a client stops retrying its request after this
FOLLOW_GIVE_UP_SECONDS = 180.0  # and stops following its ride after this
# Which failures a client retries (with the same key) is the rider client's one policy
# (services/rider/client.py); the drill sets how long and how fast.
RETRY = Retry(give_up_after_seconds=REQUEST_GIVE_UP_SECONDS, backoff=Backoff(base_seconds=0.25, cap_seconds=2.0))
# A live-ride slot claimed for a ride trip never created is freed within the checker's
# stuck bound; a rider who gave up tries again every REBOOK_PAUSE_SECONDS (well within its
# rate limit), so its new ride must be accepted within REBOOK_BOUND_SECONDS of giving up.
REBOOK_PAUSE_SECONDS = 2.0
REBOOK_BOUND_SECONDS = STUCK_BOUND_MS / 1000 + REBOOK_PAUSE_SECONDS
NEAR_THE_FLEET: tuple[Place, Place] = (DOWNTOWN, WHARF)
# Sacramento: some 120 km from the fleet's San Francisco (services/fleet/sim.py), far past
# the driver service's match radius, so no driver is ever found there.
NO_DRIVER_NEAR: tuple[Place, Place] = ((38.5816, -121.4944), (38.5556, -121.4689))
STOP, GIVE_UP = "stop", "give up"


@dataclass(frozen=True)
class Mix:
    """What a drill's riders do besides booking near the fleet and following the ride.
    `stranded_every`: every Nth rider is stranded (books where no driver is, and cancels
    once its ride waits in MATCH_BACKOFF); `gives_up`: every rider gives up on its request
    at the first error and books a new ride with a new key."""

    stranded_every: int = 0
    gives_up: bool = False

    def stranded(self, arrival: int) -> bool:
        return self.stranded_every > 0 and arrival % self.stranded_every == self.stranded_every - 1


def request_retry(gives_up: bool) -> Retry:
    """A rider who gives up sends its request once (and then books anew with a new key);
    any other retries it with the same key while the drill's policy allows."""
    return ONCE if gives_up else RETRY


def books_again(refused: grpc.StatusCode | None, since_giving_up: float) -> bool:
    """Whether a rider who gave up tries once more with yet another key: only while its new
    ride is refused because its live-ride slot is taken (FAILED_PRECONDITION, "already has
    a live ride": the abandoned request's), and while the next try is within the bound."""
    return (
        refused == grpc.StatusCode.FAILED_PRECONDITION
        and since_giving_up + REBOOK_PAUSE_SECONDS <= REBOOK_BOUND_SECONDS
    )


@dataclass(frozen=True)
class Answer:
    """How a client's RequestRide ended: the ride, or the last error and what it did then."""

    ride_id: str = ""
    code: grpc.StatusCode | None = None
    action: str = ""


def _kind(code: grpc.StatusCode) -> str:
    """FAIL: the service refused the call, so it had no effect; INFO: the outcome is unknown."""
    return FAIL if definite(code) else INFO


def _error(code: grpc.StatusCode, details: str) -> dict[str, str]:
    return {"code": code.name, "details": details[:200]}


class Clients:
    def __init__(self, history: History, started: float, mix: Mix) -> None:
        self.history = history
        self.started = started
        self.mix = mix
        self._processes = itertools.count()  # one per client; a rider booking anew is a new one

    def now(self) -> float:
        return time.monotonic() - self.started

    def recorder(self, process: int, f: str, note: dict[str, Any], gives_up: bool, **fields: str) -> OnAttempt:
        """Records each attempt of a call: INVOKE as it starts, FAIL or INFO if it fails."""

        def record(attempt: Attempt) -> None:
            if attempt.code is None:
                self.history.add(self.now(), process, INVOKE, f, value=note, **fields)
                return
            found = {**_error(attempt.code, attempt.details), **({"gave_up": True} if gives_up else {})}
            self.history.add(self.now(), process, _kind(attempt.code), f, value=found, **fields)

        return record

    async def _create_rider(self, client: AsyncRiderClient, process: int) -> str:
        record = self.recorder(process, "create-rider", {}, False)
        try:
            rider = await client.create_rider(f"drill rider {process}", on_attempt=record)
        except grpc.aio.AioRpcError:
            return ""
        self.history.add(self.now(), process, OK, "create-rider", value={"rider_id": rider.rider_id})
        return rider.rider_id

    async def _request(
        self,
        client: AsyncRiderClient,
        process: int,
        rider_id: str,
        where: tuple[Place, Place],
        gives_up: bool,
        note: dict[str, Any],
    ) -> Answer:
        # Every attempt is a new span of one trace, so the ride's trace id is known before
        # the answer (and a retry lands in the same trace).
        trace_id = secrets.token_hex(16)
        key = str(uuid.uuid4())
        record = self.recorder(process, "request", note, gives_up, key=key, trace_id=trace_id)
        try:
            booked = await client.book(
                rider_id, *where, key=key, retry=request_retry(gives_up), on_attempt=record, trace_id=trace_id
            )
        except grpc.aio.AioRpcError as error:
            return Answer(code=error.code(), action=GIVE_UP if gives_up else STOP)
        self.history.add(
            self.now(),
            process,
            OK,
            "request",
            key=key,
            ride_id=booked.ride_id,
            trace_id=trace_id,
            value={"state": booked.state},
        )
        return Answer(booked.ride_id)

    async def _book_again(
        self, client: AsyncRiderClient, gave_up: int, rider_id: str, where: tuple[Place, Place]
    ) -> tuple[int, Answer]:
        """A rider who gave up books a new ride with a new key, as a new client (linked by
        `rebooking_for`) whose request is retried like any other; refused because its
        live-ride slot is still taken, it tries again with another key, within the bound."""
        process = next(self._processes)
        gave_up_at = self.now()
        while True:
            await asyncio.sleep(REBOOK_PAUSE_SECONDS)  # the rider's own pause before trying again
            answer = await self._request(client, process, rider_id, where, False, {"rebooking_for": gave_up})
            if answer.ride_id or not books_again(answer.code, self.now() - gave_up_at):
                return process, answer

    async def _cancel(self, client: AsyncRiderClient, process: int, ride_id: str) -> bool:
        """A stranded rider cancels; True once answered either way (FAILED_PRECONDITION: too
        late to cancel). After an unknown outcome it cancels again when the ride next waits."""
        self.history.add(self.now(), process, INVOKE, "cancel", ride_id=ride_id)
        try:
            ride = await client.cancel(ride_id)
            self.history.add(self.now(), process, OK, "cancel", ride_id=ride_id, value={"state": ride.state})
            return True
        except grpc.aio.AioRpcError as error:
            kind = _kind(error.code())
            value = _error(error.code(), error.details() or "")
            self.history.add(self.now(), process, kind, "cancel", ride_id=ride_id, value=value)
            return kind == FAIL

    async def _follow(self, client: AsyncRiderClient, process: int, ride_id: str, cancels: bool) -> None:
        """Follows the ride to its end; the client resumes a watch that breaks on the way (a
        crash), until FOLLOW_GIVE_UP_SECONDS or the drill's policy gives up."""
        self.history.add(self.now(), process, INVOKE, "read", ride_id=ride_id)
        last: dict[str, str] = {}
        cancelled = not cancels
        try:
            async for ride in client.watch(ride_id, FOLLOW_GIVE_UP_SECONDS):
                last = {"state": ride.state, "outcome": ride.outcome}
                if ride.terminal:
                    self.history.add(self.now(), process, OK, "read", ride_id=ride_id, value=last)
                    return
                if not cancelled and ride.state == "MATCH_BACKOFF":
                    cancelled = await self._cancel(client, process, ride_id)
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                value = _error(error.code(), error.details() or "")
                self.history.add(self.now(), process, FAIL, "read", ride_id=ride_id, value=value)
                return
        self.history.add(self.now(), process, INFO, "read", ride_id=ride_id, value={"last": last, "gave_up": True})

    async def ride(self, client: AsyncRiderClient, process: int, stranded: bool) -> None:
        rider_id = await self._create_rider(client, process)
        if not rider_id:
            return
        where = NO_DRIVER_NEAR if stranded else NEAR_THE_FLEET
        answer = await self._request(client, process, rider_id, where, self.mix.gives_up, {})
        if answer.action == GIVE_UP:
            process, answer = await self._book_again(client, process, rider_id, where)
        if answer.ride_id:
            await self._follow(client, process, answer.ride_id, cancels=stranded)

    async def run(self, rate: float, keep_going: Callable[[int], bool]) -> None:
        """Starts a client every 1/rate seconds while keep_going(started so far) holds,
        whatever the earlier ones are waiting for; then waits for all of them."""
        async with AsyncRiderClient(retry=RETRY, call_timeout=CALL_TIMEOUT_SECONDS) as client:
            tasks: list[asyncio.Task[None]] = []
            next_at = self.now()
            while keep_going(len(tasks)):
                stranded = self.mix.stranded(len(tasks))
                tasks.append(asyncio.create_task(self.ride(client, next(self._processes), stranded)))
                next_at += 1.0 / rate
                await asyncio.sleep(max(0.0, next_at - self.now()))
            await asyncio.gather(*tasks)
