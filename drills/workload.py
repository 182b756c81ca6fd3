"""The drill's clients: open-loop arrivals of riders, each booking one ride through
rider's public address and following it until it ends, recording every operation in
the history. A client does what a real app does: a call that fails in an unknown way is
retried with the same idempotency key, and a broken watch is resumed.

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
from ridesaga.common.v1 import common_pb2
from ridesaga.rider.v1 import rider_pb2, rider_pb2_grpc
from services.runtime.topology import service

CALL_TIMEOUT_SECONDS = 5.0
RETRY_PAUSE_SECONDS = 0.5
REQUEST_GIVE_UP_SECONDS = 90.0  # a client stops retrying its request after this
FOLLOW_GIVE_UP_SECONDS = 180.0  # and stops following its ride after this
# A live-ride slot claimed for a ride trip never created is freed within the checker's
# stuck bound; a rider who gave up tries again every REBOOK_PAUSE_SECONDS (well within its
# rate limit), so its new ride must be accepted within REBOOK_BOUND_SECONDS of giving up.
REBOOK_PAUSE_SECONDS = 2.0
REBOOK_BOUND_SECONDS = STUCK_BOUND_MS / 1000 + REBOOK_PAUSE_SECONDS
# Codes that say the call certainly had no effect; anything else is unknown (info).
DEFINITE = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED,
}
# Definite failures a client retries (with the same key): rate limiting and a busy key.
RETRY_ANYWAY = {grpc.StatusCode.RESOURCE_EXHAUSTED}
NEAR_THE_FLEET = (common_pb2.LatLng(lat=37.7793, lng=-122.4193), common_pb2.LatLng(lat=37.8080, lng=-122.4177))
# Sacramento: some 120 km from the fleet's San Francisco (services/fleet/sim.py), far past
# the driver service's match radius, so no driver is ever found there.
NO_DRIVER_NEAR = (common_pb2.LatLng(lat=38.5816, lng=-121.4944), common_pb2.LatLng(lat=38.5556, lng=-121.4689))
RETRY, STOP, GIVE_UP = "retry", "stop", "give up"


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


def after_failure(code: grpc.StatusCode, gives_up: bool, past_deadline: bool) -> str:
    """What a client does after a failed RequestRide: RETRY with the same key (the outcome
    is unknown, or it was only rate limited), STOP (refused, so nothing happened, or it
    has retried long enough), or GIVE_UP (a rider who gives up does so on any error)."""
    if gives_up:
        return GIVE_UP
    if (code in DEFINITE and code not in RETRY_ANYWAY) or past_deadline:
        return STOP
    return RETRY


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


def _error(error: grpc.aio.AioRpcError) -> dict[str, str]:
    return {"code": error.code().name, "details": (error.details() or "")[:200]}


class Clients:
    def __init__(self, history: History, started: float, mix: Mix) -> None:
        self.history = history
        self.started = started
        self.mix = mix
        self._processes = itertools.count()  # one per client; a rider booking anew is a new one

    def now(self) -> float:
        return time.monotonic() - self.started

    async def _create_rider(self, stub: rider_pb2_grpc.RiderServiceAsyncStub, process: int) -> str:
        give_up = self.now() + REQUEST_GIVE_UP_SECONDS
        while True:
            self.history.add(self.now(), process, INVOKE, "create-rider")
            try:
                reply = await stub.CreateRider(
                    rider_pb2.CreateRiderRequest(name=f"drill rider {process}"), timeout=CALL_TIMEOUT_SECONDS
                )
                self.history.add(self.now(), process, OK, "create-rider", value={"rider_id": reply.rider_id})
                return str(reply.rider_id)
            except grpc.aio.AioRpcError as error:
                kind = FAIL if error.code() in DEFINITE else INFO
                self.history.add(self.now(), process, kind, "create-rider", value=_error(error))
                if (kind == FAIL and error.code() not in RETRY_ANYWAY) or self.now() > give_up:
                    return ""
            await asyncio.sleep(RETRY_PAUSE_SECONDS)

    async def _request(
        self,
        stub: rider_pb2_grpc.RiderServiceAsyncStub,
        process: int,
        rider_id: str,
        where: tuple[common_pb2.LatLng, common_pb2.LatLng],
        gives_up: bool,
        note: dict[str, Any],
    ) -> Answer:
        key = str(uuid.uuid4())
        trace_id = secrets.token_hex(16)
        pickup, dropoff = where
        request = rider_pb2.RequestRideRequest(rider_id=rider_id, pickup=pickup, dropoff=dropoff, idempotency_key=key)
        give_up = self.now() + REQUEST_GIVE_UP_SECONDS
        while True:
            # Each attempt is a new span of the same trace, so the ride's trace id is known
            # before the answer (and a retry lands in the same trace).
            metadata = (("traceparent", f"00-{trace_id}-{secrets.token_hex(8)}-01"),)
            self.history.add(self.now(), process, INVOKE, "request", key=key, trace_id=trace_id, value=note)
            try:
                reply = await stub.RequestRide(request, timeout=CALL_TIMEOUT_SECONDS, metadata=metadata)
                self.history.add(
                    self.now(),
                    process,
                    OK,
                    "request",
                    key=key,
                    ride_id=reply.ride_id,
                    trace_id=trace_id,
                    value={"state": reply.state},
                )
                return Answer(str(reply.ride_id))
            except grpc.aio.AioRpcError as error:
                kind = FAIL if error.code() in DEFINITE else INFO
                action = after_failure(error.code(), gives_up, self.now() > give_up)
                found = {**_error(error), **({"gave_up": True} if action == GIVE_UP else {})}
                self.history.add(self.now(), process, kind, "request", key=key, trace_id=trace_id, value=found)
                if action != RETRY:
                    return Answer(code=error.code(), action=action)
            await asyncio.sleep(RETRY_PAUSE_SECONDS)

    async def _book_again(
        self,
        stub: rider_pb2_grpc.RiderServiceAsyncStub,
        gave_up: int,
        rider_id: str,
        where: tuple[common_pb2.LatLng, common_pb2.LatLng],
    ) -> tuple[int, Answer]:
        """A rider who gave up books a new ride with a new key, as a new client (linked by
        `rebooking_for`) whose request is retried like any other; refused because its
        live-ride slot is still taken, it tries again with another key, within the bound."""
        process = next(self._processes)
        gave_up_at = self.now()
        while True:
            await asyncio.sleep(REBOOK_PAUSE_SECONDS)  # the rider's own pause before trying again
            answer = await self._request(stub, process, rider_id, where, False, {"rebooking_for": gave_up})
            if answer.ride_id or not books_again(answer.code, self.now() - gave_up_at):
                return process, answer

    async def _cancel(self, stub: rider_pb2_grpc.RiderServiceAsyncStub, process: int, ride_id: str) -> bool:
        """A stranded rider cancels; True once answered either way (FAILED_PRECONDITION: too
        late to cancel). After an unknown outcome it cancels again when the ride next waits."""
        self.history.add(self.now(), process, INVOKE, "cancel", ride_id=ride_id)
        try:
            ride = await stub.CancelRide(rider_pb2.RideRef(ride_id=ride_id), timeout=CALL_TIMEOUT_SECONDS)
            self.history.add(self.now(), process, OK, "cancel", ride_id=ride_id, value={"state": ride.state})
            return True
        except grpc.aio.AioRpcError as error:
            kind = FAIL if error.code() in DEFINITE else INFO
            self.history.add(self.now(), process, kind, "cancel", ride_id=ride_id, value=_error(error))
            return kind == FAIL

    async def _follow(
        self, stub: rider_pb2_grpc.RiderServiceAsyncStub, process: int, ride_id: str, cancels: bool
    ) -> None:
        self.history.add(self.now(), process, INVOKE, "read", ride_id=ride_id)
        give_up = self.now() + FOLLOW_GIVE_UP_SECONDS
        last: dict[str, str] = {}
        cancelled = not cancels
        while self.now() < give_up:
            try:
                stream = stub.WatchRide(rider_pb2.RideRef(ride_id=ride_id), timeout=give_up - self.now())
                async for ride in stream:
                    last = {"state": ride.state, "outcome": ride.outcome}
                    if ride.terminal:
                        self.history.add(self.now(), process, OK, "read", ride_id=ride_id, value=last)
                        return
                    if not cancelled and ride.state == "MATCH_BACKOFF":
                        cancelled = await self._cancel(stub, process, ride_id)
            except grpc.aio.AioRpcError as error:
                if error.code() == grpc.StatusCode.NOT_FOUND:
                    self.history.add(self.now(), process, FAIL, "read", ride_id=ride_id, value=_error(error))
                    return
            await asyncio.sleep(RETRY_PAUSE_SECONDS)  # the watch broke (a crash on the way): resume it
        self.history.add(self.now(), process, INFO, "read", ride_id=ride_id, value={"last": last, "gave_up": True})

    async def ride(self, stub: rider_pb2_grpc.RiderServiceAsyncStub, process: int, stranded: bool) -> None:
        rider_id = await self._create_rider(stub, process)
        if not rider_id:
            return
        where = NO_DRIVER_NEAR if stranded else NEAR_THE_FLEET
        answer = await self._request(stub, process, rider_id, where, self.mix.gives_up, {})
        if answer.action == GIVE_UP:
            process, answer = await self._book_again(stub, process, rider_id, where)
        if answer.ride_id:
            await self._follow(stub, process, answer.ride_id, cancels=stranded)

    async def run(self, rate: float, keep_going: Callable[[int], bool]) -> None:
        """Starts a client every 1/rate seconds while keep_going(started so far) holds,
        whatever the earlier ones are waiting for; then waits for all of them."""
        async with grpc.aio.insecure_channel(f"127.0.0.1:{service('rider').ingress_port}") as channel:
            stub = rider_pb2_grpc.RiderServiceStub(channel)
            tasks: list[asyncio.Task[None]] = []
            next_at = self.now()
            while keep_going(len(tasks)):
                stranded = self.mix.stranded(len(tasks))
                tasks.append(asyncio.create_task(self.ride(stub, next(self._processes), stranded)))
                next_at += 1.0 / rate
                await asyncio.sleep(max(0.0, next_at - self.now()))
            await asyncio.gather(*tasks)
