"""The simulated fleet: its drivers stay in San Francisco, and a bad setting stops it at
start with one line naming the variable."""

import random
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.fleet.sim import SAN_FRANCISCO, spawn, wander
from services.runtime.config import FleetSettings, fleet_settings
from services.runtime.topology import service


@given(st.integers(min_value=0, max_value=2**32), st.integers(min_value=1, max_value=200))
def test_drivers_never_leave_san_francisco(seed: int, steps: int) -> None:
    rng = random.Random(seed)
    where = spawn(SAN_FRANCISCO, rng)
    for _ in range(steps):
        where = wander(where, SAN_FRANCISCO, rng)
        assert SAN_FRANCISCO.contains(where)


def test_the_area_is_san_francisco() -> None:
    assert (SAN_FRANCISCO.south, SAN_FRANCISCO.north) == (37.70, 37.81)
    assert (SAN_FRANCISCO.west, SAN_FRANCISCO.east) == (-122.52, -122.36)


FLEET_VARIABLES = (
    "RIDESAGA_FLEET_SIZE",
    "RIDESAGA_FLEET_ACCEPT_RATE",
    "RIDESAGA_FLEET_STATE",
    "RIDESAGA_DRIVER_TARGET",
    "RIDESAGA_FLEET_THINK_SECONDS",
    "RIDESAGA_FLEET_RIDE_SECONDS",
)


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in FLEET_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_the_fleet_defaults_to_thirty_drivers_on_loopback(environment: pytest.MonkeyPatch) -> None:
    assert fleet_settings() == FleetSettings(
        size=30,
        accept_rate=0.9,
        state=Path("fleet.json"),
        driver_target=f"127.0.0.1:{service('driver').ingress_port}",
        think_seconds=(0.1, 0.6),
        ride_seconds=(0.5, 2.0),
    )


def test_the_benchmarks_make_drivers_answer_at_once(environment: pytest.MonkeyPatch) -> None:
    environment.setenv("RIDESAGA_FLEET_THINK_SECONDS", "0,0")
    environment.setenv("RIDESAGA_FLEET_RIDE_SECONDS", "0,0")
    environment.setenv("RIDESAGA_FLEET_SIZE", "7")
    found = fleet_settings()
    assert (found.size, found.think_seconds, found.ride_seconds) == (7, (0.0, 0.0), (0.0, 0.0))


@pytest.mark.parametrize(
    ("name", "raw", "message"),
    [
        ("RIDESAGA_FLEET_SIZE", "0", "fleet: RIDESAGA_FLEET_SIZE must be an integer in 1..1000, got '0'"),
        ("RIDESAGA_FLEET_SIZE", "many", "fleet: RIDESAGA_FLEET_SIZE must be an integer in 1..1000, got 'many'"),
        ("RIDESAGA_FLEET_ACCEPT_RATE", "1.5", "fleet: RIDESAGA_FLEET_ACCEPT_RATE must be a number in 0..1, got '1.5'"),
        (
            "RIDESAGA_FLEET_ACCEPT_RATE",
            "most",
            "fleet: RIDESAGA_FLEET_ACCEPT_RATE must be a number in 0..1, got 'most'",
        ),
        ("RIDESAGA_FLEET_THINK_SECONDS", "1", "fleet: RIDESAGA_FLEET_THINK_SECONDS must be MIN,MAX seconds, got '1'"),
        (
            "RIDESAGA_FLEET_RIDE_SECONDS",
            "2,1",
            "fleet: RIDESAGA_FLEET_RIDE_SECONDS must satisfy 0 <= MIN <= MAX, got '2,1'",
        ),
    ],
)
def test_a_bad_setting_stops_the_fleet_with_one_line(
    environment: pytest.MonkeyPatch, name: str, raw: str, message: str
) -> None:
    environment.setenv(name, raw)
    with pytest.raises(SystemExit) as stopped:
        fleet_settings()
    assert str(stopped.value) == message
