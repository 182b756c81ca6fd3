"""Configuration from environment variables, with loopback defaults taken from the
topology. Every process reads its settings here and nowhere else."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from services.blocks.clocks import HybridLogicalClock, skewed_wall_clock
from services.blocks.quorum import Quorum
from services.runtime.topology import INFRA, member_address, service


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None


@dataclass(frozen=True)
class Settings:
    service_name: str
    host: str
    app_port: int
    egress_target: str
    kafka_bootstrap: str
    postgres_host: str
    postgres_port: int
    redis_url: str
    zookeeper_hosts: str
    otlp_endpoint: str
    environment: str
    trace_sample_ratio: float

    def postgres_dsn(self, database: str) -> str:
        return f"host={self.postgres_host} port={self.postgres_port} dbname={database} user={database}"


def trace_sample_ratio() -> float:
    """Parent-based sampling ratio for traces started here (1.0, every trace, by default)."""
    ratio = _float("RIDESAGA_TRACE_SAMPLE_RATIO", 1.0)
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"RIDESAGA_TRACE_SAMPLE_RATIO must be in [0, 1], got {ratio}")
    return ratio


def replica_suffix() -> str:
    """ "" for a service's first replica, "-2" for its second: keeps ids that must be unique
    per process (Kafka transactional ids, consumer group instance ids) apart."""
    raw = os.environ.get("RIDESAGA_REPLICA", "1")
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"RIDESAGA_REPLICA must be a positive integer, got {raw!r}")
    return "" if raw == "1" else f"-{raw}"


def _address(variable: str, raw: str) -> str:
    host, _, port = raw.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{variable} must be host:port addresses, got {raw!r}")
    return raw


def membership() -> tuple[str, tuple[str, ...]]:
    """A driver replica's identity in the cluster (services/runtime/topology.member_address)
    and the members it joins through: by default a cluster of one."""
    host = _env("RIDESAGA_HOST", "127.0.0.1")
    me = _address("RIDESAGA_MEMBER", _env("RIDESAGA_MEMBER", member_address(service("driver"), host)))
    seeds = tuple(_address("RIDESAGA_SEEDS", s.strip()) for s in _env("RIDESAGA_SEEDS", me).split(",") if s.strip())
    return me, seeds


def quorum() -> tuple[Quorum, bool]:
    """The driver cluster's replicated positions: N copies, R answers, W acknowledgements
    (RIDESAGA_QUORUM=N,R,W, default 3,2,2) and whether a down replica is stood in for
    (RIDESAGA_QUORUM_SLOPPY=1, the default, a sloppy quorum; 0, a strict one)."""
    raw = _env("RIDESAGA_QUORUM", "3,2,2")
    parts = raw.split(",")
    if len(parts) != 3 or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"RIDESAGA_QUORUM must be N,R,W (three integers), got {raw!r}")
    sloppy = _env("RIDESAGA_QUORUM_SLOPPY", "1")
    if sloppy not in ("0", "1"):
        raise ValueError(f"RIDESAGA_QUORUM_SLOPPY must be 0 or 1, got {sloppy!r}")
    try:
        return Quorum(*(int(p) for p in parts)), sloppy == "1"
    except ValueError as error:
        raise ValueError(f"RIDESAGA_QUORUM {raw!r}: {error}") from None


def ride_request_limit() -> tuple[int, float]:
    """Per-rider token bucket for RequestRide: (burst, requests per second)."""
    burst = _float("RIDESAGA_RIDE_REQUEST_BURST", 10)
    rate = _float("RIDESAGA_RIDE_REQUEST_RATE", 1.0)
    if burst < 1 or rate <= 0:
        raise ValueError("RIDESAGA_RIDE_REQUEST_BURST must be >= 1 and RIDESAGA_RIDE_REQUEST_RATE > 0")
    return int(burst), rate


def sweeper_id() -> str:
    """This sweeper's name in the election and in its fenced writes (trip-sweeper-1 in
    the stack); one started by hand is named after its process id."""
    return _env("RIDESAGA_SWEEPER_ID", f"sweeper-{os.getpid()}")


def zookeeper_source() -> str | None:
    """The loopback address this process connects to ZooKeeper from (each sweeper its own:
    services/runtime/topology.py, sweeper_source); unset, the kernel picks one."""
    raw = os.environ.get("RIDESAGA_ZOOKEEPER_SOURCE", "")
    if not raw:
        return None
    try:
        ipaddress.IPv4Address(raw)
    except ValueError:
        raise ValueError(f"RIDESAGA_ZOOKEEPER_SOURCE must be an IPv4 address, got {raw!r}") from None
    return raw


def sweeper_self_fence() -> bool:
    """Whether the sweeper leader stops sweeping as soon as its ZooKeeper connection is
    suspended (RIDESAGA_SWEEPER_SELF_FENCE=1, the default); 0 leaves it to the epoch fence."""
    raw = os.environ.get("RIDESAGA_SWEEPER_SELF_FENCE", "1")
    if raw not in ("0", "1"):
        raise ValueError(f"RIDESAGA_SWEEPER_SELF_FENCE must be 0 or 1, got {raw!r}")
    return raw == "1"


def clock_skew_ms() -> int:
    """How far this process's wall clock is set off, for the clock-skew drill (0 normally)."""
    raw = os.environ.get("RIDESAGA_CLOCK_SKEW_MS", "0")
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"RIDESAGA_CLOCK_SKEW_MS must be an integer number of ms, got {raw!r}") from None


