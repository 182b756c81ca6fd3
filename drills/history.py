"""The history of a drill, Jepsen style: every client operation is recorded when it is
invoked and again when it completes, as `ok` (it happened), `fail` (it certainly did
not) or `info` (unknown: a timeout or a broken connection; it may or may not have
happened). Checks over the history and the recovery times are pure functions of it.

Operations (`f`): `create-rider`, `request` (RequestRide with an idempotency key; a
retry after `info` re-sends the same key), `read` (following the ride until it is
terminal; `ok` carries the terminal state) and `cancel` (a stranded rider cancelling).
A rider who gives up on a request marks its last completion `gave_up`; the new ride it
then books is a client of its own whose requests carry `rebooking_for` (the process that
gave up)."""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

INVOKE, OK, FAIL, INFO = "invoke", "ok", "fail", "info"


@dataclass(frozen=True)
class Event:
    index: int
    time: float  # seconds since the drill started
    process: int  # the client (one per ride)
    type: str
    f: str
    key: str = ""
    ride_id: str = ""
    trace_id: str = ""
    value: dict[str, Any] = field(default_factory=dict)


class History:
    """Append-only and thread-safe; indexes give the real-time order of events."""

    def __init__(self) -> None:
        self._events: list[Event] = []
        self._lock = threading.Lock()

    def add(self, time: float, process: int, type: str, f: str, **fields: Any) -> Event:
        with self._lock:
            event = Event(len(self._events), round(time, 4), process, type, f, **fields)
            self._events.append(event)
            return event

    @property
    def events(self) -> list[Event]:
        with self._lock:
            return list(self._events)

    def write(self, path: Path) -> None:
        path.write_text("".join(json.dumps(asdict(e)) + "\n" for e in self.events))


def read(path: Path) -> list[Event]:
    return [Event(**json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


@dataclass
class RideOutcome:
    """One client's ride as the client saw it."""

    process: int
    key: str
    requested_at: float  # the first invoke of its request
    ride_id: str = ""
    trace_id: str = ""  # chosen by the client, sent with its request
    ended_at: float | None = None  # when the client saw it terminal
    state: str = ""
    outcome: str = ""

    @property
    def latency(self) -> float | None:
        return None if self.ended_at is None else self.ended_at - self.requested_at


def outcomes(events: list[Event]) -> list[RideOutcome]:
    rides: dict[int, RideOutcome] = {}
    for e in events:
        if e.f == "request" and e.type == INVOKE and e.process not in rides:
            rides[e.process] = RideOutcome(e.process, e.key, e.time, trace_id=e.trace_id)
        ride = rides.get(e.process)
        if ride is None:
            continue
        if e.f == "request" and e.type == OK:
            ride.ride_id = e.ride_id
            ride.key = e.key  # a rider refused before (its live ride) asked again with a new key
        if e.f == "request" and e.value.get("gave_up"):
            ride.outcome = "gave_up"
        if e.f == "read" and e.type == OK:
            ride.ended_at = e.time
            ride.state = str(e.value.get("state", ""))
            ride.outcome = str(e.value.get("outcome", ""))
    return sorted(rides.values(), key=lambda r: r.requested_at)


def check(events: list[Event]) -> dict[str, list[Any]]:
    """What the clients alone can tell was wrong, whatever the databases say."""
    violations: dict[str, list[Any]] = defaultdict(list)
    ride_of_key: dict[str, set[str]] = defaultdict(set)
    open_ops: dict[tuple[int, str], Event] = {}
    for e in events:
        if e.type == INVOKE:
            if (e.process, e.f) in open_ops:
                violations["invoke_while_pending"].append(e.index)
            open_ops[(e.process, e.f)] = e
            continue
        if open_ops.pop((e.process, e.f), None) is None:
            violations["completion_without_invoke"].append(e.index)
        if e.f == "request" and e.type == OK:
            ride_of_key[e.key].add(e.ride_id)
        if e.f == "read" and e.type == FAIL and e.value.get("code") == "NOT_FOUND":
            # The request was acknowledged, then the ride was not there: a lost write.
            violations["acknowledged_ride_not_found"].append({"ride_id": e.ride_id, "key": e.key})
        if e.f == "read" and e.type == INFO:
            violations["ride_never_ended_for_client"].append({"ride_id": e.ride_id, "key": e.key})
    for key, ride_ids in ride_of_key.items():
        if len(ride_ids) > 1:
            violations["one_key_two_rides"].append({"key": key, "rides": sorted(ride_ids)})
    for process, f in open_ops:
        violations["invoke_never_completed"].append({"process": process, "f": f})
    return dict(violations)


def locked_out(events: list[Event], bound_seconds: float) -> list[dict[str, Any]]:
    """Riders who gave up on a request and had no new ride accepted (a request `ok` of the
    client `rebooking_for` them) within `bound_seconds`: locked out by the request they
    abandoned, whose live-ride slot was never freed (properties 11 and 12,
    docs/properties.md)."""
    gave_up = {e.process: e.time for e in events if e.f == "request" and e.value.get("gave_up")}
    rebooking = {
        e.process: int(e.value["rebooking_for"])
        for e in events
        if e.f == "request" and e.type == INVOKE and "rebooking_for" in e.value
    }
    booked: dict[int, float] = {}
    for e in events:
        if e.f == "request" and e.type == OK and e.process in rebooking:
            booked.setdefault(rebooking[e.process], e.time)
    found = []
    for process, at in sorted(gave_up.items()):
        after = booked[process] - at if process in booked else None
        if after is None or after > bound_seconds:
            found.append(
                {"process": process, "gave_up_at": at, "new_ride_after": None if after is None else round(after, 3)}
            )
    return found


@dataclass
class Fault:
    """A fault window: from when it was injected until the broken part was healthy again."""

    name: str
    target: str
    start: float
    end: float | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    recovery_seconds: float | None = None
    rides_in_flight: int | None = (
        None  # rides the fault could touch: requested before it healed, not ended before it began
    )


def in_flight(fault: Fault, rides: list[RideOutcome]) -> int:
    """Rides in flight at some moment of the fault's window."""
    end = fault.end if fault.end is not None else float("inf")
    return sum(1 for r in rides if r.requested_at <= end and (r.ended_at is None or r.ended_at >= fault.start))


def recovery(fault: Fault, rides: list[RideOutcome]) -> float | None:
    """Seconds from the end of the fault until the first ride booked after it completed:
    how long until the system does useful work again, seen from a client."""
    if fault.end is None:
        return None
    after = [
        r.ended_at for r in rides if r.requested_at >= fault.end and r.ended_at is not None and r.outcome == "completed"
    ]
    return round(min(after) - fault.end, 3) if after else None


def not_recovered(faults: list[Fault], limit_seconds: float) -> list[str]:
    """Liveness after the faults: a ride booked after the last fault healed must have
    completed (the drill keeps booking up to `limit_seconds` for one). Earlier faults may
    have no recovery of their own when the next one came too soon."""
    if not faults or faults[-1].end is None or faults[-1].recovery_seconds is not None:
        return []
    last = faults[-1]
    return [f"no ride booked after {last.name} {last.target} healed completed within {limit_seconds:.0f} s"]
