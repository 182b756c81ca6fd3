"""The invariant checker (SPEC section 7, properties 1, 2, 3, 4, 7 and 8).

`check(snapshot)` is pure: it takes what the system recorded (trip's rides and saga log,
payment's holds and ledger, driver's reservations, rider's acknowledged requests) and
what the psp recorded on its own, and lists every violation. `collect()` reads a
snapshot from the live databases and the psp's API."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import grpc
import psycopg

from ridesaga.psp.v1 import psp_pb2, psp_pb2_grpc
from services.shared.topology import INFRA, service

TERMINAL = {"COMPLETED", "CANCELLED"}
LIVE_WITH_DRIVER = {"OFFERED", "ACCEPTED", "CAPTURING"}
RELEASE_BOUND_MS = 30_000  # how long after a ride ends its driver may still be held
RIDE_PREFIX = "ride "  # payment describes every psp call as "ride <ride_id>"


@dataclass(frozen=True)
class RideRecord:
    state: str
    outcome: str
    driver_id: str
    fare_cents: int
    updated_ms: int = 0


@dataclass(frozen=True)
class Movement:
    charge_id: str
    kind: str  # AUTHORIZE, CAPTURE, VOID, REFUND
    amount_cents: int


@dataclass
class Snapshot:
    rides: dict[str, RideRecord] = field(default_factory=dict)
    saga_log: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    ledger: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    reservations: dict[str, str] = field(default_factory=dict)  # driver_id -> ride_id
    movements: dict[str, list[Movement]] = field(default_factory=dict)  # ride_id -> psp movements
    acknowledged: set[str] = field(default_factory=set)  # ride ids answered to riders
    taken_ms: int = 0


def check(s: Snapshot) -> dict[str, list[Any]]:
    v: dict[str, list[Any]] = defaultdict(list)
    for ride_id, moves in s.movements.items():
        kinds = Counter(m.kind for m in moves)
        # Property 1: one hold and at most one capture per ride.
        if kinds["CAPTURE"] > 1 or kinds["AUTHORIZE"] > 1:
            v["charged_twice"].append({"ride_id": ride_id, "movements": dict(kinds)})
        held = sum(m.amount_cents for m in moves if m.kind == "AUTHORIZE")
        captured = sum(m.amount_cents for m in moves if m.kind == "CAPTURE")
        # Property 3: captured <= authorized.
        if captured > held:
            v["captured_more_than_authorized"].append({"ride_id": ride_id, "held": held, "captured": captured})
        ride = s.rides.get(ride_id)
        if ride is None:
            v["money_for_unknown_ride"].append(ride_id)
            continue
        # Property 4: no hold left open for a cancelled ride.
        if ride.state == "CANCELLED" and kinds["AUTHORIZE"] > kinds["VOID"] + kinds["CAPTURE"]:
            v["open_hold_on_cancelled_ride"].append(ride_id)
        if ride.state == "CANCELLED" and captured:
            v["cancelled_ride_charged"].append({"ride_id": ride_id, "captured": captured})
        # Property 3: the ledger agrees with the money the psp moved.
        debited = -sum(c for account, c in s.ledger.get(ride_id, []) if account == "rider")
        if debited != captured:
            v["ledger_disagrees_with_psp"].append({"ride_id": ride_id, "ledger": debited, "psp": captured})
    for ride_id, ride in s.rides.items():
        # Property 2: every ride reaches a terminal state.
        if ride.state not in TERMINAL:
            v["not_terminal"].append({"ride_id": ride_id, "state": ride.state})
        written_off = any(account == "platform" and cents < 0 for account, cents in s.ledger.get(ride_id, []))
        if (
            ride.state == "COMPLETED"
            and not written_off
            and not any(m.kind == "CAPTURE" for m in s.movements.get(ride_id, []))
        ):
            # (A deferred ride the processor declined later is written off: the platform paid.)
            v["completed_without_capture"].append(ride_id)
        # Property 3: each ride's entries sum to zero.
        total = sum(c for _, c in s.ledger.get(ride_id, []))
        if total != 0:
            v["unbalanced_ledger"].append({"ride_id": ride_id, "sum": total})
        # Property 8: nothing compensated after the pivot; compensations in reverse order.
        log = s.saga_log.get(ride_id, [])
        pivot = next((i for i, entry in enumerate(log) if entry == ("driver_accepts", "ok")), None)
        compensated = [i for i, (_, status) in enumerate(log) if status in ("compensating", "compensated")]
        if pivot is not None and compensated:
            v["compensated_after_pivot"].append(ride_id)
        order = [step for step, status in log if status == "compensated"]
        if (
            order.count("void_payment")
            and order.count("release_driver")
            and order.index("void_payment") < order.index("release_driver")
        ):
            v["compensations_out_of_order"].append(ride_id)
    # Property 4: no driver reserved by two live rides, none held by a finished one.
    by_driver: defaultdict[str, list[str]] = defaultdict(list)
    for ride_id, ride in s.rides.items():
        if ride.state in LIVE_WITH_DRIVER and ride.driver_id:
            by_driver[ride.driver_id].append(ride_id)
    for driver_id, rides in by_driver.items():
        if len(rides) > 1:
            v["driver_on_two_rides"].append({"driver_id": driver_id, "rides": sorted(rides)})
    for driver_id, ride_id in s.reservations.items():
        ride = s.rides.get(ride_id)
        # A finished ride's driver is released by a message of its own, just after the end.
        if ride is not None and ride.state in TERMINAL and s.taken_ms - ride.updated_ms > RELEASE_BOUND_MS:
            v["driver_held_by_finished_ride"].append({"driver_id": driver_id, "ride_id": ride_id})
    # Property 7: no acknowledged request lost.
    for ride_id in sorted(s.acknowledged - set(s.rides)):
        v["acknowledged_ride_lost"].append(ride_id)
    return dict(v)


def _rows(dbname: str, sql: str) -> list[tuple[Any, ...]]:
    conninfo = f"host=127.0.0.1 port={INFRA.postgres} dbname={dbname} user=postgres"
    with psycopg.connect(conninfo) as conn:
        return conn.execute(sql.encode()).fetchall()


def live_rides() -> int:
    """How many rides are still in flight (not COMPLETED or CANCELLED)."""
    rows = _rows("trip", "SELECT count(*) FROM rides WHERE state NOT IN ('COMPLETED', 'CANCELLED')")
    return int(rows[0][0]) if rows else 0


def collect() -> Snapshot:
    s = Snapshot()
    s.taken_ms = int(time.time() * 1000)
    for ride_id, state, outcome, driver_id, fare, updated in _rows(
        "trip",
        "SELECT ride_id, state, outcome, driver_id, fare_cents, (extract(epoch FROM updated_at) * 1000)::bigint"
        " FROM rides",
    ):
        s.rides[str(ride_id)] = RideRecord(state, outcome, driver_id, fare, updated)
    for ride_id, step, status in _rows("trip", "SELECT ride_id, step, status FROM saga_log ORDER BY seq"):
        s.saga_log.setdefault(str(ride_id), []).append((step, status))
    for ride_id, account, cents in _rows("payment", "SELECT ride_id, account, amount_cents FROM ledger_entries"):
        s.ledger.setdefault(str(ride_id), []).append((account, cents))
    for driver_id, ride_id in _rows("driver", "SELECT driver_id, ride_id FROM drivers WHERE ride_id IS NOT NULL"):
        s.reservations[str(driver_id)] = str(ride_id)
    for (ride_id,) in _rows("rider", "SELECT ride_id FROM idempotency_keys WHERE response IS NOT NULL"):
        s.acknowledged.add(str(ride_id))
    with grpc.insecure_channel(f"127.0.0.1:{service('psp').ingress_port}") as channel:
        reply = psp_pb2_grpc.PspServiceStub(channel).ListMovements(psp_pb2.ListMovementsRequest(), timeout=30)
    for m in reply.movements:
        if not m.description.startswith(RIDE_PREFIX):
            continue  # the processor's other merchants' money is none of our business
        ride_id = m.description.removeprefix(RIDE_PREFIX)
        s.movements.setdefault(ride_id, []).append(
            Movement(m.charge_id, psp_pb2.MovementKind.Name(m.kind), m.amount_cents)
        )
    return s


def report(s: Snapshot) -> dict[str, Any]:
    violations = check(s)
    return {"valid": not violations, "rides": len(s.rides), "violations": violations}
