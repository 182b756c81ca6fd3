"""The nemeses: what each drill breaks while rides are in flight. Each is a function of
the Drill (which injects faults and records their windows) returning the scenario's own
findings; findings under "checks" must all hold for the verdict to be valid."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import grpc
import psycopg
import redis
from kazoo.client import KazooClient

from deploy.envoy import faults as mesh
from deploy.local import lifecycle
from drills import cluster, kraft, lock_pause, partition
from drills.engine import RECOVERY_LIMIT_SECONDS, STATES, STEPS, TRIP_DB, Drill, DrillError, Scenario
from drills.history import Event, Fault, locked_out
from drills.workload import REBOOK_BOUND_SECONDS, Mix
from ridesaga.psp.v1 import psp_pb2, psp_pb2_grpc
from services.blocks.clocks import Timestamp
from services.blocks.downstream import BREAKERS_KEY
from services.driver.participant import RESERVE_LEASE_MS
from services.runtime.topology import INFRA, SERVICES, SWEEPERS, service, sweeper_source
from services.trip.sweeper import ELECTION_PATH, SESSION_TIMEOUT_SECONDS

KILLABLE = tuple(s.name for s in SERVICES)  # rider, trip, driver, payment, psp
ENVOY_FAULT_TARGETS = ("trip", "psp")  # rider->trip and payment->psp calls pass these
FAULT_SECONDS = 10.0
# payment's breaker opens after 5 failed calls of its window; black-holed, each fails only
# at its 5 s deadline, one at a time: 25 s, and a margin.
PSP_CUT_SECONDS = 35.0
PAUSE_PAST_SESSION_SECONDS = 8.0  # the sweepers' ZooKeeper session times out after 4 s
SPLIT_HOLD_SECONDS = 3.0  # split_brain_sweeper: the cut lasts this long after the new leader's claim
SKEW_MS = -5000
BREAKER = "payment->psp"
BREAKER_LEVEL = {"closed": 0, "half_open": 1, "open": 2}
# Beyond the steps every ride goes through, the states where killing each service tests
# something more: trip, the orchestrator, in every state; rider between trip creating the
# ride and its answer to the client; driver when a re-match's ReserveDriver is due; payment
# during the VoidPayment compensation.
MORE_STATES = {
    "trip": ("PENDING", "MATCH_BACKOFF", "COMPENSATING"),
    "rider": ("PENDING",),
    "driver": ("MATCH_BACKOFF",),
    "payment": ("COMPENSATING",),
}
# Only riders stranded where no driver is make these happen (they wait, then cancel).
NEED_STRANDED = frozenset({"MATCH_BACKOFF", "COMPENSATING"})
STRANDED_EVERY = 4


@dataclass(frozen=True)
class KillAtSteps:
    """SIGKILL `target` once at each of `steps` (saga states), in a random (seeded) order."""

    target: str
    steps: tuple[str, ...]

    def __call__(self, d: Drill) -> dict[str, Any]:
        order = list(self.steps)
        random.Random(d.seed).shuffle(order)
        for step in order:
            d.kill(self.target, at_step=step)
        return {"killed_at_steps": order}


def _kills(name: str, target: str, steps: tuple[str, ...], doc: str) -> Scenario:
    mix = Mix(stranded_every=STRANDED_EVERY) if NEED_STRANDED & set(steps) else Mix()
    return Scenario(name, doc, KillAtSteps(target, steps), mix=mix)


def kill_envoy(target: str) -> Callable[[Drill], dict[str, Any]]:
    def nemesis(d: Drill) -> dict[str, Any]:
        step = random.Random(d.seed).choice(STEPS)
        d.kill(f"{target}-envoy", at_step=step)
        return {"killed_at_steps": [step]}

    return nemesis


def restart(target: str) -> Callable[[Drill], dict[str, Any]]:
    def nemesis(d: Drill) -> dict[str, Any]:
        step = random.Random(d.seed).choice(STEPS)
        d.restart(target, at_step=step)
        return {"restarted_at_step": step}

    return nemesis


def _zk_mode(port: int) -> str:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
            conn.sendall(b"srvr")
            reply = conn.recv(4096).decode(errors="replace")
    except OSError:
        return "down"
    return next((line.split(":", 1)[1].strip() for line in reply.splitlines() if line.startswith("Mode:")), "?")


def kill_zk_leader(d: Drill) -> dict[str, Any]:
    """In a three-node ensemble the leader dies and the followers elect a new one; with a
    single node the only server dies (every session is lost) and comes back."""
    nodes = {name: c for name, c in d.components.items() if name.startswith("zookeeper")}
    d.wait_for_step(random.Random(d.seed).choice(STEPS))
    modes = {name: _zk_mode(c.port or 0) for name, c in nodes.items()}
    leader = next((n for n, m in modes.items() if m in ("leader", "standalone")), None)
    if leader is None:
        raise DrillError(f"kill-zk-leader: no ZooKeeper leader among {modes}")
    old_pid = d.pid(leader)
    with d.window("kill", leader, mode=modes[leader], nodes=len(nodes)):
        os.kill(old_pid, signal.SIGKILL)
        new_leader = _until(
            lambda: next((n for n, c in nodes.items() if _zk_mode(c.port or 0) in ("leader", "standalone")), None),
            60,
            "a ZooKeeper leader",
        )
        d.wait_healthy(leader, old_pid=old_pid)
    return {
        "zookeeper_nodes": len(nodes),
        "old_zk_leader": leader,
        "new_zk_leader": new_leader,
        "checks": {"a leader was elected again": bool(new_leader)},
    }


def _until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.1)
    raise DrillError(f"no {what} within {timeout:.0f}s")


def _eventually(condition: Callable[[], Any], timeout: float) -> bool:
    """Whether `condition` came to hold within `timeout` (for a check, not a precondition)."""
    try:
        _until(condition, timeout, "")
    except DrillError:
        return False
    return True


def _sweeper_leader() -> tuple[int, str]:
    with psycopg.connect(TRIP_DB, autocommit=True) as conn:
        row = conn.execute("SELECT epoch, leader FROM sweeper_epoch WHERE id = 1").fetchone()
    return (int(row[0]), str(row[1])) if row else (0, "")


def _count(sql: str, params: tuple[Any, ...]) -> int:
    with psycopg.connect(TRIP_DB, autocommit=True) as conn:
        row = conn.execute(sql.encode(), params).fetchone()
    return int(row[0]) if row else 0


def _refusals(sweeper: str, epoch: int, since: float) -> int:
    """Sweeps of `sweeper` under `epoch` refused since `since` (a newer leader had claimed)."""
    return _count(
        "SELECT count(*) FROM sweeper_rejections WHERE sweeper = %s AND epoch = %s AND at >= to_timestamp(%s)",
        (sweeper, epoch, since),
    )


def _stay_paused_past_session(d: Drill, pause: Fault) -> None:
    time.sleep(max(0.0, PAUSE_PAST_SESSION_SECONDS - (d.now() - pause.start)))  # the pause's length


def leader_pause(d: Drill) -> dict[str, Any]:
    """SIGSTOP the sweeper leader past its ZooKeeper session: the other sweeper takes over
    with a higher epoch; the old one, resumed, is refused when it writes."""
    _until(lambda: _sweeper_leader()[0] > 0, 30, "sweeper leader")
    d.wait_for_step(random.Random(d.seed).choice(STEPS))
    old_epoch, old_leader = _sweeper_leader()
    with d.paused(old_leader, epoch=old_epoch) as pause:
        _until(lambda: _sweeper_leader()[0] > old_epoch, 30, "new sweeper leader")
        _stay_paused_past_session(d, pause)
    resumed = time.time()
    refused = _until(
        lambda: _refusals(old_leader, old_epoch, resumed - 0.5), 20, "refused write from the resumed leader"
    )
    new_epoch, new_leader = _sweeper_leader()
    return {
        "old_sweeper": {"leader": old_leader, "epoch": old_epoch},
        "new_sweeper": {"leader": new_leader, "epoch": new_epoch},
        "stale_writes_refused": refused,
        "checks": {
            "a new leader took over with a higher epoch": new_epoch > old_epoch,
            "stale write refused": refused > 0,
        },
    }


def _sweeps(sweeper: str) -> tuple[int, int]:
    """(epoch, runs): the epoch of the sweeper's last accepted sweep, and how many it made."""
    with psycopg.connect(TRIP_DB, autocommit=True) as conn:
        row = conn.execute("SELECT epoch, runs FROM sweeper_runs WHERE sweeper = %s", (sweeper,)).fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


