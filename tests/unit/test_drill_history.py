"""The drill history's own checks, the recovery measure and the riders locked out by a
request they gave up on, over hand-made histories."""

from __future__ import annotations

from drills.history import (
    FAIL,
    INFO,
    INVOKE,
    OK,
    Fault,
    History,
    check,
    locked_out,
    not_recovered,
    outcomes,
    recovery,
)


def _clean() -> History:
    h = History()
    h.add(0.0, 0, INVOKE, "request", key="k0", trace_id="t0")
    h.add(0.1, 0, INFO, "request", key="k0", trace_id="t0", value={"code": "UNAVAILABLE"})
    h.add(0.6, 0, INVOKE, "request", key="k0", trace_id="t0")
    h.add(0.7, 0, OK, "request", key="k0", ride_id="r0", trace_id="t0")
    h.add(0.7, 0, INVOKE, "read", ride_id="r0")
    h.add(2.5, 0, OK, "read", ride_id="r0", value={"state": "COMPLETED", "outcome": "completed"})
    h.add(1.0, 1, INVOKE, "request", key="k1", trace_id="t1")
    h.add(1.1, 1, FAIL, "request", key="k1", trace_id="t1", value={"code": "INVALID_ARGUMENT"})
    return h


def test_a_retried_request_that_succeeded_is_clean() -> None:
    events = _clean().events
    assert check(events) == {}
    rides = outcomes(events)
    assert [(r.key, r.ride_id, r.state, r.latency) for r in rides] == [
        ("k0", "r0", "COMPLETED", 2.5),
        ("k1", "", "", None),
    ]


def test_each_client_visible_anomaly_is_reported() -> None:
    h = _clean()
    h.add(3.0, 2, INVOKE, "request", key="k2")
    h.add(3.1, 2, OK, "request", key="k2", ride_id="r2")
    h.add(3.2, 2, INVOKE, "request", key="k2")  # a replay of the same key...
    h.add(3.3, 2, OK, "request", key="k2", ride_id="r3")  # ...answered with another ride
    h.add(3.4, 2, INVOKE, "read", ride_id="r2")
    h.add(4.0, 2, FAIL, "read", ride_id="r2", value={"code": "NOT_FOUND"})
    h.add(5.0, 3, INVOKE, "read", ride_id="r4")
    h.add(9.0, 3, INFO, "read", ride_id="r4", value={"gave_up": True})
    h.add(9.5, 4, INVOKE, "request", key="k5")
    found = check(h.events)
    assert found["one_key_two_rides"] == [{"key": "k2", "rides": ["r2", "r3"]}]
    assert found["acknowledged_ride_not_found"] == [{"ride_id": "r2", "key": ""}]
    assert found["ride_never_ended_for_client"] == [{"ride_id": "r4", "key": ""}]
    assert found["invoke_never_completed"] == [{"process": 4, "f": "request"}]


def test_recovery_is_measured_from_the_first_ride_booked_after_the_fault() -> None:
    h = History()
    for process, (asked, ended, outcome) in enumerate(
        [(0.0, 9.0, "completed"), (4.0, 8.0, "payment_unavailable"), (6.0, 9.5, "completed"), (7.0, 8.5, "completed")]
    ):
        h.add(asked, process, INVOKE, "request", key=f"k{process}")
        h.add(asked, process, OK, "request", key=f"k{process}", ride_id=f"r{process}")
        h.add(asked, process, INVOKE, "read", ride_id=f"r{process}")
        h.add(ended, process, OK, "read", ride_id=f"r{process}", value={"state": "X", "outcome": outcome})
    rides = outcomes(h.events)
    # Rides booked before the fault ended, or that failed, do not count as recovery.
    assert recovery(Fault("kill", "trip", 1.0, 5.0), rides) == 3.5
    assert recovery(Fault("kill", "trip", 1.0, 7.5), rides) is None
    assert recovery(Fault("kill", "trip", 1.0, None), rides) is None


def test_a_drill_whose_system_never_does_useful_work_again_is_not_recovered() -> None:
    first = Fault("kill", "psp", 1.0, 2.0, recovery_seconds=None)  # the next fault came too soon
    last = Fault("kill", "psp", 3.0, 4.0, recovery_seconds=2.5)
    assert not_recovered([first, last], 60) == []
    stuck = Fault("kill", "psp", 5.0, 6.0)
    assert not_recovered([first, last, stuck], 60) == ["no ride booked after kill psp healed completed within 60 s"]
    assert not_recovered([], 60) == []


def _gave_up(h: History, process: int, at: float, key: str) -> None:
    h.add(at, process, INVOKE, "request", key=key)
    h.add(at + 0.1, process, INFO, "request", key=key, value={"code": "UNAVAILABLE", "gave_up": True})


def _rebooked(h: History, process: int, of: int, at: float, refused: int) -> None:
    """A client rebooking for `of`: `refused` attempts refused (live ride), then one accepted."""
    for attempt in range(refused):
        key = f"r{process}-{attempt}"
        h.add(at + attempt, process, INVOKE, "request", key=key, value={"rebooking_for": of})
        h.add(at + attempt + 0.1, process, FAIL, "request", key=key, value={"code": "FAILED_PRECONDITION"})
    key = f"r{process}-{refused}"
    h.add(at + refused, process, INVOKE, "request", key=key, value={"rebooking_for": of})
    h.add(at + refused + 0.1, process, OK, "request", key=key, ride_id=f"ride{process}")


def test_a_rider_who_gave_up_and_booked_again_within_the_bound_is_not_locked_out() -> None:
    h = History()
    _gave_up(h, 0, 1.0, "k0")
    _rebooked(h, 5, of=0, at=3.0, refused=20)  # accepted at 23.1 s, 22 s after giving up
    assert locked_out(h.events, 60) == []
    assert check(h.events) == {}
    first, again = outcomes(h.events)
    # The abandoned request is its own outcome; the new ride carries the key it was booked with.
    assert (first.outcome, first.ride_id, again.key, again.ride_id) == ("gave_up", "", "r5-20", "ride5")


def test_a_rider_refused_past_the_bound_or_never_rebooked_is_locked_out() -> None:
    h = History()
    _gave_up(h, 0, 1.0, "k0")
    _rebooked(h, 5, of=0, at=3.0, refused=70)  # only accepted 72 s after giving up
    _gave_up(h, 1, 2.0, "k1")
    h.add(4.0, 6, INVOKE, "request", key="r6", value={"rebooking_for": 1})
    h.add(4.1, 6, FAIL, "request", key="r6", value={"code": "FAILED_PRECONDITION"})  # and no more
    _gave_up(h, 2, 2.5, "k2")
    _rebooked(h, 7, of=2, at=3.0, refused=0)
    assert locked_out(h.events, 60) == [
        {"process": 0, "gave_up_at": 1.1, "new_ride_after": 72.0},
        {"process": 1, "gave_up_at": 2.1, "new_ride_after": None},
    ]
