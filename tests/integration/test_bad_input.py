"""Every RPC answers bad input with the status codes of services/runtime/errors.py
(INVALID_ARGUMENT, NOT_FOUND, ...), through the sidecars, with a message naming the field."""

import uuid
from collections.abc import Iterator

import grpc
import pytest

from ridesaga.common.v1 import common_pb2
from ridesaga.driver.v1 import driver_pb2, driver_pb2_grpc
from ridesaga.rider.v1 import rider_pb2, rider_pb2_grpc
from ridesaga.trip.v1 import trip_pb2, trip_pb2_grpc
from tests.support import sidecar_channel, status_of

CALL_TIMEOUT = 10.0
SF = common_pb2.LatLng(lat=37.77, lng=-122.42)


@pytest.fixture(scope="module")
def rider() -> Iterator[rider_pb2_grpc.RiderServiceStub]:
    with sidecar_channel("rider") as channel:
        yield rider_pb2_grpc.RiderServiceStub(channel)


@pytest.fixture(scope="module")
def driver() -> Iterator[driver_pb2_grpc.DriverServiceStub]:
    with sidecar_channel("driver") as channel:
        yield driver_pb2_grpc.DriverServiceStub(channel)


def test_create_rider(rider: rider_pb2_grpc.RiderServiceStub) -> None:
    code, message = status_of(lambda: rider.CreateRider(rider_pb2.CreateRiderRequest(name=" "), timeout=CALL_TIMEOUT))
    assert (code, message) == (grpc.StatusCode.INVALID_ARGUMENT, "name: is required")
    created = rider.CreateRider(rider_pb2.CreateRiderRequest(name="Ada"), timeout=CALL_TIMEOUT)
    assert uuid.UUID(created.rider_id) and created.name == "Ada"


def test_get_rider(rider: rider_pb2_grpc.RiderServiceStub) -> None:
    code, message = status_of(lambda: rider.GetRider(rider_pb2.GetRiderRequest(rider_id="42"), timeout=CALL_TIMEOUT))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and message.startswith("rider_id:")
    unknown = str(uuid.uuid4())
    code, message = status_of(lambda: rider.GetRider(rider_pb2.GetRiderRequest(rider_id=unknown), timeout=CALL_TIMEOUT))
    assert code == grpc.StatusCode.NOT_FOUND and unknown in message


