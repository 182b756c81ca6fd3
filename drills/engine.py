"""Runs one drill: clients book rides at a steady rate while a nemesis breaks things,
then every ride is followed to its end, the correctness properties (docs/properties.md)
are checked over the history, the databases, the psp's own records and the topics, and a
report is written.

The nemesis runs in a thread of its own and injects faults when it observes rides at
the right saga step (in trip's database), never on a timer. Arrivals continue until at
least `rides` rides were started, every fault has healed, and a few more seconds have
passed, so that recovery is seen by rides booked after the fault. Stuck work (property 12)
makes a verdict invalid like a violation, and is reported apart from the violations."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg

from deploy.local import components, lifecycle, paths
from deploy.local.errors import StackError
from deploy.local.supervisor import Supervisor
from drills import Verdict, checker, netsplit, partition
from drills.history import Event, Fault, History, check, in_flight, locked_out, not_recovered, outcomes, recovery
from drills.stats import percentile
from drills.workload import REBOOK_BOUND_SECONDS, Clients, Mix
from services.runtime.messages import header_carrier
from services.runtime.topology import INFRA, Topic
from services.trip.saga import TERMINAL, State

TRIP_DB = f"host=127.0.0.1 port={INFRA.postgres} dbname=trip user=postgres"
# Every saga state a fault can be aimed at, in saga order, and the steps every ride goes
# through. The others are brief (PENDING: from trip's INSERT of the ride until the
# orchestrator takes its RideRequested) or need riders who make them happen
# (MATCH_BACKOFF: no driver is free; COMPENSATING: a cancel, or no driver in the end).
STATES = tuple(s.value for s in State if s not in TERMINAL)
STEPS = ("AUTHORIZING", "MATCHING", "OFFERED", "ACCEPTED", "CAPTURING")
POLL_SECONDS = 0.01
# PENDING lasts a few tens of ms, COMPENSATING one participant's round trip: polled faster
# so that a ride in them is seen at all.
FLEETING = frozenset({"PENDING", "COMPENSATING"})
FLEETING_POLL_SECONDS = 0.002
TAIL_SECONDS = 4.0  # arrivals continue at least this long after the last fault healed
# ... and, past that, until a ride booked after the heal has completed (the system does
# useful work again), at most this long; if none has, the verdict says `not_recovered`.
RECOVERY_LIMIT_SECONDS = 60.0
MAX_RIDES_FACTOR = 20  # a runaway nemesis still stops the arrivals eventually
OBSERVE_TIMEOUT_SECONDS = 45.0
HEAL_TIMEOUT_SECONDS = 120.0


class DrillError(StackError):
    """The drill could not do what it set out to (a fault could not be injected)."""


@dataclass(frozen=True)
class Scenario:
    name: str
    doc: str
    nemesis: Callable[[Drill], dict[str, Any]]
    rides: int = 30
    rate: float = 3.0
    mix: Mix = field(default_factory=Mix)
    # Checks over the whole history, once every client has finished (the nemesis's own
    # checks are done when it is).
    history_checks: Callable[[list[Event]], dict[str, bool]] | None = None
    # Whether the nemesis cuts the network (drills/partition.py): the drill then runs
    # guarded, so the cut is removed however it ends.
    partitions: bool = False


class Drill:
    """What a nemesis can do to the running stack, each fault recorded as a window."""

    def __init__(self, name: str, started: float, seed: int, k8s_namespace: str = "") -> None:
        self.name = name
        # With a namespace, faults are pod deletions in a Kubernetes cluster (reached by
        # port-forwards on the local ports) instead of signals to local processes.
        self.k8s_namespace = k8s_namespace
        self.started = started
        self.wall_started = time.time()
        self.healed_wall = self.wall_started  # when the last fault healed (wall clock)
        self.seed = seed
        self.faults: list[Fault] = []
        self.supervisor = Supervisor(paths.RUN)
        self.components = (
            {}
            if k8s_namespace
            else {c.name: c for c in components.all_components(paths.RUN, lifecycle.running(paths.RUN))}
        )

    def now(self) -> float:
        return time.monotonic() - self.started

    def log(self, message: str) -> None:
        print(f"ridectl: drill {self.name}: +{self.now():6.2f}s {message}", flush=True, file=sys.stderr)

    def wait_for_step(self, state: str, timeout: float = OBSERVE_TIMEOUT_SECONDS) -> str:
        """Blocks until a ride booked during this drill has moved into saga state `state`
        since the last fault healed (so the stack is working again); the ride's id."""
        deadline = time.monotonic() + timeout
        pause = FLEETING_POLL_SECONDS if state in FLEETING else POLL_SECONDS
        with psycopg.connect(TRIP_DB, autocommit=True) as conn:
            while time.monotonic() < deadline:
                try:
                    row = conn.execute(
                        "SELECT ride_id FROM rides WHERE state = %s AND created_at >= to_timestamp(%s)"
                        " AND updated_at >= to_timestamp(%s) LIMIT 1",
                        (state, self.wall_started, self.healed_wall),
                    ).fetchone()
                except psycopg.OperationalError:
                    row = None
                if row:
                    return str(row[0])
                time.sleep(pause)
        raise DrillError(f"{self.name}: no ride was seen in state {state} within {timeout:.0f}s")

    def pid(self, name: str) -> int:
        info = self.supervisor.info(name)
        if info["statename"] != "RUNNING" or not info["pid"]:
            raise DrillError(f"{self.name}: {name} is not running ({info['statename']})")
        return int(info["pid"])

    def wait_healthy(self, name: str, old_pid: int | None = None, timeout: float = HEAL_TIMEOUT_SECONDS) -> None:
        """Blocks until supervisord has `name` running again (a new process if old_pid) and
        its health check passes."""
        component = self.components[name]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = self.supervisor.info(name)
            fresh = old_pid is None or int(info["pid"] or 0) not in (0, old_pid)
            if info["statename"] == "RUNNING" and fresh and component.healthy():
                return
            time.sleep(0.1)
        raise DrillError(f"{self.name}: {name} was not healthy again within {timeout:.0f}s")

    def wait_stopped(self, name: str, timeout: float = HEAL_TIMEOUT_SECONDS) -> None:
        """Blocks until supervisord reports `name` stopped (after a stop_nowait)."""
        deadline = time.monotonic() + timeout
        while self.supervisor.info(name)["statename"] != "STOPPED":
            if time.monotonic() > deadline:
                raise DrillError(f"{self.name}: {name} did not stop within {timeout:.0f}s")
            time.sleep(0.1)

    @contextmanager
    def window(self, name: str, target: str, **detail: Any) -> Iterator[Fault]:
        """Records a fault from entering the block until leaving it (healed)."""
        fault = Fault(name, target, round(self.now(), 3), detail=dict(detail))
        self.faults.append(fault)
        self.log(f"{name} {target} {detail or ''}".rstrip())
        try:
            yield fault
        finally:
            fault.end = round(self.now(), 3)
            self.healed_wall = time.time()
            self.log(f"healed {target} after {fault.end - fault.start:.2f}s")

    def kill(self, name: str, at_step: str | None = None, sig: signal.Signals = signal.SIGKILL) -> Fault:
        """SIGKILLs `name` (when a ride is at `at_step`, if given); the window lasts until
        supervisord has restarted it and it is healthy."""
        ride_id = self.wait_for_step(at_step) if at_step else ""
        if self.k8s_namespace:
            return self._delete_pods(name, at_step or "", ride_id)
        pid = self.pid(name)
        with self.window("kill", name, step=at_step or "", ride_id=ride_id, pid=pid) as fault:
            os.kill(pid, sig)
            self.wait_healthy(name, old_pid=pid)
        return fault

    @contextmanager
    def held_down(self, name: str, **detail: Any) -> Iterator[Fault]:
        """SIGKILLs `name` and keeps it down for the block (a crashed machine that stays
        down); then starts it again, and the window lasts until it is healthy. It is frozen
        first and asked to stop, so that supervisord does not restart it and it cannot run
        its SIGTERM handler (no graceful goodbye): to the others it simply vanishes."""
        pid = self.pid(name)
        with self.window("kill (held down)", name, pid=pid, **detail) as fault:
            os.kill(pid, signal.SIGSTOP)
            try:
                self.supervisor.stop_nowait(name)
            finally:  # never left frozen: without the stop request supervisord restarts it
                os.kill(pid, signal.SIGKILL)
            try:
                yield fault
            finally:
                self.supervisor.start(name)
                self.wait_healthy(name, old_pid=pid)

    @contextmanager
    def paused(self, name: str, **detail: Any) -> Iterator[Fault]:
        """SIGSTOPs `name` for the block (a process frozen: a long GC pause, a VM being
        migrated) and SIGCONTs it when the block ends, also when it fails."""
        pid = self.pid(name)
        with self.window("pause", name, pid=pid, **detail) as fault:
            os.kill(pid, signal.SIGSTOP)
            try:
                yield fault
            finally:
                os.kill(pid, signal.SIGCONT)

    def _delete_pods(self, name: str, step: str, ride_id: str) -> Fault:
        """Deletes the workload's pods at once (no grace period, like a SIGKILL); the
        window lasts until the StatefulSet has them all ready again."""
        kubectl = ["kubectl", "-n", self.k8s_namespace]
        selector = f"app.kubernetes.io/name={name}"
        with self.window("delete pods", name, step=step, ride_id=ride_id, namespace=self.k8s_namespace) as fault:
            subprocess.run(
                [*kubectl, "delete", "pod", "-l", selector, "--grace-period=0", "--force", "--wait=false"],
                check=True,
                capture_output=True,
            )
            subprocess.run(
                [*kubectl, "rollout", "status", f"statefulset/{name}", f"--timeout={HEAL_TIMEOUT_SECONDS:.0f}s"],
                check=True,
                capture_output=True,
            )
        return fault

    def restart(self, name: str, at_step: str | None = None) -> Fault:
        """Stops `name` cleanly and starts it again (a rolling restart of one server)."""
        ride_id = self.wait_for_step(at_step) if at_step else ""
        with self.window("restart", name, step=at_step or "", ride_id=ride_id) as fault:
            self.supervisor.stop(name)
            self.supervisor.start(name)
            self.wait_healthy(name)
        return fault


