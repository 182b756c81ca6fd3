"""The simulated fleet streams heartbeats, so its drivers are found near San Francisco."""

from ridesaga.common.v1 import common_pb2
from ridesaga.driver.v1 import driver_pb2, driver_pb2_grpc
from tests.support import sidecar_channel, wait_for

DOWNTOWN = common_pb2.LatLng(lat=37.7749, lng=-122.4194)


def test_fleet_drivers_are_available_nearest_first() -> None:
    with sidecar_channel("driver") as channel:
        stub = driver_pb2_grpc.DriverServiceStub(channel)

        def nearby() -> list[driver_pb2.NearbyDriver]:
            request = driver_pb2.FindNearbyDriversRequest(location=DOWNTOWN, radius_km=20, limit=50)
            return list(stub.FindNearbyDrivers(request, timeout=10).drivers)

        found = wait_for(lambda: nearby() if len(nearby()) >= 10 else None, 60, "ten fleet drivers near downtown")
    distances = [d.distance_km for d in found]
    assert distances == sorted(distances)
    assert len({d.driver_id for d in found}) == len(found)
