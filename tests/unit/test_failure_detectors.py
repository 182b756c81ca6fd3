import itertools
import math
import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.blocks.failure_detectors import PHI_MAX, FixedTimeoutDetector, PhiAccrualDetector

NODE = "driver-1"


def beat_every(
    detector: PhiAccrualDetector | FixedTimeoutDetector, intervals: list[float], start_ms: float = 0.0
) -> float:
    """Heartbeats at `start_ms` and after each interval; returns the time of the last one."""
    now = start_ms
    detector.heartbeat(NODE, now)
    for interval in intervals:
        now += interval
        detector.heartbeat(NODE, now)
    return now


def jittery(count: int, seed: int = 7) -> list[float]:
    rng = random.Random(seed)
    return [2000 * rng.uniform(0.8, 1.2) for _ in range(count)]


def test_regular_heartbeats_keep_phi_low() -> None:
    detector = PhiAccrualDetector()
    now = 0.0
    detector.heartbeat(NODE, now)
    for interval in jittery(300):
        now += interval
        assert detector.phi(NODE, now) < 1.0  # just before the heartbeat arrives
        detector.heartbeat(NODE, now)
        at_arrival = detector.phi(NODE, now)
        assert 0.0 <= at_arrival < 0.01
        assert math.copysign(1.0, at_arrival) == 1.0  # never "-0.0" in a log line


def test_phi_grows_with_silence_until_its_cap() -> None:
    detector = PhiAccrualDetector()
    last = beat_every(detector, jittery(100))
    levels = [detector.phi(NODE, last + silence) for silence in range(3000, 12_001, 250)]
    below_cap = [level for level in levels if level < PHI_MAX]
    assert all(a < b for a, b in itertools.pairwise(below_cap))
    assert below_cap[0] < 1.0 < 8.0 < below_cap[-1]
    assert levels[len(below_cap) :] == [PHI_MAX] * (len(levels) - len(below_cap))
    assert levels[-1] == PHI_MAX


@given(
    st.lists(st.floats(0, 60_000), min_size=0, max_size=150),
    st.lists(st.floats(-1_000, 1e9), min_size=2, max_size=20),
)
def test_phi_never_falls_as_silence_grows(intervals: list[float], silences: list[float]) -> None:
    detector = PhiAccrualDetector()
    last = beat_every(detector, intervals)
    levels = [detector.phi(NODE, last + silence) for silence in sorted(silences)]
    assert levels == sorted(levels)
    assert all(0.0 <= level <= PHI_MAX for level in levels)


def test_a_node_that_stops_is_suspected_by_both_detectors() -> None:
    phi, fixed = PhiAccrualDetector(), FixedTimeoutDetector(10_000)
    intervals = jittery(50)
    last = beat_every(phi, intervals)
    beat_every(fixed, intervals)
    for detector in (phi, fixed):
        assert not detector.suspect(NODE, last + 2000)
        assert detector.suspect(NODE, last + 60_000)


def test_phi_tolerates_a_late_heartbeat_when_the_history_shows_such_jitter() -> None:
    phi, fixed = PhiAccrualDetector(), FixedTimeoutDetector(3000)
    intervals = [1000.0, 5000.0] * 20  # a node whose heartbeats often come 5 s apart
    last = beat_every(phi, intervals)
    beat_every(fixed, intervals)
    assert fixed.suspect(NODE, last + 5500)
    assert not phi.suspect(NODE, last + 5500)


def test_phi_suspects_a_regular_node_sooner_than_a_timeout_set_for_the_worst_case() -> None:
    phi, fixed = PhiAccrualDetector(), FixedTimeoutDetector(10_000)
    intervals = [2000.0] * 50
    last = beat_every(phi, intervals)
    beat_every(fixed, intervals)
    assert phi.suspect(NODE, last + 6000)
    assert not fixed.suspect(NODE, last + 6000)


def test_only_the_last_window_of_intervals_counts() -> None:
    slid = PhiAccrualDetector(window=10)
    last = beat_every(slid, [1000.0] * 10)
    assert slid.suspect(NODE, last + 5000)  # learned: one second apart
    last = beat_every(slid, [5000.0] * 8, start_ms=last + 5000)  # nine 5 s intervals, one 1 s left
    assert not slid.suspect(NODE, last + 8000)  # the mix is wide: 8 s of silence is plausible
    last = beat_every(slid, [], start_ms=last + 5000)  # the last 1 s interval slides out
    fresh = PhiAccrualDetector(window=10)
    fresh_last = beat_every(fresh, [5000.0] * 10)
    assert slid.suspect(NODE, last + 8000)  # only 5 s intervals: 8 s is far too long
    for silence in (0.0, 5000.0, 8000.0, 20_000.0):
        assert slid.phi(NODE, last + silence) == fresh.phi(NODE, fresh_last + silence)


