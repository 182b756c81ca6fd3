"""Every RPC answers bad input with the status codes of SPEC section 9, through the
sidecars, with a message naming the field."""

import uuid
from collections.abc import Callable, Iterator

import grpc
import pytest

from ridesaga.common.v1 import common_pb2
from ridesaga.driver.v1 import driver_pb2, driver_pb2_grpc
from ridesaga.rider.v1 import rider_pb2, rider_pb2_grpc
from tests.support import sidecar_channel

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


def _status_of(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as error:
        call()
    return error.value.code(), error.value.details() or ""


def test_create_rider(rider: rider_pb2_grpc.RiderServiceStub) -> None:
    code, message = _status_of(lambda: rider.CreateRider(rider_pb2.CreateRiderRequest(name=" "), timeout=CALL_TIMEOUT))
    assert (code, message) == (grpc.StatusCode.INVALID_ARGUMENT, "name: is required")
    created = rider.CreateRider(rider_pb2.CreateRiderRequest(name="Ada"), timeout=CALL_TIMEOUT)
    assert uuid.UUID(created.rider_id) and created.name == "Ada"


def test_get_rider(rider: rider_pb2_grpc.RiderServiceStub) -> None:
    code, message = _status_of(lambda: rider.GetRider(rider_pb2.GetRiderRequest(rider_id="42"), timeout=CALL_TIMEOUT))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and message.startswith("rider_id:")
    unknown = str(uuid.uuid4())
    code, message = _status_of(
        lambda: rider.GetRider(rider_pb2.GetRiderRequest(rider_id=unknown), timeout=CALL_TIMEOUT)
    )
    assert code == grpc.StatusCode.NOT_FOUND and unknown in message


def test_register_driver(driver: driver_pb2_grpc.DriverServiceStub) -> None:
    bad = common_pb2.LatLng(lat=123.0, lng=-122.42)
    code, message = _status_of(
        lambda: driver.RegisterDriver(
            driver_pb2.RegisterDriverRequest(name="Linus", location=bad), timeout=CALL_TIMEOUT
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and message.startswith("location:")
    code, message = _status_of(
        lambda: driver.RegisterDriver(driver_pb2.RegisterDriverRequest(name="", location=SF), timeout=CALL_TIMEOUT)
    )
    assert (code, message) == (grpc.StatusCode.INVALID_ARGUMENT, "name: is required")


def test_heartbeats(driver: driver_pb2_grpc.DriverServiceStub) -> None:
    unknown = str(uuid.uuid4())
    beats = iter([driver_pb2.Heartbeat(driver_id=unknown, location=SF)])
    code, message = _status_of(lambda: driver.StreamHeartbeats(beats, timeout=CALL_TIMEOUT))
    assert code == grpc.StatusCode.NOT_FOUND and unknown in message
    beats = iter([driver_pb2.Heartbeat(driver_id="", location=SF)])
    code, message = _status_of(lambda: driver.StreamHeartbeats(beats, timeout=CALL_TIMEOUT))
    assert (code, message) == (grpc.StatusCode.INVALID_ARGUMENT, "driver_id: is required")


def test_find_nearby_drivers(driver: driver_pb2_grpc.DriverServiceStub) -> None:
    def find(request: driver_pb2.FindNearbyDriversRequest) -> tuple[grpc.StatusCode, str]:
        return _status_of(lambda: driver.FindNearbyDrivers(request, timeout=CALL_TIMEOUT))

    assert find(driver_pb2.FindNearbyDriversRequest(radius_km=1, limit=5)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "location: is required",
    )
    code, message = find(driver_pb2.FindNearbyDriversRequest(location=SF, radius_km=0, limit=5))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and message.startswith("radius_km:")
    code, message = find(driver_pb2.FindNearbyDriversRequest(location=SF, radius_km=5, limit=500))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and message.startswith("limit:")