def _overdue_at_last_sweep(sweeper: str) -> int:
    """Live rides already past their deadline when `sweeper` last swept: it has sent each
    its StepTimedOut (or had, less than RESEND_SECONDS before)."""
    return _count(
        "SELECT count(*) FROM rides, sweeper_runs s WHERE s.sweeper = %s"
        " AND rides.deadline_ms <= (extract(epoch FROM s.last_run) * 1000)::bigint",
        (sweeper,),
    )


def _live_rides() -> list[str]:
    with psycopg.connect(TRIP_DB, autocommit=True) as conn:
        rows = conn.execute("SELECT ride_id FROM rides WHERE state NOT IN ('COMPLETED', 'CANCELLED')").fetchall()
    return [str(ride_id) for (ride_id,) in rows]


def _still_live(ride_ids: list[str]) -> int:
    return _count(
        "SELECT count(*) FROM rides WHERE ride_id = ANY(%s::uuid[]) AND state NOT IN ('COMPLETED', 'CANCELLED')",
        (ride_ids,),
    )


def trip_pause_sweeper_change(d: Drill) -> dict[str, Any]:
    """SIGSTOP trip (its orchestrator) until the sweeper's timeouts queue up in Kafka, then
    change the sweeper leader under them (the leader SIGSTOPped past its ZooKeeper session)
    before trip resumes: the old epoch's timeouts are fenced, the new leader's applied, and
    every ride still ends."""
    _until(lambda: _sweeper_leader()[0] > 0, 30, "sweeper leader")
    d.wait_for_step("MATCH_BACKOFF")  # a ride whose timeout is due within a second
    old_epoch, old_leader = _sweeper_leader()
    # The old leader is paused inside trip's pause and resumed after it: two stacks.
    with ExitStack() as old_leader_paused:
        with d.paused("trip") as trip_pause:
            in_flight = _live_rides()
            _until(lambda: _overdue_at_last_sweep(old_leader), 30, "ride timed out while trip is paused")
            # The sweep that found them overdue has sent their timeouts once the next began.
            runs = _sweeps(old_leader)[1]
            _until(lambda: _sweeps(old_leader)[1] > runs, 10, f"next sweep of {old_leader}")
            sweeper_pause = old_leader_paused.enter_context(d.paused(old_leader, epoch=old_epoch))
            _until(lambda: _sweeper_leader()[0] > old_epoch, 30, "new sweeper leader")
            new_epoch, new_leader = _sweeper_leader()
            runs = _sweeps(new_leader)[1]

            def new_leader_swept_twice() -> bool:
                epoch, now = _sweeps(new_leader)
                return epoch == new_epoch and now >= runs + 2

            _until(new_leader_swept_twice, 10, f"two sweeps of {new_leader}")
            queued = _count("SELECT count(*) FROM rides WHERE deadline_ms <= %s", (int(time.time() * 1000),))
        trip_resumed = time.time()
        d.wait_healthy("trip")
        _stay_paused_past_session(d, sweeper_pause)
    leader_resumed = time.time()
    refused = _until(
        lambda: _refusals(old_leader, old_epoch, leader_resumed - 0.5), 20, "refused write from the resumed leader"
    )
    ended = _eventually(lambda: not _still_live(in_flight), RECOVERY_LIMIT_SECONDS)
    applied = _count(
        "SELECT count(*) FROM saga_log WHERE message_id LIKE '%%:timeout:%%' AND at >= to_timestamp(%s)",
        (trip_resumed,),
    )
    return {
        "old_sweeper": {"leader": old_leader, "epoch": old_epoch},
        "new_sweeper": {"leader": new_leader, "epoch": new_epoch},
        "trip_paused_seconds": round((trip_pause.end or 0) - trip_pause.start, 2),
        "rides_in_flight_at_pause": len(in_flight),
        "timeouts_queued_at_resume": queued,
        "timeout_entries_after_resume": applied,
        "stale_writes_refused": refused,
        "checks": {
            "timeouts were queued while trip was paused": queued > 0,
            "a new sweeper leader took over with a higher epoch": new_epoch > old_epoch,
            "the sweeper leader changed": new_leader != old_leader,
            "the resumed old leader's write was refused": refused > 0,
            f"every ride in flight at the pause ended within {RECOVERY_LIMIT_SECONDS:.0f} s": ended,
        },
    }


