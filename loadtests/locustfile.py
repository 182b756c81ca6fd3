"""Locust users for ridesaga, following Locust's gRPC pattern: gRPC runs on gevent, and
a client interceptor reports every unary call to Locust as a request.

- `Rider`: creates one rider, then books rides one after another and follows each to
  COMPLETED or CANCELLED; the whole ride is also reported, as request type "ride".
- `Driver` (RIDESAGA_LOAD_DRIVERS of them, default 5): registers near downtown, streams
  heartbeats, accepts the offers it gets and completes the trips.

Every ride's calls share one trace whose context carries the W3C baggage
`synthetic_request=true`; the services copy it onto every span of the ride, so synthetic
traffic can be told apart in Jaeger. Memory stays small: one channel per target for the
whole process, no per-request state kept after it is reported."""

from __future__ import annotations

import random
import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple, cast

import gevent
import grpc
from grpc.experimental import gevent as grpc_gevent
from locust import User, between, task
from locust.env import Environment

from loadtests import config
from ridesaga.driver.v1 import driver_pb2, driver_pb2_grpc
from ridesaga.rider.v1 import rider_pb2_grpc
from services.rider.client import DOWNTOWN, ONCE, WHARF, Place, RiderClient, latlng

grpc_gevent.init_gevent()

CALL_TIMEOUT_SECONDS = 10.0
RIDE_TIMEOUT_SECONDS = 120.0
POLL_SECONDS = 0.25
SYNTHETIC_BAGGAGE = ("baggage", "synthetic_request=true")


class _Details(NamedTuple):
    method: str
    timeout: float | None
    metadata: Any
    credentials: Any
    wait_for_ready: Any
    compression: Any


def report(environment: Environment, **request: Any) -> None:
    """One request as Locust counts it (Locust's event hook is untyped)."""
    cast(Callable[..., None], environment.events.request.fire)(**request)


class LocustInterceptor(grpc.UnaryUnaryClientInterceptor):
    """Reports each unary call (name = the gRPC method) with its time and size, and
    marks it as synthetic."""

    def __init__(self, environment: Environment) -> None:
        self.environment = environment

    def intercept_unary_unary(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        metadata = [*(details.metadata or []), SYNTHETIC_BAGGAGE]
        marked = _Details(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready, details.compression
        )
        started = time.perf_counter()
        call = continuation(marked, request)
        exception: BaseException | None = None
        length = 0
        try:
            length = call.result().ByteSize()
        except grpc.RpcError as error:
            exception = error
        report(
            self.environment,
            request_type="grpc",
            name=details.method,
            response_time=(time.perf_counter() - started) * 1000,
            response_length=length,
            exception=exception,
            context=None,
        )
        return call


_channels: dict[str, grpc.Channel] = {}


def channel(name: str, environment: Environment) -> grpc.Channel:
    """One channel per target for the whole load generator (shared by every user)."""
    if name not in _channels:
        _channels[name] = grpc.intercept_channel(
            grpc.insecure_channel(config.target(name)), LocustInterceptor(environment)
        )
    return _channels[name]


def _near(point: Place, rng: random.Random) -> Place:
    return point[0] + rng.uniform(-0.01, 0.01), point[1] + rng.uniform(-0.01, 0.01)


class Rider(User):
    weight = 10
    wait_time = between(0.5, 2.0)

    def on_start(self) -> None:
        self.rng = random.Random()
        # One attempt per call: the interceptor reports each failure as it comes.
        self.client = RiderClient(stub=rider_pb2_grpc.RiderServiceStub(channel("rider", self.environment)), retry=ONCE)
        self.rider_id = self.client.create_rider("locust rider").rider_id

    @task
    def ride(self) -> None:
        trace_id = secrets.token_hex(16)  # the ride's calls share one trace (a new span id each call)
        started = time.perf_counter()
        try:
            booked = self.client.book(
                self.rider_id, _near(DOWNTOWN, self.rng), _near(WHARF, self.rng), trace_id=trace_id
            )
        except grpc.RpcError:
            return  # reported by the interceptor
        ride_id = booked.ride_id
        state, error = "", None
        deadline = time.monotonic() + RIDE_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            gevent.sleep(POLL_SECONDS)
            try:
                ride = self.client.get_ride(ride_id, trace_id=trace_id)
            except grpc.RpcError:
                continue  # reported; keep following
            if ride.terminal:
                state = ride.state
                break
        else:
            error = TimeoutError(f"ride {ride_id} did not end within {RIDE_TIMEOUT_SECONDS:.0f}s")
        report(
            self.environment,
            request_type="ride",
            name=f"request to {state.lower() or 'end'}",
            response_time=(time.perf_counter() - started) * 1000,
            response_length=0,
            exception=error,
            context=None,
        )


class Driver(User):
    fixed_count = config.load_drivers()
    wait_time = between(0.1, 0.5)

    def on_start(self) -> None:
        self.rng = random.Random()
        self.stub = driver_pb2_grpc.DriverServiceStub(channel("driver", self.environment))
        reply = self.stub.RegisterDriver(
            driver_pb2.RegisterDriverRequest(name="locust driver", location=latlng(_near(DOWNTOWN, self.rng))),
            timeout=CALL_TIMEOUT_SECONDS,
        )
        self.driver_id = reply.driver_id
        self.beating = gevent.spawn(self._heartbeats)

    def on_stop(self) -> None:
        self.beating.kill()

    def _beats(self) -> Iterator[driver_pb2.Heartbeat]:
        while True:
            yield driver_pb2.Heartbeat(
                driver_id=self.driver_id, location=latlng(_near(DOWNTOWN, self.rng)), sent_at_ms=int(time.time() * 1000)
            )
            gevent.sleep(1.0)

    def _heartbeats(self) -> None:
        while True:
            try:
                self.stub.StreamHeartbeats(self._beats())
            except grpc.RpcError:
                gevent.sleep(1.0)

    @task
    def take_offers(self) -> None:
        """Answers the offers that arrive within 10 s: accepts, drives briefly, completes."""
        offers = self.stub.WatchOffers(driver_pb2.WatchOffersRequest(driver_id=self.driver_id), timeout=10)
        try:
            for offer in offers:
                trace = (("traceparent", offer.traceparent),) if offer.traceparent else ()
                self.stub.RespondToOffer(
                    driver_pb2.OfferResponse(
                        ride_id=offer.ride_id,
                        driver_id=self.driver_id,
                        fence=offer.fence,
                        attempt=offer.attempt,
                        accept=True,
                    ),
                    timeout=CALL_TIMEOUT_SECONDS,
                    metadata=trace,
                )
                gevent.sleep(self.rng.uniform(0.2, 1.0))
                self.stub.CompleteTrip(
                    driver_pb2.CompleteTripRequest(ride_id=offer.ride_id, driver_id=self.driver_id, fence=offer.fence),
                    timeout=CALL_TIMEOUT_SECONDS,
                    metadata=trace,
                )
        except grpc.RpcError as error:
            # The 10 s window closing is normal; so, in a driver cluster, is the stream's
            # end when the driver's cell moved to another replica: the next task watches again.
            moved = error.code() == grpc.StatusCode.UNAVAILABLE and "watch offers again" in (error.details() or "")
            if error.code() != grpc.StatusCode.DEADLINE_EXCEEDED and not moved:
                raise