def test_a_node_with_few_samples_is_judged_by_the_bootstrap_interval() -> None:
    detector = PhiAccrualDetector(bootstrap_interval_ms=2000, min_samples=3, acceptable_pause_ms=0.0)
    assert detector.phi(NODE, 0.0) == 0.0  # never heard from: no opinion
    assert not detector.suspect(NODE, 1e9)
    detector.heartbeat(NODE, 0.0)
    assert detector.phi(NODE, 2000.0) == pytest.approx(0.30103, abs=1e-4)  # one interval: a coin toss
    assert detector.suspect(NODE, 60_000.0)
    last = beat_every(detector, [100.0], start_ms=100.0)  # two intervals: still the bootstrap
    assert not detector.suspect(NODE, last + 1000)
    detector.heartbeat(NODE, last + 100)  # the third: the node's own rhythm takes over
    assert detector.suspect(NODE, last + 100 + 1000)


def test_a_perfectly_regular_node_uses_the_minimum_stddev() -> None:
    detector = PhiAccrualDetector(acceptable_pause_ms=0.0, min_stddev_ms=100.0)
    last = beat_every(detector, [2000.0] * 20)
    assert detector.phi(NODE, last + 2000) == pytest.approx(0.30103, abs=1e-4)  # half the mass is later
    assert not detector.suspect(NODE, last + 2500)  # 5 stddev late
    assert detector.suspect(NODE, last + 2700)  # 7 stddev late


def test_an_endless_silence_caps_phi() -> None:
    detector = PhiAccrualDetector(threshold=29.0)
    last = beat_every(detector, [2000.0] * 10)
    assert detector.phi(NODE, last + 1e15) == PHI_MAX
    assert detector.suspect(NODE, last + 1e15)


def test_forget_drops_the_history() -> None:
    phi, fixed = PhiAccrualDetector(), FixedTimeoutDetector(3000)
    for detector in (phi, fixed):
        last = beat_every(detector, [100.0] * 10)
        assert detector.suspect(NODE, last + 10_000)
        detector.forget(NODE)
        assert not detector.suspect(NODE, last + 10_000)
        detector.forget(NODE)  # forgetting twice is harmless
    assert phi.phi(NODE, last + 10_000) == 0.0
    phi.heartbeat(NODE, last + 10_000)  # back with no history: the bootstrap again
    assert not phi.suspect(NODE, last + 10_000 + 1000)


def test_nodes_are_watched_separately() -> None:
    detector = PhiAccrualDetector()
    for now in range(0, 20_001, 2000):
        detector.heartbeat("steady", float(now))
        if now <= 10_000:
            detector.heartbeat("stopped", float(now))
    assert detector.suspect("stopped", 20_000.0)
    assert not detector.suspect("steady", 20_000.0)


def test_the_fixed_timeout_is_strict() -> None:
    detector = FixedTimeoutDetector(3000)
    detector.heartbeat(NODE, 1000.0)
    assert not detector.suspect(NODE, 4000.0)
    assert detector.suspect(NODE, 4000.5)
    detector.heartbeat(NODE, 4001.0)
    assert not detector.suspect(NODE, 4001.0)


@pytest.mark.parametrize("detector", [PhiAccrualDetector(), FixedTimeoutDetector(3000)])
def test_a_heartbeat_from_the_past_is_refused(detector: PhiAccrualDetector | FixedTimeoutDetector) -> None:
    detector.heartbeat(NODE, 5000.0)
    with pytest.raises(ValueError, match="monotonic clock"):
        detector.heartbeat(NODE, 4999.0)


@pytest.mark.parametrize(
    "settings",
    [{"threshold": 0.0}, {"threshold": PHI_MAX}, {"window": 2}, {"min_stddev_ms": 0.0}, {"acceptable_pause_ms": -1.0}],
)
def test_nonsense_settings_are_refused(settings: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        PhiAccrualDetector(**settings)
