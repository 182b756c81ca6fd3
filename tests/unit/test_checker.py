"""The invariant checker can fail: each kind of corruption is reported."""

from __future__ import annotations

import copy
from collections.abc import Callable

from ridectl.checker import RELEASE_BOUND_MS, Movement, RideRecord, Snapshot, check

NOW = 10_000_000


def _healthy() -> Snapshot:
    s = Snapshot(taken_ms=NOW)
    s.rides["r1"] = RideRecord("COMPLETED", "completed", "d1", 1000, NOW - 60_000)
    s.rides["r2"] = RideRecord("CANCELLED", "rider_cancelled", "", 800, NOW - 60_000)
    s.movements["r1"] = [Movement("c1", "AUTHORIZE", 1000), Movement("c1", "CAPTURE", 1000)]
    s.movements["r2"] = [Movement("c2", "AUTHORIZE", 800), Movement("c2", "VOID", 800)]
    s.ledger["r1"] = [("rider", -1000), ("driver", 750), ("platform", 250)]
    s.saga_log["r1"] = [("authorize_payment", "ok"), ("driver_accepts", "ok"), ("capture_payment", "ok")]
    s.saga_log["r2"] = [("release_driver", "compensated"), ("void_payment", "compensated")]
    s.acknowledged = {"r1", "r2"}
    return s


def test_a_healthy_snapshot_has_no_violation() -> None:
    assert check(_healthy()) == {}


def test_every_corruption_is_reported() -> None:
    cases: dict[str, Callable[[Snapshot], object]] = {
        "charged_twice": lambda s: s.movements["r1"].append(Movement("c1", "CAPTURE", 1000)),
        "acknowledged_ride_lost": lambda s: s.acknowledged.add("r9"),
        "unbalanced_ledger": lambda s: s.ledger["r1"].append(("platform", 1)),
        "open_hold_on_cancelled_ride": lambda s: s.movements["r2"].pop(),
        "not_terminal": lambda s: s.rides.__setitem__("r3", RideRecord("MATCHING", "", "", 500, NOW)),
        "compensated_after_pivot": lambda s: s.saga_log["r1"].append(("void_payment", "compensating")),
        "compensations_out_of_order": lambda s: s.saga_log["r2"].reverse(),
        "driver_held_by_finished_ride": lambda s: s.reservations.__setitem__("d1", "r1"),
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
    s.rides["r1"] = RideRecord("COMPLETED", "completed", "d1", 1000, NOW - RELEASE_BOUND_MS // 2)
    s.reservations["d1"] = "r1"  # the release is on its way
    assert "driver_held_by_finished_ride" not in check(s)
