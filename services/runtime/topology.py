"""The one declarative description of the system: which components exist, on which
loopback ports, and which service calls which. Sidecar configs, the supervisor config,
health checks and `ridectl status` are all generated from this module."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum


@dataclass(frozen=True)
class ServiceSpec:
    """A gRPC service and its Envoy sidecar.

    `app_port` is where the Python server listens (loopback only, reached by its own
    sidecar); `ingress_port` is the sidecar's public listener, the only address other
    parties use; `egress_port` is the sidecar's outbound listener that the service
    sends every call to; `admin_port` is the sidecar's Envoy admin interface."""

    name: str
    grpc_service: str
    app_port: int
    ingress_port: int
    egress_port: int
    admin_port: int
    calls: tuple[str, ...]
    database: str | None

    @property
    def sidecar(self) -> str:
        return f"{self.name}-envoy"


SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec("rider", "ridesaga.rider.v1.RiderService", 17001, 7001, 27001, 19901, ("trip",), "rider"),
    ServiceSpec("trip", "ridesaga.trip.v1.TripService", 17002, 7002, 27002, 19902, ("driver", "payment"), "trip"),
    ServiceSpec("driver", "ridesaga.driver.v1.DriverService", 17003, 7003, 27003, 19903, (), "driver"),
    ServiceSpec("payment", "ridesaga.payment.v1.PaymentService", 17004, 7004, 27004, 19904, ("psp",), "payment"),
    ServiceSpec("psp", "ridesaga.psp.v1.PspService", 17005, 7005, 27005, 19905, (), "psp"),
)


@dataclass(frozen=True)
class InfraPorts:
    zookeeper: int = 12181  # node i of an ensemble listens on zookeeper + i - 1
    zookeeper_peer: int = 12881  # ensemble mode: quorum port of node i is zookeeper_peer + i - 1
    zookeeper_election: int = 12891  # and its leader-election port, zookeeper_election + i - 1
    kafka: int = 19092
    kafka_controller: int = 19093  # with KAFKA_CONTROLLERS=3, voter i on kafka_controller + i - 1
    postgres: int = 15432
    redis: int = 16379
    redlock: tuple[int, int, int] = (16381, 16382, 16383)  # three independent Redis for Redlock
    jaeger_otlp_grpc: int = 4317
    jaeger_otlp_http: int = 4318
    jaeger_query: int = 16686
    jaeger_query_grpc: int = 16685
    jaeger_health: int = 13133
    jaeger_metrics: int = 18888


INFRA = InfraPorts()


class Topic(StrEnum):
    """The saga's topics (docs/saga.md, "Exactly-once: the choice"): every record is keyed by
    ride id, so one ride's messages stay ordered on one partition."""

    TRIP_COMMANDS = "trip.commands"  # rider's RideRequested/CancelRequested, the sweeper's timeouts
    DRIVER_COMMANDS = "driver.commands"
    PAYMENT_COMMANDS = "payment.commands"
    TRIP_REPLIES = "trip.replies"  # the participants' replies to the orchestrator
    DEAD_LETTERS = "ridesaga.dlq"  # poison messages, with their error


class Group(StrEnum):
    """The consumer group (and transactional-id prefix) of each saga loop, with what it reads."""

    ORCHESTRATOR = "trip-orchestrator"
    PAYMENT = "payment-participant"
    DRIVER = "driver-participant"

    @property
    def topics(self) -> tuple[Topic, ...]:
        return CONSUMES[self]


CONSUMES: dict[Group, tuple[Topic, ...]] = {
    Group.ORCHESTRATOR: (Topic.TRIP_COMMANDS, Topic.TRIP_REPLIES),
    Group.PAYMENT: (Topic.PAYMENT_COMMANDS,),
    Group.DRIVER: (Topic.DRIVER_COMMANDS,),
}

# Topic configs that differ from the broker's defaults (none today).
TOPICS: dict[Topic, dict[str, str]] = {topic: {} for topic in Topic}
TOPIC_PARTITIONS = 3


SWEEPERS = ("trip-sweeper-1", "trip-sweeper-2")

# Server-streaming and client-streaming methods: no route timeout, no retries.
STREAMS = (
    "/ridesaga.driver.v1.DriverService/StreamHeartbeats",
    "/ridesaga.driver.v1.DriverService/WatchOffers",
    "/ridesaga.trip.v1.TripService/WatchRide",
    "/ridesaga.rider.v1.RiderService/WatchRide",
)


def zookeeper_ports(nodes: int) -> list[int]:
    return [INFRA.zookeeper + i for i in range(nodes)]


def kafka_controller_ports(controllers: int) -> list[int]:
    """KRaft voter i listens for its quorum on kafka_controller + i - 1."""
    return [INFRA.kafka_controller + i for i in range(controllers)]


def zookeeper_hosts(nodes: int) -> str:
    return ",".join(f"127.0.0.1:{port}" for port in zookeeper_ports(nodes))


REPLICA_PORT_STEP = 100
# Services that can run more than one replica locally. Payment and psp hold no
# per-process state another party depends on; driver's replicas (its offer streams, its
# failure detector) find each other by SWIM and split the drivers by the cells of a
# consistent-hash ring (services/driver/cluster.py). Trip's orchestrator is one group member.
REPLICABLE = ("payment", "psp", "driver")
MAX_REPLICAS = 5  # a fourth and fifth driver replica give a sloppy quorum of N=3 stand-ins (docs/quorum.md)
DRIVER_CLUSTER = 3  # driver replicas on every target unless asked otherwise (`make up DRIVERS=N`)
# By name (compose, Kubernetes) every driver replica, ready or not, answers to this DNS
# name (a headless Service that publishes not-ready addresses): the seeds a replica joins.
MEMBERS_NAME = "driver-members"


