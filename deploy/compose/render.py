"""The docker compose deployment: every service with its Envoy sidecar in the service's
network namespace (`network_mode: service:NAME`, as in a Kubernetes pod), the
infrastructure from upstream images, one-shot jobs for topics and migrations, and a
start order enforced by health checks."""

from __future__ import annotations

from deploy import common
from deploy.common import Doc
from services.runtime.topology import (
    COMPOSE,
    DRIVER_CLUSTER,
    INFRA,
    MEMBERS_NAME,
    SERVICES,
    SWEEPERS,
    ServiceSpec,
    membership_environment,
    service,
)

TARGET = COMPOSE
PORTS = TARGET.infra
# On the host's loopback, at the local stack's ports, so the same `ridectl` works against
# compose: it calls the edge (rider), and `ridectl check` reads the databases and the
# psp's own records.
PUBLISHED = ("rider", "psp")
HEALTH = {"interval": "5s", "timeout": "5s", "retries": 30, "start_period": "10s"}
# What an app container may do: nothing as root, nothing written outside /tmp.
HARDENED: Doc = {
    "read_only": True,
    "tmpfs": ["/tmp"],
    "cap_drop": ["ALL"],
    "security_opt": ["no-new-privileges:true"],
}


def _healthy(*names: str) -> Doc:
    return {name: {"condition": "service_healthy"} for name in names}


def _app(command: list[str], environment: dict[str, str], depends_on: Doc) -> Doc:
    """A process of the ridesaga image, which the migrate job builds (before any container
    starts, as compose builds first); the others never pull it."""
    return {
        "image": common.APP_IMAGE,
        "pull_policy": "never",
        "command": command,
        "environment": environment,
        **HARDENED,
        "depends_on": depends_on,
        "restart": "unless-stopped",
    }


def _infra() -> dict[str, Doc]:
    kafka_env = {
        "KAFKA_NODE_ID": "1",
        **common.kafka_common(),
        "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://kafka:{PORTS.kafka}",
        "KAFKA_CONTROLLER_QUORUM_VOTERS": f"1@kafka:{PORTS.kafka_controller}",
        **common.kafka_settings(brokers=1),
    }
    return {
        "zookeeper": {
            "image": common.ZOOKEEPER_IMAGE,
            "environment": {"ZOO_ADMINSERVER_ENABLED": "false", "ZOO_4LW_COMMANDS_WHITELIST": "srvr,ruok,mntr"},
            "healthcheck": {"test": ["CMD", "zkServer.sh", "status"], **HEALTH},
            "restart": "unless-stopped",
        },
        "kafka": {
            "image": common.KAFKA_IMAGE,
            "environment": kafka_env,
            "volumes": ["kafka-data:/var/lib/kafka/data"],
            "healthcheck": {
                "test": [
                    "CMD-SHELL",
                    f"/opt/kafka/bin/kafka-broker-api-versions.sh --bootstrap-server localhost:{PORTS.kafka}"
                    " > /dev/null",
                ],
                **HEALTH,
            },
            "restart": "unless-stopped",
        },
        "postgres": {
            "image": common.POSTGRES_IMAGE,
            # Trust inside the compose network only: a learning setup, never exposed.
            "environment": {"POSTGRES_HOST_AUTH_METHOD": "trust"},
            "command": ["postgres", "-c", "max_connections=200", "-c", "shared_buffers=64MB"],
            "volumes": ["postgres-data:/var/lib/postgresql/data"],
            "ports": [f"127.0.0.1:{INFRA.postgres}:{PORTS.postgres}"],
            "healthcheck": {"test": ["CMD", "pg_isready", "-U", "postgres"], **HEALTH},
            "restart": "unless-stopped",
        },
        "redis": {
            "image": common.REDIS_IMAGE,
            # appendfsync always: fencing tokens never go backwards after a crash.
            "command": ["redis-server", "--appendonly", "yes", "--appendfsync", "always", "--save", ""],
            "volumes": ["redis-data:/data"],
            "healthcheck": {"test": ["CMD", "redis-cli", "ping"], **HEALTH},
            "restart": "unless-stopped",
        },
        "jaeger": {
            "image": common.JAEGER_IMAGE,
            # The UI and query API on the host, as the local stack serves them.
            "ports": [f"127.0.0.1:{INFRA.jaeger_query}:{PORTS.jaeger_query}"],
            "restart": "unless-stopped",
        },
    }


def _jobs() -> dict[str, Doc]:
    return {
        "topics": {
            "image": common.KAFKA_IMAGE,
            "entrypoint": ["sh", "-c"],
            "command": [common.create_topics_script(f"kafka:{PORTS.kafka}", replication=1)],
            "depends_on": _healthy("kafka"),
            "restart": "no",
        },
        "migrate": {
            **_app(["migrate"], common.app_environment(service("trip"), TARGET), _healthy("postgres")),
            "pull_policy": "build",
            "build": {"context": "../..", "dockerfile": "deploy/docker/Dockerfile"},
            "restart": "no",
        },
    }


def replica_names(spec: ServiceSpec) -> list[str]:
    """The containers of a service: the driver cluster's DRIVER_CLUSTER (driver, driver-2,
    ...), one of every other."""
    count = DRIVER_CLUSTER if spec.name == "driver" else 1
    return [spec.name, *(f"{spec.name}-{n}" for n in range(2, count + 1))]


def _service(spec: ServiceSpec) -> dict[str, Doc]:
    found: dict[str, Doc] = {}
    for number, name in enumerate(replica_names(spec), start=1):
        found.update(_replica(spec, name, number))
    return found


