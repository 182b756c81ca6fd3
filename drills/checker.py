"""The invariant checker (properties 1-4, 6-8, 11 and 12, docs/properties.md).

`check(snapshot)` is pure: it takes what the system recorded (trip's rides and saga log,
payment's holds, ledger and voids, driver's reservations and releases, rider's
acknowledged requests and live-ride slots) and what the psp recorded on its own.
`violations` lists what must never happen; `stuck` lists live work left unresolved for
longer than STUCK_BOUND_MS; younger live work is counted `in_flight`. `collect()` reads a
snapshot from the live databases and the psp's API."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import psycopg

from ridesaga.psp.v1 import psp_pb2, psp_pb2_grpc
from ridesaga.saga.v1 import saga_pb2
from services.runtime.topology import INFRA, service

TERMINAL = {"COMPLETED", "CANCELLED"}
LIVE_WITH_DRIVER = {"OFFERED", "ACCEPTED", "CAPTURING"}
OPEN_HOLDS = {"AUTHORIZED", "DEFERRED"}
PIVOT = ("driver_accepts", "ok")
COMPLETED = ("ride", "completed")
# Property 12: how long any work may stay unresolved before it is stuck. A live step is
# moved on by its timeout at most 30 s after it began (ACCEPTED, the longest of
# services/trip/saga.py STEP_TIMEOUT_MS); the sweeper sends the timeout within its 0.5 s
# sweep, or 4 s later if its leader died and a new one is elected within the ZooKeeper
# session, and sends it again 10 s later if it was not acted on (services/trip/sweeper.py).
# That is 44.5 s; the rest of the minute is for a crashed service to be restarted and to
# catch up. (A command re-sent on a late timeout pushes its deadline further out,
# services/trip/saga.py resend_wait_ms; the bound counts from the deadline, so it holds.) A driver's release, a late hold's void and a live-ride slot's reaping are due
# as soon as their ride ends, so the same bound holds them (the rider service's reaper
# must run more often than this).
STUCK_BOUND_MS = 60_000
# A reply in flight: a live ride is judged against the driver database only once it has
# not changed for this long (updated_at is its transaction's start, not its commit).
SETTLE_MS = 5_000
RIDE_PREFIX = "ride "  # payment describes every psp call as "ride <ride_id>"


@dataclass(frozen=True)
class RideRecord:
    state: str
    outcome: str
    driver_id: str
    fare_cents: int
    updated_ms: int = 0
    rider_id: str = ""
    hold_id: str = ""
    fence: int = 0
    deadline_ms: int | None = None


@dataclass(frozen=True)
class SagaEntry:
    step: str
    status: str
    at_ms: int = 0
    # For a timeout: the sweeper epoch it carried, and the epoch in force when applied.
    sweeper_epoch: int | None = None
    epoch_in_force: int | None = None


@dataclass(frozen=True)
class Movement:
    charge_id: str
    kind: str  # AUTHORIZE, CAPTURE, VOID, REFUND
    amount_cents: int
    created_ms: int = 0


@dataclass(frozen=True)
class Hold:
    charge_id: str  # '' while DEFERRED: nothing is at the psp until the ride is settled
    status: str  # AUTHORIZED, DEFERRED, CAPTURED, VOIDED, WRITTEN_OFF
    authorized_cents: int
    captured_cents: int
    updated_ms: int


@dataclass(frozen=True)
class Reservation:
    ride_id: str
    fence: int


@dataclass(frozen=True)
class Release:
    """A release driver handled: `<ride_id>:release_driver:<driver_id>:<fence>`."""

    driver_id: str
    fence: int
    handled_ms: int


@dataclass(frozen=True)
class LiveSlot:
    ride_id: str
    claimed_ms: int


@dataclass
class Snapshot:
    rides: dict[str, RideRecord] = field(default_factory=dict)
    saga_log: dict[str, list[SagaEntry]] = field(default_factory=dict)
    ledger: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    holds: dict[str, Hold] = field(default_factory=dict)  # ride_id -> payment's hold
    voided: dict[str, str] = field(default_factory=dict)  # ride_id -> hold payment voided for `<ride_id>:void_payment`
    reservations: dict[str, Reservation] = field(default_factory=dict)  # driver_id -> its reservation
    releases: dict[str, list[Release]] = field(default_factory=dict)  # ride_id -> releases driver handled
    movements: dict[str, list[Movement]] = field(default_factory=dict)  # ride_id -> psp movements
    acknowledged: set[str] = field(default_factory=set)  # ride ids answered to riders
    live_slots: dict[str, LiveSlot] = field(default_factory=dict)  # rider_id -> its live-ride slot
    taken_ms: int = 0


def check(s: Snapshot) -> dict[str, list[Any]]:
    """Everything that makes the snapshot invalid, each under its own name: the
    violations and the stuck work."""
    return {**violations(s), **stuck(s)}


def violations(s: Snapshot) -> dict[str, list[Any]]:
    v: defaultdict[str, list[Any]] = defaultdict(list)
    _money(s, v)
    _holds_against_psp(s, v)
    _rides(s, v)
    _drivers(s, v)
    # Property 7: no acknowledged request lost.
    for ride_id in sorted(s.acknowledged - set(s.rides)):
        v["acknowledged_ride_lost"].append(ride_id)
    return dict(v)


def stuck(s: Snapshot) -> dict[str, list[Any]]:
    return _liveness(s)[0]


def _money(s: Snapshot, v: defaultdict[str, list[Any]]) -> None:
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


def _holds_against_psp(s: Snapshot, v: defaultdict[str, list[Any]]) -> None:
    """Property 3, for every ride: payment's holds against the psp's own record. The psp
    moves money before payment records it (payment's tables are read first), so a hold
    may lag its charge, until the saga re-sends the command after a crash, but never lead
    it."""

    def settled(m: Movement) -> bool:
        return s.taken_ms - m.created_ms > STUCK_BOUND_MS

    for ride_id, hold in s.holds.items():
        charge = [m for m in s.movements.get(ride_id, []) if hold.charge_id and m.charge_id == hold.charge_id]
        found = _disagreement(hold, charge, settled)
        if found:
            v["hold_disagrees_with_psp"].append(
                {"ride_id": ride_id, "status": hold.status, "charge_id": hold.charge_id, "psp": found}
            )
    for ride_id, moves in s.movements.items():
        recorded = s.holds.get(ride_id)
        strays = {m.charge_id for m in moves if settled(m) and (recorded is None or m.charge_id != recorded.charge_id)}
        if strays:
            v["psp_money_without_hold"].append({"ride_id": ride_id, "charges": sorted(strays)})


def _disagreement(hold: Hold, charge: list[Movement], settled: Callable[[Movement], bool]) -> str:
    """What the psp's movements for the hold's charge say against its status ('' if none)."""
    if not hold.charge_id:
        # Deferred, or ended before it was ever settled at the psp (voided, written off).
        return "" if hold.status in ("DEFERRED", "VOIDED", "WRITTEN_OFF") else "no charge at the psp"
    if hold.status == "DEFERRED":
        return "a charge on a deferred hold"
    kinds = Counter(m.kind for m in charge)
    captured = sum(m.amount_cents for m in charge if m.kind == "CAPTURE")
    if not kinds["AUTHORIZE"]:
        return "never authorized at the psp"
    moved = [m.kind for m in charge if m.kind in ("VOID", "CAPTURE") and settled(m)]
    if hold.status == "AUTHORIZED" and moved:
        return f"{moved[0].lower()} at the psp"
    if hold.status == "VOIDED" and not kinds["VOID"]:
        return "no void at the psp"
    # A written-off capture took nothing: the platform paid the driver.
    if hold.status in ("CAPTURED", "WRITTEN_OFF") and captured != hold.captured_cents:
        return f"{captured} cents captured at the psp"
    return ""


def _rides(s: Snapshot, v: defaultdict[str, list[Any]]) -> None:
    live_by_rider: defaultdict[str, list[str]] = defaultdict(list)
    for ride_id, ride in s.rides.items():
        # Property 2: every ride reaches a terminal state.
        if ride.state not in TERMINAL:
            v["not_terminal"].append({"ride_id": ride_id, "state": ride.state})
            if ride.rider_id:  # (a record read without its rider cannot be judged)
                live_by_rider[ride.rider_id].append(ride_id)
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
        log = s.saga_log.get(ride_id, [])
        # Property 8: nothing compensated after the pivot; compensations in reverse order.
        for seen_in in _compensated_after_pivot(s, ride_id, ride, log):
            v["compensated_after_pivot"].append({"ride_id": ride_id, "seen_in": seen_in})
        order = [e.step for e in log if e.status == "compensated"]
        if (
            order.count("void_payment")
            and order.count("release_driver")
            and order.index("void_payment") < order.index("release_driver")
        ):
            v["compensations_out_of_order"].append(ride_id)
        # Property 6: the orchestrator applies a timeout only from the sweeper epoch in force.
        for e in log:
            if e.sweeper_epoch is not None and e.sweeper_epoch != e.epoch_in_force:
                v["transition_from_stale_epoch"].append(
                    {
                        "ride_id": ride_id,
                        "step": e.step,
                        "status": e.status,
                        "sweeper_epoch": e.sweeper_epoch,
                        "epoch_in_force": e.epoch_in_force,
                    }
                )
    # Property 11: one live ride per rider.
    for rider_id, rides in live_by_rider.items():
        if len(rides) > 1:
            v["rider_on_two_live_rides"].append({"rider_id": rider_id, "rides": sorted(rides)})


def _compensated_after_pivot(s: Snapshot, ride_id: str, ride: RideRecord, log: list[SagaEntry]) -> list[str]:
    """Where a compensation of a ride past its pivot is seen: in the saga log, or in what
    the participants did (payment voided the ride's hold; driver let the ride's own driver
    go before the ride completed, not with its completion)."""
    if not any((e.step, e.status) == PIVOT for e in log):
        return []
    seen = []
    if any(e.status in ("compensating", "compensated") for e in log):
        seen.append("saga_log")
    # saga._stale voids a late, other hold of a finished ride under the same message id.
    if ride.hold_id and s.voided.get(ride_id) == ride.hold_id:
        seen.append("payment")
    completed_ms = next((e.at_ms for e in log if (e.step, e.status) == COMPLETED), None)
    if any(
        (r.driver_id, r.fence) == (ride.driver_id, ride.fence) and (completed_ms is None or r.handled_ms < completed_ms)
        for r in s.releases.get(ride_id, [])
    ):
        seen.append("driver")
    return seen


def _drivers(s: Snapshot, v: defaultdict[str, list[Any]]) -> None:
    # Property 4: no driver reserved by two live rides.
    by_driver: defaultdict[str, list[str]] = defaultdict(list)
    for ride_id, ride in s.rides.items():
        if ride.state in LIVE_WITH_DRIVER and ride.driver_id:
            by_driver[ride.driver_id].append(ride_id)
    for driver_id, rides in by_driver.items():
        if len(rides) > 1:
            v["driver_on_two_rides"].append({"driver_id": driver_id, "rides": sorted(rides)})
    # A live ride's driver is reserved for it under its token: the reservation was made
    # before the offer reached trip and is released only once the ride has moved on.
    for ride_id, ride in s.rides.items():
        if ride.state not in LIVE_WITH_DRIVER or s.taken_ms - ride.updated_ms <= SETTLE_MS:
            continue
        held = s.reservations.get(ride.driver_id)
        if held != Reservation(ride_id, ride.fence):
            v["ride_driver_disagrees_with_driver_db"].append(
                {
                    "ride_id": ride_id,
                    "driver_id": ride.driver_id,
                    "fence": ride.fence,
                    "driver_db": None if held is None else {"ride_id": held.ride_id, "fence": held.fence},
                }
            )


def _liveness(s: Snapshot) -> tuple[dict[str, list[Any]], dict[str, int]]:
    """Property 12: sorts every piece of live work into stuck (unresolved for longer than
    STUCK_BOUND_MS) or in flight (counted)."""
    found: defaultdict[str, list[Any]] = defaultdict(list)
    busy = dict.fromkeys(("rides", "reserved_drivers", "open_holds", "live_slots"), 0)

    def past_bound(since_ms: int) -> bool:
        return s.taken_ms - since_ms > STUCK_BOUND_MS

    def ended_long_ago(ride: RideRecord | None) -> bool:
        return ride is not None and ride.state in TERMINAL and past_bound(ride.updated_ms)

    for ride_id, ride in s.rides.items():
        if ride.state in TERMINAL:
            continue
        if ride.deadline_ms is None and past_bound(ride.updated_ms):
            found["ride_without_deadline"].append(
                {"ride_id": ride_id, "state": ride.state, "idle_ms": s.taken_ms - ride.updated_ms}
            )
        elif ride.deadline_ms is not None and past_bound(ride.deadline_ms):
            found["ride_past_deadline"].append(
                {"ride_id": ride_id, "state": ride.state, "overdue_ms": s.taken_ms - ride.deadline_ms}
            )
        else:
            busy["rides"] += 1
    for driver_id, held in s.reservations.items():
        owner = s.rides.get(held.ride_id)
        if owner is None:
            # No reserved-at column to age it by: trip creates a ride before any driver is
            # reserved for it, and driver is read first, so this was never a ride's.
            found["driver_held_by_unknown_ride"].append({"driver_id": driver_id, "ride_id": held.ride_id})
        elif ended_long_ago(owner):
            found["driver_held_by_finished_ride"].append({"driver_id": driver_id, "ride_id": held.ride_id})
        else:
            busy["reserved_drivers"] += 1
    for ride_id, hold in s.holds.items():
        if hold.status not in OPEN_HOLDS:
            continue
        owner = s.rides.get(ride_id)
        # A late hold of a finished ride is voided when it arrives: age it by its own row too.
        if past_bound(hold.updated_ms) and (owner is None or ended_long_ago(owner)):
            name = "open_hold_on_unknown_ride" if owner is None else "open_hold_on_finished_ride"
            found[name].append({"ride_id": ride_id, "status": hold.status})
        else:
            busy["open_holds"] += 1
    for rider_id, slot in s.live_slots.items():
        owner = s.rides.get(slot.ride_id)
        if owner is None and past_bound(slot.claimed_ms):
            found["orphaned_live_slot"].append({"rider_id": rider_id, "ride_id": slot.ride_id})
        elif ended_long_ago(owner):
            found["live_slot_of_finished_ride"].append({"rider_id": rider_id, "ride_id": slot.ride_id})
        else:
            busy["live_slots"] += 1
    return dict(found), busy


def _ms(column: str) -> str:
    return f"(extract(epoch FROM {column}) * 1000)::bigint"


def _rows(dbname: str, sql: str) -> list[tuple[Any, ...]]:
    conninfo = f"host=127.0.0.1 port={INFRA.postgres} dbname={dbname} user=postgres"
    with psycopg.connect(conninfo) as conn:
        return conn.execute(sql.encode()).fetchall()


def live_rides() -> int:
    """How many rides are still in flight (not COMPLETED or CANCELLED)."""
    rows = _rows("trip", "SELECT count(*) FROM rides WHERE state NOT IN ('COMPLETED', 'CANCELLED')")
    return int(rows[0][0]) if rows else 0


def collect() -> Snapshot:
    """One query per table, read in an order under which no change made while reading
    passes for a violation: driver and rider before trip (a driver is reserved and a slot
    claimed before trip's ride holds them, and released only after the ride has moved
    on), payment and trip before the psp (the psp moves money before payment records it
    and before the ride moves on)."""
    s = Snapshot(taken_ms=int(time.time() * 1000))
    for driver_id, ride_id, fence in _rows(
        "driver", "SELECT driver_id, ride_id, fence FROM drivers WHERE ride_id IS NOT NULL"
    ):
        s.reservations[str(driver_id)] = Reservation(str(ride_id), fence)
    for message_id, handled in _rows(
        "driver",
        f"SELECT message_id, {_ms('handled_at')} FROM handled_commands WHERE message_id LIKE '%:release\\_driver:%'",
    ):
        ride_id, _, driver_id, fence = message_id.split(":")
        s.releases.setdefault(ride_id, []).append(Release(driver_id, int(fence), handled))
    for (ride_id,) in _rows("rider", "SELECT ride_id FROM idempotency_keys WHERE response IS NOT NULL"):
        s.acknowledged.add(str(ride_id))
    for rider_id, ride_id, claimed in _rows("rider", f"SELECT rider_id, ride_id, {_ms('claimed_at')} FROM live_rides"):
        s.live_slots[str(rider_id)] = LiveSlot(str(ride_id), claimed)
    for ride_id, account, cents in _rows("payment", "SELECT ride_id, account, amount_cents FROM ledger_entries"):
        s.ledger.setdefault(str(ride_id), []).append((account, cents))
    for ride_id, charge_id, status, authorized, captured, updated in _rows(
        "payment",
        f"SELECT ride_id, charge_id, status, authorized_cents, captured_cents, {_ms('updated_at')} FROM holds",
    ):
        s.holds[str(ride_id)] = Hold(charge_id, status, authorized, captured, updated)
    for message_id, stored in _rows(
        "payment", "SELECT message_id, envelopes[1] FROM handled_commands WHERE message_id LIKE '%:void\\_payment'"
    ):
        voided = saga_pb2.Envelope.FromString(stored).payment_voided
        s.voided[message_id.removesuffix(":void_payment")] = voided.hold_id
    for ride_id, state, outcome, driver_id, fare, updated, rider_id, hold_id, fence, deadline in _rows(
        "trip",
        f"SELECT ride_id, state, outcome, driver_id, fare_cents, {_ms('updated_at')}, rider_id, hold_id, fence,"
        " deadline_ms FROM rides",
    ):
        s.rides[str(ride_id)] = RideRecord(
            state, outcome, driver_id, fare, updated, str(rider_id), hold_id, fence, deadline
        )
    for ride_id, step, status, at, sweeper_epoch, in_force in _rows(
        "trip",
        f"SELECT ride_id, step, status, {_ms('at')}, sweeper_epoch, epoch_in_force FROM saga_log ORDER BY seq",
    ):
        s.saga_log.setdefault(str(ride_id), []).append(SagaEntry(step, status, at, sweeper_epoch, in_force))
    with grpc.insecure_channel(f"127.0.0.1:{service('psp').ingress_port}") as channel:
        reply = psp_pb2_grpc.PspServiceStub(channel).ListMovements(psp_pb2.ListMovementsRequest(), timeout=30)
    for m in reply.movements:
        if not m.description.startswith(RIDE_PREFIX):
            continue  # the processor's other merchants' money is none of our business
        ride_id = m.description.removeprefix(RIDE_PREFIX)
        s.movements.setdefault(ride_id, []).append(
            Movement(m.charge_id, psp_pb2.MovementKind.Name(m.kind), m.amount_cents, m.created_at_ms)
        )
    return s


def report(s: Snapshot) -> dict[str, Any]:
    found = violations(s)
    left, busy = _liveness(s)
    return {
        "valid": not found and not left,
        "rides": len(s.rides),
        "violations": found,
        "stuck": left,
        "in_flight": busy,
    }
