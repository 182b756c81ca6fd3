"""The one module of the command line's process (and the bootstrap's) that reads the
environment: where the run directory and the cache are, the JDK, and the stack modes a
user asks for with `make up ZK_NODES=3 REPLICAS=payment=2 DRIVERS=3` and friends. Standard library
only, apart from the stack description: the bootstrap imports it before the virtualenv
exists.

The modes become a `Stack` value here (deploy/local/stack.py); nothing below the command
line reads them again."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from deploy.local.stack import Stack


def cache_dir() -> Path:
    return Path(os.environ.get("RIDESAGA_CACHE", Path.home() / ".cache" / "ridesaga"))


def run_dir() -> Path:
    return Path(os.environ.get("RIDESAGA_RUN_DIR", "/tmp/ridesaga"))


def java_home() -> str | None:
    return os.environ.get("JAVA_HOME") or None


def child(**extra: str) -> dict[str, str]:
    """The environment a tool the bootstrap runs (apt, pip, mvn, go) inherits, plus `extra`."""
    return {**os.environ, **extra}


def _pairs(variable: str, raw: str) -> tuple[tuple[str, int], ...]:
    from deploy.local.errors import StackError

    found = []
    for entry in filter(None, raw.split(",")):
        name, _, number = entry.partition("=")
        if not name or not number.lstrip("-").isdigit():
            raise StackError(f"{variable} entries must be SERVICE=INTEGER, got {entry!r}")
        found.append((name, int(number)))
    return tuple(found)


def _with_drivers(
    replicas: tuple[tuple[str, int], ...], drivers: int | None, previous: int
) -> tuple[tuple[str, int], ...]:
    """DRIVERS=N, the driver cluster's size, as REPLICAS=driver=N would say it; unset, the
    size REPLICAS names, else the previous stack's (a REPLICAS=payment=2 does not shrink the
    driver cluster)."""
    if drivers is None:
        if any(name == "driver" for name, _ in replicas):
            return replicas
        drivers = previous
    others = tuple(pair for pair in replicas if pair[0] != "driver")
    return (*others, ("driver", drivers)) if drivers != 1 else others


def _seconds(variable: str, raw: str) -> tuple[float, float]:
    from deploy.local.errors import StackError

    try:
        low, high = (float(part) for part in raw.split(","))
    except ValueError:
        raise StackError(f"{variable} must be MIN,MAX seconds, got {raw!r}") from None
    return low, high


def _number(variable: str, raw: str) -> float:
    from deploy.local.errors import StackError

    try:
        return float(raw)
    except ValueError:
        raise StackError(f"{variable} must be a number, got {raw!r}") from None


def requested_stack(previous: Stack | None) -> Stack:
    """The stack `ridectl up` starts: ZK_NODES, KAFKA_CONTROLLERS and REPLICAS when set, else what the last
    `up` chose; the clock skews, the fleet and the trace ratio from their variables, else
    the defaults."""
    from deploy.local.errors import StackError
    from deploy.local.stack import FleetPace, Stack
    from services.runtime.topology import MAX_REPLICAS

    base = previous or Stack()
    env = os.environ
    nodes = env.get("ZK_NODES") or None
    if nodes is not None and not nodes.isdigit():
        raise StackError(f"ZK_NODES must be 1 or 3, got {nodes!r}")
    controllers = env.get("KAFKA_CONTROLLERS") or None
    if controllers is not None and not controllers.isdigit():
        raise StackError(f"KAFKA_CONTROLLERS must be 1 or 3, got {controllers!r}")
    replicas = env.get("REPLICAS") or None
    drivers = env.get("DRIVERS") or None
    if drivers is not None and not drivers.isdigit():
        raise StackError(f"DRIVERS must be the number of driver replicas, 1..{MAX_REPLICAS}, got {drivers!r}")
    size = env.get("RIDESAGA_FLEET_SIZE") or None
    if size is not None and not size.isdigit():
        raise StackError(f"RIDESAGA_FLEET_SIZE must be an integer in 1..1000, got {size!r}")
    rate = env.get("RIDESAGA_FLEET_ACCEPT_RATE") or None
    ratio = env.get("RIDESAGA_TRACE_SAMPLE_RATIO") or None
    think = env.get("RIDESAGA_FLEET_THINK_SECONDS") or None
    quorum = env.get("QUORUM") or None
    numbers = quorum.split(",") if quorum else []
    if quorum is not None and (len(numbers) != 3 or not all(x.strip().isdigit() for x in numbers)):
        raise StackError(f"QUORUM must be N,R,W (three integers), got {quorum!r}")
    sloppy = env.get("QUORUM_SLOPPY") or None
    if sloppy is not None and sloppy not in ("0", "1"):
        raise StackError(f"QUORUM_SLOPPY must be 0 or 1, got {sloppy!r}")
    ride = env.get("RIDESAGA_FLEET_RIDE_SECONDS") or None
    return Stack(
        zookeeper_nodes=int(nodes) if nodes else base.zookeeper_nodes,
        kafka_controllers=int(controllers) if controllers else base.kafka_controllers,
        replicas=_with_drivers(
            _pairs("REPLICAS", replicas) if replicas is not None else base.replicas,
            int(drivers) if drivers else None,
            base.replica_counts().get("driver", 1),
        ),
        clock_skew_ms=_pairs("RIDESAGA_CLOCK_SKEW", env.get("RIDESAGA_CLOCK_SKEW", "")),
        quorum=(int(numbers[0]), int(numbers[1]), int(numbers[2])) if quorum else base.quorum,
        quorum_sloppy=sloppy == "1" if sloppy else base.quorum_sloppy,
        fleet_size=int(size) if size else Stack.fleet_size,
        fleet_accept_rate=_number("RIDESAGA_FLEET_ACCEPT_RATE", rate) if rate else None,
        fleet_pace=FleetPace(
            _seconds("RIDESAGA_FLEET_THINK_SECONDS", think) if think else None,
            _seconds("RIDESAGA_FLEET_RIDE_SECONDS", ride) if ride else None,
        ),
        trace_sample_ratio=_number("RIDESAGA_TRACE_SAMPLE_RATIO", ratio) if ratio else None,
    )
