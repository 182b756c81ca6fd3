"""The driver cluster's drills: one replica of a three-replica driver service (make up
DRIVERS=3) crashes, freezes, is cut off by the network, or all restart one by one, while
rides go on. Each reports, from every replica's own view (services/driver/client.py):

- detection: from the fault until every other replica has declared the target dead (or,
  for a graceful stop, left);
- convergence: from the heal until every replica's view agrees again, all three alive;
- and, like every drill, the rides in flight during the fault and the recovery.

SWIM's rules are services/blocks/swim.py; the transport services/driver/membership.py.
The fenced reservation in PostgreSQL, not the ring, keeps a driver from being booked
twice: the partition drill samples, while the cut lasts, that no driver is on two live
rides although both sides believe they own every cell."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import psycopg

from deploy.local import lifecycle, paths
from drills import partition
from drills.engine import STEPS, TRIP_DB, Drill, DrillError
from drills.history import Fault
from services.driver.client import ReplicaView, agreed, views
from services.runtime.topology import ServiceSpec, member_address, member_source, replicas_of, service

CLUSTER_SIZE = 3
SAMPLE_SECONDS = 0.1  # how often every replica's view is read
DETECT_TIMEOUT_SECONDS = 30.0  # SWIM here declares a silent member dead in about 3 s
CONVERGE_TIMEOUT_SECONDS = 60.0  # a dead member is re-learnt by a periodic sync (every 5 s)
LIVE_WITH_DRIVER = ("OFFERED", "ACCEPTED", "CAPTURING")
Views = list[ReplicaView]


def cluster(d: Drill) -> list[ServiceSpec]:
    """The driver replicas of the running stack; the drills need three."""
    found = replicas_of(service("driver"), lifecycle.running(paths.RUN).replica_counts())
    if len(found) != CLUSTER_SIZE:
        raise DrillError(
            f"{d.name}: needs a driver cluster of {CLUSTER_SIZE} (make up DRIVERS={CLUSTER_SIZE}),"
            f" this stack runs {len(found)}"
        )
    return found


def _read(addresses: list[str]) -> Views:
    return asyncio.run(views(addresses))


def _summary(found: Views) -> str:
    return "; ".join(
        f"{v.replica}: {v.error or ', '.join(f'{m}={s}' for m, s in sorted(v.states().items()))}" for v in found
    )


def _until(d: Drill, addresses: list[str], condition: Callable[[Views], bool], timeout: float, what: str) -> float:
    """Reads every view until `condition` holds of them; when it first did (drill time)."""
    deadline = time.monotonic() + timeout
    found: Views = []
    while time.monotonic() < deadline:
        found = _read(addresses)
        if condition(found):
            return d.now()
        time.sleep(SAMPLE_SECONDS)
    raise DrillError(f"{d.name}: {what} not within {timeout:.0f}s; last views: {_summary(found)}")


def _everyone_sees(member: str, states: set[str]) -> Callable[[Views], bool]:
    return lambda found: all(not v.error and v.states().get(member) in states for v in found)


def _all_alive(members: set[str]) -> Callable[[Views], bool]:
    return lambda found: agreed(found, members)


def _incarnation(found: Views, member: str) -> int:
    return max((m.incarnation for v in found for m in v.members if m.member == member), default=0)


def _target(d: Drill, replicas: list[ServiceSpec]) -> ServiceSpec:
    return random.Random(d.seed).choice(replicas)


def _times(fault_at: float, detected_at: float, healed_at: float, agreed_at: float) -> dict[str, float]:
    return {
        "detection_seconds": round(detected_at - fault_at, 2),
        "convergence_seconds": round(agreed_at - healed_at, 2),
    }


def _addresses(replicas: list[ServiceSpec]) -> list[str]:
    return [member_address(r) for r in replicas]


@dataclass(frozen=True)
class Silenced:
    """One replica silenced until the others declared it dead, then let back."""

    target: ServiceSpec
    member: str
    fault: Fault
    suspected: float  # drill time: when every other view had it suspect (or dead)
    dead: float  # ... dead
    converged: float  # ... every view agreed again, all alive
    incarnations: tuple[int, int]  # its highest incarnation seen before and after

    def findings(self) -> dict[str, Any]:
        start = self.fault.start
        before, after = self.incarnations
        return {
            "target": self.target.name,
            "member": self.member,
            **_times(start, self.dead, self.fault.end or self.converged, self.converged),
            "suspected_after_seconds": round(self.suspected - start, 2),
            "incarnation": {"before": before, "after": after},
        }


def _silence(d: Drill, silence: Callable[..., AbstractContextManager[Fault]]) -> Silenced:
    """The shared half of the crash and freeze drills: `silence(name, **detail)` is the
    fault window (Drill.held_down, Drill.paused), entered when a ride is at a random step
    and left once every other replica has declared the target dead."""
    replicas = cluster(d)
    target = _target(d, replicas)
    me = member_address(target)
    everyone = _addresses(replicas)
    others = [a for a in everyone if a != me]
    _until(d, everyone, _all_alive(set(everyone)), CONVERGE_TIMEOUT_SECONDS, "three agreed views")
    before = _incarnation(_read(everyone), me)
    step = random.Random(d.seed + 1).choice(STEPS)
    ride_id = d.wait_for_step(step)
    with silence(target.name, step=step, ride_id=ride_id) as fault:
        suspected = _until(d, others, _everyone_sees(me, {"suspect", "dead"}), DETECT_TIMEOUT_SECONDS, "suspicion")
        dead = _until(d, others, _everyone_sees(me, {"dead"}), DETECT_TIMEOUT_SECONDS, f"{me} declared dead")
    converged = _until(d, everyone, _all_alive(set(everyone)), CONVERGE_TIMEOUT_SECONDS, "agreement")
    after = _incarnation(_read(everyone), me)
    return Silenced(target, me, fault, suspected, dead, converged, (before, after))


def kill_replica(d: Drill) -> dict[str, Any]:
    """SIGKILL one driver replica mid-saga and keep it down until the others have declared
    it dead; then start it again: it rejoins and every view agrees, three alive."""
    found = _silence(d, d.held_down)
    return {
        **found.findings(),
        "checks": {"the others declared the killed replica dead": found.dead > found.fault.start},
    }


def pause_replica(d: Drill) -> dict[str, Any]:
    """SIGSTOP one driver replica: the others suspect it, then declare it dead; after
    SIGCONT it hears of its death and refutes it with a higher incarnation."""
    found = _silence(d, d.paused)
    before, after = found.incarnations
    return {
        **found.findings(),
        "checks": {
            "suspected before declared dead": found.suspected <= found.dead,
            "refuted with a higher incarnation": after > before,
        },
    }


def _drivers_on_two_live_rides() -> int:
    with psycopg.connect(TRIP_DB, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM (SELECT driver_id FROM rides WHERE state = ANY(%s) AND driver_id IS NOT NULL"
            " GROUP BY driver_id HAVING count(*) > 1) AS twice",
            (list(LIVE_WITH_DRIVER),),
        ).fetchone()
    return int(row[0]) if row else 0


def partition_replica(d: Drill) -> dict[str, Any]:
    """Cut one driver replica off from the other two by dropping their packets (gossip over
    UDP, forwarding over TCP; drills/partition.py), not a pause: each side declares the
    other dead and believes it owns every cell. No driver is booked twice meanwhile (the
    fence); after the heal every view agrees again."""
    replicas = cluster(d)
    target = _target(d, replicas)
    rest = [r for r in replicas if r is not target]
    me = member_address(target)
    everyone = set(_addresses(replicas))
    cut = partition.Cut(
        side=(target.ingress_port,),
        others=tuple(r.ingress_port for r in rest),
        side_sources=(member_source(target),),
        others_sources=tuple(member_source(r) for r in rest),
    )
    _until(d, _addresses(replicas), _all_alive(everyone), CONVERGE_TIMEOUT_SECONDS, "three agreed views")
    ride_id = d.wait_for_step(random.Random(d.seed + 1).choice(STEPS))
    doubles: list[int] = []
    with d.window("partition", target.name, ride_id=ride_id, cut=repr(cut)) as fault, partition.cutting(cut):
        dead = _until(d, _addresses(rest), _everyone_sees(me, {"dead"}), DETECT_TIMEOUT_SECONDS, f"{me} dead")
        both_sides = _until(
            d,
            [me],
            lambda found: all(found[0].states().get(m) == "dead" for m in _addresses(rest)),
            DETECT_TIMEOUT_SECONDS,
            "the cut replica declaring the others dead",
        )
        split = d.now()
        while d.now() < split + SPLIT_SECONDS:  # both sides own every cell: bookings go on
            doubles.append(_drivers_on_two_live_rides())
            time.sleep(SAMPLE_SECONDS * 2)
    healed = fault.end or d.now()
    converged = _until(d, _addresses(replicas), _all_alive(everyone), CONVERGE_TIMEOUT_SECONDS, "agreement")
    return {
        "target": target.name,
        "member": me,
        **_times(fault.start, dead, healed, converged),
        "cut_side_saw_the_others_dead_after_seconds": round(both_sides - fault.start, 2),
        "split_brain_seconds": round(healed - split, 2),
        "samples_during_split": len(doubles),
        "most_drivers_on_two_live_rides": max(doubles, default=0),
        "checks": {
            "the others declared the cut replica dead": dead > fault.start,
            "the cut replica declared the others dead": both_sides > fault.start,
            "no driver on two live rides during the split": max(doubles, default=0) == 0,
        },
    }


SPLIT_SECONDS = 8.0  # how long both sides stay split once each has declared the other dead


def rolling_restart(d: Drill) -> dict[str, Any]:
    """Restart every driver replica in turn, as a deploy does: each leaves gracefully
    (SIGTERM: a 'left' rumour, not a suspicion), starts again, rejoins; the next goes once
    every view agrees on three alive."""
    replicas = cluster(d)
    everyone = set(_addresses(replicas))
    addresses = _addresses(replicas)
    steps: list[dict[str, Any]] = []
    for target in replicas:
        _until(d, addresses, _all_alive(everyone), CONVERGE_TIMEOUT_SECONDS, "three agreed views")
        me = member_address(target)
        others = [a for a in addresses if a != me]
        d.wait_for_step(random.Random(d.seed + len(steps)).choice(STEPS))
        with d.window("stop", target.name) as fault:
            d.supervisor.stop_nowait(target.name)  # SIGTERM: the replica says goodbye, then drains
            try:
                gone = _until(d, others, _everyone_sees(me, {"left", "dead"}), DETECT_TIMEOUT_SECONDS, f"{me} gone")
                seen_as = sorted({v.states().get(me, "unknown") for v in _read(others)})
            finally:  # started again however the wait ended: a drill never leaves a replica down
                d.wait_stopped(target.name)
                d.supervisor.start(target.name)
                d.wait_healthy(target.name)
        converged = _until(d, addresses, _all_alive(everyone), CONVERGE_TIMEOUT_SECONDS, "agreement")
        steps.append(
            {"target": target.name, **_times(fault.start, gone, fault.end or d.now(), converged), "seen_as": seen_as}
        )
    return {
        "restarts": steps,
        "detection_seconds": max(s["detection_seconds"] for s in steps),
        "convergence_seconds": max(s["convergence_seconds"] for s in steps),
        "checks": {
            "every replica restarted and rejoined": len(steps) == len(replicas),
            "each graceful stop was seen as a leave, not a death": all(s["seen_as"] == ["left"] for s in steps),
        },
    }
