"""The invariant checker can fail: each kind of corruption is reported, stuck work apart
from violations, and work younger than the bound is in flight, not stuck."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable

from drills.checker import (
    SETTLE_MS,
    STUCK_BOUND_MS,
    Hold,
    LiveSlot,
    Movement,
    Release,
    Reservation,
    RideRecord,
    SagaEntry,
    Snapshot,
    check,
    report,
    stuck,
    violations,
)
from services.trip import saga, sweeper

NOW = 10_000_000
LONG_AGO = NOW - 10 * STUCK_BOUND_MS
SETTLED = NOW - 4 * SETTLE_MS  # a ride last updated here has no reply in flight


def _log(*entries: tuple[str, str], at_ms: int = LONG_AGO) -> list[SagaEntry]:
    return [SagaEntry(step, status, at_ms) for step, status in entries]


def _healthy() -> Snapshot:
    """Two finished rides, every record agreeing."""
    s = Snapshot(taken_ms=NOW)
    s.rides["r1"] = RideRecord("COMPLETED", "completed", "d1", 1000, LONG_AGO, rider_id="p1", hold_id="c1", fence=3)
    s.rides["r2"] = RideRecord("CANCELLED", "rider_cancelled", "", 800, LONG_AGO, rider_id="p2", hold_id="c2")
    s.movements["r1"] = [Movement("c1", "AUTHORIZE", 1000), Movement("c1", "CAPTURE", 1000)]
    s.movements["r2"] = [Movement("c2", "AUTHORIZE", 800), Movement("c2", "VOID", 800)]
    s.holds["r1"] = Hold("c1", "CAPTURED", 1000, 1000, LONG_AGO)
    s.holds["r2"] = Hold("c2", "VOIDED", 800, 0, LONG_AGO)
    s.ledger["r1"] = [("rider", -1000), ("driver", 750), ("platform", 250)]
    s.saga_log["r1"] = _log(
        ("authorize_payment", "ok"), ("driver_accepts", "ok"), ("capture_payment", "ok"), ("ride", "completed")
    )
    s.saga_log["r2"] = _log(("release_driver", "compensated"), ("void_payment", "compensated"), ("ride", "cancelled"))
    s.voided["r2"] = "c2"
    s.releases["r1"] = [Release("d1", 3, LONG_AGO + 5)]  # the release sent with the completion
    s.acknowledged = {"r1", "r2"}
    return s


def _busy() -> Snapshot:
    """The healthy snapshot plus one ride in flight past its pivot: its driver reserved,
    its hold open, its rider's live-ride slot taken, its deadline ahead."""
    s = _healthy()
    s.rides["r3"] = RideRecord(
        "ACCEPTED", "", "d3", 900, SETTLED, rider_id="p3", hold_id="c3", fence=7, deadline_ms=NOW + 20_000
    )
    s.reservations["d3"] = Reservation("r3", 7)
    s.holds["r3"] = Hold("c3", "AUTHORIZED", 900, 0, SETTLED)
    s.movements["r3"] = [Movement("c3", "AUTHORIZE", 900, SETTLED)]
    s.live_slots["p3"] = LiveSlot("r3", SETTLED)
    s.saga_log["r3"] = _log(("authorize_payment", "ok"), ("driver_accepts", "ok"), at_ms=SETTLED)
    s.acknowledged.add("r3")
    return s


def test_a_healthy_snapshot_has_no_violation() -> None:
    assert check(_healthy()) == {}
    assert report(_healthy()) == {
        "valid": True,
        "rides": 2,
        "violations": {},
        "stuck": {},
        "in_flight": {"rides": 0, "reserved_drivers": 0, "open_holds": 0, "live_slots": 0},
    }


def test_work_in_flight_is_counted_and_is_neither_stuck_nor_a_new_violation() -> None:
    found = report(_busy())
    assert found["in_flight"] == {"rides": 1, "reserved_drivers": 1, "open_holds": 1, "live_slots": 1}
    assert found["stuck"] == {}
    # A ride still running is not terminal: the one violation a live system always has.
    assert found["violations"] == {"not_terminal": [{"ride_id": "r3", "state": "ACCEPTED"}]}


