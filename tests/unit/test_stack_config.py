from pathlib import Path

from ridectl.stack import components, supervisor
from ridectl.stack.envoy import sidecar_config
from services.shared.topology import SERVICES, service


def test_every_component_restarts_when_it_dies(tmp_path: Path) -> None:
    everything = components.all_components(tmp_path)
    conf = supervisor.render(everything, tmp_path)
    for component in everything:
        section = conf.split(f"[program:{component.name}]\n", 1)[1].split("\n\n", 1)[0]
        assert "autorestart=true" in section
        assert "killasgroup=true" in section


def test_status_covers_infra_and_each_service_with_its_sidecar(tmp_path: Path) -> None:
    names = {c.name for c in components.all_components(tmp_path)}
    assert {"kafka", "zookeeper", "postgres", "redis", "jaeger"} <= names
    for spec in SERVICES:
        assert {spec.name, f"{spec.name}-envoy"} <= names


def _routes(config: dict, listener: str) -> dict[str, str]:  # type: ignore[type-arg]
    for entry in config["static_resources"]["listeners"]:
        if entry["name"] == listener:
            manager = entry["filter_chains"][0]["filters"][0]["typed_config"]
            routes = manager["route_config"]["virtual_hosts"][0]["routes"]
            return {r["match"]["prefix"]: r["route"]["cluster"] for r in routes}
    return {}


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