def _claimed_at(epoch: int) -> float:
    """When (wall clock, from PostgreSQL) the epoch row was claimed by `epoch`, 0 if it was not."""
    with psycopg.connect(TRIP_DB, autocommit=True) as conn:
        row = conn.execute(
            "SELECT extract(epoch FROM since) FROM sweeper_epoch WHERE id = 1 AND epoch = %s", (epoch,)
        ).fetchone()
    return float(row[0]) if row else 0.0


def _last_sweep_at(sweeper: str) -> float:
    with psycopg.connect(TRIP_DB, autocommit=True) as conn:
        row = conn.execute(
            "SELECT extract(epoch FROM last_run) FROM sweeper_runs WHERE sweeper = %s", (sweeper,)
        ).fetchone()
    return float(row[0]) if row else 0.0


def _candidates(zookeeper: str) -> list[tuple[int, str]]:
    """(epoch, sweeper) of every sweeper in the election, lowest (the leader) first."""
    client = KazooClient(hosts=zookeeper, timeout=SESSION_TIMEOUT_SECONDS)
    client.start(10)
    try:
        found = []
        for node in client.get_children(ELECTION_PATH):
            data, _ = client.get(f"{ELECTION_PATH}/{node}")
            found.append((int(node.rsplit("__lock__", 1)[-1]), data.decode()))
        return sorted(found)
    finally:
        client.stop()
        client.close()