def test_every_corruption_is_reported() -> None:
    cases: dict[str, Callable[[Snapshot], object]] = {
        "charged_twice": lambda s: s.movements["r1"].append(Movement("c1", "CAPTURE", 1000)),
        "acknowledged_ride_lost": lambda s: s.acknowledged.add("r9"),
        "unbalanced_ledger": lambda s: s.ledger["r1"].append(("platform", 1)),
        "open_hold_on_cancelled_ride": lambda s: s.movements["r2"].pop(),
        "not_terminal": lambda s: s.rides.__setitem__("r3", RideRecord("MATCHING", "", "", 500, NOW)),
        "compensated_after_pivot": lambda s: s.saga_log["r1"].append(SagaEntry("void_payment", "compensating")),
        "compensations_out_of_order": lambda s: s.saga_log["r2"].reverse(),
        "driver_held_by_finished_ride": lambda s: s.reservations.__setitem__("d1", Reservation("r1", 3)),
        "driver_on_two_rides": lambda s: s.rides.update(
            {"r4": RideRecord("ACCEPTED", "", "d7", 500, NOW), "r5": RideRecord("OFFERED", "", "d7", 500, NOW)}
        ),
    }
    for name, corrupt in cases.items():
        snapshot = copy.deepcopy(_healthy())
        corrupt(snapshot)
        assert name in check(snapshot), name


