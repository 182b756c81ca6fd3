"""A ride declined by one driver and accepted by the next is taken, even when both
drivers' reservations carry the same fence token. Fence tokens count per driver, so two
fresh drivers both hold fence 1: the answer of the second must not be mistaken for a
redelivery of the first's (a message id built from the ride and the fence alone was,
and the ride re-matched until it gave up)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

from ridesaga.common.v1 import common_pb2
from ridesaga.driver.v1 import driver_pb2, driver_pb2_grpc
from ridesaga.rider.v1 import rider_pb2, rider_pb2_grpc
from tests.support import db_rows, ride_story, sidecar_channel, wait_for

# Far from the simulated fleet (San Francisco) and from the other tests' drivers.
AUCKLAND = common_pb2.LatLng(lat=-36.8485, lng=174.7633)
MISSION_BAY = common_pb2.LatLng(lat=-36.8506, lng=174.8306)
TIMEOUT = 10.0


def _heartbeats(driver_id: str, stop: threading.Event) -> Iterator[driver_pb2.Heartbeat]:
    while not stop.is_set():
        yield driver_pb2.Heartbeat(driver_id=driver_id, location=AUCKLAND, sent_at_ms=int(time.time() * 1000))
        stop.wait(0.5)


def _offer_for(driver_id: str) -> bytes | None:
    rows = db_rows("driver", "SELECT offer FROM drivers WHERE driver_id = %s", (driver_id,))
    return bytes(rows[0][0]) if rows and rows[0][0] is not None else None


def test_the_second_drivers_acceptance_is_taken_when_both_fences_are_equal() -> None:
    stop = threading.Event()
    with sidecar_channel("driver") as driver_channel, sidecar_channel("rider") as rider_channel:
        drivers = driver_pb2_grpc.DriverServiceStub(driver_channel)
        riders = rider_pb2_grpc.RiderServiceStub(rider_channel)
        pair = [
            drivers.RegisterDriver(driver_pb2.RegisterDriverRequest(name=name, location=AUCKLAND), timeout=TIMEOUT)
            for name in ("First", "Second")
        ]
        ids = [d.driver_id for d in pair]
        beats = [
            threading.Thread(target=lambda d=d: drivers.StreamHeartbeats(_heartbeats(d, stop)), daemon=True)
            for d in ids
        ]
        for beat in beats:
            beat.start()
        try:
            near = driver_pb2.FindNearbyDriversRequest(location=AUCKLAND, radius_km=5, limit=5)
            wait_for(
                lambda: set(ids) <= {d.driver_id for d in drivers.FindNearbyDrivers(near, timeout=TIMEOUT).drivers},
                30,
                "both drivers to be available",
            )
            rider = riders.CreateRider(rider_pb2.CreateRiderRequest(name="Second Offer"), timeout=TIMEOUT)
            ride = riders.RequestRide(
                rider_pb2.RequestRideRequest(
                    rider_id=rider.rider_id, pickup=AUCKLAND, dropoff=MISSION_BAY, idempotency_key=str(uuid.uuid4())
                ),
                timeout=TIMEOUT,
            )
            offers: list[driver_pb2.Offer] = []
            for accept in (False, True):
                # Whichever driver the matcher picks; the one who declined is excluded next.
                def offered() -> tuple[str, bytes] | None:
                    for d in ids:
                        raw = _offer_for(d)
                        if raw is not None and driver_pb2.Offer.FromString(raw) not in offers:
                            return d, raw
                    return None

                driver_id, raw = wait_for(offered, 30, "an offer", explain=lambda: ride_story(ride.ride_id))
                offer = driver_pb2.Offer.FromString(raw)
                offers.append(offer)
                drivers.RespondToOffer(
                    driver_pb2.OfferResponse(
                        ride_id=ride.ride_id,
                        driver_id=driver_id,
                        fence=offer.fence,
                        attempt=offer.attempt,
                        accept=accept,
                    ),
                    timeout=TIMEOUT,
                )
            assert [o.fence for o in offers] == [1, 1], "both fresh drivers hold their first fence"
            drivers.CompleteTrip(
                driver_pb2.CompleteTripRequest(ride_id=ride.ride_id, driver_id=driver_id, fence=offers[1].fence),
                timeout=TIMEOUT,
            )
            wait_for(
                lambda: riders.GetRide(rider_pb2.RideRef(ride_id=ride.ride_id), timeout=TIMEOUT).terminal,
                30,
                "the ride to end",
                explain=lambda: ride_story(ride.ride_id),
            )
            done = riders.GetRide(rider_pb2.RideRef(ride_id=ride.ride_id), timeout=TIMEOUT)
        finally:
            stop.set()
            for beat in beats:
                beat.join(TIMEOUT)
    assert done.state == "COMPLETED", ride_story(ride.ride_id)
    answers = db_rows(
        "trip",
        "SELECT status FROM saga_log WHERE ride_id = %s AND step = 'driver_accepts' ORDER BY seq",
        (ride.ride_id,),
    )
    assert [a for (a,) in answers] == ["declined", "ok"], ride_story(ride.ride_id)
