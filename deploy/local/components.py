"""Every process of the local stack: how it starts, where it listens, how to tell it is
healthy. Generated from the topology; the supervisor config is rendered from this list."""

from __future__ import annotations

import functools
import glob
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from deploy.local import environment, files, health, netns, paths
from deploy.local.errors import StackError
from deploy.local.stack import Stack
from services.runtime.topology import (
    INFRA,
    SERVICES,
    SWEEPERS,
    ServiceSpec,
    member_address,
    replicas_of,
    sweeper_source,
    zookeeper_hosts,
    zookeeper_ports,
)


@dataclass(frozen=True)
class Component:
    name: str
    group: str  # "infra" starts first; "services" after topics and schemas exist
    port: int | None
    command: list[str]
    healthy: Callable[[], bool]
    environment: dict[str, str] = field(default_factory=dict)
    user: str | None = None
    stopsignal: str = "TERM"
    stopwaitsecs: int = 15


SLF4J_INFO = "-Dorg.slf4j.simpleLogger.defaultLogLevel=info"
# Kafka's lines with their time, so a drill can tell when a controller changed state.
SLF4J_TIMES = ("-Dorg.slf4j.simpleLogger.showDateTime=true", "-Dorg.slf4j.simpleLogger.dateTimeFormat=HH:mm:ss.SSS")


def _tracing(stack: Stack) -> dict[str, str]:
    """The trace sampling ratio, handed to a process only when the stack sets one."""
    ratio = stack.trace_sample_ratio
    return {} if ratio is None else {"RIDESAGA_TRACE_SAMPLE_RATIO": str(ratio)}


def clock_skew(stack: Stack, name: str) -> dict[str, str]:
    """A stack with clock_skew_ms (("payment", -5000),) sets payment's wall clock off by 5 s."""
    ms = stack.skew_of(name)
    return {"RIDESAGA_CLOCK_SKEW_MS": str(ms)} if ms else {}


def postgres_bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    if not found:
        raise StackError("no PostgreSQL binaries under /usr/lib/postgresql/*/bin; run `make bootstrap`")
    return Path(found[-1]).parent


def postgres_user() -> str | None:
    """PostgreSQL refuses to run as root: as root we run it as the `postgres` user."""
    return "postgres" if os.geteuid() == 0 else None


def java() -> str:
    home = environment.java_home()
    found = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not found:
        raise StackError("no Java found (set JAVA_HOME or install a JDK); Kafka and ZooKeeper need Java 17+")
    return found


def zookeepers(run: Path, stack: Stack) -> list[Component]:
    nodes = stack.zookeeper_nodes
    found = []
    for node, port in enumerate(zookeeper_ports(nodes), start=1):
        found.append(
            Component(
                "zookeeper" if nodes == 1 else f"zookeeper-{node}",
                "infra",
                port,
                [
                    java(),
                    "-Xms32m",
                    "-Xmx128m",
                    SLF4J_INFO,
                    "-cp",
                    f"{paths.jars_dir('zookeeper')}/*",
                    "org.apache.zookeeper.server.quorum.QuorumPeerMain",
                    str(run / "zookeeper" / str(node) / "zoo.cfg"),
                ],
                functools.partial(health.zookeeper, port),
            )
        )
    return found


def kafkas(run: Path, stack: Stack) -> list[Component]:
    """The combined node, or the three KRaft controllers and the broker
    (deploy/local/files.py kafka_nodes). A controller is healthy once it listens; the
    broker once it serves metadata, which it does only after registering with a
    controller quorum that has a leader."""
    voters = files.kafka_controllers(stack.kafka_controllers)
    found = []
    for node in files.kafka_nodes(run, stack.kafka_controllers):
        broker = "broker" in node.roles
        command = [
            java(),
            "-Xms64m",
            "-Xmx512m" if broker else "-Xmx160m",
            "-XX:+UseG1GC",
            SLF4J_INFO,
            *SLF4J_TIMES,
            "-cp",
            f"{paths.jars_dir('kafka')}/*",
            "kafka.Kafka",
            str(node.home / "server.properties"),
        ]
        host, port = ("127.0.0.1", INFRA.kafka) if broker else voters[node.node_id - 1]
        in_namespace = not broker and stack.kafka_controllers > 1
        found.append(
            Component(
                node.name,
                "infra",
                port,
                netns.run_inside(node.node_id, command) if in_namespace else command,
                functools.partial(health.kafka, port) if broker else functools.partial(health.tcp_open, port, host),
                stopwaitsecs=30,
            )
        )
    return found


