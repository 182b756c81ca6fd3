from pathlib import Path

from deploy.envoy.render import sidecar_config
from deploy.local import components, supervisor
from deploy.local.stack import Stack
from services.runtime.topology import SERVICES, service


def test_every_component_restarts_when_it_dies(tmp_path: Path) -> None:
    everything = components.all_components(tmp_path, Stack())
    conf = supervisor.render(everything, tmp_path)
    for component in everything:
        section = conf.split(f"[program:{component.name}]\n", 1)[1].split("\n\n", 1)[0]
        assert "autorestart=true" in section
        assert "killasgroup=true" in section


def test_status_covers_infra_and_each_service_with_its_sidecar(tmp_path: Path) -> None:
    names = {c.name for c in components.all_components(tmp_path, Stack())}
    assert {"kafka", "zookeeper", "postgres", "redis", "jaeger"} <= names
    for spec in SERVICES:
        assert {spec.name, f"{spec.name}-envoy"} <= names


def _manager(config: dict, listener: str) -> dict | None:  # type: ignore[type-arg]
    for entry in config["static_resources"]["listeners"]:
        if entry["name"] == listener:
            manager: dict = entry["filter_chains"][0]["filters"][0]["typed_config"]  # type: ignore[type-arg]
            return manager
    return None


def _route_list(config: dict, listener: str) -> list[dict]:  # type: ignore[type-arg]
    manager = _manager(config, listener)
    return [] if manager is None else list(manager["route_config"]["virtual_hosts"][0]["routes"])


def _routes(config: dict, listener: str) -> dict[str, str]:  # type: ignore[type-arg]
    """Unary routes: prefix -> cluster."""
    return {
        r["match"]["prefix"]: r["route"]["cluster"] for r in _route_list(config, listener) if "prefix" in r["match"]
    }


def test_egress_routes_each_callee_by_grpc_service_name() -> None:
    routes = _routes(sidecar_config(service("trip")), "egress")
    assert routes == {
        "/ridesaga.driver.v1.DriverService/": "driver",
        "/ridesaga.payment.v1.PaymentService/": "payment",
    }


def test_a_leaf_service_has_no_egress_and_ingress_reaches_the_app() -> None:
    config = sidecar_config(service("psp"))
    assert _routes(config, "egress") == {}
    assert _routes(config, "ingress") == {"/": "local_app"}
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    endpoint = clusters["local_app"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint["address"]["socket_address"]["port_value"] == service("psp").app_port


def test_streams_have_no_timeout_and_no_retries_while_unary_egress_calls_have_both() -> None:
    routes = _route_list(sidecar_config(service("trip")), "egress")
    streams = [r for r in routes if "path" in r["match"]]
    assert {r["match"]["path"] for r in streams} == {
        "/ridesaga.driver.v1.DriverService/StreamHeartbeats",
        "/ridesaga.driver.v1.DriverService/WatchOffers",
    }
    assert all(r["route"]["timeout"] == "0s" and "retry_policy" not in r["route"] for r in streams)
    unary = [r for r in routes if "prefix" in r["match"]]
    assert all(r["route"]["timeout"] == "10s" and r["route"]["retry_policy"]["num_retries"] == 2 for r in unary)
    ingress = _route_list(sidecar_config(service("trip")), "ingress")
    assert all("retry_policy" not in r["route"] for r in ingress)  # only the caller's side retries


def test_upstream_clusters_have_a_bulkhead_a_retry_budget_and_outlier_detection() -> None:
    clusters = {c["name"]: c for c in sidecar_config(service("payment"))["static_resources"]["clusters"]}
    psp = clusters["psp"]
    limits = psp["circuit_breakers"]["thresholds"][0]
    assert limits["max_requests"] == 1024 and limits["retry_budget"]["budget_percent"]["value"] == 20.0
    assert psp["outlier_detection"]["consecutive_gateway_failure"] == 3
    assert "circuit_breakers" not in clusters["local_app"]


def test_every_ingress_can_inject_faults_and_only_the_rider_edge_is_rate_limited() -> None:
    for spec in SERVICES:
        manager = _manager(sidecar_config(spec), "ingress")
        assert manager is not None
        names = [f["name"] for f in manager["http_filters"]]
        assert names[0] == "envoy.filters.http.fault" and names[-1] == "envoy.filters.http.router"
        assert ("envoy.filters.http.local_ratelimit" in names) == (spec.name == "rider")


def test_a_replicated_callee_is_one_cluster_with_an_endpoint_per_replica() -> None:
    from deploy.envoy.render import all_sidecar_configs

    configs = all_sidecar_configs(1.0, {"payment": 2})
    assert "payment-2-envoy" in configs
    clusters = {c["name"]: c for c in configs["trip-envoy"]["static_resources"]["clusters"]}
    endpoints = clusters["payment"]["load_assignment"]["endpoints"][0]["lb_endpoints"]
    ports = [e["endpoint"]["address"]["socket_address"]["port_value"] for e in endpoints]
    assert ports == [service("payment").ingress_port, service("payment").ingress_port + 100]


def test_a_driver_replica_reaches_each_peer_by_address_through_its_egress() -> None:
    from deploy.envoy.render import all_sidecar_configs

    configs = all_sidecar_configs(1.0, {"driver": 3})
    routes = _route_list(configs["driver-2-envoy"], "egress")
    targets = {
        (r["match"].get("prefix") or r["match"]["path"], r["match"]["headers"][0]["string_match"]["exact"]): r["route"][
            "cluster"
        ]
        for r in routes
    }
    assert targets[("/ridesaga.driver.v1.DriverService/", "127.0.0.1:7003")] == "member-driver"
    assert targets[("/ridesaga.driver.v1.DriverService/WatchOffers", "127.0.0.1:7203")] == "member-driver-3"
    assert not any(member == "127.0.0.1:7103" for _, member in targets)  # never itself
    clusters = {c["name"]: c for c in configs["driver-2-envoy"]["static_resources"]["clusters"]}
    endpoint = clusters["member-driver-3"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint["address"]["socket_address"]["port_value"] == 7203
    assert _manager(all_sidecar_configs(1.0)["driver-envoy"], "egress") is None  # a cluster of one forwards nothing
