import pytest
from hypothesis import given
from hypothesis import strategies as st

from drills.scenarios import SKEW_MS
from services.blocks.clocks import MAX_OFFSET_MS, ClockOffsetExceeded, HybridLogicalClock, Timestamp
from services.exhibits.logical_clocks import LamportClock, VectorClock, concurrent, happened_before


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
    clock = HybridLogicalClock(wall, max_offset_ms=10_000)  # every remote below is within it
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


# A receiver's life: each event is a local stamp or a message received, stamped some
# distance ahead of (or behind) the receiver's wall clock, which may jump backwards.
RECEIPTS = st.lists(
    st.tuples(st.booleans(), st.integers(0, 100_000), st.integers(-5_000, 5_000), st.integers(0, 5)), max_size=40
)
GUARD_MS = 1_000


@given(RECEIPTS)
def test_no_message_drags_the_clock_further_than_the_max_offset_ahead(events: list[tuple[bool, int, int, int]]) -> None:
    wall = FakeWall()
    clock = HybridLogicalClock(wall, max_offset_ms=GUARD_MS)
    latest_physical = 0
    for is_receive, physical, ahead_ms, remote_logical in events:
        wall.ms = physical
        latest_physical = max(latest_physical, physical)
        remote = Timestamp(max(0, physical + ahead_ms), remote_logical)
        if not is_receive:
            stamp = clock.now()
        elif remote.wall_ms - physical > GUARD_MS:
            with pytest.raises(ClockOffsetExceeded):
                clock.observe(remote)
            continue
        else:
            stamp = clock.observe(remote)
            assert stamp > remote
        assert stamp.wall_ms <= latest_physical + GUARD_MS


@given(RECEIPTS, st.integers(GUARD_MS + 1, 10**12), st.integers(0, 5))
def test_a_refused_timestamp_names_both_times_and_leaves_the_clock_as_it_was(
    events: list[tuple[bool, int, int, int]], too_far_ms: int, remote_logical: int
) -> None:
    wall, twin_wall = FakeWall(), FakeWall()
    clock = HybridLogicalClock(wall, max_offset_ms=GUARD_MS)
    twin = HybridLogicalClock(twin_wall, max_offset_ms=GUARD_MS)  # never sees the refused one
    for is_receive, physical, ahead_ms, logical in events:
        wall.ms = twin_wall.ms = physical
        remote = Timestamp(max(0, physical + min(ahead_ms, GUARD_MS)), logical)
        assert (clock.observe(remote) if is_receive else clock.now()) == (
            twin.observe(remote) if is_receive else twin.now()
        )
    future = Timestamp(wall.ms + too_far_ms, remote_logical)
    with pytest.raises(ValueError) as refused:  # a ValueError: the consumers dead-letter it
        clock.observe(future)
    assert isinstance(refused.value, ClockOffsetExceeded)
    assert str(future) in str(refused.value) and f"{wall.ms} ms" in str(refused.value)
    assert clock.now() == twin.now()


def test_the_default_max_offset_lets_the_clock_skew_drill_through() -> None:
    trip_wall, payment_wall = FakeWall(), FakeWall()
    trip_wall.ms = 1_700_000_000_000
    payment_wall.ms = trip_wall.ms + SKEW_MS  # the drill sets payment's clock 5 s behind
    command = HybridLogicalClock(trip_wall).now()
    assert HybridLogicalClock(payment_wall).observe(command) > command
    assert 2 * abs(SKEW_MS) <= MAX_OFFSET_MS  # with room for a real clock's own error
    with pytest.raises(ClockOffsetExceeded):
        HybridLogicalClock(payment_wall).observe(Timestamp(payment_wall.ms + MAX_OFFSET_MS + 1, 0))


def test_timestamps_round_trip_through_text() -> None:
    assert Timestamp.parse(str(Timestamp(1700000000000, 7))) == Timestamp(1700000000000, 7)
    for bad in ("", "12", "a.b", "1.-1"):
        try:
            Timestamp.parse(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} parsed")


# A random distributed execution: each step is a local event or a message from one
# process to another, delivered immediately. Causality is known exactly from the steps.
EXECUTIONS = st.lists(st.tuples(st.sampled_from("abc"), st.sampled_from("abc"), st.booleans()), min_size=1, max_size=60)


def _run(steps: list[tuple[str, str, bool]]) -> tuple[list[int], list[dict[str, int]], list[set[int]]]:
    lamport = {p: LamportClock() for p in "abc"}
    vector = {p: VectorClock(p) for p in "abc"}
    stamps_l: list[int] = []
    stamps_v: list[dict[str, int]] = []
    past: list[set[int]] = []  # past[i]: the events that happened before event i
    last: dict[str, int] = {}

    def upto(process: str) -> set[int]:
        """The process's latest event and everything before it."""
        return past[last[process]] | {last[process]} if process in last else set()

    for sender, receiver, is_message in steps:
        before = upto(sender)
        stamps_l.append(lamport[sender].tick())
        stamps_v.append(vector[sender].tick())
        past.append(before)
        last[sender] = len(past) - 1
        if is_message and receiver != sender:
            send = len(past) - 1
            mine = upto(receiver)
            stamps_l.append(lamport[receiver].observe(stamps_l[send]))
            stamps_v.append(vector[receiver].observe(stamps_v[send]))
            past.append(mine | past[send] | {send})
            last[receiver] = len(past) - 1
    return stamps_l, stamps_v, past


@given(EXECUTIONS)
def test_lamport_respects_happened_before(steps: list[tuple[str, str, bool]]) -> None:
    stamps, _, past = _run(steps)
    for b, before in enumerate(past):
        for a in before:
            assert stamps[a] < stamps[b]


@given(EXECUTIONS)
def test_vector_clocks_capture_happened_before_exactly(steps: list[tuple[str, str, bool]]) -> None:
    _, stamps, past = _run(steps)
    for b in range(len(past)):
        for a in range(len(past)):
            if a != b:
                assert happened_before(stamps[a], stamps[b]) == (a in past[b])


def test_concurrent_events_are_told_apart_only_by_vector_clocks() -> None:
    a, b = VectorClock("a"), VectorClock("b")
    x, y = a.tick(), b.tick()
    assert concurrent(x, y)
    la, lb = LamportClock(), LamportClock()
    assert la.tick() == lb.tick() == 1  # Lamport cannot tell "concurrent" from "equal"
