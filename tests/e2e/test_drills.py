"""The coordination drills each print a JSON verdict and exit 0 when the safe mechanism
held (SPEC section 7, properties 5 and 6; causality under clock skew)."""

from __future__ import annotations

import json
from typing import Any

from tests.support import ridectl


def _drill(name: str) -> dict[str, Any]:
    result = ridectl("drill", "run", name, "--json")
    verdict: dict[str, Any] = json.loads(result.stdout)
    assert result.returncode == 0, (result.stdout, result.stderr[-2000:])
    assert verdict["scenario"] == name and verdict["valid"] is True
    return verdict


def test_lock_pause_redlock_double_books_and_fencing_refuses() -> None:
    verdict = _drill("lock-pause")
    assert verdict["redlock_without_fencing"]["double_booked"] is True
    assert verdict["fenced_lock"]["stale_write_rejected"] is True
    assert verdict["fenced_lock"]["driver_now_on"] == "B"


def test_leader_pause_a_resumed_leader_is_fenced_by_its_epoch() -> None:
    verdict = _drill("leader-pause")
    assert verdict["new_epoch"] > verdict["old_epoch"]
    assert verdict["new_leader"] != verdict["old_leader"]
    assert verdict["stale_writes_refused"] >= 1 and verdict["stale_writes_accepted"] == 0


def test_clock_skew_breaks_wall_clock_order_but_not_hlc_order() -> None:
    verdict = _drill("clock-skew")
    assert verdict["wall_clock_order_inversions"] > 0
    assert verdict["hlc_order_inversions"] == 0
    assert len(verdict["messages"]) >= 5


def test_psp_outage_the_breaker_opens_fails_fast_and_closes() -> None:
    verdict = _drill("psp-outage")
    assert verdict["breaker_opened"] and verdict["breaker_closed_after_recovery"]
    assert verdict["refused_fast_during_outage"] > 0 and verdict["median_refusal_seconds"] < 2.0
    assert verdict["checker"]["valid"]
