"""The driver sidecar of compose and Kubernetes, run by the real Envoy without the stack:
a replica-to-replica call goes to whichever address its MEMBER_HEADER names (the dynamic
forward proxy dials it), not to a balanced pick, and a call naming no member has no
route. Two stand-in replicas are gRPC servers on 127.0.0.1; ports 24201-24299 are this
file's alone."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from deploy.envoy.render import sidecar_config
from deploy.local import paths
from ridesaga.driver.v1 import driver_pb2, driver_pb2_grpc
from services.runtime.topology import KUBERNETES, MEMBER_HEADER, service
from tests.support import wait_for

INGRESS, EGRESS, ADMIN, APP = 24201, 24202, 24203, 24204
REPLICAS = (24211, 24212)  # the other replicas' sidecars, as far as the caller can tell


def answering(name: str) -> grpc.GenericRpcHandler:
    """FindNearbyDrivers that says which replica answered, in the one driver it finds."""

    def find(request: driver_pb2.FindNearbyDriversRequest, context: Any) -> driver_pb2.FindNearbyDriversReply:
        return driver_pb2.FindNearbyDriversReply(drivers=[driver_pb2.NearbyDriver(driver_id=name)])

    method = grpc.unary_unary_rpc_method_handler(
        find,
        request_deserializer=driver_pb2.FindNearbyDriversRequest.FromString,
        response_serializer=driver_pb2.FindNearbyDriversReply.SerializeToString,
    )
    return grpc.method_handlers_generic_handler(service("driver").grpc_service, {"FindNearbyDrivers": method})


def _on_loopback(config: dict[str, Any]) -> dict[str, Any]:
    """The by-name config with its listeners and its app moved to this file's ports."""
    listeners = {listener["name"]: listener for listener in config["static_resources"]["listeners"]}
    listeners["ingress"]["address"]["socket_address"].update(address="127.0.0.1", port_value=INGRESS)
    listeners["egress"]["address"]["socket_address"]["port_value"] = EGRESS
    config["admin"]["address"]["socket_address"]["port_value"] = ADMIN
    for cluster in config["static_resources"]["clusters"]:
        if cluster["name"] == "local_app":
            endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
            endpoint["address"]["socket_address"]["port_value"] = APP
    return config


@pytest.fixture
def sidecar(tmp_path: Path) -> Iterator[driver_pb2_grpc.DriverServiceStub]:
    servers = []
    for port in REPLICAS:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        server.add_generic_rpc_handlers((answering(f"replica-{port}"),))
        server.add_insecure_port(f"127.0.0.1:{port}")
        server.start()
        servers.append(server)
    path = tmp_path / "driver-envoy.json"
    path.write_text(json.dumps(_on_loopback(sidecar_config(service("driver"), target=KUBERNETES))))
    log = (tmp_path / "envoy.log").open("w")
    envoy = subprocess.Popen(
        [str(paths.envoy_binary()), "-c", str(path), "--disable-hot-restart", "--base-id", "24201", "-l", "warn"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )

    def live() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{ADMIN}/ready", timeout=1) as answer:
                return bool(answer.status == 200)
        except OSError:
            assert envoy.poll() is None, (tmp_path / "envoy.log").read_text()
            return False

    try:
        wait_for(live, 30, "the sidecar to be ready")
        with grpc.insecure_channel(f"127.0.0.1:{EGRESS}") as channel:
            yield driver_pb2_grpc.DriverServiceStub(channel)
    finally:
        envoy.terminate()
        envoy.wait(timeout=30)
        log.close()
        for server in servers:
            server.stop(grace=None)


def _answered_by(stub: driver_pb2_grpc.DriverServiceStub, member: str) -> str:
    reply = stub.FindNearbyDrivers(
        driver_pb2.FindNearbyDriversRequest(), metadata=((MEMBER_HEADER, member),), timeout=5
    )
    return str(reply.drivers[0].driver_id)


def test_a_call_goes_to_the_replica_its_member_header_names(sidecar: driver_pb2_grpc.DriverServiceStub) -> None:
    first, second = REPLICAS
    for _ in range(3):  # every time, not by luck of a balancer
        assert _answered_by(sidecar, f"127.0.0.1:{first}") == f"replica-{first}"
        assert _answered_by(sidecar, f"127.0.0.1:{second}") == f"replica-{second}"


def test_a_call_naming_no_member_has_no_route(sidecar: driver_pb2_grpc.DriverServiceStub) -> None:
    with pytest.raises(grpc.RpcError) as error:
        sidecar.FindNearbyDrivers(driver_pb2.FindNearbyDriversRequest(), timeout=5)
    assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED  # Envoy's 404: no route matched
