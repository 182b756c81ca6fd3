"""A drill through the command line: its verdict, history and report; kills aimed at the
brief saga states (PENDING, MATCH_BACKOFF, COMPENSATING) landing in them; the
coordination drills (lock-pause, leader-pause, trip-pause-sweeper-change, clock-skew)
each exiting 0 with the evidence that the safe mechanism held; riders who give up on
their request never locked out; and the checker failing on a corrupted copy of the real
state the drills left behind. (`make drill` runs every scenario in its own tier of
`make test`.)"""

from __future__ import annotations

import copy
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from drills import checker
from drills.checker import Movement, RideRecord
from drills.history import read
from tests.support import db_rows, ridectl


def test_a_drill_kills_at_the_observed_step_and_writes_its_report(tmp_path: Path) -> None:
    result = ridectl(
        "drill", "run", "kill-payment-at-CAPTURING", "--rides", "10", "--rate", "4", "--report", str(tmp_path), "--json"
    )
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    verdict = json.loads(result.stdout)
    assert verdict["valid"] is True and verdict["violations"] == {}
    assert verdict["rides"] >= 10 and verdict["completed"] + verdict["cancelled"] == verdict["rides"]
    [fault] = verdict["faults"]
    assert (fault["name"], fault["target"], fault["detail"]["step"]) == ("kill", "payment", "CAPTURING")
    assert fault["end"] > fault["start"] and fault["recovery_seconds"] is not None
    assert verdict["recovery_seconds"] == fault["recovery_seconds"]
    report = tmp_path / "kill-payment-at-CAPTURING"
    for name in ("verdict.json", "history.jsonl", "summary.md", "latency.png", "throughput.png"):
        assert (report / name).stat().st_size > 0, name
    assert (report / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    events = read(report / "history.jsonl")
    requests = [e for e in events if e.f == "request"]
    assert {e.type for e in requests} >= {"invoke", "ok"}
    assert all(e.key and e.trace_id for e in requests)
    # The client chose each ride's trace id; the ride carries it through the saga.
    assert verdict["rides_with_client_trace_id"] == verdict["rides"]


# What the saga log of a ride shows once it has been in each brief state.
PASSED_THROUGH = {
    "PENDING": ("authorize_payment", "started"),  # left PENDING: the orchestrator started it
    "MATCH_BACKOFF": ("match_driver", "retrying"),
    "COMPENSATING": ("void_payment", "compensating"),
}


@pytest.mark.parametrize(
    ("scenario", "target", "state"),
    [
        ("kill-trip-at-PENDING", "trip", "PENDING"),
        ("kill-driver-at-MATCH_BACKOFF", "driver", "MATCH_BACKOFF"),
        ("kill-payment-at-compensating", "payment", "COMPENSATING"),
    ],
)
def test_a_kill_aimed_at_a_brief_saga_state_lands_while_a_ride_is_in_it(
    scenario: str, target: str, state: str, tmp_path: Path
) -> None:
    result = ridectl("drill", "run", scenario, "--rides", "12", "--rate", "4", "--report", str(tmp_path), "--json")
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    verdict = json.loads(result.stdout)
    assert verdict["valid"] is True and verdict["violations"] == {} and verdict["stuck"] == {}
    [fault] = verdict["faults"]
    assert (fault["name"], fault["target"], fault["detail"]["step"]) == ("kill", target, state)
    log = db_rows("trip", "SELECT step, status FROM saga_log WHERE ride_id = %s", (fault["detail"]["ride_id"],))
    assert PASSED_THROUGH[state] in log, log
    assert verdict["completed"] + verdict["cancelled"] == verdict["rides"] >= 12
    if state != "PENDING":
        # Stranded riders (no driver near them) cancelled while their ride waited for one.
        assert verdict["outcomes"].get("rider_cancelled", 0) >= 1, verdict["outcomes"]


def _lock_pause(v: dict[str, Any]) -> None:
    # The driver service's reservation refused the paused holder's token though the driver
    # was free by then; Redlock is reported, not required to fail.
    fenced = v["fenced_lock"]
    assert fenced["path"].startswith("services/driver/participant.py")
    assert fenced["b_booked"] is True and fenced["driver_free_when_a_wrote"] is True
    # B only got the lock once A's lease had run out, while A was still paused.
    assert fenced["a_token"] < fenced["b_token"] == fenced["driver_fence"]
    assert fenced["stale_write_rejected"] is True and fenced["a_reply"] == "no_driver_available"
    assert fenced["driver_now_on"] is None
    assert isinstance(v["redlock_without_fencing"]["double_booked"], bool)


def _leader_pause(v: dict[str, Any]) -> None:
    old, new = v["old_sweeper"], v["new_sweeper"]
    assert new["epoch"] > old["epoch"] and new["leader"] != old["leader"]
    assert v["stale_writes_refused"] >= 1


def _trip_pause(v: dict[str, Any]) -> None:
    old, new = v["old_sweeper"], v["new_sweeper"]
    assert new["epoch"] > old["epoch"] and new["leader"] != old["leader"]
    assert v["timeouts_queued_at_resume"] >= 1 and v["stale_writes_refused"] >= 1
    windows = {f["target"]: f for f in v["faults"] if f["name"] == "pause"}
    trip, sweeper = windows["trip"], windows[old["leader"]]
    # The leader changed while trip was paused, and trip resumed before the old leader did.
    assert trip["start"] < sweeper["start"] < trip["end"] < sweeper["end"]


def _clock_skew(v: dict[str, Any]) -> None:
    assert v["rides_through_skewed_clock"] >= 10
    assert v["wall_clock_order_inversions"] > 0, "the skew must show in wall-clock order"
    assert v["hlc_order_inversions"] == 0


@pytest.mark.parametrize(
    ("scenario", "evidence"),
    [
        ("lock-pause", _lock_pause),
        ("leader-pause", _leader_pause),
        ("trip-pause-sweeper-change", _trip_pause),
        ("clock-skew", _clock_skew),
    ],
)
def test_a_coordination_drill_prints_its_verdict_and_exits_0_when_the_safe_mechanism_held(
    scenario: str, evidence: Any, tmp_path: Path
) -> None:
    result = ridectl("drill", "run", scenario, "--rides", "20", "--report", str(tmp_path), "--json")
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    verdict = json.loads(result.stdout)
    assert verdict["scenario"] == scenario and verdict["valid"] is True and verdict["violations"] == {}
    assert verdict["checks"] and all(verdict["checks"].values()), verdict["checks"]
    assert verdict["completed"] + verdict["cancelled"] == verdict["rides"] >= 20
    evidence(verdict)


def test_riders_who_give_up_on_their_request_each_book_a_new_ride_and_are_never_locked_out(tmp_path: Path) -> None:
    result = ridectl("drill", "run", "riders-give-up", "--rides", "20", "--report", str(tmp_path), "--json")
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    verdict = json.loads(result.stdout)
    assert verdict["valid"] is True and verdict["violations"] == {} and verdict["stuck"] == {}
    assert verdict["checks"] and all(verdict["checks"].values()), verdict["checks"]
    assert {(f["target"], f["detail"]["step"]) for f in verdict["faults"]} >= {
        ("trip", "PENDING"),
        ("rider", "PENDING"),
    }
    events = read(tmp_path / "riders-give-up" / "history.jsonl")
    requests = [e for e in events if e.f == "request"]
    # A first request is sent once and never again under its key, whatever happened to it.
    first = Counter(e.key for e in requests if e.type == "invoke" and "rebooking_for" not in e.value)
    assert first and set(first.values()) == {1}
    gave_up = {e.process for e in requests if e.value.get("gave_up")}
    rebooking = {e.process: e.value["rebooking_for"] for e in requests if "rebooking_for" in e.value}
    booked_again = {rebooking[e.process] for e in requests if e.type == "ok" and e.process in rebooking}
    assert gave_up and booked_again == gave_up
    # Every rider ended with a ride: the ones who gave up, with the one they booked after.
    outcomes = verdict["outcomes"]
    assert outcomes["gave_up"] == len(gave_up)
    assert verdict["completed"] + verdict["cancelled"] + outcomes["gave_up"] == verdict["rides"]


def test_the_checker_reports_each_corruption_of_a_copy_of_the_real_state() -> None:
    real = checker.collect()
    assert checker.check(real) == {}, "the drill left the system consistent"
    completed = [rid for rid, r in real.rides.items() if r.state == "COMPLETED" and real.movements.get(rid)]
    assert len(completed) >= 3
    first, second, third = completed[:3]

    def corrupted(how: str) -> dict[str, list[object]]:
        s = copy.deepcopy(real)
        if how == "second capture":
            capture = next(m for m in s.movements[first] if m.kind == "CAPTURE")
            s.movements[first].append(Movement(capture.charge_id, "CAPTURE", capture.amount_cents))
        elif how == "lost ride":
            s.acknowledged.add(second)
            del s.rides[second]
        elif how == "driver on two rides":
            a, b = s.rides[first], s.rides[third]
            s.rides[first] = RideRecord("ACCEPTED", "", a.driver_id, a.fare_cents, a.updated_ms)
            s.rides[third] = RideRecord("OFFERED", "", a.driver_id, b.fare_cents, b.updated_ms)
        elif how == "unbalanced ledger":
            s.ledger[third].append(("platform", 1))
        return checker.check(s)

    assert "charged_twice" in corrupted("second capture")
    assert "acknowledged_ride_lost" in corrupted("lost ride")
    assert "driver_on_two_rides" in corrupted("driver on two rides")
    assert "unbalanced_ledger" in corrupted("unbalanced ledger")
    assert checker.check(real) == {}, "the copies were corrupted, not the real state"
