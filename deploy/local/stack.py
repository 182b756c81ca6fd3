"""What a local stack runs, as one frozen value: ZooKeeper nodes, KRaft controllers, service replicas, clock
skews, the simulated fleet's size and pace, the trace sampling ratio (and room for the
modes to come). `up(run, stack)` starts exactly this and keeps it in the run directory
(stack.json), so `status`, the drills and the benchmarks read what is running, and a
drill or a benchmark reconfigures the stack by passing another value
(`lifecycle.reconfigured`), never by writing environment variables.

Validation happens here, when the value is made: a wrong mode is one clear line before
anything starts."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploy.local.errors import StackError
from services.runtime.topology import DRIVER_CLUSTER, MAX_REPLICAS, REPLICABLE, SERVICES

STACK_FILE = "stack.json"
ZOOKEEPER_SIZES = (1, 3)
KAFKA_CONTROLLER_SIZES = (1, 3)  # 1: one combined broker+controller; 3: a KRaft quorum beside the broker

Seconds = tuple[float, float]


@dataclass(frozen=True)
class FleetPace:
    """How long a simulated driver thinks about an offer and how long a ride lasts, as
    (min, max) seconds; None keeps the fleet's own defaults (fleet_settings in
    services/runtime/config.py)."""

    think_seconds: Seconds | None = None
    ride_seconds: Seconds | None = None

    def __post_init__(self) -> None:
        for name, pair in (("think_seconds", self.think_seconds), ("ride_seconds", self.ride_seconds)):
            if pair is not None and not 0 <= pair[0] <= pair[1]:
                raise StackError(f"fleet {name} must satisfy 0 <= MIN <= MAX, got {pair}")


INSTANT = FleetPace(think_seconds=(0.0, 0.0), ride_seconds=(0.0, 0.0))  # drivers answer at once (benchmarks)


@dataclass(frozen=True)
class Stack:
    zookeeper_nodes: int = 1
    kafka_controllers: int = 1
    # (service, count) for every service that runs more than one process
    replicas: tuple[tuple[str, int], ...] = (("driver", DRIVER_CLUSTER),)
    clock_skew_ms: tuple[tuple[str, int], ...] = ()  # (service, ms its wall clock is set off)
    fleet_size: int = 30
    fleet_accept_rate: float | None = None  # None: the fleet's default
    fleet_pace: FleetPace = field(default_factory=FleetPace)
    trace_sample_ratio: float | None = None  # None: every process's default (1.0)
    quorum: tuple[int, int, int] = (3, 2, 2)  # the driver cluster's replicated positions: N, R, W
    quorum_sloppy: bool = True  # a down replica stood in for (docs/quorum.md)
    sweeper_self_fence: bool = True  # a sweeper leader stops when its ZooKeeper session is in doubt

    def __post_init__(self) -> None:
        if self.zookeeper_nodes not in ZOOKEEPER_SIZES:
            raise StackError(f"ZooKeeper nodes must be 1 or 3, got {self.zookeeper_nodes}")
        if self.kafka_controllers not in KAFKA_CONTROLLER_SIZES:
            raise StackError(f"KAFKA_CONTROLLERS must be 1 or 3, got {self.kafka_controllers}")
        for name, count in self.replicas:
            if name not in REPLICABLE:
                raise StackError(f"REPLICAS: {name!r} cannot be replicated here; only {', '.join(REPLICABLE)}")
            if not 1 <= count <= MAX_REPLICAS:
                raise StackError(f"REPLICAS: {name}={count} must have a count in 1..{MAX_REPLICAS}")
        known = {spec.name for spec in SERVICES}
        for name, _ in self.clock_skew_ms:
            if name not in known:
                raise StackError(f"clock skew for {name!r}: not a service ({', '.join(sorted(known))})")
        if not 0 < self.fleet_size <= 1000:
            raise StackError(f"the fleet size must be in 1..1000, got {self.fleet_size}")
        if self.fleet_accept_rate is not None and not 0.0 <= self.fleet_accept_rate <= 1.0:
            raise StackError(f"the fleet's accept rate must be in 0..1, got {self.fleet_accept_rate}")
        if self.trace_sample_ratio is not None and not 0.0 <= self.trace_sample_ratio <= 1.0:
            raise StackError(f"the trace sample ratio must be in 0..1, got {self.trace_sample_ratio}")
        n, r, w = self.quorum
        if n < 1 or not (1 <= r <= n and 1 <= w <= n):
            raise StackError(f"QUORUM must be N,R,W with 1 <= R, W <= N, got {n},{r},{w}")

    def replica_counts(self) -> dict[str, int]:
        return dict(self.replicas)

    def skew_of(self, service: str) -> int:
        return dict(self.clock_skew_ms).get(service, 0)

    def replace(self, **changes: Any) -> Stack:
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Stack:
        pace = raw.get("fleet_pace") or {}
        return cls(
            zookeeper_nodes=int(raw.get("zookeeper_nodes", 1)),
            kafka_controllers=int(raw.get("kafka_controllers", 1)),
            replicas=tuple((str(n), int(c)) for n, c in raw.get("replicas", ())),
            clock_skew_ms=tuple((str(n), int(ms)) for n, ms in raw.get("clock_skew_ms", ())),
            fleet_size=int(raw.get("fleet_size", 30)),
            fleet_accept_rate=raw.get("fleet_accept_rate"),
            fleet_pace=FleetPace(
                *(tuple(pace[k]) if pace.get(k) is not None else None for k in ("think_seconds", "ride_seconds"))
            ),
            trace_sample_ratio=raw.get("trace_sample_ratio"),
            quorum=_triple(raw.get("quorum", (3, 2, 2))),
            quorum_sloppy=bool(raw.get("quorum_sloppy", True)),
            sweeper_self_fence=bool(raw.get("sweeper_self_fence", True)),
        )


def _triple(raw: Any) -> tuple[int, int, int]:
    n, r, w = (int(x) for x in raw)
    return n, r, w


def save(run: Path, stack: Stack) -> None:
    run.mkdir(parents=True, exist_ok=True)
    (run / STACK_FILE).write_text(json.dumps(stack.to_json(), indent=1) + "\n")


def load(run: Path) -> Stack | None:
    """The stack the last `up` in this run directory started, or None if there was none."""
    path = run / STACK_FILE
    if not path.exists():
        return None
    try:
        return Stack.from_json(json.loads(path.read_text()))
    except (ValueError, TypeError, KeyError) as error:
        raise StackError(f"{path} does not describe a stack ({error}); remove it and run `ridectl up`") from None
