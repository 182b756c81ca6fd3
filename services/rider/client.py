"""The rider's client: creates riders, books rides and follows them through rider's public
address (its sidecar), with the one retry policy every caller shares.

Properties: a retried booking never books twice, since every attempt of one booking sends
the same idempotency key (rider answers a replay with its first answer); a watch broken on
the way (a crash, a restart) resumes, so a follower sees the ride to its end. The decisions
(retry or not, the next wait, the requests, what a reply means) are pure and shared by
`RiderClient` (sync) and `AsyncRiderClient` (grpc.aio), whose loops only call and sleep."""

from __future__ import annotations

import asyncio
import random
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Generic, TypedDict, TypeVar, Unpack

import grpc

from ridesaga.common.v1 import common_pb2
from ridesaga.rider.v1 import rider_pb2, rider_pb2_grpc
from ridesaga.trip.v1 import trip_pb2
from services.blocks.retry import TRANSIENT_CODES, Backoff, next_wait
from services.runtime.topology import service

CALL_TIMEOUT_SECONDS = 10.0
# Rate limited (RESOURCE_EXHAUSTED) is a definite "not now": nothing happened, so the same
# key may be sent again after a wait.
RETRYABLE_CODES = TRANSIENT_CODES | {grpc.StatusCode.RESOURCE_EXHAUSTED}
# gRPC's deadline and the watch's own are read a hair apart: this close to the end, time is up.
TIME_UP_SLACK_SECONDS = 0.05

BACKOFF = Backoff(base_seconds=0.1, cap_seconds=2.0)
Place = tuple[float, float]  # (lat, lng)
# Two places amid the simulated fleet (services/fleet/sim.py): San Francisco's City Hall and
# Fisherman's Wharf, the ride every demo, drill, benchmark and test books by default.
DOWNTOWN: Place = (37.7793, -122.4193)
WHARF: Place = (37.8080, -122.4177)
Metadata = tuple[tuple[str, str], ...]
R = TypeVar("R")
Channel = TypeVar("Channel")
Stub = TypeVar("Stub")
_RNG = random.Random()


def rider_address() -> str:
    """Rider's public address: the ingress listener of its Envoy sidecar."""
    return f"127.0.0.1:{service('rider').ingress_port}"


@dataclass(frozen=True)
class Retry:
    """Retries a retryable failure after a full-jitter wait, while the next attempt starts
    within `give_up_after_seconds` of the first (for a watch: of the last ride seen)."""

    give_up_after_seconds: float = 30.0
    backoff: Backoff = BACKOFF

    def delay(
        self, code: grpc.StatusCode, failures: int, since: float, now: float, until: float | None = None
    ) -> float | None:
        """The wait after the `failures`-th failure in a row, or None: do not try again."""
        if code not in RETRYABLE_CODES:
            return None
        deadline = since + self.give_up_after_seconds
        return next_wait(failures - 1, self.backoff, _RNG, now, deadline if until is None else min(deadline, until))


PATIENT = Retry()
ONCE = Retry(give_up_after_seconds=0.0)  # one attempt: the caller decides what follows a failure


def definite(code: grpc.StatusCode) -> bool:
    """Whether a failure says for certain that the call had no effect (the service refused
    it); after a transient one the outcome is unknown."""
    return code not in TRANSIENT_CODES