def _settled_leader(zookeeper: str) -> tuple[int, str]:
    """The sweeper leader once both sweepers are in the election, the lower one has claimed
    its epoch and swept in it: a cut then leaves a successor waiting (not a restart's race)."""

    def settled() -> tuple[int, str] | None:
        queue = _candidates(zookeeper)
        if len(queue) != len(SWEEPERS) or _sweeper_leader() != queue[0]:
            return None
        return queue[0] if _sweeps(queue[0][1])[0] == queue[0][0] else None

    found: tuple[int, str] = _until(settled, 60, "both sweepers in the election, the leader sweeping")
    return found


def _split_from_zookeeper(d: Drill, variant: str) -> dict[str, Any]:
    """One variant of split_brain_sweeper: the leader cut off from every ZooKeeper client
    port (it still reaches PostgreSQL and Kafka) until the other sweeper has claimed a newer
    epoch and SPLIT_HOLD_SECONDS more; with "stonith" the drill also SIGKILLs it at the cut."""
    zookeeper = tuple(c.port or 0 for name, c in d.components.items() if name.startswith("zookeeper"))
    old_epoch, old_leader = _settled_leader(",".join(f"127.0.0.1:{port}" for port in zookeeper))
    cut = partition.Cut((), zookeeper, side_sources=(sweeper_source(old_leader),))
    with d.window("partition", old_leader, variant=variant, epoch=old_epoch, cut=repr(cut)), partition.cutting(cut):
        cut_at = time.time()
        if variant == "stonith":  # the fencing agent powers the isolated node off before anyone takes over
            old_pid = d.pid(old_leader)
            os.kill(old_pid, signal.SIGKILL)
        runs_at_cut = _sweeps(old_leader)[1]
        new_epoch = _until(lambda: _sweeper_leader()[0] if _sweeper_leader()[0] > old_epoch else 0, 30, "new leader")
        claimed = _claimed_at(new_epoch)
        time.sleep(SPLIT_HOLD_SECONDS)  # the split's length once both believe they lead
        epoch_now, runs_now = _sweeps(old_leader)
        swept = runs_now - runs_at_cut if epoch_now == old_epoch else 0
        refused_while_cut = _refusals(old_leader, old_epoch, cut_at)
        last_sweep = _last_sweep_at(old_leader)
    if variant == "stonith":
        d.wait_healthy(old_leader, old_pid=old_pid)
    else:  # reconnected, it finds its session expired: a self-fencing leader's goodbye write is refused
        _eventually(lambda: _refusals(old_leader, old_epoch, cut_at) > refused_while_cut, 15)
    refused = _refusals(old_leader, old_epoch, cut_at)
    new_leader = _sweeper_leader()[1] if _sweeper_leader()[0] == new_epoch else "?"
    return {
        "old_leader": {"sweeper": old_leader, "epoch": old_epoch},
        "new_leader": {"sweeper": new_leader, "epoch": new_epoch},
        "seconds_from_cut_to_new_claim": round(claimed - cut_at, 2),
        "old_leader_sweeps_after_cut": swept,
        "old_leader_last_sweep_after_cut_seconds": round(max(0.0, last_sweep - cut_at), 2),
        "old_leader_writes_refused_while_cut": refused_while_cut,
        "old_leader_writes_refused": refused,
        "_stopped_before_the_claim": last_sweep < claimed,
    }