def clock() -> HybridLogicalClock:
    """This process's hybrid logical clock, on its (possibly skewed) wall clock."""
    return HybridLogicalClock(skewed_wall_clock(clock_skew_ms()))


def telemetry_target() -> tuple[str, str]:
    """Where spans go and the deployment environment they are labelled with."""
    host = _env("RIDESAGA_HOST", "127.0.0.1")
    return (
        _env("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://{host}:{INFRA.jaeger_otlp_grpc}"),
        _env("RIDESAGA_ENVIRONMENT", "local"),
    )


def load(service_name: str) -> Settings:
    spec = service(service_name)
    host = _env("RIDESAGA_HOST", "127.0.0.1")
    otlp_endpoint, environment = telemetry_target()
    return Settings(
        service_name=service_name,
        host=host,
        app_port=int(_env("RIDESAGA_APP_PORT", str(spec.app_port))),
        egress_target=_env("RIDESAGA_EGRESS", f"{host}:{spec.egress_port}"),
        kafka_bootstrap=_env("RIDESAGA_KAFKA", f"{host}:{INFRA.kafka}"),
        postgres_host=_env("RIDESAGA_PG_HOST", host),
        postgres_port=int(_env("RIDESAGA_PG_PORT", str(INFRA.postgres))),
        redis_url=_env("RIDESAGA_REDIS_URL", f"redis://{host}:{INFRA.redis}/0"),
        zookeeper_hosts=_env("RIDESAGA_ZOOKEEPER", f"{host}:{INFRA.zookeeper}"),
        otlp_endpoint=otlp_endpoint,
        environment=environment,
        trace_sample_ratio=trace_sample_ratio(),
    )


@dataclass(frozen=True)
class FleetSettings:
    """The simulated fleet's settings (services/fleet/main.py): how many drivers, how
    often they accept an offer, where their ids are kept across restarts, the driver
    service's sidecar they call, and how long they think about an offer and drive a ride
    ((min, max) seconds; the benchmarks set 0,0)."""

    size: int
    accept_rate: float
    state: Path
    driver_target: str
    think_seconds: tuple[float, float]
    ride_seconds: tuple[float, float]


def _fleet_seconds(name: str, default: tuple[float, float]) -> tuple[float, float]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        low, high = (float(part) for part in raw.split(","))
    except ValueError:
        raise SystemExit(f"fleet: {name} must be MIN,MAX seconds, got {raw!r}") from None
    if not 0 <= low <= high:
        raise SystemExit(f"fleet: {name} must satisfy 0 <= MIN <= MAX, got {raw!r}")
    return low, high


def fleet_settings() -> FleetSettings:
    """The fleet's settings; a bad one stops the fleet with one line naming it."""
    size = os.environ.get("RIDESAGA_FLEET_SIZE", "30")
    if not size.isdigit() or not 0 < int(size) <= 1000:
        raise SystemExit(f"fleet: RIDESAGA_FLEET_SIZE must be an integer in 1..1000, got {size!r}")
    rate = os.environ.get("RIDESAGA_FLEET_ACCEPT_RATE", "0.9")
    try:
        accept_rate = float(rate)
    except ValueError:
        accept_rate = -1.0
    if not 0.0 <= accept_rate <= 1.0:
        raise SystemExit(f"fleet: RIDESAGA_FLEET_ACCEPT_RATE must be a number in 0..1, got {rate!r}")
    return FleetSettings(
        size=int(size),
        accept_rate=accept_rate,
        state=Path(os.environ.get("RIDESAGA_FLEET_STATE", "fleet.json")),
        driver_target=os.environ.get("RIDESAGA_DRIVER_TARGET", f"127.0.0.1:{service('driver').ingress_port}"),
        think_seconds=_fleet_seconds("RIDESAGA_FLEET_THINK_SECONDS", (0.1, 0.6)),
        ride_seconds=_fleet_seconds("RIDESAGA_FLEET_RIDE_SECONDS", (0.5, 2.0)),
    )
