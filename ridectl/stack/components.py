"""Every process of the local stack: how it starts, where it listens, how to tell it is
healthy. Generated from the topology; the supervisor config is rendered from this list."""

from __future__ import annotations

import functools
import glob
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ridectl.stack import health, paths
from ridectl.stack.errors import StackError
from services.shared.topology import (
    INFRA,
    MAX_REPLICAS,
    REPLICABLE,
    SERVICES,
    SWEEPERS,
    ServiceSpec,
    replicas_of,
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


def _passed(*names: str) -> dict[str, str]:
    """Settings handed from `ridectl up`'s environment to the processes it starts."""
    return {name: os.environ[name] for name in names if name in os.environ}


def clock_skew(name: str) -> dict[str, str]:
    """RIDESAGA_CLOCK_SKEW="payment=-5000" sets one process's wall clock off by 5 s."""
    spec = os.environ.get("RIDESAGA_CLOCK_SKEW", "")
    for entry in filter(None, spec.split(",")):
        target, _, ms = entry.partition("=")
        if not ms.lstrip("-").isdigit():
            raise StackError(f"RIDESAGA_CLOCK_SKEW entries must be SERVICE=MILLISECONDS, got {entry!r}")
        if target == name:
            return {"RIDESAGA_CLOCK_SKEW_MS": ms}
    return {}


def postgres_bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    if not found:
        raise StackError("no PostgreSQL binaries under /usr/lib/postgresql/*/bin; run `make bootstrap`")
    return Path(found[-1]).parent


def postgres_user() -> str | None:
    """PostgreSQL refuses to run as root: as root we run it as the `postgres` user."""
    return "postgres" if os.geteuid() == 0 else None


def java() -> str:
    home = os.environ.get("JAVA_HOME")
    found = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not found:
        raise StackError("no Java found (set JAVA_HOME or install a JDK); Kafka and ZooKeeper need Java 17+")
    return found


MODE_FILE = "stack.json"


def zookeeper_nodes(run: Path) -> int:
    """1, or 3 for quorum drills: ZK_NODES at `up` wins, then what the last `up` chose."""
    raw = os.environ.get("ZK_NODES") or None
    if raw is None:
        mode = run / MODE_FILE
        raw = str(json.loads(mode.read_text()).get("zk_nodes", 1)) if mode.exists() else "1"
    if raw not in ("1", "3"):
        raise StackError(f"ZK_NODES must be 1 or 3, got {raw!r}")
    return int(raw)


def replicas(run: Path) -> dict[str, int]:
    """REPLICAS="payment=2" at `up` (or what the last `up` chose): replicas per service."""
    raw = os.environ.get("REPLICAS") or None
    if raw is None:
        mode = run / MODE_FILE
        found: dict[str, int] = json.loads(mode.read_text()).get("replicas", {}) if mode.exists() else {}
        return found
    counts = {}
    for entry in filter(None, raw.split(",")):
        name, _, count = entry.partition("=")
        if name not in REPLICABLE:
            raise StackError(f"REPLICAS: {name!r} cannot be replicated here; only {', '.join(REPLICABLE)}")
        if not count.isdigit() or not 1 <= int(count) <= MAX_REPLICAS:
            raise StackError(f"REPLICAS: {entry!r} must be SERVICE=N with N in 1..{MAX_REPLICAS}")
        counts[name] = int(count)
    return counts


def remember_mode(run: Path) -> None:
    run.mkdir(parents=True, exist_ok=True)
    (run / MODE_FILE).write_text(json.dumps({"zk_nodes": zookeeper_nodes(run), "replicas": replicas(run)}))


def zookeepers(run: Path) -> list[Component]:
    nodes = zookeeper_nodes(run)
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


def infra(run: Path) -> list[Component]:
    bindir = postgres_bindir()
    slf4j = SLF4J_INFO
    return [
        *zookeepers(run),
        Component(
            "kafka",
            "infra",
            INFRA.kafka,
            [
                java(),
                "-Xms128m",
                "-Xmx512m",
                "-XX:+UseG1GC",
                slf4j,
                "-cp",
                f"{paths.jars_dir('kafka')}/*",
                "kafka.Kafka",
                str(run / "kafka" / "server.properties"),
            ],
            lambda: health.kafka(INFRA.kafka),
            stopwaitsecs=30,
        ),
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
                # never go backwards after a crash (services/shared/locks.py).
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


def services(run: Path) -> list[Component]:
    python = str(paths.python())
    zk = {"RIDESAGA_ZOOKEEPER": zookeeper_hosts(zookeeper_nodes(run))}
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
                **zk,
                **_passed("RIDESAGA_TRACE_SAMPLE_RATIO"),
            },
        )
        for name in SWEEPERS
    ]
    counts = replicas(run)
    for spec in SERVICES:
        for number, copy in enumerate(replicas_of(spec, counts), start=1):
            found += _service_and_sidecar(run, python, spec, copy, number)
    return found


def _service_and_sidecar(run: Path, python: str, spec: ServiceSpec, copy: ServiceSpec, number: int) -> list[Component]:
    own = (
        {}
        if number == 1
        else {
            "RIDESAGA_APP_PORT": str(copy.app_port),
            "RIDESAGA_EGRESS": f"127.0.0.1:{copy.egress_port}",
            "RIDESAGA_REPLICA": str(number),
        }
    )
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
                **_passed("RIDESAGA_TRACE_SAMPLE_RATIO"),
                **clock_skew(spec.name),
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


def fleet(run: Path) -> Component:
    return Component(
        "fleet",
        "sim",
        None,
        [str(paths.python()), "-m", "services.fleet.main"],
        lambda: True,
        environment={
            "PYTHONUNBUFFERED": "1",
            "RIDESAGA_FLEET_SIZE": os.environ.get("RIDESAGA_FLEET_SIZE", "30"),
            "RIDESAGA_FLEET_STATE": str(run / "fleet" / "drivers.json"),
            **_passed(
                "RIDESAGA_TRACE_SAMPLE_RATIO",
                "RIDESAGA_FLEET_ACCEPT_RATE",
                "RIDESAGA_FLEET_THINK_SECONDS",
                "RIDESAGA_FLEET_RIDE_SECONDS",
            ),
        },
    )


def all_components(run: Path) -> list[Component]:
    return [*infra(run), *services(run), fleet(run)]