def split_brain_sweeper(d: Drill) -> dict[str, Any]:
    """Cut the sweeper leader off from ZooKeeper while it still reaches PostgreSQL and Kafka:
    once its session expires the other sweeper claims a newer epoch, and both believe they
    lead. Three times, each on the then leader: without self-fencing it sweeps on until the
    epoch fence refuses it; self-fencing, it stops as soon as its connection is suspended;
    with STONITH the drill kills it at the cut, and the new leader takes over from a dead node."""
    found: dict[str, dict[str, Any]] = {}
    with lifecycle.reconfigured(lambda stack: stack.replace(sweeper_self_fence=False)):  # restarts both sweepers
        found["without_self_fencing"] = _split_from_zookeeper(d, "without self-fencing")
    found["self_fencing"] = _split_from_zookeeper(d, "self-fencing")
    found["stonith"] = _split_from_zookeeper(d, "stonith")
    without, fencing, stonith = found["without_self_fencing"], found["self_fencing"], found["stonith"]
    checks = {
        f"{name}: a new leader with a higher epoch": v["new_leader"]["epoch"] > v["old_leader"]["epoch"]
        and v["new_leader"]["sweeper"] not in ("?", v["old_leader"]["sweeper"])
        for name, v in found.items()
    }
    checks |= {
        "without self-fencing: the old leader swept on and its write after the claim was refused": (
            without["old_leader_writes_refused_while_cut"] >= 1
        ),
        "self-fencing: the old leader stopped before the new claim (suspended, at most one sweep in flight)": (
            fencing.pop("_stopped_before_the_claim") and fencing["old_leader_writes_refused_while_cut"] == 0
        ),
        "self-fencing: at most one refused write (on its way out)": fencing["old_leader_writes_refused"] <= 1,
        "stonith: no stale sweep and no refusal": stonith["old_leader_sweeps_after_cut"] == 0
        and stonith["old_leader_writes_refused"] == 0,
    }
    for v in (without, stonith):
        v.pop("_stopped_before_the_claim")
    return {**found, "checks": checks}


def riders_give_up(d: Drill) -> dict[str, Any]:
    """Riders send RequestRide once and give up on any error (no retry with the key) while
    trip and rider are SIGKILLed as rides are being requested; each rider who gave up books
    a new ride with a new key, and the ride it abandoned never locks it out."""
    rng = random.Random(d.seed)
    kills = [("trip", "PENDING"), ("rider", "PENDING"), ("trip", rng.choice(STEPS))]
    rng.shuffle(kills)
    for target, step in kills:
        d.kill(target, at_step=step)
    return {"killed_at_steps": [f"{target} {step}" for target, step in kills]}


