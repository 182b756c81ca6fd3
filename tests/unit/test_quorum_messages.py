"""The quorum store's versions on the wire (services/driver/forwarding.py): a version
survives its message, and a malformed clock is refused naming what was wrong."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ridesaga.driver.v1 import driver_pb2
from services.blocks.quorum import Version, clock
from services.driver.forwarding import clock_of, version_message, version_of

clocks = st.dictionaries(st.sampled_from(["127.0.0.1:7003", "127.0.0.1:7103"]), st.integers(0, 2**40)).map(clock)
versions = st.builds(Version, st.text(max_size=20), clocks, st.tuples(st.integers(0, 2**50), st.integers(0, 99)))


@given(versions)
def test_a_version_survives_its_message(version: Version) -> None:
    assert version_of(version_message(version)) == version


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([("a", 1), ("a", 2)], "vector clock names replica 'a' twice"),
        ([("a", -1)], "vector clock counter for 'a' must be >= 0, got -1"),
    ],
)
def test_a_malformed_clock_is_refused_naming_the_fault(entries: list[tuple[str, int]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        clock_of([driver_pb2.ClockEntry(replica=r, counter=c) for r, c in entries])