def test_a_driver_just_finishing_a_ride_is_not_yet_a_violation() -> None:
    s = _healthy()
    s.rides["r1"] = dataclasses.replace(s.rides["r1"], updated_ms=NOW - STUCK_BOUND_MS // 2)
    s.reservations["d1"] = Reservation("r1", 3)  # the release is on its way
    assert "driver_held_by_finished_ride" not in check(s)


def _ride(s: Snapshot, ride_id: str, **changes: object) -> None:
    s.rides[ride_id] = dataclasses.replace(s.rides[ride_id], **changes)  # type: ignore[arg-type]


def _hold(s: Snapshot, ride_id: str, **changes: object) -> None:
    s.holds[ride_id] = dataclasses.replace(s.holds[ride_id], **changes)  # type: ignore[arg-type]


STUCK: dict[str, Callable[[Snapshot], object]] = {
    "ride_without_deadline": lambda s: s.rides.__setitem__(
        "r4", RideRecord("PENDING", "", "", 500, LONG_AGO, rider_id="p4")
    ),
    "ride_past_deadline": lambda s: _ride(s, "r3", deadline_ms=NOW - STUCK_BOUND_MS - 1),
    "driver_held_by_finished_ride": lambda s: s.reservations.__setitem__("d1", Reservation("r1", 3)),
    "driver_held_by_unknown_ride": lambda s: s.reservations.__setitem__("d9", Reservation("r9", 1)),
    "open_hold_on_finished_ride": lambda s: _hold(s, "r2", status="AUTHORIZED"),
    "open_hold_on_unknown_ride": lambda s: s.holds.__setitem__("r9", Hold("c9", "AUTHORIZED", 500, 0, LONG_AGO)),
    "live_slot_of_finished_ride": lambda s: s.live_slots.__setitem__("p1", LiveSlot("r1", LONG_AGO)),
    "orphaned_live_slot": lambda s: s.live_slots.__setitem__("p8", LiveSlot("r8", LONG_AGO)),
}


def test_stuck_work_is_reported_apart_from_the_violations_and_makes_the_report_invalid() -> None:
    assert stuck(_busy()) == {}
    for name, corrupt in STUCK.items():
        s = copy.deepcopy(_busy())
        corrupt(s)
        found = report(s)
        assert name in found["stuck"], name
        assert name not in found["violations"], name
        assert name in check(s) and found["valid"] is False, name


def test_the_same_work_younger_than_the_bound_is_in_flight() -> None:
    s = _busy()
    recently = NOW - STUCK_BOUND_MS  # exactly the bound: not yet past it
    s.rides["r4"] = RideRecord("PENDING", "", "", 500, recently, rider_id="p4")
    _ride(s, "r3", deadline_ms=recently)
    _ride(s, "r2", updated_ms=recently)  # cancelled a moment ago: its hold and slot are freed next
    _hold(s, "r2", status="AUTHORIZED", updated_ms=recently)
    s.live_slots["p2"] = LiveSlot("r2", LONG_AGO)
    s.live_slots["p8"] = LiveSlot("r8", recently)  # claimed; the ride is being created in trip
    _ride(s, "r1", updated_ms=recently)
    s.reservations["d1"] = Reservation("r1", 3)
    found = report(s)
    assert found["stuck"] == {}
    assert found["in_flight"] == {"rides": 2, "reserved_drivers": 2, "open_holds": 2, "live_slots": 3}


def test_a_late_hold_of_a_ride_finished_long_ago_is_in_flight_until_its_void_is_due() -> None:
    """saga._stale voids a hold that arrives after its ride ended: it is aged by its own row."""
    s = _healthy()
    _hold(s, "r2", status="AUTHORIZED", updated_ms=NOW - 1_000)
    assert stuck(s) == {} and report(s)["in_flight"]["open_holds"] == 1
    _hold(s, "r2", updated_ms=LONG_AGO)
    assert "open_hold_on_finished_ride" in stuck(s)


def test_a_driver_reserved_without_a_ride_is_stuck_at_once() -> None:
    """There is no reserved-at column to age the reservation by; trip creates a ride before
    any driver is reserved for it, and driver's database is read first, so a reservation
    whose ride trip does not know was never a ride's."""
    s = _busy()
    s.reservations["d9"] = Reservation("r9", 1)
    assert stuck(s) == {"driver_held_by_unknown_ride": [{"driver_id": "d9", "ride_id": "r9"}]}


VIOLATIONS: dict[str, list[Callable[[Snapshot], object]]] = {
    "ride_driver_disagrees_with_driver_db": [
        lambda s: s.reservations.pop("d3"),  # the driver was let go mid-ride
        lambda s: s.reservations.__setitem__("d3", Reservation("r3", 6)),  # under another token
        lambda s: s.reservations.__setitem__("d3", Reservation("r1", 7)),  # by another ride
    ],
    "hold_disagrees_with_psp": [
        lambda s: s.movements["r3"].append(Movement("c3", "VOID", 900, LONG_AGO)),  # AUTHORIZED, voided at the psp
        lambda s: s.movements["r3"].append(Movement("c3", "CAPTURE", 900, LONG_AGO)),  # AUTHORIZED, captured
        lambda s: _hold(s, "r1", captured_cents=900),  # CAPTURED another amount
        lambda s: s.movements["r1"].pop(),  # CAPTURED, nothing captured at the psp
        lambda s: s.movements["r2"].pop(),  # VOIDED, not voided at the psp
        lambda s: s.movements.pop("r3"),  # a charge the psp never authorized
        lambda s: _hold(s, "r3", charge_id="", status="CAPTURED"),  # captured with no charge
    ],
    "psp_money_without_hold": [
        lambda s: s.holds.pop("r1"),
        lambda s: s.movements["r3"].append(Movement("c-other", "AUTHORIZE", 900, LONG_AGO)),
    ],
    "rider_on_two_live_rides": [
        lambda s: s.rides.__setitem__(
            "r4", RideRecord("MATCHING", "", "", 500, NOW, rider_id="p3", deadline_ms=NOW + 10_000)
        ),
    ],
    "transition_from_stale_epoch": [
        lambda s: s.saga_log["r3"].append(SagaEntry("complete_ride", "presumed", NOW, 4, 5)),
        lambda s: s.saga_log["r3"].append(SagaEntry("complete_ride", "presumed", NOW, 4, None)),
    ],
    "compensated_after_pivot": [
        lambda s: s.voided.__setitem__("r1", "c1"),  # payment voided the hold after the pivot
        lambda s: s.releases.__setitem__("r3", [Release("d3", 7, SETTLED)]),  # released mid-ride
        lambda s: s.releases.__setitem__("r1", [Release("d1", 3, LONG_AGO - 5)]),  # released before completing
    ],
}


def test_each_new_violation_is_reported() -> None:
    assert set(violations(_busy())) == {"not_terminal"}
    for name, corruptions in VIOLATIONS.items():
        for i, corrupt in enumerate(corruptions):
            s = copy.deepcopy(_busy())
            corrupt(s)
            assert name in violations(s), (name, i)
            assert name not in stuck(s), (name, i)


def test_a_ride_whose_reply_may_be_in_flight_is_not_judged_against_the_driver_db() -> None:
    s = _busy()
    _ride(s, "r3", state="OFFERED", updated_ms=NOW - SETTLE_MS // 2)
    s.reservations.pop("d3")
    assert "ride_driver_disagrees_with_driver_db" not in violations(s)
    _ride(s, "r3", updated_ms=NOW - SETTLE_MS - 1)
    assert "ride_driver_disagrees_with_driver_db" in violations(s)


def test_money_the_psp_moved_moments_ago_is_not_yet_a_disagreement() -> None:
    """The psp moves money before payment records it; payment re-records it when the saga
    re-sends the command after a crash, within the bound."""
    s = _busy()
    s.movements["r3"].append(Movement("c3", "VOID", 900, NOW - STUCK_BOUND_MS))
    s.rides["r5"] = RideRecord("AUTHORIZING", "", "", 700, NOW, rider_id="p5", deadline_ms=NOW + 15_000)
    s.movements["r5"] = [Movement("c5", "AUTHORIZE", 700, NOW - 1_000)]
    found = violations(s)
    assert "hold_disagrees_with_psp" not in found and "psp_money_without_hold" not in found


def test_a_deferred_hold_has_nothing_at_the_psp_until_it_is_settled() -> None:
    s = _busy()
    _ride(s, "r3", hold_id="deferred:r3")
    s.holds["r3"] = Hold("", "DEFERRED", 900, 0, SETTLED)
    del s.movements["r3"]
    assert set(violations(s)) == {"not_terminal"}
    s.movements["r3"] = [Movement("c3", "AUTHORIZE", 900, NOW - 1_000)]  # being settled now
    assert set(violations(s)) == {"not_terminal"}
    s.movements["r3"] = [Movement("c3", "AUTHORIZE", 900, LONG_AGO)]  # settled, never recorded
    assert "psp_money_without_hold" in violations(s)


def test_a_written_off_capture_took_nothing_at_the_psp() -> None:
    s = _healthy()
    s.movements["r1"].pop()
    s.holds["r1"] = Hold("c1", "WRITTEN_OFF", 1000, 0, LONG_AGO)
    s.ledger["r1"] = [("platform", -750), ("driver", 750)]
    assert check(s) == {}
    s.movements["r1"].append(Movement("c1", "CAPTURE", 1000))
    assert "hold_disagrees_with_psp" in check(s)


def test_a_stale_hold_voided_under_the_rides_void_message_id_is_no_compensation() -> None:
    """saga._stale voids a late hold of a finished ride with the message id of the ride's
    own void; only a void of the ride's own hold is a compensation."""
    s = _healthy()
    s.voided["r1"] = "c-stale"
    assert "compensated_after_pivot" not in check(s)


def test_the_bound_covers_the_longest_step_a_sweep_a_leader_election_and_a_resend() -> None:
    worst = (
        max(saga.STEP_TIMEOUT_MS.values())
        + sweeper.SWEEP_INTERVAL_SECONDS * 1000
        + sweeper.SESSION_TIMEOUT_SECONDS * 1000
        + sweeper.RESEND_SECONDS * 1000
    )
    assert worst < STUCK_BOUND_MS


def test_a_timeout_resent_for_one_unchanged_deadline_backs_off_to_a_minute() -> None:
    waits = [sweeper.resend_after(n) for n in range(1, 7)]
    assert waits == [10.0, 20.0, 40.0, 60.0, 60.0, 60.0]
    assert sweeper.resend_after(1) == sweeper.RESEND_SECONDS, "the first copy waits as the bound assumes"