def nobody_locked_out(events: list[Event]) -> dict[str, bool]:
    gave_up = sum(1 for e in events if e.f == "request" and e.value.get("gave_up"))
    return {
        "some riders gave up on their request": gave_up > 0,
        f"every rider who gave up had a new ride accepted within {REBOOK_BOUND_SECONDS:.0f} s": not locked_out(
            events, REBOOK_BOUND_SECONDS
        ),
    }


def envoy_faults(kind: str) -> Callable[[Drill], dict[str, Any]]:
    settings = {"delay": {"delay_percent": 100, "delay_ms": 800}, "abort": {"abort_percent": 30}}[kind]

    def nemesis(d: Drill) -> dict[str, Any]:
        d.wait_for_step(random.Random(d.seed).choice(STEPS))
        with d.window(f"envoy {kind}", ",".join(f"{t}-envoy" for t in ENVOY_FAULT_TARGETS), **settings):
            try:
                for target in ENVOY_FAULT_TARGETS:
                    mesh.set_faults(target, **settings)
                time.sleep(FAULT_SECONDS)  # the length of the fault window, not a synchronisation
            finally:
                for target in ENVOY_FAULT_TARGETS:
                    mesh.set_faults(target)
        return {"envoy_fault": settings}

    return nemesis


def _psp_outage(on: bool) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{service('psp').ingress_port}") as channel:
        psp_pb2_grpc.PspServiceStub(channel).SetFaults(psp_pb2.Faults(outage=on), timeout=5)


class _BreakerSamples:
    """payment->psp's breaker as payment publishes it, sampled over a drill."""

    def __init__(self, d: Drill) -> None:
        self.d = d
        self.client = redis.Redis(host="127.0.0.1", port=INFRA.redis, decode_responses=True)
        self.points: list[tuple[float, int]] = []
        self.seen: set[str] = set()

    def sample(self) -> str:
        raw = self.client.hget(BREAKERS_KEY, BREAKER)
        state = str(json.loads(str(raw))["state"]) if raw else "closed"
        self.points.append((round(self.d.now(), 2), BREAKER_LEVEL[state]))
        self.seen.add(state)
        return state

    def during(self, seconds: float) -> None:
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            self.sample()
            time.sleep(0.25)  # the breaker's sampling period

    def findings(self, fault: str, started: float) -> dict[str, Any]:
        opened = "open" in self.seen
        first_open = next((t for t, level in self.points if level == BREAKER_LEVEL["open"]), None)
        closed = _until(lambda: self.sample() == "closed", 60, f"closed breaker after the {fault}")
        self.client.close()
        return {
            "breaker_opened": opened,
            "seconds_from_the_fault_to_open": None if first_open is None else round(first_open - started, 2),
            "breaker_closed_after_recovery": bool(closed),
            "checks": {f"breaker opened during the {fault}": opened, f"breaker closed after the {fault}": bool(closed)},
            "_series": {"payment->psp breaker": {"points": self.points, "ticks": ["closed", "half-open", "open"]}},
        }


def psp_outage(d: Drill) -> dict[str, Any]:
    """The card processor fails every call for a while: payment's breaker opens and rides
    fail fast (cancelled, no hold left); it half-opens and closes once the psp is back."""
    breaker = _BreakerSamples(d)
    d.wait_for_step("MATCHING")
    with d.window("outage", "psp") as fault:
        try:
            _psp_outage(True)
            breaker.during(FAULT_SECONDS + 2)
        finally:
            _psp_outage(False)
    return breaker.findings("outage", fault.start)


def partition_payment_from_psp(d: Drill) -> dict[str, Any]:
    """A network partition between payment and the card processor: every packet to or from
    the psp's public port is dropped silently (payment is its only caller), so each call
    hangs until its 5 s deadline instead of failing fast, and payment's participant, which
    handles its commands one at a time, sends one call per 5 s. The count-based breaker
    needs 5 failed calls to open, 25 s of black hole, where a fast-failing outage opens it
    in about a second (psp-outage): the cut lasts PSP_CUT_SECONDS. Rides waiting on an
    authorization stall and are re-sent; after the heal the breaker half-opens and
    closes and the saga goes on."""
    breaker = _BreakerSamples(d)
    d.wait_for_step("MATCHING")
    cut = partition.isolate((service("psp").ingress_port,))
    with d.window("partition", "payment | psp", port=service("psp").ingress_port) as fault, partition.cutting(cut):
        breaker.during(PSP_CUT_SECONDS)
    return breaker.findings("partition", fault.start)


