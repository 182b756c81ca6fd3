"""An offer made while the driver's app is not connected (its stream broke, or the driver
service restarted) is sent first when the app connects, so the ride goes on without
waiting for the offer timeout and a re-match."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

from ridesaga.common.v1 import common_pb2
from ridesaga.driver.v1 import driver_pb2, driver_pb2_grpc
from ridesaga.rider.v1 import rider_pb2, rider_pb2_grpc
from tests.support import db_rows, ride_story, sidecar_channel, wait_for

# Far from the simulated fleet (San Francisco): only this test's driver is near.
SYDNEY = common_pb2.LatLng(lat=-33.8688, lng=151.2093)
BONDI = common_pb2.LatLng(lat=-33.8915, lng=151.2767)
TIMEOUT = 10.0


def _heartbeats(driver_id: str, stop: threading.Event) -> Iterator[driver_pb2.Heartbeat]:
    while not stop.is_set():
        yield driver_pb2.Heartbeat(driver_id=driver_id, location=SYDNEY, sent_at_ms=int(time.time() * 1000))
        stop.wait(0.5)  # the app's heartbeat interval


def _offer_kept(driver_id: str) -> bool:
    rows = db_rows("driver", "SELECT offer IS NOT NULL FROM drivers WHERE driver_id = %s", (driver_id,))
    return bool(rows and rows[0][0])


def test_an_offer_made_while_the_app_was_away_is_sent_when_it_connects() -> None:
    stop = threading.Event()
    with sidecar_channel("driver") as driver_channel, sidecar_channel("rider") as rider_channel:
        drivers = driver_pb2_grpc.DriverServiceStub(driver_channel)
        riders = rider_pb2_grpc.RiderServiceStub(rider_channel)
        me = drivers.RegisterDriver(driver_pb2.RegisterDriverRequest(name="Away", location=SYDNEY), timeout=TIMEOUT)
        beating = threading.Thread(
            target=lambda: drivers.StreamHeartbeats(_heartbeats(me.driver_id, stop)), daemon=True
        )
        beating.start()
        try:
            near = driver_pb2.FindNearbyDriversRequest(location=SYDNEY, radius_km=5, limit=5)
            wait_for(
                lambda: me.driver_id in {d.driver_id for d in drivers.FindNearbyDrivers(near, timeout=TIMEOUT).drivers},
                30,
                "the driver to be available",
            )
            rider = riders.CreateRider(rider_pb2.CreateRiderRequest(name="Offer Test"), timeout=TIMEOUT)
            ride = riders.RequestRide(
                rider_pb2.RequestRideRequest(
                    rider_id=rider.rider_id, pickup=SYDNEY, dropoff=BONDI, idempotency_key=str(uuid.uuid4())
                ),
                timeout=TIMEOUT,
            )
            # The offer is made while no app of this driver is connected.
            wait_for(lambda: _offer_kept(me.driver_id), 30, "the offer", explain=lambda: ride_story(ride.ride_id))

            stream = drivers.WatchOffers(driver_pb2.WatchOffersRequest(driver_id=me.driver_id), timeout=TIMEOUT)
            offer = next(stream)
            stream.cancel()
            assert offer.ride_id == ride.ride_id and offer.fence > 0 and offer.traceparent
            drivers.RespondToOffer(
                driver_pb2.OfferResponse(
                    ride_id=offer.ride_id, driver_id=me.driver_id, fence=offer.fence, attempt=offer.attempt, accept=True
                ),
                timeout=TIMEOUT,
            )
            assert not _offer_kept(me.driver_id), "an answered offer is not sent again"
            drivers.CompleteTrip(
                driver_pb2.CompleteTripRequest(ride_id=offer.ride_id, driver_id=me.driver_id, fence=offer.fence),
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
            beating.join(TIMEOUT)
    assert done.state == "COMPLETED", ride_story(ride.ride_id)
    offers = db_rows(
        "trip",
        "SELECT count(*) FROM saga_log WHERE ride_id = %s AND step = 'match_driver' AND status = 'offered'",
        (ride.ride_id,),
    )
    assert offers == [(1,)], "the first offer was answered: no offer timeout, no re-match"