def _trace_ids(started_wall: float) -> dict[str, str]:
    """The trace id trip recorded for each ride booked since the drill started."""
    with psycopg.connect(TRIP_DB, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT ride_id, trace_id FROM rides WHERE created_at >= to_timestamp(%s)", (started_wall,)
        ).fetchall()
    return {str(ride_id): str(trace_id) for ride_id, trace_id in rows}


def dead_letters_since(since_ms: int) -> list[dict[str, str]]:
    """The records the saga's consumers dead-lettered since `since_ms`, read committed.
    A drill must produce none: a dead-lettered command is a step that never happened."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": f"127.0.0.1:{INFRA.kafka}",
            "group.id": "ridectl-drill-dlq",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "log_level": 0,
        }
    )
    try:
        metadata = consumer.list_topics(Topic.DEAD_LETTERS, timeout=10).topics[Topic.DEAD_LETTERS]
        wanted = [TopicPartition(Topic.DEAD_LETTERS, p, since_ms) for p in metadata.partitions]
        starts = consumer.offsets_for_times(wanted, timeout=10)
        found: list[dict[str, str]] = []
        for start in starts:
            _, high = consumer.get_watermark_offsets(start, timeout=10)
            if start.offset < 0 or start.offset >= high:
                continue
            consumer.assign([start])
            while True:
                record = consumer.poll(5)
                if record is None or record.error():
                    break
                headers = header_carrier(record.headers())
                found.append({"source": headers.get("dlq.source", ""), "error": headers.get("dlq.error", "")})
                if (record.offset() or 0) >= high - 1:
                    break
        return found
    finally:
        consumer.close()


def run(
    scenario: Scenario, rides: int | None = None, rate: float | None = None, seed: int = 1, k8s_namespace: str = ""
) -> Verdict:
    rides = rides or scenario.rides
    rate = rate or scenario.rate
    if rides < 1 or rate <= 0:
        raise DrillError(f"--rides must be >= 1 and --rate > 0, got {rides} and {rate}")
    started = time.monotonic()
    history = History()
    drill = Drill(scenario.name, started, seed, k8s_namespace)
    clients = Clients(history, started, scenario.mix)
    extra: dict[str, Any] = {}
    errors: list[str] = []
    done = threading.Event()
    healed_at = [float("inf")]

    def nemesis() -> None:
        try:
            extra.update(scenario.nemesis(drill))
        except Exception as error:  # reported in the verdict, which is then invalid
            errors.append(f"{type(error).__name__}: {error}")
        finally:
            healed_at[0] = drill.now()
            done.set()

    def recovered() -> bool:
        return any(r.outcome == "completed" and r.requested_at >= healed_at[0] for r in outcomes(list(history.events)))

    def keep_going(started_rides: int) -> bool:
        if started_rides >= rides * MAX_RIDES_FACTOR:
            return False
        if started_rides < rides or not done.is_set():
            return True
        since_healed = drill.now() - healed_at[0]
        return since_healed < TAIL_SECONDS or (since_healed < RECOVERY_LIMIT_SECONDS and not recovered())

    with partition.guarded() if scenario.partitions else nullcontext():
        thread = threading.Thread(target=nemesis, name=f"nemesis {scenario.name}", daemon=True)
        thread.start()
        asyncio.run(clients.run(rate, keep_going))
        thread.join()
    if scenario.partitions:
        left = (["loopback cut"] if partition.active() else []) + [f"split in {p}" for p in netsplit.active()]
        extra.setdefault("checks", {})["nothing of the partition is left in place"] = not left
        extra["left_in_place"] = left
    return _verdict(scenario, drill, history, extra, errors, rate)


def _verdict(
    scenario: Scenario, drill: Drill, history: History, extra: dict[str, Any], errors: list[str], rate: float
) -> Verdict:
    events = history.events
    seen = outcomes(events)
    for fault in drill.faults:
        fault.recovery_seconds = recovery(fault, seen)
        fault.rides_in_flight = in_flight(fault, seen)
    snapshot = checker.collect()
    found = checker.report(snapshot)
    violations: dict[str, list[Any]] = {**found["violations"], **check(events)}
    # Work left unresolved past the checker's bound (property 12, docs/properties.md):
    # reported apart from the violations, and like them it makes the verdict invalid.
    stuck: dict[str, list[Any]] = found["stuck"]
    if locked := locked_out(events, REBOOK_BOUND_SECONDS):
        violations["rider_locked_out"] = locked
    acknowledged = {r.ride_id for r in seen if r.ride_id}
    lost = sorted(acknowledged - set(snapshot.rides))
    if lost:
        violations["acknowledged_ride_lost"] = lost
    checks: dict[str, bool] = extra.pop("checks", {})
    if scenario.history_checks:
        checks.update(scenario.history_checks(events))
    for name, held in checks.items():
        if not held:
            violations.setdefault("scenario_check_failed", []).append(name)
    dead = dead_letters_since(int(drill.wall_started * 1000))
    if dead:
        violations["dead_lettered"] = dead
    if errors:
        violations["nemesis_failed"] = errors
    if not drill.faults:
        violations.setdefault("nemesis_failed", []).append("no fault was injected")
    elif unrecovered := not_recovered(drill.faults, RECOVERY_LIMIT_SECONDS):
        violations["not_recovered"] = unrecovered
    traces = _trace_ids(drill.wall_started)
    traced = sum(1 for r in seen if r.ride_id and traces.get(r.ride_id) == r.trace_id)
    recoveries = [f.recovery_seconds for f in drill.faults if f.recovery_seconds is not None]
    latencies = sorted(r.latency for r in seen if r.latency is not None and r.outcome == "completed")
    return {
        "scenario": scenario.name,
        "valid": not violations and not stuck,
        "rides": len(seen),
        "completed": sum(r.outcome == "completed" for r in seen),
        "cancelled": sum(r.state == "CANCELLED" for r in seen),
        "unfinished": sum(r.ended_at is None and r.outcome != "gave_up" for r in seen),
        "outcomes": dict(
            sorted(Counter(r.outcome or ("unfinished" if r.ended_at is None else r.state) for r in seen).items())
        ),
        "violations": violations,
        "stuck": stuck,
        "in_flight": found["in_flight"],
        "recovery_seconds": max(recoveries) if recoveries else None,
        "faults": [asdict(f) for f in drill.faults],
        "checks": checks,
        "seconds": round(drill.now(), 2),
        "rate": rate,
        "seed": drill.seed,
        "latency_seconds": _percentiles(latencies),
        "requests_retried": sum(1 for e in events if e.f == "request" and e.type == "invoke") - len(seen),
        "rides_with_client_trace_id": traced,
        "rides_checked_in_databases": len(snapshot.rides),
        **extra,
        "_history": events,
    }


def _percentiles(ordered: list[float]) -> dict[str, float] | None:
    if not ordered:
        return None
    return {
        "p50": round(percentile(ordered, 0.5), 3),
        "p95": round(percentile(ordered, 0.95), 3),
        "p99": round(percentile(ordered, 0.99), 3),
        "max": round(ordered[-1], 3),
    }
