"""The rider client against a fake rider service in this process: a booking is retried
under one key on transient codes and rate limiting, stops on a refusal or at the policy's
bound; a watch broken mid-stream resumes; a follow ends when its time is up. Each client
behaviour is checked through both clients, sync and async."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from ridesaga.common.v1 import common_pb2
from ridesaga.rider.v1 import rider_pb2, rider_pb2_grpc
from ridesaga.trip.v1 import trip_pb2
from services.blocks.retry import Backoff
from services.rider.client import (
    DOWNTOWN,
    ONCE,
    RETRYABLE_CODES,
    WHARF,
    AsyncRiderClient,
    Attempt,
    Retry,
    RiderClient,
    definite,
    parse_latlng,
)

Code = grpc.StatusCode
QUICK = Retry(give_up_after_seconds=5.0, backoff=Backoff(base_seconds=0.001, cap_seconds=0.005))

MATCHING = trip_pb2.Ride(ride_id="ride-1", state="MATCHING")
COMPLETED = trip_pb2.Ride(ride_id="ride-1", state="COMPLETED", terminal=True)
HANG = "hang"  # a stream that sends its rides, then stays open until the caller goes away


@dataclass
class FakeRider(rider_pb2_grpc.RiderServiceServicer):
    """Fails the next calls with `failures` (every call with `always`), then answers;
    each WatchRide plays the next of `streams`: its rides, then a break, HANG or the end."""

    failures: list[Code] = field(default_factory=list)
    always: Code | None = None
    streams: list[tuple[list[trip_pb2.Ride], Code | str | None]] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    traces: list[str] = field(default_factory=list)
    watches: int = 0

    def _fail(self, context: grpc.ServicerContext) -> None:
        code = self.always or (self.failures.pop(0) if self.failures else None)
        if code is not None:
            context.abort(code, f"scripted {code.name}")

    def CreateRider(self, request: rider_pb2.CreateRiderRequest, context: grpc.ServicerContext) -> rider_pb2.Rider:
        self._fail(context)
        return rider_pb2.Rider(rider_id="rider-1", name=request.name, payment_method=request.payment_method)

    def RequestRide(
        self, request: rider_pb2.RequestRideRequest, context: grpc.ServicerContext
    ) -> rider_pb2.RideRequested:
        self.keys.append(request.idempotency_key)
        self._fail(context)
        return rider_pb2.RideRequested(ride_id="ride-1", state="REQUESTED")

    def GetRide(self, request: rider_pb2.RideRef, context: grpc.ServicerContext) -> trip_pb2.Ride:
        self.traces += [str(value) for key, value in context.invocation_metadata() if key == "traceparent"]
        return MATCHING

    def CancelRide(self, request: rider_pb2.RideRef, context: grpc.ServicerContext) -> trip_pb2.Ride:
        return trip_pb2.Ride(ride_id=request.ride_id, state="CANCELLED", terminal=True)

    def GetRider(self, request: rider_pb2.GetRiderRequest, context: grpc.ServicerContext) -> rider_pb2.Rider:
        context.abort(Code.UNIMPLEMENTED, "not faked")

    def Probe(self, request: common_pb2.ProbeRequest, context: grpc.ServicerContext) -> common_pb2.ProbeReply:
        context.abort(Code.UNIMPLEMENTED, "not faked")

    def WatchRide(self, request: rider_pb2.RideRef, context: grpc.ServicerContext) -> Iterator[trip_pb2.Ride]:
        self.watches += 1
        rides, then = self.streams.pop(0)
        yield from rides
        if then == HANG:
            done = threading.Event()
            context.add_callback(done.set)
            done.wait(timeout=10)  # a bound in case the client never leaves; it leaves at its deadline
        elif isinstance(then, Code):
            context.abort(then, f"scripted {then.name}")


def with_sync(address: str, retry: Retry, use: Callable[[Any], Any]) -> Any:
    with RiderClient(address, retry=retry) as client:
        return use(client)


def with_async(address: str, retry: Retry, use: Callable[[Any], Any]) -> Any:
    async def run() -> Any:
        async with AsyncRiderClient(address, retry=retry) as client:
            return await use(client)

    return asyncio.run(run())


async def _collect(rides: Any) -> list[trip_pb2.Ride]:
    return [ride async for ride in rides]


CLIENTS: dict[str, tuple[Callable[..., Any], Callable[[Any], Any]]] = {
    "sync": (with_sync, list),
    "async": (with_async, _collect),
}


@dataclass(frozen=True)
class Rig:
    """The fake, how to use a client (sync or async) against it, how to collect a watch."""

    fake: FakeRider
    address: str
    client: Callable[..., Any]
    collect: Callable[[Any], Any]

    def use(self, retry: Retry, call: Callable[[Any], Any]) -> Any:
        return self.client(self.address, retry, call)


@pytest.fixture(params=CLIENTS)
def rig(request: pytest.FixtureRequest) -> Iterator[Rig]:
    fake = FakeRider()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    rider_pb2_grpc.add_RiderServiceServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield Rig(fake, f"127.0.0.1:{port}", *CLIENTS[request.param])
    server.stop(0)


def test_a_booking_is_retried_on_transient_codes_and_rate_limiting_under_one_key(rig: Rig) -> None:
    rig.fake.failures = sorted(RETRYABLE_CODES, key=lambda c: c.name)
    booked = rig.use(QUICK, lambda c: c.book("rider-1", DOWNTOWN, WHARF))
    assert (booked.ride_id, booked.state) == ("ride-1", "REQUESTED")
    assert booked.attempts == len(RETRYABLE_CODES) + 1
    assert booked.errors == tuple(sorted(c.name for c in RETRYABLE_CODES))
    assert set(rig.fake.keys) == {booked.key}, "every attempt sends the same idempotency key"


def test_a_given_key_is_the_one_sent(rig: Rig) -> None:
    assert rig.use(QUICK, lambda c: c.book("rider-1", DOWNTOWN, WHARF, key="k-1")).key == "k-1"
    assert rig.fake.keys == ["k-1"]


@pytest.mark.parametrize("code", [Code.INVALID_ARGUMENT, Code.FAILED_PRECONDITION, Code.NOT_FOUND])
def test_a_refusal_is_not_retried(rig: Rig, code: Code) -> None:
    rig.fake.failures = [code]
    with pytest.raises(grpc.RpcError) as raised:
        rig.use(QUICK, lambda c: c.book("rider-1", DOWNTOWN, WHARF))
    assert raised.value.code() == code
    assert len(rig.fake.keys) == 1


def test_the_policy_gives_up_once_the_next_attempt_would_start_past_its_bound() -> None:
    policy = Retry(give_up_after_seconds=1.0, backoff=Backoff(base_seconds=0.1, cap_seconds=0.1))
    waits = [policy.delay(Code.UNAVAILABLE, 1, since=100.0, now=now) for now in (100.0, 100.5, 100.95, 101.0)]
    assert all(w is not None and 0.0 <= w <= 0.1 for w in waits[:2])
    assert waits[3] is None, "past the bound: no more attempts"
    assert policy.delay(Code.INVALID_ARGUMENT, 1, since=100.0, now=100.0) is None, "not retryable"


def test_retries_stop_at_the_policys_bound(rig: Rig) -> None:
    rig.fake.always = Code.UNAVAILABLE
    attempts: list[Attempt] = []
    # Long enough that even a loaded machine makes a second attempt; the bound itself is
    # checked with explicit times above.
    bounded = Retry(give_up_after_seconds=0.5, backoff=QUICK.backoff)
    with pytest.raises(grpc.RpcError) as raised:
        rig.use(bounded, lambda c: c.create_rider("Ann", on_attempt=attempts.append))
    assert raised.value.code() == Code.UNAVAILABLE
    failures = [a for a in attempts if a.code is not None]
    assert len(failures) > 1, "retried within the bound"
    assert [a.retrying for a in failures] == [True] * (len(failures) - 1) + [False]


def test_once_is_one_attempt(rig: Rig) -> None:
    rig.fake.failures = [Code.UNAVAILABLE]
    with pytest.raises(grpc.RpcError):
        rig.use(QUICK, lambda c: c.book("rider-1", DOWNTOWN, WHARF, retry=ONCE))
    assert len(rig.fake.keys) == 1


def test_every_attempt_is_told_as_it_starts_and_as_it_fails(rig: Rig) -> None:
    rig.fake.failures = [Code.UNAVAILABLE]
    attempts: list[Attempt] = []
    rider_ = rig.use(QUICK, lambda c: c.create_rider("Ann", "tok_visa", on_attempt=attempts.append))
    assert (rider_.rider_id, rider_.name, rider_.payment_method, rider_.attempts) == ("rider-1", "Ann", "tok_visa", 2)
    assert attempts == [
        Attempt(1),
        Attempt(1, Code.UNAVAILABLE, "scripted UNAVAILABLE", retrying=True),
        Attempt(2),
    ]


def test_a_watch_broken_mid_stream_resumes(rig: Rig) -> None:
    rig.fake.streams = [([MATCHING], Code.UNAVAILABLE), ([MATCHING, COMPLETED], None)]
    seen = rig.use(QUICK, lambda c: rig.collect(c.watch("ride-1")))
    assert [r.state for r in seen] == ["MATCHING", "MATCHING", "COMPLETED"]
    assert rig.fake.watches == 2


def test_a_watch_refused_is_not_resumed(rig: Rig) -> None:
    rig.fake.streams = [([], Code.NOT_FOUND)]
    with pytest.raises(grpc.RpcError) as raised:
        rig.use(QUICK, lambda c: c.follow("ride-1", 5.0))
    assert raised.value.code() == Code.NOT_FOUND
    assert rig.fake.watches == 1


def test_follow_returns_the_last_view_at_its_end(rig: Rig) -> None:
    rig.fake.streams = [([MATCHING], Code.UNAVAILABLE), ([COMPLETED], None)]
    followed = rig.use(QUICK, lambda c: c.follow("ride-1", 5.0))
    assert (followed.ride.state, followed.terminal) == ("COMPLETED", True)


def test_follow_returns_a_ride_not_terminal_when_its_time_is_up(rig: Rig) -> None:
    rig.fake.streams = [([MATCHING], HANG)]
    followed = rig.use(QUICK, lambda c: c.follow("ride-1", 0.3))
    assert (followed.ride.state, followed.terminal) == ("MATCHING", False)
    assert rig.fake.watches == 1, "a deadline of its own is not a break to resume"


def test_a_read_joins_the_callers_trace_and_a_cancel_answers_the_ride(rig: Rig) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    assert rig.use(QUICK, lambda c: c.get_ride("ride-1", trace_id=trace_id)).state == "MATCHING"
    assert [t.split("-")[1] for t in rig.fake.traces] == [trace_id]
    assert rig.use(QUICK, lambda c: c.cancel("ride-1")).state == "CANCELLED"


def test_the_policy_retries_only_transient_codes_and_rate_limiting() -> None:
    assert QUICK.delay(Code.RESOURCE_EXHAUSTED, 1, since=0.0, now=0.0) is not None
    assert QUICK.delay(Code.UNAVAILABLE, 1, since=0.0, now=0.0) is not None
    assert QUICK.delay(Code.UNAVAILABLE, 1, since=0.0, now=5.0) is None  # past the bound
    assert QUICK.delay(Code.UNAVAILABLE, 1, since=0.0, now=0.0, until=0.0) is None  # past the caller's end
    assert QUICK.delay(Code.FAILED_PRECONDITION, 1, since=0.0, now=0.0) is None
    assert all(ONCE.delay(code, 1, since=0.0, now=0.0) is None for code in Code)


def test_a_definite_failure_is_one_the_service_gave_in_so_many_words() -> None:
    assert definite(Code.FAILED_PRECONDITION) and definite(Code.RESOURCE_EXHAUSTED)
    assert not definite(Code.UNAVAILABLE) and not definite(Code.DEADLINE_EXCEEDED)


@pytest.mark.parametrize("text", ["37.7", "37.7,-122.4,1", "north,east", ""])
def test_a_bad_place_names_the_flag_and_the_text(text: str) -> None:
    with pytest.raises(ValueError) as raised:
        parse_latlng("--pickup", text)
    assert str(raised.value).startswith("--pickup must be LAT,LNG") and repr(text) in str(raised.value)


def test_a_place_is_lat_then_lng() -> None:
    assert parse_latlng("--dropoff", "37.8080,-122.4177") == (37.8080, -122.4177)