def test_register_driver(driver: driver_pb2_grpc.DriverServiceStub) -> None:
    bad = common_pb2.LatLng(lat=123.0, lng=-122.42)
    code, message = status_of(
        lambda: driver.RegisterDriver(
            driver_pb2.RegisterDriverRequest(name="Linus", location=bad), timeout=CALL_TIMEOUT
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and message.startswith("location:")
    code, message = status_of(
        lambda: driver.RegisterDriver(driver_pb2.RegisterDriverRequest(name="", location=SF), timeout=CALL_TIMEOUT)
    )
    assert (code, message) == (grpc.StatusCode.INVALID_ARGUMENT, "name: is required")


def test_heartbeats(driver: driver_pb2_grpc.DriverServiceStub) -> None:
    unknown = str(uuid.uuid4())
    beats = iter([driver_pb2.Heartbeat(driver_id=unknown, location=SF)])
    code, message = status_of(lambda: driver.StreamHeartbeats(beats, timeout=CALL_TIMEOUT))
    assert code == grpc.StatusCode.NOT_FOUND and unknown in message
    beats = iter([driver_pb2.Heartbeat(driver_id="", location=SF)])
    code, message = status_of(lambda: driver.StreamHeartbeats(beats, timeout=CALL_TIMEOUT))
    assert (code, message) == (grpc.StatusCode.INVALID_ARGUMENT, "driver_id: is required")


def test_find_nearby_drivers(driver: driver_pb2_grpc.DriverServiceStub) -> None:
    def find(request: driver_pb2.FindNearbyDriversRequest) -> tuple[grpc.StatusCode, str]:
        return status_of(lambda: driver.FindNearbyDrivers(request, timeout=CALL_TIMEOUT))

    assert find(driver_pb2.FindNearbyDriversRequest(radius_km=1, limit=5)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "location: is required",
    )
    code, message = find(driver_pb2.FindNearbyDriversRequest(location=SF, radius_km=0, limit=5))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and message.startswith("radius_km:")
    code, message = find(driver_pb2.FindNearbyDriversRequest(location=SF, radius_km=5, limit=500))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and message.startswith("limit:")


@pytest.fixture(scope="module")
def trip() -> Iterator[trip_pb2_grpc.TripServiceStub]:
    with sidecar_channel("trip") as channel:
        yield trip_pb2_grpc.TripServiceStub(channel)


def test_create_rider_with_an_unknown_card(rider: rider_pb2_grpc.RiderServiceStub) -> None:
    code, message = status_of(
        lambda: rider.CreateRider(rider_pb2.CreateRiderRequest(name="Ada", payment_method="cash"), timeout=CALL_TIMEOUT)
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and message.startswith("payment_method:")


def test_request_ride(rider: rider_pb2_grpc.RiderServiceStub) -> None:
    someone = rider.CreateRider(rider_pb2.CreateRiderRequest(name="Bad Input"), timeout=CALL_TIMEOUT).rider_id
    far = common_pb2.LatLng(lat=37.80, lng=-122.41)

    def request(**fields: object) -> tuple[grpc.StatusCode, str]:
        base: dict[str, object] = {"rider_id": someone, "pickup": SF, "dropoff": far, "idempotency_key": "k1"}
        base.update(fields)
        req = rider_pb2.RequestRideRequest(**base)  # type: ignore[arg-type]
        return status_of(lambda: rider.RequestRide(req, timeout=CALL_TIMEOUT))

    cases: dict[str, dict[str, object]] = {
        "rider_id": {"rider_id": ""},
        "pickup": {"pickup": None},
        "dropoff": {"dropoff": common_pb2.LatLng(lat=0, lng=999)},
        "idempotency_key": {"idempotency_key": ""},
    }
    for field, change in cases.items():
        code, message = request(**change)
        assert code == grpc.StatusCode.INVALID_ARGUMENT and message.startswith(f"{field}:"), (field, message)
    code, message = request(dropoff=SF)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and message.startswith("dropoff:")
    code, message = request(rider_id=str(uuid.uuid4()))
    assert code == grpc.StatusCode.NOT_FOUND and "rider" in message


def test_ride_reads_and_cancel(rider: rider_pb2_grpc.RiderServiceStub) -> None:
    unknown = str(uuid.uuid4())
    for call in (rider.GetRide, rider.CancelRide):
        code, message = status_of(lambda call=call: call(rider_pb2.RideRef(ride_id="nope"), timeout=CALL_TIMEOUT))  # type: ignore[misc]
        assert code == grpc.StatusCode.INVALID_ARGUMENT and message.startswith("ride_id:")
        code, message = status_of(lambda call=call: call(rider_pb2.RideRef(ride_id=unknown), timeout=CALL_TIMEOUT))  # type: ignore[misc]
        assert code == grpc.StatusCode.NOT_FOUND and unknown in message
    code, message = status_of(lambda: list(rider.WatchRide(rider_pb2.RideRef(ride_id=unknown), timeout=CALL_TIMEOUT)))
    assert code == grpc.StatusCode.NOT_FOUND and unknown in message


def test_trip_start_ride(trip: trip_pb2_grpc.TripServiceStub) -> None:
    good: dict[str, object] = {"ride_id": str(uuid.uuid4()), "rider_id": str(uuid.uuid4()), "pickup": SF, "dropoff": SF}
    changes: dict[str, dict[str, object]] = {
        "ride_id": {"ride_id": "x"},
        "rider_id": {"rider_id": ""},
        "pickup": {"pickup": None},
        "dropoff": {"dropoff": common_pb2.LatLng(lat=-95, lng=0)},
    }
    for field, change in changes.items():
        req = trip_pb2.StartRideRequest(**{**good, **change})  # type: ignore[arg-type]
        code, message = status_of(lambda req=req: trip.StartRide(req, timeout=CALL_TIMEOUT))  # type: ignore[misc]
        assert code == grpc.StatusCode.INVALID_ARGUMENT and message.startswith(f"{field}:"), (field, message)
    unknown = str(uuid.uuid4())
    code, _ = status_of(lambda: trip.CancelRide(trip_pb2.CancelRideRequest(ride_id=unknown), timeout=CALL_TIMEOUT))
    assert code == grpc.StatusCode.NOT_FOUND


def test_trip_reads(trip: trip_pb2_grpc.TripServiceStub) -> None:
    unknown = str(uuid.uuid4())
    calls = {
        "GetRide": lambda ref: trip.GetRide(ref, timeout=CALL_TIMEOUT),
        "WatchRide": lambda ref: list(trip.WatchRide(ref, timeout=CALL_TIMEOUT)),
    }
    for name, call in calls.items():
        code, message = status_of(lambda call=call: call(trip_pb2.GetRideRequest(ride_id="")))  # type: ignore[misc]
        assert (code, message) == (grpc.StatusCode.INVALID_ARGUMENT, "ride_id: is required"), name
        code, message = status_of(lambda call=call: call(trip_pb2.GetRideRequest(ride_id="r-1")))  # type: ignore[misc]
        assert code == grpc.StatusCode.INVALID_ARGUMENT and message.startswith("ride_id:"), (name, message)
        code, message = status_of(lambda call=call: call(trip_pb2.GetRideRequest(ride_id=unknown)))  # type: ignore[misc]
        assert code == grpc.StatusCode.NOT_FOUND and unknown in message, (name, message)


def test_offers_and_trip_completion(driver: driver_pb2_grpc.DriverServiceStub) -> None:
    unknown = str(uuid.uuid4())
    code, message = status_of(
        lambda: list(driver.WatchOffers(driver_pb2.WatchOffersRequest(driver_id=unknown), timeout=CALL_TIMEOUT))
    )
    assert code == grpc.StatusCode.NOT_FOUND and unknown in message
    # Far from San Francisco: a driver without an app must never be offered a test's ride.
    nowhere = common_pb2.LatLng(lat=0.5, lng=0.5)
    someone = driver.RegisterDriver(
        driver_pb2.RegisterDriverRequest(name="Idle", location=nowhere), timeout=CALL_TIMEOUT
    )
    answer = driver_pb2.OfferResponse(ride_id=str(uuid.uuid4()), driver_id=someone.driver_id, fence=0, accept=True)
    code, message = status_of(lambda: driver.RespondToOffer(answer, timeout=CALL_TIMEOUT))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and message.startswith("fence:")
    answer.fence = 42
    code, message = status_of(lambda: driver.RespondToOffer(answer, timeout=CALL_TIMEOUT))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "no reservation" in message
    done = driver_pb2.CompleteTripRequest(ride_id="r", driver_id=someone.driver_id, fence=42)
    code, message = status_of(lambda: driver.CompleteTrip(done, timeout=CALL_TIMEOUT))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and message.startswith("ride_id:")