def _inversions(keys: list[Any]) -> int:
    return sum(1 for i in range(len(keys)) for j in range(i + 1, len(keys)) if keys[i] > keys[j])


def clock_skew(d: Drill) -> dict[str, Any]:
    """payment's wall clock runs 5 s behind while rides go through it: ordered by wall
    clock the saga logs put effects before causes; ordered by HLC they never do."""
    with (
        d.window("clock skew", "payment", skew_ms=SKEW_MS),
        lifecycle.reconfigured(
            lambda stack: stack.replace(clock_skew_ms=(("payment", SKEW_MS),))  # restarts payment, skewed
        ),
    ):
        skewed_from = time.time()
        _until(lambda: _completed_since(skewed_from) >= 10, 90, "ten rides completed through skewed payment")
    with psycopg.connect(TRIP_DB, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT ride_id, message_id, min(message_hlc), min(sender_wall_ms) FROM saga_log"
            " WHERE message_hlc <> '' AND at >= to_timestamp(%s) GROUP BY ride_id, message_id ORDER BY min(seq)",
            (skewed_from,),
        ).fetchall()
    by_ride: dict[str, list[tuple[str, int]]] = {}
    for ride_id, _, hlc, wall in rows:
        by_ride.setdefault(str(ride_id), []).append((hlc, wall))
    wall_inv = sum(_inversions([w for _, w in msgs]) for msgs in by_ride.values())
    hlc_inv = sum(_inversions([Timestamp.parse(h) for h, _ in msgs]) for msgs in by_ride.values())
    return {
        "rides_through_skewed_clock": len(by_ride),
        "wall_clock_order_inversions": wall_inv,
        "hlc_order_inversions": hlc_inv,
        "checks": {"the skew shows in wall-clock order": wall_inv > 0, "HLC order keeps causality": hlc_inv == 0},
    }


def _completed_since(since: float) -> int:
    with psycopg.connect(TRIP_DB, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM rides WHERE state = 'COMPLETED' AND updated_at >= to_timestamp(%s)", (since,)
        ).fetchone()
    return int(row[0]) if row else 0


def lock_pauses(d: Drill) -> dict[str, Any]:
    """A lock holder pauses past its lease while rides go on: Redlock without fencing
    double-books; in the driver service's own reservation path the fenced lock refuses
    the stale write."""
    d.wait_for_step("MATCHING")
    with d.window("pause", "lock holder", redlock_lease_ms=lock_pause.LEASE_MS, lease_ms=RESERVE_LEASE_MS):
        found = lock_pause.run()
    return {
        "redlock_without_fencing": found["redlock_without_fencing"],
        "fenced_lock": found["fenced_lock"],
        "checks": {"the driver service's fenced reservation refused the stale write": bool(found["valid"])},
    }


def nemesis_mix(d: Drill) -> dict[str, Any]:
    """A random schedule (seeded) of the faults above, one after another."""
    rng = random.Random(d.seed)

    def killing(name: str) -> Callable[[], Any]:
        return lambda: d.kill(name, at_step=rng.choice(STEPS))

    def restarting(name: str) -> Callable[[], Any]:
        return lambda: d.restart(name, at_step=rng.choice(STEPS))

    pool: list[tuple[str, Callable[[], Any]]] = []
    for target in KILLABLE:
        pool.append((f"kill {target}", killing(target)))
        pool.append((f"kill {target}-envoy", killing(f"{target}-envoy")))
    for infra in ("redis", "postgres", "kafka"):
        pool.append((f"restart {infra}", restarting(infra)))
    pool.append(("pause sweeper leader", lambda: leader_pause(d)))
    schedule = rng.sample(pool, 6)
    for name, fault in schedule:
        d.log(f"nemesis: {name}")
        fault()
        time.sleep(rng.uniform(0.5, 2.0))  # a random gap between faults (the schedule, not synchronisation)
    return {"schedule": [name for name, _ in schedule]}


