"""The pivot race: a driver's acceptance travels on trip.replies, while the offer's
timeout and the rider's cancel travel on trip.commands, so trip may take either first.
Whatever it takes first, the driver's app and the rider are told the truth: an
acceptance answered OK means the driver is on the ride; a cancel answered OK means the
ride is cancelled; the loser of the race gets FAILED_PRECONDITION."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest
from confluent_kafka import Producer

from ridesaga.common.v1 import common_pb2
from ridesaga.driver.v1 import driver_pb2, driver_pb2_grpc
from ridesaga.rider.v1 import rider_pb2, rider_pb2_grpc
from ridesaga.saga.v1 import saga_pb2
from services.blocks.clocks import HybridLogicalClock
from services.runtime.messages import envelope
from services.runtime.topology import INFRA, Topic
from tests.support import db_rows, ride_story, sidecar_channel, wait_for

# Far from the simulated fleet (San Francisco) and from the other tests' drivers.
PERTH = common_pb2.LatLng(lat=-31.9523, lng=115.8613)
FREMANTLE = common_pb2.LatLng(lat=-32.0569, lng=115.7439)
TIMEOUT = 10.0
ROUNDS = 4


def _heartbeats(driver_id: str, stop: threading.Event) -> Iterator[driver_pb2.Heartbeat]:
    while not stop.is_set():
        yield driver_pb2.Heartbeat(driver_id=driver_id, location=PERTH, sent_at_ms=int(time.time() * 1000))
        stop.wait(0.5)  # the app's heartbeat interval


class Perth:
    """One driver of the test's own, the only one near Perth, and riders who book there."""

    def __init__(self, drivers: Any, riders: Any) -> None:
        self.drivers, self.riders = drivers, riders
        self.me = drivers.RegisterDriver(
            driver_pb2.RegisterDriverRequest(name="Racer", location=PERTH), timeout=TIMEOUT
        )

    def free(self) -> bool:
        return db_rows("driver", "SELECT ride_id IS NULL FROM drivers WHERE driver_id = %s", (self.me.driver_id,)) == [
            (True,)
        ]

    def offered_ride(self) -> tuple[str, driver_pb2.Offer]:
        wait_for(self.free, 60, "the test's driver to be free")
        rider = self.riders.CreateRider(rider_pb2.CreateRiderRequest(name="Racing Rider"), timeout=TIMEOUT)
        ride = self.riders.RequestRide(
            rider_pb2.RequestRideRequest(
                rider_id=rider.rider_id, pickup=PERTH, dropoff=FREMANTLE, idempotency_key=str(uuid.uuid4())
            ),
            timeout=TIMEOUT,
        )
        stream = self.drivers.WatchOffers(driver_pb2.WatchOffersRequest(driver_id=self.me.driver_id), timeout=30)
        offer = next(stream)
        stream.cancel()
        assert offer.ride_id == ride.ride_id, ride_story(ride.ride_id)
        return ride.ride_id, offer

    def accept(self, offer: driver_pb2.Offer) -> grpc.StatusCode:
        answer = driver_pb2.OfferResponse(
            ride_id=offer.ride_id, driver_id=self.me.driver_id, fence=offer.fence, attempt=offer.attempt, accept=True
        )
        return _code(lambda: self.drivers.RespondToOffer(answer, timeout=TIMEOUT))

    def cancel(self, ride_id: str) -> grpc.StatusCode:
        return _code(lambda: self.riders.CancelRide(rider_pb2.RideRef(ride_id=ride_id), timeout=TIMEOUT))

    def finish(self, ride_id: str, offer: driver_pb2.Offer, accepted: bool) -> str:
        """Plays the ride out as the app was told: drives it if accepted, else cancels it
        (no driver nearby would take it); returns its final state."""
        if accepted:
            done = driver_pb2.CompleteTripRequest(ride_id=ride_id, driver_id=self.me.driver_id, fence=offer.fence)
            assert _code(lambda: self.drivers.CompleteTrip(done, timeout=TIMEOUT)) == grpc.StatusCode.OK, ride_story(
                ride_id
            )
        else:
            wait_for(
                lambda: self._state(ride_id) != "OFFERED",
                30,
                "the ride to move on",
                explain=lambda: ride_story(ride_id),
            )
            self.cancel(ride_id)
        wait_for(
            lambda: self._state(ride_id) in ("COMPLETED", "CANCELLED"),
            60,
            "the ride to end",
            explain=lambda: ride_story(ride_id),
        )
        return self._state(ride_id)

    @staticmethod
    def _state(ride_id: str) -> str:
        return str(db_rows("trip", "SELECT state FROM rides WHERE ride_id = %s", (ride_id,))[0][0])

    def drove_it(self, ride_id: str) -> bool:
        rows = db_rows(
            "trip",
            "SELECT count(*) FROM saga_log WHERE ride_id = %s AND step = 'driver_accepts' AND status = 'ok'"
            " AND detail LIKE %s",
            (ride_id, f"{self.me.driver_id}%"),
        )
        return rows == [(1,)]