def infra(run: Path, stack: Stack) -> list[Component]:
    bindir = postgres_bindir()
    return [
        *zookeepers(run, stack),
        *kafkas(run, stack),
        Component(
            "postgres",
            "infra",
            INFRA.postgres,
            [
                str(bindir / "postgres"),
                "-D",
                str(run / "postgres" / "data"),
                "-p",
                str(INFRA.postgres),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "unix_socket_directories=",
                "-c",
                "max_connections=200",
                "-c",
                "shared_buffers=64MB",
                "-c",
                "fsync=on",
            ],
            lambda: health.postgres(INFRA.postgres, bindir),
            user=postgres_user(),
            stopsignal="INT",
        ),
        Component(
            "redis",
            "infra",
            INFRA.redis,
            [
                "redis-server",
                "--bind",
                "127.0.0.1",
                "--port",
                str(INFRA.redis),
                "--dir",
                str(run / "redis"),
                "--appendonly",
                "yes",
                # always: a fencing token (INCR) is on disk before Redis answers, so tokens
                # never go backwards after a crash (services/blocks/fencing.py).
                "--appendfsync",
                "always",
                "--save",
                "",
                "--daemonize",
                "no",
            ],
            lambda: health.redis_ping(INFRA.redis),
        ),
        *(
            Component(
                f"redis-lock-{n}",
                "infra",
                port,
                ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"],
                functools.partial(health.redis_ping, port),
            )
            for n, port in enumerate(INFRA.redlock, start=1)
        ),
        Component(
            "jaeger",
            "infra",
            INFRA.jaeger_query,
            [str(paths.jaeger_binary()), "--config", str(run / "jaeger" / "config.yaml")],
            lambda: health.http_ok(f"http://127.0.0.1:{INFRA.jaeger_query}/api/v3/services"),
        ),
    ]


def services(run: Path, stack: Stack) -> list[Component]:
    python = str(paths.python())
    zk = {"RIDESAGA_ZOOKEEPER": zookeeper_hosts(stack.zookeeper_nodes)}
    found: list[Component] = [
        Component(
            name,
            "services",
            None,
            [python, "-m", "services.trip.sweeper"],
            lambda: True,
            environment={
                "PYTHONUNBUFFERED": "1",
                "RIDESAGA_SWEEPER_ID": name,
                "RIDESAGA_ZOOKEEPER_SOURCE": sweeper_source(name),
                **({} if stack.sweeper_self_fence else {"RIDESAGA_SWEEPER_SELF_FENCE": "0"}),
                **zk,
                **_tracing(stack),
            },
        )
        for name in SWEEPERS
    ]
    counts = stack.replica_counts()
    for spec in SERVICES:
        for number, copy in enumerate(replicas_of(spec, counts), start=1):
            found += _service_and_sidecar(run, stack, python, spec, copy, number)
    return found


def _service_and_sidecar(
    run: Path, stack: Stack, python: str, spec: ServiceSpec, copy: ServiceSpec, number: int
) -> list[Component]:
    own = (
        {}
        if number == 1
        else {
            "RIDESAGA_APP_PORT": str(copy.app_port),
            "RIDESAGA_EGRESS": f"127.0.0.1:{copy.egress_port}",
            "RIDESAGA_REPLICA": str(number),
        }
    )
    if spec.name == "driver":  # the cluster: each replica joins through all of them
        own["RIDESAGA_MEMBER"] = member_address(copy)
        own["RIDESAGA_SEEDS"] = ",".join(member_address(r) for r in replicas_of(spec, stack.replica_counts()))
        own["RIDESAGA_QUORUM"] = ",".join(str(x) for x in stack.quorum)
        own["RIDESAGA_QUORUM_SLOPPY"] = "1" if stack.quorum_sloppy else "0"
    return [
        Component(
            copy.name,
            "services",
            copy.app_port,
            [python, "-m", f"services.{spec.name}.entrypoint"],
            functools.partial(health.grpc_serving, copy.app_port, spec.grpc_service),
            environment={
                "PYTHONUNBUFFERED": "1",
                **own,
                **_tracing(stack),
                **clock_skew(stack, spec.name),
            },
        ),
        Component(
            copy.sidecar,
            "services",
            copy.ingress_port,
            [
                str(paths.envoy_binary()),
                "-c",
                str(run / "envoy" / f"{copy.sidecar}.json"),
                "--disable-hot-restart",
                "--concurrency",
                "1",
                "--log-level",
                "warn",
            ],
            functools.partial(health.grpc_serving, copy.ingress_port, spec.grpc_service),
        ),
    ]


def _fleet_settings(stack: Stack) -> dict[str, str]:
    found = {"RIDESAGA_FLEET_SIZE": str(stack.fleet_size)}
    if stack.fleet_accept_rate is not None:
        found["RIDESAGA_FLEET_ACCEPT_RATE"] = str(stack.fleet_accept_rate)
    for variable, pair in (
        ("RIDESAGA_FLEET_THINK_SECONDS", stack.fleet_pace.think_seconds),
        ("RIDESAGA_FLEET_RIDE_SECONDS", stack.fleet_pace.ride_seconds),
    ):
        if pair is not None:
            found[variable] = f"{pair[0]},{pair[1]}"
    return found


def fleet(run: Path, stack: Stack) -> Component:
    return Component(
        "fleet",
        "sim",
        None,
        [str(paths.python()), "-m", "services.fleet.main"],
        lambda: True,
        environment={
            "PYTHONUNBUFFERED": "1",
            "RIDESAGA_FLEET_STATE": str(run / "fleet" / "drivers.json"),
            **_fleet_settings(stack),
            **_tracing(stack),
        },
    )


def all_components(run: Path, stack: Stack) -> list[Component]:
    return [*infra(run, stack), *services(run, stack), fleet(run, stack)]
