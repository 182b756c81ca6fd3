"""The drill history's own checks and the recovery measure, over hand-made histories."""

from __future__ import annotations

from ridectl.drills.history import FAIL, INFO, INVOKE, OK, Fault, History, check, not_recovered, outcomes, recovery


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
