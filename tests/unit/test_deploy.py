"""The compose and Kubernetes deployments, validated offline: the committed files are what
the topology renders; the compose file obeys the Compose specification's schema; both
kustomize overlays obey the OpenAPI schema of a pinned Kubernetes version (strictly: an
unknown field fails); every sidecar config of every target passes `envoy --mode
validate`; and local, compose and Kubernetes run the same services on the same ports
with the same settings. The tools come from the bootstrap (deploy/tools.py)."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from deploy import tools
from deploy.compose.render import replica_names
from deploy.envoy.render import sidecar_config
from deploy.local import paths
from services.runtime import config
from services.runtime.topology import (
    COMPOSE,
    DRIVER_CLUSTER,
    KUBERNETES,
    LOCAL,
    MEMBER_HEADER,
    MEMBERS_NAME,
    SERVICES,
    STREAMS,
    ServiceSpec,
    Target,
    membership_environment,
    replica,
    service,
    service_environment,
)

Doc = dict[str, Any]
DEPLOY = paths.REPO / "deploy"
RENDER = paths.REPO / "deploy" / "render.py"
OVERLAYS = ("dev", "ha")


def _tool(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"{path} is missing; run `make bootstrap` (deploy/local/bootstrap.py builds the deploy tools)")
    return path


@pytest.fixture(scope="module")
def compose() -> Doc:
    loaded: Doc = yaml.safe_load((DEPLOY / "compose" / "compose.yaml").read_text())
    return loaded


@pytest.fixture(scope="module")
def overlays() -> dict[str, list[Doc]]:
    """`kustomize build` of each overlay, as the API server would receive it."""
    kustomize = _tool(tools.kustomize_binary())
    built = {}
    for name in OVERLAYS:
        result = subprocess.run(
            [str(kustomize), "build", str(DEPLOY / "k8s" / "overlays" / name)],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        built[name] = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    return built


def _objects(docs: list[Doc], kind: str) -> dict[str, Doc]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


# -- the committed files are the rendered ones ------------------------------------------


def test_committed_manifests_match_the_topology() -> None:
    result = subprocess.run([sys.executable, str(RENDER), "--check"], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_a_hand_edit_and_a_leftover_file_are_detected(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(RENDER), "--root", str(tmp_path)], check=True, capture_output=True)
    edited = tmp_path / "deploy" / "k8s" / "base" / "rider.yaml"
    edited.write_text(edited.read_text().replace("replicas: 1", "replicas: 5"))
    (tmp_path / "deploy" / "compose" / "old.yaml").write_text("services: {}\n")
    result = subprocess.run(
        [sys.executable, str(RENDER), "--check", "--root", str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 1
    assert "stale deploy/k8s/base/rider.yaml" in result.stderr
    assert "not rendered any more: deploy/compose/old.yaml" in result.stderr


# -- schemas ------------------------------------------------------------------------------


def test_the_compose_file_obeys_the_compose_specification(compose: Doc) -> None:
    schema = json.loads(_tool(tools.compose_schema()).read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(compose)]
    assert errors == []


def _strict(definitions: Doc) -> Doc:
    """Kubernetes' OpenAPI definitions as JSON schemas that reject unknown fields, with the
    two string formats that also take numbers (int-or-string, quantities) spelled out."""
    strict = copy.deepcopy(definitions)
    for name, definition in strict.items():
        if name.endswith("intstr.IntOrString"):
            strict[name] = {"oneOf": [{"type": "string"}, {"type": "integer"}]}
        elif name.endswith("resource.Quantity"):
            strict[name] = {"oneOf": [{"type": "string"}, {"type": "number"}]}
        elif "properties" in definition:
            definition["additionalProperties"] = False
    return strict


@pytest.fixture(scope="module")
def kubernetes_schemas() -> dict[tuple[str, str], jsonschema.protocols.Validator]:
    """A validator per (apiVersion, kind) of the pinned Kubernetes version."""
    openapi = json.loads(_tool(tools.kubernetes_openapi()).read_text())
    definitions = _strict(openapi["definitions"])
    validators: dict[tuple[str, str], jsonschema.protocols.Validator] = {}
    for name, definition in openapi["definitions"].items():
        for gvk in definition.get("x-kubernetes-group-version-kind", []):
            api = f"{gvk['group']}/{gvk['version']}" if gvk["group"] else gvk["version"]
            schema = {"$ref": f"#/definitions/{name}", "definitions": definitions}
            validators[(api, gvk["kind"])] = jsonschema.Draft4Validator(schema)
    return validators


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_overlay_obeys_the_pinned_kubernetes_schema(
    overlay: str, overlays: dict[str, list[Doc]], kubernetes_schemas: dict[tuple[str, str], Any]
) -> None:
    errors = []
    for doc in overlays[overlay]:
        validator = kubernetes_schemas.get((doc["apiVersion"], doc["kind"]))
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        if validator is None:
            errors.append(f"{where}: unknown apiVersion/kind {doc['apiVersion']}/{doc['kind']}")
            continue
        errors += [f"{where} {'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]
    assert errors == [], f"Kubernetes {tools.KUBERNETES_VERSION}"


def test_the_strict_schema_rejects_an_unknown_field(
    overlays: dict[str, list[Doc]], kubernetes_schemas: dict[tuple[str, str], Any]
) -> None:
    rider = copy.deepcopy(_objects(overlays["dev"], "StatefulSet")["rider"])
    rider["spec"]["template"]["spec"]["containers"][0]["readOnlyRootFileSystem"] = True  # misspelt
    assert not kubernetes_schemas[("apps/v1", "StatefulSet")].is_valid(rider)


# -- Envoy ----------------------------------------------------------------------------------


def _sidecar_configs(overlays: dict[str, list[Doc]]) -> Iterator[tuple[str, Doc]]:
    """Every sidecar config of every target: local (rendered now), compose (committed) and
    Kubernetes (the ConfigMaps of the built overlay, what the pods mount)."""
    for spec in SERVICES:
        yield f"local/{spec.sidecar}", sidecar_config(spec)
    for path in sorted((DEPLOY / "envoy").glob("*-envoy.yaml")):
        yield f"compose/{path.stem}", yaml.safe_load(path.read_text())
    for name, config_map in _objects(overlays["dev"], "ConfigMap").items():
        sidecar = name.rsplit("-", 1)[0]  # kustomize appends a hash of the contents
        yield f"k8s/{sidecar}", yaml.safe_load(config_map["data"]["envoy.yaml"])


def test_every_sidecar_config_of_every_target_passes_envoy_validate(
    overlays: dict[str, list[Doc]], tmp_path: Path
) -> None:
    envoy = _tool(paths.envoy_binary())
    configs = dict(_sidecar_configs(overlays))
    assert len(configs) == 3 * len(SERVICES)

    def validate(item: tuple[str, Doc]) -> str:
        name, doc = item
        path = tmp_path / f"{name.replace('/', '-')}.json"
        path.write_text(json.dumps(doc))
        result = subprocess.run(
            [str(envoy), "--mode", "validate", "-c", str(path), "--disable-hot-restart", "-l", "error"],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        return "" if result.returncode == 0 else f"{name}: {result.stdout}{result.stderr}"

    with ThreadPoolExecutor(max_workers=4) as pool:
        failures = [line for line in pool.map(validate, configs.items()) if line]
    assert failures == []


# -- local, compose and Kubernetes agree -------------------------------------------------------


def _without_hosts(doc: Any) -> Any:
    """A sidecar config with every address's host and the way names are resolved taken out:
    what must not differ between targets (ports, routes, limits, filters)."""
    if isinstance(doc, dict):
        skip = {"address", "type", "dns_lookup_family"}
        return {k: _without_hosts(v) for k, v in doc.items() if k not in skip}
    if isinstance(doc, list):
        return [_without_hosts(v) for v in doc]
    return doc


def _ports(doc: Any) -> list[int]:
    return [int(p) for p in re.findall(r"'port_value': (\d+)", str(doc))]


def _without_member_routing(doc: Doc) -> Doc:
    """A sidecar config less the driver cluster's replica-to-replica routes, which differ by
    design: static per replica locally, one forward proxy by name (the next test)."""
    doc = copy.deepcopy(doc)
    resources = doc["static_resources"]
    resources["clusters"] = [c for c in resources["clusters"] if not c["name"].startswith("member")]
    for listener in resources["listeners"]:
        manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
        for host in manager["route_config"]["virtual_hosts"]:
            host["routes"] = [r for r in host["routes"] if "headers" not in r["match"]]
        manager["http_filters"] = [f for f in manager["http_filters"] if "dynamic_forward_proxy" not in f["name"]]
    resources["listeners"] = [
        listener
        for listener in resources["listeners"]
        if listener["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]
    ]
    return doc


def test_every_target_runs_the_same_sidecars_on_the_same_ports(overlays: dict[str, list[Doc]]) -> None:
    configs = dict(_sidecar_configs(overlays))
    for spec in SERVICES:
        local = _without_member_routing(configs[f"local/{spec.sidecar}"])
        for target in ("compose", "k8s"):
            other = _without_member_routing(configs[f"{target}/{spec.sidecar}"])
            assert _without_hosts(other) == _without_hosts(local), f"{target}/{spec.sidecar}"
            assert _ports(other) == _ports(local), f"{target}/{spec.sidecar}: ports"


def _member_routes(doc: Doc) -> list[Doc]:
    egress = [listener for listener in doc["static_resources"]["listeners"] if listener["name"] == "egress"]
    manager = egress[0]["filter_chains"][0]["filters"][0]["typed_config"] if egress else {}
    hosts = manager.get("route_config", {}).get("virtual_hosts", [])
    return [r for host in hosts for r in host["routes"] if "headers" in r["match"]]


def test_a_replicas_sidecar_reports_spans_as_its_services_sidecar() -> None:
    # One service, one name in a trace, whichever replica served (the node id says which).
    config = sidecar_config(replica(service("driver"), 2), replicas={"driver": DRIVER_CLUSTER})
    assert config["node"]["id"] == "driver-2-envoy"
    for listener in config["static_resources"]["listeners"]:
        tracing = listener["filter_chains"][0]["filters"][0]["typed_config"]["tracing"]
        assert tracing["provider"]["typed_config"]["service_name"] == "driver-envoy", listener["name"]


def test_a_driver_replica_reaches_each_other_replica_by_the_address_its_call_names(
    overlays: dict[str, list[Doc]],
) -> None:
    configs = dict(_sidecar_configs(overlays))
    driver = service("driver")
    # Locally: an exact match on each other replica's address, to that replica's own cluster.
    local = _member_routes(sidecar_config(driver, replicas={"driver": DRIVER_CLUSTER}))
    wanted = {"127.0.0.1:7103": "member-driver-2", "127.0.0.1:7203": "member-driver-3"}
    assert {r["match"]["headers"][0]["string_match"]["exact"]: r["route"]["cluster"] for r in local} == wanted
    # By name: whatever address the header names, through the forward proxy that dials it.
    for target in ("compose", "k8s"):
        config = configs[f"{target}/{driver.sidecar}"]
        routes = _member_routes(config)
        assert routes and {r["route"]["cluster"] for r in routes} == {"members"}, target
        assert all(r["match"]["headers"] == [{"name": MEMBER_HEADER, "present_match": True}] for r in routes)
        proxy = "envoy.filters.http.dynamic_forward_proxy"
        rewrites = {r["typed_per_filter_config"][proxy]["host_rewrite_header"] for r in routes}
        assert rewrites == {MEMBER_HEADER}, target
        assert len(routes) == 1 + sum(path.startswith(f"/{driver.grpc_service}/") for path in STREAMS)
    assert _member_routes(configs["compose/trip-envoy"]) == [], "only the driver's replicas address each other"


def _compose_environment(compose: Doc, spec: ServiceSpec, name: str = "") -> dict[str, str]:
    environment: dict[str, str] = compose["services"][name or spec.name]["environment"]
    return environment


def _pod_environment(overlays: dict[str, list[Doc]], overlay: str, spec: ServiceSpec) -> dict[str, str]:
    container = _objects(overlays[overlay], "StatefulSet")[spec.name]["spec"]["template"]["spec"]["containers"][0]
    return {item["name"]: item["value"] for item in container["env"] if "value" in item}


def test_every_target_runs_the_same_services(compose: Doc, overlays: dict[str, list[Doc]]) -> None:
    names = {spec.name for spec in SERVICES}
    sidecars = {name for name, svc in compose["services"].items() if "network_mode" in svc}
    replicas = {name for spec in SERVICES for name in replica_names(spec)}
    assert {compose["services"][s]["network_mode"].removeprefix("service:") for s in sidecars} == replicas
    assert replicas - names == {f"driver-{n}" for n in range(2, DRIVER_CLUSTER + 1)}
    for overlay in OVERLAYS:
        workloads = _objects(overlays[overlay], "StatefulSet")
        assert {
            n for n, w in workloads.items() if w["metadata"]["labels"]["app.kubernetes.io/component"] == "service"
        } == names
        services = _objects(overlays[overlay], "Service")
        for spec in SERVICES:
            assert [p["port"] for p in services[spec.name]["spec"]["ports"]] == [spec.ingress_port]


def test_compose_runs_the_driver_cluster_as_replicas_that_find_each_other_by_name(compose: Doc) -> None:
    driver = service("driver")
    names = replica_names(driver)
    assert len(names) == DRIVER_CLUSTER
    for number, name in enumerate(names, start=1):
        app = compose["services"][name]
        environment = app["environment"]
        assert environment["RIDESAGA_MEMBER"] == f"{name}:{driver.ingress_port}"
        assert environment["RIDESAGA_SEEDS"] == f"{MEMBERS_NAME}:{driver.ingress_port}"
        assert environment.get("RIDESAGA_REPLICA", "1") == str(number), "its own Kafka transactional ids"
        aliases = set(app["networks"]["default"]["aliases"])
        assert aliases == {MEMBERS_NAME} | ({"driver"} if name != "driver" else set()), name
        sidecar = compose["services"][f"{name}-envoy"]
        assert sidecar["network_mode"] == f"service:{name}"
        assert sidecar["volumes"][0].startswith(f"../envoy/{driver.sidecar}.yaml:")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kubernetes_driver_pods_join_through_a_service_that_publishes_unready_pods(
    overlay: str, overlays: dict[str, list[Doc]]
) -> None:
    members = _objects(overlays[overlay], "Service")[MEMBERS_NAME]["spec"]
    assert members["publishNotReadyAddresses"] is True and members["clusterIP"] == "None"
    assert members["selector"] == {"app.kubernetes.io/name": "driver"}
    assert members["ports"][0]["protocol"] == "UDP"
    container = _objects(overlays[overlay], "StatefulSet")["driver"]["spec"]["template"]["spec"]["containers"][0]
    order = [item["name"] for item in container["env"]]
    # $(RIDESAGA_POD_IP) expands only from a variable defined before it.
    assert order.index("RIDESAGA_POD_IP") < order.index("RIDESAGA_MEMBER")
    assert {"name": "gossip", "containerPort": 7003, "protocol": "UDP"} in container["ports"]
    budget = _objects(overlays[overlay], "PodDisruptionBudget").get("driver")
    assert budget is None or budget["spec"] == {
        "maxUnavailable": 1,
        "selector": {"matchLabels": {"app.kubernetes.io/name": "driver"}},
    }


def _settings(environment: dict[str, str], name: str, monkeypatch: pytest.MonkeyPatch) -> config.Settings:
    with monkeypatch.context() as patch:
        for key in [k for k in os.environ if k.startswith(("RIDESAGA_", "OTEL_"))]:
            patch.delenv(key)
        for key, value in environment.items():
            patch.setenv(key, value)
        return config.load(name)


@pytest.mark.parametrize("spec", SERVICES, ids=lambda s: s.name)
def test_every_target_gives_a_service_the_same_settings(
    spec: ServiceSpec, compose: Doc, overlays: dict[str, list[Doc]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A driver replica is also told its member address: its container's name in compose,
    # its pod's IP in Kubernetes.
    in_compose = _compose_environment(compose, spec)
    compose_member = membership_environment(spec, spec.name) if spec.name == "driver" else {}
    pod_member = membership_environment(spec, "$(RIDESAGA_POD_IP)") if spec.name == "driver" else {}
    assert in_compose == {**service_environment(spec, COMPOSE), "PYTHONUNBUFFERED": "1", **compose_member}
    for overlay in OVERLAYS:
        in_pod = _pod_environment(overlays, overlay, spec)
        assert in_pod == {**service_environment(spec, KUBERNETES), "PYTHONUNBUFFERED": "1", **pod_member}
        same = {**in_pod, "RIDESAGA_ENVIRONMENT": "compose", **compose_member}
        assert same == in_compose, "only the environment's name and the member's address differ"
    local = _settings({}, spec.name, monkeypatch)
    assert _settings(service_environment(spec, LOCAL), spec.name, monkeypatch) == local
    for target in (COMPOSE, KUBERNETES):
        found = _settings(service_environment(spec, target), spec.name, monkeypatch)
        assert (found.host, found.app_port, found.egress_target) == (local.host, local.app_port, local.egress_target)
        assert found.kafka_bootstrap == _address(target, "kafka", target.infra.kafka)
        assert (found.postgres_host, found.postgres_port) == ("postgres", target.infra.postgres)


def _address(target: Target, component: str, port: int) -> str:
    return f"{target.host(component)}:{port}"


# -- what every service pod carries ----------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_service_pod_has_its_sidecar_probes_security_and_resources(
    overlay: str, overlays: dict[str, list[Doc]]
) -> None:
    workloads = _objects(overlays[overlay], "StatefulSet")
    replicas = {"dev": 1, "ha": 2}[overlay]
    for spec in SERVICES:
        workload = workloads[spec.name]
        pod = workload["spec"]["template"]["spec"]
        assert workload["spec"]["replicas"] == (DRIVER_CLUSTER if spec.name == "driver" else replicas)
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert [c["name"] for c in pod["containers"]] == [spec.name, "envoy"], "the service and its sidecar"
        for container in pod["containers"]:
            where = f"{overlay}/{spec.name}/{container['name']}"
            assert {"readinessProbe", "livenessProbe"} <= set(container), where
            security = container["securityContext"]
            assert security["runAsNonRoot"] is True and security["runAsUser"] != 0, where
            assert security["readOnlyRootFilesystem"] is True, where
            assert security["allowPrivilegeEscalation"] is False, where
            assert security["capabilities"]["drop"] == ["ALL"], where
            for kind in ("requests", "limits"):
                assert set(container["resources"][kind]) == {"cpu", "memory"}, where
        mounted = {v["configMap"]["name"] for v in pod["volumes"] if "configMap" in v}
        assert mounted <= set(_objects(overlays[overlay], "ConfigMap")), "the sidecar's config exists"
        app, sidecar = pod["containers"]
        assert app["readinessProbe"]["exec"]["command"] == ["ridesaga", "health", str(spec.app_port), spec.grpc_service]
        assert sidecar["readinessProbe"]["grpc"] == {"port": spec.ingress_port, "service": spec.grpc_service}


def test_the_ha_overlay_keeps_quorums_and_budgets(overlays: dict[str, list[Doc]]) -> None:
    workloads = _objects(overlays["ha"], "StatefulSet")
    assert workloads["kafka"]["spec"]["replicas"] == 3
    assert workloads["zookeeper"]["spec"]["replicas"] == 3
    budgets = _objects(overlays["ha"], "PodDisruptionBudget")
    assert set(budgets) == {spec.name for spec in SERVICES} | {"kafka", "zookeeper"}
    kafka_env = {
        e["name"]: e.get("value") for e in workloads["kafka"]["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert kafka_env["KAFKA_CONTROLLER_QUORUM_VOTERS"].count("@") == 3
    assert kafka_env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == "2"
    assert _objects(overlays["dev"], "PodDisruptionBudget") == {}


def test_the_image_entrypoint_runs_every_process_the_manifests_ask_for(
    compose: Doc, overlays: dict[str, list[Doc]]
) -> None:
    script = (DEPLOY / "docker" / "entrypoint.sh").read_text()
    known = {name for line in re.findall(r"^  ([a-z|]+)\)", script, re.M) for name in line.split("|")}
    asked = {svc["command"][0] for svc in compose["services"].values() if svc.get("image", "").startswith("ridesaga/")}
    for docs in overlays.values():
        for doc in docs:
            pod = doc.get("spec", {}).get("template", {}).get("spec", {})
            for container in pod.get("containers", []):
                if container["image"].startswith("ridesaga/"):
                    asked.add(container["args"][0])
                    probe = container.get("readinessProbe", {}).get("exec", {}).get("command", [])
                    asked.update(probe[1:2])
    assert asked <= known, asked - known


def test_the_compose_kraft_quorum_override_makes_three_voters_and_a_broker_only_kafka() -> None:
    base = yaml.safe_load((paths.REPO / "deploy/compose/compose.yaml").read_text())["services"]
    override = yaml.safe_load((paths.REPO / "deploy/compose/compose.kraft-quorum.yaml").read_text())["services"]
    voters = "1@kafka-controller-1:9093,2@kafka-controller-2:9093,3@kafka-controller-3:9093"
    controllers = [override[f"kafka-controller-{i}"]["environment"] for i in (1, 2, 3)]
    assert [(c["KAFKA_NODE_ID"], c["KAFKA_PROCESS_ROLES"]) for c in controllers] == [
        ("1", "controller"),
        ("2", "controller"),
        ("3", "controller"),
    ]
    # compose merges an override's environment into the base service's, key by key.
    broker = {**base["kafka"]["environment"], **override["kafka"]["environment"]}
    assert broker["KAFKA_PROCESS_ROLES"] == "broker" and broker["KAFKA_NODE_ID"] == "4"
    assert {c["KAFKA_CONTROLLER_QUORUM_VOTERS"] for c in controllers} == {broker["KAFKA_CONTROLLER_QUORUM_VOTERS"]}
    assert broker["KAFKA_CONTROLLER_QUORUM_VOTERS"] == voters
    assert "CONTROLLER" not in broker["KAFKA_LISTENERS"] and broker["CLUSTER_ID"] == controllers[0]["CLUSTER_ID"]