def _replica(spec: ServiceSpec, name: str, number: int) -> dict[str, Doc]:
    """A service container and its sidecar. A driver replica is a member named by its
    container (resolved to its IP when it starts) and answers to the service's name too,
    so callers' sidecars balance over every replica, and to MEMBERS_NAME, its seeds."""
    ready = {
        **_healthy("kafka", "postgres", "redis", "zookeeper"),
        "jaeger": {"condition": "service_started"},
        "topics": {"condition": "service_completed_successfully"},
        "migrate": {"condition": "service_completed_successfully"},
    }
    environment = common.app_environment(spec, TARGET)
    if spec.name == "driver":
        environment.update(membership_environment(spec, name))
        if number > 1:
            environment["RIDESAGA_REPLICA"] = str(number)  # its own Kafka transactional ids
    app = _app([spec.name], environment, ready)
    if spec.name == "driver":
        aliases = [MEMBERS_NAME, *([spec.name] if name != spec.name else [])]
        app["networks"] = {"default": {"aliases": aliases}}
    app["healthcheck"] = {"test": ["CMD", "ridesaga", "health", str(spec.app_port), spec.grpc_service], **HEALTH}
    if spec.name in PUBLISHED:
        app["ports"] = [f"127.0.0.1:{spec.ingress_port}:{spec.ingress_port}"]
    sidecar: Doc = {
        "image": common.ENVOY_IMAGE,
        "network_mode": f"service:{name}",
        "user": str(common.ENVOY_UID),
        "command": ["envoy", "-c", common.ENVOY_CONFIG, "--disable-hot-restart", "--concurrency", "1", "-l", "warn"],
        "volumes": [f"../envoy/{spec.sidecar}.yaml:{common.ENVOY_CONFIG}:ro"],
        **HARDENED,
        "depends_on": _healthy(name),
        "restart": "unless-stopped",
    }
    return {name: app, f"{name}-envoy": sidecar}


def _simulators() -> dict[str, Doc]:
    trip = common.app_environment(service("trip"), TARGET)
    sidecars = {f"{name}-envoy": {"condition": "service_started"} for spec in SERVICES for name in replica_names(spec)}
    found: dict[str, Doc] = {
        name: _app(["sweeper"], {**trip, "RIDESAGA_SWEEPER_ID": name}, _healthy("trip")) for name in SWEEPERS
    }
    driver = service("driver")
    found["fleet"] = _app(
        ["fleet"],
        {
            "PYTHONUNBUFFERED": "1",
            "RIDESAGA_DRIVER_TARGET": f"driver:{driver.ingress_port}",
            "RIDESAGA_FLEET_SIZE": "30",
            "RIDESAGA_FLEET_STATE": common.FLEET_STATE,
        },
        sidecars,
    )
    found["locust"] = {
        **_app(["locust"], common.load_environment(TARGET), sidecars),
        "ports": [f"127.0.0.1:{common.LOCUST_PORT}:{common.LOCUST_PORT}"],
    }
    return found


KRAFT_VOTERS = 3


def _kraft_quorum() -> Doc:
    """An override (`docker compose -f compose.yaml -f compose.kraft-quorum.yaml`, what
    `make compose-up KAFKA_CONTROLLERS=3` runs): three controller-only KRaft voters and the
    broker beside them, as the local stack's KAFKA_CONTROLLERS=3 runs them
    (deploy/local/files.py kafka_nodes)."""
    voters = ",".join(f"{i}@kafka-controller-{i}:{PORTS.kafka_controller}" for i in range(1, KRAFT_VOTERS + 1))
    shared = {key: value for key, value in common.kafka_common().items() if key != "KAFKA_INTER_BROKER_LISTENER_NAME"}
    services: dict[str, Doc] = {
        f"kafka-controller-{i}": {
            "image": common.KAFKA_IMAGE,
            "environment": {
                **shared,
                "KAFKA_NODE_ID": str(i),
                "KAFKA_PROCESS_ROLES": "controller",
                "KAFKA_LISTENERS": f"CONTROLLER://:{PORTS.kafka_controller}",
                "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "CONTROLLER:PLAINTEXT",
                "KAFKA_CONTROLLER_QUORUM_VOTERS": voters,
            },
            "volumes": [f"kafka-controller-{i}-data:/var/lib/kafka/data"],
            "healthcheck": {"test": ["CMD", "bash", "-c", f"< /dev/tcp/localhost/{PORTS.kafka_controller}"], **HEALTH},
            "restart": "unless-stopped",
        }
        for i in range(1, KRAFT_VOTERS + 1)
    }
    services["kafka"] = {
        "environment": {
            "KAFKA_NODE_ID": str(KRAFT_VOTERS + 1),
            "KAFKA_PROCESS_ROLES": "broker",
            "KAFKA_LISTENERS": f"PLAINTEXT://:{PORTS.kafka}",
            "KAFKA_CONTROLLER_QUORUM_VOTERS": voters,
        },
        "depends_on": _healthy(*(f"kafka-controller-{i}" for i in range(1, KRAFT_VOTERS + 1))),
    }
    return {
        "services": services,
        "volumes": {f"kafka-controller-{i}-data": {} for i in range(1, KRAFT_VOTERS + 1)},
    }


def render() -> dict[str, str]:
    """Files under deploy/compose/, by relative path."""
    services: dict[str, Doc] = {**_infra(), **_jobs()}
    for spec in SERVICES:
        services.update(_service(spec))
    services.update(_simulators())
    compose = {
        "name": "ridesaga",
        "services": services,
        "volumes": {"kafka-data": {}, "postgres-data": {}, "redis-data": {}},
    }
    return {"compose.yaml": common.dump(compose), "compose.kraft-quorum.yaml": common.dump(_kraft_quorum())}