def _code(call: Callable[[], object]) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


@pytest.fixture
def perth() -> Iterator[Perth]:
    stop = threading.Event()
    with sidecar_channel("driver") as driver_channel, sidecar_channel("rider") as rider_channel:
        place = Perth(driver_pb2_grpc.DriverServiceStub(driver_channel), rider_pb2_grpc.RiderServiceStub(rider_channel))
        beating = threading.Thread(
            target=lambda: place.drivers.StreamHeartbeats(_heartbeats(place.me.driver_id, stop)), daemon=True
        )
        beating.start()
        try:
            yield place
        finally:
            stop.set()
            beating.join(TIMEOUT)


def _offer_times_out_now(ride_id: str) -> None:
    """Sends the offer's timeout as the sweeper leader would, ahead of its deadline."""
    attempt, deadline = db_rows("trip", "SELECT match_attempt, deadline_ms FROM rides WHERE ride_id = %s", (ride_id,))[
        0
    ]
    epoch = db_rows("trip", "SELECT epoch FROM sweeper_epoch WHERE id = 1")[0][0]
    body = saga_pb2.StepTimedOut(step="OFFERED", attempt=attempt, epoch=epoch)
    env = envelope(HybridLogicalClock(), f"{ride_id}:timeout:test:{deadline}", ride_id, "", step_timed_out=body)
    producer = Producer({"bootstrap.servers": f"127.0.0.1:{INFRA.kafka}", "enable.idempotence": True})
    producer.produce(Topic.TRIP_COMMANDS, key=ride_id.encode(), value=env.SerializeToString())
    assert producer.flush(10) == 0


def test_an_acceptance_answered_ok_always_means_the_driver_is_on_the_ride(perth: Perth) -> None:
    seen = []
    for _ in range(ROUNDS):
        ride_id, offer = perth.offered_ride()
        _offer_times_out_now(ride_id)  # queued before the acceptance: it usually wins
        code = perth.accept(offer)
        assert code in (grpc.StatusCode.OK, grpc.StatusCode.FAILED_PRECONDITION), (code, ride_story(ride_id))
        final = perth.finish(ride_id, offer, accepted=code == grpc.StatusCode.OK)
        seen.append(code.name)
        assert perth.drove_it(ride_id) == (code == grpc.StatusCode.OK), (code, ride_story(ride_id))
        assert final == ("COMPLETED" if code == grpc.StatusCode.OK else "CANCELLED"), (code, ride_story(ride_id))
    print(f"acceptances answered: {seen}")


def test_a_cancel_answered_ok_always_means_the_ride_is_cancelled(perth: Perth) -> None:
    seen = []
    for _ in range(ROUNDS):
        ride_id, offer = perth.offered_ride()
        with ThreadPoolExecutor(2) as both:
            cancelled = both.submit(perth.cancel, ride_id)
            accepted = both.submit(perth.accept, offer)
            cancel_code, accept_code = cancelled.result(), accepted.result()
        seen.append((cancel_code.name, accept_code.name))
        # Exactly one of them wins, and each side hears which.
        assert {cancel_code, accept_code} == {grpc.StatusCode.OK, grpc.StatusCode.FAILED_PRECONDITION}, (
            seen[-1],
            ride_story(ride_id),
        )
        final = perth.finish(ride_id, offer, accepted=accept_code == grpc.StatusCode.OK)
        assert final == ("CANCELLED" if cancel_code == grpc.StatusCode.OK else "COMPLETED"), (
            seen[-1],
            ride_story(ride_id),
        )
    print(f"(cancel, acceptance) answered: {seen}")
