from hypothesis import given
from hypothesis import strategies as st

from services.shared.clocks import HybridLogicalClock, Timestamp


class FakeWall:
    def __init__(self) -> None:
        self.ms = 0

    def __call__(self) -> int:
        return self.ms


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 10_000), st.integers(0, 10_000), st.integers(0, 5))))
def test_every_stamp_is_later_than_the_last_and_than_what_it_observed(
    events: list[tuple[bool, int, int, int]],
) -> None:
    wall = FakeWall()
    clock = HybridLogicalClock(wall)
    last = Timestamp(0, 0)
    for is_receive, physical, remote_wall, remote_logical in events:
        wall.ms = physical  # the wall clock may jump backwards
        if is_receive:
            remote = Timestamp(remote_wall, remote_logical)
            stamp = clock.observe(remote)
            assert stamp > remote
        else:
            stamp = clock.now()
        assert stamp > last
        assert stamp.wall_ms >= physical
        last = stamp


def test_a_receiver_behind_in_wall_time_still_stamps_after_the_sender() -> None:
    sender_wall, receiver_wall = FakeWall(), FakeWall()
    sender_wall.ms, receiver_wall.ms = 5_000, 1_000  # receiver's clock is 4 s behind
    sent = HybridLogicalClock(sender_wall).now()
    received = HybridLogicalClock(receiver_wall).observe(sent)
    assert received > sent
    assert received.wall_ms == sent.wall_ms


def test_timestamps_round_trip_through_text() -> None:
    assert Timestamp.parse(str(Timestamp(1700000000000, 7))) == Timestamp(1700000000000, 7)
    for bad in ("", "12", "a.b", "1.-1"):
        try:
            Timestamp.parse(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} parsed")