# A call from one driver replica to another names its target in this header; the
# caller's sidecar routes it to that replica's sidecar (deploy/envoy/render.py).
MEMBER_HEADER = "x-ridesaga-member"


def member_address(spec: ServiceSpec, host: str = "127.0.0.1") -> str:
    """A driver replica's identity in the cluster: the address of its sidecar, which other
    replicas forward to; its SWIM gossip goes over UDP to the same host and port number."""
    return f"{host}:{spec.ingress_port}"


def membership_environment(spec: ServiceSpec, member_host: str) -> dict[str, str]:
    """A driver replica's membership on a target that reaches parties by name: its own
    address (`member_host`, a name or the pod's IP, resolved to an IP when it starts) and its
    seeds, every replica behind MEMBERS_NAME (services/driver/membership.py resolves it at
    each join)."""
    return {
        "RIDESAGA_MEMBER": f"{member_host}:{spec.ingress_port}",
        "RIDESAGA_SEEDS": f"{MEMBERS_NAME}:{spec.ingress_port}",
    }


def member_source(spec: ServiceSpec) -> str:
    """The loopback address a driver replica's sidecar connects to the other replicas from
    (replica N: 127.0.1.N). Every other client connects from 127.0.0.1, so a partition can
    cut the replicas' forwarding apart without cutting anyone else off (drills/partition.py)."""
    base = next(s for s in SERVICES if s.grpc_service == spec.grpc_service)
    return f"127.0.1.{(spec.ingress_port - base.ingress_port) // REPLICA_PORT_STEP + 1}"


def sweeper_source(name: str) -> str:
    """The loopback address a trip sweeper connects to ZooKeeper from (sweeper N: 127.0.2.N),
    so that a partition can cut one sweeper off from ZooKeeper while it still reaches
    PostgreSQL and Kafka (drills/scenarios.py, split_brain_sweeper)."""
    return f"127.0.2.{SWEEPERS.index(name) + 1}"


def replica(spec: ServiceSpec, number: int) -> ServiceSpec:
    """Replica `number` (from 1) of a service: its own app and sidecar, every port shifted
    by 100 per replica; replica 1 is the service itself."""
    if number == 1:
        return spec
    step = REPLICA_PORT_STEP * (number - 1)
    return dataclasses.replace(
        spec,
        name=f"{spec.name}-{number}",
        app_port=spec.app_port + step,
        ingress_port=spec.ingress_port + step,
        egress_port=spec.egress_port + step,
        admin_port=spec.admin_port + step,
    )


def replicas_of(spec: ServiceSpec, counts: dict[str, int]) -> list[ServiceSpec]:
    return [replica(spec, n) for n in range(1, counts.get(spec.name, 1) + 1)]


def service(name: str) -> ServiceSpec:
    for spec in SERVICES:
        if spec.name == name:
            return spec
    raise KeyError(f"unknown service {name!r}; known: {', '.join(s.name for s in SERVICES)}")


# Where the stack runs. Locally every party is a process on loopback, on the ports above.
# In docker compose and on Kubernetes every component is a container reached by its name
# on its upstream image's usual port, while each service keeps its own four ports: its app
# and its sidecar share one network namespace (a compose `network_mode: service:...`, one
# Kubernetes pod), so the app still listens on loopback and calls out through loopback.
CONTAINER_INFRA = InfraPorts(
    zookeeper=2181,
    zookeeper_peer=2888,
    zookeeper_election=3888,
    kafka=9092,
    kafka_controller=9093,
    postgres=5432,
    redis=6379,
)

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class Target:
    """One place the stack runs: how one party reaches another there.

    `public_bind` is the address a sidecar's ingress listens on (what other parties dial);
    a sidecar's egress and admin listeners and the app itself stay on loopback everywhere.
    With `by_name`, a component is reached by its name (DNS), else on loopback."""

    name: str
    infra: InfraPorts
    public_bind: str
    by_name: bool

    def host(self, component: str) -> str:
        return component if self.by_name else LOOPBACK

    def address(self, component: str, port: int) -> str:
        return f"{self.host(component)}:{port}"


LOCAL = Target("local", INFRA, LOOPBACK, by_name=False)
COMPOSE = Target("compose", CONTAINER_INFRA, "0.0.0.0", by_name=True)
KUBERNETES = Target("k8s", CONTAINER_INFRA, "0.0.0.0", by_name=True)
TARGETS = (LOCAL, COMPOSE, KUBERNETES)


def service_environment(spec: ServiceSpec, target: Target) -> dict[str, str]:
    """The settings a service process gets on `target` (read by services/runtime/config.py).

    Locally every value equals config.py's default, so `ridectl up` passes none of them;
    in containers they name the infrastructure by host name."""
    infra = target.infra
    return {
        "RIDESAGA_HOST": LOOPBACK,
        "RIDESAGA_APP_PORT": str(spec.app_port),
        "RIDESAGA_EGRESS": f"{LOOPBACK}:{spec.egress_port}",
        "RIDESAGA_KAFKA": target.address("kafka", infra.kafka),
        "RIDESAGA_PG_HOST": target.host("postgres"),
        "RIDESAGA_PG_PORT": str(infra.postgres),
        "RIDESAGA_REDIS_URL": f"redis://{target.address('redis', infra.redis)}/0",
        "RIDESAGA_ZOOKEEPER": target.address("zookeeper", infra.zookeeper),
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{target.address('jaeger', infra.jaeger_otlp_grpc)}",
        "RIDESAGA_ENVIRONMENT": target.name,
    }
