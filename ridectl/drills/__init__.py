"""Fault drills: each breaks something on purpose and returns a verdict, a JSON-able
dict with "scenario" and "valid" (true when the safe mechanism held)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Verdict = dict[str, Any]


def scenarios() -> dict[str, tuple[str, Callable[[], Verdict]]]:
    from ridectl.drills import clock_skew, leader_pause, lock_pause, psp_outage

    return {
        "psp-outage": (psp_outage.__doc__ or "", psp_outage.run),
        "lock-pause": (lock_pause.__doc__ or "", lock_pause.run),
        "leader-pause": (leader_pause.__doc__ or "", leader_pause.run),
        "clock-skew": (clock_skew.__doc__ or "", clock_skew.run),
    }