def all_scenarios() -> dict[str, Scenario]:
    found: dict[str, Scenario] = {}

    def add(name: str, doc: str, nemesis: Callable[[Drill], dict[str, Any]], **kw: Any) -> None:
        found[name] = Scenario(name, doc, nemesis, **kw)

    for target in KILLABLE:
        steps = tuple(s for s in STATES if s in STEPS or s in MORE_STATES.get(target, ()))
        doc = f"SIGKILL {target} once in each of the saga states {', '.join(steps)}, in a random order"
        found[f"kill-{target}"] = _kills(f"kill-{target}", target, steps, doc)
    for target in KILLABLE:
        add(f"kill-{target}-envoy", f"SIGKILL {target}'s Envoy sidecar at a random saga step", kill_envoy(target))
    for infra in ("kafka", "postgres", "redis"):
        add(f"restart-{infra}", f"restart {infra} (stop, start) at a random saga step", restart(infra))
    add("kill-zk-leader", kill_zk_leader.__doc__ or "", kill_zk_leader)
    add("kill-kraft-leader", kraft.kill_leader.__doc__ or "", kraft.kill_leader)
    add("partition-kraft-leader", kraft.partition_leader.__doc__ or "", kraft.partition_leader, partitions=True)
    add("kraft-partition-soak", kraft.partition_soak.__doc__ or "", kraft.partition_soak, partitions=True)
    add("leader-pause", leader_pause.__doc__ or "", leader_pause)
    add(
        "trip-pause-sweeper-change",
        trip_pause_sweeper_change.__doc__ or "",
        trip_pause_sweeper_change,
        mix=Mix(stranded_every=STRANDED_EVERY),
    )
    add("split-brain-sweeper", split_brain_sweeper.__doc__ or "", split_brain_sweeper, partitions=True)
    add(
        "riders-give-up",
        riders_give_up.__doc__ or "",
        riders_give_up,
        mix=Mix(gives_up=True),
        history_checks=nobody_locked_out,
    )
    add("envoy-delay", f"delay every call into {' and '.join(ENVOY_FAULT_TARGETS)} by 800 ms", envoy_faults("delay"))
    add("envoy-abort", f"abort 30 % of calls into {' and '.join(ENVOY_FAULT_TARGETS)}", envoy_faults("abort"))
    add("psp-outage", psp_outage.__doc__ or "", psp_outage)
    add(
        "partition-payment-from-psp",
        partition_payment_from_psp.__doc__ or "",
        partition_payment_from_psp,
        partitions=True,
    )
    add("clock-skew", clock_skew.__doc__ or "", clock_skew)
    add("lock-pause", lock_pauses.__doc__ or "", lock_pauses)
    add("nemesis", nemesis_mix.__doc__ or "", nemesis_mix, rides=60)
    # The driver cluster (make up DRIVERS=3): membership under crash, freeze, cut, deploy.
    add("kill-driver-replica", cluster.kill_replica.__doc__ or "", cluster.kill_replica)
    add("pause-driver-replica", cluster.pause_replica.__doc__ or "", cluster.pause_replica)
    add("partition-driver-replica", cluster.partition_replica.__doc__ or "", cluster.partition_replica, partitions=True)
    add("rolling-restart-drivers", cluster.rolling_restart.__doc__ or "", cluster.rolling_restart)
    return found


def at_step(name: str) -> Scenario | None:
    """kill-SERVICE-at-STATE, e.g. kill-payment-at-CAPTURING or kill-trip-at-match-backoff:
    one kill when a ride is in that saga state (any but the terminal ones)."""
    target, sep, step = name.removeprefix("kill-").partition("-at-")
    state = step.upper().replace("-", "_")
    if not name.startswith("kill-") or not sep or target not in KILLABLE or state not in STATES:
        return None
    return _kills(name, target, (state,), f"SIGKILL {target} when a ride is {state}")
