"""A drill's Markdown summary (drills/report.py) and the rides a fault could touch (drills/history.py)."""

from __future__ import annotations

from typing import Any

from drills.history import Fault, RideOutcome, in_flight
from drills.report import summary


def _verdict(**extra: Any) -> dict[str, Any]:
    fault = {"name": "pause", "target": "driver-2", "start": 1.0, "end": 4.0, "detail": {}, "recovery_seconds": 2.5}
    return {
        "scenario": "pause-driver-replica",
        "valid": True,
        "rides": 3,
        "completed": 3,
        "cancelled": 0,
        "unfinished": 0,
        "requests_retried": 0,
        "recovery_seconds": 2.5,
        "rate": 3.0,
        "seconds": 20.0,
        "seed": 1,
        "faults": [{**fault, "rides_in_flight": 2}],
        "violations": {},
        "stuck": {},
        "in_flight": {"rides": 0},
        "checks": {},
        **extra,
    }


def test_the_summary_lists_the_scenarios_own_findings_and_each_faults_rides_in_flight() -> None:
    text = summary(_verdict(detection_seconds=3.03, incarnation={"before": 0, "after": 1}))
    assert "| pause | driver-2 |  | 1.0 | 4.0 | 2 | 2.5 |" in text
    findings = text.split("## Findings of the scenario\n\n", 1)[1].split("\n\n", 1)[0]
    assert findings.splitlines() == ["- detection_seconds: 3.03", '- incarnation: {"before": 0, "after": 1}']


def test_a_verdict_without_findings_has_no_findings_section() -> None:
    assert "## Findings" not in summary(_verdict())


def test_rides_in_flight_are_those_that_overlap_the_window() -> None:
    fault = Fault("pause", "driver", start=10.0, end=20.0)
    rides = [
        RideOutcome(1, "ended before", 1.0, ended_at=9.9),
        RideOutcome(2, "spans it", 5.0, ended_at=25.0),
        RideOutcome(3, "inside", 12.0, ended_at=15.0),
        RideOutcome(4, "never ended", 15.0),
        RideOutcome(5, "booked after", 20.1, ended_at=30.0),
    ]
    assert in_flight(fault, rides) == 3
    assert in_flight(Fault("kill", "trip", start=10.0), rides) == 4  # not healed: every ride since
