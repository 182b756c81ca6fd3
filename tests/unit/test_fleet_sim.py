import random

from hypothesis import given
from hypothesis import strategies as st

from services.fleet.sim import SAN_FRANCISCO, spawn, wander


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