def parse_latlng(flag: str, text: str) -> Place:
    """`LAT,LNG` as a place; ValueError naming the flag and the text otherwise."""
    try:
        lat, lng = (float(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"{flag} must be LAT,LNG (e.g. 37.7749,-122.4194), got {text!r}") from None
    return lat, lng


@dataclass(frozen=True)
class Attempt:
    """One try of a retried call, told to the caller's `on_attempt` as it starts (`code`
    None) and, if it fails, again with the failure and whether another try follows."""

    number: int
    code: grpc.StatusCode | None = None
    details: str = ""
    retrying: bool = False


OnAttempt = Callable[[Attempt], None]


@dataclass(frozen=True)
class Rider:
    rider_id: str
    name: str
    payment_method: str
    attempts: int


@dataclass(frozen=True)
class Booked:
    ride_id: str
    state: str
    key: str
    attempts: int
    errors: tuple[str, ...]  # the codes of the attempts that failed, in order


@dataclass(frozen=True)
class Followed:
    ride: trip_pb2.Ride | None  # the last view seen, None if none came
    terminal: bool


def traced(trace_id: str) -> Metadata:
    """A new span of the caller's trace (none without one): every attempt of a call lands
    in the same trace, whose id the caller knows before any answer."""
    return (("traceparent", f"00-{trace_id}-{secrets.token_hex(8)}-01"),) if trace_id else ()


def latlng(place: Place) -> common_pb2.LatLng:
    return common_pb2.LatLng(lat=place[0], lng=place[1])


def rider_request(name: str, card: str) -> rider_pb2.CreateRiderRequest:
    return rider_pb2.CreateRiderRequest(name=name, payment_method=card)


def ride_request(rider_id: str, pickup: Place, dropoff: Place, key: str | None) -> rider_pb2.RequestRideRequest:
    """A booking's one request: every attempt sends it, key and all (a new key if none)."""
    return rider_pb2.RequestRideRequest(
        rider_id=rider_id, pickup=latlng(pickup), dropoff=latlng(dropoff), idempotency_key=key or str(uuid.uuid4())
    )


def ride_ref(ride_id: str) -> rider_pb2.RideRef:
    return rider_pb2.RideRef(ride_id=ride_id)


@dataclass
class Tries:
    """The attempts of one retried call so far: counted, told to `on_attempt`, and after
    each failure either the wait before the next or the failure raised again."""

    retry: Retry
    on_attempt: OnAttempt | None = None
    trace_id: str = ""
    started: float = field(default_factory=time.monotonic)
    number: int = 0
    errors: list[str] = field(default_factory=list)

    def start(self) -> Metadata:
        self.number += 1
        self._tell(Attempt(self.number))
        return traced(self.trace_id)

    def failed(self, error: grpc.RpcError) -> float:
        code = error.code()
        self.errors.append(code.name)
        wait = self.retry.delay(code, self.number, self.started, time.monotonic())
        self._tell(Attempt(self.number, code, error.details() or "", retrying=wait is not None))
        if wait is None:
            raise error
        return wait

    def _tell(self, attempt: Attempt) -> None:
        if self.on_attempt is not None:
            self.on_attempt(attempt)


def rider_of(reply: rider_pb2.Rider, tries: Tries) -> Rider:
    return Rider(reply.rider_id, reply.name, reply.payment_method, tries.number)


def booked(reply: rider_pb2.RideRequested, request: rider_pb2.RequestRideRequest, tries: Tries) -> Booked:
    return Booked(reply.ride_id, reply.state, request.idempotency_key, tries.number, tuple(tries.errors))


@dataclass
class Watch:
    """One watch of a ride: ends at its terminal view or at `until` (monotonic; None:
    never); a break is resumed while the retry policy allows, counted from the last view."""

    retry: Retry
    ride_id: str
    until: float | None
    progress_at: float = field(default_factory=time.monotonic)
    breaks: int = 0
    terminal: bool = False

    @property
    def request(self) -> rider_pb2.RideRef:
        return ride_ref(self.ride_id)

    def timeout(self) -> float | None:
        return None if self.until is None else self.until - time.monotonic()

    def going(self) -> bool:
        left = self.timeout()
        return not self.terminal and (left is None or left > TIME_UP_SLACK_SECONDS)

    def seen(self, ride: trip_pb2.Ride) -> trip_pb2.Ride:
        self.terminal, self.breaks, self.progress_at = ride.terminal, 0, time.monotonic()
        return ride

    def broke(self, error: grpc.RpcError) -> float:
        """The wait before resuming; none once time is up; the break raised again when the
        policy says stop."""
        if not self.going():
            return 0.0
        self.breaks += 1
        wait = self.retry.delay(error.code(), self.breaks, self.progress_at, time.monotonic(), self.until)
        if wait is None:
            raise error
        return wait


def followed(last: trip_pb2.Ride | None) -> Followed:
    return Followed(last, last is not None and last.terminal)


class CallOptions(TypedDict, total=False):
    """One call's own choices: another retry policy (ONCE: the caller decides what follows
    a failure), a callback told of every attempt, the trace every attempt joins."""

    retry: Retry
    on_attempt: OnAttempt
    trace_id: str


class _Client(Generic[Channel, Stub]):
    """What both clients share: a channel of their own to `address` (default: rider's public
    one) or a caller's `stub` (whose channel stays the caller's to close), the retry policy,
    each call's timeout, and how each call starts."""

    def __init__(
        self,
        address: str | None = None,
        *,
        retry: Retry = PATIENT,
        call_timeout: float = CALL_TIMEOUT_SECONDS,
        stub: Stub | None = None,
    ) -> None:
        self.retry, self.call_timeout = retry, call_timeout
        self._channel: Channel | None = None
        if stub is None:
            self._channel, stub = self._connect(address or rider_address())
        self._stub: Stub = stub

    def _connect(self, address: str) -> tuple[Channel, Stub]:
        raise NotImplementedError

    def _tries(self, options: CallOptions) -> Tries:
        return Tries(options.get("retry", self.retry), options.get("on_attempt"), options.get("trace_id", ""))

    def _watching(self, ride_id: str, timeout: float | None) -> Watch:
        return Watch(self.retry, ride_id, None if timeout is None else time.monotonic() + timeout)


class RiderClient(_Client[grpc.Channel, rider_pb2_grpc.RiderServiceStub]):
    """The sync client; a context manager that closes its own channel."""

    def _connect(self, address: str) -> tuple[grpc.Channel, rider_pb2_grpc.RiderServiceStub]:
        channel = grpc.insecure_channel(address)
        return channel, rider_pb2_grpc.RiderServiceStub(channel)

    def __enter__(self) -> RiderClient:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._channel is not None:
            self._channel.close()

    def create_rider(self, name: str, card: str = "", **options: Unpack[CallOptions]) -> Rider:
        request, tries = rider_request(name, card), self._tries(options)
        reply = _retried(lambda m: self._stub.CreateRider(request, timeout=self.call_timeout, metadata=m), tries)
        return rider_of(reply, tries)

    def book(
        self, rider_id: str, pickup: Place, dropoff: Place, key: str | None = None, **options: Unpack[CallOptions]
    ) -> Booked:
        """RequestRide, retried under the same key (a new one if none is given)."""
        request, tries = ride_request(rider_id, pickup, dropoff, key), self._tries(options)
        reply = _retried(lambda m: self._stub.RequestRide(request, timeout=self.call_timeout, metadata=m), tries)
        return booked(reply, request, tries)

    def get_ride(self, ride_id: str, *, trace_id: str = "") -> trip_pb2.Ride:
        return self._stub.GetRide(ride_ref(ride_id), timeout=self.call_timeout, metadata=traced(trace_id))

    def cancel(self, ride_id: str) -> trip_pb2.Ride:
        return self._stub.CancelRide(ride_ref(ride_id), timeout=self.call_timeout)

    def watch(self, ride_id: str, timeout: float | None = None) -> Iterator[trip_pb2.Ride]:
        """The ride's views as they change, until terminal or `timeout` seconds are up."""
        watch = self._watching(ride_id, timeout)
        while watch.going():
            try:
                yield from map(watch.seen, self._stub.WatchRide(watch.request, timeout=watch.timeout()))
            except grpc.RpcError as error:
                time.sleep(watch.broke(error))

    def follow(self, ride_id: str, timeout: float) -> Followed:
        """Watches until the ride is terminal or `timeout` seconds are up."""
        last = None
        for ride in self.watch(ride_id, timeout):
            last = ride
        return followed(last)


class AsyncRiderClient(_Client[grpc.aio.Channel, "rider_pb2_grpc.RiderServiceAsyncStub"]):  # a stub type only
    """The grpc.aio client: the same calls, awaited; an async context manager."""

    def _connect(self, address: str) -> tuple[grpc.aio.Channel, rider_pb2_grpc.RiderServiceAsyncStub]:
        channel = grpc.aio.insecure_channel(address)
        return channel, rider_pb2_grpc.RiderServiceStub(channel)

    async def __aenter__(self) -> AsyncRiderClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._channel is not None:
            await self._channel.close()

    async def create_rider(self, name: str, card: str = "", **options: Unpack[CallOptions]) -> Rider:
        request, tries = rider_request(name, card), self._tries(options)
        call = self._stub.CreateRider
        reply = await _retried_async(lambda m: call(request, timeout=self.call_timeout, metadata=m), tries)
        return rider_of(reply, tries)

    async def book(
        self, rider_id: str, pickup: Place, dropoff: Place, key: str | None = None, **options: Unpack[CallOptions]
    ) -> Booked:
        """RequestRide, retried under the same key (a new one if none is given)."""
        request, tries = ride_request(rider_id, pickup, dropoff, key), self._tries(options)
        call = self._stub.RequestRide
        reply = await _retried_async(lambda m: call(request, timeout=self.call_timeout, metadata=m), tries)
        return booked(reply, request, tries)

    async def get_ride(self, ride_id: str, *, trace_id: str = "") -> trip_pb2.Ride:
        return await self._stub.GetRide(ride_ref(ride_id), timeout=self.call_timeout, metadata=traced(trace_id))

    async def cancel(self, ride_id: str) -> trip_pb2.Ride:
        return await self._stub.CancelRide(ride_ref(ride_id), timeout=self.call_timeout)

    async def watch(self, ride_id: str, timeout: float | None = None) -> AsyncIterator[trip_pb2.Ride]:
        """The ride's views as they change, until terminal or `timeout` seconds are up."""
        watch = self._watching(ride_id, timeout)
        while watch.going():
            try:
                async for ride in self._stub.WatchRide(watch.request, timeout=watch.timeout()):
                    yield watch.seen(ride)
            except grpc.RpcError as error:
                await asyncio.sleep(watch.broke(error))

    async def follow(self, ride_id: str, timeout: float) -> Followed:
        """Watches until the ride is terminal or `timeout` seconds are up."""
        last = None
        async for ride in self.watch(ride_id, timeout):
            last = ride
        return followed(last)


def _retried(call: Callable[[Metadata], R], tries: Tries) -> R:
    while True:
        try:
            return call(tries.start())
        except grpc.RpcError as error:
            time.sleep(tries.failed(error))


async def _retried_async(call: Callable[[Metadata], Awaitable[R]], tries: Tries) -> R:
    while True:
        try:
            return await call(tries.start())
        except grpc.RpcError as error:
            await asyncio.sleep(tries.failed(error))
