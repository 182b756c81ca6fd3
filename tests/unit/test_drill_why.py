"""An invalid drill in the suite's output says why on one line (CI shows only the output)."""

from __future__ import annotations

from ridectl.drill import _why


def test_the_why_names_each_violation_stuck_item_and_failed_check() -> None:
    verdict = {
        "violations": {"charged_twice": [{"ride_id": "r1"}, {"ride_id": "r2"}]},
        "stuck": {"not_terminal": [{"ride_id": "r3", "state": "MATCH_BACKOFF"}]},
        "checks": {"a new leader took over with a higher epoch": True, "stale write refused": False},
        "outcomes": {"completed": 3},
        "in_flight": {"rides": 1},
    }
    why = _why(verdict)
    assert "\n" not in why
    assert "violations charged_twice: 2 e.g. [{'ride_id': 'r1'}]" in why
    assert "stuck not_terminal: 1 e.g. [{'ride_id': 'r3', 'state': 'MATCH_BACKOFF'}]" in why
    assert "check failed: stale write refused" in why and "higher epoch" not in why
    assert "outcomes {'completed': 3}, in flight {'rides': 1}" in why
